"""Pixel work around the diffusion run: A1111 resize modes, mask preparation, masked-content fill, paste-back.

Kept free of torch so it is cheap to test and so the inpaint guarantees (unmasked pixels byte-identical)
are decided here, in plain arrays, not inside a pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter, ImageOps

from webui.choices import ResizeMode

LANCZOS = Image.Resampling.LANCZOS


def resize_image(image: Image.Image, width: int, height: int, mode: ResizeMode) -> Image.Image:
    """Fit ``image`` to ``width`` x ``height`` the way A1111's resize modes do."""
    if image.size == (width, height):
        return image.copy()
    if mode is ResizeMode.JUST_RESIZE:
        return image.resize((width, height), LANCZOS)
    src_w, src_h = image.size
    if mode is ResizeMode.CROP_AND_RESIZE:
        scale = max(width / src_w, height / src_h)
        new_w, new_h = max(width, round(src_w * scale)), max(height, round(src_h * scale))
        resized = image.resize((new_w, new_h), LANCZOS)
        left, top = (new_w - width) // 2, (new_h - height) // 2
        return resized.crop((left, top, left + width, top + height))
    # Resize and fill: fit inside, then stretch the edge rows/columns into the empty bands.
    scale = min(width / src_w, height / src_h)
    new_w, new_h = max(1, round(src_w * scale)), max(1, round(src_h * scale))
    resized = image.resize((new_w, new_h), LANCZOS)
    canvas = Image.new(image.mode, (width, height))
    left, top = (width - new_w) // 2, (height - new_h) // 2
    canvas.paste(resized, (left, top))
    if new_w < width:
        canvas.paste(resized.crop((0, 0, 1, new_h)).resize((left, new_h)), (0, top))
        right = width - left - new_w
        canvas.paste(resized.crop((new_w - 1, 0, new_w, new_h)).resize((right, new_h)), (left + new_w, top))
    if new_h < height:
        row = canvas.crop((0, top, width, top + 1))
        canvas.paste(row.resize((width, top)), (0, 0))
        bottom = height - top - new_h
        last = canvas.crop((0, top + new_h - 1, width, top + new_h))
        canvas.paste(last.resize((width, bottom)), (0, top + new_h))
    return canvas


def prepare_mask(mask: Image.Image, *, invert: bool, blur: int) -> tuple[Image.Image, Image.Image]:
    """Return (hard mask, soft mask): the hard one drives denoising, the blurred one the paste-back alpha."""
    hard = mask.convert("L")
    if invert:
        hard = ImageOps.invert(hard)
    hard = hard.point(lambda v: 255 if v >= 128 else 0)
    soft = hard.filter(ImageFilter.GaussianBlur(blur)) if blur > 0 else hard.copy()
    # Blur spreads the mask outwards too, so the hard mask grows to cover every pixel the soft one touches:
    # what is pasted back with any weight has been denoised.
    if blur > 0:
        hard = soft.point(lambda v: 255 if v > 0 else 0)
    return hard, soft


@dataclass(frozen=True)
class CropRegion:
    left: int
    top: int
    right: int
    bottom: int

    @property
    def box(self) -> tuple[int, int, int, int]:
        return (self.left, self.top, self.right, self.bottom)

    @property
    def size(self) -> tuple[int, int]:
        return (self.right - self.left, self.bottom - self.top)


def masked_region(mask: Image.Image, padding: int, width: int, height: int) -> CropRegion | None:
    """Bounding box of the mask plus padding, grown to the target aspect ratio and kept inside the image.

    This is "Inpaint area: Only masked": the crop is denoised at the full ``width`` x ``height`` so a small
    masked area gets all the resolution.
    """
    bbox = mask.getbbox()
    if bbox is None:
        return None
    img_w, img_h = mask.size
    left, top, right, bottom = bbox
    left, top = max(0, left - padding), max(0, top - padding)
    right, bottom = min(img_w, right + padding), min(img_h, bottom + padding)
    target = width / height
    cur_w, cur_h = right - left, bottom - top
    if cur_w / cur_h < target:
        grow = round(cur_h * target) - cur_w
        left, right = left - grow // 2, right + grow - grow // 2
        if left < 0:
            right, left = right - left, 0
        if right > img_w:
            left, right = max(0, left - (right - img_w)), img_w
    else:
        grow = round(cur_w / target) - cur_h
        top, bottom = top - grow // 2, bottom + grow - grow // 2
        if top < 0:
            bottom, top = bottom - top, 0
        if bottom > img_h:
            top, bottom = max(0, top - (bottom - img_h)), img_h
    return CropRegion(left, top, right, bottom)


def fill_masked(image: Image.Image, mask: Image.Image) -> Image.Image:
    """ "Masked content: fill": replace masked pixels with colours diffused in from the unmasked surroundings."""
    from scipy.ndimage import gaussian_filter

    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    keep = (np.asarray(mask.convert("L")) < 128).astype(np.float32)
    if keep.sum() == 0:
        return image.copy()
    out = pixels.copy()
    unknown = keep == 0
    for sigma in (64, 16, 4, 1):
        weight = gaussian_filter(keep, sigma)
        valid = weight > 1e-4
        for c in range(3):
            spread = gaussian_filter(pixels[..., c] * keep, sigma)
            channel = out[..., c]
            fill_here = unknown & valid
            channel[fill_here] = spread[fill_here] / weight[fill_here]
    return Image.fromarray(np.clip(out + 0.5, 0, 255).astype(np.uint8))


def paste_back(original: Image.Image, generated: Image.Image, soft_mask: Image.Image) -> Image.Image:
    """Blend ``generated`` into ``original`` by the soft mask; where the mask is 0 the original bytes are kept."""
    orig = np.asarray(original.convert("RGB"))
    gen = np.asarray(generated.convert("RGB").resize(original.size, LANCZOS))
    alpha = np.asarray(soft_mask.convert("L").resize(original.size), dtype=np.float32)[..., None] / 255.0
    blended = np.clip(orig * (1.0 - alpha) + gen * alpha + 0.5, 0, 255).astype(np.uint8)
    return Image.fromarray(np.where(alpha > 0, blended, orig))


def paste_region(original: Image.Image, patch: Image.Image, region: CropRegion, soft_mask: Image.Image) -> Image.Image:
    """Put a patch denoised at another resolution back into its crop region, blended by the soft mask."""
    placed = original.convert("RGB").copy()
    placed.paste(patch.convert("RGB").resize(region.size, LANCZOS), region.box[:2])
    return paste_back(original, placed, soft_mask)
