"""ControlNet model files from ``models/ControlNet``: listed, read offline, and kept loaded while in use.

Users have them in three shapes, all handled by one path:

- single files in the original (LDM) layout, as the SD1.5 v1.1 family is distributed (``input_blocks``,
  ``zero_convs``, ``input_hint_block``; with or without a ``control_model.`` prefix; ``.safetensors`` or a
  ``.pth``/``.ckpt`` read with ``weights_only``);
- single files in diffusers' layout, as most SDXL ControlNets are (``controlnet_cond_embedding``...);
- diffusers folders (``config.json`` + ``diffusion_pytorch_model.safetensors``).

No config is ever fetched: the architecture is read from tensor shapes (block widths, depths, attention, the
conditioning embedding's widths), so a real SD1.5 canny model and a tiny test model load alike. Which base
model a ControlNet belongs to is read from its cross-attention width, so one for another architecture is refused
with both named before any step runs.
"""

from __future__ import annotations

import logging
import re
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from webui.errors import ModelLoadError
from webui.weights import formats
from webui.weights.hashing import HashCache
from webui.weights.registry import CheckpointInfo, ModelRegistry
from webui.weights.shapes import LayoutError, unet_overrides

log = logging.getLogger(__name__)

CONTROLNET_EXTENSIONS = (".safetensors", ".pth", ".pt", ".ckpt", ".bin")
NONE = "None"  # the extension's "no model" choice

_FAMILY_BY_WIDTH = {768: "SD1.x", 1024: "SD2.x", 2048: "SDXL"}
_LDM_PREFIXES = ("control_model.", "model.control_model.")
_KEEP_LOADED = 3  # ControlNets kept in memory between jobs (several units, or switching between two)


def family_label(cross_attention_dim: int) -> str:
    """The base family a cross-attention width means (what users call the model: SD1.x, SDXL...)."""
    return _FAMILY_BY_WIDTH.get(cross_attention_dim, f"a model with {cross_attention_dim}-wide text conditioning")


@dataclass
class LoadedControlNet:
    info: CheckpointInfo
    model: Any  # diffusers.ControlNetModel

    @property
    def cross_attention_dim(self) -> int:
        return int(self.model.config.cross_attention_dim)

    @property
    def family(self) -> str:
        return family_label(self.cross_attention_dim)


class ControlNetLibrary:
    """The ControlNet folder's files and the few loaded ones (LRU), for the worker thread."""

    def __init__(self, root: Path, cache: HashCache, builtins: Sequence[Path] = ()) -> None:
        self.registry = ModelRegistry(
            root,
            cache,
            CONTROLNET_EXTENSIONS,
            label="controlnet model",
            folder_marker="config.json",
            builtins=builtins,
        )
        self._loaded: OrderedDict[Path, tuple[tuple[Any, ...], LoadedControlNet]] = OrderedDict()

    def find(self, query: str) -> CheckpointInfo:
        """A listed model by title, name, stem or hash (``ModelNotFound`` naming ``model`` otherwise)."""
        return self.registry.get(query)

    def titles(self) -> list[str]:
        return [info.title for info in self.registry.list()]

    def load(self, query: str, base: Mapping[str, Any], dtype: torch.dtype, device: torch.device) -> LoadedControlNet:
        """The model for ``query`` on ``device``, read from disk only the first time (or after the file changed).

        ``base`` is the loaded checkpoint's U-Net config: a ControlNet made for another architecture is refused
        naming both, and what shapes cannot tell (norms, head counts) is taken from it."""
        info = self.find(query)
        stamp = (info.size, info.mtime, _base_key(base))
        cached = self._loaded.get(info.path)
        if cached is not None and cached[0] == stamp:
            self._loaded.move_to_end(info.path)
            loaded = cached[1]
        else:
            try:
                model = load_controlnet(info.path, base, dtype)
            except ModelLoadError as exc:
                self.registry.record_error(info, exc.reason)
                raise
            if info.kind == "file":
                info.ensure_hash(self.registry.cache)
            loaded = LoadedControlNet(info, model)
            self._loaded[info.path] = (stamp, loaded)
            while len(self._loaded) > _KEEP_LOADED:
                self._loaded.popitem(last=False)
        torch.nn.Module.to(loaded.model, device=device, dtype=dtype)  # diffusers' own to() warns on every cast
        return loaded

    def release(self) -> None:
        """Forget every loaded model (a checkpoint switch to another family, or low memory)."""
        self._loaded.clear()


# -- reading ----------------------------------------------------------------------------------------------


def _base_key(base: Mapping[str, Any]) -> tuple[Any, ...]:
    return (base.get("cross_attention_dim"), tuple(base.get("block_out_channels", ())))


def check_fits(path: Path, cross_attention_dim: int, block_out: Sequence[int], base: Mapping[str, Any]) -> None:
    """Refuse a ControlNet whose residuals cannot be added to this U-Net, naming both architectures."""
    base_cross = int(base["cross_attention_dim"])
    if cross_attention_dim != base_cross:
        raise ModelLoadError(
            path,
            f"is a ControlNet for {family_label(cross_attention_dim)}, but the loaded checkpoint is "
            f"{family_label(base_cross)}; choose a ControlNet made for it",
        )
    if list(block_out) != list(base["block_out_channels"]):
        raise ModelLoadError(
            path,
            f"has block widths {list(block_out)}, but the loaded checkpoint's U-Net has "
            f"{list(base['block_out_channels'])}; it was made for another model",
        )


def load_controlnet(path: Path, base: Mapping[str, Any], dtype: torch.dtype) -> Any:
    """A ``diffusers.ControlNetModel`` from a file or folder, in eval mode; ``ModelLoadError`` names the file."""
    from diffusers import ControlNetModel

    path = Path(path)
    if path.is_dir():
        try:
            model = ControlNetModel.from_pretrained(path, local_files_only=True, torch_dtype=dtype)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise ModelLoadError(path, f"not a diffusers ControlNet folder: {exc}") from exc
        config = model.config
        check_fits(path, int(config.cross_attention_dim), config.block_out_channels, base)
        return model.requires_grad_(False).eval()
    state = formats.read_state_dict(path)
    state = to_diffusers_layout(path, state)
    try:
        config = config_from_shapes(state, base)
    except LayoutError as exc:
        raise ModelLoadError(path, f"not a ControlNet this version understands: {exc}") from exc
    check_fits(path, config["cross_attention_dim"], config["block_out_channels"], base)
    if "shuffle" in path.name.lower():
        config["global_pool_conditions"] = True  # the shuffle model pools its output, as the extension knows
    from webui.weights import loader

    model = loader.build_with_weights(path, "ControlNet", lambda: ControlNetModel(**config), state, dtype)
    return model.requires_grad_(False).eval()


def to_diffusers_layout(path: Path, state: dict[str, Any]) -> dict[str, Any]:
    """Tensors renamed to diffusers' ControlNet names, whichever layout the file uses."""
    if "lora_controlnet" in state:
        raise ModelLoadError(path, "is a Control-LoRA; Easel loads full ControlNet models only")
    if "controlnet_cond_embedding.conv_in.weight" in state:
        return state
    for prefix in _LDM_PREFIXES:
        if any(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            break
    if "input_hint_block.0.weight" not in state:
        if any(k.startswith("model.diffusion_model.") for k in state):
            raise ModelLoadError(
                path, "is a Stable Diffusion checkpoint, not a ControlNet (put it in Stable-diffusion)"
            )
        raise ModelLoadError(path, "is not a ControlNet (no input_hint_block or controlnet_cond_embedding tensors)")
    from diffusers.loaders.single_file_utils import convert_controlnet_checkpoint

    try:
        layers = unet_overrides(state, "sd1", require_out=False)["layers_per_block"]
    except LayoutError as exc:
        raise ModelLoadError(path, f"not a ControlNet this version understands: {exc}") from exc
    converted = convert_controlnet_checkpoint(state, {"layers_per_block": layers})
    for ldm, diffusers_name in (
        ("label_emb.0.0", "add_embedding.linear_1"),
        ("label_emb.0.2", "add_embedding.linear_2"),
    ):
        for part in ("weight", "bias"):  # SDXL's size embedding, which diffusers' ControlNet table leaves out
            converted[f"{diffusers_name}.{part}"] = state.get(f"{ldm}.{part}")
    # diffusers' table puts the conditioning embedding's last conv at input_hint_block.14 (the usual 8x
    # downsampling); a model for another latent scale ends elsewhere, so map the last one found.
    hints = sorted({int(m[1]) for k in state if (m := re.match(r"input_hint_block\.(\d+)\.weight$", k))})
    for part in ("weight", "bias"):
        converted[f"controlnet_cond_embedding.conv_out.{part}"] = state.get(f"input_hint_block.{hints[-1]}.{part}")
    converted = {k: v for k, v in converted.items() if not k.startswith("controlnet_cond_embedding.blocks.")}
    blocks = [i for i in hints if i not in (hints[0], hints[-1])]
    for index, hint in enumerate(blocks):
        for part in ("weight", "bias"):
            converted[f"controlnet_cond_embedding.blocks.{index}.{part}"] = state.get(f"input_hint_block.{hint}.{part}")
    return {k: v for k, v in converted.items() if v is not None}


def _indices(state: Mapping[str, Any], pattern: str) -> list[int]:
    regex = re.compile(pattern)
    return sorted({int(m.group(1)) for k in state if (m := regex.match(k))})


def _require(state: Mapping[str, Any], key: str) -> Any:
    if key not in state:
        raise LayoutError(f"missing tensor {key}")
    return state[key]


# What tensor shapes cannot tell, taken from the base U-Net the ControlNet was trained beside.
_FROM_BASE = (
    "act_fn",
    "norm_num_groups",
    "norm_eps",
    "flip_sin_to_cos",
    "freq_shift",
    "upcast_attention",
    "resnet_time_scale_shift",
    "downsample_padding",
    "mid_block_scale_factor",
    "only_cross_attention",
    "class_embed_type",
    "addition_embed_type_num_heads",
    "addition_time_embed_dim",
)


def config_from_shapes(state: Mapping[str, Any], base: Mapping[str, Any]) -> dict[str, Any]:
    """``ControlNetModel`` arguments read from diffusers-layout tensor shapes, the rest from the base U-Net.

    Head counts are not in the shapes: with the base's block widths they are the base's; otherwise they follow
    the family's rule (SD1: 8 heads; SD2/SDXL: 64-channel heads), told apart by the cross-attention width.
    """
    from webui.weights.family_configs import unet_heads

    conv_in = _require(state, "conv_in.weight")
    levels = _indices(state, r"down_blocks\.(\d+)\.")
    if not levels:
        raise LayoutError("no down blocks")
    block_out = [int(_require(state, f"down_blocks.{i}.resnets.0.conv2.weight").shape[0]) for i in levels]
    attends = [f"down_blocks.{i}.attentions.0.proj_in.weight" in state for i in levels]
    depths = [
        len(_indices(state, rf"down_blocks\.{i}\.attentions\.0\.transformer_blocks\.(\d+)\.")) or 1 for i in levels
    ]
    to_k = next((k for k in state if k.endswith("attn2.to_k.weight")), None)
    proj_in = next((k for k in state if k.endswith(".proj_in.weight")), None)
    if to_k is None or proj_in is None:
        raise LayoutError("no cross-attention layers")
    cross = int(state[to_k].shape[1])
    family = {1024: "sd2", 2048: "sdxl"}.get(cross, "sd1")
    embed_blocks = _indices(state, r"controlnet_cond_embedding\.blocks\.(\d+)\.weight")
    embed_out = [int(_require(state, "controlnet_cond_embedding.conv_in.weight").shape[0])]
    embed_out += [int(state[f"controlnet_cond_embedding.blocks.{i}.weight"].shape[0]) for i in embed_blocks[1::2]]
    mid_depth = len(_indices(state, r"mid_block\.attentions\.0\.transformer_blocks\.(\d+)\.")) or 1
    if not attends[-1]:
        depths[-1] = mid_depth
    depths = [d if a or i == len(depths) - 1 else 1 for i, (d, a) in enumerate(zip(depths, attends, strict=True))]
    config: dict[str, Any] = {
        "in_channels": int(conv_in.shape[1]),
        "conditioning_channels": int(_require(state, "controlnet_cond_embedding.conv_in.weight").shape[1]),
        "block_out_channels": block_out,
        "layers_per_block": len(_indices(state, r"down_blocks\.0\.resnets\.(\d+)\.")),
        "down_block_types": ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attends],
        "mid_block_type": "UNetMidBlock2DCrossAttn" if any(k.startswith("mid_block.") for k in state) else None,
        "transformer_layers_per_block": depths if len(set(depths)) > 1 else depths[0],
        "cross_attention_dim": cross,
        "use_linear_projection": len(state[proj_in].shape) == 2,
        "conditioning_embedding_out_channels": embed_out,
    }
    config |= {k: base[k] for k in _FROM_BASE if k in base}
    same_widths = list(block_out) == list(base.get("block_out_channels", ()))
    config["attention_head_dim"] = base.get("attention_head_dim") if same_widths else unet_heads(family, block_out)
    if same_widths and base.get("num_attention_heads") is not None:
        config["num_attention_heads"] = base["num_attention_heads"]
    if "add_embedding.linear_1.weight" in state:
        config["addition_embed_type"] = "text_time"
        config["projection_class_embeddings_input_dim"] = int(state["add_embedding.linear_1.weight"].shape[1])
    return config
