"""Hook specifications: the whole plugin API of InvSR Desktop, documented for plugin authors.

A backend plugin is a module (or object) with functions marked ``@hookimpl``, installed as an entry point in the
``invsr_desktop.backends`` group::

    [project.entry-points."invsr_desktop.backends"]
    mybackend = "my_package.my_module"

The built-in backends in ``plugins/`` are registered through this same group; they are not special.
"""

from __future__ import annotations

import pluggy

PROJECT = "invsr_desktop"
ENTRY_POINT_GROUP = "invsr_desktop.backends"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def invsr_backends() -> list:
    """Describe the backends this plugin provides.

    Return a list of :class:`invsr_desktop.engine.backend.BackendSpec`. Describing must be cheap: do not create
    ONNX Runtime sessions or read large files here; do that in ``BackendSpec.build``, which the engine calls when
    a backend is first used. A plugin that raises here is reported as broken and skipped; the others still load.
    """
