"""Plugin discovery and isolation, with real plugins installed through an entry point into a temporary path."""

from __future__ import annotations

import importlib
import textwrap
from pathlib import Path

import numpy as np
import pytest

from invsr_desktop.engine.backend import BuildRequest
from invsr_desktop.engine.errors import BackendError
from invsr_desktop.engine.pipeline import Engine
from invsr_desktop.engine.registry import BackendBuildError, Registry, describe_backends

PLUGINS = {
    "thirdparty_good": """
        import numpy as np
        from invsr_desktop.engine.backend import BackendSpec
        from invsr_desktop.engine.hookspecs import hookimpl

        class Nearest:
            scale, multiple = 2, 1
            def __call__(self, tile):
                return tile.repeat(2, axis=0).repeat(2, axis=1)

        @hookimpl
        def invsr_backends():
            return [BackendSpec(id="nearest-test", name="Nearest (test)", kind="interpolation", scales=(2,),
                                build=lambda request: Nearest())]
    """,
    "thirdparty_warns": """
        import warnings
        from invsr_desktop.engine.hookspecs import hookimpl

        @hookimpl
        def invsr_backends():
            warnings.warn("skipped models/broken.onnx: not an ONNX file")
            return []
    """,
    "thirdparty_import_error": """
        raise ImportError("this plugin needs libfoo, which is not installed")
    """,
    "thirdparty_describe_error": """
        from invsr_desktop.engine.hookspecs import hookimpl

        @hookimpl
        def invsr_backends():
            raise RuntimeError("cannot find my model folder")
    """,
    "thirdparty_wrong_shape": """
        from invsr_desktop.engine.backend import BackendSpec
        from invsr_desktop.engine.hookspecs import hookimpl

        class Wrong:
            scale, multiple = 2, 1
            def __call__(self, tile):
                return tile[:-1]

        def fail_build(request):
            raise FileNotFoundError("model.onnx is missing")

        @hookimpl
        def invsr_backends():
            return [
                BackendSpec(id="wrong-shape", name="Wrong shape", kind="gan", scales=(2,), build=lambda r: Wrong()),
                BackendSpec(id="cannot-build", name="Cannot build", kind="gan", scales=(2,), build=fail_build),
            ]
    """,
    "thirdparty_exits": """
        import sys
        from invsr_desktop.engine.hookspecs import hookimpl

        @hookimpl
        def invsr_backends():
            sys.exit(3)
    """,
    "thirdparty_faulty_runners": """
        import sys
        import numpy as np
        from invsr_desktop.engine.backend import BackendSpec
        from invsr_desktop.engine.hookspecs import hookimpl

        class Raises:
            scale, multiple = 2, 1
            def __call__(self, tile):
                raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : bad node")

        class Exits(Raises):
            def __call__(self, tile):
                sys.exit(7)

        class NaNs(Raises):
            def __call__(self, tile):
                out = tile.repeat(2, axis=0).repeat(2, axis=1)
                out[0, 0, 0] = np.nan
                return out

        def plain_function(tile):  # the README's example: a function, no attributes
            return tile.repeat(2, axis=0).repeat(2, axis=1)

        def spec(id, runner):
            return BackendSpec(id=id, name=id, kind="gan", scales=(2,), build=lambda request: runner)

        @hookimpl
        def invsr_backends():
            return [spec("raises-test", Raises()), spec("exits-test", Exits()), spec("nans-test", NaNs()),
                    spec("plain-test", plain_function),
                    BackendSpec(id="exits-at-build", name="x", kind="gan", scales=(2,), build=lambda r: sys.exit(1)),
                    BackendSpec(id="bicubic", name="Impostor", kind="interpolation", scales=(2,),
                                build=lambda r: plain_function)]
    """,
}


@pytest.fixture()
def installed_plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Install the plugins above as a distribution with entry points, as `pip install` would."""
    for name, source in PLUGINS.items():
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
    dist = tmp_path / "invsr_test_plugins-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: invsr-test-plugins\nVersion: 0.1\n")
    lines = "\n".join(f"{name} = {name}" for name in PLUGINS)
    (dist / "entry_points.txt").write_text(f"[invsr_desktop.backends]\n{lines}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    return tmp_path


def test_builtins_come_through_the_entry_point_group():
    registry = Registry()
    registry.load_entry_points()
    assert registry.owner("bicubic") == "bicubic"
    assert registry.get("bicubic").kind == "interpolation"


def test_broken_plugins_are_reported_and_the_rest_load(installed_plugins):
    registry = Registry()
    registry.load_entry_points()
    ids = {spec.id for spec in registry.backends()}
    assert {"bicubic", "nearest-test", "wrong-shape", "cannot-build"} <= ids
    failures = {f.plugin: f for f in registry.failures}
    assert failures["thirdparty_import_error"].stage == "import"
    assert str(failures["thirdparty_import_error"]) == (
        'Error importing plugin "thirdparty_import_error": ImportError: this plugin needs libfoo, which is not installed'
    )
    assert failures["thirdparty_describe_error"].stage == "describe"
    assert "cannot find my model folder" in str(failures["thirdparty_describe_error"])
    assert "thirdparty_warns" not in failures
    assert [str(w) for w in registry.warnings] == [
        'Warning from plugin "thirdparty_warns": skipped models/broken.onnx: not an ONNX file'
    ]
    listing = "\n".join(describe_backends(registry))
    assert "BROKEN" in listing and "libfoo" in listing and "nearest-test" in listing
    assert "SKIPPED" in listing and "broken.onnx" in listing


def test_a_third_party_backend_runs_through_the_engine(installed_plugins):
    registry = Registry()
    registry.load_entry_points()
    engine = Engine(registry)
    out = engine.upscale_array(np.full((5, 7, 3), 0.25, np.float32), "nearest-test", 2)
    assert out.shape == (10, 14, 3) and np.allclose(out, 0.25)


def test_build_failure_names_the_plugin_and_wrong_shape_is_caught(installed_plugins):
    registry = Registry()
    registry.load_entry_points()
    with pytest.raises(BackendBuildError, match='"cannot-build" .*plugin "thirdparty_wrong_shape".*missing'):
        registry.build("cannot-build", BuildRequest(2, {}, None))
    with pytest.raises(BackendError, match="shape"):
        Engine(registry).upscale_array(np.zeros((8, 8, 3), np.float32), "wrong-shape", 2)


def test_autoload_switch_keeps_only_builtins(installed_plugins, monkeypatch):
    monkeypatch.setenv("INVSR_DISABLE_PLUGIN_AUTOLOAD", "1")
    registry = Registry()
    registry.load_entry_points()
    assert "nearest-test" not in {s.id for s in registry.backends()}
    assert not registry.failures
    assert "bicubic" in {s.id for s in registry.backends()}


def test_duplicate_ids_and_malformed_descriptions_are_failures():
    from invsr_desktop.engine.hookspecs import hookimpl

    class Dup:
        @hookimpl
        def invsr_backends(self):
            from plugins.bicubic import invsr_backends

            return invsr_backends()

    class Malformed:
        @hookimpl
        def invsr_backends(self):
            return [{"id": "dict-is-not-a-spec"}]

    registry = Registry()
    registry.load_entry_points()
    registry.register(Dup(), "dup")
    registry.register(Malformed(), "malformed")
    messages = [str(f) for f in registry.failures]
    assert any("already provided" in m for m in messages)
    assert any("BackendSpec" in m for m in messages)


def test_unknown_backend_lists_the_available_ones():
    registry = Registry()
    registry.load_entry_points()
    with pytest.raises(KeyError, match="available: .*bicubic"):
        registry.get("no-such-backend")


def test_no_plugin_can_end_the_app_or_take_a_builtin_id(installed_plugins):
    registry = Registry()
    registry.load_entry_points()  # thirdparty_exits calls sys.exit() while describing: reported, not the end
    failures = {f.plugin: str(f) for f in registry.failures}
    assert "SystemExit: 3" in failures["thirdparty_exits"]
    assert registry.owner("bicubic") == "bicubic" and registry.get("bicubic").name != "Impostor"
    assert "thirdparty_faulty_runners" in failures and "belongs to the built-in plugin" in failures[
        "thirdparty_faulty_runners"]
    with pytest.raises(BackendBuildError, match="SystemExit"):
        registry.build("exits-at-build", BuildRequest(2, {}, None))


@pytest.mark.parametrize("backend, message", [
    ("raises-test", r'Backend "raises-test": the backend failed: RuntimeError: \[ONNXRuntimeError\]'),
    ("exits-test", r'Backend "exits-test": the backend failed: SystemExit: 7'),
    ("nans-test", r'Backend "nans-test": the backend returned a tile with NaN or infinite values'),
])
def test_a_failing_runner_fails_the_image_with_the_backends_name(installed_plugins, backend, message):
    registry = Registry()
    registry.load_entry_points()
    with pytest.raises(BackendError, match=message):
        Engine(registry).upscale_array(np.zeros((8, 8, 3), np.float32), backend, 2)


def test_a_plain_function_is_a_runner(installed_plugins):
    registry = Registry()
    registry.load_entry_points()
    out = Engine(registry).upscale_array(np.full((5, 6, 3), 0.5, np.float32), "plain-test", 2)
    assert out.shape == (10, 12, 3) and np.allclose(out, 0.5)


def test_listing_escapes_terminal_codes_and_blames_no_plugin_for_a_bad_model_file(tmp_path, monkeypatch):
    import shutil

    from model_export.commands.quality_metadata import write_metadata

    bundled = Path(__file__).resolve().parents[1] / "resources" / "models" / "esrgan-sharp-x4.onnx"
    shutil.copy(bundled, tmp_path / "evil-x4.onnx")
    write_metadata(tmp_path / "evil-x4.onnx", {"invsr.name": "Evil \x1b[2J\x1b[31mred"})
    (tmp_path / "broken.onnx").write_bytes(b"not onnx at all")
    monkeypatch.setenv("INVSR_MODELS_DIR", str(tmp_path))
    registry = Registry()
    registry.load_entry_points()
    listing = "\n".join(describe_backends(registry))
    assert "\x1b" not in listing and "Evil \\x1b[2J\\x1b[31mred" in listing
    skipped = [line for line in listing.splitlines() if "broken.onnx" in line]
    assert len(skipped) == 1 and 'plugin "' not in skipped[0], skipped


def test_a_user_model_with_a_bundled_models_name_is_said_to_replace_it(tmp_path, monkeypatch):
    import shutil

    bundled = Path(__file__).resolve().parents[1] / "resources" / "models" / "esrgan-sharp-x4.onnx"
    shutil.copy(bundled, tmp_path / "esrgan-sharp-x4.onnx")
    monkeypatch.setenv("INVSR_MODELS_DIR", str(tmp_path))
    registry = Registry()
    registry.load_entry_points()
    assert registry.get("esrgan-sharp-x4").info["origin"] == "user"
    notes = [line for line in describe_backends(registry) if line.startswith("NOTE")]
    assert len(notes) == 1 and "used instead of the bundled model" in notes[0] and "SKIPPED" not in notes[0]


def test_refresh_describes_the_plugins_again_and_finds_a_new_model_file(installed_plugins, tmp_path, monkeypatch):
    """A model added to the user folder appears after ``refresh`` (the app's Add model… needs no restart); the
    built-ins keep their ids and every failure is reported once, as after loading."""
    import shutil

    monkeypatch.setenv("INVSR_MODELS_DIR", str(tmp_path))
    registry = Registry()
    registry.load_entry_points()
    before = ({s.id: registry.owner(s.id) for s in registry.backends()}, sorted(map(str, registry.failures)))
    assert "copied-x4" not in before[0]
    registry.refresh()
    assert ({s.id: registry.owner(s.id) for s in registry.backends()}, sorted(map(str, registry.failures))) == before
    bundled = Path(__file__).resolve().parents[1] / "resources" / "models" / "esrgan-sharp-x4.onnx"
    shutil.copy(bundled, tmp_path / "copied-x4.onnx")
    registry.refresh()
    assert registry.owner("copied-x4") == "esrgan" and registry.owner("bicubic") == "bicubic"
    assert sorted(map(str, registry.failures)) == before[1]


def test_a_runner_that_breaks_the_protocol_fails_its_build_naming_the_member():
    """The Runner contract is read once, at build (RunnerTraits.of): a wrong member type names the backend and the
    member before any image runs; the optional members take their defaults."""
    from invsr_desktop.engine.backend import BackendSpec, RunnerTraits
    from invsr_desktop.engine.hookspecs import hookimpl

    class Passes:
        scale, multiple, passes = 2.0, 1, "8"

        def __call__(self, tile):
            return tile.repeat(2, 0).repeat(2, 1)

    class WholeWithoutRun(Passes):
        passes, whole_image = 1, True

    class Plugin:
        @hookimpl
        def invsr_backends(self):
            return [BackendSpec(id=i, name=i, kind="interpolation", scales=(2,), build=lambda r, c=c: c())
                    for i, c in (("bad-passes", Passes), ("bad-whole", WholeWithoutRun))]

    registry = Registry()
    registry.register(Plugin(), "contract-test")
    with pytest.raises(BackendBuildError, match='"bad-passes".*passes is \'8\'; the Runner protocol wants an integer'):
        Engine(registry).upscale_array(np.zeros((4, 4, 3), np.float32), "bad-passes", 2)
    with pytest.raises(BackendBuildError, match='"bad-whole".*no run_whole'):
        registry.build("bad-whole", BuildRequest(2, {}, None))
    with pytest.raises(TypeError, match="scale is None"):  # a bare function: the registry wraps it first
        RunnerTraits.of(lambda tile: tile)
    traits = RunnerTraits.of(type("R", (), {"scale": np.float32(4), "multiple": np.int64(2)})())
    assert traits == RunnerTraits(scale=4.0, multiple=2, positional=False, passes=1, whole_image=False, model_name="")
