"""TAESD live previews: a tiny distilled VAE decoder that shows what the image will look like, mid-denoising.

Users put the decoders where A1111 and ComfyUI look for them, in ``models/VAE-approx``: ``taesd_decoder.pth`` (or
``.safetensors``) for SD 1.x/2.x and ``taesdxl_decoder.pth`` for SDXL. The files hold the original TAESD
``nn.Sequential``, whose layer 0 is a parameter-free clamp; diffusers' ``DecoderTiny`` does the clamp in its
forward, so the original layer ``i`` is diffusers' ``layers.{i-1}``. Nothing is downloaded: without the file the
cheap latent-to-RGB projection is used.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from webui.errors import ModelLoadError
from webui.weights import formats

log = logging.getLogger(__name__)

FILE_STEMS = {"sd1": "taesd_decoder", "sd2": "taesd_decoder", "sdxl": "taesdxl_decoder"}
SUFFIXES = (".safetensors", ".pth", ".pt")


def decoder_weights(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Original TAESD decoder keys (``1.weight``, ``3.conv.0.weight``...) to ``DecoderTiny`` keys (``layers.0...``).

    Also accepts a diffusers ``AutoencoderTiny`` file (``decoder.layers.0.weight``), keeping only its decoder.
    """
    if any(k.startswith("decoder.layers.") for k in state_dict):
        return {k.removeprefix("decoder."): v for k, v in state_dict.items() if k.startswith("decoder.layers.")}
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        index, _, rest = key.partition(".")
        if not index.isdigit() or int(index) < 1:
            raise ValueError(f"{key!r} is not a TAESD decoder key")
        out[f"layers.{int(index) - 1}.{rest}"] = value
    return out


class TaesdPreviews:
    """Finds, loads (once per file version) and runs the TAESD decoder for a model family."""

    def __init__(self, folder: Path, device: torch.device, dtype: torch.dtype) -> None:
        self.folder = Path(folder)
        self.device = device
        self.dtype = dtype
        self._loaded: dict[Path, tuple[float, Any]] = {}
        self._failed: dict[Path, float] = {}  # a broken file is reported once per version, not every step

    def file_for(self, family: str) -> Path | None:
        stem = FILE_STEMS.get(family)
        if stem is None:
            return None
        return next((p for s in SUFFIXES if (p := self.folder / f"{stem}{s}").is_file()), None)

    def decoder_for(self, family: str) -> Any | None:
        """The family's decoder, or None when its file is absent or unusable (then the cheap preview is used)."""
        path = self.file_for(family)
        if path is None:
            return None
        mtime = path.stat().st_mtime
        cached = self._loaded.get(path)
        if cached is not None and cached[0] == mtime:
            return cached[1]
        if self._failed.get(path) == mtime:
            return None
        try:
            decoder = self._load(path)
        except (ModelLoadError, ValueError, RuntimeError) as exc:
            log.warning("live preview: %s is not a usable TAESD decoder (%s); using the cheap preview", path, exc)
            self._failed[path] = mtime
            return None
        self._loaded[path] = (mtime, decoder)
        log.info("live preview: TAESD from %s", path)
        return decoder

    def _load(self, path: Path) -> Any:
        from diffusers import AutoencoderTiny

        weights = decoder_weights(formats.read_state_dict(path))
        decoder = AutoencoderTiny().decoder  # the released TAESD shape; the encoder is not kept
        decoder.load_state_dict(weights, strict=True)
        return decoder.to(self.device, self.dtype).eval().requires_grad_(False)

    def preview(self, decoder: Any, latents: torch.Tensor) -> Image.Image:
        """Decode the first latent of the batch (diffusion-space latents, as TAESD expects) to an image."""
        with torch.inference_mode():
            latent = latents[:1].to(self.device, self.dtype)
            pixels = decoder(latent)[0].float()  # [-1, 1]
        array = ((pixels.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
        return Image.fromarray(np.ascontiguousarray(array))
