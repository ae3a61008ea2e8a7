"""From a unit's image to the map its ControlNet sees, at the size of the image being made (NumPy/OpenCV only).

The same function serves generation, the ControlNet tab's preview and ``/controlnet/detect``, so what a user
previews is exactly what conditions the image. No torch here: it may run on any thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps

from webui.choices import ResizeMode
from webui.controlnet import preprocessors
from webui.controlnet.units import ControlNetUnit
from webui.errors import InvalidRequest
from webui.pipeline import imageops

Box = tuple[int, int, int, int]


@dataclass
class DetectedMap:
    """``preview``: the map as a picture (what the extension shows and saves); ``hint``: the ControlNet's
    input as float32 HxWxC in [0, 1], with -1 on pixels an inpaint ControlNet must fill."""

    preview: np.ndarray
    hint: np.ndarray
    resolution: int

    @property
    def image(self) -> Image.Image:
        return Image.fromarray(self.preview)


def rgb_array(image: Image.Image) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(image.convert("RGB"), dtype=np.uint8))


def _colour_count(array: np.ndarray, limit: int = 256) -> int:
    """Distinct colours, counted on a sample (exactness does not matter above ``limit``)."""
    flat = array.reshape(-1, array.shape[2]) if array.ndim == 3 else array.reshape(-1, 1)
    flat = flat[:: max(1, len(flat) // 65536)].astype(np.uint32)
    packed = flat[:, 0] << 16 | flat[:, 1 % flat.shape[1]] << 8 | flat[:, 2 % flat.shape[1]]
    return min(limit, len(np.unique(packed)))


def _grey(array: np.ndarray) -> bool:
    """Whether a map is shades of grey (black and white edges), not coloured (a two-colour palette map)."""
    if array.ndim == 2:
        return True
    sample = array[:: max(1, array.shape[0] // 64), :: max(1, array.shape[1] // 64)]
    return bool((sample[..., 0] == sample[..., 1]).all() and (sample[..., 1] == sample[..., 2]).all())


def _resample(array: np.ndarray, new_w: int, new_h: int, nearest: bool) -> np.ndarray:
    """Resize a map so it keeps its meaning: a black-and-white map (edges, scribbles, thresholds) stays black and
    white with its thin lines kept (resampled, then split again at Otsu's threshold); a map of few flat colours
    (segmentation, palettes) is resampled nearest so no in-between colours appear; anything else with area
    (down) or cubic (up) filtering."""
    h, w = array.shape[:2]
    new_w, new_h = max(1, new_w), max(1, new_h)
    if nearest:
        out = cv2.resize(array, (new_w, new_h), interpolation=cv2.INTER_NEAREST)
        return out.reshape(new_h, new_w, *array.shape[2:])
    colours = _colour_count(array)
    down = new_w * new_h < w * h
    flag = cv2.INTER_NEAREST if 2 < colours < 200 else (cv2.INTER_AREA if down else cv2.INTER_CUBIC)
    out = cv2.resize(array, (new_w, new_h), interpolation=flag).reshape(new_h, new_w, *array.shape[2:])
    if colours == 2 and array.min() < 16 and array.max() > 240 and _grey(array):
        gray = out.mean(axis=2).astype(np.uint8) if out.ndim == 3 else out
        _, binary = cv2.threshold(gray, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        out = np.repeat(binary[:, :, None], 3, axis=2) if array.ndim == 3 else binary
    return np.ascontiguousarray(out)


def fit(array: np.ndarray, width: int, height: int, mode: ResizeMode, *, nearest: bool = False) -> np.ndarray:
    """Fit a map to the output size by the unit's resize mode (see ``_resample`` for how each kind of map is
    resampled; masks nearest). "Resize and Fill" pads with zeros, which every ControlNet reads as no signal."""
    h, w = array.shape[:2]
    if (w, h) == (width, height):
        return array

    def resized(new_w: int, new_h: int) -> np.ndarray:
        return _resample(array, new_w, new_h, nearest)

    if mode is ResizeMode.JUST_RESIZE:
        return resized(width, height)
    if mode is ResizeMode.CROP_AND_RESIZE:
        scale = max(width / w, height / h)
        big = resized(max(width, round(w * scale)), max(height, round(h * scale)))
        top, left = (big.shape[0] - height) // 2, (big.shape[1] - width) // 2
        return np.ascontiguousarray(big[top : top + height, left : left + width])
    scale = min(width / w, height / h)
    small = resized(round(w * scale), round(h * scale))
    canvas = np.zeros((height, width, *array.shape[2:]), dtype=array.dtype)
    top, left = (height - small.shape[0]) // 2, (width - small.shape[1]) // 2
    canvas[top : top + small.shape[0], left : left + small.shape[1]] = small
    return canvas


def _crop_to(array: np.ndarray, size: tuple[int, int], box: Box, *, nearest: bool = False) -> np.ndarray:
    """The part of ``array`` (stretched to ``size``, the inpaint input's) inside ``box``: "only masked"."""
    full = fit(array, size[0], size[1], ResizeMode.JUST_RESIZE, nearest=nearest)
    left, top, right, bottom = box
    return np.ascontiguousarray(full[top:bottom, left:right])


def fallback_inputs(
    image: Image.Image | None,
    mask: Image.Image | None,
    *,
    invert: bool,
    only_masked: bool,
    padding: int,
    blur: int,
    width: int,
    height: int,
) -> tuple[Image.Image | None, Image.Image | None, tuple[tuple[int, int], Box] | None]:
    """What a unit without an image of its own uses, as the extension does: (the img2img/inpaint input, the
    inpaint mask as painted or inverted, and for "only masked" inpaint (input size, crop box) of the area the job
    denoises). The engine and the page's preview both call this, so a preview shows the job's map."""
    if mask is None:
        return image, None, None
    crop = None
    if only_masked and image is not None:
        hard, _soft = imageops.prepare_mask(mask, invert=invert, blur=blur)
        region = imageops.masked_region(hard, padding, width, height)
        crop = (image.size, region.box) if region is not None else None
    return image, ImageOps.invert(mask.convert("L")) if invert else mask, crop


def detect(
    unit: ControlNetUnit,
    *,
    width: int,
    height: int,
    where: str,
    fallback_image: Image.Image | None = None,
    fallback_mask: Image.Image | None = None,
    crop: tuple[tuple[int, int], Box] | None = None,
    seed: int = 0,
    annotators: Path | None = None,
) -> DetectedMap:
    """Run the unit's preprocessor and fit the result to ``width`` x ``height``.

    ``fallback_image``/``fallback_mask`` are the img2img or inpaint input ("use the img2img input" when the unit
    has no image); ``crop`` is (input size, box) when inpaint works "only masked"; ``where`` names the unit in
    errors (``controlnet_units[0]``).
    """
    source = unit.image or fallback_image
    if source is None:
        raise InvalidRequest(f"{where}.image", "no control image (upload one, or use img2img/inpaint's input)")
    array = rgb_array(source)
    resolution = unit.resolution(width, height, source.size)
    a, b = unit.thresholds()
    pre = unit.preprocessor
    mask = None
    if pre.needs_mask:
        mask_image = unit.mask or fallback_mask
        if mask_image is None:
            raise InvalidRequest(f"{where}.mask", f"preprocessor '{pre.name}' needs a mask (white = repaint)")
        mask = np.asarray(mask_image.convert("L").resize(source.size, Image.Resampling.NEAREST))
    try:
        preview = preprocessors.run(
            pre.name,
            array,
            resolution=resolution,
            threshold_a=a,
            threshold_b=b,
            mask=mask,
            seed=seed,
            annotators=annotators,
        )
    except InvalidRequest as exc:
        raise InvalidRequest(f"{where}.{exc.field}", exc.message) from None
    masked = None
    if mask is not None:
        masked = cv2.resize(mask, (preview.shape[1], preview.shape[0]), interpolation=cv2.INTER_NEAREST) > 127
    if crop is not None and unit.inpaint_crop_input_image:
        size, box = crop
        preview = _crop_to(preview, size, box)
        if masked is not None:
            masked = _crop_to(masked.astype(np.uint8), size, box, nearest=True) > 0
    preview = fit(preview, width, height, unit.resize_mode)
    hint = preview.astype(np.float32) / 255.0
    if masked is not None:
        masked = fit(masked.astype(np.uint8), width, height, unit.resize_mode, nearest=True) > 0
        hint[masked] = -1.0
    return DetectedMap(preview=preview, hint=hint, resolution=resolution if pre.uses_resolution else -1)
