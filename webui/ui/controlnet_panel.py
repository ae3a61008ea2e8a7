"""ControlNet in the page: the units of each generation tab and the ControlNet tab, laid out as the SD-WebUI
ControlNet extension lays them out.

Each generation tab gets a "ControlNet" accordion with one sub-tab per unit ("ControlNet Unit 0"...; how many is
the ``controlnet_units`` setting). A unit has the extension's widgets: Enable, the control image, Preprocessor
(💥 Preview beside it), Model (🔄 rescans the folder), Control Weight, Starting/Ending Control Step, Pixel Perfect,
the preprocessor's resolution and threshold sliders (labels, ranges and visibility follow the chosen preprocessor),
Control Mode, Resize Mode and, in txt2img, the hires fix option. The ControlNet tab is where preprocessors are tried
on an image before "Use in ... unit 0" copies the setting into a generation tab.

Widget values become units in ``webui.ui.forms``; maps come from ``service.detect_map``, the code generation runs
(NumPy/OpenCV, safe on a handler thread). Nothing here imports torch.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr

from webui.controlnet import preprocessors
from webui.controlnet.units import DEFAULT_RESOLUTION, NO_MODEL, ControlNetUnit
from webui.errors import EaselError, InvalidRequest
from webui.service.service import GenerationService
from webui.types import Mode
from webui.ui import forms
from webui.ui.progress import message_html
from webui.ui.widgets import FieldSlider

log = logging.getLogger(__name__)

PREVIEW_LABEL = "💥 Preview"
INPUT_NOTES = {
    Mode.IMG2IMG: "Leave the image empty to use the img2img image above.",
    Mode.INPAINT: "Leave the image empty to use the inpaint image above (and its mask).",
}
KEEP = {"__type__": "update"}


# -- the preprocessor's widgets, shared by the units and the ControlNet tab ---------------------------------------


@dataclass
class PreprocessorWidgets:
    """The preprocessor menu and the sliders whose meaning depends on it."""

    module: gr.Dropdown
    processor_res: FieldSlider
    threshold_a: FieldSlider
    threshold_b: FieldSlider

    @property
    def sliders(self) -> list[FieldSlider]:
        """The three sliders, in ``forms.SLIDER_FIELDS`` order."""
        return [getattr(self, name) for name in forms.SLIDER_FIELDS]


Choices = list[tuple[str, str]]  # a menu's (label, value) pairs


def preprocessor_choices(service: GenerationService) -> Choices:
    """(label, name) per preprocessor. One whose annotator files are missing stays selectable (its error comes at
    Generate or Preview, naming the file) but says what it needs, so nobody has to find out by trying. It looks for
    every annotator file: the page asks once per build and per refresh, for all its menus."""
    folder = _shown_folder(service.settings.annotators_path, service.settings.models_dir)
    choices = []
    for pre, missing in service.preprocessors():
        label = pre.name if not missing else f"{pre.name} (needs {', '.join(missing)} in {folder})"
        choices.append((label, pre.name))
    return choices


def _shown_folder(folder: Path, models_dir: Path) -> str:
    """``models/annotators`` when the folder is the usual one inside the models folder, else its full path."""
    try:
        return str(Path(models_dir.name) / folder.relative_to(models_dir))
    except ValueError:
        return str(folder)


def slider_updates(
    module: str | None,
    *,
    processor_res: Any = None,
    threshold_a: Any = None,
    threshold_b: Any = None,
    pixel_perfect: bool = False,
) -> tuple[Any, Any, Any]:
    """Updates of the resolution, threshold A and threshold B sliders for ``module``: the preprocessor's labels,
    ranges and defaults (a given value is kept), hidden when it has no such setting or, for the resolution, when
    pixel perfect derives it. An unknown name (a pasted infotext's) changes only the values."""
    try:
        pre = preprocessors.find(module or "none")
    except InvalidRequest:
        values = (processor_res, threshold_a, threshold_b)
        return tuple(KEEP if v is None else gr.update(value=v) for v in values)  # type: ignore[return-value]
    res = gr.update(
        visible=pre.uses_resolution and not pixel_perfect,
        value=DEFAULT_RESOLUTION if processor_res is None else processor_res,
    )
    return res, _threshold(pre.threshold_a, threshold_a), _threshold(pre.threshold_b, threshold_b)


def _threshold(slider: preprocessors.Slider | None, value: Any) -> Any:
    if slider is None:
        return gr.update(visible=False)
    whole = all(float(v).is_integer() for v in (slider.low, slider.high, slider.default))
    return gr.update(
        visible=True,
        label=slider.label,
        minimum=slider.low,
        maximum=slider.high,
        step=1 if whole else 0.01,
        value=slider.default if value is None else value,
    )


def build_preprocessor_widgets(
    choices: Choices, elem: str, pixel_perfect: gr.Checkbox | None = None
) -> PreprocessorWidgets:
    """The menu of ``choices`` (``preprocessor_choices``: ``none`` first, as in the extension), placed here, and its
    three sliders, hidden until a
    preprocessor uses them and left for the caller to ``render`` where they go. The sliders follow the menu when
    the user picks (``input``), so a fill that sets all four at once is not undone by a ``change``; with a unit's
    ``pixel_perfect`` box, the resolution slider goes while pixel perfect derives it, as in the extension."""
    module = gr.Dropdown(
        choices, value="none", label="Preprocessor", allow_custom_value=True,
        elem_id=f"{elem}_module", scale=3,
    )  # fmt: skip
    pre = PreprocessorWidgets(
        module=module,
        processor_res=FieldSlider(
            64, 2048, value=DEFAULT_RESOLUTION, step=1, label="Preprocessor Resolution", visible=False,
            elem_id=f"{elem}_processor_res", render=False,
        ),
        threshold_a=FieldSlider(
            1, 255, value=100, step=1, label="Threshold A", visible=False, elem_id=f"{elem}_threshold_a", render=False
        ),
        threshold_b=FieldSlider(
            1, 255, value=200, step=1, label="Threshold B", visible=False, elem_id=f"{elem}_threshold_b", render=False
        ),
    )  # fmt: skip
    perfect = [] if pixel_perfect is None else [pixel_perfect]
    module.input(
        lambda name, *on: slider_updates(name, pixel_perfect=bool(on and on[0])),
        inputs=[module, *perfect],
        outputs=pre.sliders,
        show_progress="hidden",
    )
    if pixel_perfect is not None:  # the resolution slider shown or not, its value kept
        pixel_perfect.input(
            lambda name, on, res: slider_updates(name, processor_res=res, pixel_perfect=bool(on))[0],
            inputs=[module, pixel_perfect, pre.processor_res],
            outputs=[pre.processor_res],
            show_progress="hidden",
        )
    return pre


def render_sliders(pre: PreprocessorWidgets) -> None:
    """The resolution on its own line and the two thresholds side by side, so their long labels fit."""
    pre.processor_res.render()
    with gr.Row():
        pre.threshold_a.render()
        pre.threshold_b.render()


# -- units in a generation tab ------------------------------------------------------------------------------------


@dataclass
class UnitWidgets:
    index: int
    widgets: dict[str, Any]  # ControlNetUnit field -> widget, in ``forms.unit_fields(mode)`` order
    pre: PreprocessorWidgets  # the unit's menu and sliders (also in ``widgets``), wired to each other
    preview: gr.Button
    detected: gr.Image
    message: gr.HTML
    refresh: gr.Button


@dataclass
class ControlNetPanel:
    accordion: gr.Accordion
    tabs: gr.Tabs
    units: list[UnitWidgets] = field(default_factory=list)

    def widgets(self) -> dict[str, Any]:
        """Every unit's widgets by request path (``controlnet_units[0].module``), for the tab's form."""
        return {forms.unit_key(u.index, name): w for u in self.units for name, w in u.widgets.items()}

    def models(self) -> list[gr.Dropdown]:
        return [u.widgets["model"] for u in self.units]

    def modules(self) -> list[gr.Dropdown]:
        return [u.pre.module for u in self.units]


def model_choices(service: GenerationService, *, refresh: bool = False) -> list[tuple[str, str]]:
    """The "None" choice and the ControlNet models (label: the title, with the hash once known; value: the file's
    name, which stays the same, so a choice made before the hash appeared stays valid)."""
    return [(NO_MODEL, NO_MODEL), *service.controlnet_model_choices(refresh=refresh)]


def build_controlnet_panel(
    mode: Mode, service: GenerationService, count: int, elem: str, modules: Choices
) -> ControlNetPanel:
    """The tab's "ControlNet" accordion with ``count`` units, their preprocessor menus listing ``modules``; wires what stays inside a unit (preprocessor sliders,
    model rescan, enabling on upload). The preview needs the tab's size and input, so ``wire_previews`` does it."""
    units = []
    with (
        gr.Accordion("ControlNet", open=False, elem_id=f"{elem}_controlnet") as accordion,
        gr.Tabs(elem_id=f"{elem}_controlnet_tabs") as tabs,
    ):
        for index in range(count):
            with gr.Tab(f"ControlNet Unit {index}", id=index, elem_id=f"{elem}_controlnet_unit_{index}"):
                units.append(_build_unit(mode, service, index, f"{elem}_controlnet_{index}", modules))
    panel = ControlNetPanel(accordion, tabs, units)
    for unit in units:
        _wire_unit(service, panel, unit)
    return panel


def _build_unit(mode: Mode, service: GenerationService, index: int, elem: str, modules: Choices) -> UnitWidgets:
    w: dict[str, Any] = {}
    with gr.Row(equal_height=False):
        w["image"] = gr.Image(
            label="Control image", type="pil", image_mode="RGBA", sources=["upload", "clipboard"], height=260,
            elem_id=f"{elem}_image",
        )  # fmt: skip
        detected = gr.Image(
            label="Preprocessor preview", interactive=False, visible=False, height=260, format="png",
            elem_id=f"{elem}_detected",
        )  # fmt: skip
    if mode in INPUT_NOTES:
        gr.Markdown(INPUT_NOTES[mode], elem_id=f"{elem}_input_note", elem_classes=["easel-info"])
    with gr.Row():
        w["enabled"] = gr.Checkbox(False, label="Enable", elem_id=f"{elem}_enabled")
        w["pixel_perfect"] = gr.Checkbox(False, label="Pixel Perfect", elem_id=f"{elem}_pixel_perfect")
    with gr.Row(equal_height=True):
        pre = build_preprocessor_widgets(modules, elem, w["pixel_perfect"])
        preview = gr.Button(PREVIEW_LABEL, elem_id=f"{elem}_preview", scale=0, min_width=96, size="sm")
        w["model"] = gr.Dropdown(
            model_choices(service), value=NO_MODEL, label="Model", allow_custom_value=True, scale=5,
            elem_id=f"{elem}_model",
        )  # fmt: skip
        refresh = gr.Button("🔄", elem_id=f"{elem}_refresh", scale=0, min_width=40, size="sm")
    w["module"] = pre.module
    w["weight"] = FieldSlider(0, 2, value=1, step=0.05, label="Control Weight", elem_id=f"{elem}_weight")
    with gr.Row():
        w["guidance_start"] = FieldSlider(
            0, 1, value=0, step=0.01, label="Starting Control Step", elem_id=f"{elem}_guidance_start"
        )
        w["guidance_end"] = FieldSlider(0, 1, value=1, step=0.01, label="Ending Control Step", elem_id=f"{elem}_guidance_end")  # fmt: skip
    render_sliders(pre)
    w.update(zip(forms.SLIDER_FIELDS, pre.sliders, strict=True))
    w["control_mode"] = gr.Radio(
        forms.CONTROL_MODES, value=forms.CONTROL_MODES[0], label="Control Mode", elem_id=f"{elem}_control_mode"
    )
    w["resize_mode"] = gr.Radio(
        forms.UNIT_RESIZE_NAMES, value=forms.UNIT_RESIZE_NAMES[1], label="Resize Mode", elem_id=f"{elem}_resize_mode"
    )
    if mode is Mode.TXT2IMG:
        w["hr_option"] = gr.Radio(
            forms.HIRES_OPTIONS, value=forms.HIRES_OPTIONS[0], label="Hires-Fix Option", elem_id=f"{elem}_hr_option"
        )
    message = gr.HTML("", elem_id=f"{elem}_message")
    ordered = {name: w[name] for name in forms.unit_fields(mode)}
    return UnitWidgets(index, ordered, pre, preview, detected, message, refresh)


def _wire_unit(service: GenerationService, panel: ControlNetPanel, unit: UnitWidgets) -> None:
    w = unit.widgets
    # The extension enables a unit when an image is uploaded into it: the upload says what the user wants.
    w["image"].upload(lambda: True, outputs=[w["enabled"]], show_progress="hidden")

    models = panel.models()

    def rescan(*current: str | None) -> tuple[Any, ...]:
        choices = model_choices(service, refresh=True)
        return tuple(gr.update(choices=choices, value=value) for value in current)

    unit.refresh.click(rescan, inputs=models, outputs=models, show_progress="hidden")


def wire_previews(
    panel: ControlNetPanel,
    mode: Mode,
    service: GenerationService,
    size: Sequence[Any],
    tab_inputs: Mapping[str, Any],
) -> None:
    """💥 Preview of each unit: the map at the tab's ``size`` (width, height widgets), with ``tab_inputs`` (the
    img2img/inpaint widgets by field name) as the image an empty unit uses."""
    input_names = list(tab_inputs)
    for unit in panel.units:
        names = list(unit.widgets)

        def run(*values: Any, unit: UnitWidgets = unit, names: list[str] = names) -> tuple[Any, str]:
            raw = dict(zip(names, values[: len(names)], strict=True))
            width, height, *rest = values[len(names) :]
            inputs = dict(zip(input_names, rest, strict=True))
            return preview_unit(service, mode, unit.index, raw, width, height, inputs)

        unit.preview.click(
            run,
            inputs=[*unit.widgets.values(), *size, *tab_inputs.values()],
            outputs=[unit.detected, unit.message],
            show_progress="minimal",
        )


def preview_unit(
    service: GenerationService,
    mode: Mode,
    index: int,
    raw: Mapping[str, Any],
    width: Any,
    height: Any,
    inputs: Mapping[str, Any],
) -> tuple[Any, str]:
    """💥 Preview's handler: (detected map update, message). A bad value or a preprocessor that cannot run gives
    the page's usual message naming the field, and the last map stays."""
    where = f"controlnet_units[{index}]"
    try:
        unit = forms.control_unit({**raw, "enabled": False}, where, mode)
        size = _size(width, height)
        image, mask, crop = forms.control_inputs(mode, inputs, *size)
        detected = service.detect_map(unit, *size, fallback_image=image, fallback_mask=mask, crop=crop, where=where)
    except Exception as exc:
        return KEEP, _failure(exc, "preview")
    return gr.update(value=detected.image, visible=True), message_html(_map_caption(unit.module, detected), "info")


def _size(width: Any, height: Any) -> tuple[int, int]:
    """The map's size from number widgets (floats, or empty)."""
    size = []
    for name, value in (("width", width), ("height", height)):
        try:
            size.append(int(value))
        except (TypeError, ValueError):
            raise InvalidRequest(name, f"a number is required, got {value!r}") from None
    return size[0], size[1]


def _map_caption(module: str, detected: Any) -> str:
    height, width = detected.preview.shape[:2]
    resolution = f", preprocessor resolution {detected.resolution}" if detected.resolution > 0 else ""
    return f"Detected map ({preprocessors.find(module).name}): {width}x{height}{resolution}"


def _failure(exc: Exception, what: str) -> str:
    """A message in words for the page and a toast; a bug is logged, never shown as Gradio's bare "Error"."""
    if isinstance(exc, EaselError):
        text = str(exc)
    else:
        log.exception("ControlNet %s failed", what)
        text = f"Could not {what}: {type(exc).__name__}: {exc}"
    gr.Warning(text)
    return message_html(text, "error")


# -- the ControlNet tab -------------------------------------------------------------------------------------------

USE_TARGETS = {Mode.TXT2IMG: "txt2img", Mode.IMG2IMG: "img2img", Mode.INPAINT: "Inpaint"}


@dataclass
class ControlNetTab:
    image: gr.Image  # the target of the result galleries' "📤 ControlNet"
    pre: PreprocessorWidgets
    width: FieldSlider
    height: FieldSlider
    preview: gr.Button
    detected: gr.Image
    message: gr.HTML
    use: dict[Mode, gr.Button]


def build_controlnet_tab(service: GenerationService, modules: Choices) -> ControlNetTab:
    """The place to try preprocessors: an image, a preprocessor (of ``modules``) and its settings, the map beside
    it, and buttons that carry the setting into a generation tab's first unit."""
    limits = service.settings.limits
    gr.Markdown(
        "Try a preprocessor on an image here, then use it in a generation tab's first ControlNet unit. "
        f"ControlNet models go in `{service.settings.controlnet_path}`; preprocessors that need annotator files "
        f"say which, and look for them in `{service.settings.annotators_path}`.",
        elem_id="controlnet_note",
    )
    with gr.Row(equal_height=False):
        with gr.Column():
            image = gr.Image(
                label="Control image", type="filepath", sources=["upload", "clipboard"], elem_id="controlnet_image",
                height=360,
            )  # fmt: skip
            with gr.Row(equal_height=True):
                pre = build_preprocessor_widgets(modules, "controlnet")
                preview = gr.Button(
                    PREVIEW_LABEL, variant="primary", elem_id="controlnet_preview", scale=0, min_width=120
                )
            render_sliders(pre)
            with gr.Row():
                width = FieldSlider(
                    limits.min_size, limits.max_size, value=512, step=8, label="Map width", elem_id="controlnet_width"
                )
                height = FieldSlider(
                    limits.min_size, limits.max_size, value=512, step=8, label="Map height", elem_id="controlnet_height"
                )
        with gr.Column():
            detected = gr.Image(
                label="Detected map", interactive=False, height=360, format="png", elem_id="controlnet_detected"
            )
            message = gr.HTML("", elem_id="controlnet_message")
    with gr.Row():
        use = {
            mode: gr.Button(f"Use in {label} unit 0", elem_id=f"controlnet_use_{mode.value}", size="sm")
            for mode, label in USE_TARGETS.items()
        }  # fmt: skip
    tab = ControlNetTab(image, pre, width, height, preview, detected, message, use)
    preview.click(
        lambda *values: tab_preview(service, *values),
        inputs=[image, pre.module, *pre.sliders, width, height],
        outputs=[detected, message],
        show_progress="minimal",
    )  # fmt: skip
    return tab


def tab_preview(
    service: GenerationService, image: Any, module: str | None, res: Any, a: Any, b: Any, width: Any, height: Any
) -> tuple[Any, str]:
    """The ControlNet tab's Preview: the map of ``image`` at ``width`` x ``height``, or the message saying why not."""
    try:
        if not image:
            raise InvalidRequest("image", "upload a control image first")
        raw = {"image": image, "module": module, **dict(zip(forms.SLIDER_FIELDS, (res, a, b), strict=True))}
        unit = forms.control_unit({**UNIT_DEFAULTS, **raw}, "controlnet")
        detected = service.detect_map(unit, *_size(width, height), where="controlnet")
    except Exception as exc:
        return KEEP, _failure(exc, "preview")
    return detected.image, message_html(_map_caption(unit.module, detected), "info")


# The tab's preview has no weight or steps of its own: a unit's defaults (not enabled: it has no model).
UNIT_DEFAULTS: dict[str, Any] = {
    "enabled": False,
    **{name: ControlNetUnit.model_fields[name].default for name in ("weight", "guidance_start", "guidance_end")},
}


def use_in_unit(image: Any, module: str | None, res: Any, a: Any, b: Any) -> tuple[Any, ...]:
    """ "Use in ... unit 0": updates for that unit's image, Enable, Pixel Perfect (off, so the copied resolution
    counts), preprocessor and its three sliders (ranges and all, since a programmatic change of the menu does not
    re-run its ``input`` listener). The caller adds the accordion, sub-tab and tab switches."""
    sliders = slider_updates(module, processor_res=res, threshold_a=a, threshold_b=b)
    return (image if image else KEEP, True, False, gr.update(value=module), *sliders)


USE_FIELDS = ("image", "enabled", "pixel_perfect", "module", *forms.SLIDER_FIELDS)


def unit_fill_updates(service: GenerationService, values: Mapping[str, Any], index: int) -> dict[str, Any]:
    """Updates for unit ``index``'s widgets from an infotext's ``values`` (``forms.values_from_infotext``) beyond
    plain values: the model matched to a listed file by title, name or hash (else left as the text says, for the
    request to name), and the preprocessor's sliders with its ranges and visibility."""
    key = forms.unit_key
    if key(index, "module") not in values:
        return {}
    updates: dict[str, Any] = {}
    model = values.get(key(index, "model"))
    if model and model != NO_MODEL:
        with contextlib.suppress(EaselError):
            updates[key(index, "model")] = gr.update(value=service.controlnet_model_name(str(model)))
    sliders = slider_updates(
        values[key(index, "module")],
        **{name: values.get(key(index, name)) for name in forms.SLIDER_FIELDS},
        pixel_perfect=bool(values.get(key(index, "pixel_perfect"))),
    )
    for name, update in zip(forms.SLIDER_FIELDS, sliders, strict=True):
        updates[key(index, name)] = update
    return updates
