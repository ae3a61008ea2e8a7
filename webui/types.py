"""The request, event and result types that the UI, the API and the CLI all speak.

Field names follow A1111's API (``cfg_scale``, ``n_iter``, ``inpainting_fill``...) so the compatibility
layer is a thin rename, and every range check lives here once: a bad value fails the same way from any door.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from webui import samplers
from webui.choices import MASKED_CONTENT_LABELS as MASKED_CONTENT_LABELS  # re-exported: the request's vocabulary
from webui.choices import RESIZE_MODE_LABELS as RESIZE_MODE_LABELS
from webui.choices import MaskedContent, Mode, ResizeMode
from webui.controlnet.units import MAX_UNITS, ControlNetUnit
from webui.errors import InvalidRequest, from_validation_error
from webui.pipeline import hires

SEED_MAX = 2**32 - 1
MAX_PROMPT_CHARS = 20_000


VAE_AUTOMATIC = "Automatic"  # the VAE named like the checkpoint if there is one, else the checkpoint's own
VAE_NONE = "None"  # always the checkpoint's own (baked-in) VAE


@dataclass(frozen=True)
class Limits:
    """Server-side bounds; flags can lower or raise them, requests can never exceed them."""

    max_steps: int = 150
    min_size: int = 64
    max_size: int = 2048
    max_pixels: int = 2048 * 2048
    max_batch_size: int = 8
    max_batch_count: int = 100
    max_images: int = 100


DEFAULT_LIMITS = Limits()

# (low, high, inclusive-low) for the numeric fields whose bounds do not depend on flags.
_FIXED_RANGES: dict[str, tuple[float, float]] = {
    "cfg_scale": (1.0, 30.0),
    "clip_skip": (1, 12),
    "mask_blur": (0, 64),
    "inpaint_full_res_padding": (0, 256),
}


class GenerationRequest(BaseModel):
    """One user request: what to draw and how. Validated on construction; errors name the field."""

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid", validate_assignment=False)

    mode: Mode = Mode.TXT2IMG
    prompt: str = ""
    negative_prompt: str = ""
    sampler_name: str = samplers.DEFAULT_SAMPLER
    scheduler: str = "Automatic"
    steps: int = 20
    cfg_scale: float = 7.0
    seed: int = -1
    width: int = 512
    height: int = 512
    batch_size: int = 1
    n_iter: int = 1
    clip_skip: int = 1
    checkpoint: str | None = None
    vae: str = VAE_AUTOMATIC  # A1111's sd_vae: Automatic, None (the checkpoint's own) or a file in models/VAE
    # img2img / inpaint
    init_image: Image.Image | None = None
    denoising_strength: float = 0.75
    resize_mode: ResizeMode = ResizeMode.JUST_RESIZE
    # inpaint
    mask: Image.Image | None = None
    mask_blur: int = 4
    inpainting_fill: MaskedContent = MaskedContent.ORIGINAL
    inpaint_full_res: bool = False
    inpaint_full_res_padding: int = 32
    inpainting_mask_invert: bool = False
    # hires fix (txt2img): A1111's second pass at a larger size
    enable_hr: bool = False
    hr_scale: float = 2.0
    hr_upscaler: str = "Latent"
    hr_second_pass_steps: int = 0  # 0: the first pass's steps
    hr_resize_x: int = 0  # 0: from hr_scale (or the other side's aspect ratio)
    hr_resize_y: int = 0
    hr_sampler_name: str = ""  # "": the first pass's
    hr_scheduler: str = ""
    hr_prompt: str = ""  # "": the first pass's
    hr_negative_prompt: str = ""
    # SD upscale (img2img): the input upscaled, then img2img'd tile by tile at width x height
    sd_upscale: bool = False
    sd_upscale_scale: float = 2.0
    sd_upscale_upscaler: str = "Lanczos"
    sd_upscale_overlap: int = 64
    # ControlNet (the extension's units; disabled ones are kept so infotext numbering matches the UI)
    controlnet_units: list[ControlNetUnit] = []
    # extensions' per-job arguments, by extension name then argument name (checked by the plugin host)
    extension_args: dict[str, dict[str, Any]] = {}
    # output
    save_images: bool = True

    @field_validator("prompt", "negative_prompt", "hr_prompt", "hr_negative_prompt")
    @classmethod
    def _prompt_length(cls, value: str) -> str:
        if len(value) > MAX_PROMPT_CHARS:
            raise ValueError(f"must be at most {MAX_PROMPT_CHARS} characters, got {len(value)}")
        return value

    @field_validator("cfg_scale", "denoising_strength", "hr_scale", "sd_upscale_scale")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError(f"must be a finite number, got {value}")
        return value

    @model_validator(mode="after")
    def _check(self) -> GenerationRequest:
        for name, (low, high) in _FIXED_RANGES.items():
            value = getattr(self, name)
            if not low <= value <= high:
                raise InvalidRequest(name, f"must be between {low:g} and {high:g}, got {value:g}")
        if not (self.seed == -1 or 0 <= self.seed <= SEED_MAX):
            raise InvalidRequest("seed", f"must be -1 (random) or between 0 and {SEED_MAX}, got {self.seed}")
        if not 0.0 < self.denoising_strength <= 1.0:
            raise InvalidRequest("denoising_strength", f"must be in (0, 1], got {self.denoising_strength:g}")
        samplers.resolve(self.sampler_name, self.scheduler)
        if self.mode is not Mode.TXT2IMG and self.init_image is None:
            raise InvalidRequest("init_image", f"an input image is required for {self.mode.value}")
        self._check_controlnet()
        self._check_hires()
        self._check_sd_upscale()
        if self.mode is Mode.INPAINT:
            if self.mask is None:
                raise InvalidRequest("mask", "a mask image is required for inpaint")
            assert self.init_image is not None
            if self.mask.size != self.init_image.size:
                raise InvalidRequest(
                    "mask",
                    f"must be the size of the input image {self.init_image.size[0]}x{self.init_image.size[1]}, "
                    f"got {self.mask.size[0]}x{self.mask.size[1]}",
                )
        return self

    def _check_hires(self) -> None:
        if not self.enable_hr:
            return
        if self.mode is not Mode.TXT2IMG:
            raise InvalidRequest("enable_hr", "hires fix is a txt2img option (use img2img to upscale an image)")
        if not 1.0 <= self.hr_scale <= 4.0:
            raise InvalidRequest("hr_scale", f"must be between 1 and 4, got {self.hr_scale:g}")
        for name in ("hr_resize_x", "hr_resize_y"):
            if getattr(self, name) < 0:
                raise InvalidRequest(name, f"must be 0 (use hr_scale) or a size in pixels, got {getattr(self, name)}")
        if self.hr_second_pass_steps < 0:
            raise InvalidRequest(
                "hr_second_pass_steps", f"must be 0 (same as steps) or more, got {self.hr_second_pass_steps}"
            )
        sampler = self.hr_sampler_name if self.hr_sampler_name not in hires.SAME else self.sampler_name
        schedule = self.hr_scheduler if self.hr_scheduler not in hires.SAME else self.scheduler
        try:
            samplers.resolve(sampler, schedule)
        except InvalidRequest as exc:
            field = "hr_scheduler" if exc.field == "scheduler" else "hr_sampler_name"
            raise type(exc)(field, exc.message) from None

    def _check_sd_upscale(self) -> None:
        if not self.sd_upscale:
            return
        if self.mode is not Mode.IMG2IMG:
            raise InvalidRequest("sd_upscale", "SD upscale is an img2img script (give it the image to upscale)")
        if not 1.0 <= self.sd_upscale_scale <= 4.0:
            raise InvalidRequest("sd_upscale_scale", f"must be between 1 and 4, got {self.sd_upscale_scale:g}")
        if not 0 <= self.sd_upscale_overlap <= min(self.width, self.height) // 2:
            raise InvalidRequest(
                "sd_upscale_overlap",
                f"must be between 0 and half the tile ({min(self.width, self.height) // 2}), got {self.sd_upscale_overlap}",
            )
        if self.batch_size != 1:
            raise InvalidRequest("batch_size", "must be 1 with SD upscale (use batch count for more images)")

    def sd_upscale_size(self) -> tuple[int, int] | None:
        """The upscaled image's size (the tiles are ``width`` x ``height``); None without SD upscale."""
        if not self.sd_upscale or self.init_image is None:
            return None
        w, h = self.init_image.size
        return max(8, int(w * self.sd_upscale_scale)), max(8, int(h * self.sd_upscale_scale))

    def hires_plan(self) -> hires.HiresPlan | None:
        """The second pass's size, steps and upscaler (None without hires fix)."""
        if not self.enable_hr:
            return None
        width, height, crop = hires.target_size(
            self.width, self.height, self.hr_scale, self.hr_resize_x, self.hr_resize_y
        )
        steps = self.hr_second_pass_steps or self.steps
        return hires.HiresPlan(width, height, steps, self.hr_upscaler, crop)

    def _check_controlnet(self) -> None:
        if len(self.controlnet_units) > MAX_UNITS:
            raise InvalidRequest("controlnet_units", f"at most {MAX_UNITS} units, got {len(self.controlnet_units)}")
        for index, unit in enumerate(self.controlnet_units):
            where = f"controlnet_units[{index}]"
            unit.check(where)
            if unit.enabled and unit.image is None and self.mode is Mode.TXT2IMG:
                raise InvalidRequest(f"{where}.image", "a control image is required in txt2img")
            if unit.enabled and unit.mask is not None and unit.image is not None and unit.mask.size != unit.image.size:
                raise InvalidRequest(
                    f"{where}.mask",
                    f"must be the size of the unit's image {unit.image.size[0]}x{unit.image.size[1]}, "
                    f"got {unit.mask.size[0]}x{unit.mask.size[1]}",
                )

    @property
    def active_units(self) -> list[ControlNetUnit]:
        """The enabled units with a weight: the only ones that change the image."""
        return [u for u in self.controlnet_units if u.enabled and u.weight > 0]

    def check_limits(self, limits: Limits) -> None:
        """Bounds that the server's flags set; the service calls this before queueing."""
        if not 1 <= self.steps <= limits.max_steps:
            raise InvalidRequest("steps", f"must be between 1 and {limits.max_steps}, got {self.steps}")
        for name in ("width", "height"):
            value = getattr(self, name)
            if value % 8 or not limits.min_size <= value <= limits.max_size:
                raise InvalidRequest(
                    name, f"must be a multiple of 8 between {limits.min_size} and {limits.max_size}, got {value}"
                )
        plan = self.hires_plan()
        if plan is not None:
            if plan.steps > limits.max_steps:
                raise InvalidRequest("hr_second_pass_steps", f"must be at most {limits.max_steps}, got {plan.steps}")
            if max(plan.width, plan.height) > limits.max_size or plan.width * plan.height > limits.max_pixels:
                field = "hr_scale" if not (self.hr_resize_x or self.hr_resize_y) else "hr_resize_x"
                raise InvalidRequest(
                    field,
                    f"the hires size {plan.width}x{plan.height} is over the limit ({limits.max_size} px a side, "
                    f"{limits.max_pixels} pixels)",
                )
        upscaled = self.sd_upscale_size()
        if upscaled is not None and (
            max(upscaled) > limits.max_size * 4 or upscaled[0] * upscaled[1] > limits.max_pixels * 16
        ):
            raise InvalidRequest(
                "sd_upscale_scale",
                f"the upscaled size {upscaled[0]}x{upscaled[1]} is over the limit ({limits.max_size * 4} px a side)",
            )
        if self.width * self.height > limits.max_pixels:
            raise InvalidRequest(
                "width", f"width x height must be at most {limits.max_pixels} pixels, got {self.width * self.height}"
            )
        if not 1 <= self.batch_size <= limits.max_batch_size:
            raise InvalidRequest("batch_size", f"must be between 1 and {limits.max_batch_size}, got {self.batch_size}")
        if not 1 <= self.n_iter <= limits.max_batch_count:
            raise InvalidRequest("n_iter", f"must be between 1 and {limits.max_batch_count}, got {self.n_iter}")
        if self.batch_size * self.n_iter > limits.max_images:
            raise InvalidRequest(
                "n_iter",
                f"batch_size x n_iter must be at most {limits.max_images}, got {self.batch_size * self.n_iter}",
            )

    @classmethod
    def build(cls, **fields: Any) -> GenerationRequest:
        """Construct from loose input, turning pydantic's errors into one ``InvalidRequest`` naming the field."""
        try:
            return cls(**fields)
        except ValidationError as exc:
            raise from_validation_error(exc) from None


@dataclass
class Progress:
    """One progress event: sent after each denoising step and when the job's state changes."""

    job_id: str
    state: str  # queued | running | done | failed | cancelled
    step: int = 0
    total_steps: int = 0
    image_index: int = 0
    image_count: int = 0
    eta_seconds: float | None = None
    queue_position: int = 0
    preview: Image.Image | None = None
    message: str = ""
    timestamp: float = field(default_factory=time.time)

    @property
    def fraction(self) -> float:
        if self.state == "done":
            return 1.0
        if not self.total_steps or not self.image_count:
            return 0.0
        done = self.image_index * self.total_steps + self.step
        return min(1.0, done / (self.image_count * self.total_steps))


@dataclass
class GeneratedImage:
    image: Image.Image
    seed: int
    infotext: str
    path: Path | None = None


@dataclass
class GenerationResult:
    job_id: str
    request: GenerationRequest
    images: list[GeneratedImage]
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    control_maps: list[Image.Image] = field(default_factory=list)  # ControlNet units' detected maps

    @property
    def paths(self) -> list[Path]:
        return [img.path for img in self.images if img.path is not None]
