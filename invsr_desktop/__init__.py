"""InvSR Desktop: upscale photos with super-resolution models run by ONNX Runtime.

The runtime (this package and ``plugins``) never imports torch; only ``invsr_desktop.app`` imports Qt.
"""

__version__ = "0.1.0"
