"""The "Lora" panel of the generation tabs: A1111's extra-networks cards for the files in ``models/Lora``.

A collapsible panel under the prompts with a search box, a 🔄 that rescans the folder and one card per LoRA: its
preview picture (A1111's convention: ``NAME.preview.png``/``.jpg``/… or ``NAME.png``/… beside the file) or a
neutral placeholder, and its name. Clicking a card adds `` <lora:NAME:1>`` to the tab's prompt (1 is A1111's
"extra networks default multiplier"); clicking it again while the prompt has a tag for that LoRA removes it, as
A1111 toggles.

How it stays cheap with hundreds of LoRAs and safe:

- The cards are one ``gr.HTML`` rendered on the server. Previews travel inside it as small JPEG data URIs (192x240,
  about 5-10 KB), made once per file version and kept in memory, because Gradio serves files only from the outputs
  folder and the models folder must stay private. At most ``MAX_CARDS`` cards are drawn at once; the rest are
  counted ("N more — refine the search").
- A click sends only the card's name (``trigger('click', {name})`` from the panel's own script); the server uses it
  only if it is one of the listed LoRAs' names and never turns anything the browser sends into a path.
- The LoRA list comes from the service (``service.engine.weights.loras``); nothing here imports torch.

The pure functions (``lora_name``, ``filter_names``, ``toggle_lora`` and friends, ``find_preview``,
``cards_html``) are what the tests exercise without a browser.
"""

from __future__ import annotations

import base64
import html
import io
import logging
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
from PIL import Image, ImageOps

log = logging.getLogger(__name__)

MAX_CARDS = 100  # cards drawn at once; a search narrows the rest down
DEFAULT_MULTIPLIER = 1  # A1111's "extra networks default multiplier"
THUMB_SIZE = (192, 240)  # the card's picture (144x180 CSS px) at 4/3 density, cropped to fill it
JPEG_QUALITY = 75
PREVIEW_SUFFIXES = (".preview.png", ".preview.jpg", ".preview.jpeg", ".preview.webp", ".png", ".jpg", ".jpeg", ".webp")
_CACHE_SIZE = 2048  # thumbnails kept in memory (~10 KB each)
_WORKERS = max(1, min(4, os.cpu_count() or 1))
_MAX_PREVIEW_PIXELS = 64_000_000  # a preview bigger than this is not decoded (a "decompression bomb")

# Listens on the panel's root element once (the guard survives re-renders): a click on a card sends its name.
CARDS_JS = """
if (!element.dataset.loraBound) {
  element.dataset.loraBound = '1';
  element.addEventListener('click', (event) => {
    const card = event.target.closest('[data-lora]');
    if (card && element.contains(card)) trigger('click', {name: card.dataset.lora});
  });
}
"""

CARDS_CSS = """
.easel-lora-status { font-size: .85em; color: var(--body-text-color-subdued); margin: .2em 0 .5em; }
.easel-lora-grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(144px, 1fr)); gap: 10px; }
.easel-lora-card { display: flex; flex-direction: column; align-items: stretch; padding: 0; margin: 0;
  border: 1px solid var(--border-color-primary); border-radius: 8px; overflow: hidden; cursor: pointer;
  background: var(--block-background-fill); color: var(--body-text-color); font: inherit; text-align: left; }
.easel-lora-card:hover, .easel-lora-card:focus-visible { border-color: var(--color-accent);
  box-shadow: 0 0 0 2px var(--color-accent-soft); outline: none; }
.easel-lora-picture { display: block; width: 100%; aspect-ratio: 4 / 5; object-fit: cover;
  background: var(--background-fill-secondary); }
.easel-lora-placeholder { display: flex; align-items: center; justify-content: center; padding: .6em;
  box-sizing: border-box; text-align: center; font-size: .95em; font-weight: 600; color: var(--body-text-color-subdued);
  overflow-wrap: anywhere; background: repeating-linear-gradient(135deg, var(--background-fill-secondary) 0 12px,
  var(--block-background-fill) 12px 24px); }
.easel-lora-name { display: -webkit-box; -webkit-line-clamp: 2; -webkit-box-orient: vertical; overflow: hidden;
  padding: .35em .5em; font-size: .85em; line-height: 1.3; overflow-wrap: anywhere; min-height: 2.6em; }
.easel-lora-folder { color: var(--body-text-color-subdued); }
.easel-lora-more { margin-top: .6em; font-size: .85em; color: var(--body-text-color-subdued); }
"""


# -- names and prompt text ------------------------------------------------------------------------------------------
def lora_name(listed_name: str) -> str:
    """The name a prompt uses for a listed file: its path under ``models/Lora`` without the extension
    (``styles/other style.safetensors`` → ``styles/other style``), as ``LoraLibrary.find`` matches it."""
    return listed_name.rsplit(".", 1)[0] if "." in listed_name.rsplit("/", 1)[-1] else listed_name


def lora_tag(name: str, multiplier: float = DEFAULT_MULTIPLIER) -> str:
    return f"<lora:{name}:{multiplier:g}>"


def filter_names(names: Iterable[str], query: str) -> list[str]:
    """The names that contain every word of ``query``, ignoring case, in their listed order (empty: all)."""
    words = (query or "").casefold().split()
    return [name for name in names if all(word in name.casefold() for word in words)]


def _tag_pattern(name: str) -> re.Pattern[str]:
    """``<lora:NAME>`` or ``<lora:NAME:any weights>`` for exactly this name (not one that merely starts with it)."""
    return re.compile(r"<lora:" + re.escape(name) + r"(?::[^<>]*)?>")


def has_lora(prompt: str, name: str) -> bool:
    return _tag_pattern(name).search(prompt or "") is not None


def add_lora(prompt: str, name: str, multiplier: float = DEFAULT_MULTIPLIER) -> str:
    """The prompt with the tag appended after a space (none when the prompt is empty or already ends in one)."""
    prompt = prompt or ""
    separator = "" if not prompt or prompt[-1].isspace() else " "
    return prompt + separator + lora_tag(name, multiplier)


def remove_lora(prompt: str, name: str) -> str:
    """The prompt without any tag for this LoRA (whatever its weight); the spaces around it become one, or none
    at the start or end of the text or a line and before a comma, so no double space is left where it was."""
    text = prompt or ""
    for match in reversed(list(_tag_pattern(name).finditer(text))):
        before, after = text[: match.start()], text[match.end() :]
        kept_before, kept_after = before.rstrip(" "), after.lstrip(" ")
        spaced = kept_before != before or kept_after != after
        edge = not kept_before or kept_before.endswith("\n") or not kept_after or kept_after[0] in ",\n"
        text = kept_before + (" " if spaced and not edge else "") + kept_after
    return text


def toggle_lora(prompt: str, name: str, multiplier: float = DEFAULT_MULTIPLIER) -> str:
    """What a click on the card does: add the tag, or remove it when the prompt already has one for this LoRA."""
    if has_lora(prompt, name):
        return remove_lora(prompt, name)
    return add_lora(prompt, name, multiplier)


# -- previews -------------------------------------------------------------------------------------------------------
def find_preview(model_file: Path) -> Path | None:
    """The preview picture beside a LoRA file (A1111: ``NAME.preview.png``, ``NAME.png``, ...), if there is one."""
    base = model_file.with_suffix("")
    for suffix in PREVIEW_SUFFIXES:
        candidate = base.with_name(base.name + suffix)
        if candidate.is_file():
            return candidate
    return None


_thumbs: OrderedDict[tuple[str, int, int], str | None] = OrderedDict()
_thumbs_lock = threading.Lock()


def _thumbnail_uri(path: Path) -> str | None:
    """A small JPEG of the picture as a data URI, cached per file version; None if it cannot be read."""
    try:
        st = path.stat()
    except OSError:
        return None
    key = (str(path), st.st_mtime_ns, st.st_size)
    with _thumbs_lock:
        if key in _thumbs:
            _thumbs.move_to_end(key)
            return _thumbs[key]
    uri: str | None = None
    try:
        with Image.open(path) as image:
            if image.width * image.height > _MAX_PREVIEW_PIXELS:
                raise ValueError(f"{image.width}x{image.height} is too big for a preview")
            image.draft("RGB", (THUMB_SIZE[0] * 2, THUMB_SIZE[1] * 2))  # JPEG: decode at a reduced scale
            picture = ImageOps.exif_transpose(image)
            if picture.mode in ("RGBA", "LA", "P", "PA"):
                picture = picture.convert("RGBA")
                flat = Image.new("RGB", picture.size, (128, 128, 128))
                flat.paste(picture, mask=picture.getchannel("A"))
                picture = flat
            picture = ImageOps.fit(picture.convert("RGB"), THUMB_SIZE, Image.Resampling.LANCZOS)
            buffer = io.BytesIO()
            picture.save(buffer, "JPEG", quality=JPEG_QUALITY, optimize=True)
        uri = "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        log.info("LoRA preview %s not shown: %s", path, exc)
    with _thumbs_lock:
        _thumbs[key] = uri
        while len(_thumbs) > _CACHE_SIZE:
            _thumbs.popitem(last=False)
    return uri


def thumbnails(previews: Sequence[Path | None]) -> list[str | None]:
    """Data URIs for the pictures, index for index (None where there is none); new ones are made in parallel
    (decoding and resampling release the GIL)."""
    if sum(p is not None for p in previews) <= 1:
        return [_thumbnail_uri(p) if p is not None else None for p in previews]
    with ThreadPoolExecutor(_WORKERS) as pool:
        return list(pool.map(lambda p: _thumbnail_uri(p) if p is not None else None, previews))


# -- the cards ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Card:
    name: str  # the prompt name, e.g. ``styles/other style``
    picture: str | None  # data URI of the thumbnail, or None for the placeholder


def _card_html(card: Card) -> str:
    folder, _, base = card.name.rpartition("/")
    name = html.escape(card.name, quote=True)
    if card.picture:
        picture = f'<img class="easel-lora-picture" src="{card.picture}" alt="" loading="lazy">'
    else:
        picture = f'<span class="easel-lora-picture easel-lora-placeholder">{html.escape(base)}</span>'
    folder_html = f'<span class="easel-lora-folder">{html.escape(folder)}/</span>' if folder else ""
    return (
        f'<button type="button" class="easel-lora-card" data-lora="{name}" title="{name}: add or remove '
        f'{html.escape(lora_tag(card.name))}">{picture}<span class="easel-lora-name">{folder_html}'
        f"{html.escape(base)}</span></button>"
    )


def cards_html(cards: Sequence[Card], matched: int, total: int, folder: str = "models/Lora") -> str:
    """The panel's body: a status line, the cards in a grid, and how many matches were left out."""
    if total == 0:
        status = f"No LoRAs found. Put .safetensors files into {html.escape(folder)} and press 🔄."
    elif matched == total:
        status = f"{total} LoRA(s). Click a card to add it to the prompt, click again to remove it."
    else:
        status = f"{matched} of {total} LoRA(s) match. Click a card to add it to the prompt, click again to remove it."
    parts = [f'<div class="easel-lora-status">{status}</div>']
    if cards:
        parts.append('<div class="easel-lora-grid">' + "".join(_card_html(c) for c in cards) + "</div>")
    elif total:
        parts.append('<div class="easel-lora-more">No LoRA matches the search.</div>')
    if matched > len(cards):
        parts.append(f'<div class="easel-lora-more">{matched - len(cards)} more — refine the search.</div>')
    return "".join(parts)


def listed(loras: Any) -> list[tuple[str, Path]]:
    """(prompt name, file) of every LoRA the library lists, in its order."""
    return [(lora_name(info.name), Path(info.path)) for info in loras.registry.list()]


def render(loras: Any, query: str, limit: int = MAX_CARDS) -> str:
    """The cards matching ``query`` for a ``LoraLibrary`` (``service.engine.weights.loras``)."""
    entries = listed(loras)
    files = dict(entries)
    matched = filter_names([name for name, _ in entries], query)
    shown = matched[:limit]
    pictures = thumbnails([find_preview(files[name]) for name in shown])
    cards = [Card(name, picture) for name, picture in zip(shown, pictures, strict=True)]
    return cards_html(cards, len(matched), len(entries), folder=str(loras.registry.root))


def clicked(loras: Any, prompt: str, name: Any) -> str | None:
    """The prompt after a click on the card named ``name``; None when the name is not a listed LoRA (a stale page
    after the file went away, or anything else a client might send)."""
    if not isinstance(name, str) or name not in {n for n, _ in listed(loras)}:
        return None
    return toggle_lora(prompt or "", name)


# -- the panel ------------------------------------------------------------------------------------------------------
@dataclass
class LoraPanel:
    accordion: gr.Accordion
    search: gr.Textbox
    refresh: gr.Button
    cards: gr.HTML


def build_lora_panel(service: Any, prompt: gr.Textbox, elem_prefix: str) -> LoraPanel:
    """The panel inside the current layout, wired to ``prompt``; the cards are drawn when it is opened."""
    with gr.Accordion("Lora", open=False, elem_id=f"{elem_prefix}_lora_panel") as accordion:
        with gr.Row(equal_height=True):
            search = gr.Textbox(
                label="Search LoRAs", placeholder="part of a name", show_label=False, scale=8,
                elem_id=f"{elem_prefix}_lora_search", container=False,
            )  # fmt: skip
            refresh = gr.Button("🔄", scale=0, min_width=48, size="sm", elem_id=f"{elem_prefix}_lora_refresh")
        cards = gr.HTML(
            "", css_template=CARDS_CSS, js_on_load=CARDS_JS, max_height=560, elem_id=f"{elem_prefix}_lora_cards"
        )

    def loras() -> Any:
        return service.engine.weights.loras

    def show(query: str) -> str:
        return render(loras(), query)

    def rescan(query: str) -> str:
        loras().registry.refresh()
        return render(loras(), query)

    def on_card(text: str, evt: gr.EventData) -> Any:
        data = evt._data if isinstance(evt._data, dict) else {}
        changed = clicked(loras(), text, data.get("name"))
        if changed is None:
            gr.Warning("That LoRA is no longer listed; press 🔄 to rescan the folder.")
            return gr.update()
        return changed

    accordion.expand(show, inputs=[search], outputs=[cards], show_progress="hidden")
    search.input(show, inputs=[search], outputs=[cards], trigger_mode="always_last", show_progress="hidden")
    search.submit(show, inputs=[search], outputs=[cards], show_progress="hidden")
    refresh.click(rescan, inputs=[search], outputs=[cards], show_progress="hidden")
    cards.click(on_card, inputs=[prompt], outputs=[prompt], show_progress="hidden", concurrency_limit=None)
    return LoraPanel(accordion, search, refresh, cards)
