"""Extensions in the page without a browser: per-job argument widgets to ``extension_args`` and back from an
infotext, the Extensions tab's handlers (enable, settings, install, the table), and the page built with extensions
whose tab fails to build."""

from __future__ import annotations

import json
import shutil
import textwrap
from collections.abc import Iterator
from html import unescape
from pathlib import Path
from typing import Any

import gradio as gr
import pytest

from tests.test_service import FakeEngine
from webui.errors import InvalidRequest
from webui.outputs.infotext import format_infotext
from webui.plugin_api import Setting
from webui.plugins.manager import STATE_FILE, PluginHost
from webui.service.service import GenerationService
from webui.settings import Settings
from webui.types import Mode
from webui.ui import forms
from webui.ui import page as page_module
from webui.ui.extensions_tab import (
    DISABLED_TEXT,
    extensions_table,
    install_extension,
    save_extension_settings,
    toggle_extension,
)
from webui.ui.generate_tab import RUN_OUTPUTS, run_job
from webui.ui.page import txt2img_fill

EXAMPLES = Path(__file__).resolve().parent.parent / "extensions"
KEEP = {"__type__": "update"}

RECORDER = """
from webui import plugin_api as easel

@easel.hookimpl
def easel_settings():
    return [easel.Setting("level", "Level", "int", 3)]

@easel.hookimpl
def easel_job_arguments():
    return [
        easel.Setting("count", "Count", "int", 1, minimum=0, maximum=8),
        easel.Setting("tag", "Tag", "str", ""),
    ]

@easel.hookimpl
def easel_before_generation(job):
    return {"prompt": f"{job.prompt} [count={job.args['count']!r} tag={job.args['tag']!r}]"}
"""

BROKEN = "raise RuntimeError('the broken extension cannot start')\n"

BAD_TAB = """
import gradio as gr
from webui import plugin_api as easel

@easel.hookimpl
def easel_ui_tabs():
    def build():
        gr.Markdown("half built")
        with gr.Blocks():  # a Blocks left by raising resets Gradio's context: the page must survive it
            raise ValueError("no widgets today")
    return [easel.Tab("Bad tab", build)]
"""

TXT2IMG = {
    "prompt": "a red circle",
    "negative_prompt": "",
    "sampler_name": "Euler",
    "scheduler": "Automatic",
    "steps": 3.0,
    "width": 64.0,
    "height": 64.0,
    "n_iter": 1.0,
    "batch_size": 1.0,
    "cfg_scale": 7.0,
    "seed": 5.0,
}


class HookedEngine(FakeEngine):
    """The fake engine, taking the extensions' hooks (per-step, infotext fields) the service hands a real one."""

    def generate(self, request, on_step=None, notes=None, maps=None, **hooks):
        yield from super().generate(request, on_step, notes, maps)


def _write(root: Path, name: str, code: str) -> None:
    folder = root / name
    folder.mkdir(parents=True)
    manifest = f'name = "{name}"\nversion = "0.3"\napi = "1.0"\ndescription = "{name} for tests"\n'
    (folder / "extension.toml").write_text(manifest, encoding="utf-8")
    (folder / "extension.py").write_text(textwrap.dedent(code), encoding="utf-8")


def _extensions(root: Path, *, bad_tab: bool = False) -> Path:
    """The repo's three examples, a recorder with arguments and settings, one that fails to import and, when
    asked, one whose tab fails to build."""
    folder = root / "extensions"
    for example in ("image-stats", "latent-mirror", "watermark"):
        shutil.copytree(EXAMPLES / example, folder / example)
    _write(folder, "recorder", RECORDER)
    _write(folder, "broken", BROKEN)
    if bad_tab:
        _write(folder, "bad-tab", BAD_TAB)
    return folder


@pytest.fixture
def service(tmp_path: Path) -> Iterator[GenerationService]:
    """A started service over the fake engine, with the extensions loaded by a real plugin host."""
    folder = _extensions(tmp_path)
    out = tmp_path / "out"
    host = PluginHost(folder, out, entry_points=False)
    host.load()
    settings = Settings(outputs_dir=out, extensions_dir=folder)
    running = GenerationService(settings, HookedEngine(), host).start()
    yield running
    running.stop()


def _specs(service: GenerationService) -> dict[str, list[Setting]]:
    return forms.argument_specs(service.plugins)


def _form(service: GenerationService, **args: Any) -> dict[str, Any]:
    """A txt2img form with every extension argument at its default, then ``args`` ({widget key: value})."""
    values = dict(TXT2IMG)
    for name, specs in _specs(service).items():
        for s in specs:
            values[forms.extension_key(name, s.key)] = s.default
    return {**values, **args}


def test_only_running_extensions_with_arguments_get_widgets_keyed_by_their_request_path(
    service: GenerationService,
) -> None:
    specs = _specs(service)
    assert list(specs) == ["latent-mirror", "recorder", "watermark"]  # load order; broken and image-stats have none
    assert [s.key for s in specs["latent-mirror"]] == ["mode", "strength", "until"]
    names = forms.fields_for(Mode.TXT2IMG, 1, specs)
    assert names[: len(forms.fields_for(Mode.TXT2IMG, 1))] == forms.fields_for(Mode.TXT2IMG, 1)
    assert names[-3:] == ("extension_args.recorder.tag", "extension_args.watermark.enabled", "extension_args.watermark.text")  # fmt: skip
    assert forms.argument_specs(None) == {}


def test_widget_values_become_extension_args_for_every_extension_with_arguments(service: GenerationService) -> None:
    form = _form(
        service,
        **{
            "extension_args.latent-mirror.mode": "Left-right",
            "extension_args.latent-mirror.strength": 1,  # a slider's whole number: a float argument
            "extension_args.recorder.count": 4.0,  # a slider hands floats: an int argument
            "extension_args.recorder.tag": None,  # an emptied text box
        },
    )
    request = forms.build_request(Mode.TXT2IMG, form, extensions=_specs(service))
    assert request.extension_args == {
        "latent-mirror": {"mode": "Left-right", "strength": 1.0, "until": 0.5},
        "recorder": {"count": 4, "tag": ""},
        "watermark": {"enabled": False, "text": ""},  # sent at their defaults too: explicit
    }
    service.submit(request)  # the plugin host's kinds: what the extensions get
    assert isinstance(request.extension_args["latent-mirror"]["strength"], float)
    assert isinstance(request.extension_args["recorder"]["count"], int)
    # A form without the widgets (a page built without extensions) sends none.
    assert forms.build_request(Mode.TXT2IMG, TXT2IMG, extensions=_specs(service)).extension_args == {}
    with pytest.raises(InvalidRequest) as err:
        forms.build_request(
            Mode.TXT2IMG, _form(service, **{"extension_args.recorder.count": None}), extensions=_specs(service)
        )
    assert err.value.field == "extension_args.recorder.count" and "a number is required" in err.value.message


def test_setting_values_follow_their_kind() -> None:
    number = Setting("n", "N", "int", 1)
    real = Setting("x", "X", "float", 0.5)
    assert forms.setting_value(number, 2.5, "w") == 2.5  # the host says it must be whole, naming the setting
    assert forms.setting_value(Setting("b", "B", "bool", False), None, "w") is False
    assert forms.setting_value(Setting("s", "S", "str", "a"), None, "w") == ""
    assert forms.setting_value(Setting("c", "C", "choice", "a", choices=("a",)), "b", "w") == "b"
    with pytest.raises(InvalidRequest) as err:
        forms.setting_value(real, "", "ext.x")
    assert err.value.field == "ext.x"
    assert forms.values_from_extension_args({"a": {"k": 1}, "b.c": {"m": "x"}}) == {
        "extension_args.a.k": 1,
        "extension_args.b.c.m": "x",
    }


def _generate(service: GenerationService, form: dict[str, Any]) -> list[dict[str, Any]]:
    names = list(form)
    run = run_job(service, Mode.TXT2IMG, names, "me", None, None, 1, [form[n] for n in names])
    return [dict(zip(RUN_OUTPUTS, update, strict=True)) for update in run]


def test_generate_hands_the_arguments_to_the_extension(service: GenerationService) -> None:
    form = _form(service, **{"extension_args.recorder.count": 6.0, "extension_args.recorder.tag": "blue"})
    *_, last = _generate(service, form)
    assert "Done in" in last["progress"], last["progress"]
    assert service.engine.runs == ["a red circle [count=6 tag='blue']"]


def test_a_bad_argument_gets_a_message_naming_its_widget_and_starts_nothing(service: GenerationService) -> None:
    (only,) = _generate(service, _form(service, **{"extension_args.latent-mirror.strength": 2.0}))
    assert only["job_id"] is None and "easel-error" in only["progress"]
    assert "extension_args.latent-mirror.strength" in only["progress"] and "between 0 and 1" in only["progress"]
    (only,) = _generate(service, _form(service, **{"extension_args.latent-mirror.mode": "Sideways"}))
    assert "extension_args.latent-mirror.mode" in only["progress"] and "Top-bottom" in only["progress"]
    assert service.engine.runs == []


def test_an_extension_that_stopped_running_after_the_page_was_built_is_not_sent(service: GenerationService) -> None:
    form = _form(service)
    ext = service.plugins.get("watermark")
    ext.status = "failed"  # as when its easel_app_started raised after the page was built
    *_, last = _generate(service, form)
    assert "Done in" in last["progress"], last["progress"]


def test_an_infotext_fills_the_arguments_extensions_read_back_and_keeps_the_others(
    service: GenerationService, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = format_infotext(
        "a mirrored circle",
        "",
        {"Steps": 3, "Seed": 9, "Size": "64x64", "Latent mirror": "Top-bottom 0.5 until 0.25", "Watermark": "HELLO"},
    )
    names = list(_form(service))
    calls: list[str] = []
    for module, name in ((page_module, "parse_infotext"), (service.plugins, "infotext_read")):
        real = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *a, real=real, name=name: calls.append(name) or real(*a))
    *fields, _, tabs, _, _, extensions = txt2img_fill(service, names, text, 0)
    assert calls == ["parse_infotext", "infotext_read"]  # one parse, one call of the extensions' hook per click
    filled = dict(zip(names, fields, strict=True))
    assert filled["prompt"]["value"] == "a mirrored circle" and tabs.selected == "txt2img"
    assert filled["extension_args.latent-mirror.mode"]["value"] == "Top-bottom"
    assert filled["extension_args.latent-mirror.strength"]["value"] == 0.5
    assert filled["extension_args.latent-mirror.until"]["value"] == 0.25
    assert filled["extension_args.watermark.enabled"]["value"] is True
    assert filled["extension_args.watermark.text"]["value"] == "HELLO"
    assert filled["extension_args.recorder.count"] == KEEP and filled["extension_args.recorder.tag"] == KEEP
    assert extensions == {**KEEP, "open": True}  # opened to show what was filled in
    plain = format_infotext("plain", "", {"Steps": 3, "Seed": 9, "Size": "64x64"})
    *fields, _, _, _, _, extensions = txt2img_fill(service, names, plain, 0)
    assert all(u == KEEP for n, u in zip(names, fields, strict=True) if n.startswith("extension_args."))
    assert extensions == KEEP


def _state(service: GenerationService) -> dict[str, Any]:
    path = service.settings.outputs_dir / STATE_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def test_the_enabled_box_is_remembered_for_the_next_start_and_the_table_says_what_changes(
    service: GenerationService,
) -> None:
    message, table = _shown(toggle_extension(service, "watermark", False))
    assert "'watermark' will be disabled" in message and "applies at the next start" in message
    assert _state(service)["disabled"] == ["watermark"]
    assert service.plugins.get("watermark").active  # still running until the restart
    assert "disabled (changes)" in _row(table, "watermark") and "(changes)" not in _row(table, "latent-mirror")
    message, table = _shown(toggle_extension(service, "watermark", True))
    assert "stays enabled" in message and "(changes)" not in _row(table, "watermark")
    assert _state(service)["disabled"] == []
    message, _ = _shown(toggle_extension(service, "broken", False))  # a failed one can be switched off too
    assert "'broken' will be disabled" in message and service.plugins.is_enabled_at_next_start("broken") is False
    message, _ = _shown(toggle_extension(service, "nobody", True))
    assert "easel-error" in message and "no extension named 'nobody'" in message


def _shown(update: tuple[Any, ...]) -> tuple[Any, ...]:
    """A handler's outputs with its message as the page shows it (HTML entities read)."""
    first, *rest = update
    return (unescape(first), *rest)


def _row(table: str, name: str) -> str:
    start = table.index(f'<tr data-extension="{name}">')
    return table[start : table.index("</tr>", start)]


def test_the_table_lists_every_extension_with_its_status_and_why_one_failed(service: GenerationService) -> None:
    service.plugins.get("image-stats").tab_error = "its tab could not be built"
    table = extensions_table(service)
    for name in ("image-stats", "latent-mirror", "watermark", "recorder", "broken"):
        assert f'data-extension="{name}"' in table
    broken = _row(table, "broken")
    assert "easel-ext-failed" in broken and "extension.py does not import: RuntimeError" in broken
    assert "the broken extension cannot start" in broken
    watermark = _row(table, "watermark")
    assert (
        '>1.0.0</td><td class="easel-ext-nowrap">1.0</td>' in watermark
        and "folder" in watermark
        and "watermark/" in watermark
    )
    assert "Stamps a short text" in watermark and "easel-ext-enabled" in watermark
    assert "its tab could not be built" in _row(table, "image-stats")
    service.plugins.get("recorder").tab_error = "<script>"
    assert "<script>" not in extensions_table(service)  # escaped


def test_saving_settings_names_a_bad_value_saves_nothing_then_saves_a_good_form(service: GenerationService) -> None:
    specs = service.plugins.get("watermark").settings
    status, *widgets = _shown(save_extension_settings(service, "watermark", specs, [True, "x" * 10_001, "top left"]))
    assert "easel-error" in status and "watermark.default_text" in status and "10000 characters" in status
    assert all(w == KEEP for w in widgets) and "settings" not in _state(service)
    status, *widgets = _shown(save_extension_settings(service, "watermark", specs, [True, "MINE", "corner"]))
    assert "watermark.corner" in status and "bottom right" in status
    status, *widgets = _shown(save_extension_settings(service, "watermark", specs, [True, "MINE", "top left"]))
    assert "Saved the settings of 'watermark'" in status and widgets == [True, "MINE", "top left"]
    assert _state(service)["settings"]["watermark"] == {"always": True, "default_text": "MINE", "corner": "top left"}
    assert service.plugins.settings_of("watermark")["default_text"] == "MINE"
    level = service.plugins.get("recorder").settings
    status, _ = _shown(save_extension_settings(service, "recorder", level, [None]))  # an emptied number box
    assert "recorder.level" in status and "a number is required" in status
    status, saved = _shown(save_extension_settings(service, "recorder", level, [7.0]))
    assert saved == 7 and _state(service)["settings"]["recorder"] == {"level": 7}


def _source_extension(root: Path, name: str) -> Path:
    _write(root, name, "from webui import plugin_api as easel\n")
    return root / name


def test_install_copies_a_folder_on_loopback_and_the_table_lists_it_until_the_next_start(
    service: GenerationService, tmp_path: Path
) -> None:
    source = _source_extension(tmp_path / "elsewhere", "fresh-one")
    message, table = _shown(install_extension(service, str(source)))
    assert "Installed 'fresh-one'" in message and "next start" in message
    assert (service.settings.extensions_dir / "fresh-one" / "extension.toml").is_file()
    assert "easel-ext-installed" in _row(table, "fresh-one")
    message, table = _shown(install_extension(service, str(source)))
    assert "easel-error" in message and "already exists" in message and table == KEEP
    message, _ = _shown(install_extension(service, str(_source_extension(tmp_path / "again", "watermark"))))
    assert "an extension named 'watermark' already exists" in message


def test_install_is_refused_beyond_loopback_even_when_called_by_hand(tmp_path: Path) -> None:
    source = _source_extension(tmp_path / "elsewhere", "fresh-one")
    folder = _extensions(tmp_path / "a")
    host = PluginHost(folder, tmp_path / "out", entry_points=False)
    host.load()
    exposed = GenerationService(Settings(outputs_dir=tmp_path / "out", extensions_dir=folder, host="0.0.0.0"), FakeEngine(), host)  # fmt: skip
    message, table = _shown(install_extension(exposed, str(source)))
    assert "easel-error" in message and "--allow-extension-install" in message and table == KEEP
    assert not (folder / "fresh-one").exists()
    allowed = GenerationService(
        Settings(outputs_dir=tmp_path / "out", extensions_dir=folder, host="0.0.0.0", allow_extension_install=True),
        FakeEngine(),
        host,
    )
    message, _ = _shown(install_extension(allowed, str(source)))
    assert "Installed 'fresh-one'" in message and (folder / "fresh-one").is_dir()
    off = GenerationService(Settings(outputs_dir=tmp_path / "out"), FakeEngine())
    message, _ = _shown(install_extension(off, str(source)))
    assert "--disable-extensions" in message


# -- the page ------------------------------------------------------------------------------------------------


def _page(tmp_path: Path, **settings: Any) -> tuple[gr.Blocks, GenerationService]:
    from webui.service.factory import create_service
    from webui.ui.page import build_ui

    (tmp_path / "models" / "Stable-diffusion").mkdir(parents=True, exist_ok=True)
    service = create_service(
        Settings(models_dir=tmp_path / "models", outputs_dir=tmp_path / "out", demo_model=False, **settings),
        start=False,
    )
    return build_ui(service), service


def _blocks(page: gr.Blocks) -> dict[str, Any]:
    return {block.elem_id: block for block in page.blocks.values() if getattr(block, "elem_id", None)}


def test_the_page_has_the_extensions_tab_and_the_extensions_tabs_and_survives_a_tab_that_fails(
    tmp_path: Path,
) -> None:
    page, service = _page(tmp_path, extensions_dir=_extensions(tmp_path, bad_tab=True))
    labels = [b.label for b in page.blocks.values() if isinstance(b, gr.Tab) and not b.label.startswith("ControlNet")]
    assert labels[-4:] == ["Settings", "Extensions", "Bad tab", "Image stats"]
    blocks = _blocks(page)
    error = unescape(blocks["tab_ext_bad-tab_error"].value)
    assert "The extension 'bad-tab' could not build its tab 'Bad tab': ValueError: no widgets today" in error
    assert blocks["tab_ext_bad-tab_body"].visible is False  # what it built before raising is hidden
    assert "image_stats_input" in blocks and "tab_ext_image-stats" in blocks
    for tab in ("txt2img", "img2img", "inpaint"):
        assert blocks[f"{tab}_ext_latent-mirror_mode"].choices == [(c, c) for c in ("Default", "Off", "Left-right", "Top-bottom")]  # fmt: skip
        assert blocks[f"{tab}_ext_latent-mirror_strength"].maximum == 1
        assert isinstance(blocks[f"{tab}_ext_watermark_enabled"], gr.Checkbox)
    assert isinstance(blocks["extensions_recorder_setting_level"], gr.Number)
    assert "extensions_broken_setting_level" not in blocks and "extensions_broken_enabled" in blocks
    assert blocks["extensions_install"].interactive is not False
    # A fresh page's load fills the table with the tab's build error and the settings as saved now.
    service.plugins.update_settings("watermark", {"default_text": "LATER"})
    (load,) = [f for f in page.fns.values() if getattr(f.fn, "__name__", "") == "on_load"]
    filled = {o.elem_id: v for o, v in zip(load.outputs, load.fn(None), strict=True)}
    assert "could not build its tab" in _row(filled["extensions_table"], "bad-tab")
    assert service.plugins.get("bad-tab").tab_error.startswith("The extension 'bad-tab' could not build its tab")
    rows = {row["name"]: row for row in _api(service).get("/sdapi/v1/extensions").json()}
    assert rows["bad-tab"]["status"] == "enabled" and "could not build its tab 'Bad tab'" in rows["bad-tab"]["error"]
    assert rows["image-stats"]["error"] == ""
    assert filled["extensions_watermark_setting_default_text"] == "LATER"
    assert filled["extensions_watermark_enabled"] is True


def _api(service: GenerationService) -> Any:
    from fastapi import FastAPI
    from starlette.testclient import TestClient

    from webui.api import a1111

    app = FastAPI()
    app.include_router(a1111.build_router(service, {}, a1111.ApiOptions(service)))
    return TestClient(app)


def test_beyond_loopback_the_install_box_is_disabled_with_the_reason(tmp_path: Path) -> None:
    page, _ = _page(tmp_path, extensions_dir=_extensions(tmp_path), host="0.0.0.0")
    blocks = _blocks(page)
    assert blocks["extensions_install"].interactive is False
    assert blocks["extensions_install_source"].interactive is False
    assert "--allow-extension-install" in blocks["extensions_install_status"].value


def test_with_extensions_off_the_tab_says_so_and_the_tabs_have_no_extension_arguments(tmp_path: Path) -> None:
    page, service = _page(tmp_path)
    assert service.plugins is None
    blocks = _blocks(page)
    assert blocks["extensions_disabled"].value == DISABLED_TEXT and "--disable-extensions" in DISABLED_TEXT
    assert "txt2img_extensions" not in blocks and "extensions_install" not in blocks
