"""Built-in backends of InvSR Desktop, one package each, registered through the ``invsr_desktop.backends``
entry-point group exactly like a third-party plugin."""
