"""Which model a checkpoint is (SD1, SD2, SDXL; inpaint; epsilon or v) from its key names and tensor shapes."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from webui.errors import ModelLoadError

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
SD1_CLIP_PREFIX = "cond_stage_model.transformer."
SD2_OPEN_CLIP_PREFIX = "cond_stage_model.model."
SDXL_CLIP_PREFIX = "conditioner.embedders.0.transformer."
SDXL_OPEN_CLIP_PREFIX = "conditioner.embedders.1.model."
REFINER_OPEN_CLIP_PREFIX = "conditioner.embedders.0.model."

_CONV_IN = UNET_PREFIX + "input_blocks.0.0.weight"
_SDXL_LABEL_EMB = UNET_PREFIX + "label_emb.0.0.weight"
_CLIP_TOKENS = "text_model.embeddings.token_embedding.weight"
_OPEN_CLIP_TOKENS = "token_embedding.weight"
# Very old SD1 checkpoints were saved before transformers nested CLIP under ``text_model``; A1111 renames them.
_OLD_CLIP_PARTS = ("embeddings.", "encoder.", "final_layer_norm.")
_YAML_V = re.compile(r"""^\s*parameterization\s*:\s*["']?v["']?\s*(#.*)?$""", re.MULTILINE)

FAMILY_LABELS = {"sd1": "SD1.x", "sd2": "SD2.x", "sdxl": "SDXL"}


def native_size(family: str, prediction: str) -> int:
    """The resolution the family was trained at: what the UI should offer by default."""
    if family == "sdxl":
        return 1024
    if family == "sd2" and prediction == "v_prediction":
        return 768
    return 512


@dataclass(frozen=True)
class Architecture:
    """What a checkpoint is, as far as building and driving its pipeline is concerned."""

    family: str  # sd1 | sd2 | sdxl
    inpaint: bool = False
    prediction: str = "epsilon"  # epsilon | v_prediction
    native_size: int = 512
    # Where ``prediction`` came from: "v_pred key", "yaml", "probe", "config" (diffusers folder), "family" (the
    # family only ships epsilon models) or "default" (nothing said: a guess).
    prediction_source: str = "default"

    @property
    def label(self) -> str:
        """Short human name, e.g. "SD1.x", "SDXL inpaint", "SD2.x (768, v-prediction)"."""
        text = FAMILY_LABELS[self.family] + (" inpaint" if self.inpaint else "")
        if self.prediction == "v_prediction":
            text += " (768, v-prediction)" if self.native_size == 768 else " (v-prediction)"
        return text

    @property
    def prediction_is_guess(self) -> bool:
        """True when nothing in the file said which prediction type it uses (SD2 then needs the probe)."""
        return self.prediction_source == "default"

    def with_prediction(self, prediction: str, source: str) -> Architecture:
        return replace(
            self,
            prediction=prediction,
            prediction_source=source,
            native_size=native_size(self.family, prediction),
        )


def normalize_keys(state_dict: dict[str, Any]) -> dict[str, Any]:
    """Renames pre-``text_model`` CLIP keys of old SD1 checkpoints; returns the input itself when nothing changes."""
    old = [
        k for k in state_dict if k.startswith(SD1_CLIP_PREFIX) and k[len(SD1_CLIP_PREFIX) :].startswith(_OLD_CLIP_PARTS)
    ]
    if not old:
        return state_dict
    fixed = dict(state_dict)
    for key in old:
        fixed[SD1_CLIP_PREFIX + "text_model." + key[len(SD1_CLIP_PREFIX) :]] = fixed.pop(key)
    return fixed


def _seen(state_dict: Mapping[str, Any], limit: int = 6) -> str:
    """Summarises a state dict by its top-level key groups, so an error says what the file does contain."""
    if not state_dict:
        return "the file holds no tensors"
    groups = Counter(".".join(k.split(".")[:2]) if k.count(".") >= 2 else k for k in state_dict)
    shown = ", ".join(f"{name}.* ({count})" if count > 1 else name for name, count in groups.most_common(limit))
    more = f", ... ({len(groups) - limit} more groups)" if len(groups) > limit else ""
    return f"saw {len(state_dict)} tensors: {shown}{more}"


def _unrecognised(path: Path, why: str, state_dict: Mapping[str, Any]) -> ModelLoadError:
    return ModelLoadError(path, f"unrecognised architecture: {why}; {_seen(state_dict)}")


def _family(state_dict: Mapping[str, Any], path: Path) -> str:
    has = state_dict.__contains__
    if has(SD1_CLIP_PREFIX + _CLIP_TOKENS):
        return "sd1"
    if has(SD2_OPEN_CLIP_PREFIX + _OPEN_CLIP_TOKENS):
        return "sd2"
    if has(SDXL_CLIP_PREFIX + _CLIP_TOKENS) and has(SDXL_OPEN_CLIP_PREFIX + _OPEN_CLIP_TOKENS):
        if not has(_SDXL_LABEL_EMB):
            raise _unrecognised(
                path, "SDXL text encoders but the U-Net has no size/crop embedding (label_emb)", state_dict
            )
        return "sdxl"
    if has(REFINER_OPEN_CLIP_PREFIX + _OPEN_CLIP_TOKENS):
        raise _unrecognised(
            path, "looks like an SDXL refiner (only an OpenCLIP text encoder), which is not supported", state_dict
        )
    raise _unrecognised(path, "a U-Net but no CLIP-L / OpenCLIP text encoder that matches SD1, SD2 or SDXL", state_dict)


def _sidecar_says_v(path: Path) -> bool:
    """A1111 convention: ``model.yaml`` next to ``model.safetensors`` with ``parameterization: "v"``."""
    sidecar = path.with_suffix(".yaml")
    try:
        text = sidecar.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return bool(_YAML_V.search(text))


def detect_architecture(state_dict: Mapping[str, Any], path: Path) -> Architecture:
    """Family, inpaint and prediction type from key names and shapes alone (no weights are run).

    SD2 files that carry no ``v_pred`` key or yaml sidecar come back with ``prediction_is_guess``; the loader
    then runs ``probe_v_prediction`` on the built U-Net, as A1111 does.
    """
    path = Path(path)
    conv_in = state_dict.get(_CONV_IN)
    if conv_in is None:
        raise _unrecognised(path, f"no Stable Diffusion U-Net ({_CONV_IN} is missing)", state_dict)
    family = _family(state_dict, path)
    channels = int(conv_in.shape[1]) if len(conv_in.shape) == 4 else -1
    if channels not in (4, 9):
        raise _unrecognised(
            path, f"the U-Net takes {channels} input channels (expected 4, or 9 for inpainting)", state_dict
        )
    arch = Architecture(family=family, inpaint=channels == 9, native_size=native_size(family, "epsilon"))
    if "v_pred" in state_dict:
        return arch.with_prediction("v_prediction", "v_pred key")
    if _sidecar_says_v(path):
        return arch.with_prediction("v_prediction", "yaml")
    if family != "sd2" or arch.inpaint:
        return replace(arch, prediction_source="family")
    return arch


def needs_probe(arch: Architecture) -> bool:
    """Only SD2 ships in both flavours under the same keys; SD2 inpainting is always epsilon."""
    return arch.family == "sd2" and not arch.inpaint and arch.prediction_is_guess


@torch.no_grad()
def probe_v_prediction(unet: torch.nn.Module) -> bool:
    """A1111's test: a v model's output at t=999 on a flat 0.5 latent lies well below the input.

    The U-Net runs once on an 8x8 latent in float32 (a half-precision model is upcast for the call and put
    back: both conversions are exact), so the answer does not depend on the load precision.
    """
    dtype = next(unet.parameters()).dtype
    if dtype != torch.float32:
        torch.nn.Module.to(unet, torch.float32)  # the plain cast: diffusers' own to() warns about dtype casts
    try:
        cross_dim = int(unet.config.cross_attention_dim)
        x = torch.ones(1, int(unet.config.in_channels), 8, 8) * 0.5
        context = torch.ones(1, 2, cross_dim) * 0.5
        out = unet(x, torch.tensor([999]), encoder_hidden_states=context).sample
        return float((out - x).mean()) < -1
    finally:
        if dtype != torch.float32:
            torch.nn.Module.to(unet, dtype)


def architecture_from_configs(
    path: Path,
    unet_config: Mapping[str, Any],
    scheduler_config: Mapping[str, Any] | None,
    text_encoder_config: Mapping[str, Any] | None,
    has_text_encoder_2: bool,
) -> Architecture:
    """The same answer for a diffusers folder, read from its component configs instead of tensor shapes.

    SDXL is the only family with the text_time size embedding. SD1 and SD2 differ by cross-attention width
    (768 vs 1024); when the width is neither (a small test model) the text encoder's activation decides:
    OpenAI's CLIP-L uses quick_gelu, OpenCLIP uses gelu.
    """
    if unet_config.get("addition_embed_type") == "text_time":
        if not has_text_encoder_2:
            raise ModelLoadError(path, "unrecognised architecture: SDXL refiner (one text encoder) is not supported")
        family = "sdxl"
    elif unet_config.get("cross_attention_dim") == 768:
        family = "sd1"
    elif unet_config.get("cross_attention_dim") == 1024:
        family = "sd2"
    elif text_encoder_config is not None:
        family = "sd1" if text_encoder_config.get("hidden_act") == "quick_gelu" else "sd2"
    else:
        raise ModelLoadError(path, "unrecognised architecture: cannot tell SD1 from SD2 without a text encoder")
    channels = int(unet_config.get("in_channels", 4))
    if channels not in (4, 9):
        raise ModelLoadError(path, f"unrecognised architecture: the U-Net takes {channels} input channels")
    prediction = (scheduler_config or {}).get("prediction_type") or "epsilon"
    arch = Architecture(family=family, inpaint=channels == 9)
    return arch.with_prediction(prediction, "config")
