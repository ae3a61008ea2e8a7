"""Offline model building: original-layout (A1111/LDM) single files and diffusers folders into pipeline parts.

Nothing here may reach the network. Configs come from the shipped family files (``configs/*.json``) with the
dimensions read from the tensors, the tokenizer is the shipped one, and diffusers folders are read with
``local_files_only``. Models are created with empty (meta) weights and the file's tensors assigned in, so a real
checkpoint is never initialised randomly first and no tensor is silently left at a random value.
"""

from __future__ import annotations

import os

# Before anything imports huggingface_hub: it reads these once, at import time.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import itertools
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import diffusers
import torch
from accelerate import init_empty_weights
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.loaders.single_file_utils import (
    convert_ldm_clip_checkpoint,
    convert_ldm_unet_checkpoint,
    convert_ldm_vae_checkpoint,
    convert_open_clip_checkpoint,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from webui.errors import ModelLoadError
from webui.weights import detect, shapes
from webui.weights.clip_tokenizer import load_clip_tokenizer
from webui.weights.detect import Architecture
from webui.weights.family_configs import family_config

__all__ = ["LoadedModel", "load_clip_tokenizer", "load_diffusers_folder", "load_single_file"]

_SHOWN = 4  # key names quoted in an error message


@dataclass
class LoadedModel:
    """A built model: ``components`` are keyword arguments for the matching diffusers pipeline."""

    arch: Architecture
    components: dict[str, Any]


def _subset(state_dict: Mapping[str, Any], prefix: str, *, strip: bool = False) -> dict[str, Any]:
    cut = len(prefix) if strip else 0
    return {k[cut:]: v for k, v in state_dict.items() if k.startswith(prefix)}


def _names(keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOWN])
    return shown + (f" (+{len(keys) - _SHOWN} more)" if len(keys) > _SHOWN else "")


def _empty(factory: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    """Builds a module whose parameters live on the meta device: no memory, no random init."""
    with init_empty_weights():
        return factory()


_ALIGNMENT = 64


def _aligned(tensor: torch.Tensor) -> torch.Tensor:
    """A copy in freshly allocated memory when the file's reader left the data off a 64-byte boundary.

    safetensors can hand back CPU tensors at odd addresses; oneDNN/MKL then take other code paths, so the same
    weights gave outputs that differ in the last bits from the model they were saved from (and run slower).
    """
    if tensor.device.type != "cpu" or tensor.data_ptr() % _ALIGNMENT == 0:
        return tensor
    return tensor.clone()


def build_with_weights(
    path: Path, what: str, factory: Callable[[], torch.nn.Module], weights: Mapping[str, Any], dtype: torch.dtype
) -> torch.nn.Module:
    """A module built without random init and filled with ``weights``; any mismatch is a ModelLoadError."""
    model = _empty(factory)
    _assign(path, what, model, weights, dtype)
    return model


def _assign(path: Path, what: str, model: torch.nn.Module, weights: Mapping[str, Any], dtype: torch.dtype) -> None:
    """Puts converted tensors into ``model``; any missing, extra or mis-shaped tensor is a ModelLoadError."""
    weights = {k: v for k, v in weights.items() if v is not None}
    expected = model.state_dict()
    missing = [k for k in expected if k not in weights]
    unexpected = [k for k in weights if k not in expected]
    mismatched = [
        f"{k} {tuple(weights[k].shape)} (expected {tuple(expected[k].shape)})"
        for k in expected
        if k in weights and tuple(weights[k].shape) != tuple(expected[k].shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing tensors {_names(missing)}")
    if unexpected:
        problems.append(f"unexpected tensors {_names(unexpected)}")
    if mismatched:
        problems.append(f"wrong shapes {_names(mismatched)}")
    if problems:
        raise ModelLoadError(path, f"{what}: " + "; ".join(problems))
    tensors = {
        k: _aligned((v.to(dtype) if v.is_floating_point() else v).contiguous())
        for k, v in weights.items()
        if k in expected
    }
    model.load_state_dict(tensors, strict=True, assign=True)
    left = [n for n, t in itertools.chain(model.named_parameters(), model.named_buffers()) if t.is_meta]
    if left:
        raise ModelLoadError(path, f"{what}: tensors never loaded: {_names(left)}")
    torch.nn.Module.to(model, dtype)  # float buffers too; bypasses diffusers' to(), which warns on every cast
    model.requires_grad_(False)
    model.eval()


def _text_model(
    path: Path, what: str, converted: dict[str, Any], base: dict[str, Any], dtype: torch.dtype, projection: bool
) -> torch.nn.Module:
    """CLIPTextModel (flat keys in transformers 5) or CLIPTextModelWithProjection (``text_model.`` + projection)."""
    converted = {k: v for k, v in converted.items() if not k.endswith("position_ids")}
    config = CLIPTextConfig.from_dict({**base, **shapes.text_overrides(converted)})
    if projection:
        model = _empty(lambda: CLIPTextModelWithProjection(config))
    else:
        model = _empty(lambda: CLIPTextModel(config))
        if not hasattr(model, "text_model"):
            converted = {k.removeprefix("text_model."): v for k, v in converted.items()}
    _assign(path, what, model, converted, dtype)
    return model


def _open_clip(state_dict: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """diffusers' OpenCLIP converter, given the width it needs to split q/k/v when no text_projection exists."""
    hidden = int(shapes.require(state_dict, prefix + "token_embedding.weight").shape[1])
    stand_in = SimpleNamespace(config=SimpleNamespace(hidden_size=hidden))
    return convert_open_clip_checkpoint(stand_in, _subset(state_dict, prefix), prefix=prefix)


def _text_encoders(
    path: Path, state_dict: Mapping[str, Any], family: str, config: dict[str, Any], dtype: torch.dtype
) -> dict[str, Any]:
    parts: dict[str, Any] = {}
    if family == "sd1":
        clip = convert_ldm_clip_checkpoint(_subset(state_dict, detect.SD1_CLIP_PREFIX))
        parts["text_encoder"] = _text_model(path, "text encoder", clip, config["text_encoder"], dtype, False)
    elif family == "sd2":
        open_clip = _open_clip(state_dict, detect.SD2_OPEN_CLIP_PREFIX)
        parts["text_encoder"] = _text_model(path, "text encoder", open_clip, config["text_encoder"], dtype, False)
    else:
        clip = convert_ldm_clip_checkpoint(_subset(state_dict, detect.SDXL_CLIP_PREFIX))
        parts["text_encoder"] = _text_model(path, "text encoder", clip, config["text_encoder"], dtype, False)
        open_clip = _open_clip(state_dict, detect.SDXL_OPEN_CLIP_PREFIX)
        parts["text_encoder_2"] = _text_model(path, "text encoder 2", open_clip, config["text_encoder_2"], dtype, True)
    return parts


def _apply_unet_overrides(unet: UNet2DConditionModel, overrides: Mapping[str, Any]) -> None:
    """Turns an SD2 U-Net built as epsilon into the 768-v variant once the probe says so (no rebuild)."""
    unet.register_to_config(**overrides)
    if "upcast_attention" in overrides:
        for module in unet.modules():
            if hasattr(module, "upcast_attention"):
                module.upcast_attention = bool(overrides["upcast_attention"])


def _scheduler(config: dict[str, Any]) -> Any:
    cls = getattr(diffusers, config["_class_name"])
    return cls.from_config(config)


def _tokenizers(config: dict[str, Any]) -> dict[str, CLIPTokenizer]:
    parts = {"tokenizer": load_clip_tokenizer(config["tokenizer"]["pad_token"])}
    if "tokenizer_2" in config:
        parts["tokenizer_2"] = load_clip_tokenizer(config["tokenizer_2"]["pad_token"])
    return parts


def _build_single(path: Path, state_dict: Mapping[str, Any], arch: Architecture, dtype: torch.dtype) -> LoadedModel:
    config = family_config(arch.family, arch.prediction)
    components = _text_encoders(path, state_dict, arch.family, config, dtype)

    unet_sd = _subset(state_dict, detect.UNET_PREFIX)
    pooled = components["text_encoder_2"].config.projection_dim if "text_encoder_2" in components else None
    unet_config = {
        **config["unet"],
        **shapes.unet_overrides(_subset(unet_sd, detect.UNET_PREFIX, strip=True), arch.family, pooled),
    }
    unet = _empty(lambda: UNet2DConditionModel.from_config(unet_config))
    _assign(path, "U-Net", unet, convert_ldm_unet_checkpoint(unet_sd, unet_config), dtype)
    if detect.needs_probe(arch):
        prediction = "v_prediction" if detect.probe_v_prediction(unet) else "epsilon"
        arch = arch.with_prediction(prediction, "probe")
        config = family_config(arch.family, arch.prediction)
        if prediction == "v_prediction":
            _apply_unet_overrides(unet, {k: config["unet"][k] for k in ("sample_size", "upcast_attention")})
    components["unet"] = unet

    vae_sd = _subset(state_dict, detect.VAE_PREFIX)
    vae_config = {**config["vae"], **shapes.vae_overrides(_subset(vae_sd, detect.VAE_PREFIX, strip=True))}
    vae = _empty(lambda: AutoencoderKL.from_config(vae_config))
    _assign(path, "VAE", vae, convert_ldm_vae_checkpoint(vae_sd, vae_config), dtype)
    components["vae"] = vae

    components.update(_tokenizers(config))
    components["scheduler"] = _scheduler(config["scheduler"])
    return LoadedModel(arch=arch, components=components)


def load_single_file(path: Path, state_dict: dict[str, torch.Tensor], dtype: torch.dtype) -> LoadedModel:
    """Builds every pipeline component of an original-layout checkpoint, on CPU in ``dtype``, in eval mode.

    The state dict is read by the caller (``formats.read_state_dict``); its tensors are moved into the models
    (not copied when already in ``dtype``), so the caller should drop its reference afterwards.
    """
    path = Path(path)
    state_dict = detect.normalize_keys(state_dict)
    arch = detect.detect_architecture(state_dict, path)
    try:
        return _build_single(path, state_dict, arch, dtype)
    except ModelLoadError:
        raise
    except (shapes.LayoutError, KeyError, IndexError, ValueError, TypeError, RuntimeError) as exc:
        raise ModelLoadError(path, f"{arch.label} checkpoint is incomplete or damaged: {exc}") from exc


# --- diffusers folders --------------------------------------------------------------------------------------

_FOLDER_CLASSES: dict[str, tuple[type, ...]] = {
    "unet": (UNet2DConditionModel,),
    "vae": (AutoencoderKL,),
    "text_encoder": (CLIPTextModel,),
    "text_encoder_2": (CLIPTextModelWithProjection,),
}
_WEIGHT_NAMES = ("diffusion_pytorch_model", "model")


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ModelLoadError(path.parent, f"cannot read {path.name}: {exc}") from exc


def _variant(folder: Path) -> str | None:
    """``fp16`` when a component ships only ``*.fp16.safetensors`` weights (a common diffusers layout)."""
    names = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
    plain = any(f"{stem}.safetensors" in names or f"{stem}.bin" in names for stem in _WEIGHT_NAMES)
    fp16 = any(f"{stem}.fp16.safetensors" in names or f"{stem}.fp16.bin" in names for stem in _WEIGHT_NAMES)
    return "fp16" if fp16 and not plain else None


def _from_folder(path: Path, name: str, index: Mapping[str, Any], dtype: torch.dtype) -> Any:
    declared = (index.get(name) or [None, None])[1]
    classes = _FOLDER_CLASSES[name]
    if declared is not None and declared not in {cls.__name__ for cls in classes}:
        raise ModelLoadError(path, f"{name} is a {declared}; Easel expects {classes[0].__name__}")
    sub = path / name
    if not sub.is_dir():
        raise ModelLoadError(path, f"the {name} folder is missing")
    cls = classes[0]
    kwargs: dict[str, Any] = {"local_files_only": True, "variant": _variant(sub)}
    kwargs["torch_dtype" if issubclass(cls, diffusers.ModelMixin) else "dtype"] = dtype
    try:
        model = cls.from_pretrained(sub, **kwargs)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ModelLoadError(path, f"{name}: {exc}") from exc
    with torch.no_grad():
        for tensor in itertools.chain(model.parameters(), model.buffers()):
            tensor.data = _aligned(tensor.data)
    model.requires_grad_(False)
    return model.eval()


def _folder_tokenizer(path: Path, name: str, pad_token: str) -> CLIPTokenizer:
    """The folder's own tokenizer when it has one (it may add tokens), else the shipped CLIP tokenizer."""
    sub = path / name
    if not (sub / "vocab.json").is_file() and not (sub / "tokenizer.json").is_file():
        return load_clip_tokenizer(pad_token)
    try:
        return CLIPTokenizer.from_pretrained(sub, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(path, f"{name}: {exc}") from exc


def _folder_scheduler(path: Path, fallback: dict[str, Any], prediction: str) -> Any:
    config = _read_json(path / "scheduler" / "scheduler_config.json")
    name = (config or {}).get("_class_name", "")
    cls = getattr(diffusers, name, None) if name.endswith("Scheduler") else None
    if config is None or cls is None:
        return _scheduler({**fallback, "prediction_type": prediction})
    return cls.from_config(config)


def load_diffusers_folder(path: Path, dtype: torch.dtype) -> LoadedModel:
    """Loads a diffusers-format folder (``model_index.json`` + component subfolders) without the network."""
    path = Path(path)
    index = _read_json(path / "model_index.json")
    if index is None:
        raise ModelLoadError(path, "not a diffusers folder (no model_index.json)")
    unet_config = _read_json(path / "unet" / "config.json")
    if unet_config is None:
        raise ModelLoadError(path, "the unet folder or its config.json is missing")
    arch = detect.architecture_from_configs(
        path,
        unet_config,
        _read_json(path / "scheduler" / "scheduler_config.json"),
        _read_json(path / "text_encoder" / "config.json"),
        (path / "text_encoder_2").is_dir(),
    )
    config = family_config(arch.family, arch.prediction)
    names = ["unet", "vae", "text_encoder"] + (["text_encoder_2"] if arch.family == "sdxl" else [])
    components: dict[str, Any] = {name: _from_folder(path, name, index, dtype) for name in names}
    components["tokenizer"] = _folder_tokenizer(path, "tokenizer", config["tokenizer"]["pad_token"])
    if arch.family == "sdxl":
        components["tokenizer_2"] = _folder_tokenizer(path, "tokenizer_2", config["tokenizer_2"]["pad_token"])
    components["scheduler"] = _folder_scheduler(path, config["scheduler"], arch.prediction)
    return LoadedModel(arch=arch, components=components)
