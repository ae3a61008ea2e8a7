"""A ControlNet unit: what the SD-WebUI ControlNet extension calls one "unit", with its names and defaults.

Units travel inside ``GenerationRequest.controlnet_units`` from the UI, the API (``alwayson_scripts``) and the
CLI alike; every range check is here, and a bad value is an ``InvalidRequest`` naming the unit and field
(``controlnet_units[1].guidance_end``). The extension's infotext form is written and read here too, so
"reuse parameters" restores units from an image.
"""

from __future__ import annotations

import math
import re
from enum import Enum
from typing import Any

from PIL import Image
from pydantic import BaseModel, ConfigDict, field_validator

from webui.choices import ResizeMode
from webui.controlnet import preprocessors
from webui.controlnet.preprocessors import MAX_RESOLUTION, MIN_RESOLUTION
from webui.errors import InvalidRequest

NO_MODEL = "None"
MAX_UNITS = 8
DEFAULT_RESOLUTION = 512  # the preprocessor resolution the extension's -1 ("default") stands for


class ControlMode(str, Enum):
    BALANCED = "Balanced"
    PROMPT = "My prompt is more important"
    CONTROL = "ControlNet is more important"


class HiresOption(str, Enum):
    BOTH = "Both"
    LOW_RES_ONLY = "Low res only"
    HIGH_RES_ONLY = "High res only"


RESIZE_LABELS = {
    ResizeMode.JUST_RESIZE: "Just Resize",
    ResizeMode.CROP_AND_RESIZE: "Crop and Resize",
    ResizeMode.RESIZE_AND_FILL: "Resize and Fill",
}
_RESIZE_ALIASES = {
    **{label.lower(): mode for mode, label in RESIZE_LABELS.items()},
    "inner fit (scale to fit)": ResizeMode.CROP_AND_RESIZE,
    "scale to fit (inner fit)": ResizeMode.CROP_AND_RESIZE,
    "outer fit (shrink to fit)": ResizeMode.RESIZE_AND_FILL,
    "envelope (outer fit)": ResizeMode.RESIZE_AND_FILL,
}


def _enum_value(enum: type[Enum], value: Any) -> Any:
    """The extension accepts a label or its position (0, 1, 2) for its choice fields."""
    if isinstance(value, enum):
        return value
    if isinstance(value, bool):
        raise ValueError(f"must be one of {', '.join(repr(m.value) for m in enum)}")  # type: ignore[attr-defined]
    if isinstance(value, int | float) and float(value).is_integer():
        members = list(enum)
        if 0 <= int(value) < len(members):
            return members[int(value)]
    if isinstance(value, str):
        for member in enum:
            if member.value.lower() == value.strip().lower():  # type: ignore[attr-defined]
                return member
    raise ValueError(f"must be one of {', '.join(repr(m.value) for m in enum)}")  # type: ignore[attr-defined]


class ControlNetUnit(BaseModel):
    """One unit. ``image`` None in img2img/inpaint means "use the img2img input", as in the extension."""

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    enabled: bool = True
    image: Image.Image | None = None
    mask: Image.Image | None = None
    module: str = "none"
    model: str = NO_MODEL
    weight: float = 1.0
    resize_mode: ResizeMode = ResizeMode.CROP_AND_RESIZE
    processor_res: int = -1
    threshold_a: float = -1
    threshold_b: float = -1
    guidance_start: float = 0.0
    guidance_end: float = 1.0
    pixel_perfect: bool = False
    control_mode: ControlMode = ControlMode.BALANCED
    hr_option: HiresOption = HiresOption.BOTH
    save_detected_map: bool = True
    inpaint_crop_input_image: bool = True

    @field_validator("resize_mode", mode="before")
    @classmethod
    def _resize(cls, value: Any) -> Any:
        if isinstance(value, str):
            found = _RESIZE_ALIASES.get(value.strip().lower())
            if found is None:
                raise ValueError(f"must be one of {', '.join(repr(v) for v in RESIZE_LABELS.values())}")
            return found
        return value

    @field_validator("control_mode", mode="before")
    @classmethod
    def _control_mode(cls, value: Any) -> Any:
        return _enum_value(ControlMode, value)

    @field_validator("hr_option", mode="before")
    @classmethod
    def _hr_option(cls, value: Any) -> Any:
        return _enum_value(HiresOption, value)

    @property
    def preprocessor(self) -> preprocessors.Preprocessor:
        return preprocessors.find(self.module)

    def check(self, where: str) -> None:
        """Ranges that need the preprocessor's table; ``where`` prefixes field names (``controlnet_units[0]``)."""
        for name in ("weight", "guidance_start", "guidance_end", "threshold_a", "threshold_b"):
            if not math.isfinite(getattr(self, name)):
                raise InvalidRequest(f"{where}.{name}", f"must be a finite number, got {getattr(self, name)}")
        if not 0.0 <= self.weight <= 2.0:
            raise InvalidRequest(f"{where}.weight", f"must be between 0 and 2, got {self.weight:g}")
        for name in ("guidance_start", "guidance_end"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise InvalidRequest(f"{where}.{name}", f"must be between 0 and 1, got {getattr(self, name):g}")
        if self.guidance_start > self.guidance_end:
            raise InvalidRequest(
                f"{where}.guidance_start",
                f"must not be after guidance_end ({self.guidance_start:g} > {self.guidance_end:g})",
            )
        try:
            wrong = self.out_of_range()  # also finds the preprocessor: an unknown one is named here
        except InvalidRequest as exc:
            raise InvalidRequest(f"{where}.module", exc.message) from None
        for name, message in wrong:
            raise InvalidRequest(f"{where}.{name}", message)
        if self.enabled and (not self.model or self.model.strip() == NO_MODEL):
            raise InvalidRequest(f"{where}.model", "choose a ControlNet model for an enabled unit")

    def out_of_range(self) -> list[tuple[str, str]]:
        """(field, why) for the preprocessor resolution and thresholds outside their ranges (-1 is "the default").
        Easel's request refuses them; the extension's API (and so Easel's copy of it) falls back to the default."""
        pre = self.preprocessor
        found = []
        res = self.processor_res
        if res != -1 and not MIN_RESOLUTION <= res <= MAX_RESOLUTION:
            found.append(
                (
                    "processor_res",
                    f"must be -1 (the default) or between {MIN_RESOLUTION} and {MAX_RESOLUTION}, got {res}",
                )
            )
        for name, slider in (("threshold_a", pre.threshold_a), ("threshold_b", pre.threshold_b)):
            value = getattr(self, name)
            if slider is not None and value != -1 and not slider.low <= value <= slider.high:
                found.append(
                    (
                        name,
                        f"{slider.label} of '{pre.name}' must be between {slider.low:g} and {slider.high:g} "
                        f"(or -1 for {slider.default:g}), got {value:g}",
                    )
                )
        return found

    # -- what it resolves to -----------------------------------------------------------------------------
    def resolution(self, width: int, height: int, image_size: tuple[int, int] | None) -> int:
        """The preprocessor resolution: "pixel perfect" derives it from the output size as the extension does."""
        if self.pixel_perfect and image_size is not None:
            return pixel_perfect_resolution(image_size, width, height, self.resize_mode)
        return self.processor_res if self.processor_res != -1 else DEFAULT_RESOLUTION

    def thresholds(self) -> tuple[float, float]:
        pre = self.preprocessor
        a = pre.threshold_a.default if pre.threshold_a is not None and self.threshold_a == -1 else self.threshold_a
        b = pre.threshold_b.default if pre.threshold_b is not None and self.threshold_b == -1 else self.threshold_b
        return a, b

    def infotext(self, model_title: str, resolution: int) -> str:
        """The extension's ``ControlNet N`` value: its fields as ``Key: value`` pairs (the caller quotes it)."""
        a, b = self.thresholds()
        fields = {
            "Module": self.preprocessor.name,
            "Model": model_title,
            "Weight": float(self.weight),
            "Resize Mode": RESIZE_LABELS[self.resize_mode],
            "Processor Res": resolution if self.preprocessor.uses_resolution else -1,
            "Threshold A": float(a),
            "Threshold B": float(b),
            "Guidance Start": float(self.guidance_start),
            "Guidance End": float(self.guidance_end),
            "Pixel Perfect": self.pixel_perfect,
            "Control Mode": self.control_mode.value,
        }
        return ", ".join(f"{key}: {_clean(value)}" for key, value in fields.items())


def _clean(value: Any) -> str:
    """Values may not hold the separators of the unit's own ``Key: value, ...`` form."""
    return re.sub(r"[,:]", " ", str(value))


def pixel_perfect_resolution(image_size: tuple[int, int], width: int, height: int, mode: ResizeMode) -> int:
    """The preprocessor resolution at which the detected map needs no rescaling to the output, as the
    extension computes it: the short side scaled as the resize mode will scale the image."""
    raw_w, raw_h = image_size
    k_h, k_w = height / raw_h, width / raw_w
    scale = min(k_h, k_w) if mode is ResizeMode.RESIZE_AND_FILL else max(k_h, k_w)
    return max(MIN_RESOLUTION, min(MAX_RESOLUTION, round(scale * min(raw_w, raw_h))))


_UNIT_FIELDS = {
    "Module": ("module", str),
    "Model": ("model", str),
    "Weight": ("weight", float),
    "Resize Mode": ("resize_mode", str),
    "Processor Res": ("processor_res", int),
    "Threshold A": ("threshold_a", float),
    "Threshold B": ("threshold_b", float),
    "Guidance Start": ("guidance_start", float),
    "Guidance End": ("guidance_end", float),
    "Pixel Perfect": ("pixel_perfect", bool),
    "Control Mode": ("control_mode", str),
}
INFOTEXT_KEY = re.compile(r"^ControlNet (\d+)$")


def parse_unit_infotext(text: str) -> dict[str, Any]:
    """Unit fields from one ``ControlNet N`` value; unknown keys and unreadable values are left out."""
    fields: dict[str, Any] = {}
    for part in str(text).split(","):
        key, sep, raw = part.partition(":")
        if not sep or key.strip() not in _UNIT_FIELDS:
            continue
        name, kind = _UNIT_FIELDS[key.strip()]
        raw = raw.strip()
        try:
            if kind is bool:
                fields[name] = raw.lower() == "true"
            elif kind is int:
                fields[name] = int(float(raw))
            elif kind is float:
                fields[name] = float(raw)
            else:
                fields[name] = raw
        except ValueError:
            continue
    return fields


def units_from_infotext(parsed: dict[str, Any]) -> list[dict[str, Any]]:
    """Every ``ControlNet N`` entry of a parsed infotext, in N order, as unit field dicts."""
    found = []
    for key, value in parsed.items():
        match = INFOTEXT_KEY.match(str(key))
        if match:
            found.append((int(match.group(1)), parse_unit_infotext(value)))
    return [fields for _, fields in sorted(found, key=lambda item: item[0])]
