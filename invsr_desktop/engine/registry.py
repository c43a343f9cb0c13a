"""The backend registry: pluggy, entry points, and per-plugin isolation.

Plain pluggy stops at the first plugin that raises, taking every other plugin down with it. As napari-plugin-engine
does, each plugin is loaded and called on its own here: a plugin that fails to import, to describe itself or to
build a runner is recorded as a :class:`PluginFailure` (shown by the GUI and ``invsr-upscale --list-backends``) and
skipped. Built-in backends come through the same entry-point group as third-party ones.

``INVSR_DISABLE_PLUGIN_AUTOLOAD=1`` restricts loading to the built-in plugins (like pytest's
``PYTEST_DISABLE_PLUGIN_AUTOLOAD``); ``INVSR_PLUGINS=a,b`` restricts it to the named entry points.
"""

from __future__ import annotations

import os
import traceback
import warnings
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Iterable

import pluggy

from invsr_desktop.engine import hookspecs
from invsr_desktop.engine.backend import (KINDS, BackendSpec, BuildRequest, FunctionRunner, Runner, RunnerTraits,
                                         flag_value)
from invsr_desktop.engine.errors import BackendError, ModelFileWarning, ModelReplacedWarning

BUILTIN_MODULE_PREFIX = "plugins."
MODEL_FILES = "model files"  # who a skipped model file's warning is from


@dataclass(frozen=True)
class PluginFailure:
    """A plugin that could not be used, and why, in words a user can act on."""

    plugin: str
    stage: str  # "import", "describe" or "build"
    message: str
    details: str = ""

    def __str__(self) -> str:
        if self.stage in ("warning", "note") and self.plugin == MODEL_FILES:
            return self.message[:1].upper() + self.message[1:]
        if self.stage == "warning":
            return f'Warning from plugin "{self.plugin}": {self.message}'
        return f'Error {self.stage_verb} plugin "{self.plugin}": {self.message}'

    @property
    def stage_verb(self) -> str:
        return {"import": "importing", "describe": "describing backends of", "build": "building"}.get(
            self.stage, self.stage
        )


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".strip()


def _is_builtin(ep: EntryPoint) -> bool:
    return ep.value.startswith(BUILTIN_MODULE_PREFIX)


class Registry:
    """Backends by id, the plugins that provide them, and the plugins that failed."""

    def __init__(self) -> None:
        self.manager = pluggy.PluginManager(hookspecs.PROJECT)
        self.manager.add_hookspecs(hookspecs)
        self._backends: dict[str, BackendSpec] = {}
        self._owner: dict[str, str] = {}
        self._builtin: set[str] = set()  # names of the plugins that ship with the app: they keep their ids
        self.failures: list[PluginFailure] = []
        # Problems a working plugin reported while describing itself (e.g. an unreadable model file it skipped).
        self.warnings: list[PluginFailure] = []

    # -- loading -------------------------------------------------------------------------------------------------
    def load_entry_points(self, group: str = hookspecs.ENTRY_POINT_GROUP) -> None:
        """Import and register every plugin of the entry-point group, honouring the environment switches."""
        only = {name.strip() for name in os.environ.get("INVSR_PLUGINS", "").split(",") if name.strip()}
        builtin_only = os.environ.get("INVSR_DISABLE_PLUGIN_AUTOLOAD", "") not in ("", "0")
        seen: set[str] = set()
        for ep in entry_points(group=group):
            if ep.name in seen:  # the same distribution visible twice (e.g. editable + build dir)
                continue
            seen.add(ep.name)
            if only and ep.name not in only:
                continue
            if builtin_only and not _is_builtin(ep):
                continue
            try:
                plugin = ep.load()
            except BaseException as exc:  # noqa: BLE001 - a plugin must never take the app down
                if isinstance(exc, KeyboardInterrupt):
                    raise
                self._fail(ep.name, "import", exc)
                continue
            self.register(plugin, ep.name, builtin=_is_builtin(ep))

    def register(self, plugin: Any, name: str, builtin: bool = False) -> None:
        """Register one plugin object (module or instance) and collect its backends, isolated from the others.

        A built-in plugin's backend ids are its own: a third-party plugin that offers one of them is refused (with
        its own name in the message) whichever of the two loads first."""
        if builtin:
            self._builtin.add(name)
        try:
            self.manager.register(plugin, name=name)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001 - e.g. a hookimpl with an unknown name; SystemExit too
            self._fail(name, "import", exc)
            return
        for impl in self.manager.hook.invsr_backends.get_hookimpls():
            if impl.plugin_name == name:
                self._describe(name, impl.function)

    def refresh(self) -> None:
        """Ask every registered plugin for its backends again, so a model file added to (or removed from) a model
        folder shows up without a restart. Plugins that failed to import stay failed; the rest are described anew."""
        self._backends.clear()
        self._owner.clear()
        self.warnings.clear()
        self.failures = [f for f in self.failures if f.stage == "import"]
        for impl in self.manager.hook.invsr_backends.get_hookimpls():  # in registration order
            self._describe(impl.plugin_name, impl.function)

    def _describe(self, name: str, describe: Any) -> None:
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                specs = list(describe() or [])
            for spec in specs:
                _check_spec(spec)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001 - a plugin's sys.exit() must not end the app either
            self._fail(name, "describe", exc)
            return
        finally:
            for w in caught:  # a skipped model file is the folder's problem, whichever plugin met it first
                source = MODEL_FILES if issubclass(w.category, ModelFileWarning) else name
                stage = "note" if issubclass(w.category, ModelReplacedWarning) else "warning"
                failure = PluginFailure(source, stage, str(w.message))
                if failure not in self.warnings:
                    self.warnings.append(failure)
        for spec in specs:
            if spec.id in self._backends:
                other = self._owner[spec.id]
                if name in self._builtin and other not in self._builtin:
                    self.failures.append(PluginFailure(
                        other, "describe", f"backend id {spec.id!r} belongs to the built-in plugin {name!r}; "
                        f"plugin {other!r}'s backend of that id was refused (give it another id)"))
                else:
                    self.failures.append(PluginFailure(
                        name, "describe", f"backend id {spec.id!r} is already provided by plugin {other!r}"))
                    continue
            self._backends[spec.id] = spec
            self._owner[spec.id] = name

    def _fail(self, plugin: str, stage: str, exc: BaseException) -> None:
        details = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        self.failures.append(PluginFailure(plugin, stage, _one_line(exc), details))

    # -- queries ---------------------------------------------------------------------------------------------------
    def backends(self) -> list[BackendSpec]:
        """All usable backends, in a stable order (interpolation first, then by kind and name)."""
        return sorted(self._backends.values(), key=lambda s: (KINDS.index(s.kind), s.name.lower()))

    def get(self, backend_id: str) -> BackendSpec:
        try:
            return self._backends[backend_id]
        except KeyError:
            known = ", ".join(sorted(self._backends)) or "none"
            raise KeyError(f"unknown backend {backend_id!r} (available: {known})") from None

    def owner(self, backend_id: str) -> str:
        return self._owner[backend_id]

    def build(self, backend_id: str, request: BuildRequest) -> Runner:
        """Build a runner; a plugin's exception, or a runner that breaks the :class:`Runner` protocol (checked
        here, once, by :meth:`RunnerTraits.of`), becomes a :class:`BackendBuildError` naming the plugin. A plain
        function is accepted as a runner at the requested scale (:class:`FunctionRunner`)."""
        spec = self.get(backend_id)
        try:
            runner = spec.build(request)
            if callable(runner) and not hasattr(runner, "scale"):
                runner = FunctionRunner(runner, float(request.scale))
            RunnerTraits.of(runner)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001 - SystemExit included: a plugin never ends the app
            raise BackendBuildError(self._owner[backend_id], backend_id, exc) from exc
        return runner


class BackendBuildError(BackendError):
    """A backend could not build its runner (missing or corrupt model file, bad parameter, plugin bug); one of
    the engine's expected failures, so the GUI and the CLI show its message as is."""

    def __init__(self, plugin: str, backend_id: str, cause: BaseException) -> None:
        super().__init__(f'Backend "{backend_id}" (plugin "{plugin}") could not start: {_one_line(cause)}')
        self.plugin = plugin
        self.backend_id = backend_id


def _check_spec(spec: Any) -> None:
    """Reject a malformed description at load time, so it fails as "describe", not later in a job."""
    if not isinstance(spec, BackendSpec):
        raise TypeError(f"invsr_backends must return BackendSpec objects, got {type(spec).__name__}")
    if spec.kind not in KINDS:
        raise ValueError(f"backend {spec.id!r}: kind {spec.kind!r} is not one of {', '.join(KINDS)}")
    if not spec.scales and not spec.any_scale:
        raise ValueError(f"backend {spec.id!r} declares no scale")
    if not callable(spec.build):
        raise TypeError(f"backend {spec.id!r}: build is not callable")


_default: Registry | None = None


def default_registry(reload: bool = False) -> Registry:
    """The process-wide registry loaded from entry points (loaded once, on first use)."""
    global _default
    if _default is None or reload:
        registry = Registry()
        registry.load_entry_points()
        _default = registry
    return _default


def printable(text: str) -> str:
    """``text`` with control characters escaped (``\x1b``...): a model's name or a plugin's message comes from a
    file or third-party code, and raw escape codes would drive the user's terminal."""
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in str(text))


def describe_backends(registry: Registry) -> Iterable[str]:
    """Human-readable lines for ``--list-backends``: each backend, then each broken plugin with its error. Every
    line is :func:`printable`."""
    for line in _backend_lines(registry):
        yield printable(line)


def _backend_lines(registry: Registry) -> Iterable[str]:
    for spec in registry.backends():
        scales = "any" if spec.any_scale else ", ".join(f"x{s}" for s in spec.scales)
        yield f"{spec.id:<20} {spec.name} [{spec.kind}] scales: {scales}"
        for p in spec.params:
            extra = f" choices: {', '.join(p.choices)}" if p.choices else ""
            rng = f" range: {p.minimum}..{p.maximum}" if p.minimum is not None or p.maximum is not None else ""
            yield f"{'':<22}--param {p.name}={flag_value(p.default)} ({p.type.__name__}{rng}{extra}) {p.help}"
    for failure in registry.failures:
        yield f"BROKEN  {failure}"
    for warning in registry.warnings:
        yield f"{'NOTE' if warning.stage == 'note' else 'SKIPPED'} {warning}"
