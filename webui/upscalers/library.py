"""Upscalers by the names A1111 shows: built-in resampling (Lanczos, Nearest) and the ESRGAN-family files in
``models/ESRGAN``, listed by file name and loaded when first used.

A model upscaler runs in tiles (each with a margin of context that is cut off again), so its memory follows
the tile size, not the picture's; it is applied as many times as it takes to reach the size asked for, then
Lanczos makes the size exact, as A1111 does. Only the worker thread runs models (``upscale``).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from webui.errors import InvalidRequest, ModelLoadError
from webui.weights import formats
from webui.weights.hashing import HashCache
from webui.weights.registry import CheckpointInfo, ModelRegistry

log = logging.getLogger(__name__)

UPSCALER_EXTENSIONS = (".pth", ".pt", ".safetensors")
BUILT_IN: dict[str, Image.Resampling | None] = {
    "None": None,
    "Lanczos": Image.Resampling.LANCZOS,
    "Nearest": Image.Resampling.NEAREST,
}
TILE = 192  # input pixels per tile side
TILE_MARGIN = 16  # context on each side of a tile, cut off after the model ran
_KEEP_LOADED = 2


class UpscalerLibrary:
    def __init__(self, root: Path, cache: HashCache) -> None:
        self.registry = ModelRegistry(root, cache, UPSCALER_EXTENSIONS, label="upscaler", diffusers_folders=False)
        self._loaded: OrderedDict[Path, tuple[tuple[int, float], Any]] = OrderedDict()

    def names(self) -> list[str]:
        """Every choice, built-ins first, model files by their name without extension (as A1111 lists them)."""
        return [*BUILT_IN, *(info.model_name for info in self.registry.list())]

    def find_model(self, name: str, field: str) -> CheckpointInfo:
        for info in self.registry.list():
            if name in (info.model_name, info.name):
                return info
        raise InvalidRequest(field, f"unknown upscaler '{name}' (available: {', '.join(self.names())})")

    def check(self, name: str, field: str) -> None:
        """A name that is neither built in nor a file in the folder is refused, naming ``field``."""
        if name not in BUILT_IN:
            self.find_model(name, field)

    def scale_of(self, info: CheckpointInfo) -> int | None:
        """A listed model's native factor once it has been loaded (None before: reading it would cost a load)."""
        cached = self._loaded.get(info.path)
        return cached[1].scale if cached else None

    def upscale(
        self,
        image: Image.Image,
        name: str,
        width: int,
        height: int,
        *,
        crop: bool = False,
        device: torch.device | None = None,
        dtype: torch.dtype = torch.float32,
        field: str = "upscaler",
    ) -> Image.Image:
        """``image`` at ``width`` x ``height`` through the named upscaler ("None" resizes with Lanczos too). With
        ``crop`` a size of another aspect ratio is reached as A1111's "resize to" does: upscaled to cover, then the
        middle cut out."""
        image = image.convert("RGB")
        if crop and width * image.height != height * image.width:
            scale = max(width / image.width, height / image.height)
            cover = (max(width, round(image.width * scale)), max(height, round(image.height * scale)))
            big = self.upscale(image, name, *cover, device=device, dtype=dtype, field=field)
            left, top = (cover[0] - width) // 2, (cover[1] - height) // 2
            return big.crop((left, top, left + width, top + height))
        if name in BUILT_IN:
            resample = BUILT_IN[name]  # NEAREST is 0: compare with None, not truthiness
            return image.resize((width, height), Image.Resampling.LANCZOS if resample is None else resample)
        model = self._model(self.find_model(name, field))
        device = device or torch.device("cpu")
        current = image
        while current.width < width or current.height < height:
            before = current.size
            current = run_tiled(model, current, device, dtype)
            if current.size == before:  # a 1x model: once is all it does
                break
        if current.size != (width, height):
            current = current.resize((width, height), Image.Resampling.LANCZOS)
        return current

    def _model(self, info: CheckpointInfo) -> Any:
        from webui.upscalers import esrgan

        stamp = (info.size, info.mtime)
        cached = self._loaded.get(info.path)
        if cached is not None and cached[0] == stamp:
            self._loaded.move_to_end(info.path)
            return cached[1]
        try:
            model = esrgan.build(info.path, formats.read_state_dict(info.path))
        except ModelLoadError as exc:
            self.registry.record_error(info, exc.reason)
            raise
        self._loaded[info.path] = (stamp, model)
        while len(self._loaded) > _KEEP_LOADED:
            self._loaded.popitem(last=False)
        return model


def run_tiled(model: Any, image: Image.Image, device: torch.device, dtype: torch.dtype) -> Image.Image:
    """One pass of ``model`` over ``image`` in tiles of ``TILE`` pixels with ``TILE_MARGIN`` of context each."""
    model.to(device=device, dtype=dtype)
    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
    _, _, h, w = pixels.shape
    scale = model.scale
    out = torch.zeros(1, 3, h * scale, w * scale)
    with torch.inference_mode():
        for top in range(0, h, TILE):
            for left in range(0, w, TILE):
                bottom, right = min(h, top + TILE), min(w, left + TILE)
                t0, l0 = max(0, top - TILE_MARGIN), max(0, left - TILE_MARGIN)
                t1, l1 = min(h, bottom + TILE_MARGIN), min(w, right + TILE_MARGIN)
                tile = pixels[:, :, t0:t1, l0:l1].to(device=device, dtype=dtype)
                result = model(tile).float().cpu()
                y, x = (top - t0) * scale, (left - l0) * scale
                out[:, :, top * scale : bottom * scale, left * scale : right * scale] = result[
                    :, :, y : y + (bottom - top) * scale, x : x + (right - left) * scale
                ]
    array = (out[0].clamp(0, 1).permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)
    return Image.fromarray(array)
