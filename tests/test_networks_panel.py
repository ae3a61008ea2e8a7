"""The Lora panel's handlers without a browser: names, search, the tag toggle in the prompt, previews and cards.

The LoRA list is a real ``ModelRegistry`` over a temporary folder (listing only stats files, so the "LoRAs" here
are a few bytes each); the browser test (tests/test_ui_browser_networks.py) uses real LoRA files and generates.
"""

from __future__ import annotations

import base64
import io
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image

from webui.ui import networks_panel as panel
from webui.weights.hashing import HashCache
from webui.weights.registry import ModelRegistry

ROOT = Path(__file__).resolve().parent.parent


def _library(root: Path, *names: str) -> SimpleNamespace:
    """What the panel uses of ``LoraLibrary``: ``.registry`` listing ``root`` (torch-free, unlike the library)."""
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"not read by the panel")
    registry = ModelRegistry(
        root, HashCache(root.parent / "hashes.json"), (".safetensors", ".pt", ".ckpt"), label="lora",
        diffusers_folders=False,
    )  # fmt: skip
    registry.refresh()
    return SimpleNamespace(registry=registry)


def _cards(html_text: str) -> list[str]:
    return re.findall(r'data-lora="([^"]*)"', html_text)


@pytest.mark.parametrize(
    ("listed", "name"),
    [
        ("detail.safetensors", "detail"),
        ("styles/other style.safetensors", "styles/other style"),
        ("old.pt", "old"),
        ("v1.5 detail.safetensors", "v1.5 detail"),
        ("styles.v2/detail.ckpt", "styles.v2/detail"),
    ],
)
def test_the_prompt_name_is_the_relative_name_without_the_extension(listed: str, name: str) -> None:
    assert panel.lora_name(listed) == name
    assert panel.lora_tag(name) == f"<lora:{name}:1>"


def test_search_matches_every_word_ignoring_case_in_listed_order() -> None:
    names = ["detail", "styles/Other Style", "styles/watercolor", "Detail tweaker"]
    assert panel.filter_names(names, "") == names
    assert panel.filter_names(names, "   ") == names
    assert panel.filter_names(names, "DETAIL") == ["detail", "Detail tweaker"]
    assert panel.filter_names(names, "styles") == ["styles/Other Style", "styles/watercolor"]
    assert panel.filter_names(names, "style other") == ["styles/Other Style"]
    assert panel.filter_names(names, "nothing") == []


@pytest.mark.parametrize(
    ("prompt", "after"),
    [
        ("", "<lora:detail:1>"),
        ("a red circle", "a red circle <lora:detail:1>"),
        ("a red circle ", "a red circle <lora:detail:1>"),
        ("a red circle,\n", "a red circle,\n<lora:detail:1>"),
        ("a red circle <lora:detailed:1>", "a red circle <lora:detailed:1> <lora:detail:1>"),  # another LoRA
    ],
)
def test_a_click_adds_the_tag_with_a_leading_space(prompt: str, after: str) -> None:
    assert panel.toggle_lora(prompt, "detail") == after


@pytest.mark.parametrize(
    ("prompt", "after"),
    [
        ("<lora:detail:1>", ""),
        ("a red circle <lora:detail:1>", "a red circle"),
        ("a red circle <lora:detail:0.6> on blue", "a red circle on blue"),  # any weight: A1111 matches the name
        ("a red circle <lora:detail:0.6:0.2>, on blue", "a red circle, on blue"),
        ("<lora:detail:1> a red circle", "a red circle"),
        ("a red circle,<lora:detail:1> on blue", "a red circle, on blue"),
        ("a <lora:detail> b <lora:detail:1>", "a b"),
        ("a <lora:detail:1>  <lora:style:1>", "a <lora:style:1>"),
        ("line one\n<lora:detail:1> line two", "line one\nline two"),
        ("a <lora:detailed:1> <lora:detail:1>", "a <lora:detailed:1>"),  # only the exact name goes
    ],
)
def test_a_click_on_a_lora_in_the_prompt_removes_its_tag_and_tidies_the_spaces(prompt: str, after: str) -> None:
    assert panel.has_lora(prompt, "detail")
    assert panel.toggle_lora(prompt, "detail") == after


def test_toggling_twice_gives_back_the_prompt_and_names_are_matched_literally() -> None:
    for prompt in ("a red circle", "", "a (red:1.2) circle, <lora:other:0.5>"):
        assert panel.toggle_lora(panel.toggle_lora(prompt, "styles/other style"), "styles/other style") == prompt
    assert not panel.has_lora("<lora:detail:1>", "det")
    assert not panel.has_lora("<lora:dXtail:1>", "d.tail")  # regex characters in a name are literal
    assert panel.has_lora("<lora:d.tail+(1):1>", "d.tail+(1)")
    assert not panel.has_lora("<lyco:detail:1>", "detail")  # the card adds <lora:>, so it removes only those


def test_previews_follow_a1111s_naming_and_preview_png_comes_first(tmp_path: Path) -> None:
    model = tmp_path / "detail.safetensors"
    model.write_bytes(b"x")
    assert panel.find_preview(model) is None
    Image.new("RGB", (8, 8)).save(tmp_path / "detail.png")
    assert panel.find_preview(model) == tmp_path / "detail.png"
    Image.new("RGB", (8, 8)).save(tmp_path / "detail.preview.jpg")
    assert panel.find_preview(model) == tmp_path / "detail.preview.jpg"
    Image.new("RGB", (8, 8)).save(tmp_path / "detail.preview.png")
    assert panel.find_preview(model) == tmp_path / "detail.preview.png"
    dotted = tmp_path / "v1.5 style.safetensors"  # the extension is all that is dropped
    dotted.write_bytes(b"x")
    Image.new("RGB", (8, 8)).save(tmp_path / "v1.5 style.preview.png")
    assert panel.find_preview(dotted) == tmp_path / "v1.5 style.preview.png"


def test_a_preview_becomes_a_small_cached_jpeg_and_a_broken_one_a_placeholder(tmp_path: Path) -> None:
    big = tmp_path / "big.preview.png"
    Image.new("RGBA", (1024, 1536), (200, 30, 30, 255)).save(big)
    broken = tmp_path / "broken.preview.png"
    broken.write_bytes(b"not a picture")
    uri, none = panel.thumbnails([big, broken])
    assert none is None
    assert uri is not None and uri.startswith("data:image/jpeg;base64,")
    data = base64.b64decode(uri.split(",", 1)[1])
    assert len(data) < 20_000
    with Image.open(io.BytesIO(data)) as image:
        assert image.size == panel.THUMB_SIZE
        assert image.getpixel((96, 120))[0] > 150
    assert panel.thumbnails([big, None]) == [uri, None]  # from the cache
    assert panel._thumbnail_uri(big) is uri


def test_cards_list_every_lora_with_its_preview_or_a_placeholder(tmp_path: Path) -> None:
    root = tmp_path / "Lora"
    loras = _library(root, "detail.safetensors", "styles/other style.safetensors", "old.pt", "notes.txt")
    Image.new("RGB", (64, 64), (0, 0, 200)).save(root / "detail.preview.png")
    text = panel.render(loras, "")
    assert _cards(text) == ["detail", "old", "styles/other style"]
    assert "3 LoRA(s)" in text and "more" not in text
    detail, old, other = text.split('<button type="button"')[1:]
    assert 'src="data:image/jpeg;base64,' in detail and "easel-lora-placeholder" not in detail
    assert "easel-lora-placeholder" in old and "<img" not in old
    assert '<span class="easel-lora-folder">styles/</span>other style' in other
    assert str(root) not in detail + old + other  # no file path reaches the page

    found = panel.render(loras, "STYLE")
    assert _cards(found) == ["styles/other style"] and "1 of 3 LoRA(s) match" in found
    nothing = panel.render(loras, "zebra")
    assert _cards(nothing) == [] and "No LoRA matches the search." in nothing
    empty = panel.render(_library(tmp_path / "empty"), "")
    assert _cards(empty) == [] and "No LoRAs found" in empty


def test_hundreds_of_loras_draw_the_first_hundred_and_say_how_many_more(tmp_path: Path) -> None:
    loras = _library(tmp_path / "Lora", *(f"lora-{i:03d}.safetensors" for i in range(250)))
    text = panel.render(loras, "")
    assert len(_cards(text)) == panel.MAX_CARDS == 100
    assert _cards(text)[0] == "lora-000" and "150 more — refine the search" in text
    narrowed = panel.render(loras, "lora-1")
    assert len(_cards(narrowed)) == 100 and "100 of 250 LoRA(s) match" in narrowed and "more —" not in narrowed


def test_names_are_escaped_in_the_cards(tmp_path: Path) -> None:
    loras = _library(tmp_path / "Lora", 'a "quoted" <b>&name.safetensors')
    text = panel.render(loras, "")
    assert "<b>" not in text
    assert _cards(text) == ["a &quot;quoted&quot; &lt;b&gt;&amp;name"]


def test_a_click_toggles_only_a_listed_name_and_never_reads_a_path(tmp_path: Path) -> None:
    loras = _library(tmp_path / "Lora", "detail.safetensors", "styles/other style.safetensors")
    assert panel.clicked(loras, "a red circle", "styles/other style") == "a red circle <lora:styles/other style:1>"
    assert panel.clicked(loras, "a <lora:detail:1>", "detail") == "a"
    assert panel.clicked(loras, None, "detail") == "<lora:detail:1>"
    for bad in ("gone", "../../etc/passwd", str(tmp_path / "Lora" / "detail.safetensors"), "detail.safetensors"):
        assert panel.clicked(loras, "a red circle", bad) is None
    for bad in (None, 3, ["detail"], {"name": "detail"}):
        assert panel.clicked(loras, "a red circle", bad) is None


def test_the_panel_module_does_not_import_torch() -> None:
    code = "import sys, webui.ui.networks_panel; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=False).returncode == 0
