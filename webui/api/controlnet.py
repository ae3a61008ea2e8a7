"""The SD-WebUI ControlNet extension's API: units in ``alwayson_scripts`` and its ``/controlnet/*`` routes.

Clients (painting-program plugins, ``webuiapi``'s ``ControlNetUnit``) send one dict per unit under
``alwayson_scripts.controlnet.args`` with the extension's names and defaults (``enabled`` false unless sent,
``module`` "none", ``model`` "None", ``-1`` for "the preprocessor's default"), and its legacy aliases
(``input_image``, ``mask_image``, ``lowvram``, ``guidance``). Images are base64 only: the extension would read a
server file path given as ``image``; Easel never reads a path a client names. As in the extension, a
threshold or resolution outside the preprocessor's range falls back to its default (``webuiapi`` sends 64 for
every threshold); Easel's own UI and request type refuse them instead, naming the field.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from webui.controlnet import preprocessors
from webui.controlnet.preprocessors import MAX_RESOLUTION, MIN_RESOLUTION
from webui.controlnet.units import DEFAULT_RESOLUTION, NO_MODEL, ControlNetUnit
from webui.errors import InvalidRequest, from_validation_error
from webui.images import decode_image, encode_png_base64
from webui.service.service import GenerationService

log = logging.getLogger(__name__)

SCRIPT_NAME = "controlnet"
ARGS_FIELD = "alwayson_scripts.controlnet.args"
API_VERSION = 2  # what the extension's /controlnet/version answers; clients check it is >= 2
_ALIASES = {"input_image": "image", "mask_image": "mask", "lowvram": "low_vram", "guidance": "guidance_end"}
_IGNORED = {  # the extension's fields that change nothing in Easel (low VRAM is Easel's memory mode's job)
    "low_vram",
    "is_ui",
    "input_mode",
    "batch_images",
    "output_dir",
    "loopback",
    "advanced_weighting",
    "effective_region_mask",
    "pulid_mode",
    "union_control_type",
    "ipadapter_input",
    "animatediff_batch",
    "batch_mask_dir",
    "batch_modifiers",
    "batch_image_files",
    "batch_keyframe_idx",
}


def is_controlnet(script: str) -> bool:
    """A1111 matches ``alwayson_scripts`` keys to script titles case-insensitively."""
    return script.strip().lower() == SCRIPT_NAME


def units_from_args(value: Any) -> list[ControlNetUnit]:
    """The extension's ``{"args": [unit, ...]}`` as units; every fault names ``alwayson_scripts.controlnet...``."""
    args = value.get("args") if isinstance(value, dict) else value
    if not isinstance(args, list):
        raise InvalidRequest(ARGS_FIELD, "must be a list of ControlNet unit objects")
    return [_unit(raw, f"{ARGS_FIELD}[{index}]") for index, raw in enumerate(args)]


def _unit(raw: Any, where: str) -> ControlNetUnit:
    if not isinstance(raw, dict):
        raise InvalidRequest(where, "each unit must be an object with the extension's field names")
    data = dict(raw)
    for alias, name in _ALIASES.items():
        if alias in data:
            if name in data and data[name] is not None:
                raise InvalidRequest(f"{where}.{alias}", f"give either '{alias}' or '{name}', not both")
            data[name] = data.pop(alias)
    data = {k: v for k, v in data.items() if k not in _IGNORED and v is not None}
    enabled = bool(data.get("enabled", False))
    given = data.get("image")
    if isinstance(given, dict | list | tuple):  # the extension's other forms: {"image", "mask"} or [image, mask]
        pair = given if isinstance(given, dict) else dict(zip(("image", "mask"), given, strict=False))
        data["image"] = pair.get("image")
        if pair.get("mask") is not None:
            data.setdefault("mask", pair["mask"])
    for name, mode in (("image", "RGB"), ("mask", "L")):
        if data.get(name) == "":  # webuiapi sends "" for "no image"
            data[name] = None
        if data.get(name) is not None:
            if not isinstance(data[name], str):
                raise InvalidRequest(f"{where}.{name}", "must be a base64-encoded image")
            data[name] = decode_image(data[name], f"{where}.{name}", mode=mode) if enabled else None
    data["enabled"] = enabled
    data.setdefault("model", NO_MODEL)
    try:
        unit = ControlNetUnit(**data)
    except ValidationError as exc:  # name the unit's field
        first = exc.errors()[0]
        if first["type"] == "extra_forbidden":
            field = ".".join(str(p) for p in first["loc"])
            raise InvalidRequest(f"{where}.{field}", "is not a ControlNet unit field Easel knows") from None
        raise from_validation_error(exc, where, "unit") from None
    return _defaults_for_out_of_range(unit, where)


def _defaults_for_out_of_range(unit: ControlNetUnit, where: str) -> ControlNetUnit:
    """The extension's rule for its API: a resolution or threshold outside the preprocessor's range means its
    default (clients such as ``webuiapi`` send 64 for every threshold, whatever the module). Logged, as there."""
    try:
        wrong = unit.out_of_range()
    except InvalidRequest:
        return unit  # an unknown module: the request's own check names it
    for name, why in wrong:
        log.info("%s.%s %s; using the default", where, name, why)
    return unit.model_copy(update=dict.fromkeys((name for name, _ in wrong), -1)) if wrong else unit


def unit_field(field: str) -> str | None:
    """``controlnet_units[0].weight`` (Easel's field) as the API client named it, else None."""
    prefix = "controlnet_units"
    return ARGS_FIELD + field[len(prefix) :] if field.startswith(prefix) else None


# -- /controlnet routes -----------------------------------------------------------------------------------


class DetectBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    controlnet_module: str = "none"
    controlnet_input_images: list[str] = Field(default_factory=list)
    controlnet_images: list[str] = Field(default_factory=list)  # the older name, which webuiapi still sends
    controlnet_masks: list[str] = Field(default_factory=list)
    controlnet_processor_res: int = 512
    controlnet_threshold_a: float = -1
    controlnet_threshold_b: float = -1
    low_vram: bool = False


def _sliders(pre: preprocessors.Preprocessor) -> list[dict[str, Any] | None]:
    """The extension's ``module_detail`` sliders: resolution first (when used), then its thresholds."""
    out: list[dict[str, Any] | None] = []
    if pre.uses_resolution:
        out.append(
            {"name": "Preprocessor Resolution", "value": DEFAULT_RESOLUTION, "min": MIN_RESOLUTION,
             "max": MAX_RESOLUTION, "step": 8}
        )  # fmt: skip
    for slider in (pre.threshold_a, pre.threshold_b):
        if slider is not None:
            out.append({"name": slider.label, "value": slider.default, "min": slider.low, "max": slider.high})
    return out


def build_controlnet_router(service: GenerationService) -> APIRouter:
    router = APIRouter(prefix="/controlnet", tags=["ControlNet extension compatible"])

    @router.get("/version")
    def version() -> dict[str, Any]:
        return {"version": API_VERSION}

    @router.get("/model_list")
    def model_list(update: bool = True) -> dict[str, Any]:
        if update:
            service.engine.weights.controlnets.registry.refresh()
        return {"model_list": service.controlnet_models()}

    @router.get("/module_list")
    def module_list(alias_names: bool = False) -> dict[str, Any]:
        """Every preprocessor Easel knows; ``module_detail`` says which need annotator files still missing."""
        listed = service.preprocessors()
        return {
            "module_list": [pre.name for pre, _missing in listed],
            "module_detail": {
                pre.name: {
                    "model_free": pre.name == "none",
                    "sliders": _sliders(pre),
                    "available": not missing,
                    "missing_files": missing,
                }
                for pre, missing in listed
            },
        }

    @router.get("/control_types")
    def control_types() -> dict[str, Any]:
        """The extension's filter groups; Easel offers one, "All" (its models are not tagged by type)."""
        modules = [pre.name for pre, missing in service.preprocessors() if not missing]
        return {
            "control_types": {
                "All": {
                    "module_list": modules,
                    "model_list": [NO_MODEL, *service.controlnet_models()],
                    "default_option": "none",
                    "default_model": NO_MODEL,
                }
            }
        }

    @router.get("/settings")
    def settings() -> dict[str, Any]:
        return {"control_net_unit_count": service.preferences.current.controlnet_units}  # the page's setting

    @router.post("/detect")
    def detect(body: DetectBody) -> dict[str, Any]:
        """Each image's detected map at the preprocessor resolution (its short side), as the extension returns."""
        if not body.controlnet_input_images:
            body.controlnet_input_images = body.controlnet_images
        if not body.controlnet_input_images:
            raise InvalidRequest("controlnet_input_images", "give at least one base64 image")
        if body.controlnet_masks and len(body.controlnet_masks) != len(body.controlnet_input_images):
            raise InvalidRequest("controlnet_masks", "give one mask per input image, or none")
        settings = ControlNetUnit(
            enabled=False,
            module=body.controlnet_module,
            processor_res=body.controlnet_processor_res,
            threshold_a=body.controlnet_threshold_a,
            threshold_b=body.controlnet_threshold_b,
            resize_mode=0,
        )
        settings = _defaults_for_out_of_range(settings, "detect")
        images = []
        for index, data in enumerate(body.controlnet_input_images):
            image = decode_image(data, f"controlnet_input_images[{index}]")
            mask = None
            if body.controlnet_masks:
                mask = decode_image(body.controlnet_masks[index], f"controlnet_masks[{index}]", mode="L")
            unit = settings.model_copy(update={"image": image, "mask": mask})
            width, height = _at_resolution(image.size, unit.resolution(0, 0, None))
            try:
                detected = service.detect_map(unit, width, height, where="detect")
            except InvalidRequest as exc:
                raise InvalidRequest(_detect_field(exc.field), exc.message) from None
            images.append(encode_png_base64(detected.image))
        return {"images": images, "info": "Success"}

    return router


def _at_resolution(size: tuple[int, int], resolution: int) -> tuple[int, int]:
    """The map's size: the short side at the preprocessor resolution, both sides multiples of 8."""
    w, h = size
    scale = resolution / min(w, h)
    return max(8, round(w * scale / 8) * 8), max(8, round(h * scale / 8) * 8)


def _detect_field(field: str) -> str:
    """A unit field in a detect error as the detect body names it."""
    names = {
        "processor_res": "controlnet_processor_res",
        "threshold_a": "controlnet_threshold_a",
        "threshold_b": "controlnet_threshold_b",
        "module": "controlnet_module",
        "mask": "controlnet_masks",
        "image": "controlnet_input_images",
    }
    tail = field.rsplit(".", 1)[-1]
    return names.get(tail, field)
