"""Resize modes, masks, crop regions and paste-back: the pixel rules behind img2img and inpaint."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from webui.pipeline import imageops
from webui.types import ResizeMode


def _gradient(w: int, h: int) -> Image.Image:
    x = np.linspace(0, 255, w, dtype=np.uint8)[None, :, None].repeat(h, 0)
    y = np.linspace(0, 255, h, dtype=np.uint8)[:, None, None].repeat(w, 1)
    return Image.fromarray(np.concatenate([x, y, 255 - x], axis=2))


@pytest.mark.parametrize("mode", list(ResizeMode))
def test_resize_modes_give_the_requested_size(mode):
    out = imageops.resize_image(_gradient(100, 50), 64, 64, mode)
    assert out.size == (64, 64)


def test_crop_and_resize_keeps_the_centre_and_resize_and_fill_keeps_everything():
    image = _gradient(200, 100)
    cropped = np.asarray(imageops.resize_image(image, 64, 64, ResizeMode.CROP_AND_RESIZE))
    # The centre crop drops the left and right quarters: red channel spans only the middle of the range.
    assert 40 < cropped[32, 0, 0] < 90 and 165 < cropped[32, -1, 0] < 215
    filled = np.asarray(imageops.resize_image(image, 64, 64, ResizeMode.RESIZE_AND_FILL))
    assert filled[32, 0, 0] < 15 and filled[32, -1, 0] > 240  # the whole width is visible
    assert (filled[0] == filled[15]).all()  # the empty band is filled from the edge row, not black


def test_prepare_mask_inverts_binarises_and_grows_under_blur():
    mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).rectangle((16, 16, 47, 47), fill=200)
    hard, _ = imageops.prepare_mask(mask, invert=False, blur=0)
    assert set(np.unique(np.asarray(hard))) == {0, 255}
    hard_inv, _ = imageops.prepare_mask(mask, invert=True, blur=0)
    assert np.asarray(hard_inv)[0, 0] == 255 and np.asarray(hard_inv)[32, 32] == 0
    hard_blur, soft_blur = imageops.prepare_mask(mask, invert=False, blur=4)
    soft_arr, hard_arr = np.asarray(soft_blur), np.asarray(hard_blur)
    assert 0 < soft_arr[32, 14] < 255  # blurred edge
    assert ((soft_arr > 0) <= (hard_arr > 0)).all()  # every pasted pixel was denoised


def test_paste_back_keeps_unmasked_pixels_byte_identical():
    original = _gradient(64, 64)
    generated = Image.new("RGB", (64, 64), (7, 200, 9))
    mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).ellipse((20, 20, 44, 44), fill=255)
    _, soft = imageops.prepare_mask(mask, invert=False, blur=3)
    out = np.asarray(imageops.paste_back(original, generated, soft))
    outside = np.asarray(soft) == 0
    assert (out[outside] == np.asarray(original)[outside]).all()
    assert (out[32, 32] == (7, 200, 9)).all()


def test_masked_region_pads_matches_aspect_and_stays_inside():
    mask = Image.new("L", (200, 100), 0)
    ImageDraw.Draw(mask).rectangle((150, 40, 169, 59), fill=255)
    region = imageops.masked_region(mask, padding=10, width=64, height=64)
    assert region is not None
    w, h = region.size
    assert abs(w - h) <= 1  # square like 64x64
    assert region.left <= 140 and region.right >= 180 and region.right <= 200
    assert imageops.masked_region(Image.new("L", (10, 10), 0), 4, 8, 8) is None


def test_fill_replaces_masked_pixels_with_surrounding_colour():
    image = Image.new("RGB", (64, 64), (30, 160, 90))
    ImageDraw.Draw(image).rectangle((20, 20, 43, 43), fill=(255, 0, 255))
    mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).rectangle((20, 20, 43, 43), fill=255)
    filled = np.asarray(imageops.fill_masked(image, mask)).astype(int)
    assert np.abs(filled[32, 32] - (30, 160, 90)).max() <= 2
    assert (filled[0, 0] == (30, 160, 90)).all()
