"""Live previews: a cheap linear latent-to-RGB projection, costing microseconds per step instead of a VAE decode."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

log = logging.getLogger(__name__)

# Least-squares fits of the VAE decoder's mean colour per latent channel, as used by A1111's "Approx cheap".
_SD_FACTORS = torch.tensor(
    [[0.298, 0.207, 0.208], [0.187, 0.286, 0.173], [-0.158, 0.189, 0.264], [-0.184, -0.271, -0.473]]
)
_SDXL_FACTORS = torch.tensor(
    [[0.3448, 0.4168, 0.4395], [-0.1953, -0.0290, 0.0250], [0.1074, 0.0886, -0.0163], [-0.3730, -0.2499, -0.1088]]
)


@dataclass(frozen=True)
class PreviewProjection:
    """A model's own latent-to-RGB fit (``factors`` (C, 3) and ``bias`` (3,)), for VAEs unlike SD's.

    Easel's demo model ships one in its metadata (``easel.preview``), fitted on its training data.
    """

    factors: torch.Tensor
    bias: torch.Tensor

    @classmethod
    def from_metadata(cls, metadata: dict[str, str]) -> PreviewProjection | None:
        raw = metadata.get("easel.preview")
        if not raw:
            return None
        try:
            data = json.loads(raw)
            factors = torch.tensor(data["factors"], dtype=torch.float32)
            bias = torch.tensor(data["bias"], dtype=torch.float32)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring a malformed easel.preview entry: %s", exc)
            return None
        if factors.ndim != 2 or factors.shape[1] != 3 or bias.shape != (3,):
            log.warning("ignoring easel.preview of shape %s / %s", tuple(factors.shape), tuple(bias.shape))
            return None
        return cls(factors, bias)


def cheap_preview(
    latents: torch.Tensor, family: str, projection: PreviewProjection | None = None, scale: int = 8
) -> Image.Image:
    """Project the first latent of the batch to RGB and upscale it ``scale``x (nearest) to the image size."""
    if projection is not None and projection.factors.shape[0] <= latents.shape[1]:
        factors, bias = projection.factors, projection.bias
    else:
        factors, bias = (_SDXL_FACTORS if family == "sdxl" else _SD_FACTORS), torch.zeros(3)
    latent = latents[0, : factors.shape[0]].detach().to("cpu", torch.float32)
    rgb = torch.einsum("chw,cr->hwr", latent, factors) + bias
    pixels = ((rgb + 1.0) * 127.5).clamp(0, 255).to(torch.uint8).numpy()
    image = Image.fromarray(np.ascontiguousarray(pixels))
    return image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
