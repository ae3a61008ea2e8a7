"""Tiles for "SD upscale": where the overlapping tiles of a large image go, and how they are blended back.

Tiles are placed as A1111's ``split_grid`` places them (the fewest tiles of the given size that overlap by at
least ``overlap`` pixels, spread evenly), so an image is cut the same way in both tools. The join is Easel's:
each tile's weight ramps linearly from 0 to 1 across the overlap on every side that meets another tile, and
the image is the weighted mean, so neighbouring tiles fade into each other instead of meeting at a hard line.
NumPy only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Tile:
    left: int
    top: int
    width: int
    height: int

    @property
    def box(self) -> tuple[int, int, int, int]:
        return (self.left, self.top, self.left + self.width, self.top + self.height)


def _starts(length: int, tile: int, overlap: int) -> list[int]:
    if length <= tile:
        return [0]
    count = math.ceil((length - overlap) / (tile - overlap))
    step = (length - tile) / (count - 1)
    return [int(i * step) for i in range(count)]


def grid(width: int, height: int, tile_width: int, tile_height: int, overlap: int) -> list[Tile]:
    """Tiles covering ``width`` x ``height``, row by row; a side smaller than the tile gets one tile its size."""
    tile_width, tile_height = min(tile_width, width), min(tile_height, height)
    overlap = max(0, min(overlap, tile_width - 8, tile_height - 8))
    return [
        Tile(left, top, tile_width, tile_height)
        for top in _starts(height, tile_height, overlap)
        for left in _starts(width, tile_width, overlap)
    ]


def _ramp(size: int, before: int, after: int) -> np.ndarray:
    """1 in the middle, rising over ``before`` pixels at the start and falling over ``after`` at the end."""
    weights = np.ones(size, dtype=np.float32)
    if before:
        weights[:before] = np.linspace(1.0 / (before + 1), 1.0, before, endpoint=False, dtype=np.float32)
    if after:
        weights[size - after :] = np.minimum(
            weights[size - after :], np.linspace(1.0, 1.0 / (after + 1), after, dtype=np.float32)
        )
    return weights


def blend(tiles: list[Tile], images: list[Image.Image], width: int, height: int) -> Image.Image:
    """The tiles' images joined into one ``width`` x ``height`` picture, overlaps faded into each other."""
    total = np.zeros((height, width, 3), dtype=np.float32)
    weight = np.zeros((height, width, 1), dtype=np.float32)
    for tile, image in zip(tiles, images, strict=True):
        left_overlap = max((t.left + t.width - tile.left for t in tiles if t.left < tile.left), default=0)
        top_overlap = max((t.top + t.height - tile.top for t in tiles if t.top < tile.top), default=0)
        right_overlap = max((tile.left + tile.width - t.left for t in tiles if t.left > tile.left), default=0)
        bottom_overlap = max((tile.top + tile.height - t.top for t in tiles if t.top > tile.top), default=0)
        w = _ramp(tile.width, max(0, left_overlap), max(0, right_overlap))
        h = _ramp(tile.height, max(0, top_overlap), max(0, bottom_overlap))
        mask = (h[:, None] * w[None, :])[:, :, None]
        pixels = np.asarray(image.convert("RGB").resize((tile.width, tile.height)), dtype=np.float32)
        total[tile.top : tile.top + tile.height, tile.left : tile.left + tile.width] += pixels * mask
        weight[tile.top : tile.top + tile.height, tile.left : tile.left + tile.width] += mask
    joined = total / np.maximum(weight, 1e-6)
    return Image.fromarray(np.clip(joined.round(), 0, 255).astype(np.uint8))
