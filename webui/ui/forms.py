"""Widget values ⇄ requests, with no Gradio in sight: what the generation tabs send and what fills them back.

The page builds one form per mode from ``fields_for(mode)``; its handlers hand the widget values here as a
``{name: value}`` dict, so every rule (labels to enums, mask painting to a mask image, infotext to widget
values) is a plain function the unit tests call directly.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from webui.errors import InvalidRequest
from webui.images import decode_image
from webui.outputs.infotext import parse_infotext, request_fields_from_infotext
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


def fields_for(mode: Mode) -> tuple[str, ...]:
    if mode is Mode.TXT2IMG:
        return COMMON_FIELDS
    if mode is Mode.IMG2IMG:
        return COMMON_FIELDS + IMG2IMG_FIELDS
    return COMMON_FIELDS + INPAINT_FIELDS


def build_request(
    mode: Mode,
    values: Mapping[str, Any],
    *,
    checkpoint: str | None = None,
    vae: str | None = None,
    clip_skip: int = 1,
    save_images: bool = True,
) -> GenerationRequest:
    """The request a tab's widgets describe; ``InvalidRequest`` names the field when a value is wrong."""
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
    return GenerationRequest.build(**fields)


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


def values_from_infotext(text: str) -> dict[str, Any]:
    """Widget values for the txt2img form from an infotext (PNG Info's and History's "send to txt2img")."""
    fields = request_fields_from_infotext(parse_infotext(text))
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
    return values


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
