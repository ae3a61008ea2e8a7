"""The History tab: every saved image, newest first, with search, filters, parameters, reuse and delete.

It reads the service's history index one page at a time, so opening it costs the same with ten images or ten
thousand; files that vanished are dropped by the index before a page is shown, never drawn as broken tiles. The
gallery shows thumbnails (``webui/outputs/thumbnails.py``: 256 px, made once and cached under
``outputs/.thumbnails``), so a page sends under a megabyte however big the images are; the parameters, the file
name and the file link of a selected tile are the full image's.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import gradio as gr

from webui.errors import InvalidRequest
from webui.outputs.history import HistoryEntry, HistoryIndex, HistoryPage
from webui.service.service import GenerationService
from webui.ui.progress import file_link, message_html

PER_PAGE = 36
ALL = "All"
MODES = [ALL, "txt2img", "img2img", "inpaint"]


@dataclass
class HistoryTab:
    info: gr.Textbox  # the selected image's infotext
    reuse: gr.Button
    first_page: Any  # handler that shows the first page for ``filters``, into ``outputs``
    filters: list[Any]
    outputs: list[Any]


def parse_day(text: str, field: str) -> float | None:
    """``YYYY-MM-DD`` (local time) to a timestamp at the start of that day; empty means no bound."""
    text = (text or "").strip()
    if not text:
        return None
    try:
        return datetime.strptime(text, "%Y-%m-%d").timestamp()
    except ValueError:
        raise InvalidRequest(field, f"must be a date as YYYY-MM-DD, got {text!r}") from None


def query(
    service: GenerationService, page: int, search: str, model: str, mode: str, since: str, until: str
) -> HistoryPage:
    """One page of History for the filter widgets' values (``until`` includes its whole day)."""
    start = parse_day(since, "from")
    end = parse_day(until, "to")
    if end is not None:
        end = (datetime.fromtimestamp(end) + timedelta(days=1)).timestamp()
    return service.history.page(
        page,
        PER_PAGE,
        search=search or "",
        model=None if model in (None, "", ALL) else model,
        mode=None if mode in (None, "", ALL) else mode,
        since=start,
        until=end,
    )


def gallery_tiles(
    history: HistoryIndex, entries: list[HistoryEntry]
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """The gallery's (thumbnail, caption) tiles and, index for index, the (full image, infotext) a selection shows.

    Thumbnails missing from the cache are made now (in parallel); an image that cannot be decoded has none and gets
    no tile, like a missing file, rather than a broken one."""
    tiles: list[tuple[str, str]] = []
    kept: list[tuple[str, str]] = []
    for entry, thumb in zip(entries, history.thumbnails.many([e.path for e in entries]), strict=True):
        if thumb is not None:
            tiles.append((str(thumb), caption(entry.prompt)))
            kept.append((str(entry.path), entry.infotext))
    return tiles, kept


def caption(prompt: str, limit: int = 60) -> str:
    prompt = " ".join(prompt.split())
    return prompt if len(prompt) <= limit else prompt[: limit - 1] + "…"


# What ``show_page`` and ``remove_image`` return, in this order: the outputs of every History event that shows a page.
PAGE_OUTPUTS = ("gallery", "model", "status", "page", "entries", "selected", "info", "file", "link")


def show_page(service: GenerationService, page: int, *filters: Any) -> tuple[Any, ...]:
    """One page for the filters' values, as ``PAGE_OUTPUTS``. A page past the end (after deletions) shows the last
    one; a bad date leaves the gallery as it was and says what is wrong."""
    try:
        found = query(service, page, *filters)
    except InvalidRequest as exc:
        return (gr.update(), gr.update(), message_html(str(exc), "error"), page, gr.update(), -1, gr.update(), gr.update(), gr.update())  # fmt: skip
    if found.entries == [] and page > 0 and found.total:
        found = query(service, found.pages - 1, *filters)  # past the end after deletions: show the last page
    tiles, kept = gallery_tiles(service.history, found.entries)
    text = f"{found.total} image(s) — page {found.page + 1} of {found.pages}" if found.total else "No images yet."
    models = [ALL, *service.history.models()]
    return tiles, gr.update(choices=models), message_html(text, "info"), found.page, kept, -1, "", "", ""


def remove_image(
    service: GenerationService, kept: list[tuple[str, str]], index: int, page: int, *filters: Any
) -> tuple[Any, ...]:
    """🗑️: delete the selected image's file and entry, then show the page again; a failure is said in words."""
    problem = "Select an image first." if not 0 <= index < len(kept) else None
    if problem is None:
        try:
            service.history.delete(kept[index][0])
        except OSError as exc:
            problem = f"Could not delete {kept[index][0]}: {exc.strerror or exc}"
    shown = list(show_page(service, page, *filters))
    if problem:
        shown[PAGE_OUTPUTS.index("status")] = message_html(problem, "error")
    return tuple(shown)


def build_history_tab(service: GenerationService) -> HistoryTab:
    with gr.Row():
        search = gr.Textbox(
            label="Search prompts", placeholder="words in the prompt", scale=4, elem_id="history_search"
        )
        model = gr.Dropdown([ALL], value=ALL, label="Model", scale=2, elem_id="history_model")
        mode = gr.Dropdown(MODES, value=ALL, label="Mode", scale=1, elem_id="history_mode")
        since = gr.Textbox(label="From (YYYY-MM-DD)", scale=1, elem_id="history_from")
        until = gr.Textbox(label="To (YYYY-MM-DD)", scale=1, elem_id="history_to")
    with gr.Row():
        refresh = gr.Button("🔄 Refresh", size="sm", elem_id="history_refresh", scale=0, min_width=120)
        previous = gr.Button("◀ Newer", size="sm", elem_id="history_previous", scale=0, min_width=120)
        status = gr.HTML("", elem_id="history_status")
        following = gr.Button("Older ▶", size="sm", elem_id="history_next", scale=0, min_width=120)
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            # No download/fullscreen buttons: they would act on the thumbnails; the file link gives the full image.
            # Six columns even for a short page, so a 256 px thumbnail is never stretched across the whole gallery.
            gallery = gr.Gallery(
                label="History", columns=6, height=640, elem_id="history_gallery", object_fit="contain",
                allow_preview=False, buttons=[], fit_columns=False,
            )  # fmt: skip
        with gr.Column(scale=2):
            info = gr.Textbox(label="Parameters", lines=8, interactive=False, elem_id="history_info")
            path_text = gr.Textbox(label="File", interactive=False, elem_id="history_file")
            link = gr.HTML("", elem_id="history_file_link")
            with gr.Row():
                reuse = gr.Button("♻️ Reuse parameters", elem_id="history_reuse", size="sm")
                delete = gr.Button("🗑️ Delete", elem_id="history_delete", variant="stop", size="sm")

    page_state = gr.State(0)
    entries_state = gr.State([])  # [(full image path, infotext)] of the tiles shown
    selected = gr.State(-1)
    filters = [search, model, mode, since, until]

    def show(page: int, *values: Any) -> tuple[Any, ...]:
        return show_page(service, page, *values)

    shown = {
        "gallery": gallery, "model": model, "status": status, "page": page_state, "entries": entries_state,
        "selected": selected, "info": info, "file": path_text, "link": link,
    }  # fmt: skip
    outputs = [shown[name] for name in PAGE_OUTPUTS]

    def first_page(*values: Any) -> tuple[Any, ...]:
        return show(0, *values)

    def resync(*values: Any) -> tuple[Any, ...]:
        service.history.sync()
        return show(0, *values)

    refresh.click(resync, inputs=filters, outputs=outputs)
    for box in (search, since, until):
        box.submit(first_page, inputs=filters, outputs=outputs)
    for box in (model, mode):
        box.input(first_page, inputs=filters, outputs=outputs)
    previous.click(lambda p, *v: show(max(0, p - 1), *v), inputs=[page_state, *filters], outputs=outputs)
    following.click(lambda p, *v: show(p + 1, *v), inputs=[page_state, *filters], outputs=outputs)

    def on_select(kept: list[tuple[str, str]], evt: gr.SelectData) -> tuple[Any, ...]:
        index = evt.index if isinstance(evt.index, int) and 0 <= evt.index < len(kept) else -1
        if index < 0:
            return "", "", "", -1
        return kept[index][1], kept[index][0], file_link(kept[index][0]), index

    gallery.select(on_select, inputs=[entries_state], outputs=[info, path_text, link, selected])

    def remove(kept: list[tuple[str, str]], index: int, page: int, *values: Any) -> tuple[Any, ...]:
        return remove_image(service, kept, index, page, *values)

    delete.click(remove, inputs=[entries_state, selected, page_state, *filters], outputs=outputs)
    return HistoryTab(info=info, reuse=reuse, first_page=first_page, filters=filters, outputs=outputs)
