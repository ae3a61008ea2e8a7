"""diffusers components back to the original (LDM / A1111) key layout: the inverse of what the loader reads.

Used to save test models and Easel's own demo model exactly as users' checkpoints are laid out, so every model
goes through the same single-file loading path.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from webui.weights import detect

_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "time_emb_proj": "emb_layers.1",
    "conv_shortcut": "skip_connection",
}
_UNET_FIXED = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "add_embedding.linear_1": "label_emb.0.0",
    "add_embedding.linear_2": "label_emb.0.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}
_VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
_OPEN_CLIP_LAYER = {
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
    "self_attn.out_proj": "attn.out_proj",
}


def _split(key: str, names: Mapping[str, str]) -> tuple[str, str] | None:
    """(mapped head, rest) when ``key`` starts with one of ``names`` followed by a dot."""
    for head, mapped in names.items():
        if key.startswith(head + "."):
            return mapped, key[len(head) + 1 :]
    return None


def _resnet(rest: str) -> str:
    found = _split(rest, _RESNET)
    return f"{found[0]}.{found[1]}" if found else rest


def unet_key(key: str, layers: int, attends_up: list[bool]) -> str:
    """One diffusers U-Net key to LDM: blocks are numbered flat, ``layers + 1`` per level (the input side's
    extra slot holds the downsampler; the output side has one more res block per level instead)."""
    fixed = _split(key, _UNET_FIXED)
    if fixed:
        return f"{fixed[0]}.{fixed[1]}"
    if m := re.match(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
        block, kind, layer, rest = int(m[1]), m[2], int(m[3]), m[4]
        index = 1 + block * (layers + 1) + layer
        return f"input_blocks.{index}.0.{_resnet(rest)}" if kind == "resnets" else f"input_blocks.{index}.1.{rest}"
    if m := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
        return f"input_blocks.{(int(m[1]) + 1) * (layers + 1)}.0.op.{m[2]}"
    if m := re.match(r"mid_block\.resnets\.(\d+)\.(.+)", key):
        return f"middle_block.{2 * int(m[1])}.{_resnet(m[2])}"
    if m := re.match(r"mid_block\.attentions\.0\.(.+)", key):
        return f"middle_block.1.{m[1]}"
    if m := re.match(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
        block, kind, layer, rest = int(m[1]), m[2], int(m[3]), m[4]
        index = block * (layers + 1) + layer
        return f"output_blocks.{index}.0.{_resnet(rest)}" if kind == "resnets" else f"output_blocks.{index}.1.{rest}"
    if m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key):
        block = int(m[1])
        slot = 2 if attends_up[block] else 1  # the upsampler follows the attention when the level has one
        return f"output_blocks.{block * (layers + 1) + layers}.{slot}.conv.{m[2]}"
    raise ValueError(f"no original-layout name for U-Net tensor {key}")


def ldm_module_names(unet: Any) -> dict[str, str]:
    """Each weighted U-Net layer's original (LDM) path -> its diffusers path, by the very rule the checkpoint writer
    uses (so LoRAs named the LDM way find the same layers). Layers peft wrapped for attached LoRAs count as the
    layer they wrap; the adapters' own layers are left out."""
    config = unet.config
    layers = int(config.layers_per_block)
    attends_up = [name.startswith("CrossAttn") for name in config.up_block_types]
    names: dict[str, str] = {}
    for name, module in unet.named_modules():
        if "lora_" in name or not isinstance(getattr(module, "weight", None), torch.Tensor):
            continue
        name = name.removesuffix(".base_layer")
        try:
            names[unet_key(name + ".weight", layers, attends_up).removesuffix(".weight")] = name
        except ValueError:
            continue  # a layer the original layout does not have
    return names


def unet_to_original(unet: Any) -> dict[str, Tensor]:
    """UNet2DConditionModel state dict with LDM names (no ``model.diffusion_model.`` prefix)."""
    config = unet.config
    layers = int(config.layers_per_block)
    attends_up = [name.startswith("CrossAttn") for name in config.up_block_types]
    return {unet_key(k, layers, attends_up): v for k, v in unet.state_dict().items()}


def _vae_key(key: str, levels: int) -> tuple[str, bool]:
    """(LDM name, whether the tensor is an attention projection stored as a 1x1 conv in LDM)."""
    if m := re.match(r"(encoder|decoder)\.conv_norm_out\.(.+)", key):
        return f"{m[1]}.norm_out.{m[2]}", False
    if m := re.match(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
        return f"encoder.down.{m[1]}.block.{m[2]}.{m[3].replace('conv_shortcut', 'nin_shortcut')}", False
    if m := re.match(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.(.+)", key):
        return f"encoder.down.{m[1]}.downsample.{m[2]}", False
    if m := re.match(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
        level = levels - 1 - int(m[1])  # LDM numbers decoder levels from the bottom
        return f"decoder.up.{level}.block.{m[2]}.{m[3].replace('conv_shortcut', 'nin_shortcut')}", False
    if m := re.match(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.(.+)", key):
        return f"decoder.up.{levels - 1 - int(m[1])}.upsample.{m[2]}", False
    if m := re.match(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.+)", key):
        return f"{m[1]}.mid.block_{int(m[2]) + 1}.{m[3].replace('conv_shortcut', 'nin_shortcut')}", False
    if m := re.match(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.+)", key):
        found = _split(m[2], _VAE_ATTENTION)
        if found:
            return f"{m[1]}.mid.attn_1.{found[0]}.{found[1]}", found[0] != "norm"
    if re.match(r"(encoder|decoder)\.conv_(in|out)\.|(post_)?quant_conv\.", key):
        return key, False
    raise ValueError(f"no original-layout name for VAE tensor {key}")


def vae_to_original(vae: Any) -> dict[str, Tensor]:
    """AutoencoderKL state dict with LDM names (no ``first_stage_model.`` prefix)."""
    levels = len(vae.config.block_out_channels)
    out: dict[str, Tensor] = {}
    for key, value in vae.state_dict().items():
        name, conv = _vae_key(key, levels)
        out[name] = value[:, :, None, None] if conv and value.ndim == 2 else value
    return out


def text_state_dict(model: Any) -> dict[str, Tensor]:
    """Text encoder tensors as ``text_model.*`` (+ ``text_projection.weight``), whatever transformers nests."""
    state = model.state_dict()
    if hasattr(model, "text_model"):
        return dict(state)
    return {("text_model." + k if k != "text_projection.weight" else k): v for k, v in state.items()}


def clip_to_original(model: Any) -> dict[str, Tensor]:
    """OpenAI CLIP-L as LDM's ``FrozenCLIPEmbedder`` stores it: transformers names under ``text_model.``.

    ``position_ids`` is written too, as in real SD1 checkpoints; the loader ignores it.
    """
    state = {k: v for k, v in text_state_dict(model).items() if k != "text_projection.weight"}
    positions = int(model.config.max_position_embeddings)
    state["text_model.embeddings.position_ids"] = torch.arange(positions, dtype=torch.int64)[None]
    return state


def open_clip_to_original(model: Any) -> dict[str, Tensor]:
    """OpenCLIP text tower names: fused ``in_proj`` q/k/v, ``resblocks``, and a (width, dim) text_projection."""
    state = {k.removeprefix("text_model."): v for k, v in text_state_dict(model).items()}
    out: dict[str, Tensor] = {}
    fused: dict[str, dict[str, Tensor]] = {}
    for key, value in state.items():
        if key == "text_projection.weight":
            out["text_projection"] = value.T
        elif key == "embeddings.token_embedding.weight":
            out["token_embedding.weight"] = value
        elif key == "embeddings.position_embedding.weight":
            out["positional_embedding"] = value
        elif key.startswith("final_layer_norm."):
            out["ln_final." + key.split(".")[-1]] = value
        elif m := re.match(r"encoder\.layers\.(\d+)\.self_attn\.([qkv])_proj\.(weight|bias)", key):
            fused.setdefault(f"transformer.resblocks.{m[1]}.attn.in_proj_{m[3]}", {})[m[2]] = value
        elif (m := re.match(r"encoder\.layers\.(\d+)\.(.+)", key)) and (found := _split(m[2], _OPEN_CLIP_LAYER)):
            out[f"transformer.resblocks.{m[1]}.{found[0]}.{found[1]}"] = value
        else:
            raise ValueError(f"no original-layout name for OpenCLIP tensor {key}")
    for name, parts in fused.items():
        out[name] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    return out


def infer_family(components: Mapping[str, Any]) -> str:
    """sdxl with two text encoders; else CLIP-L (quick_gelu) means sd1 and OpenCLIP (gelu) means sd2."""
    if "text_encoder_2" in components:
        return "sdxl"
    return "sd1" if components["text_encoder"].config.hidden_act == "quick_gelu" else "sd2"


def _prefixed(prefix: str, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {prefix + k: v for k, v in state.items()}


def to_original_layout(components: Mapping[str, Any], *, family: str | None = None) -> dict[str, Tensor]:
    """A full single-file checkpoint (U-Net, VAE, text encoders) in original key names, as fresh tensors.

    A v-prediction scheduler adds an empty ``v_pred`` tensor, the marker A1111 and the loader look for.
    """
    family = family or infer_family(components)
    text: list[tuple[str, Callable[[Any], dict[str, Tensor]], str]] = {
        "sd1": [(detect.SD1_CLIP_PREFIX, clip_to_original, "text_encoder")],
        "sd2": [(detect.SD2_OPEN_CLIP_PREFIX, open_clip_to_original, "text_encoder")],
        "sdxl": [
            (detect.SDXL_CLIP_PREFIX, clip_to_original, "text_encoder"),
            (detect.SDXL_OPEN_CLIP_PREFIX, open_clip_to_original, "text_encoder_2"),
        ],
    }[family]
    out = _prefixed(detect.UNET_PREFIX, unet_to_original(components["unet"]))
    out.update(_prefixed(detect.VAE_PREFIX, vae_to_original(components["vae"])))
    for prefix, convert, name in text:
        out.update(_prefixed(prefix, convert(components[name])))
    scheduler = components.get("scheduler")
    if scheduler is not None and scheduler.config.get("prediction_type") == "v_prediction":
        out["v_pred"] = torch.zeros(0)
    return {k: v.detach().clone().contiguous() for k, v in out.items()}


def controlnet_to_original(controlnet: Any) -> dict[str, Tensor]:
    """A ``ControlNetModel`` in the original layout the SD1.5 ControlNet files use (``input_blocks``,
    ``zero_convs``, ``middle_block_out``, ``input_hint_block``), as fresh tensors.

    Its input side is a U-Net's, named the same way; the conditioning embedding's convolutions sit at the even
    indices of ``input_hint_block`` (the odd ones are its activations).
    """
    layers = int(controlnet.config.layers_per_block)
    state = controlnet.state_dict()
    blocks = len({k.split(".")[2] for k in state if k.startswith("controlnet_cond_embedding.blocks.")})
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if m := re.match(r"controlnet_down_blocks\.(\d+)\.(.+)", key):
            name = f"zero_convs.{m[1]}.0.{m[2]}"
        elif m := re.match(r"controlnet_mid_block\.(.+)", key):
            name = f"middle_block_out.0.{m[1]}"
        elif m := re.match(r"controlnet_cond_embedding\.conv_in\.(.+)", key):
            name = f"input_hint_block.0.{m[1]}"
        elif m := re.match(r"controlnet_cond_embedding\.blocks\.(\d+)\.(.+)", key):
            name = f"input_hint_block.{2 * (int(m[1]) + 1)}.{m[2]}"
        elif m := re.match(r"controlnet_cond_embedding\.conv_out\.(.+)", key):
            name = f"input_hint_block.{2 * (blocks + 1)}.{m[1]}"
        else:
            name = unet_key(key, layers, [])
        out[name] = value.detach().clone().contiguous()
    return out
