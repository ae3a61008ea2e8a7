"""Extensions in the page: the Extensions tab, the tabs extensions add, and their per-job arguments' widgets.

- The **Extensions** tab lists every extension the plugin host found (name, version, plugin API, where it came
  from, status and, for a failed or refused one, why), with an Enabled checkbox each (remembered by the host,
  applied at the next start), the saved settings of each running extension rendered from its ``Setting`` specs
  with a Save button, and "Install" from a local folder or a git URL (``webui/plugins/install.py``), offered only
  when Easel listens on this machine alone or was started with ``--allow-extension-install``.
- An extension's own tabs are built inside a guard: a ``build`` that raises leaves its tab showing the error, naming
  the extension, and the rest of the page is built as usual.
- Each generation tab gets an "Extensions" accordion with one section per running extension that has per-job
  arguments; ``webui.ui.forms`` turns their values into the request's ``extension_args``.

Every check (kinds, ranges, choices) is the plugin host's, so the page shows the same messages as the API.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

import gradio as gr
from gradio.context import Context, get_render_context, set_render_context

from webui.errors import EaselError
from webui.plugin_api import Setting, Tab
from webui.plugins import install as installer
from webui.service.service import GenerationService
from webui.ui import forms
from webui.ui.progress import message_html
from webui.ui.widgets import FieldSlider

log = logging.getLogger(__name__)

DISABLED_TEXT = (
    "Extensions are disabled: Easel was started with `--disable-extensions`. Start it without that flag to load the "
    "extensions in the extensions folder and installed extension packages."
)
NEXT_START = "applies at the next start"
STATUS_WORDS = {"enabled": "running", "disabled": "disabled", "failed": "failed", "refused": "refused"}


def elem_name(text: str) -> str:
    """``text`` as a piece of an ``elem_id`` that CSS selectors take as is (a name's dots would not be)."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", text)


# -- widgets from Setting specs -------------------------------------------------------------------------------


def setting_widget(setting: Setting, value: Any, elem_id: str) -> Any:
    """The widget for one ``Setting``: a checkbox (bool), a slider (a number with both ends), a number box (other
    numbers), a text box (str) or a dropdown (choice). Values go to the plugin host unchanged by the browser's own
    range checks (``FieldSlider``, no bounds on number boxes), so an out-of-range value gets the host's message,
    which names the setting."""
    info = setting.help or None
    label = setting.label or setting.key
    if setting.kind == "bool":
        return gr.Checkbox(value=bool(value), label=label, info=info, elem_id=elem_id)
    if setting.kind in ("int", "float"):
        low, high = setting.minimum, setting.maximum
        if low is not None and high is not None and high > low:
            return FieldSlider(
                low, high, value=value, step=_step(setting), label=label, info=info, elem_id=elem_id
            )  # fmt: skip
        return gr.Number(value=value, label=label, info=info, precision=0 if setting.kind == "int" else None, elem_id=elem_id)  # fmt: skip
    if setting.kind == "choice":
        return gr.Dropdown(list(setting.choices), value=value, label=label, info=info, elem_id=elem_id)
    return gr.Textbox(value="" if value is None else str(value), label=label, info=info, elem_id=elem_id)


def _step(setting: Setting) -> float:
    """1 for whole numbers; for others about a hundredth of the range, rounded down to a power of ten."""
    if setting.kind == "int":
        return 1
    span = float(setting.maximum or 0) - float(setting.minimum or 0)
    step = 1.0
    while step > span / 100 and step > 1e-6:
        step /= 10
    return step


# -- per-job arguments in a generation tab ----------------------------------------------------------------------


def build_extension_arguments(
    specs: dict[str, list[Setting]], elem: str, widgets: dict[str, Any]
) -> gr.Accordion | None:
    """The tab's "Extensions" accordion: one section per extension with per-job arguments (``specs``, from
    ``forms.argument_specs``), their widgets added to ``widgets`` under ``forms.extension_key``. None (and no
    accordion) when no running extension takes arguments."""
    if not specs:
        return None
    with gr.Accordion("Extensions", open=False, elem_id=f"{elem}_extensions") as accordion:
        for name, settings in specs.items():
            part = f"{elem}_ext_{elem_name(name)}"
            with gr.Accordion(name, open=True, elem_id=part):
                for setting in settings:
                    widgets[forms.extension_key(name, setting.key)] = setting_widget(
                        setting, setting.default, f"{part}_{elem_name(setting.key)}"
                    )
    return accordion


# -- the tabs extensions add ----------------------------------------------------------------------------------


ExtensionTab = tuple[str, Callable[[], None]]  # (tab label, builds the tab's widgets inside it)


def build_extension_tabs(service: GenerationService, extra: Sequence[ExtensionTab] = ()) -> None:
    """Every running extension's tabs (``PluginHost.tabs``), then ``extra`` ones, each in its own ``gr.Tab``
    (``elem_id`` ``tab_ext_<name>``, ``_2``... for a second tab). A build that raises leaves its tab showing the error
    in words, recorded on the extension (``Extension.tab_error``) for the Extensions tab and the API."""
    found = service.plugins.tabs() if service.plugins is not None else []
    counts: dict[str, int] = {}
    for ext, tab in found:
        counts[ext.name] = counts.get(ext.name, 0) + 1
        suffix = "" if counts[ext.name] == 1 else f"_{counts[ext.name]}"
        elem = f"tab_ext_{elem_name(ext.name)}{suffix}"
        with gr.Tab(tab.label, id=f"ext_{elem_name(ext.name)}{suffix}", elem_id=elem):
            error = guarded_build(ext.name, tab, elem)
        if error:
            ext.tab_error = error
    for label, build in extra:
        with gr.Tab(label, elem_id=f"tab_ext_{label.lower().replace(' ', '_')}"):
            build()


def guarded_build(name: str, tab: Tab, elem: str) -> str | None:
    """Run ``tab.build`` inside the current tab. If it raises, what it built is hidden, the tab says why in words
    (naming the extension) and the page goes on being built; the error is returned (None when it built)."""
    root, block = Context.root_block, get_render_context()
    body = None
    try:
        with gr.Column(elem_id=f"{elem}_body") as body:
            tab.build()
    except Exception as exc:
        Context.root_block = root  # a Blocks the build opened and left by raising resets these
        set_render_context(block)
        if body is not None:
            body.visible = False
        text = f"The extension '{name}' could not build its tab '{tab.label}': {type(exc).__name__}: {exc}"
        log.exception("extension %s: building its tab %r failed", name, tab.label)
        gr.HTML(message_html(text, "error"), elem_id=f"{elem}_error")
        return text
    return None


# -- the Extensions tab -------------------------------------------------------------------------------------------


@dataclass
class ExtensionsTab:
    widgets: list[Any] = field(default_factory=list)  # what the page's load refreshes
    current_values: Callable[[], tuple[Any, ...]] = lambda: ()


def build_extensions_tab(service: GenerationService) -> ExtensionsTab:
    """The Extensions tab's contents inside the current ``gr.Tab``."""
    plugins = service.plugins
    if plugins is None:
        gr.Markdown(DISABLED_TEXT, elem_id="extensions_disabled")
        return ExtensionsTab()
    result = ExtensionsTab()
    folder = service.settings.extensions_dir
    gr.Markdown(
        "Every extension Easel found, and whether it runs. Enabling or disabling one "
        f"{NEXT_START}; saved settings apply to the next job."
        + (f" Extensions folder: `{folder}`." if folder is not None else ""),
        elem_classes=["easel-info"],
    )
    table = gr.HTML(extensions_table(service), elem_id="extensions_table")
    checkboxes: list[gr.Checkbox] = []
    setting_forms: list[tuple[str, list[Setting], list[Any]]] = []
    for ext in plugins.extensions:
        part = f"extensions_{elem_name(ext.name)}"
        title = f"{ext.name} {ext.version}".strip() + f" ({STATUS_WORDS.get(ext.status, ext.status)})"
        with gr.Accordion(title, open=ext.status != "disabled", elem_id=part):  # a failed one open: why
            if ext.error:
                gr.HTML(message_html(f"{ext.status}: {ext.error}", "error"), elem_id=f"{part}_error")
            with gr.Row(equal_height=True):
                enabled = gr.Checkbox(
                    plugins.is_enabled_at_next_start(ext.name), label=f"Enabled ({NEXT_START})",
                    elem_id=f"{part}_enabled", scale=1,
                )  # fmt: skip
                toggled = gr.HTML("", elem_id=f"{part}_enabled_status")
            checkboxes.append(enabled)
            enabled.input(
                lambda on, name=ext.name: toggle_extension(service, name, on),
                inputs=[enabled],
                outputs=[toggled, table],
                show_progress="hidden",
            )
            if ext.active and ext.settings:
                saved = plugins.settings_of(ext.name)
                inputs = [setting_widget(s, saved[s.key], f"{part}_setting_{elem_name(s.key)}") for s in ext.settings]
                with gr.Row(equal_height=True):
                    save = gr.Button("Save settings", variant="primary", elem_id=f"{part}_save", scale=0, min_width=160)
                    status = gr.HTML("", elem_id=f"{part}_save_status")
                save.click(
                    lambda *values, name=ext.name, specs=list(ext.settings): save_extension_settings(
                        service, name, specs, values
                    ),
                    inputs=inputs,
                    outputs=[status, *inputs],
                    show_progress="hidden",
                )
                setting_forms.append((ext.name, list(ext.settings), inputs))
            elif ext.status == "disabled":
                gr.Markdown(
                    "Not loaded: enable it and restart Easel to use it and change its settings.",
                    elem_classes=["easel-info"],
                )
    if not plugins.extensions:
        gr.Markdown("No extensions found.", elem_id="extensions_none")
    _build_install(service, table)

    def current_values() -> tuple[Any, ...]:
        """What a fresh page shows: the table (with the tabs' build errors), the Enabled boxes and the settings as
        saved now, not as they were when the page was built."""
        values: list[Any] = [extensions_table(service)]
        values += [plugins.is_enabled_at_next_start(ext.name) for ext in plugins.extensions]
        for name, specs, _ in setting_forms:
            saved = plugins.settings_of(name)
            values += [saved[s.key] for s in specs]
        return tuple(values)

    result.widgets = [table, *checkboxes, *(w for _, _, inputs in setting_forms for w in inputs)]
    result.current_values = current_values
    return result


def _build_install(service: GenerationService, table: gr.HTML) -> None:
    refusal = installer.install_refusal(service.settings.host, service.settings.allow_extension_install)
    gr.Markdown("### Install", elem_id="extensions_install_title")
    with gr.Row(equal_height=True):
        source = gr.Textbox(
            label="Install from a local folder path or a git URL",
            placeholder="/path/to/my-extension  or  https://github.com/someone/easel-extension.git",
            interactive=refusal is None, elem_id="extensions_install_source", scale=5,
        )  # fmt: skip
        button = gr.Button("Install", interactive=refusal is None, elem_id="extensions_install", scale=0, min_width=120)
    note = refusal or "A folder is copied, a URL cloned (git clone --depth 1); either loads at the next start."
    status = gr.HTML(message_html(note, "info"), elem_id="extensions_install_status")
    button.click(
        lambda text: install_extension(service, text),
        inputs=[source],
        outputs=[status, table],
        concurrency_limit=1,
    )


def toggle_extension(service: GenerationService, name: str, enabled: bool) -> tuple[str, str]:
    """The Enabled checkbox: remember the choice (it takes effect at the next start) and say so; (message, table)."""
    plugins = service.plugins
    if plugins is None:
        return message_html("Extensions are disabled (--disable-extensions).", "error"), gr.update()
    try:
        plugins.set_enabled(name, bool(enabled))
    except EaselError as exc:
        return message_html(str(exc), "error"), extensions_table(service)
    ext = plugins.get(name)
    runs_now = ext is not None and ext.status != "disabled"
    word = "enabled" if enabled else "disabled"
    if bool(enabled) == runs_now:
        text = f"'{name}' stays {word} at the next start, as it is now."
    else:
        text = f"'{name}' will be {word}: this {NEXT_START}."
    return message_html(text, "info"), extensions_table(service)


def save_extension_settings(
    service: GenerationService, name: str, specs: Sequence[Setting], values: Sequence[Any]
) -> tuple[Any, ...]:
    """Save: (message, then each widget's value as saved). A bad value gets a message naming it (``name.key``),
    nothing is saved, and every widget keeps what was typed, to correct it."""
    keep = tuple(gr.update() for _ in specs)
    plugins = service.plugins
    if plugins is None:
        return (message_html("Extensions are disabled (--disable-extensions).", "error"), *keep)
    try:
        saved = plugins.update_settings(name, forms.settings_values(name, specs, values))
    except EaselError as exc:
        return (message_html(str(exc), "error"), *keep)
    return (message_html(f"Saved the settings of '{name}'; jobs from now on use them.", "info"), *(saved[s.key] for s in specs))  # fmt: skip


def install_extension(service: GenerationService, source: str) -> tuple[str, str]:
    """Install's handler: (message, table). The service checks again that installing is allowed: a disabled button
    does not stop a request made by hand."""
    try:
        message = service.install_extension(source)
    except EaselError as exc:
        return message_html(str(exc), "error"), gr.update()
    except Exception as exc:  # a bug must still end in words on the page
        log.exception("installing %r failed", source)
        return message_html(f"Could not install: {type(exc).__name__}: {exc}", "error"), gr.update()
    return message_html(message, "info"), extensions_table(service)


# -- the table ---------------------------------------------------------------------------------------------------

_HEADERS = ("Extension", "Version", "Plugin API", "Source", "Status", "Next start", "Description")


def extensions_table(service: GenerationService) -> str:
    """The Extensions tab's table as HTML: one row per extension the host found, then the folders installed since
    the start (they load at the next one)."""
    plugins = service.plugins
    if plugins is None:
        return message_html("Extensions are disabled (--disable-extensions).", "info")
    rows = []
    for ext in plugins.extensions:
        next_on = plugins.is_enabled_at_next_start(ext.name)
        runs_now = ext.status != "disabled"
        notes = [note for note in (ext.error, ext.tab_error) if note]
        status = f'<span class="easel-ext-status easel-ext-{escape(ext.status)}">{escape(ext.status)}</span>'
        status += "".join(f'<div class="easel-ext-error">{escape(note)}</div>' for note in notes)
        changes = next_on != runs_now
        next_text = ("enabled" if next_on else "disabled") + (" (changes)" if changes else "")
        next_cell = f'<span class="easel-ext-next{" easel-ext-changes" if changes else ""}">{escape(next_text)}</span>'
        rows.append((ext.name, ext.version, ext.api, _source(ext), status, next_cell, ext.description))
    for path in plugins.installed_since_start():
        status = '<span class="easel-ext-status easel-ext-installed">installed</span>'
        next_cell = '<span class="easel-ext-next easel-ext-changes">loads</span>'
        rows.append((path.name, "", "", _source_text("folder", path), status, next_cell, ""))
    if not rows:
        return message_html("No extensions found.", "info")
    head = "".join(f"<th>{h}</th>" for h in _HEADERS)
    body = []
    for name, version, api, source, status, next_cell, description in rows:
        cells = [
            f'<td class="easel-ext-name">{escape(name)}</td>',
            f'<td class="easel-ext-nowrap">{escape(version)}</td>',
            f'<td class="easel-ext-nowrap">{escape(api)}</td>',
            f"<td>{source}</td>",
            f"<td>{status}</td>",
            f'<td class="easel-ext-nowrap">{next_cell}</td>',
            f'<td class="easel-ext-description">{escape(description)}</td>',
        ]
        body.append(f'<tr data-extension="{escape(name)}">{"".join(cells)}</tr>')
    return f'<table class="easel-ext-table"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def _source(ext: Any) -> str:
    return _source_text(ext.source, ext.path)


def _source_text(kind: str, path: Path | None) -> str:
    if path is None:
        return escape(kind)
    return f'{escape(kind)}<div class="easel-ext-path" title="{escape(str(path))}">{escape(path.name)}/</div>'
