"""The engine: everything the app does, headless. No Qt and no torch here.

Modules: ``backend`` (what a backend is), ``hookspecs`` (the plugin API), ``registry`` (plugins through entry points,
isolated), ``sessions`` (ONNX Runtime providers and sessions), ``imageio`` and ``output`` (files), ``tiling`` and
``pipeline`` (the one upscale pipeline), ``jobs`` (the batch queue model).
"""
