"""The Settings tab: the user's saving, preview and default choices, validated by the service and persisted."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import gradio as gr

from webui import samplers
from webui.errors import InvalidRequest
from webui.preferences import FORMATS, Preferences
from webui.service.service import GenerationService
from webui.ui.progress import message_html

# (field, label) in the order shown; the widget kind follows the field's type.
FIELDS: list[tuple[str, str]] = [
    ("save_images", "Always save all generated images"),
    ("output_format", "File format for images"),
    ("jpeg_quality", "Quality for saved jpg and webp images"),
    ("save_infotext", "Save the generation parameters inside the image file"),
    ("txt2img_folder", "Folder for txt2img images (inside the data folder)"),
    ("img2img_folder", "Folder for img2img and inpaint images (inside the data folder)"),
    ("preview_every", "Show a live preview every N sampling steps (0: no previews)"),
    ("default_steps", "Default sampling steps"),
    ("default_cfg_scale", "Default CFG scale"),
    ("default_sampler", "Default sampler"),
    ("default_negative_prompt", "Default negative prompt"),
    ("ckpt_cache", "Checkpoints kept in RAM after switching (switching back takes no reload)"),
    ("controlnet_units", "ControlNet units per generation tab, 1 to 8 (applied at the next start)"),
]


@dataclass
class SettingsTab:
    widgets: list[Any]
    current_values: Callable[[], tuple[Any, ...]]  # for the page's load: what is saved now, not at build time


def build_settings_tab(service: GenerationService) -> SettingsTab:
    current = service.preferences.current
    widgets: dict[str, Any] = {}
    gr.Markdown(
        f"Saved in `{service.preferences.path}`. Model-specific sizes and steps still apply when a model states them."
    )
    with gr.Row(equal_height=False):
        with gr.Column():
            gr.Markdown("### Saving images")
            for name, label in FIELDS[:6]:
                widgets[name] = _widget(name, label, getattr(current, name))
        with gr.Column():
            gr.Markdown("### Live preview and defaults")
            for name, label in FIELDS[6:]:
                widgets[name] = _widget(name, label, getattr(current, name))
    with gr.Row():
        apply = gr.Button("Apply settings", variant="primary", elem_id="settings_apply", scale=0, min_width=200)
        status = gr.HTML("", elem_id="settings_status")

    names = list(widgets)

    built_units = current.controlnet_units

    def save(*values: Any) -> tuple[Any, ...]:
        return save_settings(service, names, values, built_units)

    apply.click(save, inputs=list(widgets.values()), outputs=[status, *widgets.values()])

    def current_values() -> tuple[Any, ...]:
        saved = service.preferences.current
        return tuple(getattr(saved, n) for n in names)

    return SettingsTab(list(widgets.values()), current_values)


def save_settings(
    service: GenerationService, names: Sequence[str], values: Sequence[Any], built_units: int
) -> tuple[Any, ...]:
    """Apply settings: (status message, then each widget's value as saved). A bad value gets a message naming it,
    nothing is saved and every widget keeps what the user typed, to correct it. ``built_units``: the ControlNet
    units the page was built with, to say when the tabs will show another."""
    try:
        saved = service.update_preferences(**dict(zip(names, values, strict=True)))
    except InvalidRequest as exc:
        return (message_html(str(exc), "error"), *(gr.update() for _ in names))
    text = "Settings saved."
    if saved.controlnet_units != built_units:  # the page is built once: say why the tabs still show the old count
        text += f" The tabs get {saved.controlnet_units} ControlNet unit(s) at the next start."
    return (message_html(text, "info"), *(getattr(saved, n) for n in names))


def _widget(name: str, label: str, value: Any) -> Any:
    elem_id = f"setting_{name}"
    field = Preferences.model_fields[name]
    if field.annotation is bool:
        return gr.Checkbox(value=value, label=label, elem_id=elem_id)
    if name == "output_format":
        return gr.Radio(list(FORMATS), value=value, label=label, elem_id=elem_id)
    if name == "default_sampler":
        return gr.Dropdown(samplers.sampler_names(), value=value, label=label, elem_id=elem_id)
    if field.annotation in (int, float):
        return gr.Number(value=value, label=label, elem_id=elem_id, precision=0 if field.annotation is int else None)
    return gr.Textbox(value=value, label=label, elem_id=elem_id, lines=2 if "prompt" in name else 1)
