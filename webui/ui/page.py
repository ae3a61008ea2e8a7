"""The Gradio page: the top bar, the tabs A1111 users know, and the wiring between them.

Each tab is built by its own module; this one lays them out and connects what crosses tabs (send an image to
img2img, reuse a History image's parameters in txt2img). Every rule lives in the service, so the page shows
the same errors as the API and the CLI. No torch or diffusers here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import gradio as gr

from webui.errors import EaselError
from webui.outputs.infotext import parse_infotext
from webui.service.service import GenerationService
from webui.types import VAE_AUTOMATIC as AUTOMATIC
from webui.types import Mode
from webui.ui import forms
from webui.ui.controlnet_panel import (
    USE_FIELDS,
    ControlNetTab,
    build_controlnet_tab,
    model_choices,
    preprocessor_choices,
    unit_fill_updates,
    use_in_unit,
)
from webui.ui.extensions_tab import ExtensionTab, build_extension_tabs, build_extensions_tab
from webui.ui.generate_tab import HIRES_LABELS, GenerationTab, TopBar, build_generation_tab, selected_image
from webui.ui.history_tab import build_history_tab
from webui.ui.pnginfo_tab import build_pnginfo_tab
from webui.ui.progress import message_html
from webui.ui.settings_tab import build_settings_tab

PAGE_CSS = """
.easel-progress { position: relative; height: 1.8em; border-radius: 6px; overflow: hidden;
  background: var(--block-background-fill); border: 1px solid var(--border-color-primary); }
.easel-progress-bar { position: absolute; inset: 0 auto 0 0; background: var(--color-accent); opacity: .35;
  transition: width .2s; }
.easel-progress-text { position: relative; padding: 0 .6em; line-height: 1.8em; font-size: .9em; }
.easel-message { padding: .3em .6em; border-radius: 6px; font-size: .9em; }
.easel-error { background: #fde8e8; color: #9b1c1c; border: 1px solid #f8b4b4; }
.easel-info { color: var(--body-text-color-subdued); }
.easel-tokens { text-align: right; margin-top: -.6em !important; font-size: .8em; min-height: 0 !important; }
.easel-tokens-over { color: #c2410c; font-weight: 600; }
.easel-hires-size { font-size: .9em; color: var(--body-text-color-subdued); }
.easel-ext-table { width: 100%; border-collapse: collapse; font-size: .9em; border: none !important; }
.easel-ext-table th, .easel-ext-table td { text-align: left; vertical-align: top; padding: .4em .7em !important;
  border: none !important; border-bottom: 1px solid var(--border-color-primary) !important; }
.easel-ext-table tr { border: none !important; }
.easel-ext-table th { font-weight: 600; white-space: nowrap; background: var(--block-background-fill); }
.easel-ext-name, .easel-ext-nowrap, .easel-ext-path { white-space: nowrap; }
.easel-ext-name { font-weight: 600; }
.easel-ext-status { font-weight: 600; }
.easel-ext-enabled { color: #15803d; }
.easel-ext-disabled { color: var(--body-text-color-subdued); }
.easel-ext-failed, .easel-ext-refused { color: #b91c1c; }
.easel-ext-installed { color: #1d4ed8; }
.easel-ext-error { color: #9b1c1c; font-size: .9em; max-width: 30em; overflow-wrap: anywhere; }
.easel-ext-path { color: var(--body-text-color-subdued); font-size: .85em; }
.easel-ext-changes { font-weight: 600; color: #c2410c; }
.easel-ext-description { color: var(--body-text-color-subdued); }
"""

# Ctrl+Enter in a prompt box generates, as in A1111.
PAGE_JS = """
() => {
  document.addEventListener('keydown', (event) => {
    if (!(event.key === 'Enter' && (event.ctrlKey || event.metaKey))) return;
    for (const tab of ['txt2img', 'img2img', 'inpaint']) {
      const box = document.getElementById(tab + '_prompt');
      const neg = document.getElementById(tab + '_neg_prompt');
      if ((box && box.contains(event.target)) || (neg && neg.contains(event.target))) {
        event.preventDefault();
        document.getElementById(tab + '_generate')?.click();
      }
    }
  });
}
"""


def build_ui(service: GenerationService, extension_tabs: Sequence[ExtensionTab] = ()) -> gr.Blocks:
    """The page. The running extensions' tabs (``service.plugins``) follow Easel's own, then ``extension_tabs``."""
    checkpoints = service.engine.weights.checkpoints
    vaes = service.engine.weights.vaes

    def checkpoint_titles() -> list[tuple[str, str]]:
        """(label, value) pairs: the label is A1111's title (it gains the hash once known) and says which file came
        with Easel; the value is the stable name, so a value sent just before the hash appeared stays valid."""
        return [(f"{c.title} (built-in demo)" if c.builtin else c.title, c.name) for c in checkpoints.list()]

    with gr.Blocks(title="Easel") as page:
        with gr.Row(equal_height=True, elem_id="top_bar"):
            checkpoint = gr.Dropdown(
                choices=checkpoint_titles(), value=None, label="Stable Diffusion checkpoint", scale=4,
                elem_id="setting_checkpoint",
            )  # fmt: skip
            refresh = gr.Button("🔄", scale=0, min_width=48, elem_id="refresh_checkpoints")
            vae = gr.Dropdown(
                choices=vaes.choices(), value=AUTOMATIC, label="SD VAE", scale=2, elem_id="setting_sd_vae",
            )  # fmt: skip
            clip_skip = gr.Slider(1, 12, value=1, step=1, label="Clip skip", scale=2, elem_id="setting_clip_skip")
        model_status = gr.HTML("", elem_id="checkpoint_status")
        top = TopBar(checkpoint=checkpoint, vae=vae, clip_skip=clip_skip)

        tabs_by_mode: dict[Mode, GenerationTab] = {}
        modules = preprocessor_choices(service)  # once for every menu; the load and 🔄 refresh them
        with gr.Tabs(elem_id="tabs") as tabs:
            for mode, label in ((Mode.TXT2IMG, "txt2img"), (Mode.IMG2IMG, "img2img"), (Mode.INPAINT, "Inpaint")):
                with gr.Tab(label, id=mode.value, elem_id=f"tab_{mode.value}"):
                    tabs_by_mode[mode] = build_generation_tab(mode, service, top, modules)
            with gr.Tab("ControlNet", id="controlnet", elem_id="tab_controlnet"):
                controlnet_tab = build_controlnet_tab(service, modules)
            with gr.Tab("History", id="history", elem_id="tab_history") as history_tab_item:
                history = build_history_tab(service)
            with gr.Tab("PNG Info", id="pnginfo", elem_id="tab_pnginfo"):
                pnginfo = build_pnginfo_tab()
            with gr.Tab("Settings", id="settings", elem_id="tab_settings"):
                settings_tab = build_settings_tab(service)
            with gr.Tab("Extensions", id="extensions", elem_id="tab_extensions"):
                extensions_tab = build_extensions_tab(service)
            build_extension_tabs(service, extension_tabs)

        # -- crossing tabs -------------------------------------------------------------------------------
        img2img_image = tabs_by_mode[Mode.IMG2IMG].widgets["init_image"]
        inpaint_editor = tabs_by_mode[Mode.INPAINT].widgets["editor"]
        for tab in tabs_by_mode.values():
            for target, widget, value in (
                ("img2img", img2img_image, _image_or_keep),
                ("inpaint", inpaint_editor, _editor_value),
                ("controlnet", controlnet_tab.image, _image_or_keep),
            ):
                tab.send[target].click(
                    lambda kept, index, target=target, value=value: send_selected(kept, index, target, value),
                    inputs=[tab.results, tab.selected],
                    outputs=[widget, tabs],
                )
        _wire_use_buttons(controlnet_tab, tabs_by_mode, tabs)

        txt2img = tabs_by_mode[Mode.TXT2IMG]
        assert txt2img.hires is not None and txt2img.controlnet is not None
        sections = [
            txt2img.hires,
            txt2img.controlnet.accordion,
            *([txt2img.extensions] if txt2img.extensions is not None else []),
        ]
        fill_targets = [*txt2img.widgets.values(), clip_skip, tabs, *sections]
        units = len(txt2img.controlnet.units)

        def fill_txt2img(text: str) -> tuple[Any, ...]:
            # Without an Extensions accordion (no extension takes arguments) its update, the last, is left out.
            return txt2img_fill(service, list(txt2img.widgets), text, units)[: len(fill_targets)]

        for button, text in ((history.reuse, history.info), (pnginfo.send, pnginfo.text)):
            button.click(fill_txt2img, inputs=[text], outputs=fill_targets)
        history_tab_item.select(history.first_page, inputs=history.filters, outputs=history.outputs)

        # -- models --------------------------------------------------------------------------------------
        def rescan_vaes(current: str | None) -> Any:
            """After a rescan, keep the chosen VAE if its file is still there, else fall back to Automatic."""
            choices = vaes.choices()
            return gr.update(choices=choices, value=current if current in choices else AUTOMATIC)

        def rescan(current: str | None) -> Any:
            service.engine.weights.refresh()
            try:  # an old title (before its hash was known) still finds its model
                value = checkpoints.get(current).name if current else None
            except EaselError:
                value = None
            if value is None:  # show what a generation would use (the demo model on a fresh install)
                default = service.default_checkpoint()
                value = default.name if default is not None else None
            return gr.update(choices=checkpoint_titles(), value=value)

        model_fields: list[Any] = []
        names = ("width", "height", "steps", "cfg_scale", "sampler_name")
        for tab in tabs_by_mode.values():
            model_fields += [tab.widgets[name] for name in names]

        def model_defaults(current: str | None, with_preferences: bool) -> tuple[Any, ...]:
            """What the model was made for (the demo model: 64x64), as its metadata says; on page load, what it
            does not say comes from the user's default settings. Choosing a model keeps the user's other values."""
            found: dict[str, Any] = {}
            if with_preferences:
                prefs = service.preferences.current
                found = {"steps": prefs.default_steps, "cfg_scale": prefs.default_cfg_scale, "sampler_name": prefs.default_sampler}  # fmt: skip
            with contextlib.suppress(EaselError):
                found.update(service.defaults_for(current or None))
            one_tab = [gr.update(value=found[n]) if n in found else gr.update() for n in names]
            return tuple(one_tab * len(tabs_by_mode))

        negatives = [tab.widgets["negative_prompt"] for tab in tabs_by_mode.values()]

        def on_load(current: str | None) -> tuple[Any, ...]:
            """Everything a fresh page fills in, in one event, so nothing lands after the user started typing."""
            chosen = rescan(current)
            negative = service.preferences.current.default_negative_prompt
            return (
                chosen,
                rescan_vaes(AUTOMATIC),
                *model_defaults(chosen["value"], with_preferences=True),
                *(negative for _ in negatives),
                *settings_tab.current_values(),
                *menu_updates(),
                *extensions_tab.current_values(),
            )

        def switch(request: gr.Request, title: str | None) -> Iterator[tuple[str, Any]]:
            """Load the chosen model now, as A1111 does, with its progress and any error in words."""
            keep = gr.update()
            if not title:
                return
            try:
                job = service.load_checkpoint(title, owner=getattr(request, "session_hash", None))
            except EaselError as exc:
                yield message_html(str(exc), "error"), keep
                return
            for event in job.updates():
                if event.state == "queued":
                    yield message_html(f"Waiting for the running job before loading {title}…", "info"), keep
                elif event.state == "running":
                    yield message_html(f"Loading {title}…", "info"), keep
            if job.state == "done":
                seconds = (job.finished or 0) - (job.started or 0)
                # Its label now carries the hash; the value (its name) is unchanged, so a Generate clicked
                # meanwhile still sends a valid choice.
                loaded = gr.update(choices=checkpoint_titles(), value=job.result.name)
                yield message_html(f"Loaded {job.result.title} in {seconds:.1f} s", "info"), loaded
            else:
                yield message_html(str(job.error or job.progress.message), "error"), keep

        menus = _model_menus(tabs_by_mode, controlnet_tab)

        def menu_updates() -> tuple[Any, ...]:
            """The ControlNet model, preprocessor and upscaler menus after a rescan, each keeping its value (a
            preprocessor's "(needs ...)" goes once its annotator files are there)."""
            controlnets = model_choices(service)
            found = preprocessor_choices(service)
            upscalers = {True: service.upscaler_names(latent=True), False: service.upscaler_names()}
            updates = [gr.update(choices=controlnets) for _ in menus.controlnets]
            updates += [gr.update(choices=found) for _ in menus.preprocessors]
            updates += [gr.update(choices=upscalers[latent]) for _, latent in menus.upscalers]
            return tuple(updates)

        def refresh_lists(current: str | None, chosen_vae: str | None) -> tuple[Any, ...]:
            return rescan(current), rescan_vaes(chosen_vae), *menu_updates()

        refresh.click(refresh_lists, inputs=[checkpoint, vae], outputs=[checkpoint, vae, *menus.widgets()])
        checkpoint.input(lambda title: model_defaults(title, False), inputs=[checkpoint], outputs=model_fields)
        checkpoint.input(switch, inputs=[checkpoint], outputs=[model_status, checkpoint], show_progress="hidden")
        page.load(
            on_load,
            inputs=[checkpoint],
            outputs=[
                *(checkpoint, vae, *model_fields, *negatives, *settings_tab.widgets, *menus.widgets()),
                *extensions_tab.widgets,
            ],
        )
    return page


def txt2img_fill(service: GenerationService, names: Sequence[str], text: str, units: int) -> tuple[Any, ...]:
    """What "Send to txt2img" (PNG Info) and "♻️ Reuse" (History) do, in one event: updates for the txt2img widgets
    ``names`` (with ``units`` ControlNet units), clip skip and the tabs (txt2img selected), then for the Hires. fix,
    ControlNet and Extensions accordions, opened when the text turns them on so what was filled in is in view.

    Fields the text does not name keep their values; an empty text changes nothing. Hires fix is set as the text
    says (off without ``Hires`` keys, as A1111's paste); its ``ControlNet N`` entries fill and enable units 0..N
    (their images cannot come back), and the other units are disabled. Extensions' per-job arguments are filled with
    what each extension reads back from the text (``easel_infotext_read``). The text is parsed once.
    """
    if not text or not text.strip():
        return tuple(gr.update() for _ in range(len(names) + 5))
    parsed = parse_infotext(text)
    values = forms.values_from_infotext(parsed, units=units)
    if "prompt" in values:  # LoRAs renamed since: follow their hashes, as A1111 does
        values["prompt"] = service.rename_loras(values["prompt"], parsed.get("Lora hashes"))
    # The extensions' arguments they read back; the others keep their values.
    read = service.plugins.infotext_read(parsed) if service.plugins is not None else {}
    values.update(forms.values_from_extension_args(read))
    updates = {name: gr.update(value=values[name]) if name in values else gr.update() for name in names}
    for index in range(units):
        updates.update(unit_fill_updates(service, values, index))
    filled = [updates[name] for name in names]
    skip = values.get("clip_skip")
    filled.append(gr.update(value=skip) if isinstance(skip, int) and 1 <= skip <= 12 else gr.update())
    filled.append(gr.Tabs(selected="txt2img"))
    filled.append(gr.update(open=True, label=HIRES_LABELS[True]) if values.get("enable_hr") else gr.update())
    filled.append(gr.update(open=True) if values.get(forms.unit_key(0, "enabled")) else gr.update())
    filled.append(gr.update(open=True) if read else gr.update())
    return tuple(filled)


def send_selected(
    kept: list[tuple[str | None, str]], index: int, target: str, value: Callable[[str], Any]
) -> tuple[Any, Any]:
    """A 📤 button: the selected image into ``target``'s input, and that tab shown. A detected map (or nothing) is
    not a saved image, so nothing is sent and a toast says why."""
    path = selected_image(kept, index)
    if path is None:
        gr.Warning("Select a generated image first (detected maps are not sent).")
        return gr.update(), gr.update()
    return value(path), gr.Tabs(selected=target)


def _wire_use_buttons(cn: ControlNetTab, tabs_by_mode: dict[Mode, GenerationTab], tabs: gr.Tabs) -> None:
    """ "Use in ... unit 0": the tab shown with its ControlNet accordion open on unit 0, then the ControlNet tab's
    image and preprocessor copied into that unit, enabled. Two steps, because values sent in the same update that
    first shows a slider are lost when it appears."""
    for mode, button in cn.use.items():
        panel = tabs_by_mode[mode].controlnet
        assert panel is not None
        first = panel.units[0]

        def show(mode: Mode = mode) -> tuple[Any, ...]:
            return gr.update(open=True), gr.Tabs(selected=0), gr.Tabs(selected=mode.value)

        button.click(
            show, outputs=[panel.accordion, panel.tabs, tabs], show_progress="hidden"
        ).then(
            use_in_unit,
            inputs=[cn.image, cn.pre.module, *cn.pre.sliders],
            outputs=[first.widgets[name] for name in USE_FIELDS],
            show_progress="hidden",
        )  # fmt: skip


@dataclass
class _Menus:
    """The menus the top bar's 🔄 (and a fresh page) rescans besides checkpoints and VAEs: model folders, and the
    preprocessors, which say which annotator files they lack."""

    controlnets: list[gr.Dropdown]
    preprocessors: list[gr.Dropdown]  # their labels say which annotator files are missing
    upscalers: list[tuple[gr.Dropdown, bool]]  # (menu, lists the latent upscalers too)

    def widgets(self) -> list[gr.Dropdown]:
        return [*self.controlnets, *self.preprocessors, *(menu for menu, _ in self.upscalers)]


def _model_menus(tabs_by_mode: dict[Mode, GenerationTab], controlnet_tab: ControlNetTab) -> _Menus:
    panels = [tab.controlnet for tab in tabs_by_mode.values() if tab.controlnet]
    controlnets = [menu for panel in panels for menu in panel.models()]
    modules = [*(menu for panel in panels for menu in panel.modules()), controlnet_tab.pre.module]
    upscalers = [
        (tabs_by_mode[Mode.TXT2IMG].widgets["hr_upscaler"], True),
        (tabs_by_mode[Mode.IMG2IMG].widgets["sd_upscale_upscaler"], False),
    ]
    return _Menus(controlnets, modules, upscalers)


def _image_or_keep(path: str | None) -> Any:
    return path if path else gr.update()


def _editor_value(path: str | None) -> Any:
    if not path:
        return gr.update()
    return {"background": path, "layers": [], "composite": path}
