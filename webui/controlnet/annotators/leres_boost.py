"""LeReS++ (``depth_leres++``): LeReS's estimates merged by the boosting network of ``latest_net_G.pth``.

"Boosting Monocular Depth Estimation Models to High-Resolution via Content-Adaptive Multi-Resolution Merging"
(Miangoleh, Dille et al., SFU, CVPR 2021), as thygate's depth-map script implements it and the extension copies it
(``annotator/leres/leres/depthmap.py``, ``estimateboost`` with LeReS, whose receptive field is taken as 448 px):

1. The whole image's working resolution R_x: the largest (in steps of 224 px, up to 1600 px and three times the
   image) at which at most 20% of the pixels lie farther than a receptive field from an edge of the gradient map.
2. A "double estimate": LeReS at 448 px and at R_x, each resized to 1024x1024, the two merged by the pix2pix U-Net
   (low-resolution estimate first), its tanh output mapped to [0, 1] and stretched to fill it.
3. If the image's long side (the extension passes it as the maximum resolution) is under R_x, that is the result.
   Otherwise the image is scaled so its long side is 2 R_x over a density factor, cut into 896 px patches every
   336 px, the patches with less than the image's gradient density are dropped, the others grown while they
   stay as dense, and each (largest first) gets its own double estimate at 448 and 896 px, merged with the whole
   estimate's same region, fitted to its values by a straight line and blended into the whole with a Gaussian mask.

The merging network is pix2pix's ``unet_1024`` with no normalisation: ten levels of 4x4 stride-2 convolutions without
biases (only the outermost transposed convolution has one), LeakyReLU(0.2) down, ReLU up, the skip connections
holding the LeakyReLU'd input as the original's in-place activation leaves them. Two channels in, one out, on
1024x1024; tensors ``model.model.1.model.3...`` (21).

One deviation: for an image whose long side is under 150 px, the original's resolution search has no step to take
and fails on an unset variable; here the search's starting grid is used for the density factor.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np
import torch
from torch import nn

from webui.controlnet.annotators.common import Array
from webui.controlnet.annotators.leres import LeReS, estimate

RECEPTIVE_FIELD = 448  # LeReS's, in pixels (net_receptive_field_size)
MERGE_SIZE = 1024  # the merging network's input size (pix2pixsize)
WHOLE_SIZE_LIMIT = 1600  # R_max: the largest whole-image resolution (whole_size_threshold)
_SPEED_SCALE = 32  # the resolution search works on a grid 32 times coarser


class _Level(nn.Module):
    """One U-Net level. ``model``'s indices are the file's: outermost ``[down, inner, relu, up, tanh]``, innermost
    ``[leaky, down, relu, up, (norm)]``, the others ``[leaky, down, (norm), inner, relu, up, (norm)]`` with the norms
    identities (no tensors)."""

    def __init__(self, outer: int, inner: int, inside: _Level | None = None, channels_in: int | None = None) -> None:
        super().__init__()
        self.outermost = channels_in is not None
        down = nn.Conv2d(channels_in or outer, inner, 4, stride=2, padding=1, bias=False)
        if self.outermost:
            assert inside is not None
            up = nn.ConvTranspose2d(inner * 2, outer, 4, stride=2, padding=1)
            layers: list[nn.Module] = [down, inside, nn.ReLU(), up, nn.Tanh()]
        elif inside is None:
            up = nn.ConvTranspose2d(inner, outer, 4, stride=2, padding=1, bias=False)
            layers = [nn.LeakyReLU(0.2), down, nn.ReLU(), up, nn.Identity()]
        else:
            up = nn.ConvTranspose2d(inner * 2, outer, 4, stride=2, padding=1, bias=False)
            layers = [nn.LeakyReLU(0.2), down, nn.Identity(), inside, nn.ReLU(), up, nn.Identity()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.outermost:
            return self.model(x)
        x = self.model[0](x)  # in place in the original: the skip connection carries the activated input
        return torch.cat([x, self.model[1:](x)], dim=1)


class MergeNet(nn.Module):
    """pix2pix4depth's generator ``UnetGenerator(2, 1, num_downs=10, ngf=64, norm="none")`` as ``model``."""

    def __init__(self, levels: int = 10, width: int = 64) -> None:
        super().__init__()
        level = _Level(width * 8, width * 8)
        for _ in range(levels - 5):
            level = _Level(width * 8, width * 8, level)
        for outer in (width * 4, width * 2, width):
            level = _Level(outer, outer * 2, level)
        self.model = _Level(1, width, level, channels_in=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def _stretch(values: torch.Tensor) -> torch.Tensor:
    return (values - values.min()) / (values.max() - values.min())


def merge(merger: MergeNet, outer: Array, inner: Array) -> Array:
    """The merging network's estimate, in [0, 1] (``(tanh + 1) / 2``), from two square float estimates of its size:
    each is stretched to [0, 1] and then to [-1, 1]; ``outer`` (the low-resolution or whole one) is the first
    channel."""
    pair = [_stretch(torch.from_numpy(np.ascontiguousarray(a, np.float32)))[None, None] * 2 - 1 for a in (outer, inner)]
    with torch.inference_mode():
        out = merger(torch.cat(pair, dim=1))
    return ((out + 1) / 2).squeeze().numpy()


def double_estimate(model: LeReS, merger: MergeNet, image: Array, low: int, high: int, size: int = MERGE_SIZE) -> Array:
    """LeReS at ``low`` and at ``high`` pixels square, both resized to the merging size (bicubic) and merged; the
    result stretched to [0, 1] (``size`` x ``size``)."""
    estimates = [
        cv2.resize(estimate(model, image, side, side), (size, size), interpolation=cv2.INTER_CUBIC)
        for side in (low, high)
    ]
    merged = torch.from_numpy(merge(merger, *estimates))
    return _stretch(merged).numpy()


def _gray(image: Array) -> Array:
    return np.dot(image[..., :3], [0.2989, 0.5870, 0.1140])


def _gradient(image: Array) -> Array:
    gray = _gray(image)
    return np.abs(cv2.Sobel(gray, cv2.CV_64F, 0, 1, ksize=3)) + np.abs(cv2.Sobel(gray, cv2.CV_64F, 1, 0, ksize=3))


def _max_pool(grid: Array, block: int) -> Array:
    """skimage's ``block_reduce(grid, (block, block), np.max)``: the edges padded with zeros to whole blocks."""
    block = max(block, 1)
    rows, columns = grid.shape
    padded = np.pad(grid, ((0, -rows % block), (0, -columns % block)))
    return padded.reshape(padded.shape[0] // block, block, padded.shape[1] // block, block).max(axis=(1, 3))


def processing_resolution(
    image: Array,
    base: int = RECEPTIVE_FIELD,
    confidence: float = 0.2,
    scale_threshold: float = 3,
    limit: int = WHOLE_SIZE_LIMIT,
) -> tuple[int, float]:
    """R_x and the patch density K (``calculateprocessingres``): the edge map (gradients at or over 40% of their
    range), squared to the short side, is max-pooled to ever finer grids; the last grid whose edges, dilated by a
    receptive field, leave at most ``confidence`` of it uncovered gives R_x. K is the share of that grid within a
    quarter field of an edge. (The original passes ``INTER_AREA``/``INTER_NEAREST`` where ``cv2.resize`` takes its
    output array, so its resizes are bilinear; so are these.)"""
    side = int(min(image.shape[:2]))
    grad = cv2.resize(_gradient(image), (side, side))
    low, high = grad.min(), grad.max()
    edges = (grad >= low + 0.4 * (high - low)).astype(np.float64)
    field = np.ones((int(base / _SPEED_SCALE),) * 2, np.float64)
    quarter = np.ones((int(base / (4 * _SPEED_SCALE)),) * 2, np.float64)
    top = min(limit, scale_threshold * max(image.shape[:2]))

    def grid(size: int) -> Array:
        pooled = cv2.resize(_max_pool(edges, side // size), (size, size))
        return (pooled >= 0.5).astype(np.float64)

    best = base / _SPEED_SCALE
    coarse = None
    for size in range(int(base / _SPEED_SCALE), int(top / _SPEED_SCALE), int(base / (2 * _SPEED_SCALE))):
        coarse = grid(size)
        if (1 - cv2.dilate(coarse, field, iterations=1)).mean() > confidence:
            break
        best = size
    if coarse is None:  # no step to take (a tiny image): the original fails here
        coarse = grid(int(base / _SPEED_SCALE))
    return int(best * _SPEED_SCALE), float(cv2.dilate(coarse, quarter, iterations=1).mean())


def _density(integral: Array, rect: list[int]) -> float:
    """Gradient per pixel inside ``rect`` (x, y, width, height) from the integral image."""
    x, y, w, h = rect
    total = integral[y + h, x + w] - integral[y, x + w] - integral[y + h, x] + integral[y, x]
    return float(total) / (w * h)


def select_patches(image: Array, base: int, factor: float) -> list[list[int]]:
    """The patches (x, y, width, height) worth refining, largest first (``generatepatchs``): on a grid of ``base``
    px squares every 3/8 ``base``, those whose strong gradients (over the mean of the non-zero ones) are at least as
    dense as the image's, each grown by 32/``factor`` px steps while it stays inside and as dense."""
    grad = _gradient(image)
    positive = grad[grad > 0]
    if positive.size:
        grad[grad < positive.mean()] = 0
    whole = grad.sum() / grad.size
    integral = cv2.integral(grad)
    rows, columns = integral.shape
    half = round(base / 2)
    stride = round(half * 0.75)
    step = int(32 / factor)
    patches = []
    for cx in range(half, image.shape[1] - half, stride):
        for cy in range(half, image.shape[0] - half, stride):
            rect = [cx - half, cy - half, 2 * half, 2 * half]
            if _density(integral, rect) < whole:
                continue
            while True:
                grown = [rect[0] - step // 2, rect[1] - step // 2, rect[2] + step, rect[3] + step]
                if grown[0] < 0 or grown[1] < 0 or grown[1] + grown[3] >= rows or grown[0] + grown[2] >= columns:
                    break
                if _density(integral, grown) < whole:
                    break
                rect = grown
            patches.append(rect)
    return sorted(patches, key=lambda r: r[2], reverse=True)  # stable: equal sizes keep the grid's order


@functools.cache
def _blend_mask() -> Array:
    """The 3000x3000 blending mask: ones inside a 15% margin, blurred (sigma 187, 749 px kernel), stretched to
    [0, 1]; resized to each patch. The square and the Gaussian are both separable, so the mask is the outer product
    of one blurred row with itself: the original's 2-D blur up to float rounding (1.5e-6), in well under a second
    instead of about nine."""
    size = 3000
    margin = int(0.15 * size)
    row = np.zeros((1, size), np.float32)
    row[0, margin : size - margin] = 1
    sigma = int(size / 16)
    row = cv2.GaussianBlur(row, (2 * int(np.ceil(2 * sigma)) + 1, 1), sigma)[0]
    mask = np.outer(row, row)
    return ((mask - mask.min()) / (mask.max() - mask.min())).astype(np.float32)


def boosted_estimate(model: LeReS, merger: MergeNet, image: Array, max_resolution: int) -> Array:
    """``estimateboost`` for LeReS: the merged estimate (float32, in [0, 1] before patches, bigger: farther) at the
    image's size."""
    height, width = image.shape[:2]
    whole_size, density = processing_resolution(image)
    whole = double_estimate(model, merger, image, RECEPTIVE_FIELD, whole_size)
    factor = max(min(1.0, 4 * density * whole_size / WHOLE_SIZE_LIMIT), 0.2)
    if max_resolution < whole_size:
        return cv2.resize(whole, (width, height), interpolation=cv2.INTER_CUBIC)

    if height > width:
        rows, columns = 2 * whole_size, round(2 * whole_size * width / height)
    else:
        rows, columns = round(2 * whole_size * height / width), 2 * whole_size
    rows, columns = round(rows / factor), round(columns / factor)
    big = cv2.resize(image, (columns, rows), interpolation=cv2.INTER_CUBIC)
    patches = select_patches(big, 2 * RECEPTIVE_FIELD, factor)

    scale = height / rows  # patches are cut from the image at the input's scale
    size = (round(columns * scale), round(rows * scale))
    pixels = cv2.resize(big, size, interpolation=cv2.INTER_CUBIC)
    base = cv2.resize(whole, size, interpolation=cv2.INTER_CUBIC)
    updated = base.copy()
    for rect in patches:
        x, y, w, h = np.round(np.array(rect) * scale).astype(int)
        region = base[y : y + h, x : x + w]
        patch = double_estimate(model, merger, pixels[y : y + h, x : x + w], RECEPTIVE_FIELD, 2 * RECEPTIVE_FIELD)
        region_big = cv2.resize(region, (MERGE_SIZE, MERGE_SIZE), interpolation=cv2.INTER_CUBIC)
        mapped = merge(merger, region_big, patch)
        line = np.polyfit(mapped.reshape(-1), region_big.reshape(-1), deg=1)
        fitted = np.polyval(line, mapped.reshape(-1)).reshape(mapped.shape)
        fitted = cv2.resize(fitted, (region.shape[1], region.shape[0]), interpolation=cv2.INTER_CUBIC)
        mask = _blend_mask()
        if mask.shape != region.shape:
            mask = cv2.resize(mask, (region.shape[1], region.shape[0]), interpolation=cv2.INTER_LINEAR)
        updated[y : y + h, x : x + w] = updated[y : y + h, x : x + w] * (1 - mask) + fitted * mask
    return cv2.resize(updated, (width, height), interpolation=cv2.INTER_CUBIC)
