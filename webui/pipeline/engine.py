"""The generation engine: turns one validated request into images, on the device the worker owns.

Only the service's worker thread calls into this module. It reads top to bottom like a diffusers pipeline:
resolve the model, prepare the inputs per mode, denoise each batch with one step callback, decode with a
NaN guard, paste back the unmasked area. Saving and history belong to the service.
"""

from __future__ import annotations

import contextlib
import gc
import inspect
import logging
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import diffusers
import numpy as np
import torch
from PIL import Image

from webui.controlnet.apply import ActiveUnit, ControlHook
from webui.controlnet.detect import detect, fallback_inputs
from webui.controlnet.units import ControlNetUnit, HiresOption
from webui.errors import GenerationFailed, ImageSkipped
from webui.networks.lora import LORA_KINDS, LoraUse
from webui.outputs.infotext import infotext_for
from webui.pipeline import hires, imageops, tiles
from webui.pipeline.device import DeviceConfig
from webui.pipeline.preview import PreviewProjection, cheap_preview
from webui.pipeline.schedulers import build_scheduler, schedule_label
from webui.pipeline.taesd import TaesdPreviews
from webui.prompts.conditioning import PromptEncoder, StepConditioning, build_conditioning
from webui.prompts.parser import extract_networks
from webui.types import SEED_MAX, GeneratedImage, GenerationRequest, MaskedContent, Mode, ResizeMode
from webui.weights.manager import ActiveModel, WeightsManager

log = logging.getLogger(__name__)

_PIPELINE_CLASSES = {
    ("sd", Mode.TXT2IMG): "StableDiffusionPipeline",
    ("sd", Mode.IMG2IMG): "StableDiffusionImg2ImgPipeline",
    ("sd", Mode.INPAINT): "StableDiffusionInpaintPipeline",
    ("sdxl", Mode.TXT2IMG): "StableDiffusionXLPipeline",
    ("sdxl", Mode.IMG2IMG): "StableDiffusionXLImg2ImgPipeline",
    ("sdxl", Mode.INPAINT): "StableDiffusionXLInpaintPipeline",
}

# Optional pipeline parts Easel never uses; passing None keeps diffusers from looking for them.
_NO_EXTRAS: dict[str, Any] = {
    "safety_checker": None,
    "feature_extractor": None,
    "image_encoder": None,
    "requires_safety_checker": False,
    "force_zeros_for_empty_prompt": False,
    "requires_aesthetics_score": False,
    "add_watermarker": False,
}

VAE_TILING_AUTO_PIXELS = 1536


@dataclass
class StepInfo:
    """What the step callback reports: which image of the job and which step of its denoising."""

    step: int
    total_steps: int
    iteration: int
    iterations: int
    preview: Callable[[], Image.Image]


StepCallback = Callable[[StepInfo], None]
# (step within the pass, steps in the pass, image index, timestep, latents) -> replacement latents or None
StepHook = Callable[[int, int, int, float, torch.Tensor], "torch.Tensor | None"]


@dataclass
class _Prepared:
    """Per-request inputs, computed once before the batches run."""

    init_image: Image.Image | None = None
    original: Image.Image | None = None  # what unmasked pixels are pasted back from
    soft_mask: Image.Image | None = None
    region: imageops.CropRegion | None = None
    pipe_kwargs: dict[str, Any] = field(default_factory=dict)
    pipeline_mode: Mode = Mode.TXT2IMG


class Engine:
    def __init__(
        self,
        device: DeviceConfig,
        weights: WeightsManager,
        *,
        vae_tiling: str = "auto",
        previews: TaesdPreviews | None = None,
    ) -> None:
        self.device = device
        self.weights = weights
        self.vae_tiling = vae_tiling
        self.previews = previews
        self._pipelines: dict[Mode, Any] = {}
        self._pipelines_model: ActiveModel | None = None  # a reference, not an id: ids are reused after free

    def after_failure(self) -> None:
        """Free what a failed job left behind (an OOM's partial activations) before the next job starts."""
        gc.collect()
        if self.device.device.type == "cuda":
            torch.cuda.empty_cache()

    def load(self, checkpoint: str | None) -> ActiveModel:
        """Make ``checkpoint`` the active model now (the UI's model switch), releasing the old one's pipelines."""
        model = self.weights.use(checkpoint)
        self._own(model)
        return model

    # -- pipelines -------------------------------------------------------------------------------------
    def _own(self, model: ActiveModel) -> None:
        """Drop pipelines built for another model, so they stop holding its modules."""
        if self._pipelines_model is not model:
            self._pipelines.clear()
            self._pipelines_model = model

    def pipeline_for(self, model: ActiveModel, mode: Mode) -> Any:
        """The diffusers pipeline for a mode, built around the model's shared components (no weight copies)."""
        self._own(model)
        pipe = self._pipelines.get(mode)
        if pipe is None:
            family = "sdxl" if model.arch.family == "sdxl" else "sd"
            cls = getattr(diffusers, _PIPELINE_CLASSES[(family, mode)])
            accepted = inspect.signature(cls.__init__).parameters
            args = {k: v for k, v in {**_NO_EXTRAS, **model.components}.items() if k in accepted}
            pipe = cls(**args)
            pipe.set_progress_bar_config(disable=True)
            self._pipelines[mode] = pipe
        return pipe

    # -- the run -------------------------------------------------------------------------------------
    def generate(
        self,
        request: GenerationRequest,
        on_step: StepCallback | None = None,
        notes: list[str] | None = None,
        maps: list[Image.Image] | None = None,
        *,
        extra_infotext: dict[str, Any] | None = None,
        step_hook: StepHook | None = None,
    ) -> Iterator[GeneratedImage]:
        """Yield each finished image (not yet saved); things the user should know are appended to ``notes``,
        and the ControlNet units' detected maps (those with ``save_detected_map``) to ``maps``. ``extra_infotext``
        adds fields to every image's infotext; ``step_hook`` sees (and may replace) the latents after each step
        (extensions' ``easel_denoising_step``)."""
        notes = [] if notes is None else notes
        if request.sd_upscale:
            yield from self._sd_upscale(request, on_step, notes, maps, extra_infotext or {}, step_hook)
            return
        yield from self._generate(request, on_step, notes, maps, extra_infotext, step_hook)

    def _generate(
        self,
        request: GenerationRequest,
        on_step: StepCallback | None,
        notes: list[str],
        maps: list[Image.Image] | None,
        extra_infotext: dict[str, Any] | None = None,
        step_hook: StepHook | None = None,
    ) -> Iterator[GeneratedImage]:
        # 1. Resolve the request against what is on disk and load or reuse the weights.
        model = self.weights.use(request.checkpoint)
        self._own(model)  # release the previous model's pipelines now, even if this job fails early
        vae = self.weights.vaes.resolve(request.vae, model.info)
        self.weights.vaes.apply(model, vae)  # in place: the pipelines keep their VAE module
        base_seed = random.randint(0, SEED_MAX) if request.seed == -1 else request.seed
        seeds = [base_seed + i for i in range(request.batch_size * request.n_iter)]

        # 2. Prepare the mode's inputs (resize, mask, crop) once for all batches.
        prepared = self._prepare(request, model, base_seed, notes)
        pipe = self.pipeline_for(model, prepared.pipeline_mode)
        plan = request.hires_plan()
        if plan is not None and model.arch.inpaint:
            raise GenerationFailed("enable_hr: hires fix on an inpainting checkpoint is not supported yet")
        self._set_vae_tiling(model, max(request.width, request.height, *((plan.width, plan.height) if plan else ())))
        # ControlNet units: per pass, since hires fix may leave a unit out of one ("Low res only"...).
        low = (lambda unit: unit.hr_option is not HiresOption.HIGH_RES_ONLY) if plan else (lambda unit: True)
        control, control_info = self._controls(request, model, base_seed, maps, low)
        control_hr = None
        if plan is not None:
            high = lambda unit: unit.hr_option is not HiresOption.LOW_RES_ONLY  # noqa: E731
            control_hr, _ = self._controls(request, model, base_seed, None, high, plan)

        # 3. Extra networks: the tags leave the text the encoder sees; LoRAs are on for this job only.
        encoded, uses, hr_uses = self._networks(request, plan is not None, notes)
        try:
            applied = self.weights.loras.apply(model, pipe, uses)
            if hr_uses is not None:  # the hires prompts' LoRAs differ: attach them now, so a bad one fails first
                applied += self.weights.loras.apply(model, pipe, hr_uses)
            texts = [encoded.prompt, encoded.negative_prompt, encoded.hr_prompt, encoded.hr_negative_prompt]
            words = self.weights.embeddings.prepare(model, pipe, [t for t in texts if t], notes)
            extra: dict[str, Any] = {**control_info, **(extra_infotext or {})}
            if applied:
                hashes = {a.use.name: a.short_hash for a in applied}
                extra["Lora hashes"] = ", ".join(f"{name}: {short}" for name, short in hashes.items())
            if words:
                extra["TI hashes"] = ", ".join(f"{word}: {short}" for word, short in words)
            passes = _Passes(control=control, plan=plan, control_hr=control_hr, step_hook=step_hook)
            if hr_uses is not None:
                passes.loras, passes.loras_hr = uses, hr_uses
            yield from self._batches(request, model, pipe, prepared, encoded, seeds, vae, extra, notes, on_step, passes)
        finally:
            self.weights.loras.deactivate(pipe)

    def _sd_upscale(
        self,
        request: GenerationRequest,
        on_step: StepCallback | None,
        notes: list[str],
        maps: list[Image.Image] | None,
        extra_infotext: dict[str, Any],
        step_hook: StepHook | None,
    ) -> Iterator[GeneratedImage]:
        """A1111's "SD upscale": the input upscaled, cut into overlapping tiles of the request's size, each tile
        img2img'd (its own crop is the "img2img input" of ControlNet units, so a tile ControlNet sees it), and the
        tiles faded together. The device only ever holds one tile's work, whatever the output size."""
        size = request.sd_upscale_size()
        assert size is not None and request.init_image is not None
        self.weights.use(request.checkpoint)  # fail on a bad model before the (possibly slow) upscale
        upscaled = self.weights.upscalers.upscale(
            request.init_image, request.sd_upscale_upscaler, *size, device=self.device.device,
            field="sd_upscale_upscaler",
        )  # fmt: skip
        layout = tiles.grid(*size, request.width, request.height, request.sd_upscale_overlap)
        base_seed = random.randint(0, SEED_MAX) if request.seed == -1 else request.seed
        extra = {
            "SD upscale": request.sd_upscale_scale,
            "SD upscale upscaler": request.sd_upscale_upscaler,
            "SD upscale overlap": request.sd_upscale_overlap,
            **extra_infotext,
        }
        for iteration in range(request.n_iter):
            seed = base_seed + iteration
            pieces: list[GeneratedImage] = []
            for index, tile in enumerate(layout):
                sub = request.model_copy(
                    update={
                        "sd_upscale": False,
                        "init_image": upscaled.crop(tile.box),
                        "width": tile.width,
                        "height": tile.height,
                        "n_iter": 1,
                        "seed": seed,
                        "resize_mode": ResizeMode.JUST_RESIZE,
                    }
                )
                step = _tile_steps(on_step, index, len(layout), iteration, request.n_iter)
                first = index == 0
                made = list(
                    self._generate(sub, step, notes if first else [], maps if first else None, extra, step_hook)
                )
                if not made:  # the user skipped this image: the rest of its tiles too
                    break
                pieces.extend(made)
            maps = None  # the first image's maps are enough
            if len(pieces) < len(layout):
                notes.append(f"skipped image {iteration + 1} of {request.n_iter}")
                continue
            joined = tiles.blend(layout, [p.image for p in pieces], *size)
            yield GeneratedImage(image=joined, seed=seed, infotext=pieces[0].infotext)

    def _controls(
        self,
        request: GenerationRequest,
        model: ActiveModel,
        seed: int,
        maps: list[Image.Image] | None,
        include: Callable[[ControlNetUnit], bool],
        plan: hires.HiresPlan | None = None,
    ) -> tuple[ControlHook | None, dict[str, str]]:
        """The enabled ControlNet units, detected and loaded: the hook that runs those ``include`` accepts (None
        when none has a weight) and every enabled unit's infotext entry, numbered as the extension numbers them.
        With ``plan`` the maps are made at the hires pass's size."""
        units = [(index, unit) for index, unit in enumerate(request.controlnet_units) if unit.enabled]
        if not units:
            return None, {}
        base = dict(model.components["unet"].config)
        width, height = (plan.width, plan.height) if plan else (request.width, request.height)
        image, mask, crop = fallback_inputs(
            request.init_image, request.mask, invert=request.inpainting_mask_invert,
            only_masked=request.mode is Mode.INPAINT and request.inpaint_full_res,
            padding=request.inpaint_full_res_padding, blur=request.mask_blur, width=request.width,
            height=request.height,
        )  # fmt: skip
        active: list[ActiveUnit] = []
        info: dict[str, str] = {}
        for number, (index, unit) in enumerate(units):
            detected = detect(
                unit,
                width=width,
                height=height,
                where=f"controlnet_units[{index}]",
                fallback_image=image,
                fallback_mask=mask,
                crop=crop,
                seed=seed,
                annotators=self.weights.settings.annotators_path,
            )
            loaded = self.weights.controlnets.load(unit.model, base, self.device.dtype, self.device.device)
            info[f"ControlNet {number}"] = unit.infotext(loaded.info.title, detected.resolution)
            if maps is not None and unit.save_detected_map:
                maps.append(detected.image)
            if unit.weight > 0 and include(unit):
                hint = torch.from_numpy(detected.hint).permute(2, 0, 1)[None].contiguous()
                active.append(
                    ActiveUnit(
                        loaded.model, hint, unit.weight, unit.guidance_start, unit.guidance_end, unit.control_mode
                    )
                )
        return (ControlHook(active, guided=request.cfg_scale > 1.0) if active else None), info

    def _networks(
        self, request: GenerationRequest, hires_on: bool, notes: list[str]
    ) -> tuple[GenerationRequest, list[LoraUse], list[LoraUse] | None]:
        """The request as the text encoder sees it (no ``<...>`` tags), the LoRAs its prompts ask for, and with
        hires fix on the LoRAs of the second pass's prompts when they differ (None: the same), as A1111 switches
        them between passes. An empty hires prompt is the first pass's."""
        prompt, positive = extract_networks(request.prompt, "prompt")
        negative, negative_tags = extract_networks(request.negative_prompt, "negative_prompt")
        uses = _lora_uses(positive + negative_tags, notes)
        hr_uses = None
        if hires_on and (request.hr_prompt or request.hr_negative_prompt):
            if request.hr_prompt:
                positive = extract_networks(request.hr_prompt, "hr_prompt")[1]
            if request.hr_negative_prompt:
                negative_tags = extract_networks(request.hr_negative_prompt, "hr_negative_prompt")[1]
            hr_notes: list[str] = []
            second = _lora_uses(positive + negative_tags, hr_notes)
            notes.extend(note for note in hr_notes if note not in notes)
            hr_uses = second if second != uses else None
        return request.model_copy(update={"prompt": prompt, "negative_prompt": negative}), uses, hr_uses

    def _batches(
        self,
        request: GenerationRequest,
        model: ActiveModel,
        pipe: Any,
        prepared: _Prepared,
        encoded: GenerationRequest,
        seeds: list[int],
        vae: Any,
        extra: dict[str, Any],
        notes: list[str],
        on_step: StepCallback | None,
        passes: _Passes,
    ) -> Iterator[GeneratedImage]:
        sampler_name, schedule = schedule_label(request.sampler_name, request.scheduler)
        plan = passes.plan
        if plan is not None:  # encoded first: the second pass's LoRAs (still on) change its text encoder
            hr_sampler, hr_schedule = self._hires_sampler(request)
            extra = {**hires.infotext_params(request, plan, *schedule_label(hr_sampler, hr_schedule)), **extra}
            passes.conditioning = self._hires_conditioning(model, encoded, request, plan)
        self._switch_loras(model, pipe, passes.loras)
        conditioning = self._conditioning(pipe, model, encoded, prepared, request.batch_size)  # once per job
        for iteration in range(request.n_iter):
            if iteration:
                self._switch_loras(model, pipe, passes.loras)
            batch_seeds = seeds[iteration * request.batch_size : (iteration + 1) * request.batch_size]
            # 3. Denoise: one scheduler per batch, CPU noise per image so a seed reproduces on any device.
            pipe.scheduler = build_scheduler(
                model.scheduler_config, request.sampler_name, request.scheduler, batch_seeds[0]
            )
            progress = _PassProgress(later=hires_run_steps(request, plan))
            try:
                callback = self._step_callback(
                    model, on_step, iteration, request.n_iter, conditioning, passes.control, progress, passes.step_hook
                )
                latents = self._denoise(
                    pipe, model, conditioning, passes.control, batch_seeds, callback,
                    num_inference_steps=request.steps, guidance_scale=request.cfg_scale, **prepared.pipe_kwargs,
                )  # fmt: skip
                if plan is not None:
                    latents = self._hires_pass(
                        request, model, latents, batch_seeds, passes, notes, on_step, iteration, progress
                    )
                with torch.inference_mode():
                    # 4. Decode with the NaN guard.
                    images = self._decode(pipe, model, latents, notes)
            except ImageSkipped:
                what = "image" if request.batch_size == 1 else "batch"
                notes.append(f"skipped {what} {iteration + 1} of {request.n_iter}")
                continue
            # 5. Paste back the unmasked area and describe each image.
            for image, seed in zip(images, batch_seeds, strict=True):
                image = self._finish(image, prepared)
                infotext = infotext_for(
                    request,
                    seed=seed,
                    sampler=sampler_name,
                    schedule=schedule,
                    model_name=model.info.model_name,
                    model_hash=model.info.shorthash,
                    vae_name=vae.name if vae else None,
                    vae_hash=vae.shorthash if vae else None,
                    extra=extra,
                )
                yield GeneratedImage(image=image, seed=seed, infotext=infotext)

    def _switch_loras(self, model: ActiveModel, pipe: Any, uses: list[LoraUse] | None) -> None:
        """Turn on one pass's LoRAs when a hires job's passes ask for different ones (None: nothing to switch).
        They are attached before the job starts, so this only sets the adapters' weights."""
        if uses is not None:
            self.weights.loras.apply(model, pipe, uses)

    @staticmethod
    def _tensor_inputs(model: ActiveModel) -> list[str]:
        return ["latents", "prompt_embeds"] + (["add_text_embeds"] if model.arch.family == "sdxl" else [])

    # -- hires fix ---------------------------------------------------------------------------------------
    @staticmethod
    def _hires_sampler(request: GenerationRequest) -> tuple[str, str]:
        sampler = request.hr_sampler_name if request.hr_sampler_name not in hires.SAME else request.sampler_name
        schedule = request.hr_scheduler if request.hr_scheduler not in hires.SAME else request.scheduler
        return sampler, schedule

    def _hires_conditioning(
        self, model: ActiveModel, encoded: GenerationRequest, request: GenerationRequest, plan: hires.HiresPlan
    ) -> StepConditioning:
        """The second pass's prompts (the hires prompt when given, tags removed) over the steps it runs."""
        prompt, _ = extract_networks(request.hr_prompt, "hr_prompt") if request.hr_prompt else (encoded.prompt, [])
        negative = encoded.negative_prompt
        if request.hr_negative_prompt:
            negative, _ = extract_networks(request.hr_negative_prompt, "hr_negative_prompt")
        second = encoded.model_copy(update={"prompt": prompt, "negative_prompt": negative, "steps": plan.steps})
        prepared = _Prepared(pipe_kwargs={"strength": request.denoising_strength})
        return self._conditioning(self.pipeline_for(model, Mode.IMG2IMG), model, second, prepared, request.batch_size)

    def _hires_pass(
        self,
        request: GenerationRequest,
        model: ActiveModel,
        latents: torch.Tensor,
        batch_seeds: list[int],
        passes: _Passes,
        notes: list[str],
        on_step: StepCallback | None,
        iteration: int,
        progress: _PassProgress,
    ) -> torch.Tensor:
        """A1111's second pass: upscale the first pass (in latent space, or decoded and through a pixel
        upscaler), then img2img it at ``denoising_strength`` on the same components."""
        plan, conditioning = passes.plan, passes.conditioning
        assert plan is not None and conditioning is not None
        pipe = self.pipeline_for(model, Mode.IMG2IMG)
        factor = int(getattr(pipe, "vae_scale_factor", 8))
        with torch.inference_mode():
            if plan.latent:
                start: Any = hires.upscale_latents(latents, plan.upscaler, plan.width, plan.height, factor, plan.crop)
            else:
                decoded = self._decode(pipe, model, latents, notes)
                upscale = self.weights.upscalers.upscale
                size, device = (plan.width, plan.height), self.device.device
                start = [
                    upscale(image, plan.upscaler, *size, crop=plan.crop, device=device, field="hr_upscaler")
                    for image in decoded
                ]
        sampler, schedule = self._hires_sampler(request)
        pipe.scheduler = build_scheduler(model.scheduler_config, sampler, schedule, batch_seeds[0])
        self._switch_loras(model, pipe, passes.loras_hr)
        progress.start_second()
        callback = self._step_callback(
            model, on_step, iteration, request.n_iter, conditioning, passes.control_hr, progress, passes.step_hook
        )
        return self._denoise(
            pipe, model, conditioning, passes.control_hr, batch_seeds, callback,
            image=start, strength=request.denoising_strength, num_inference_steps=plan.steps,
            guidance_scale=request.cfg_scale,
        )  # fmt: skip

    def _denoise(
        self,
        pipe: Any,
        model: ActiveModel,
        conditioning: StepConditioning,
        control: ControlHook | None,
        seeds: list[int],
        callback: Callable[..., dict[str, Any]],
        **pipe_kwargs: Any,
    ) -> torch.Tensor:
        """One denoising pass to latents: CPU noise per image (a seed reproduces on any device), the pass's
        ControlNet hook attached, the step callback for progress, prompt editing and extensions."""
        generators = [torch.Generator("cpu").manual_seed(s) for s in seeds]
        with torch.inference_mode(), _attached(control, model):
            return pipe(
                **self._embeds_args(conditioning, 0, model),
                generator=generators,
                output_type="latent",
                callback_on_step_end=callback,
                callback_on_step_end_tensor_inputs=self._tensor_inputs(model),
                **pipe_kwargs,
            ).images

    # -- steps ------------------------------------------------------------------------------------------
    def _conditioning(
        self, pipe: Any, model: ActiveModel, request: GenerationRequest, prepared: _Prepared, count: int
    ) -> StepConditioning:
        """The prompts' conditioning per step range (A1111 syntax: weights, chunks, editing, alternation).

        Editing steps count the steps that actually run: all of them in txt2img, ``steps x strength`` in
        img2img and inpaint, as the sampler skips the rest."""
        steps = request.steps
        if "strength" in prepared.pipe_kwargs:
            steps = max(1, int(request.steps * prepared.pipe_kwargs["strength"]))
        encoder = PromptEncoder(pipe, model.arch.family == "sdxl", request.clip_skip)
        with torch.inference_mode():
            return build_conditioning(encoder, request.prompt, request.negative_prompt, steps, count)

    @staticmethod
    def _embeds_args(conditioning: StepConditioning, index: int, model: ActiveModel) -> dict[str, Any]:
        _end, positive, negative, pooled, negative_pooled = conditioning.ranges[index]
        args: dict[str, Any] = {"prompt_embeds": positive, "negative_prompt_embeds": negative}
        if model.arch.family == "sdxl":
            args |= {"pooled_prompt_embeds": pooled, "negative_pooled_prompt_embeds": negative_pooled}
        return args

    def _prepare(self, request: GenerationRequest, model: ActiveModel, seed: int, notes: list[str]) -> _Prepared:
        prep = self._prepare_mode(request, model, seed, notes)
        if model.arch.inpaint and request.mode is not Mode.INPAINT:
            # A 9-channel inpainting model always needs an image and a mask: as A1111 does, txt2img and img2img
            # run it with the whole picture masked (txt2img on a neutral grey image at full strength).
            w, h = request.width, request.height
            image = prep.init_image or Image.new("RGB", (w, h), (127, 127, 127))
            prep.pipe_kwargs = {
                "image": image,
                "mask_image": Image.new("L", (w, h), 255),
                "strength": prep.pipe_kwargs.get("strength", 1.0),
                "width": w,
                "height": h,
            }
        prep.pipeline_mode = Mode.INPAINT if model.arch.inpaint else request.mode
        return prep

    def _prepare_mode(self, request: GenerationRequest, model: ActiveModel, seed: int, notes: list[str]) -> _Prepared:
        prep = _Prepared()
        w, h = request.width, request.height
        if request.mode is Mode.TXT2IMG:
            prep.pipe_kwargs = {"width": w, "height": h}
            return prep
        assert request.init_image is not None
        source = request.init_image.convert("RGB")
        strength = request.denoising_strength
        if int(request.steps * strength) < 1:
            strength = 1.0 / request.steps
            notes.append(f"denoising strength raised to {strength:g} so that at least one step runs")
        if request.mode is Mode.IMG2IMG:
            prep.init_image = imageops.resize_image(source, w, h, request.resize_mode)
            prep.pipe_kwargs = {"image": prep.init_image, "strength": strength}
            return prep

        # Inpaint: the output keeps the input's size in "only masked" mode, else the requested size.
        assert request.mask is not None
        if request.inpaint_full_res:
            original = source
            mask = request.mask
        else:
            original = imageops.resize_image(source, w, h, request.resize_mode)
            mask = imageops.resize_image(request.mask.convert("L"), w, h, request.resize_mode)
        hard, soft = imageops.prepare_mask(mask, invert=request.inpainting_mask_invert, blur=request.mask_blur)
        if hard.getbbox() is None:
            raise GenerationFailed("mask: the mask is empty (nothing to inpaint); paint the area to change in white")
        prep.original, prep.soft_mask = original, soft
        work_image, work_mask = original, hard
        if request.inpaint_full_res:
            region = imageops.masked_region(hard, request.inpaint_full_res_padding, w, h)
            assert region is not None
            prep.region = region
            work_image = original.crop(region.box).resize((w, h), imageops.LANCZOS)
            work_mask = hard.crop(region.box).resize((w, h), Image.Resampling.NEAREST)
        if request.inpainting_fill is MaskedContent.FILL:
            work_image = imageops.fill_masked(work_image, work_mask)
        prep.init_image = work_image
        prep.pipe_kwargs = {"image": work_image, "mask_image": work_mask, "strength": strength, "width": w, "height": h}
        if request.inpainting_fill in (MaskedContent.LATENT_NOISE, MaskedContent.LATENT_NOTHING):
            prep.pipe_kwargs.update(self._latent_fill(model, work_image, work_mask, request, seed))
        return prep

    def _latent_fill(
        self, model: ActiveModel, image: Image.Image, mask: Image.Image, request: GenerationRequest, seed: int
    ) -> dict[str, Any]:
        """ "Latent noise" / "latent nothing": start the masked latents from noise or zeros instead of the image.

        The inpaint pipelines accept 4-channel latents as ``image`` and use them as the image latents.
        """
        pipe = self.pipeline_for(model, Mode.INPAINT)
        vae = model.components["vae"]
        processor = pipe.image_processor
        with torch.inference_mode():
            pixels = processor.preprocess(image).to(vae.device, vae.dtype)
            latents = vae.encode(pixels).latent_dist.mode() * vae.config.scaling_factor
            small = mask.convert("L").resize((latents.shape[-1], latents.shape[-2]), Image.Resampling.BILINEAR)
            keep = torch.from_numpy(np.asarray(small) < 128)[None, None].to(latents.device, latents.dtype)
            if request.inpainting_fill is MaskedContent.LATENT_NOISE:
                gen = torch.Generator("cpu").manual_seed(seed)
                fill = torch.randn(latents.shape, generator=gen).to(latents.device, latents.dtype)
            else:
                fill = torch.zeros_like(latents)
            # Given latents as ``image``, the pipelines need the masked-image latents too (9-channel models use
            # them as conditioning; 4-channel ones would otherwise try to mask the latents at pixel size).
            unmasked = torch.from_numpy(np.asarray(mask.convert("L")) < 128)[None, None]
            masked = pixels * unmasked.to(pixels.device, pixels.dtype)
            masked_latents = vae.encode(masked).latent_dist.mode() * vae.config.scaling_factor
        return {"image": latents * keep + fill * (1 - keep), "masked_image_latents": masked_latents}

    def _step_callback(
        self,
        model: ActiveModel,
        on_step: StepCallback | None,
        iteration: int,
        iterations: int,
        conditioning: StepConditioning,
        control: ControlHook | None = None,
        progress: _PassProgress | None = None,
        step_hook: StepHook | None = None,
    ) -> Callable[..., dict[str, Any]]:
        preview = self._previewer(model)
        sdxl = model.arch.family == "sdxl"
        current = [0]
        run_steps = conditioning.ranges[-1][0] if conditioning.changes else 0

        def callback(pipe: Any, i: int, t: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            if control is not None:
                control.advance(i + 1, pipe.num_timesteps)
            replaced: dict[str, Any] = {}
            if step_hook is not None:
                new_latents = step_hook(i + 1, pipe.num_timesteps, iteration, float(t), tensors["latents"])
                if new_latents is not None:
                    replaced["latents"] = tensors["latents"] = new_latents
            if on_step is not None:
                latents = tensors["latents"]
                scale = int(getattr(pipe, "vae_scale_factor", 8))
                step, total = progress.report(i, pipe.num_timesteps) if progress else (i + 1, pipe.num_timesteps)
                on_step(
                    StepInfo(
                        step=step,
                        total_steps=total,
                        iteration=iteration,
                        iterations=iterations,
                        preview=lambda: preview(latents, scale),
                    )
                )
            if not conditioning.changes:
                return replaced
            # The next step, in the user's steps (second-order samplers call back more often than that).
            upcoming = min(run_steps, (i + 1) * run_steps // max(pipe.num_timesteps, 1) + 1)
            index = conditioning.at(upcoming)
            if index == current[0]:
                return replaced
            current[0] = index
            _end, positive, negative, pooled, negative_pooled = conditioning.ranges[index]
            cfg = pipe.do_classifier_free_guidance
            swapped = {**replaced, "prompt_embeds": torch.cat([negative, positive]) if cfg else positive}
            if sdxl:
                swapped["add_text_embeds"] = torch.cat([negative_pooled, pooled]) if cfg else pooled
            return swapped

        return callback

    def _previewer(self, model: ActiveModel) -> Callable[[torch.Tensor, int], Image.Image]:
        """How this model's previews are drawn: its own fitted projection (the demo model), else TAESD when its
        decoder is in ``models/VAE-approx``, else the cheap SD projection. A TAESD failure falls back for good."""
        family = model.arch.family
        projection = PreviewProjection.from_metadata(model.metadata)
        taesd = None
        if projection is None and self.previews is not None:
            taesd = self.previews.decoder_for(family)
        failed: list[bool] = []

        def draw(latents: torch.Tensor, scale: int) -> Image.Image:
            if taesd is not None and not failed and latents.shape[1] == 4:
                try:
                    assert self.previews is not None
                    return self.previews.preview(taesd, latents)
                except RuntimeError as exc:
                    log.warning("TAESD preview failed (%s); using the cheap preview for this job", exc)
                    failed.append(True)
            return cheap_preview(latents, family, projection, scale)

        return draw

    def _decode(self, pipe: Any, model: ActiveModel, latents: torch.Tensor, notes: list[str]) -> list[Image.Image]:
        """Decode latents to images; a VAE that yields NaN in half precision is re-run in fp32, never saved black."""
        if not torch.isfinite(latents).all():
            raise GenerationFailed("the model produced NaN or infinite latents (try fp32 with --precision fp32)")
        vae = model.components["vae"]
        scaled = latents / vae.config.scaling_factor
        image = vae.decode(scaled.to(vae.dtype), return_dict=False)[0]
        if not torch.isfinite(image).all():
            if vae.dtype == torch.float32:
                raise GenerationFailed("the VAE produced NaN even in fp32; the VAE weights are likely broken")
            log.warning("VAE produced NaN in %s; re-decoding in fp32", vae.dtype)
            vae.to(torch.float32)  # stays in fp32 for this model from now on
            notes.append("VAE produced NaN in half precision; decoded in fp32")
            image = vae.decode(scaled.to(torch.float32), return_dict=False)[0]
            if not torch.isfinite(image).all():
                raise GenerationFailed("the VAE produced NaN even in fp32; the VAE weights are likely broken")
        return pipe.image_processor.postprocess(image.float(), output_type="pil")

    def _finish(self, image: Image.Image, prepared: _Prepared) -> Image.Image:
        if prepared.original is None or prepared.soft_mask is None:
            return image
        if prepared.region is not None:
            return imageops.paste_region(prepared.original, image, prepared.region, prepared.soft_mask)
        return imageops.paste_back(prepared.original, image, prepared.soft_mask)

    def _set_vae_tiling(self, model: ActiveModel, largest_side: int) -> None:
        vae = model.components["vae"]
        big = largest_side > VAE_TILING_AUTO_PIXELS
        if self.vae_tiling == "on" or (self.vae_tiling == "auto" and big):
            vae.enable_tiling()
        else:
            vae.disable_tiling()


@dataclass
class _Passes:
    """What each denoising pass of a job runs with: its ControlNet hook, the extensions' step hook, and for hires
    fix the second pass's plan, hook, conditioning and, when its prompts ask for other LoRAs, both passes' sets."""

    control: ControlHook | None = None
    plan: hires.HiresPlan | None = None
    control_hr: ControlHook | None = None
    conditioning: StepConditioning | None = None
    step_hook: StepHook | None = None  # extensions' easel_denoising_step
    loras: list[LoraUse] | None = None  # None: the job's LoRAs stay on for both passes
    loras_hr: list[LoraUse] | None = None


def _lora_uses(tags: list[Any], notes: list[str]) -> list[LoraUse]:
    """The LoRAs among a prompt's network tags; another kind is noted as ignored."""
    uses: list[LoraUse] = []
    for tag in tags:
        if tag.kind in LORA_KINDS:
            uses.append(LoraUse(tag.name, tag.te_weight, tag.unet_weight))
        else:
            notes.append(f"ignored <{tag.kind}:{tag.name}>: Easel has no '{tag.kind}' networks")
    return uses


def hires_run_steps(request: GenerationRequest, plan: hires.HiresPlan | None) -> int:
    """The steps the second pass will run (img2img runs ``steps x strength``), for the progress total."""
    if plan is None:
        return 0
    return min(plan.steps, max(1, int(plan.steps * request.denoising_strength)))


class _PassProgress:
    """Progress over both passes of a hires job: the first pass counts towards a total that includes the
    second, and the second continues from where the first ended."""

    def __init__(self, later: int) -> None:
        self.later = later
        self.offset = 0
        self.first_total = 0

    def report(self, i: int, pass_total: int) -> tuple[int, int]:
        if self.offset == 0 and self.later:
            self.first_total = pass_total
            return i + 1, pass_total + self.later
        return self.offset + i + 1, self.offset + pass_total

    def start_second(self) -> None:
        self.offset = self.first_total
        self.later = 0


def _attached(control: ControlHook | None, model: ActiveModel) -> contextlib.AbstractContextManager[Any]:
    """The ControlNet hook on the model's U-Net for one pass (nothing without units)."""
    if control is None:
        return contextlib.nullcontext()
    control.advance(0, 1)
    return control.attached(model.components["unet"])


def _tile_steps(
    on_step: StepCallback | None, index: int, count: int, iteration: int, iterations: int
) -> StepCallback | None:
    """Progress of one tile as progress over the whole upscaled image (all its tiles' steps)."""
    if on_step is None:
        return None

    def report(info: StepInfo) -> None:
        on_step(
            StepInfo(
                step=index * info.total_steps + info.step,
                total_steps=count * info.total_steps,
                iteration=iteration,
                iterations=iterations,
                preview=info.preview,
            )
        )

    return report
