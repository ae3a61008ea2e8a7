"""ControlNet units, the ControlNet tab, hires fix and SD upscale in a real browser.

Same set-up as tests/test_ui_browser.py (its helpers are imported: ``python app.py`` with the tiny SD1 checkpoint,
Debian's Chromium); this module's server also has a tiny ControlNet made for that checkpoint in
``models/ControlNet`` and a tiny 2x ESRGAN in ``models/ESRGAN``. Generation stays at 64x64 and 2 steps.
"""

from __future__ import annotations

import io
import re
import shutil
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw
from playwright.sync_api import Locator, Page, expect

import tests.test_ui_browser as browser
from tests.fixtures.tiny_controlnets import make_controlnet
from tests.fixtures.tiny_upscalers import save_upscaler, tiny_rrdb

# The shared fixtures, bound to names here so pytest finds them in this module; ``server`` is this module's own.
chromium = browser.chromium
ui = browser.ui
Server = browser.Server

MODEL_FILE = "control_tiny.safetensors"
MODEL = re.compile(r"^control_tiny\.safetensors( \[[0-9a-f]{10}\])?$")  # the hash shows once the model was loaded
UPSCALER = "2x-tiny"
CONTROLNET_INFO = re.compile(
    r'ControlNet 0: "Module: canny, Model: control_tiny\.safetensors \[[0-9a-f]{10}\], Weight: '
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_sd1_ckpt: Path) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("ui-browser-controlnet")
    (root / "models" / "Stable-diffusion").mkdir(parents=True)
    shutil.copy(tiny_sd1_ckpt, root / "models" / "Stable-diffusion" / "tiny-sd1.safetensors")
    make_controlnet(root / "models" / "ControlNet", "sd1", seed=1, name=MODEL_FILE)
    save_upscaler(tiny_rrdb(2, seed=3), root / "models" / "ESRGAN" / f"{UPSCALER}.pth")
    with browser._serve(root, "--no-demo-model") as running:
        yield running


def _square(path: Path, size: int = 64) -> Path:
    """A white square on black: canny draws its outline."""
    image = Image.new("RGB", (size, size), (0, 0, 0))
    ImageDraw.Draw(image).rectangle((size // 4, size // 4, 3 * size // 4, 3 * size // 4), fill=(255, 255, 255))
    image.save(path)
    return path


def _choose(page: Page, elem_id: str, option: str | re.Pattern[str]) -> None:
    """Pick ``option`` in a dropdown, as a user does."""
    page.locator(f"#{elem_id} input").click()
    page.get_by_role("option", name=option, exact=True).click()
    expect(page.locator(f"#{elem_id} input")).to_have_value(option)


def _open_accordion(page: Page, elem_id: str, label: str) -> None:
    page.locator(f"#{elem_id}").get_by_text(label, exact=True).first.click()


def _unit(page: Page, tab: str = "txt2img", index: int = 0) -> str:
    return f"{tab}_controlnet_{index}"


def _set_up_unit(page: Page, image: Path, tab: str = "txt2img") -> str:
    """Open the ControlNet accordion, upload ``image`` into unit 0 (which enables it, as in the extension) and
    choose canny and the tiny model."""
    unit = _unit(page, tab)
    _open_accordion(page, f"{tab}_controlnet", "ControlNet")
    enabled = page.locator(f"#{unit}_enabled input")
    expect(enabled).not_to_be_checked()
    page.locator(f"#{unit}_image input[type=file]").set_input_files(str(image))
    expect(page.locator(f"#{unit}_image img").first).to_be_visible()
    expect(enabled).to_be_checked()
    _choose(page, f"{unit}_module", "canny")
    expect(page.locator(f"#{unit}_threshold_a")).to_contain_text("Canny Low Threshold")
    _choose(page, f"{unit}_model", MODEL)
    return unit


def _fetch(page: Page, image: Locator, server: Server) -> Image.Image:
    """The picture an ``<img>`` of the page shows, as the server sends it."""
    src = image.get_attribute("src") or ""
    url = src if src.startswith("http") else server.url.rstrip("/") + src
    with urllib.request.urlopen(url, timeout=10) as response:
        return Image.open(io.BytesIO(response.read())).convert("RGB")


def _edges_of_a_square(picture: Image.Image) -> bool:
    """A canny map of the square: black and white only, a thin outline (the filled square would be a quarter of the
    picture white, its middle included)."""
    pixels = np.asarray(picture.convert("L"))
    white = pixels > 127
    middle = white[white.shape[0] // 2, white.shape[1] // 2]
    binary = ((pixels < 16) | (pixels > 240)).mean() > 0.95
    return bool(binary and 0.005 < white.mean() < 0.1 and not middle)


def test_a_unit_in_txt2img_puts_its_infotext_and_its_detected_map_after_the_image(
    ui: Page, server: Server, tmp_path: Path
) -> None:
    unit = _set_up_unit(ui, _square(tmp_path / "square.png"))
    browser._small_job(ui, seed=11)
    before = server.pngs()
    ui.locator("#txt2img_generate").click()
    path = browser._expect_done(ui, server, before, seed=11)
    expect(ui.locator("#txt2img_info textarea")).to_have_value(CONTROLNET_INFO)
    gallery = ui.locator("#txt2img_gallery")
    expect(gallery.locator("img")).to_have_count(2)  # the image, then the unit's map
    expect(gallery).to_contain_text("ControlNet 0 detected map")
    assert Image.open(path).size == (64, 64) and len(server.pngs() - before) == 1  # the map is not saved
    ui.locator(f"#{unit}_preview").click()
    expect(ui.locator(f"#{unit}_detected img")).to_be_visible()
    browser._shot(ui, "txt2img-controlnet")

    # Selecting the map shows no infotext or file; selecting the image shows them again.
    gallery.locator("img").nth(1).click()
    expect(ui.locator("#txt2img_info textarea")).to_have_value("")
    expect(ui.locator("#txt2img_file_link a")).to_have_count(0)
    ui.locator("#txt2img_send_to_img2img").click()
    browser._expect_error_toast(ui, "detected maps are not sent")
    expect(ui.get_by_role("tab", name="txt2img", exact=True)).to_have_attribute("aria-selected", "true")


def test_the_units_preview_shows_the_canny_map_at_the_tabs_size(ui: Page, server: Server, tmp_path: Path) -> None:
    unit = _set_up_unit(ui, _square(tmp_path / "square.png", 128))
    browser._set_number(ui, "txt2img_width", 96)
    browser._set_number(ui, "txt2img_height", 64)
    ui.locator(f"#{unit}_preview").click()
    shown = ui.locator(f"#{unit}_detected img")
    expect(shown).to_be_visible()
    expect(ui.locator(f"#{unit}_message")).to_contain_text("Detected map (canny): 96x64, preprocessor resolution 512")
    picture = _fetch(ui, shown, server)
    assert picture.size == (96, 64) and _edges_of_a_square(picture)


def test_hires_fix_makes_a_twice_as_large_image_with_its_infotext(ui: Page, server: Server) -> None:
    _open_accordion(ui, "txt2img_hires_fix", "Hires. fix")
    ui.locator("#txt2img_enable_hr input").check()
    expect(ui.locator("#txt2img_hires_fix")).to_contain_text("Hires. fix (on)")
    browser._small_job(ui, seed=12)
    expect(ui.locator("#txt2img_hires_size")).to_have_text("from 64x64 to 128x128")
    browser._set_number(ui, "txt2img_hr_scale", 1.5)
    expect(ui.locator("#txt2img_hires_size")).to_have_text("from 64x64 to 96x96")
    browser._set_number(ui, "txt2img_hr_scale", 2)
    _choose(ui, "txt2img_hr_upscaler", UPSCALER)
    browser._set_number(ui, "txt2img_hires_steps", 2)
    expect(ui.locator("#txt2img_hires_size")).to_have_text("from 64x64 to 128x128")
    expect(ui.get_by_role("option")).to_have_count(0)  # the upscaler menu has closed
    ui.wait_for_timeout(300)  # and faded
    browser._shot(ui, "txt2img-hires")
    before = server.pngs()
    ui.locator("#txt2img_generate").click()
    path = browser._expect_done(ui, server, before, seed=12)
    assert Image.open(path).size == (128, 128)
    info = ui.locator("#txt2img_info textarea").input_value()
    assert "Hires upscale: 2" in info and f"Hires upscaler: {UPSCALER}" in info and "Size: 64x64" in info, info


def test_sd_upscale_in_img2img_makes_the_image_twice_as_large(ui: Page, server: Server, tmp_path: Path) -> None:
    browser._open_tab(ui, "img2img")
    picture = browser._png(tmp_path / "in.png", (0, 90, 200))
    ui.locator("#img2img_image input[type=file]").set_input_files(str(picture))
    expect(ui.locator("#img2img_image img").first).to_be_visible()
    browser._small_job(ui, seed=13, tab="img2img")
    expect(ui.locator("#img2img_sd_upscale")).to_be_hidden()
    _choose(ui, "img2img_script", "SD upscale")
    expect(ui.locator("#img2img_sd_upscale")).to_be_visible()
    browser._set_number(ui, "img2img_sd_upscale_overlap", 16)
    _open_accordion(ui, "img2img_controlnet", "ControlNet")
    expect(ui.locator("#img2img_controlnet_0_input_note")).to_contain_text("img2img image")
    browser._shot(ui, "img2img-sd-upscale")
    before = server.pngs("img2img-images")
    ui.locator("#img2img_generate").click()
    path = browser._expect_done(ui, server, before, seed=13, tab="img2img")
    assert Image.open(path).size == (128, 128)
    assert "SD upscale: 2" in ui.locator("#img2img_info textarea").input_value()


def test_the_controlnet_tab_previews_and_hands_its_setting_to_a_unit(ui: Page, server: Server, tmp_path: Path) -> None:
    browser._open_tab(ui, "ControlNet")
    expect(ui.locator("#controlnet_note")).not_to_contain_text("not available")
    ui.locator("#controlnet_image input[type=file]").set_input_files(str(_square(tmp_path / "square.png", 128)))
    expect(ui.locator("#controlnet_image img").first).to_be_visible()
    ui.locator("#controlnet_module input").click()
    needs = ui.get_by_role("option", name="openpose (needs body_pose_model.pth in models/annotators)", exact=True)
    expect(needs).to_be_visible()  # listed, with what it needs
    ui.get_by_role("option", name="canny", exact=True).click()
    browser._set_number(ui, "controlnet_threshold_a", 80)
    for side in ("width", "height"):
        browser._set_number(ui, f"controlnet_{side}", 128)
    ui.locator("#controlnet_preview").click()
    shown = ui.locator("#controlnet_detected img")
    expect(shown).to_be_visible()
    assert _edges_of_a_square(_fetch(ui, shown, server))
    browser._shot(ui, "controlnet-tab")

    ui.locator("#controlnet_use_txt2img").click()
    expect(ui.get_by_role("tab", name="txt2img", exact=True)).to_have_attribute("aria-selected", "true")
    unit = _unit(ui)
    expect(ui.locator(f"#{unit}_enabled input")).to_be_checked()
    expect(ui.locator(f"#{unit}_module input")).to_have_value("canny")
    expect(ui.locator(f"#{unit}_threshold_a")).to_contain_text("Canny Low Threshold")
    expect(ui.locator(f"#{unit}_threshold_a input[type=number]")).to_have_value("80")
    expect(ui.locator(f"#{unit}_image img").first).to_be_visible()

    browser._open_tab(ui, "ControlNet")
    ui.locator("#controlnet_use_img2img").click()
    expect(ui.get_by_role("tab", name="img2img", exact=True)).to_have_attribute("aria-selected", "true")
    expect(ui.locator(f"#{_unit(ui, 'img2img')}_enabled input")).to_be_checked()
    expect(ui.locator(f"#{_unit(ui, 'img2img')}_input_note")).to_contain_text("img2img image")


def test_a_pasted_threshold_out_of_range_gets_a_message_naming_the_field(
    ui: Page, server: Server, tmp_path: Path
) -> None:
    """The infotext of another version's unit (Threshold A 300 for canny, which allows 1-255) fills the unit; Generate
    names the field and its range instead of Gradio's bare "Value 300 is greater than maximum value 255"."""
    from PIL.PngImagePlugin import PngInfo

    from webui.controlnet.units import ControlNetUnit
    from webui.outputs.infotext import format_infotext

    unit_text = ControlNetUnit(module="canny", model="control_tiny", threshold_a=300).infotext("control_tiny", 512)
    params = {"Steps": 2, "Sampler": "Euler a", "CFG scale": 7, "Seed": 14, "Size": "64x64", "ControlNet 0": unit_text}
    info = PngInfo()
    info.add_text("parameters", format_infotext("a pasted unit", "", params))
    pasted = tmp_path / "pasted.png"
    Image.new("RGB", (64, 64)).save(pasted, pnginfo=info)
    browser._open_tab(ui, "PNG Info")
    ui.locator("#pnginfo_image input[type=file]").set_input_files(str(pasted))
    expect(ui.locator("#pnginfo_text textarea")).to_have_value(re.compile("Threshold A: 300"))
    ui.locator("#pnginfo_send_to_txt2img").click()
    unit = _unit(ui)
    expect(ui.locator(f"#{unit}_enabled input")).to_be_checked()  # the accordion opened on the filled unit
    expect(ui.locator(f"#{unit}_model input")).to_have_value(MODEL)
    ui.locator(f"#{unit}_image input[type=file]").set_input_files(str(_square(tmp_path / "square.png")))
    expect(ui.locator(f"#{unit}_image img").first).to_be_visible()
    before = server.pngs()
    ui.locator("#txt2img_generate").click()
    _expect_message = "controlnet_units[0].threshold_a"
    browser._expect_error_toast(ui, _expect_message, "must be between 1 and 255", "got 300")
    expect(ui.locator("#txt2img_progress .easel-error")).to_contain_text(_expect_message)
    assert server.pngs() == before


def test_reuse_parameters_from_history_restores_a_units_settings(ui: Page, server: Server, tmp_path: Path) -> None:
    unit = _set_up_unit(ui, _square(tmp_path / "square.png"))
    browser._set_number(ui, f"{unit}_weight", 1.5)
    browser._set_number(ui, f"{unit}_threshold_a", 60)
    ui.locator(f"#{unit}_control_mode").get_by_label("ControlNet is more important").check()
    browser._small_job(ui, seed=15, prompt="a reused unit")
    before = server.pngs()
    ui.locator("#txt2img_generate").click()
    browser._expect_done(ui, server, before, seed=15)

    browser._open(ui, server.url)  # a fresh page: the unit is empty and off
    browser._open_tab(ui, "History")
    search = ui.locator("#history_search textarea, #history_search input").first
    search.fill("a reused unit")
    search.press("Enter")
    expect(ui.locator("#history_status")).to_contain_text("1 image(s)")
    ui.locator("#history_gallery .thumbnail-item, #history_gallery button img").first.click()
    expect(ui.locator("#history_info textarea")).to_have_value(re.compile("ControlNet 0: "))
    ui.locator("#history_reuse").click()
    expect(ui.locator("#txt2img_prompt textarea")).to_have_value("a reused unit")
    expect(ui.locator(f"#{unit}_enabled input")).to_be_checked()
    expect(ui.locator(f"#{unit}_module input")).to_have_value("canny")
    expect(ui.locator(f"#{unit}_model input")).to_have_value(MODEL)
    expect(ui.locator(f"#{unit}_weight input[type=number]")).to_have_value("1.5")
    expect(ui.locator(f"#{unit}_threshold_a input[type=number]")).to_have_value("60")
    expect(ui.locator(f"#{unit}_control_mode").get_by_label("ControlNet is more important")).to_be_checked()
    expect(ui.locator("#txt2img_hires_fix")).not_to_contain_text("(on)")  # the picture had no hires fix
