"""Generation settings a model file asks for: its native size, steps, CFG and sampler.

A model trained at 64 px (Easel's demo) or 1024 px (SDXL) draws badly at anything else, so selecting it should
set the size. The file says so in its safetensors metadata: Easel's own ``easel.defaults`` (a JSON object of
request fields) or the ModelSpec standard's ``modelspec.resolution`` ("1024x1024"), which trainers such as
kohya write. Only known fields with sane values are taken; anything else in the metadata is ignored.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

from webui.errors import EaselError
from webui.weights import formats

log = logging.getLogger(__name__)

_FIELDS: dict[str, type] = {"width": int, "height": int, "steps": int, "cfg_scale": float, "sampler_name": str}
_RESOLUTION = re.compile(r"^\s*(\d{2,5})\s*x\s*(\d{2,5})\s*$")
_cache: dict[tuple[Path, int, float], dict[str, Any]] = {}


def _valid(name: str, value: Any) -> bool:
    kind = _FIELDS[name]
    if kind is str:
        return isinstance(value, str) and 0 < len(value) <= 64
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if name in ("width", "height"):
        return value == int(value) and 64 <= value <= 8192 and int(value) % 8 == 0
    if name == "steps":
        return value == int(value) and 1 <= value <= 150
    return 1.0 <= value <= 30.0


def from_metadata(metadata: dict[str, str]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    resolution = _RESOLUTION.match(metadata.get("modelspec.resolution", ""))
    if resolution:
        width, height = int(resolution.group(1)), int(resolution.group(2))
        if _valid("width", width) and _valid("height", height):
            found.update(width=width, height=height)
    try:
        easel = json.loads(metadata.get("easel.defaults", "{}"))
    except json.JSONDecodeError:
        easel = {}
    if isinstance(easel, dict):
        for name, value in easel.items():
            if name in _FIELDS and _valid(name, value):
                found[name] = _FIELDS[name](value)
    return found


def generation_defaults(path: Path) -> dict[str, Any]:
    """The request fields ``path`` asks for (possibly none); cached by size and mtime, never raises."""
    path = Path(path)
    try:
        st = path.stat()
    except OSError:
        return {}
    key = (path, st.st_size, st.st_mtime)
    if key not in _cache:
        try:
            metadata = formats.read_metadata(path) if path.is_file() else {}
        except (EaselError, OSError) as exc:
            log.debug("no defaults from %s: %s", path, exc)
            metadata = {}
        _cache[key] = from_metadata(metadata)
    return dict(_cache[key])
