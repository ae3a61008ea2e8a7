"""A1111 API bodies → Easel's ``GenerationRequest``, and Easel's results → A1111's response shapes.

Kept apart from the routes so the mapping is testable without HTTP. Every refusal is an ``InvalidRequest`` (or
``ScriptNotFound``) naming the A1111 field, so a client sees which of its fields Easel cannot honour.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Collection, Mapping
from typing import Any

from webui import __version__, samplers
from webui.api import controlnet
from webui.api.schemas import ExtraSingleImageBody, Img2ImgBody, Txt2ImgBody
from webui.errors import EaselError, InvalidRequest
from webui.images import decode_image, encode_png_base64
from webui.outputs.infotext import parse_infotext, request_fields_from_infotext
from webui.preferences import Preferences
from webui.prompts.parser import extract_networks
from webui.types import GenerationRequest, GenerationResult, MaskedContent, Mode

# override_settings / options keys that shape one generation, and the request field each sets.
REQUEST_OPTIONS = {
    "sd_model_checkpoint": "checkpoint",
    "sd_vae": "vae",
    "CLIP_stop_at_last_layers": "clip_skip",
}
# Easel's request fields whose A1111 name differs: an error names what the client sent, not Easel's field.
A1111_FIELDS = {
    "checkpoint": "sd_model_checkpoint",
    "vae": "sd_vae",
    "clip_skip": "CLIP_stop_at_last_layers",
    "init_image": "init_images",
    "sd_upscale_overlap": "script_args[1]",
    "sd_upscale_upscaler": "script_args[2]",
    "sd_upscale_scale": "script_args[3]",
}
# Labels that lookups put in their errors (``ModelNotFound.field``), as request fields.
_LABELS = {"sd_vae": "vae"}
# What A1111 takes as "no refiner" (its own check in ``processing.py``).
_NO_REFINER = {"", "none"}
_SAME_CHECKPOINT = {"", "Use same checkpoint"}
SD_UPSCALE = "sd upscale"  # the one A1111 script Easel has (img2img), matched as A1111 matches titles
HIRES_DENOISING = 0.7  # A1111's hires fix denoising strength when a txt2img body gives none


class ScriptNotFound(EaselError):
    """A ``script_name`` or ``alwayson_scripts`` entry that Easel does not have (A1111 answers 422)."""

    def __init__(self, field: str, name: str) -> None:
        self.field = field
        super().__init__(f"{field}: script '{name}' not found (Easel has no scripts of that name)")


def _refuse_unsupported(body: Txt2ImgBody, extensions: Collection[str] = ()) -> None:
    """Fields whose non-default values ask for features Easel does not have yet; refused, never ignored."""
    if body.hr_checkpoint_name and body.hr_checkpoint_name.strip() not in _SAME_CHECKPOINT:
        raise InvalidRequest(
            "hr_checkpoint_name",
            'a second checkpoint for hires fix is not available in Easel; send "Use same checkpoint"',
        )
    if body.restore_faces:
        raise InvalidRequest("restore_faces", "face restoration is not available in Easel; send false")
    if body.tiling:
        raise InvalidRequest("tiling", "tiling is not available in Easel; send false")
    if body.subseed_strength:
        raise InvalidRequest("subseed_strength", "variation seeds are not available yet in Easel; send 0")
    if body.styles:
        raise InvalidRequest("styles", f"unknown style(s) {body.styles!r}: Easel has no saved prompt styles yet")
    if body.refiner_checkpoint is not None and body.refiner_checkpoint.strip().lower() not in _NO_REFINER:
        raise InvalidRequest(
            "refiner_checkpoint", 'the refiner is not available in Easel; leave it unset (null, "" or "None")'
        )
    for field in ("seed_resize_from_w", "seed_resize_from_h"):
        if getattr(body, field) > 0:  # A1111 resizes the seed's noise only for sizes above 0
            raise InvalidRequest(
                field, f"resizing the seed is not available in Easel; send -1 or 0 (off), got {getattr(body, field)}"
            )
    if body.script_name and not (isinstance(body, Img2ImgBody) and body.script_name.strip().lower() == SD_UPSCALE):
        raise ScriptNotFound("script_name", body.script_name)
    for name in body.alwayson_scripts or {}:
        if not controlnet.is_controlnet(name) and name not in extensions:
            raise ScriptNotFound("alwayson_scripts", name)


# Extras fields for what Easel does not have, with the value that means "off" (what webuiapi sends by default).
UNSUPPORTED_EXTRAS = {
    "upscaler_2": ("None", "a second upscaler"),
    "extras_upscaler_2_visibility": (0, "a second upscaler"),
    "gfpgan_visibility": (0, "GFPGAN face restoration"),
    "codeformer_visibility": (0, "CodeFormer face restoration"),
}


def refuse_unsupported_extras(body: ExtraSingleImageBody) -> None:
    """Non-default values of the extras fields Easel cannot honour are refused by name, never ignored."""
    for name, (off, what) in UNSUPPORTED_EXTRAS.items():
        value = getattr(body, name)
        if value != off:
            raise InvalidRequest(name, f"{what} is not supported in Easel; send {off!r}, got {value!r}")


def _infotext_fields(
    body: Txt2ImgBody, parsed: dict[str, Any] | None, rename_loras: Callable[[str, str | None], str] | None
) -> dict[str, Any]:
    """A1111 1.10's ``infotext`` (``parsed``): its values fill the fields the body did not set explicitly (an option
    set in ``override_settings`` wins over the infotext's, as in A1111); LoRAs renamed since are found by the hashes
    it recorded."""
    if not parsed:
        return {}
    fields = request_fields_from_infotext(parsed)
    if rename_loras is not None:
        fields["prompt"] = rename_loras(fields["prompt"], parsed.get("Lora hashes"))
    explicit = body.model_fields_set | {
        REQUEST_OPTIONS[k] for k in body.override_settings or {} if k in REQUEST_OPTIONS
    }
    return {k: v for k, v in fields.items() if k not in explicit}


def build_request(
    body: Txt2ImgBody,
    mode: Mode,
    prefs: Preferences,
    rename_loras: Callable[[str, str | None], str] | None = None,
    checkpoint: str | None = None,
    upscaler_names: list[str] | None = None,
    plugins: Any = None,
) -> GenerationRequest:
    """The ``GenerationRequest`` an A1111 body describes; Easel's saved options fill what it leaves out.

    ``checkpoint`` is the ``sd_model_checkpoint`` option: named in every request, so a model loaded by an earlier
    call's ``override_settings`` is never used by a call that did not ask for it.
    """
    extensions = [e.name for e in plugins.active] if plugins is not None else []
    _refuse_unsupported(body, extensions)
    overrides = body.override_settings or {}
    fields: dict[str, Any] = {
        "checkpoint": checkpoint,
        "mode": mode,
        "prompt": body.prompt,
        "negative_prompt": body.negative_prompt,
        "sampler_name": body.sampler_name or body.sampler_index or samplers.DEFAULT_SAMPLER,
        "scheduler": body.scheduler or "Automatic",
        "steps": body.steps,
        "cfg_scale": body.cfg_scale,
        "seed": body.seed,
        "width": body.width,
        "height": body.height,
        "batch_size": body.batch_size,
        "n_iter": body.n_iter,
        "vae": prefs.sd_vae,
        "clip_skip": prefs.clip_skip,
        "save_images": body.save_images and not body.do_not_save_samples,
    }
    for option, name in REQUEST_OPTIONS.items():
        if option in overrides:
            fields[name] = overrides[option]
    if mode is Mode.TXT2IMG and body.enable_hr:
        fields.update(_hires_fields(body))
    extension_args: dict[str, Any] = {}
    for name, value in (body.alwayson_scripts or {}).items():
        if controlnet.is_controlnet(name):
            fields["controlnet_units"] = controlnet.units_from_args(value)
        else:
            extension_args[name] = _extension_args(name, value)
    parsed = parse_infotext(body.infotext) if body.infotext else None
    fields.update(_infotext_fields(body, parsed, rename_loras))
    if parsed and plugins is not None:  # extensions read their own fields back, unless the body sent them
        read = plugins.infotext_read(parsed)
        extension_args = {**{k: v for k, v in read.items() if k not in extension_args}, **extension_args}
    if extension_args:
        fields["extension_args"] = extension_args
    if body.disable_extra_networks:  # A1111 leaves the tags unused: the LoRAs they name are not applied
        for name in ("prompt", "negative_prompt", "hr_prompt", "hr_negative_prompt"):
            if fields.get(name):
                fields[name], _tags = extract_networks(fields[name], name)
    if mode is not Mode.TXT2IMG:
        assert isinstance(body, Img2ImgBody)
        _img2img_fields(body, fields, mode)
        if body.script_name:
            fields.update(_sd_upscale_fields(body, upscaler_names or []))
    request = GenerationRequest.build(**fields)
    return request


def _extension_args(name: str, value: Any) -> dict[str, Any]:
    """An extension's ``alwayson_scripts`` entry: ``{"args": {"key": value}}``, arguments by name."""
    args = value.get("args", {}) if isinstance(value, dict) else value
    if not isinstance(args, dict):
        raise InvalidRequest(
            f"alwayson_scripts.{name}.args",
            'Easel\'s extensions take their arguments by name: send an object {"key": value}, not a list',
        )
    return dict(args)


def _hires_fields(body: Txt2ImgBody) -> dict[str, Any]:
    """A1111's hires fix fields; its "Use same ..." choices and ``None`` mean the first pass's."""
    return {
        "enable_hr": True,
        "hr_scale": body.hr_scale,
        "hr_upscaler": body.hr_upscaler or "Latent",
        "hr_second_pass_steps": body.hr_second_pass_steps,
        "hr_resize_x": body.hr_resize_x,
        "hr_resize_y": body.hr_resize_y,
        "hr_sampler_name": body.hr_sampler_name or "",
        "hr_scheduler": body.hr_scheduler or "",
        "hr_prompt": body.hr_prompt,
        "hr_negative_prompt": body.hr_negative_prompt,
        "denoising_strength": body.denoising_strength if body.denoising_strength is not None else HIRES_DENOISING,
    }


def _sd_upscale_fields(body: Img2ImgBody, upscaler_names: list[str]) -> dict[str, Any]:
    """A1111's "SD upscale" script: ``script_args`` = [info, overlap, upscaler index (or name), scale factor]."""
    args = list(body.script_args or [])
    if len(args) < 4:
        raise InvalidRequest(
            "script_args", f"SD upscale takes [info, overlap, upscaler index, scale factor], got {len(args)} value(s)"
        )
    _info, overlap, upscaler, scale = args[:4]
    if isinstance(upscaler, int) and not isinstance(upscaler, bool):
        if not 0 <= upscaler < len(upscaler_names):
            raise InvalidRequest(
                "script_args[2]", f"upscaler index must be 0 to {len(upscaler_names) - 1} ({', '.join(upscaler_names)})"
            )
        upscaler = upscaler_names[upscaler]
    return {
        "sd_upscale": True,
        "sd_upscale_overlap": overlap,  # checked by the request, named script_args[1..3] (A1111_FIELDS)
        "sd_upscale_upscaler": upscaler,
        "sd_upscale_scale": scale,
    }


def _img2img_fields(body: Img2ImgBody, fields: dict[str, Any], mode: Mode) -> None:
    if not body.init_images:
        raise InvalidRequest("init_images", "img2img needs at least one image (base64) in init_images")
    if len(body.init_images) > 1:
        raise InvalidRequest(
            "init_images",
            f"Easel takes one init image per call, got {len(body.init_images)} (A1111 makes one image of the batch "
            "from each); send one image per call",
        )
    fields["init_image"] = decode_image(body.init_images[0], "init_images")
    fields["resize_mode"] = body.resize_mode
    if body.denoising_strength is not None:
        fields["denoising_strength"] = body.denoising_strength
    if mode is Mode.INPAINT:
        assert body.mask is not None
        fields["mask"] = decode_image(body.mask, "mask", mode="L")
        fields["mask_blur"] = body.mask_blur if body.mask_blur is not None else max(body.mask_blur_x, body.mask_blur_y)
        if body.inpainting_fill not in {c.value for c in MaskedContent}:
            raise InvalidRequest("inpainting_fill", f"must be 0, 1, 2 or 3, got {body.inpainting_fill}")
        fields["inpainting_fill"] = body.inpainting_fill
        fields["inpaint_full_res"] = body.inpaint_full_res
        fields["inpaint_full_res_padding"] = body.inpaint_full_res_padding
        if body.inpainting_mask_invert not in (0, 1):
            raise InvalidRequest("inpainting_mask_invert", f"must be 0 or 1, got {body.inpainting_mask_invert}")
        fields["inpainting_mask_invert"] = bool(body.inpainting_mask_invert)


def a1111_names(body: Txt2ImgBody) -> dict[str, str]:
    """Which A1111 field set each of Easel's request fields in this body, for errors: an ``override_settings``
    option is named with its path, a value taken from ``infotext`` as the infotext."""
    names = dict(A1111_FIELDS)
    if body.sampler_name is None and "sampler_index" in body.model_fields_set:
        names["sampler_name"] = "sampler_index"  # the legacy name, when it was the one sent
    parsed = parse_infotext(body.infotext) if body.infotext else None
    names.update(dict.fromkeys(_infotext_fields(body, parsed, None), "infotext"))
    for option, field in REQUEST_OPTIONS.items():
        if option in (body.override_settings or {}):
            names[field] = f"override_settings.{option}"
    return names


def a1111_error(exc: EaselError, names: Mapping[str, str]) -> EaselError:
    """``exc`` naming the field as the client sent it (``names``: Easel's field → A1111's), e.g. ``clip_skip`` →
    ``override_settings.CLIP_stop_at_last_layers``. A copy of the same class, so its HTTP status (decided by the
    class) stays; errors without a field, or already named right, come back unchanged."""
    field = getattr(exc, "field", None)
    if not isinstance(field, str):
        return exc
    own = _LABELS.get(field, field)
    name = names.get(own, controlnet.unit_field(own) or _extension_field(own) or own)
    if name == field:
        return exc
    text = str(exc)
    rest = text[len(field) :] if text.startswith(f"{field}:") else f": {text}"
    if name == "infotext":  # which of the infotext's values is at fault
        rest = f": {A1111_FIELDS.get(own, own)}{rest}"
    renamed = type(exc).__new__(type(exc))  # the same class, attributes copied (its __init__ wants other args)
    renamed.__dict__.update(vars(exc))
    renamed.field = name  # type: ignore[attr-defined]
    renamed.args = (f"{name}{rest}",)
    if isinstance(renamed, InvalidRequest):
        renamed.message = rest.removeprefix(": ")
    return renamed


def _extension_field(field: str) -> str | None:
    """``extension_args.NAME.KEY`` as the API client sent it: ``alwayson_scripts.NAME.args.KEY``."""
    if not field.startswith("extension_args."):
        return None
    name, _, key = field.removeprefix("extension_args.").partition(".")
    return f"alwayson_scripts.{name}.args" + (f".{key}" if key else "")


def echo_parameters(body: Txt2ImgBody) -> dict[str, Any]:
    """The request as A1111 echoes it in ``parameters``: the images are left out unless asked for."""
    data = body.model_dump()
    if isinstance(body, Img2ImgBody) and not body.include_init_images:
        data["init_images"] = None
        data["mask"] = None
    return data


def info_json(result: GenerationResult, model_name: str, model_hash: str | None) -> str:
    """A1111's ``info`` string (``Processed.js()``): the run's values, and one infotext per image."""
    request = result.request
    images = result.images
    parsed = [parse_infotext(i.infotext) for i in images]
    first = parsed[0] if parsed else {}
    seeds = [i.seed for i in images]
    info = {
        "prompt": request.prompt,
        "all_prompts": [request.prompt] * len(images),
        "negative_prompt": request.negative_prompt,
        "all_negative_prompts": [request.negative_prompt] * len(images),
        "seed": seeds[0] if seeds else request.seed,
        "all_seeds": seeds,
        "subseed": -1,
        "all_subseeds": [-1] * len(images),
        "subseed_strength": 0,
        "width": request.width,
        "height": request.height,
        "sampler_name": first.get("Sampler", request.sampler_name),
        "scheduler": first.get("Schedule type", request.scheduler),
        "cfg_scale": request.cfg_scale,
        "steps": request.steps,
        "batch_size": request.batch_size,
        "restore_faces": False,
        "face_restoration_model": None,
        "sd_model_name": model_name,
        "sd_model_hash": model_hash,
        "sd_vae_name": first.get("VAE"),
        "sd_vae_hash": first.get("VAE hash"),
        "seed_resize_from_w": -1,
        "seed_resize_from_h": -1,
        "denoising_strength": request.denoising_strength if request.mode is not Mode.TXT2IMG else None,
        "extra_generation_params": {},
        "index_of_first_image": 0,
        "infotexts": [i.infotext for i in images],
        "styles": [],
        "job_timestamp": time.strftime("%Y%m%d%H%M%S", time.localtime()),
        "clip_skip": request.clip_skip,
        "is_using_inpainting_conditioning": False,
        "version": f"easel-{__version__}",
        "notes": result.notes,
    }
    return json.dumps(info)


def encode_images(result: GenerationResult) -> list[str]:
    """Base64 PNGs with their ``parameters`` chunk, as A1111 returns them, then the ControlNet units' detected
    maps (as the extension appends them; a unit's ``save_detected_map`` false leaves its map out)."""
    images = [encode_png_base64(i.image, i.infotext) for i in result.images]
    return images + [encode_png_base64(m) for m in result.control_maps]
