"""A1111's ``/sdapi/v1/*`` routes over the generation service, so existing clients work unchanged.

Generation routes block until the job ends, as A1111's do, but run through the same queue as the UI: a client's
job waits its turn instead of taking a global lock. An interrupted job answers 200 with the images it finished
(A1111 does the same). Errors are JSON naming the field; the status codes are A1111's where it has one.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Request

from webui import samplers
from webui.api import a1111_requests as convert
from webui.api.schemas import (
    ExtraSingleImageBody,
    ExtraSingleImageResponse,
    GenerationResponse,
    Img2ImgBody,
    PngInfoBody,
    PngInfoResponse,
    ProgressResponse,
    ProgressState,
    SamplerItem,
    SchedulerItem,
    SdModelItem,
    SdVaeItem,
    Txt2ImgBody,
    UpscalerItem,
)
from webui.errors import EaselError, InvalidRequest, JobCancelled, ModelNotFound
from webui.images import decode_image, encode_png_base64, open_base64_image
from webui.outputs.infotext import parse_infotext, read_infotext
from webui.pipeline.hires import LATENT_UPSCALERS
from webui.service.jobs import Job
from webui.service.service import GenerationService
from webui.types import Mode
from webui.upscalers.library import BUILT_IN as BUILT_IN_UPSCALERS
from webui.weights import formats
from webui.weights.registry import CheckpointInfo

MAX_UPSCALED_SIDE = 8192
# Options that map one-to-one onto a Settings-tab preference: A1111 name -> Easel preference.
PREFERENCE_OPTIONS = {
    "sd_vae": "sd_vae",
    "CLIP_stop_at_last_layers": "clip_skip",
    "show_progress_every_n_steps": "preview_every",
    "samples_save": "save_images",
    "samples_format": "output_format",
    "jpeg_quality": "jpeg_quality",
    "enable_pnginfo": "save_infotext",
    "outdir_txt2img_samples": "txt2img_folder",
    "outdir_img2img_samples": "img2img_folder",
}


def owner_of(request: Request) -> str | None:
    """The authenticated user (set by the auth middleware), or None when auth is off."""
    return getattr(request.state, "user", None)


@dataclass
class OptionChanges:
    """Checked option values, ready to apply: Settings-tab preferences and the chosen checkpoint."""

    preferences: dict[str, Any] = field(default_factory=dict)
    checkpoint: CheckpointInfo | None = None


class ApiOptions:
    """A1111's options as both APIs keep them between calls, and the one way a body becomes a queued job.

    ``sd_model_checkpoint`` is a choice (what ``POST /options`` set, else the default checkpoint), kept apart from
    whichever model happens to be loaded: a call's ``override_settings`` loads another model for that call only,
    and every call names the model it runs on, so the next call without an override goes back to the choice, as
    A1111 restores its option afterwards. The choice lives in memory (a restart goes back to the default, or
    ``--ckpt``); the other options are the Settings tab's saved preferences.
    """

    def __init__(self, service: GenerationService) -> None:
        self.service = service
        self._chosen: str | None = None  # a checkpoint name; None: the default (one attribute: atomic to swap)

    def checkpoint(self) -> str | None:
        """The chosen checkpoint's name, else the default's (None when there is no usable one)."""
        if self._chosen is not None:
            return self._chosen
        default = self.service.default_checkpoint()
        return default.name if default is not None else None

    def checkpoint_info(self) -> CheckpointInfo | None:
        """The chosen checkpoint as listed now (None when its file is gone: the next call names the option)."""
        name = self.checkpoint()
        if name is None:
            return None
        try:
            return self.service.engine.weights.checkpoints.get(name)
        except ModelNotFound:
            return None

    def check(self, values: dict[str, Any], prefix: str = "") -> OptionChanges:
        """The changes ``values`` (A1111 option names) ask for, all checked before any applies; an error names the
        option as sent (``prefix`` + its name). Keys Easel does not have are ignored, as A1111 ignores them."""
        weights = self.service.engine.weights
        names = {easel: prefix + a1111 for a1111, easel in PREFERENCE_OPTIONS.items()}
        names |= {"checkpoint": f"{prefix}sd_model_checkpoint", "vae": f"{prefix}sd_vae"}
        changes = OptionChanges(
            {easel: values[a1111] for a1111, easel in PREFERENCE_OPTIONS.items() if a1111 in values}
        )
        try:
            if "sd_vae" in changes.preferences:
                vae = changes.preferences["sd_vae"]
                if not isinstance(vae, str):
                    raise InvalidRequest("sd_vae", f"must be a VAE name, got {vae!r}")
                weights.vaes.check(vae)
            checkpoint = values.get("sd_model_checkpoint")
            if checkpoint is not None:
                if not isinstance(checkpoint, str):
                    raise InvalidRequest("checkpoint", f"must be a checkpoint title, got {checkpoint!r}")
                changes.checkpoint = weights.checkpoints.get(checkpoint)
            if changes.preferences:
                self.service.preferences.check(**changes.preferences)
        except (InvalidRequest, ModelNotFound) as exc:
            raise convert.a1111_error(exc, names) from None
        return changes

    def apply(self, changes: OptionChanges, owner: str | None, *, load: bool) -> None:
        """Make checked changes the options; ``load`` loads the checkpoint now (``POST /options``, as A1111),
        otherwise the next call that uses it does."""
        if changes.checkpoint is not None:
            if load:
                self.service.load_checkpoint(changes.checkpoint.name, owner=owner).wait()
            self._chosen = changes.checkpoint.name
        if changes.preferences:
            self.service.update_preferences(**changes.preferences)

    def submit(self, body: Txt2ImgBody, mode: Mode, owner: str | None) -> Job:
        """Queue the job an A1111 body describes, on the chosen checkpoint unless it overrides it; errors name
        A1111's fields. With ``override_settings_restore_afterwards`` false the call's overrides become the
        options once the job is accepted (checked first, so a refused call changes nothing)."""
        kept: OptionChanges | None = None
        try:
            gen = convert.build_request(
                body,
                mode,
                self.service.preferences.current,
                self.service.rename_loras,
                checkpoint=self.checkpoint(),
                upscaler_names=self.service.upscaler_names() if body.script_name else None,
                plugins=self.service.plugins,
            )
            if body.override_settings and not body.override_settings_restore_afterwards:
                kept = self.check(body.override_settings, prefix="override_settings.")
            job = self.service.submit(gen, owner=owner)
        except (InvalidRequest, ModelNotFound) as exc:
            raise convert.a1111_error(exc, convert.a1111_names(body)) from None
        if kept is not None:
            self.apply(kept, owner, load=False)
        return job


def build_router(service: GenerationService, flags: dict[str, Any], options: ApiOptions) -> APIRouter:
    router = APIRouter(prefix="/sdapi/v1", tags=["A1111 compatible"])
    weights = service.engine.weights

    # -- generation --------------------------------------------------------------------------------------
    def run(body: Txt2ImgBody, mode: Mode, request: Request) -> GenerationResponse:
        job = options.submit(body, mode, owner_of(request))
        try:
            result = job.wait()
        except JobCancelled:
            result = job.result  # the images finished before the interrupt, as A1111 returns them
            if result is None:
                raise
        active = weights.active
        name = active.info.model_name if active else ""
        images = convert.encode_images(result) if body.send_images else []
        return GenerationResponse(
            images=images,
            parameters=convert.echo_parameters(body),
            info=convert.info_json(result, name, active.info.shorthash if active else None),
        )

    @router.post("/txt2img", response_model=GenerationResponse)
    def txt2img(body: Txt2ImgBody, request: Request) -> GenerationResponse:
        return run(body, Mode.TXT2IMG, request)

    @router.post("/img2img", response_model=GenerationResponse)
    def img2img(body: Img2ImgBody, request: Request) -> GenerationResponse:
        return run(body, Mode.INPAINT if body.mask else Mode.IMG2IMG, request)

    # -- progress and control ----------------------------------------------------------------------------
    @router.get("/progress", response_model=ProgressResponse)
    def progress(skip_current_image: bool = False) -> ProgressResponse:
        job = service.current
        if job is None:
            return ProgressResponse(
                progress=0.0, eta_relative=0.0, state=ProgressState(job_count=len(service.pending()))
            )
        p = job.progress
        preview = None
        if p.preview is not None and not skip_current_image:
            preview = encode_png_base64(p.preview)
        stamp = time.strftime("%Y%m%d%H%M%S", time.localtime(job.started or job.created))
        state = ProgressState(
            skipped=job.skip_requested(p.image_index),
            interrupted=job.cancel_requested,
            job=f"job {p.image_index + 1}/{max(p.image_count, 1)}" if p.image_count else "",
            job_count=max(p.image_count, 1) + len(service.pending()),
            job_timestamp=stamp,
            job_no=p.image_index,
            sampling_step=p.step,
            sampling_steps=p.total_steps,
        )
        return ProgressResponse(
            progress=p.fraction,
            eta_relative=p.eta_seconds or 0.0,
            state=state,
            current_image=preview,
            textinfo=p.message or None,
        )

    def on_current(request: Request, action: str) -> dict[str, Any]:
        """Interrupt or skip the running job, as A1111 does; with auth on, only the caller's own job."""
        job = service.current
        if job is not None and job.request is not None:
            user = owner_of(request)
            with contextlib.suppress(PermissionError):
                if user is None:
                    getattr(job, action)()
                else:
                    getattr(service, action)(job.id, owner=user)
        return {}

    @router.post("/interrupt")
    def interrupt(request: Request) -> dict[str, Any]:
        return on_current(request, "cancel")

    @router.post("/skip")
    def skip(request: Request) -> dict[str, Any]:
        return on_current(request, "skip")

    # -- options ------------------------------------------------------------------------------------------
    @router.get("/options")
    def get_options() -> dict[str, Any]:
        """The options: the chosen checkpoint (not whatever an override loaded last) and the saved preferences."""
        prefs = service.preferences.current
        values: dict[str, Any] = {a1111: getattr(prefs, easel) for a1111, easel in PREFERENCE_OPTIONS.items()}
        chosen = options.checkpoint_info()
        values["sd_model_checkpoint"] = chosen.title if chosen is not None else options.checkpoint()
        values["sd_checkpoint_hash"] = chosen.sha256 if chosen is not None else None
        values["live_previews_enable"] = prefs.preview_every > 0
        values["quicksettings_list"] = ["sd_model_checkpoint", "sd_vae", "CLIP_stop_at_last_layers"]
        return values

    @router.post("/options")
    def set_options(body: dict[str, Any], request: Request) -> dict[str, Any]:
        """Set and persist options; an unknown checkpoint or VAE, or a bad value, is refused before anything
        changes. A checkpoint is loaded now, as A1111 does, and becomes the one later calls use."""
        options.apply(options.check(body), owner_of(request), load=True)
        return {}

    @router.get("/cmd-flags")
    def cmd_flags() -> dict[str, Any]:
        return flags

    # -- lists --------------------------------------------------------------------------------------------
    @router.get("/sd-models", response_model=list[SdModelItem])
    def sd_models() -> list[SdModelItem]:
        return [
            SdModelItem(
                title=c.title,
                model_name=c.model_name,
                hash=c.shorthash,
                sha256=c.sha256,
                filename=str(c.path),
                config=None,
            )
            for c in weights.checkpoints.list()
        ]

    @router.get("/sd-vae", response_model=list[SdVaeItem])
    def sd_vae() -> list[SdVaeItem]:
        return [SdVaeItem(model_name=v.name, filename=str(v.path)) for v in weights.vaes.registry.list()]

    @router.get("/samplers", response_model=list[SamplerItem])
    def sampler_list() -> list[SamplerItem]:
        return [
            SamplerItem(
                name=s.name,
                aliases=list(s.aliases),
                options={
                    "scheduler": s.default_schedule,
                    "second_order": s.second_order,
                    "brownian_noise": s.stochastic,
                },
            )
            for s in samplers.SAMPLERS
        ]

    @router.get("/schedulers", response_model=list[SchedulerItem])
    def scheduler_list() -> list[SchedulerItem]:
        return [
            SchedulerItem(name=s.name, label=s.label, aliases=list(s.aliases) or None) for s in samplers.SCHEDULE_TYPES
        ]

    @router.get("/upscalers", response_model=list[UpscalerItem])
    def upscalers() -> list[UpscalerItem]:
        """Built-in resampling, then the ``models/ESRGAN`` files (their scale is known once one has run)."""
        items = [
            UpscalerItem(name=n, model_name=None, model_path=None, model_url=None, scale=4) for n in BUILT_IN_UPSCALERS
        ]
        for info in weights.upscalers.registry.list():
            scale = weights.upscalers.scale_of(info)
            items.append(
                UpscalerItem(
                    name=info.model_name, model_name="ESRGAN", model_path=str(info.path), model_url=None, scale=scale
                )
            )
        return items

    @router.get("/latent-upscale-modes")
    def latent_upscale_modes() -> list[dict[str, str]]:
        return [{"name": name} for name in LATENT_UPSCALERS]

    @router.post("/refresh-upscalers")
    def refresh_upscalers() -> dict[str, Any]:
        weights.upscalers.registry.refresh()
        return {}

    @router.get("/loras")
    def loras() -> list[dict[str, Any]]:
        """A1111's shape: ``name`` is what ``<lora:NAME:...>`` takes; ``metadata`` the file's training notes."""
        items = []
        for info in weights.loras.registry.list():
            name = info.name.rsplit(".", 1)[0]
            metadata = formats.read_metadata(info.path) if info.path.suffix == ".safetensors" else {}
            alias = metadata.get("ss_output_name") or name
            items.append({"name": name, "alias": alias, "path": str(info.path), "metadata": metadata})
        return items

    @router.get("/embeddings")
    def embeddings() -> dict[str, Any]:
        active = weights.active
        widths = None
        if active is not None:
            encoders = [active.components[n] for n in ("text_encoder", "text_encoder_2") if n in active.components]
            widths = [int(e.config.hidden_size) for e in encoders]
        return weights.embeddings.describe(widths)

    @router.get("/scripts")
    def scripts() -> dict[str, list[str]]:
        return {"txt2img": [], "img2img": ["sd upscale"]}  # A1111's lower-case script titles

    @router.get("/script-info")
    def script_info() -> list[dict[str, Any]]:
        """The extensions that take per-job arguments, as A1111 describes always-on scripts; Easel's take their
        ``args`` by name (``key`` below), not by position."""
        plugins = service.plugins
        items = []
        for ext in plugins.active if plugins is not None else []:
            if not ext.arguments:
                continue
            args = [
                {
                    "key": a.key,
                    "label": a.label,
                    "value": a.default,
                    "minimum": a.minimum,
                    "maximum": a.maximum,
                    "step": None,
                    "choices": list(a.choices) or None,
                }
                for a in ext.arguments
            ]
            for is_img2img in (False, True):
                items.append({"name": ext.name, "is_alwayson": True, "is_img2img": is_img2img, "args": args})
        return items

    @router.get("/prompt-styles")
    def prompt_styles() -> list[dict[str, Any]]:
        return []

    @router.get("/extensions")
    def extensions() -> list[dict[str, Any]]:
        """A1111's shape (git fields empty: Easel does not track them), one row per extension found; ``error`` says
        why it failed or was refused, and why one of its page tabs could not be built."""
        plugins = service.plugins
        return [
            {
                "name": ext.name,
                "remote": "",
                "branch": "",
                "commit_hash": "",
                "version": ext.version,
                "commit_date": 0,
                "enabled": ext.active,
                "status": ext.status,
                "error": "; ".join(note for note in (ext.error, ext.tab_error) if note),
            }
            for ext in (plugins.extensions if plugins is not None else [])
        ]

    @router.post("/refresh-checkpoints")
    def refresh_checkpoints() -> dict[str, Any]:
        weights.checkpoints.refresh()
        return {}

    @router.post("/refresh-vae")
    def refresh_vae() -> dict[str, Any]:
        weights.vaes.registry.refresh()
        return {}

    @router.post("/refresh-loras")
    def refresh_loras() -> dict[str, Any]:
        weights.loras.registry.refresh()
        return {}

    @router.post("/refresh-embeddings")
    def refresh_embeddings() -> dict[str, Any]:
        weights.embeddings.registry.refresh()
        return {}

    # -- images -------------------------------------------------------------------------------------------
    @router.post("/png-info", response_model=PngInfoResponse)
    def png_info(body: PngInfoBody) -> PngInfoResponse:
        image = open_base64_image(body.image, "image")
        text = read_infotext(image) or ""
        items = {k: v for k, v in image.info.items() if isinstance(v, (str, int, float)) and k != "parameters"}
        return PngInfoResponse(info=text, items=items, parameters=parse_infotext(text) if text else {})

    @router.post("/extra-single-image", response_model=ExtraSingleImageResponse)
    def extra_single_image(body: ExtraSingleImageBody, request: Request) -> ExtraSingleImageResponse:
        """Built-in resampling or an ESRGAN-family file (through the queue: the worker owns the device)."""
        convert.refuse_unsupported_extras(body)
        image = decode_image(body.image, "image")
        if body.resize_mode == 0:
            if not 1.0 <= body.upscaling_resize <= 8.0:
                raise InvalidRequest("upscaling_resize", f"must be between 1 and 8, got {body.upscaling_resize:g}")
            size = (round(image.width * body.upscaling_resize), round(image.height * body.upscaling_resize))
        elif body.resize_mode == 1:
            size = (body.upscaling_resize_w, body.upscaling_resize_h)
        else:
            raise InvalidRequest("resize_mode", f"must be 0 (scale by) or 1 (scale to), got {body.resize_mode}")
        if not all(1 <= side <= MAX_UPSCALED_SIDE for side in size):
            raise InvalidRequest(
                "upscaling_resize", f"the result must be 1 to {MAX_UPSCALED_SIDE} px a side, got {size}"
            )
        if body.upscaler_1 == "None":
            out = image  # A1111's extras: no upscaler, no resize
        else:
            crop = body.resize_mode == 1 and body.upscaling_crop
            out = service.upscale(image, body.upscaler_1, *size, crop=crop, owner=owner_of(request))
        return ExtraSingleImageResponse(image=encode_png_base64(out), html_info="")

    @router.get("/memory")
    def memory() -> dict[str, Any]:
        import psutil

        ram = psutil.virtual_memory()
        data: dict[str, Any] = {"ram": {"free": ram.available, "used": ram.total - ram.available, "total": ram.total}}
        device = service.engine.device.device
        if device.type == "cuda":
            import torch

            free, total = torch.cuda.mem_get_info(device)
            stats = torch.cuda.memory_stats(device)
            data["cuda"] = {
                "system": {"free": free, "used": total - free, "total": total},
                "active": {"current": stats.get("active_bytes.all.current", 0), "peak": stats.get("active_bytes.all.peak", 0)},
                "allocated": {"current": stats.get("allocated_bytes.all.current", 0), "peak": stats.get("allocated_bytes.all.peak", 0)},
                "reserved": {"current": stats.get("reserved_bytes.all.current", 0), "peak": stats.get("reserved_bytes.all.peak", 0)},
                "inactive": {"current": stats.get("inactive_split_bytes.all.current", 0), "peak": stats.get("inactive_split_bytes.all.peak", 0)},
                "events": {"retries": stats.get("num_alloc_retries", 0), "oom": stats.get("num_ooms", 0)},
            }  # fmt: skip
        else:
            data["cuda"] = {"error": f"no CUDA device in use ({device.type})"}
        return data

    return router


def error_status(exc: EaselError) -> int:
    """A1111's status codes where it has one: 400 unknown sampler, 422 unknown script or bad value; 429 (with
    Retry-After) when the queue is full. Decided by the error's class, so renaming a field keeps it."""
    from webui.errors import JobNotFound, ModelLoadError, QueueFull, UnknownSampler

    declared = getattr(exc, "http_status", None)
    if isinstance(declared, int):
        return declared
    if isinstance(exc, JobNotFound):
        return 404
    if isinstance(exc, UnknownSampler):
        return 400
    if isinstance(exc, InvalidRequest):
        return 422
    if isinstance(exc, convert.ScriptNotFound):
        return 422
    if isinstance(exc, ModelNotFound):
        return 404
    if isinstance(exc, QueueFull):
        return 429
    if isinstance(exc, JobCancelled):
        return 409
    if isinstance(exc, ModelLoadError):
        return 500
    return 500
