"""Extensions in a real browser: the Extensions tab, an extension's tab, a tab whose build fails, per-job arguments
into the infotext and back, saved settings, enabling for the next start, and install from a folder.

Same set-up as tests/test_ui_browser.py (its helpers are imported: ``python app.py`` with the tiny SD1 checkpoint,
Debian's Chromium); this module's server gets ``--extensions-dir`` on a temporary folder holding copies of the
repo's three example extensions, one whose module raises on import and one whose tab's build raises. Generation
stays at 64x64 and 2 steps.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from playwright.sync_api import Page, expect

import tests.test_ui_browser as browser

# The shared fixtures, bound to names here so pytest finds them in this module; ``server`` is this module's own.
chromium = browser.chromium
ui = browser.ui
Server = browser.Server

EXAMPLES = Path(__file__).resolve().parent.parent / "extensions"
STATE = "easel-extensions.json"
BROKEN_IMPORT = "raise RuntimeError('this extension breaks on import')\n"
BROKEN_TAB = """
import gradio as gr
from webui import plugin_api as easel

@easel.hookimpl
def easel_ui_tabs():
    def build():
        gr.Markdown("the start of a tab")
        raise RuntimeError("this tab breaks while it is built")
    return [easel.Tab("Broken tab", build)]
"""
NAMES = ("broken-import", "broken-tab", "image-stats", "latent-mirror", "watermark")


def _write(root: Path, name: str, code: str) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    manifest = f'name = "{name}"\nversion = "0.9"\napi = "1.0"\ndescription = "{name}, made for the browser tests"\n'
    (folder / "extension.toml").write_text(manifest, encoding="utf-8")
    (folder / "extension.py").write_text(code, encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_sd1_ckpt: Path) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("ui-browser-extensions")
    (root / "models" / "Stable-diffusion").mkdir(parents=True)
    shutil.copy(tiny_sd1_ckpt, root / "models" / "Stable-diffusion" / "tiny-sd1.safetensors")
    extensions = root / "extensions"
    for example in ("image-stats", "latent-mirror", "watermark"):
        shutil.copytree(EXAMPLES / example, extensions / example)
    _write(extensions, "broken-import", BROKEN_IMPORT)
    _write(extensions, "broken-tab", BROKEN_TAB)
    with browser._serve(root, "--no-demo-model", "--extensions-dir", str(extensions)) as running:
        yield running


def _extensions_dir(server: Server) -> Path:
    return server.outputs.parent / "extensions"


def _state(server: Server) -> dict[str, Any]:
    path = server.outputs / STATE
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def _row(page: Page, name: str) -> Any:
    return page.locator(f'#extensions_table tr[data-extension="{name}"]')


def _text_box(page: Page, elem_id: str) -> Any:
    return page.locator(f"#{elem_id} textarea, #{elem_id} input").first


def test_the_extensions_tab_lists_every_extension_with_its_status_and_the_broken_ones_error(ui: Page) -> None:
    browser._open_tab(ui, "Extensions")
    expect(ui.locator("#extensions_table tbody tr")).to_have_count(len(NAMES))
    for name in ("image-stats", "latent-mirror", "watermark"):
        row = _row(ui, name)
        expect(row.locator(".easel-ext-status")).to_have_text("enabled")
        expect(row).to_contain_text("1.0.0")
        expect(row).to_contain_text(f"folder{name}/")
    broken = _row(ui, "broken-import")
    expect(broken.locator(".easel-ext-status")).to_have_text("failed")
    expect(broken).to_contain_text("extension.py does not import: RuntimeError: this extension breaks on import")
    tab = _row(ui, "broken-tab")
    expect(tab.locator(".easel-ext-status")).to_have_text("enabled")  # it runs; only its tab failed
    expect(tab).to_contain_text("The extension 'broken-tab' could not build its tab 'Broken tab'")
    expect(_row(ui, "watermark")).to_contain_text("Stamps a short text in a corner")
    expect(ui.locator("#extensions_broken-import_error")).to_contain_text("this extension breaks on import")
    # Settings only for the running extensions that have them; an Enabled box for every one.
    expect(ui.locator("#extensions_watermark_setting_corner")).to_be_visible()
    expect(ui.locator("#extensions_latent-mirror_setting_default_mode")).to_be_visible()
    expect(ui.locator("[id^=extensions_][id$=_enabled] input")).to_have_count(len(NAMES))
    expect(ui.locator("#extensions_install")).to_be_enabled()  # the server listens on 127.0.0.1
    browser._shot(ui, "extensions")


def test_the_image_stats_tab_reads_an_uploaded_image(ui: Page, tmp_path: Path) -> None:
    browser._open_tab(ui, "Image stats")
    Image.new("RGB", (40, 24), (200, 10, 10)).save(tmp_path / "red.png")
    ui.locator("#image_stats_input input[type=file]").set_input_files(str(tmp_path / "red.png"))
    output = ui.locator("#image_stats_output")
    expect(output).to_contain_text(re.compile(r"width\W+40\b"))
    expect(output).to_contain_text(re.compile(r"height\W+24\b"))


def test_a_tab_whose_build_fails_shows_the_error_and_the_rest_of_the_page_works(ui: Page, server: Server) -> None:
    browser._open_tab(ui, "Broken tab")
    error = ui.locator("#tab_ext_broken-tab_error .easel-error")
    expect(error).to_have_text(
        "The extension 'broken-tab' could not build its tab 'Broken tab': RuntimeError: this tab breaks while it is built"
    )
    expect(ui.get_by_text("the start of a tab")).to_be_hidden()  # what it built before failing is not shown
    browser._shot(ui, "extension-tab-error")
    browser._open_tab(ui, "txt2img")
    browser._small_job(ui, seed=3)
    before = server.pngs()
    ui.locator("#txt2img_generate").click()
    browser._expect_done(ui, server, before, seed=3)


def _choose(page: Page, elem_id: str, option: str) -> None:
    page.locator(f"#{elem_id} input").click()
    page.get_by_role("option", name=option, exact=True).click()
    expect(page.locator(f"#{elem_id} input")).to_have_value(option)


def test_a_per_job_argument_reaches_the_infotext_and_comes_back_from_png_info(ui: Page, server: Server) -> None:
    mode = "txt2img_ext_latent-mirror_mode"
    ui.locator("#txt2img_extensions").get_by_text("Extensions", exact=True).first.click()
    expect(ui.locator(f"#{mode}")).to_be_visible()
    expect(ui.locator(f"#{mode} input")).to_have_value("Default")
    _choose(ui, mode, "Left-right")
    browser._small_job(ui, seed=17, prompt="a mirrored circle")
    before = server.pngs()
    ui.locator("#txt2img_generate").click()
    path = browser._expect_done(ui, server, before, seed=17)
    expect(ui.locator("#txt2img_info textarea")).to_have_value(re.compile(r"Latent mirror: Left-right 1 until 0\.5"))
    browser._shot(ui, "txt2img-extensions")
    _choose(ui, mode, "Off")
    browser._set_number(ui, "txt2img_ext_latent-mirror_until", 0.9)

    browser._open_tab(ui, "PNG Info")
    ui.locator("#pnginfo_image input[type=file]").set_input_files(str(path))
    expect(ui.locator("#pnginfo_text textarea")).to_have_value(re.compile("Latent mirror: Left-right"))
    ui.locator("#pnginfo_send_to_txt2img").click()
    expect(ui.locator("#txt2img_prompt textarea")).to_have_value("a mirrored circle")
    expect(ui.locator(f"#{mode} input")).to_have_value("Left-right")
    expect(ui.locator("#txt2img_ext_latent-mirror_until input[type=number]")).to_have_value("0.5")
    # The watermark read nothing back (the image has none): its widgets keep their values.
    expect(ui.locator("#txt2img_ext_watermark_enabled input")).not_to_be_checked()


def test_watermark_settings_name_a_bad_value_and_save_a_good_one_that_jobs_use(ui: Page, server: Server) -> None:
    browser._open_tab(ui, "Extensions")
    text = _text_box(ui, "extensions_watermark_setting_default_text")
    text.fill("x" * 10_001)
    ui.locator("#extensions_watermark_save").click()
    status = ui.locator("#extensions_watermark_save_status")
    expect(status.locator(".easel-error")).to_contain_text("watermark.default_text")
    expect(status).to_contain_text("at most 10000 characters, got 10001")
    assert "watermark" not in _state(server).get("settings", {})

    text.fill("MARKED")
    ui.locator("#extensions_watermark_save").click()
    expect(status).to_contain_text("Saved the settings of 'watermark'")
    assert _state(server)["settings"]["watermark"]["default_text"] == "MARKED"
    try:
        browser._open_tab(ui, "txt2img")
        ui.locator("#txt2img_extensions").get_by_text("Extensions", exact=True).first.click()
        ui.locator("#txt2img_ext_watermark_enabled input").check()
        browser._small_job(ui, seed=23)
        before = server.pngs()
        ui.locator("#txt2img_generate").click()
        browser._expect_done(ui, server, before, seed=23)
        expect(ui.locator("#txt2img_info textarea")).to_have_value(re.compile(r"Watermark: MARKED"))
        # A reloaded page shows the saved value.
        browser._open(ui, server.url)
        browser._open_tab(ui, "Extensions")
        expect(_text_box(ui, "extensions_watermark_setting_default_text")).to_have_value("MARKED")
    finally:  # back to the default for the tests that follow
        browser._open_tab(ui, "Extensions")
        _text_box(ui, "extensions_watermark_setting_default_text").fill("Easel")
        ui.locator("#extensions_watermark_save").click()
        expect(status).to_contain_text("Saved the settings of 'watermark'")


def test_disabling_an_extension_says_it_applies_at_the_next_start(ui: Page, server: Server) -> None:
    browser._open_tab(ui, "Extensions")
    box = ui.locator("#extensions_image-stats_enabled input")
    expect(box).to_be_checked()
    box.uncheck()
    said = ui.locator("#extensions_image-stats_enabled_status")
    expect(said).to_contain_text("'image-stats' will be disabled: this applies at the next start.")
    expect(_row(ui, "image-stats").locator(".easel-ext-next")).to_have_text("disabled (changes)")
    assert _state(server)["disabled"] == ["image-stats"]
    expect(ui.get_by_role("tab", name="Image stats", exact=True)).to_be_visible()  # still running until then
    box.check()
    expect(said).to_contain_text("'image-stats' stays enabled at the next start, as it is now.")
    expect(_row(ui, "image-stats").locator(".easel-ext-next")).to_have_text("enabled")
    assert _state(server)["disabled"] == []


def test_install_from_a_local_folder_copies_it_into_the_extensions_folder(
    ui: Page, server: Server, tmp_path: Path
) -> None:
    source = _write(tmp_path / "mine", "hello-extension", "from webui import plugin_api as easel\n")
    plain = tmp_path / "not-an-extension"
    plain.mkdir()
    browser._open_tab(ui, "Extensions")
    box = _text_box(ui, "extensions_install_source")
    status = ui.locator("#extensions_install_status")
    box.fill(str(plain))
    ui.locator("#extensions_install").click()
    expect(status.locator(".easel-error")).to_contain_text("has no extension.toml")
    box.fill(str(source))
    ui.locator("#extensions_install").click()
    expect(status).to_contain_text("Installed 'hello-extension'")
    expect(status).to_contain_text("It will load at the next start.")
    installed = _extensions_dir(server) / "hello-extension"
    assert (installed / "extension.toml").read_bytes() == (source / "extension.toml").read_bytes()
    assert (installed / "extension.py").is_file()
    expect(_row(ui, "hello-extension").locator(".easel-ext-status")).to_have_text("installed")
    ui.locator("#extensions_install").click()  # again: the name is taken now
    expect(status.locator(".easel-error")).to_contain_text("already exists")
