"""Model dimensions read from tensor shapes, so one loader builds real checkpoints and tiny test models alike.

Each function returns config overrides to lay over the family's shipped config (``family_configs``). Only what
shapes can tell is inferred; what they cannot (head counts, activations) comes from the family's rules.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from webui.weights.family_configs import text_heads, unet_heads


class LayoutError(ValueError):
    """The tensors do not form a model this code understands (a block missing, levels of unequal depth...)."""


def require(state_dict: Mapping[str, Any], key: str) -> Any:
    """The tensor at ``key``; a missing one is a LayoutError naming it rather than a bare KeyError."""
    try:
        return state_dict[key]
    except KeyError:
        raise LayoutError(f"missing tensor {key}") from None


def _indices(state_dict: Mapping[str, Any], pattern: str) -> list[int]:
    """Sorted distinct values of the ``(\\d+)`` group of ``pattern`` over all keys."""
    regex = re.compile(pattern)
    found = {int(m.group(1)) for k in state_dict if (m := regex.match(k))}
    return sorted(found)


def unet_overrides(
    unet: Mapping[str, Any], family: str, pooled_dim: int | None = None, *, require_out: bool = True
) -> dict[str, Any]:
    """U-Net config from original (LDM) keys with the ``model.diffusion_model.`` prefix removed.

    The LDM layout numbers ``input_blocks`` flat: after ``input_blocks.0`` (conv_in) each level has
    ``layers_per_block`` res blocks (with a ``.1`` spatial transformer when the level attends), then one
    downsampler ``.0.op`` between levels. ``pooled_dim`` (SDXL) is the second text encoder's projection width,
    which with the size embedding's input width gives the time-embedding width of each size/crop number.
    A ControlNet has the same input side but no output layers: ``require_out=False`` reads it.
    """
    conv_in = require(unet, "input_blocks.0.0.weight")
    levels: list[list[int]] = [[]]
    for index in _indices(unet, r"input_blocks\.(\d+)\.")[1:]:
        if f"input_blocks.{index}.0.op.weight" in unet:
            levels.append([])
        else:
            levels[-1].append(index)
    counts = {len(level) for level in levels}
    if len(counts) != 1 or 0 in counts:
        raise LayoutError(f"U-Net levels have different numbers of res blocks: {[len(lv) for lv in levels]}")
    block_out = [int(require(unet, f"input_blocks.{lv[0]}.0.out_layers.3.weight").shape[0]) for lv in levels]
    attends = [f"input_blocks.{lv[0]}.1.proj_in.weight" in unet for lv in levels]
    depths = [len(_indices(unet, rf"input_blocks\.{lv[0]}\.1\.transformer_blocks\.(\d+)\.")) or 1 for lv in levels]
    mid_depth = len(_indices(unet, r"middle_block\.1\.transformer_blocks\.(\d+)\.")) or 1
    # diffusers gives the mid block the last level's depth; a last level without attention does not use it.
    depths = [d if a else 1 for d, a in zip(depths, attends, strict=True)]
    if not attends[-1]:
        depths[-1] = mid_depth
    to_k = next((k for k in unet if k.endswith("attn2.to_k.weight")), None)
    proj_in = next((k for k in unet if k.endswith(".proj_in.weight")), None)
    if to_k is None or proj_in is None:
        raise LayoutError("the U-Net has no cross-attention layers")
    overrides: dict[str, Any] = {
        "in_channels": int(conv_in.shape[1]),
        "out_channels": int(require(unet, "out.2.weight").shape[0]) if require_out else 4,
        "block_out_channels": block_out,
        "layers_per_block": len(levels[0]),
        "down_block_types": ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attends],
        "up_block_types": ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attends)],
        "transformer_layers_per_block": depths if len(set(depths)) > 1 else depths[0],
        "cross_attention_dim": int(unet[to_k].shape[1]),
        "use_linear_projection": len(unet[proj_in].shape) == 2,
        "attention_head_dim": unet_heads(family, block_out),
    }
    if "label_emb.0.0.weight" in unet:
        embed_in = int(unet["label_emb.0.0.weight"].shape[1])
        overrides["projection_class_embeddings_input_dim"] = embed_in
        if pooled_dim is not None and (embed_in - pooled_dim) > 0 and (embed_in - pooled_dim) % 6 == 0:
            overrides["addition_time_embed_dim"] = (embed_in - pooled_dim) // 6
    return overrides


def vae_overrides(vae: Mapping[str, Any]) -> dict[str, Any]:
    """AutoencoderKL config from original keys with the ``first_stage_model.`` prefix removed."""
    levels = _indices(vae, r"encoder\.down\.(\d+)\.")
    if not levels:
        raise LayoutError("the VAE has no encoder blocks (first_stage_model.encoder.down.*)")
    latent = vae.get("post_quant_conv.weight")
    latent_channels = (
        int(latent.shape[0]) if latent is not None else int(require(vae, "decoder.conv_in.weight").shape[1])
    )
    return {
        "in_channels": int(require(vae, "encoder.conv_in.weight").shape[1]),
        "out_channels": int(require(vae, "decoder.conv_out.weight").shape[0]),
        "block_out_channels": [int(require(vae, f"encoder.down.{i}.block.0.conv1.weight").shape[0]) for i in levels],
        "layers_per_block": len(_indices(vae, r"encoder\.down\.0\.block\.(\d+)\.")),
        "latent_channels": latent_channels,
        "down_block_types": ["DownEncoderBlock2D"] * len(levels),
        "up_block_types": ["UpDecoderBlock2D"] * len(levels),
        "mid_block_add_attention": "encoder.mid.attn_1.q.weight" in vae,
    }


def text_overrides(text: Mapping[str, Any]) -> dict[str, Any]:
    """CLIPTextConfig values from a text encoder already in diffusers/transformers layout (``text_model.*``).

    Read after conversion because SD2's converter drops OpenCLIP's last layer (SD2 uses the penultimate one),
    so the layer count is only right on the converted tensors.
    """
    tokens = require(text, "text_model.embeddings.token_embedding.weight")
    hidden = int(tokens.shape[1])
    overrides = {
        "vocab_size": int(tokens.shape[0]),
        "hidden_size": hidden,
        "max_position_embeddings": int(require(text, "text_model.embeddings.position_embedding.weight").shape[0]),
        "num_hidden_layers": len(_indices(text, r"text_model\.encoder\.layers\.(\d+)\.")),
        "intermediate_size": int(require(text, "text_model.encoder.layers.0.mlp.fc1.weight").shape[0]),
        "num_attention_heads": text_heads(hidden),
        "projection_dim": hidden,
    }
    if "text_projection.weight" in text:
        overrides["projection_dim"] = int(text["text_projection.weight"].shape[0])
    return overrides
