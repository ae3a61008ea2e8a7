"""History's thumbnails and Delete, and the top bar's model-switch status, in a real browser.

Same set-up as tests/test_ui_browser.py (its fixtures and helpers are imported: ``python app.py`` with the tiny SD1
checkpoint, Debian's Chromium); this module gets its own server. Tests put their own images into the outputs folder
under prompts no other test uses and find them by searching, so images other tests made never get in the way.
"""

from __future__ import annotations

import re
import shutil
import sqlite3
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image
from playwright.sync_api import Page, expect

import tests.test_ui_browser as browser
from webui.outputs.history import INDEX_NAME
from webui.outputs.infotext import format_infotext
from webui.outputs.saving import save_image
from webui.outputs.thumbnails import THUMBNAIL_DIR, Thumbnails

# The shared fixtures, bound to names here so pytest finds them in this module (which then gets its own server).
chromium = browser.chromium
server = browser.server
ui = browser.ui
Server = browser.Server

GALLERY_IMAGES = "#history_gallery .thumbnail-item img, #history_gallery button img"


def _import_image(server: Server, prompt: str, seed: int, size: tuple[int, int], colour: tuple[int, int, int]) -> Path:
    """An image with its infotext written straight into the outputs folder, as if copied in from another install."""
    text = format_infotext(prompt, "blurry", {"Steps": 20, "Sampler": "Euler a", "Seed": seed, "Size": "x".join(map(str, size))})  # fmt: skip
    noise = np.random.default_rng(seed).integers(-40, 41, (size[1], size[0], 3))  # compresses like a real picture
    pixels = np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)
    return save_image(Image.fromarray(pixels), server.outputs, "txt2img", seed, text, folder_name="imported")


def _history_search(page: Page, words: str) -> None:
    """Open History, re-read the folder (🔄 Refresh) and search the prompts for ``words``."""
    browser._open_tab(page, "History")
    expect(page.locator("#history_status")).to_contain_text(re.compile(r"image\(s\)|No images yet"))
    box = page.locator("#history_search textarea, #history_search input").first
    box.fill(words)
    page.locator("#history_refresh").click()  # sync (finds the imported files), then the first page for the filters


def _fetch(server: Server, href: str) -> bytes:
    with urllib.request.urlopen(server.url.rstrip("/") + href, timeout=10) as response:
        return response.read()


def _rows(server: Server, path: Path) -> int:
    with sqlite3.connect(server.outputs / INDEX_NAME) as db:
        relative = path.resolve().relative_to(server.outputs.resolve()).as_posix()
        return db.execute("SELECT COUNT(*) FROM images WHERE path = ?", (relative,)).fetchone()[0]


def test_history_shows_thumbnails_and_a_tile_gives_the_full_images_parameters_and_file(
    ui: Page, server: Server
) -> None:
    tall = _import_image(server, "thumbcheck a tall teal tower", 400, (384, 640), (20, 160, 160))
    big = _import_image(server, "thumbcheck a wide orange field", 401, (640, 480), (230, 120, 20))
    _history_search(ui, "thumbcheck")
    expect(ui.locator("#history_status")).to_contain_text("2 image(s)")
    tiles = ui.locator(GALLERY_IMAGES)
    expect(tiles).to_have_count(2)
    for tile, source, natural in ((tiles.nth(0), big, [256, 192]), (tiles.nth(1), tall, [154, 256])):
        expect(tile).to_be_visible()
        expect(tile).to_have_js_property("complete", True)
        # The browser was sent the cached thumbnail (256 px on its long side), not the full file.
        thumb = Thumbnails(server.outputs).cached(source)
        assert thumb is not None and thumb.parent.parent.name == THUMBNAIL_DIR
        src = tile.get_attribute("src")
        assert src is not None and src.endswith(thumb.name), src
        assert tile.evaluate("img => [img.naturalWidth, img.naturalHeight]") == natural
        served = _fetch(server, src) if src.startswith("/") else urllib.request.urlopen(src, timeout=10).read()
        assert served == thumb.read_bytes() and len(served) < source.stat().st_size / 5
    browser._shot(ui, "history-thumbnails")

    # Selecting it shows the full image's parameters, path and a link that serves the full image itself.
    tiles.nth(0).click()
    expect(ui.locator("#history_info textarea")).to_have_value(
        re.compile(r"^thumbcheck a wide orange field\nNegative prompt: blurry\n.*Seed: 401,.*Size: 640x480", re.S)
    )
    expect(ui.locator("#history_file textarea, #history_file input").first).to_have_value(str(big))
    link = ui.locator("#history_file_link a")
    expect(link).to_have_text(re.compile(re.escape(big.name)))
    href = link.get_attribute("href")
    assert href is not None and THUMBNAIL_DIR not in href
    assert _fetch(server, href) == big.read_bytes()
    browser._shot(ui, "history-selected")


def test_history_delete_removes_the_file_its_thumbnail_and_its_row(ui: Page, server: Server) -> None:
    older = _import_image(server, "deletecheck zebra kept", 402, (512, 512), (20, 20, 200))
    newer = _import_image(server, "deletecheck zebra doomed", 403, (512, 512), (200, 20, 20))
    _history_search(ui, "deletecheck zebra")
    expect(ui.locator("#history_status")).to_contain_text("2 image(s)")
    tiles = ui.locator(GALLERY_IMAGES)
    expect(tiles).to_have_count(2)
    doomed_thumb = Thumbnails(server.outputs).cached(newer)
    assert doomed_thumb is not None and doomed_thumb.exists()
    assert _rows(server, newer) == 1

    tiles.first.click()  # newest first: the doomed one
    expect(ui.locator("#history_file textarea, #history_file input").first).to_have_value(str(newer))
    ui.locator("#history_delete").click()
    expect(ui.locator("#history_status")).to_contain_text("1 image(s)")
    expect(tiles).to_have_count(1)
    expect(ui.locator("#history_info textarea")).to_have_value("")  # nothing selected any more
    assert not newer.exists() and not doomed_thumb.exists()
    assert _rows(server, newer) == 0
    assert older.exists() and _rows(server, older) == 1
    tiles.first.click()
    expect(ui.locator("#history_info textarea")).to_have_value(re.compile(r"^deletecheck zebra kept\n"))

    # Delete with nothing selected says so and deletes nothing.
    _history_search(ui, "deletecheck zebra")
    ui.locator("#history_delete").click()
    expect(ui.locator("#history_status .easel-error")).to_contain_text("Select an image first.")
    assert older.exists() and _rows(server, older) == 1


def test_choosing_a_checkpoint_loads_it_and_the_top_bar_says_so(ui: Page, server: Server, tiny_sd1_ckpt: Path) -> None:
    folder = server.outputs.parent / "models" / "Stable-diffusion"
    other = folder / "zz-other.safetensors"  # sorts after tiny-sd1, which stays the page's default for other tests
    broken = folder / "zz-broken.safetensors"
    shutil.copy(tiny_sd1_ckpt, other)
    broken.write_bytes(b"this is not a safetensors file" * 10)
    status = ui.locator("#checkpoint_status")
    checkpoint = ui.get_by_label("Stable Diffusion checkpoint")
    try:
        ui.locator("#refresh_checkpoints").click()
        checkpoint.click()
        ui.get_by_role("option", name=re.compile(r"zz-other\.safetensors")).click()
        expect(status).to_contain_text(re.compile(r"Loaded zz-other\.safetensors \[[0-9a-f]{10}\] in \d+\.\d s"))
        expect(checkpoint).to_have_value(re.compile(r"^zz-other\.safetensors \[[0-9a-f]{10}\]$"))
        browser._shot(ui, "checkpoint-loaded")

        # A file that cannot be loaded: the status says why, in red, and the loaded model stays.
        checkpoint.click()
        ui.get_by_role("option", name=re.compile(r"zz-broken\.safetensors")).click()
        expect(status.locator(".easel-error")).to_contain_text("zz-broken")
        checkpoint.click()
        ui.get_by_role("option", name=re.compile(r"^(✓\s*)?tiny-sd1\.safetensors")).click()
        expect(status).to_contain_text(re.compile(r"Loaded tiny-sd1\.safetensors \[[0-9a-f]{10}\] in \d+\.\d s"))
    finally:
        other.unlink(missing_ok=True)
        broken.unlink(missing_ok=True)
        browser._open(ui, server.url)  # the list without them, for whatever runs next
        ui.locator("#refresh_checkpoints").click()
