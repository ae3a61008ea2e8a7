"""The shipped diffusers configs of each model family (SD1, SD2, SDXL), read from ``configs/<family>.json``."""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
FAMILIES = ("sd1", "sd2", "sdxl")


@cache
def _read(family: str) -> dict[str, Any]:
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r} (known: {', '.join(FAMILIES)})")
    return json.loads((CONFIG_DIR / f"{family}.json").read_text(encoding="utf-8"))


def family_config(family: str, prediction: str = "epsilon") -> dict[str, Any]:
    """A fresh copy of the family's component configs with the prediction type applied.

    Callers mutate the result (shape overrides), so each call gets its own deep copy of the cached file.
    The ``v_prediction`` section, when the family has one, holds what differs in the v model (SD2 768-v).
    """
    config = copy.deepcopy(_read(family))
    variant = config.pop("v_prediction", {})
    if prediction == "v_prediction":
        for component, overrides in variant.items():
            config[component].update(overrides)
    config["scheduler"]["prediction_type"] = prediction
    return config


def unet_heads(family: str, block_out_channels: list[int]) -> int | list[int]:
    """The U-Net's ``attention_head_dim`` value (which diffusers reads as the head count) for a family.

    SD1 uses 8 heads at every level; SD2 and SDXL use 64-channel heads, so the count follows the width.
    Head counts are not visible in tensor shapes, so this rule is what makes tiny and real models load alike.
    """
    rule = _read(family)["unet_head_rule"]
    if "num_heads" in rule:
        return int(rule["num_heads"])
    return [max(1, channels // int(rule["head_dim"])) for channels in block_out_channels]


def text_heads(hidden_size: int) -> int:
    """CLIP and OpenCLIP text encoders all use 64-channel heads."""
    return max(1, hidden_size // 64)
