"""The one-off commands (``python -m model_export.commands.NAME``, and ``invsr-bench``): measurements, sheets and cards
built on the library beside them (``model_export.evaluate``, ``export``, ``metrics``...). Nothing in the library
imports a command."""
