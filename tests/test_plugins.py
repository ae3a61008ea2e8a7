"""The plugin host: manifests and API versions, isolation of faulty extensions, every hook at its moment with its
arguments, per-job changes undone, through the real service on a tiny checkpoint."""

from __future__ import annotations

import shutil
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from webui.controlnet import preprocessors
from webui.errors import EaselError, InvalidRequest
from webui.outputs.infotext import parse_infotext
from webui.plugins.manager import PluginHost, api_compatible
from webui.service.factory import create_service
from webui.service.service import GenerationService
from webui.settings import Settings
from webui.types import GenerationRequest

SIZE = 64


def write_extension(root: Path, name: str, code: str, *, api: str = "1.0", manifest: str | None = None) -> Path:
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    text = (
        manifest if manifest is not None else f'name = "{name}"\nversion = "0.1"\napi = "{api}"\ndescription = "test"\n'
    )
    (folder / "extension.toml").write_text(text, encoding="utf-8")
    (folder / "extension.py").write_text(textwrap.dedent(code), encoding="utf-8")
    return folder


RECORDER = """
from webui import plugin_api as easel

CALLS = []

@easel.hookimpl
def easel_settings():
    return [easel.Setting("suffix", "Suffix", "str", ", recorded")]

@easel.hookimpl
def easel_job_arguments():
    return [easel.Setting("boost", "Extra steps", "int", 0, minimum=0, maximum=5)]

@easel.hookimpl
def easel_app_started(app):
    CALLS.append(("app_started", app.name))

    @app.router.get("/ping")
    def ping():
        return {"pong": app.name}

@easel.hookimpl
def easel_before_generation(job):
    CALLS.append(("before_generation", job.prompt, job.args["boost"], job.settings["suffix"]))
    return {"prompt": job.prompt + job.settings["suffix"], "steps": job.steps + job.args["boost"]}

@easel.hookimpl
def easel_denoising_step(step):
    CALLS.append(("step", step.index, step.total, tuple(step.latents.shape)))

@easel.hookimpl
def easel_postprocess_image(image, job):
    CALLS.append(("postprocess", image.size, job.prompt))
    return image.transpose(0)  # mirrored left to right

@easel.hookimpl
def easel_infotext_fields(job):
    CALLS.append(("infotext_fields", job.id))
    return {"Recorder boost": job.args["boost"]}

@easel.hookimpl
def easel_infotext_read(fields):
    return {"boost": int(fields["Recorder boost"])} if "Recorder boost" in fields else None

@easel.hookimpl
def easel_image_saved(path, infotext, job):
    CALLS.append(("image_saved", path.name, "Recorder boost" in infotext))

@easel.hookimpl
def easel_model_loaded(model):
    CALLS.append(("model_loaded", model.name, model.family))
"""


def _request(**fields) -> GenerationRequest:
    base = {"prompt": "a red circle", "steps": 2, "width": SIZE, "height": SIZE, "seed": 4}
    return GenerationRequest.build(**{**base, **fields})


@pytest.fixture
def models(tmp_path: Path, tiny_sd1_ckpt: Path) -> Path:
    (tmp_path / "models" / "Stable-diffusion").mkdir(parents=True)
    shutil.copy(tiny_sd1_ckpt, tmp_path / "models" / "Stable-diffusion" / "tiny.safetensors")
    return tmp_path / "models"


@contextmanager
def _running(tmp_path: Path, models: Path, extensions: Path) -> Iterator[GenerationService]:
    """A started service with the extensions in ``extensions``, stopped after the block."""
    settings = Settings(models_dir=models, outputs_dir=tmp_path / "out", demo_model=False, extensions_dir=extensions)
    service = create_service(settings)
    try:
        yield service
    finally:
        service.stop()
        preprocessors.unregister_extensions()  # the next test's built-in list is Easel's own


def test_api_versions_are_checked_by_major_and_minor() -> None:
    assert api_compatible("1.0", "1.0") is None and api_compatible("1.0", "1.3") is None
    assert "needs plugin API 1.4; this Easel has 1.3" in api_compatible("1.4", "1.3")
    assert "needs plugin API 2.0" in api_compatible("2.0", "1.3")
    assert "not a version" in api_compatible("soon", "1.0")


def test_faulty_extensions_are_listed_with_their_error_and_the_rest_load(tmp_path: Path) -> None:
    root = tmp_path / "extensions"
    write_extension(
        root,
        "good",
        "from webui import plugin_api as easel\n@easel.hookimpl\ndef easel_model_loaded(model):\n    pass\n",
    )
    write_extension(root, "newer", "", api="1.9")
    write_extension(root, "future", "", api="2.0")
    write_extension(root, "broken-import", "import no_such_module_anywhere\n")
    write_extension(root, "syntax", "def (:\n")
    write_extension(root, "exits", "raise SystemExit(3)\n")
    write_extension(
        root,
        "wrong-args",
        "from webui import plugin_api as easel\n@easel.hookimpl\ndef easel_postprocess_image(picture, job):\n    return None\n",
    )
    write_extension(
        root,
        "typo",
        "from webui import plugin_api as easel\n@easel.hookimpl\ndef easel_postprocess(image):\n    return None\n",
    )
    write_extension(root, "no-api", "", manifest='name = "no-api"\nversion = "1"\n')
    write_extension(root, "bad-manifest", "", manifest="name = [unclosed\n")
    write_extension(
        root,
        "startup-raises",
        "from webui import plugin_api as easel\n@easel.hookimpl\ndef easel_settings():\n    raise RuntimeError('boom')\n",
    )
    (root / "no-manifest").mkdir()
    host = PluginHost(root, tmp_path / "data", entry_points=False)
    host.load()
    status = {e.name: (e.status, e.error) for e in host.extensions}
    assert status["good"] == ("enabled", "")
    assert status["newer"][0] == "refused" and "needs plugin API 1.9; this Easel has 1.0" in status["newer"][1]
    assert status["future"][0] == "refused" and "2.0" in status["future"][1]
    assert (
        status["broken-import"][0] == "failed"
        and "No module named 'no_such_module_anywhere'" in status["broken-import"][1]
    )
    assert status["syntax"][0] == "failed" and "SyntaxError" in status["syntax"][1]
    assert status["exits"][0] == "failed" and "SystemExit" in status["exits"][1]
    assert status["wrong-args"][0] == "failed" and "picture" in status["wrong-args"][1]
    assert status["typo"][0] == "failed" and "easel_postprocess: no such hook" in status["typo"][1]
    assert status["no-api"][0] == "refused" and "api" in status["no-api"][1]
    assert status["bad-manifest"][0] == "failed" and "does not parse" in status["bad-manifest"][1]
    assert status["startup-raises"][0] == "failed" and "RuntimeError: boom" in status["startup-raises"][1]
    assert status["no-manifest"][0] == "failed" and "extension.toml" in status["no-manifest"][1]
    assert [e.name for e in host.active] == ["good"]


def test_every_hook_runs_at_its_moment_and_changes_last_one_job(tmp_path: Path, models: Path) -> None:
    root = tmp_path / "extensions"
    write_extension(root, "recorder", RECORDER)
    with _running(tmp_path, models, root) as service:
        import easel_extensions.recorder as recorder  # the host imports a folder extension under this name

        assert ("model_loaded", "tiny.safetensors", "sd1") not in recorder.CALLS  # nothing loaded yet
        job = service.submit(_request(extension_args={"recorder": {"boost": 1}}))
        result = job.wait(120)
        calls = recorder.CALLS
        kinds = [c[0] for c in calls]
        assert (
            kinds.index("model_loaded") < kinds.index("step") < kinds.index("postprocess") < kinds.index("image_saved")
        )
        assert ("before_generation", "a red circle", 1, ", recorded") in calls
        assert calls.index(next(c for c in calls if c[0] == "before_generation")) < kinds.index("step")
        steps = [c for c in calls if c[0] == "step"]
        assert [s[1] for s in steps] == [1, 2, 3] and {s[2] for s in steps} == {3}  # 2 steps + the boost of 1
        assert steps[0][3] == (1, 4, SIZE // 8, SIZE // 8)
        assert ("postprocess", (SIZE, SIZE), "a red circle, recorded") in calls
        (image,) = result.images
        info = parse_infotext(image.infotext)
        assert info["Recorder boost"] == 1 and info["Steps"] == 3 and info["Prompt"] == "a red circle, recorded"
        assert ("image_saved", image.path.name, True) in calls
        assert result.request.steps == 3 and job.request.steps == 2  # the job ran the change; the queued request kept
        # The next job without arguments gets the defaults; nothing from the first job stays.
        calls.clear()
        plain = service.generate(_request(), timeout=120)
        assert ("before_generation", "a red circle", 0, ", recorded") in calls
        assert plain.request.steps == 2
        assert service.plugins.infotext_read(info) == {"recorder": {"boost": 1}}


def test_per_job_arguments_are_checked_by_name(tmp_path: Path, models: Path) -> None:
    root = tmp_path / "extensions"
    write_extension(root, "recorder", RECORDER)
    with _running(tmp_path, models, root) as service:
        cases = [
            ({"recorder": {"boost": 9}}, "extension_args.recorder.boost", "between 0 and 5"),
            ({"recorder": {"boost": "x"}}, "extension_args.recorder.boost", "a number"),
            ({"recorder": {"speed": 1}}, "extension_args.recorder.speed", "not an argument"),
            ({"nobody": {}}, "extension_args.nobody", "no enabled extension"),
        ]
        for args, field, words in cases:
            with pytest.raises(InvalidRequest) as info:
                service.submit(_request(extension_args=args))
            assert info.value.field == field and words in str(info.value)
        with pytest.raises(InvalidRequest) as info:
            service.plugins.update_settings("recorder", {"suffix": 3})
        assert info.value.field == "recorder.suffix"
        service.plugins.update_settings("recorder", {"suffix": "!"})
        again = PluginHost(root, tmp_path / "out", entry_points=False)  # saved in the data folder
        again.load()
        assert again.settings_of("recorder") == {"suffix": "!"}


RAISES = """
from webui import plugin_api as easel

FAIL = set()

@easel.hookimpl
def easel_before_generation(job):
    if "before" in FAIL:
        raise ValueError("before went wrong")

@easel.hookimpl
def easel_denoising_step(step):
    if "step" in FAIL:
        raise easel.PluginError("the step went wrong")
    if "shape" in FAIL:
        return step.latents[:, :2]

@easel.hookimpl
def easel_postprocess_image(image, job):
    if "post" in FAIL:
        raise KeyError("post")
    if "type" in FAIL:
        return "not an image"

@easel.hookimpl
def easel_infotext_fields(job):
    if "fields" in FAIL:
        raise RuntimeError("fields")
    if "steal" in FAIL:
        return {"Seed": 1}

@easel.hookimpl
def easel_image_saved(path, infotext, job):
    if "saved" in FAIL:
        raise RuntimeError("observers may fail")

@easel.hookimpl
def easel_model_loaded(model):
    if "loaded" in FAIL:
        raise RuntimeError("observers may fail")
"""


@pytest.mark.parametrize(
    ("fail", "words"),
    [
        ("before", "extension 'raiser' failed in easel_before_generation: ValueError: before went wrong"),
        ("step", "extension 'raiser' failed in easel_denoising_step: the step went wrong"),
        ("shape", "easel_denoising_step: ValueError: returned latents of shape"),
        ("post", "extension 'raiser' failed in easel_postprocess_image: KeyError"),
        ("type", "easel_postprocess_image: TypeError: returned str, not a PIL image"),
        ("fields", "extension 'raiser' failed in easel_infotext_fields: RuntimeError: fields"),
        ("steal", "cannot write the key 'Seed'"),
    ],
)
def test_a_raising_hook_fails_only_its_job_naming_the_extension(
    tmp_path: Path, models: Path, fail: str, words: str
) -> None:
    root = tmp_path / "extensions"
    write_extension(root, "raiser", RAISES)
    with _running(tmp_path, models, root) as service:
        import easel_extensions.raiser as raiser

        raiser.FAIL.clear()
        before = service.generate(_request(), timeout=120).images[0].image
        raiser.FAIL.add(fail)
        with pytest.raises(EaselError, match=words.replace("(", r"\(").replace(")", r"\)")):
            service.generate(_request(), timeout=120)
        raiser.FAIL.clear()
        after = service.generate(_request(), timeout=120).images[0].image
        assert np.array_equal(np.asarray(before), np.asarray(after))  # the next job runs, untouched


def test_observers_that_raise_are_logged_and_the_job_is_done(tmp_path: Path, models: Path) -> None:
    root = tmp_path / "extensions"
    write_extension(root, "raiser", RAISES)
    with _running(tmp_path, models, root) as service:
        import easel_extensions.raiser as raiser

        raiser.FAIL.clear()
        raiser.FAIL.update({"saved", "loaded"})
        result = service.generate(_request(), timeout=120)
        assert len(result.images) == 1 and result.images[0].path.is_file()
        raiser.FAIL.clear()


def test_routes_are_served_under_the_extensions_prefix(tmp_path: Path, models: Path) -> None:
    from fastapi.testclient import TestClient

    from webui.api.server import build_app

    root = tmp_path / "extensions"
    write_extension(root, "recorder", RECORDER)
    with _running(tmp_path, models, root) as service:
        app = build_app(service)
        with TestClient(app) as client:
            assert client.get("/easel/v1/ext/recorder/ping").json() == {"pong": "recorder"}


def test_disabled_extensions_stay_off_until_enabled_and_none_load_without_a_folder(tmp_path: Path) -> None:
    root = tmp_path / "extensions"
    write_extension(root, "recorder", RECORDER)
    data = tmp_path / "data"
    host = PluginHost(root, data, entry_points=False)
    host.load()
    host.set_enabled("recorder", False)
    assert not host.is_enabled_at_next_start("recorder") and host.get("recorder").active  # applies at restart
    later = PluginHost(root, data, entry_points=False)
    later.load()
    assert later.get("recorder").status == "disabled" and later.active == []
    later.set_enabled("recorder", True)
    third = PluginHost(root, data, entry_points=False)
    third.load()
    assert third.get("recorder").active
    assert PluginHost(root, data, enabled=False).load() == []  # --disable-extensions


PREPROCESSOR = """
import numpy as np
from webui import plugin_api as easel

def blue_only(image, level):
    out = np.zeros_like(image)
    out[..., 2] = np.where(image[..., 2] > level, 255, 0)
    return out

def broken(image):
    raise RuntimeError("no map today")

@easel.hookimpl
def easel_controlnet_preprocessors():
    return [
        easel.Preprocessor("blue_only", blue_only, easel.Slider("Blue level", 128, 0, 255)),
        easel.Preprocessor("broken_map", broken),
        easel.Preprocessor("canny", broken),
    ]
"""


def test_an_extensions_preprocessors_run_like_the_built_in_ones(tmp_path: Path, models: Path) -> None:
    from tests.fixtures.tiny_controlnets import make_controlnet
    from webui.controlnet.units import ControlNetUnit

    root = tmp_path / "extensions"
    write_extension(root, "maps", PREPROCESSOR)
    make_controlnet(models / "ControlNet", "sd1", seed=1, name="control_tiny.safetensors")
    with _running(tmp_path, models, root) as service:
        assert preprocessors.find("blue_only").extension == "maps"
        assert preprocessors.find("canny").extension == ""  # a taken name is refused, Easel's stays
        image = Image.new("RGB", (SIZE, SIZE), (10, 10, 200))
        image.paste((10, 10, 10), (0, 0, 32, SIZE))
        unit = ControlNetUnit(module="blue_only", image=image, threshold_a=100)
        detected = np.asarray(service.detect_map(unit, SIZE, SIZE).image)
        assert (detected[:, 40:, 2] == 255).all() and (detected[:, :24, 2] == 0).all() and detected[..., 0].max() == 0
        with pytest.raises(InvalidRequest) as info:
            service.detect_map(ControlNetUnit(module="blue_only", image=image, threshold_a=300), SIZE, SIZE)
        assert info.value.field == "controlnet_units[0].threshold_a"
        units = [{"model": "control_tiny", "module": "broken_map", "image": image}]
        with pytest.raises(EaselError, match="extension 'maps' failed in its preprocessor 'broken_map': RuntimeError"):
            service.generate(_request(controlnet_units=units), timeout=120)
        units = [{"model": "control_tiny", "module": "blue_only", "image": image}]
        assert "Module: blue_only" in service.generate(_request(controlnet_units=units), timeout=120).images[0].infotext


STARTUP_RAISES = """
from webui import plugin_api as easel

@easel.hookimpl
def {hook}({args}):
    raise RuntimeError("{hook} went wrong")
"""


@pytest.mark.parametrize(
    ("hook", "args"),
    [
        ("easel_job_arguments", ""),
        ("easel_controlnet_preprocessors", ""),
        ("easel_app_started", "app"),
        ("easel_ui_tabs", ""),
    ],
)
def test_a_start_up_hook_that_raises_disables_only_its_extension(
    tmp_path: Path, models: Path, hook: str, args: str
) -> None:
    from fastapi.testclient import TestClient

    from webui.api.server import build_app

    root = tmp_path / "extensions"
    write_extension(
        root,
        "bad",
        STARTUP_RAISES.format(hook=hook, args=args),
    )
    write_extension(root, "recorder", RECORDER)
    with _running(tmp_path, models, root) as service:
        with TestClient(build_app(service)) as client:
            assert client.get("/easel/v1/ext/recorder/ping").json() == {"pong": "recorder"}
        service.plugins.tabs()  # the page asks for tabs while it is built
        bad = service.plugins.get("bad")
        assert bad.status == "failed" and f"RuntimeError: {hook} went wrong" in bad.error
        assert service.plugins.get("recorder").active
        assert len(service.generate(_request(), timeout=120).images) == 1


def test_an_installed_package_registers_through_its_entry_point(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.metadata
    import sys

    package = tmp_path / "site"
    package.mkdir()
    (package / "easel_packaged_ext.py").write_text(
        'EASEL_EXTENSION = {"name": "packaged", "version": "2.1", "api": "1.0", "description": "from a wheel"}\n'
        + RECORDER,
        encoding="utf-8",
    )
    monkeypatch.syspath_prepend(str(package))
    point = importlib.metadata.EntryPoint("packaged", "easel_packaged_ext", "easel.extensions")
    missing = importlib.metadata.EntryPoint("gone", "easel_no_such_module_here", "easel.extensions")
    monkeypatch.setattr(
        importlib.metadata, "entry_points", lambda group=None: [point, missing] if group == "easel.extensions" else []
    )
    host = PluginHost(tmp_path / "no-folder", tmp_path / "data", entry_points=True)
    host.load()
    packaged = host.get("packaged")
    assert (packaged.status, packaged.source, packaged.version, packaged.description) == (
        "enabled",
        "package",
        "2.1",
        "from a wheel",
    )
    assert [s.key for s in packaged.arguments] == ["boost"]
    gone = host.get("gone")
    assert gone.status == "failed" and "does not import" in gone.error
    sys.modules.pop("easel_packaged_ext", None)


def test_the_flags_turn_extensions_on_and_off() -> None:
    import app

    on = settings_from(app.build_parser().parse_args([]))
    assert on.extensions_dir is not None and on.extensions_dir.name == "extensions" and on.extension_packages
    off = settings_from(app.build_parser().parse_args(["--disable-extensions"]))
    assert off.extensions_dir is None and not off.extension_packages
    assert settings_from(app.build_parser().parse_args(["--allow-extension-install"])).allow_extension_install


def settings_from(args):
    from webui.settings import from_args

    return from_args(args)
