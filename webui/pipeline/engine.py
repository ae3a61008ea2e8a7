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
from PIL import Image, ImageOps

from webui.controlnet.apply import ActiveUnit, ControlHook
from webui.controlnet.detect import detect
from webui.errors import GenerationFailed, ImageSkipped
from webui.networks.lora import LORA_KINDS, LoraUse
from webui.outputs.infotext import infotext_for
from webui.pipeline import imageops
from webui.pipeline.device import DeviceConfig
from webui.pipeline.preview import PreviewProjection, cheap_preview
from webui.pipeline.schedulers import build_scheduler, schedule_label
from webui.pipeline.taesd import TaesdPreviews
from webui.prompts.conditioning import PromptEncoder, StepConditioning, build_conditioning
from webui.prompts.parser import extract_networks
from webui.types import SEED_MAX, GeneratedImage, GenerationRequest, MaskedContent, Mode
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
    ) -> Iterator[GeneratedImage]:
        """Yield each finished image (not yet saved); things the user should know are appended to ``notes``,
        and the ControlNet units' detected maps (those with ``save_detected_map``) to ``maps``."""
        notes = [] if notes is None else notes
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
        self._set_vae_tiling(model, request)
        control, control_info = self._controls(request, model, prepared, base_seed, maps)

        # 3. Extra networks: the tags leave the text the encoder sees; LoRAs are on for this job only.
        encoded, uses = self._networks(request, notes)
        try:
            applied = self.weights.loras.apply(model, pipe, uses)
            texts = [encoded.prompt, encoded.negative_prompt]
            words = self.weights.embeddings.prepare(model, pipe, texts, notes)
            extra: dict[str, Any] = dict(control_info)
            if applied:
                extra["Lora hashes"] = ", ".join(f"{a.use.name}: {a.short_hash}" for a in applied)
            if words:
                extra["TI hashes"] = ", ".join(f"{word}: {short}" for word, short in words)
            hooked = control.attached(model.components["unet"]) if control else contextlib.nullcontext()
            with hooked:
                yield from self._batches(
                    request, model, pipe, prepared, encoded, seeds, vae, extra, notes, on_step, control
                )
        finally:
            self.weights.loras.deactivate(pipe)

    def _controls(
        self,
        request: GenerationRequest,
        model: ActiveModel,
        prepared: _Prepared,
        seed: int,
        maps: list[Image.Image] | None,
    ) -> tuple[ControlHook | None, dict[str, str]]:
        """The enabled ControlNet units, detected and loaded: the hook that runs them (None when no unit has a
        weight) and their infotext entries, numbered as the extension numbers enabled units."""
        units = [(index, unit) for index, unit in enumerate(request.controlnet_units) if unit.enabled]
        if not units:
            return None, {}
        base = dict(model.components["unet"].config)
        crop = (prepared.original.size, prepared.region.box) if prepared.original and prepared.region else None
        mask = request.mask
        if mask is not None and request.inpainting_mask_invert:
            mask = ImageOps.invert(mask.convert("L"))
        active: list[ActiveUnit] = []
        info: dict[str, str] = {}
        for number, (index, unit) in enumerate(units):
            detected = detect(
                unit,
                width=request.width,
                height=request.height,
                where=f"controlnet_units[{index}]",
                fallback_image=request.init_image,
                fallback_mask=mask,
                crop=crop,
                seed=seed,
                annotators=self.weights.settings.annotators_path,
            )
            loaded = self.weights.controlnets.load(unit.model, base, self.device.dtype, self.device.device)
            info[f"ControlNet {number}"] = unit.infotext(loaded.info.title, detected.resolution)
            if maps is not None and unit.save_detected_map:
                maps.append(detected.image)
            if unit.weight > 0:
                hint = torch.from_numpy(detected.hint).permute(2, 0, 1)[None].contiguous()
                active.append(
                    ActiveUnit(
                        loaded.model, hint, unit.weight, unit.guidance_start, unit.guidance_end, unit.control_mode
                    )
                )
        return (ControlHook(active, guided=request.cfg_scale > 1.0) if active else None), info

    def _networks(self, request: GenerationRequest, notes: list[str]) -> tuple[GenerationRequest, list[LoraUse]]:
        """The request as the text encoder sees it (no ``<...>`` tags) and the LoRAs its prompts ask for."""
        prompt, positive = extract_networks(request.prompt, "prompt")
        negative, negative_tags = extract_networks(request.negative_prompt, "negative_prompt")
        uses: list[LoraUse] = []
        for tag in positive + negative_tags:
            if tag.kind in LORA_KINDS:
                uses.append(LoraUse(tag.name, tag.te_weight, tag.unet_weight))
            else:
                notes.append(f"ignored <{tag.kind}:{tag.name}>: Easel has no '{tag.kind}' networks")
        return request.model_copy(update={"prompt": prompt, "negative_prompt": negative}), uses

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
        control: ControlHook | None = None,
    ) -> Iterator[GeneratedImage]:
        sampler_name, schedule = schedule_label(request.sampler_name, request.scheduler)
        conditioning = self._conditioning(pipe, model, encoded, prepared, request.batch_size)  # once per job
        for iteration in range(request.n_iter):
            batch_seeds = seeds[iteration * request.batch_size : (iteration + 1) * request.batch_size]
            # 3. Denoise: one scheduler per batch, CPU noise per image so a seed reproduces on any device.
            pipe.scheduler = build_scheduler(
                model.scheduler_config, request.sampler_name, request.scheduler, batch_seeds[0]
            )
            generators = [torch.Generator("cpu").manual_seed(s) for s in batch_seeds]
            if control is not None:
                control.advance(0, request.steps)
            try:
                with torch.inference_mode():
                    callback = self._step_callback(model, on_step, iteration, request.n_iter, conditioning, control)
                    inputs = ["latents", "prompt_embeds"] + (["add_text_embeds"] if model.arch.family == "sdxl" else [])
                    latents = pipe(
                        **self._embeds_args(conditioning, 0, model),
                        num_inference_steps=request.steps,
                        guidance_scale=request.cfg_scale,
                        generator=generators,
                        output_type="latent",
                        callback_on_step_end=callback,
                        callback_on_step_end_tensor_inputs=inputs,
                        **prepared.pipe_kwargs,
                    ).images
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
    ) -> Callable[..., dict[str, Any]]:
        preview = self._previewer(model)
        sdxl = model.arch.family == "sdxl"
        current = [0]
        run_steps = conditioning.ranges[-1][0] if conditioning.changes else 0

        def callback(pipe: Any, i: int, t: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            if control is not None:
                control.advance(i + 1, pipe.num_timesteps)
            if on_step is not None:
                latents = tensors["latents"]
                scale = int(getattr(pipe, "vae_scale_factor", 8))
                on_step(
                    StepInfo(
                        step=i + 1,
                        total_steps=pipe.num_timesteps,
                        iteration=iteration,
                        iterations=iterations,
                        preview=lambda: preview(latents, scale),
                    )
                )
            if not conditioning.changes:
                return {}
            # The next step, in the user's steps (second-order samplers call back more often than that).
            upcoming = min(run_steps, (i + 1) * run_steps // max(pipe.num_timesteps, 1) + 1)
            index = conditioning.at(upcoming)
            if index == current[0]:
                return {}
            current[0] = index
            _end, positive, negative, pooled, negative_pooled = conditioning.ranges[index]
            cfg = pipe.do_classifier_free_guidance
            swapped = {"prompt_embeds": torch.cat([negative, positive]) if cfg else positive}
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

    def _set_vae_tiling(self, model: ActiveModel, request: GenerationRequest) -> None:
        vae = model.components["vae"]
        big = max(request.width, request.height) > VAE_TILING_AUTO_PIXELS
        if self.vae_tiling == "on" or (self.vae_tiling == "auto" and big):
            vae.enable_tiling()
        else:
            vae.disable_tiling()
