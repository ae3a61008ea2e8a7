"""What a LoRA file's keys and tensor shapes say: which model it was made for, which format it is, and its U-Net
keys renamed to the names diffusers' kohya converter understands.

Torch-free on purpose (tensors are only asked for their ``.shape``), so the rules are cheap to test on key lists
shaped like real files.

Why widths before names: the same architecture is saved under several naming schemes. kohya's sd-scripts write
SD1.x LoRAs with diffusers module names (``lora_unet_down_blocks_1_attentions_0_...``) and SDXL ones with the
original LDM/SGM names (``lora_unet_input_blocks_4_1_...``), but other tools (ComfyUI's
``diffusion_model.input_blocks...``, converters from the original layout) write SD1.x files with LDM names too.
The width of the cross-attention's ``to_k``/``to_v`` input is the text conditioning width (768 SD1.x, 1024 SD2.x,
2048 SDXL) whatever the names, so it decides; names are only a last resort.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

CONTEXT_FAMILIES = {768: "SD1.x", 1024: "SD2.x", 2048: "SDXL"}  # cross-attention input width -> family
# First text encoder width -> family, where it decides (768 is CLIP-L: SD1.x and SDXL's first encoder alike).
TEXT_FAMILIES = {1024: "SD2.x", 1280: "SDXL"}

_DOWN_SUFFIXES = (".lora_down.weight", ".lora_A.weight", ".lora.down.weight", "_lora.down.weight",
                  ".lora_linear_layer.down.weight")  # fmt: skip
_TEXT1_PREFIXES = ("lora_te_", "lora_te1_", "text_encoder.")
_TEXT2_PREFIXES = ("lora_te2_", "text_encoder_2.")
_TEXT_WIDTH_LAYERS = ("q_proj", "k_proj", "v_proj")  # their input is the encoder's hidden width
_DEEP_TRANSFORMER = re.compile(r"transformer_blocks[._][1-9]")  # SD1.x/SD2.x have one transformer per block
_KNOWN_PREFIXES = ("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_", "unet.", "text_encoder.", "text_encoder_2.")

# LyCORIS algorithms diffusers' LoRA loader does not read (it reads LoRA and LoCon), by a key suffix each.
_UNSUPPORTED = (
    ("LoHa", (".hada_w1_a", ".hada_w1_b", ".hada_t1")),
    ("LoKr", (".lokr_w1", ".lokr_w1_a", ".lokr_w2", ".lokr_w2_a", ".lokr_t2")),
    ("(IA)³", (".on_input",)),
    ("full (diff)", (".diff", ".diff_b")),
)


@dataclass(frozen=True)
class LoraFamily:
    """What a LoRA's tensors tell about the model it was made for; ``None`` where they do not say."""

    context: int | None = None  # cross-attention input width: the model's text conditioning width
    text_width: int | None = None  # the (first) text encoder's hidden width
    has_text2: bool = False  # it has layers for a second text encoder (only SDXL has one)
    name_hint: str | None = None  # a family its key names suggest; used only when no width was found

    @property
    def has_width(self) -> bool:
        return self.context is not None or self.text_width is not None or self.has_text2

    @property
    def family(self) -> str | None:
        """The family's label ("SD1.x", "SD2.x", "SDXL"), or None when nothing tells."""
        if self.context in CONTEXT_FAMILIES:
            return CONTEXT_FAMILIES[self.context]
        if self.has_text2:
            return "SDXL"
        if self.text_width in TEXT_FAMILIES:
            return TEXT_FAMILIES[self.text_width]
        return None if self.has_width else self.name_hint


def _module(key: str) -> str:
    """The layer a key belongs to, lower-cased, without its tensor suffix."""
    for suffix in (*_DOWN_SUFFIXES, ".lora_up.weight", ".lora_B.weight", ".alpha"):
        if key.endswith(suffix):
            return key[: -len(suffix)].lower()
    return key.lower()


def _down_width(key: str, value: Any) -> int | None:
    """The input width of a LoRA's down (A) matrix; None for other tensors."""
    if key.endswith(_DOWN_SUFFIXES) and len(getattr(value, "shape", ())) >= 2:
        return int(value.shape[1])
    return None


def family_of(state_dict: Mapping[str, Any]) -> LoraFamily:
    """The widths (and, failing them, the key names) that tell which architecture a LoRA was made for."""
    context = text_width = None
    has_text2 = False
    deep = False
    for key, value in state_dict.items():
        has_text2 = has_text2 or key.startswith(_TEXT2_PREFIXES)
        deep = deep or bool(_DEEP_TRANSFORMER.search(key))
        width = _down_width(key, value)
        if width is None:
            continue
        module = _module(key)
        if context is None and "attn2" in module and ("to_k" in module or "to_v" in module):
            context = width
        elif text_width is None and key.startswith(_TEXT1_PREFIXES) and module.endswith(_TEXT_WIDTH_LAYERS):
            text_width = width
    hint = "SDXL" if deep else None
    return LoraFamily(context=context, text_width=text_width, has_text2=has_text2, name_hint=hint)


def unsupported_format(state_dict: Mapping[str, Any]) -> str | None:
    """The name of a LyCORIS algorithm the file uses that cannot be loaded ("LoHa", "LoKr"...), or None."""
    for name, suffixes in _UNSUPPORTED:
        if any(key.endswith(suffixes) for key in state_dict):
            return name
    return None


def unknown_keys(state_dict: Mapping[str, Any]) -> list[str]:
    """Keys no loader would place (diffusers ignores them silently, so a file could load half of itself)."""
    return [key for key in state_dict if not key.startswith(_KNOWN_PREFIXES) and _split_ldm_key(key) is None]


# -- LDM/SGM U-Net names -> diffusers module names ---------------------------------------------------------------
_LDM_PREFIXES = ("model.diffusion_model.", "diffusion_model.")
_TENSOR_SUFFIX = re.compile(r"\.(lora_down\.weight|lora_up\.weight|lora_A\.weight|lora_B\.weight|alpha|dora_scale)$")
_PEFT_TO_KOHYA = {"lora_A.weight": "lora_down.weight", "lora_B.weight": "lora_up.weight"}


def _split_ldm_key(key: str) -> tuple[str, str] | None:
    """(LDM module with underscores, kohya tensor suffix) of an LDM-named U-Net key, or None for other keys."""
    if key.startswith("lora_unet_"):
        module, dot, tensor = key[len("lora_unet_") :].partition(".")
        if dot and module.startswith(("input_blocks_", "middle_block_", "output_blocks_")):
            return module, tensor
        return None
    prefix = next((p for p in _LDM_PREFIXES if key.startswith(p)), None)
    match = _TENSOR_SUFFIX.search(key) if prefix else None
    if prefix is None or match is None:
        return None
    module = key[len(prefix) : match.start()].replace(".", "_")
    return module, _PEFT_TO_KOHYA.get(match[1], match[1])


def with_diffusers_names(state_dict: Mapping[str, Any], ldm_names: Mapping[str, str]) -> dict[str, Any]:
    """The state dict with LDM-named U-Net keys (``lora_unet_input_blocks_4_1_...``, ``diffusion_model.
    input_blocks.4.1....``) renamed to kohya's diffusers-named form (``lora_unet_down_blocks_1_attentions_0_...``).

    ``ldm_names`` maps the loaded U-Net's LDM layer paths to its diffusers paths (``convert.ldm_module_names``).
    diffusers maps LDM names only for SDXL pipelines, and then guesses the output side's upsampler slot the SDXL
    way; renaming here from the model's own layout reads SD1.x, SD2.x and SDXL files the same, exactly.
    """
    by_underscores = {ldm.replace(".", "_"): name.replace(".", "_") for ldm, name in ldm_names.items()}
    renamed: dict[str, Any] = {}
    for key, value in state_dict.items():
        split = _split_ldm_key(key)
        if split is None:
            renamed[key] = value
            continue
        module, tensor = split
        renamed[f"lora_unet_{by_underscores.get(module, module)}.{tensor}"] = value
    return renamed
