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

    ``build(request)`` gets a :class:`~invsr_desktop.engine.backend.BuildRequest` (``scale``, resolved
    ``params``, the engine's ``sessions`` pool, the result's ``stored_as`` format) and returns a runner. A runner
    is any callable ``runner(tile) -> tile`` on float32 (H, W, 3) RGB in [0, 1]; what else the engine reads from
    it, each optional (see :class:`~invsr_desktop.engine.backend.Runner` for the details):

    - ``scale`` (float; a plain function gets the spec's scale) and ``multiple`` (int, 1): tile sides are padded
      to a multiple of it;
    - ``positional = True``: called ``runner(tile, origin=(y, x))`` (output that depends on where the tile lies);
    - ``passes`` (int, 1): model passes per tile; above 1 it is called with ``on_pass=callback`` and calls it
      after each pass but the last (the progress bar moves within a tile);
    - ``whole_image = True`` with ``run_whole(image, tiler)``: one call for the whole image, the runner tiling each
      model pass itself with ``tiler.map`` (a sampler whose tiles must agree at every step);
    - ``model_name`` (str): the model it runs, named in error messages and in a shrunk image's marker.

    The engine reads these once, when it builds the runner (:meth:`~invsr_desktop.engine.backend.RunnerTraits.of`):
    a member of the wrong type fails the build with the backend's name and the member's, before any image runs.

    Whatever a runner raises fails that one image with the backend's name in the message; the batch goes on.
    """
