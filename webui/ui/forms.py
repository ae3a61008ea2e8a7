"""Widget values ⇄ requests, with no Gradio in sight: what the generation tabs send and what fills them back.

The page builds one form per mode from ``fields_for(mode, units)``; its handlers hand the widget values here as a
``{name: value}`` dict, so every rule (labels to enums, mask painting to a mask image, infotext to widget
values) is a plain function the unit tests call directly.

Widgets are keyed by the request field they fill, ControlNet units' and extensions' arguments by their path in the
request (``controlnet_units[0].threshold_a``, ``extension_args.latent-mirror.mode``): an error names exactly the
widget to correct, and an infotext fills a unit's widgets by the same names.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pydantic import ValidationError

from webui.controlnet import preprocessors
from webui.controlnet.detect import fallback_inputs
from webui.controlnet.units import (
    NO_MODEL,
    ControlMode,
    ControlNetUnit,
    HiresOption,
    units_from_infotext,
)
from webui.controlnet.units import RESIZE_LABELS as UNIT_RESIZE_LABELS
from webui.errors import InvalidRequest, from_validation_error
from webui.images import decode_image
from webui.outputs.infotext import parse_infotext, request_fields_from_infotext
from webui.pipeline import hires
from webui.plugin_api import Setting
from webui.types import (
    MASKED_CONTENT_LABELS,
    RESIZE_MODE_LABELS,
    VAE_AUTOMATIC,
    GenerationRequest,
    MaskedContent,
    Mode,
    ResizeMode,
)

INPAINT_AREAS = ("Whole picture", "Only masked")
MASK_MODES = ("Inpaint masked", "Inpaint not masked")
RESIZE_LABELS = [RESIZE_MODE_LABELS[m] for m in ResizeMode]
MASKED_CONTENT_NAMES = [MASKED_CONTENT_LABELS[m] for m in MaskedContent]

# The request fields each tab's widgets carry, in the order the handlers receive them.
COMMON_FIELDS = (
    "prompt",
    "negative_prompt",
    "sampler_name",
    "scheduler",
    "steps",
    "width",
    "height",
    "n_iter",
    "batch_size",
    "cfg_scale",
    "seed",
)
IMG2IMG_FIELDS = ("init_image", "resize_mode", "denoising_strength")
INPAINT_FIELDS = (
    "editor",  # the image with the mask painted on it (Gradio's ImageEditor value)
    "mask_upload",
    "resize_mode",
    "denoising_strength",
    "mask_blur",
    "inpainting_fill",
    "inpaint_full_res",
    "inpaint_full_res_padding",
    "inpainting_mask_invert",
)


# Hires fix (txt2img): A1111's accordion. ``denoising_strength`` is the second pass's strength there.
HIRES_FIELDS = (
    "enable_hr",
    "hr_upscaler",
    "hr_second_pass_steps",
    "denoising_strength",
    "hr_scale",
    "hr_resize_x",
    "hr_resize_y",
    "hr_sampler_name",
    "hr_scheduler",
    "hr_prompt",
    "hr_negative_prompt",
)
SAME_SAMPLER, SAME_SCHEDULER = "Use same sampler", "Use same scheduler"  # A1111's first choices, sent as ""
HIRES_DENOISING = 0.7  # A1111's default strength for the second pass

# img2img's "Script" dropdown: A1111 keeps SD upscale there. ``sd_upscale`` holds the chosen script's label.
SCRIPTS = ("None", "SD upscale")
SD_UPSCALE_FIELDS = ("sd_upscale", "sd_upscale_overlap", "sd_upscale_scale", "sd_upscale_upscaler")

# One ControlNet unit's widgets, by the ``ControlNetUnit`` field each fills (``hr_option`` only in txt2img).
UNIT_FIELDS = (
    "enabled",
    "image",
    "module",
    "model",
    "weight",
    "guidance_start",
    "guidance_end",
    "control_mode",
    "resize_mode",
    "pixel_perfect",
    "processor_res",
    "threshold_a",
    "threshold_b",
    "hr_option",
)
# The preprocessor's sliders, whose ranges and meaning follow the chosen preprocessor.
SLIDER_FIELDS = ("processor_res", "threshold_a", "threshold_b")
UNIT_RESIZE_NAMES = list(UNIT_RESIZE_LABELS.values())
CONTROL_MODES = [m.value for m in ControlMode]
HIRES_OPTIONS = [m.value for m in HiresOption]
_UNIT_KEY = re.compile(r"^controlnet_units\[(\d+)\]\.(\w+)$")
_UNIT_REF = re.compile(r"controlnet_units\[(\d+)\]")


def unit_key(index: int, name: str) -> str:
    """The widget name of unit ``index``'s ``name``: its path in the request, as errors name it."""
    return f"controlnet_units[{index}].{name}"


def unit_fields(mode: Mode) -> tuple[str, ...]:
    """A unit's fields in ``mode``: hires fix's option exists only in txt2img."""
    return UNIT_FIELDS if mode is Mode.TXT2IMG else tuple(f for f in UNIT_FIELDS if f != "hr_option")


def fields_for(
    mode: Mode, units: int = 0, extensions: Mapping[str, Sequence[Setting]] | None = None
) -> tuple[str, ...]:
    """The widget names of ``mode``'s form with ``units`` ControlNet units and the per-job arguments of
    ``extensions`` (``argument_specs``), in the order handlers receive them."""
    if mode is Mode.TXT2IMG:
        names = COMMON_FIELDS + HIRES_FIELDS
    elif mode is Mode.IMG2IMG:
        names = COMMON_FIELDS + IMG2IMG_FIELDS + SD_UPSCALE_FIELDS
    else:
        names = COMMON_FIELDS + INPAINT_FIELDS
    names += tuple(unit_key(i, name) for i in range(units) for name in unit_fields(mode))
    return names + tuple(extension_key(n, s.key) for n, specs in (extensions or {}).items() for s in specs)


def build_request(
    mode: Mode,
    values: Mapping[str, Any],
    *,
    checkpoint: str | None = None,
    vae: str | None = None,
    clip_skip: int = 1,
    save_images: bool = True,
    extensions: Mapping[str, Sequence[Setting]] | None = None,
) -> GenerationRequest:
    """The request a tab's widgets describe; ``InvalidRequest`` names the field when a value is wrong.
    ``extensions``: the enabled extensions' per-job arguments (``argument_specs``), read from their widgets."""
    fields: dict[str, Any] = {
        "mode": mode,
        "prompt": values.get("prompt") or "",
        "negative_prompt": values.get("negative_prompt") or "",
        "sampler_name": values.get("sampler_name"),
        "scheduler": values.get("scheduler") or "Automatic",
        "steps": _integer(values, "steps"),
        "width": _integer(values, "width"),
        "height": _integer(values, "height"),
        "n_iter": _integer(values, "n_iter"),
        "batch_size": _integer(values, "batch_size"),
        "cfg_scale": _number(values, "cfg_scale"),
        "seed": _integer(values, "seed", default=-1),
        "checkpoint": checkpoint or None,
        "vae": vae or VAE_AUTOMATIC,
        "clip_skip": int(clip_skip or 1),
        "save_images": save_images,
    }
    if mode is Mode.IMG2IMG:
        fields["init_image"] = _image(values.get("init_image"), "init_image")
    if mode is Mode.INPAINT:
        image, painted = editor_image_and_mask(values.get("editor"))
        uploaded = _image(values.get("mask_upload"), "mask", mask=True)
        fields["init_image"] = image
        fields["mask"] = combine_masks(painted, uploaded, image)
        fields["mask_blur"] = _integer(values, "mask_blur")
        fields["inpainting_fill"] = _label(values, "inpainting_fill", MASKED_CONTENT_LABELS)
        fields["inpaint_full_res"] = values.get("inpaint_full_res") == INPAINT_AREAS[1]
        fields["inpaint_full_res_padding"] = _integer(values, "inpaint_full_res_padding")
        fields["inpainting_mask_invert"] = values.get("inpainting_mask_invert") == MASK_MODES[1]
    if mode is not Mode.TXT2IMG:
        fields["resize_mode"] = _label(values, "resize_mode", RESIZE_MODE_LABELS)
        fields["denoising_strength"] = _number(values, "denoising_strength")
    if mode is Mode.TXT2IMG and values.get("enable_hr"):
        fields.update(hires_fields(values))
    if mode is Mode.IMG2IMG and values.get("sd_upscale") in (True, SCRIPTS[1]):
        fields.update(sd_upscale_fields(values))
    if extensions:
        fields["extension_args"] = extension_args(values, extensions)
    units, indices = control_units(mode, values)
    try:
        return GenerationRequest.build(**fields, controlnet_units=units)
    except InvalidRequest as exc:
        raise InvalidRequest(page_unit_names(exc.field, indices), page_unit_names(exc.message, indices)) from None


def hires_fields(values: Mapping[str, Any]) -> dict[str, Any]:
    """The request's hires fix fields from the accordion (read only when it is enabled, as A1111 does)."""
    return {
        "enable_hr": True,
        "hr_upscaler": values.get("hr_upscaler") or "Latent",
        "hr_second_pass_steps": _integer(values, "hr_second_pass_steps", default=0),
        "denoising_strength": _number(values, "denoising_strength"),
        "hr_scale": _number(values, "hr_scale"),
        "hr_resize_x": _integer(values, "hr_resize_x", default=0),
        "hr_resize_y": _integer(values, "hr_resize_y", default=0),
        "hr_sampler_name": _unless_same(values.get("hr_sampler_name")),
        "hr_scheduler": _unless_same(values.get("hr_scheduler")),
        "hr_prompt": values.get("hr_prompt") or "",
        "hr_negative_prompt": values.get("hr_negative_prompt") or "",
    }


def sd_upscale_fields(values: Mapping[str, Any]) -> dict[str, Any]:
    """SD upscale's fields when the Script dropdown names it; its tiles are the form's width x height."""
    return {
        "sd_upscale": True,
        "sd_upscale_overlap": _integer(values, "sd_upscale_overlap"),
        "sd_upscale_scale": _number(values, "sd_upscale_scale"),
        "sd_upscale_upscaler": values.get("sd_upscale_upscaler") or "Lanczos",
    }


def hires_size_text(width: Any, height: Any, scale: Any, resize_x: Any, resize_y: Any) -> str:
    """What A1111 shows in the hires fix accordion, "from 512x512 to 1024x1024", by the engine's own size rule."""
    try:
        w, h, x, y = int(width), int(height), int(resize_x or 0), int(resize_y or 0)
        target_w, target_h, crop = hires.target_size(w, h, float(scale), x, y)
    except (TypeError, ValueError, ZeroDivisionError):
        return ""
    return f"from {w}x{h} to {target_w}x{target_h}" + (" (cropped to fill)" if crop else "")


# -- ControlNet units ------------------------------------------------------------------------------------------


def unit_values(values: Mapping[str, Any], index: int) -> dict[str, Any]:
    """Unit ``index``'s widget values as ``{field: value}``."""
    found: dict[str, Any] = {}
    for key, value in values.items():
        match = _UNIT_KEY.match(str(key))
        if match and int(match.group(1)) == index:
            found[match.group(2)] = value
    return found


def unit_count(values: Mapping[str, Any]) -> int:
    """How many units the form has (the preference the page was built with)."""
    indices = [int(m.group(1)) for m in (_UNIT_KEY.match(str(k)) for k in values) if m]
    return max(indices) + 1 if indices else 0


def enabled_units(values: Mapping[str, Any]) -> list[int]:
    """The page numbers of the enabled units: the request's unit *i* is the page's ``enabled_units(values)[i]``."""
    return [i for i in range(unit_count(values)) if values.get(unit_key(i, "enabled"))]


def control_units(mode: Mode, values: Mapping[str, Any]) -> tuple[list[ControlNetUnit], list[int]]:
    """The enabled units (only those go into the request, so a disabled unit's leftovers never block a job) and
    their numbers on the page, to name them in errors (the request counts enabled units only)."""
    indices = enabled_units(values)
    units = [control_unit(unit_values(values, i), f"controlnet_units[{i}]", mode) for i in indices]
    return units, indices


def control_unit(raw: Mapping[str, Any], where: str, mode: Mode = Mode.TXT2IMG) -> ControlNetUnit:
    """One unit from its widgets; ``where`` (``controlnet_units[0]``) prefixes the field a bad value names.

    A preprocessor without a resolution or a threshold sends -1 there (the extension's "not used"), so the hidden
    slider's leftover never reaches the infotext. Ranges are checked by the request (or the preview), not here.
    """

    def number(name: str) -> Any:
        value = raw.get(name)
        if value is None or value == "":
            raise InvalidRequest(f"{where}.{name}", "a number is required")
        return value  # ControlNetUnit makes a whole float an int

    module = str(raw.get("module") or "none")
    try:
        pre: preprocessors.Preprocessor | None = preprocessors.find(module)
    except InvalidRequest:
        pre = None  # the request names the unknown module
    fields: dict[str, Any] = {
        "enabled": bool(raw.get("enabled", True)),
        "image": _image(raw.get("image"), f"{where}.image"),
        "module": module,
        "model": raw.get("model") or NO_MODEL,
        "weight": number("weight"),
        "guidance_start": number("guidance_start"),
        "guidance_end": number("guidance_end"),
        "control_mode": raw.get("control_mode") or ControlMode.BALANCED,
        "resize_mode": raw.get("resize_mode") or UNIT_RESIZE_NAMES[1],
        "pixel_perfect": bool(raw.get("pixel_perfect")),
        "processor_res": number("processor_res") if pre is None or pre.uses_resolution else -1,
        "threshold_a": number("threshold_a") if pre is None or pre.threshold_a else -1,
        "threshold_b": number("threshold_b") if pre is None or pre.threshold_b else -1,
    }
    if mode is Mode.TXT2IMG:
        fields["hr_option"] = raw.get("hr_option") or HiresOption.BOTH
    try:
        return ControlNetUnit(**fields)
    except ValidationError as exc:
        raise from_validation_error(exc, where, "unit") from None


def control_inputs(mode: Mode, values: Mapping[str, Any], width: int, height: int) -> tuple[Any, Any, Any]:
    """(image, mask, crop) a unit without its own image uses, from the tab's widgets: img2img's input, or
    inpaint's with its mask and, for "Only masked", the area the job will denoise (``detect.fallback_inputs``, the
    engine's own rule). txt2img has none."""
    if mode is Mode.IMG2IMG:
        return _image(values.get("init_image"), "init_image"), None, None
    if mode is not Mode.INPAINT:
        return None, None, None
    image, painted = editor_image_and_mask(values.get("editor"))
    mask = combine_masks(painted, _image(values.get("mask_upload"), "mask", mask=True), image)
    return fallback_inputs(
        image,
        mask,
        invert=values.get("inpainting_mask_invert") == MASK_MODES[1],
        only_masked=values.get("inpaint_full_res") == INPAINT_AREAS[1],
        padding=_integer(values, "inpaint_full_res_padding"),
        blur=_integer(values, "mask_blur"),
        width=width,
        height=height,
    )


def page_unit_names(text: str, indices: Sequence[int]) -> str:
    """``text`` with the request's unit numbers (``controlnet_units[0]`` is the first *enabled* unit) turned into the
    page's, so a message about the only enabled unit, Unit 2, says ``controlnet_units[2]``."""

    def swap(match: re.Match[str]) -> str:
        number = int(match.group(1))
        return f"controlnet_units[{indices[number]}]" if number < len(indices) else match.group(0)

    return _UNIT_REF.sub(swap, text)


def editor_image_and_mask(value: Any) -> tuple[Image.Image | None, Image.Image | None]:
    """The photo and the painted mask from an ImageEditor value (``background``, ``layers``, ``composite``).

    Whatever the brush touched, in any colour, is masked: the mask is the union of the layers' alpha. No
    strokes gives no mask, so an uploaded mask can stand alone.
    """
    if not value:
        return None, None
    background = value.get("background") if isinstance(value, Mapping) else value
    image = _image(background, "init_image")
    if image is None:
        return None, None
    painted = None
    for layer in value.get("layers") or [] if isinstance(value, Mapping) else []:
        layer_image = _as_pil(layer)
        if layer_image is None:
            continue
        alpha = np.asarray(layer_image.convert("RGBA").resize(image.size, Image.Resampling.NEAREST))[..., 3] > 0
        painted = alpha if painted is None else painted | alpha
    if painted is None or not painted.any():
        return image, None
    return image, Image.fromarray((painted * 255).astype(np.uint8), "L")


def combine_masks(
    painted: Image.Image | None, uploaded: Image.Image | None, image: Image.Image | None
) -> Image.Image | None:
    """Painted strokes and an uploaded mask together (their union); an upload of another size is fitted to the
    image, as A1111 does, since users often export masks at a different resolution."""
    if uploaded is not None and image is not None and uploaded.size != image.size:
        uploaded = uploaded.resize(image.size, Image.Resampling.NEAREST)
    if painted is None:
        return uploaded
    if uploaded is None:
        return painted
    union = np.maximum(np.asarray(painted.convert("L")), np.asarray(uploaded.convert("L")))
    return Image.fromarray(union, "L")


def values_from_infotext(parsed: Mapping[str, Any], units: int = 0) -> dict[str, Any]:
    """Widget values for the txt2img form from a parsed infotext (``parse_infotext``; PNG Info's and History's "send
    to txt2img"): the parameters, hires fix, and the first ``units`` ControlNet units (enabled; the others disabled,
    since the picture was made without them)."""
    fields = request_fields_from_infotext(dict(parsed))
    # The form's own fields, less the batch (a picture's parameters, not how many to make), plus those an
    # img2img or inpaint text carries.
    names = set(COMMON_FIELDS) - {"n_iter", "batch_size"} | {
        "denoising_strength",
        "mask_blur",
        "inpaint_full_res_padding",
    }
    values = {k: v for k, v in fields.items() if k in names}
    if "inpainting_fill" in fields and isinstance(fields["inpainting_fill"], MaskedContent):
        values["inpainting_fill"] = MASKED_CONTENT_LABELS[fields["inpainting_fill"]]
    if "inpaint_full_res" in fields:
        values["inpaint_full_res"] = INPAINT_AREAS[int(bool(fields["inpaint_full_res"]))]
    if "inpainting_mask_invert" in fields:
        values["inpainting_mask_invert"] = MASK_MODES[int(bool(fields["inpainting_mask_invert"]))]
    if "clip_skip" in fields:
        values["clip_skip"] = fields["clip_skip"]
    if "checkpoint" in fields:
        values["checkpoint"] = fields["checkpoint"]
    values.update(_hires_values(fields))
    if units:
        found = units_from_infotext(dict(parsed))[:units]
        for index, unit in enumerate(found):
            values.update({unit_key(index, name): value for name, value in unit_widget_values(unit).items()})
        for index in range(len(found), units):  # the picture was made without them
            values[unit_key(index, "enabled")] = False
    return values


def _hires_values(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The hires fix widgets for an infotext: on with what it names (A1111's "same" choices and empty prompts for
    what it leaves out), off when it has no ``Hires`` keys, as A1111's paste does."""
    if not fields.get("enable_hr"):
        return {"enable_hr": False}
    values: dict[str, Any] = {
        "hr_second_pass_steps": 0,
        "hr_resize_x": 0,
        "hr_resize_y": 0,
        "hr_prompt": "",
        "hr_negative_prompt": "",
    }
    values.update({name: fields[name] for name in HIRES_FIELDS if name in fields})
    values["hr_sampler_name"] = _same_label(fields.get("hr_sampler_name"), SAME_SAMPLER)
    values["hr_scheduler"] = _same_label(fields.get("hr_scheduler"), SAME_SCHEDULER)
    return values


def unit_widget_values(fields: Mapping[str, Any]) -> dict[str, Any]:
    """A unit's widget values from its infotext fields (``units_from_infotext``), enabled: labels as the radios
    show them, the extension's -1 ("default") as the value it stands for (the unit's own rules). Unreadable labels
    and an unknown preprocessor's values pass through, for the request to name. The image cannot come back."""
    values: dict[str, Any] = {"enabled": True}
    given = {name: fields[name] for name in ("module", *SLIDER_FIELDS) if name in fields}
    unit = ControlNetUnit(**{**given, "module": str(given.get("module", "none"))})
    try:
        values["module"] = unit.preprocessor.name
        values["threshold_a"], values["threshold_b"] = unit.thresholds()
    except InvalidRequest:  # not a preprocessor Easel knows
        values["module"] = unit.module
        values["threshold_a"], values["threshold_b"] = unit.threshold_a, unit.threshold_b
    values["processor_res"] = unit.resolution(0, 0, None)  # no image: its own setting, -1 the default
    for name in ("model", "weight", "guidance_start", "guidance_end", "pixel_perfect"):
        if name in fields:
            values[name] = fields[name]
    if "resize_mode" in fields:
        values["resize_mode"] = _unit_label(fields["resize_mode"], "resize_mode", UNIT_RESIZE_LABELS)
    if "control_mode" in fields:
        values["control_mode"] = _unit_label(fields["control_mode"], "control_mode", None)
    return values


def _unit_label(value: Any, name: str, labels: Mapping[Any, str] | None) -> Any:
    """The radio label for an infotext value, read by the unit's own rules (aliases, positions)."""
    try:
        member = getattr(ControlNetUnit(**{name: value}), name)
    except ValidationError:
        return value
    return labels[member] if labels is not None else member.value


def _same_label(value: Any, same: str) -> Any:
    return same if value is None or value in hires.SAME else value


def _unless_same(value: Any) -> str:
    """A1111's "Use same sampler"/"Use same scheduler" is the request's "" (the first pass's)."""
    return "" if value is None or value in hires.SAME else str(value)


# -- extensions: per-job arguments and saved settings -------------------------------------------------------------


def extension_key(name: str, key: str) -> str:
    """The widget name of extension ``name``'s per-job argument ``key``: its path in the request, as the plugin
    host's errors name it (``extension_args.latent-mirror.strength``)."""
    return f"extension_args.{name}.{key}"


def argument_specs(plugins: Any) -> dict[str, list[Setting]]:
    """The enabled extensions that take per-job arguments, by name, in load order: what the generation tabs render
    and send. ``plugins``: the service's ``PluginHost``, or None when extensions are off."""
    if plugins is None:
        return {}
    return {ext.name: list(ext.arguments) for ext in plugins.active if ext.arguments}


def setting_value(setting: Setting, value: Any, where: str) -> Any:
    """A widget's value for the plugin host: an emptied number box is refused naming ``where``, an emptied text box
    is "", an unset checkbox is off. Kinds (a slider's 6.0 for an int setting), ranges and choices are the host's
    (``manager.check_value``), whose messages name ``where`` too."""
    if setting.kind in ("int", "float") and (value is None or value == ""):
        raise InvalidRequest(where, "a number is required")
    if setting.kind == "bool":
        return bool(value)
    if setting.kind == "str" and value is None:
        return ""
    return value


def extension_args(values: Mapping[str, Any], extensions: Mapping[str, Sequence[Setting]]) -> dict[str, dict[str, Any]]:
    """The request's ``extension_args`` from the form: every argument of every extension in ``extensions`` whose
    widget is in ``values`` (all of them on the page: sent whether or not they differ from the defaults)."""
    found: dict[str, dict[str, Any]] = {}
    for name, specs in extensions.items():
        args = {
            s.key: setting_value(s, values[extension_key(name, s.key)], extension_key(name, s.key))
            for s in specs
            if extension_key(name, s.key) in values
        }
        if args:
            found[name] = args
    return found


def settings_values(name: str, specs: Sequence[Setting], values: Sequence[Any]) -> dict[str, Any]:
    """An extension's saved-settings form (``values`` in ``specs`` order) as ``{key: value}`` for
    ``PluginHost.update_settings``; errors name ``name.key``, as the host's do."""
    return {s.key: setting_value(s, v, f"{name}.{s.key}") for s, v in zip(specs, values, strict=True)}


def values_from_extension_args(read: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Widget values from the arguments extensions read back from an infotext (``PluginHost.infotext_read``);
    arguments an extension does not read back are not here, so their widgets keep their values."""
    return {extension_key(name, key): value for name, args in read.items() for key, value in args.items()}


def seed_of(infotext: str) -> int | None:
    """The seed an infotext records (♻️ reuses the last image's)."""
    seed = parse_infotext(infotext).get("Seed") if infotext else None
    return seed if isinstance(seed, int) else None


# -- loose widget values -----------------------------------------------------------------------------------


def _integer(values: Mapping[str, Any], name: str, default: int | None = None) -> Any:
    value = values.get(name)
    if value is None or value == "":
        if default is not None:
            return default
        raise InvalidRequest(name, "a number is required")
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value  # anything else: the request names the field and the range


def _number(values: Mapping[str, Any], name: str) -> Any:
    value = values.get(name)
    if value is None or value == "":
        raise InvalidRequest(name, "a number is required")
    return value


def _label(values: Mapping[str, Any], name: str, labels: Mapping[Any, str]) -> Any:
    value = values.get(name)
    for member, label in labels.items():
        if value == label:
            return member
    allowed = ", ".join(labels.values())
    raise InvalidRequest(name, f"must be one of {allowed}, got {value!r}")


def _as_pil(value: Any) -> Image.Image | None:
    if value is None:
        return None
    if isinstance(value, Image.Image):
        return value
    if isinstance(value, np.ndarray):
        return Image.fromarray(value)
    return None


def _image(value: Any, field: str, *, mask: bool = False) -> Image.Image | None:
    """Gradio hands images as PIL, numpy or a file path; all go through the one image decoder."""
    if value is None or value == "":
        return None
    mode = "L" if mask else "RGB"
    pil = _as_pil(value)
    if pil is not None:
        return decode_image(pil, field, mode=mode)
    if isinstance(value, (str, Path)):  # a file Gradio saved from an upload, in its own cache
        return decode_image(Path(value), field, mode=mode)
    raise InvalidRequest(field, f"expected an image, got {type(value).__name__}")
