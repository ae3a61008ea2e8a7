"""The Lora panel of the generation tabs in a real browser: search, cards that toggle ``<lora:NAME:1>`` in the prompt,
the folder rescan, and a generation that uses the LoRA (its hash lands in the infotext).

Same set-up as tests/test_ui_browser.py (its helpers are imported: ``python app.py`` with the tiny SD1 checkpoint,
Debian's Chromium); this module gets its own server whose models folder also has LoRAs made for the tiny model, one
of them with an A1111-style ``NAME.preview.png`` beside it.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image, ImageDraw
from playwright.sync_api import Page, expect

import tests.test_ui_browser as browser
from tests.fixtures.tiny_models import make_lora

# The shared fixtures, bound to names here so pytest finds them in this module; ``server`` is this module's own.
chromium = browser.chromium
ui = browser.ui
Server = browser.Server

LORAS = ("detail", "styles/other style", "styles/watercolor wash", "zz-glow")
HASHES = re.compile(r'Lora hashes: "detail: [0-9a-f]{12}"')


def _preview(path: Path) -> Path:
    """A portrait picture like the previews model sites ship (a red circle on blue)."""
    image = Image.new("RGB", (512, 768), (40, 70, 170))
    ImageDraw.Draw(image).ellipse((96, 224, 416, 544), fill=(220, 40, 40))
    image.save(path)
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_sd1_ckpt: Path) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("ui-browser-networks")
    (root / "models" / "Stable-diffusion").mkdir(parents=True)
    shutil.copy(tiny_sd1_ckpt, root / "models" / "Stable-diffusion" / "tiny-sd1.safetensors")
    folder = root / "models" / "Lora"
    for seed, name in enumerate(LORAS, start=1):
        make_lora(folder / f"{name}.safetensors", seed=seed)
    _preview(folder / "detail.preview.png")
    with browser._serve(root, "--no-demo-model") as running:
        yield running


def _cards(page: Page, tab: str = "txt2img"):
    return page.locator(f"#{tab}_lora_cards [data-lora]")


def _open_panel(page: Page, tab: str = "txt2img") -> None:
    page.locator(f"#{tab}_lora_panel").get_by_text("Lora", exact=True).first.click()
    expect(page.locator(f"#{tab}_lora_cards .easel-lora-status")).to_be_visible()


def _search(page: Page, words: str, tab: str = "txt2img") -> None:
    box = page.locator(f"#{tab}_lora_search textarea, #{tab}_lora_search input").first
    box.fill(words)
    box.press("Enter")


def test_the_lora_panel_searches_and_a_card_adds_and_removes_its_tag(ui: Page, server: Server) -> None:
    cards = _cards(ui)
    expect(ui.locator("#txt2img_lora_search")).not_to_be_visible()  # closed by default
    _open_panel(ui)
    expect(cards).to_have_count(len(LORAS))
    assert [c.get_attribute("data-lora") for c in cards.all()] == list(LORAS)
    expect(ui.locator("#txt2img_lora_cards .easel-lora-status")).to_contain_text("4 LoRA(s)")

    # The preview is drawn as a small picture inside the page; the others get the placeholder with their name.
    picture = cards.first.locator("img")
    expect(picture).to_have_js_property("complete", True)
    assert picture.evaluate("img => [img.naturalWidth, img.naturalHeight]") == [192, 240]
    assert (picture.get_attribute("src") or "").startswith("data:image/jpeg;base64,")
    expect(cards.nth(1).locator(".easel-lora-placeholder")).to_have_text("other style")
    expect(cards.nth(1)).to_contain_text("styles/other style")
    # Cards sit side by side in a grid, not one per line.
    first, second = (cards.nth(i).bounding_box() for i in (0, 1))
    assert first and second and abs(first["y"] - second["y"]) < 1 and second["x"] > first["x"] + first["width"]
    ui.locator("#txt2img_lora_panel").scroll_into_view_if_needed()
    browser._shot(ui, "lora-panel")

    _search(ui, "OTHER")
    expect(cards).to_have_count(1)
    expect(ui.locator("#txt2img_lora_cards .easel-lora-status")).to_contain_text("1 of 4 LoRA(s) match")
    prompt = ui.locator("#txt2img_prompt textarea")
    prompt.fill("a red circle")
    cards.first.click()
    expect(prompt).to_have_value("a red circle <lora:styles/other style:1>")
    cards.first.click()  # A1111 toggles: the second click takes it out again
    expect(prompt).to_have_value("a red circle")

    # A weight edited by hand still counts as "in the prompt"; other tabs' prompts are left alone.
    prompt.fill("a red circle <lora:styles/other style:0.4>, on blue")
    cards.first.click()
    expect(prompt).to_have_value("a red circle, on blue")
    _search(ui, "zebra")
    expect(cards).to_have_count(0)
    expect(ui.locator("#txt2img_lora_cards")).to_contain_text("No LoRA matches the search.")

    browser._open_tab(ui, "img2img")
    _open_panel(ui, "img2img")
    expect(_cards(ui, "img2img")).to_have_count(len(LORAS))
    _cards(ui, "img2img").filter(has_text="watercolor wash").click()
    expect(ui.locator("#img2img_prompt textarea")).to_have_value("<lora:styles/watercolor wash:1>")
    browser._open_tab(ui, "txt2img")
    expect(prompt).to_have_value("a red circle, on blue")


def test_a_lora_added_to_the_folder_shows_after_the_panels_refresh(ui: Page, server: Server) -> None:
    folder = server.outputs.parent / "models" / "Lora"
    _open_panel(ui)
    _search(ui, "late")
    expect(_cards(ui)).to_have_count(0)
    make_lora(folder / "late arrival.safetensors", seed=9)
    _preview(folder / "late arrival.png")  # A1111 also takes NAME.png beside the file
    try:
        ui.locator("#txt2img_lora_refresh").click()
        expect(_cards(ui)).to_have_count(1)
        expect(_cards(ui).first).to_have_attribute("data-lora", "late arrival")
        expect(_cards(ui).first.locator("img")).to_be_visible()
    finally:
        (folder / "late arrival.safetensors").unlink()
        (folder / "late arrival.png").unlink()
    ui.locator("#txt2img_lora_refresh").click()
    expect(_cards(ui)).to_have_count(0)


def test_generating_with_a_lora_from_its_card_records_its_hash(ui: Page, server: Server) -> None:
    browser._small_job(ui, seed=31, prompt="a red circle")
    _open_panel(ui)
    _search(ui, "detail")
    expect(_cards(ui)).to_have_count(1)
    _cards(ui).first.click()
    prompt = ui.locator("#txt2img_prompt textarea")
    expect(prompt).to_have_value("a red circle <lora:detail:1>")
    before = server.pngs()
    ui.locator("#txt2img_generate").click()
    browser._expect_done(ui, server, before, seed=31)
    info = ui.locator("#txt2img_info textarea")
    expect(info).to_have_value(re.compile(r"^a red circle <lora:detail:1>\n"))
    expect(info).to_have_value(HASHES)
