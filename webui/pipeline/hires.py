"""Hires fix: what A1111's second txt2img pass does, computed from the request (sizes, steps, sampler, infotext).

Torch-free at import, so request validation can use the sizes. The pass itself runs in the engine on the already loaded components (the img2img pipeline around the same
U-Net, VAE and text encoders): the first pass's latents are upscaled in latent space ("Latent" upscalers) or
decoded, upscaled in pixels and re-encoded (Lanczos, Nearest, ESRGAN files), then denoised again from
``denoising_strength``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch only where latents are touched: requests validate this module's sizes without it
    import torch

# A1111's latent upscaler names -> (torch interpolation mode, antialias)
LATENT_UPSCALERS: dict[str, tuple[str, bool]] = {
    "Latent": ("bilinear", False),
    "Latent (antialiased)": ("bilinear", True),
    "Latent (bicubic)": ("bicubic", False),
    "Latent (bicubic antialiased)": ("bicubic", True),
    "Latent (nearest)": ("nearest", False),
    "Latent (nearest-exact)": ("nearest-exact", False),
}
SAME = ("", "Use same sampler", "Use same scheduler")  # A1111's "same as the first pass" choices


@dataclass(frozen=True)
class HiresPlan:
    width: int
    height: int
    steps: int  # the second pass's step count (the sampler runs ``steps x strength`` of them)
    upscaler: str
    crop: bool  # both target sides given: upscale to cover, then crop the middle (A1111's "resize to")

    @property
    def latent(self) -> bool:
        return self.upscaler in LATENT_UPSCALERS


def target_size(width: int, height: int, scale: float, resize_x: int, resize_y: int) -> tuple[int, int, bool]:
    """(width, height, crop) of the second pass, as A1111 reads ``hr_scale`` and ``hr_resize_x/y``: a scale when
    neither side is given, one side keeps the aspect ratio, both sides crop to fit. Sides round down to 8."""
    if resize_x <= 0 and resize_y <= 0:
        w, h, crop = int(width * scale), int(height * scale), False
    elif resize_y <= 0:
        w, h, crop = resize_x, resize_x * height // width, False
    elif resize_x <= 0:
        w, h, crop = resize_y * width // height, resize_y, False
    else:
        w, h, crop = resize_x, resize_y, (resize_x * height != resize_y * width)
    return max(8, w - w % 8), max(8, h - h % 8), crop


def upscale_latents(latents: torch.Tensor, name: str, width: int, height: int, factor: int, crop: bool) -> torch.Tensor:
    """Latents resized to ``width`` x ``height`` pixels' worth (``factor``: the VAE's downscale); with ``crop``,
    scaled to cover and cut to the middle."""
    from torch.nn import functional as F

    mode, antialias = LATENT_UPSCALERS[name]
    target_h, target_w = height // factor, width // factor
    h, w = latents.shape[-2:]
    size = (target_h, target_w)
    if crop:
        scale = max(target_h / h, target_w / w)
        size = (max(target_h, round(h * scale)), max(target_w, round(w * scale)))
    kwargs: dict[str, Any] = {"antialias": antialias} if mode in ("bilinear", "bicubic") else {}
    up = F.interpolate(latents.float(), size=size, mode=mode, **kwargs).to(latents.dtype)
    if crop:
        top, left = (size[0] - target_h) // 2, (size[1] - target_w) // 2
        up = up[..., top : top + target_h, left : left + target_w]
    return up


def infotext_params(request: Any, plan: HiresPlan, sampler: str, schedule: str) -> dict[str, Any]:
    """A1111's ``Hires ...`` keys (and the denoising strength the second pass used)."""
    params: dict[str, Any] = {"Denoising strength": request.denoising_strength}
    if request.hr_resize_x > 0 or request.hr_resize_y > 0:
        params["Hires resize"] = f"{plan.width}x{plan.height}"
    else:
        params["Hires upscale"] = request.hr_scale
    if request.hr_second_pass_steps:
        params["Hires steps"] = request.hr_second_pass_steps
    params["Hires upscaler"] = plan.upscaler
    if request.hr_sampler_name not in SAME:
        params["Hires sampler"] = sampler
    if request.hr_scheduler not in SAME:
        params["Hires schedule type"] = schedule
    if request.hr_prompt and request.hr_prompt != request.prompt:
        params["Hires prompt"] = request.hr_prompt
    if request.hr_negative_prompt and request.hr_negative_prompt != request.negative_prompt:
        params["Hires negative prompt"] = request.hr_negative_prompt
    return params
