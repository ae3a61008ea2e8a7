"""LoRAs from ``models/Lora``: found by name, read once, attached to the loaded model as peft adapters, switched on
for one job with the prompt's weights and switched off after it, whatever happens.

diffusers converts the files users have (kohya/A1111 ``lora_unet_*``/``lora_te_*`` with ``alpha``, LoCon, and
diffusers/peft layouts) and peft wraps the layers. A disabled adapter computes exactly the base layer, so a job
without LoRAs after one with them is pixel-identical to one made before, and no weights are ever modified in place
(nothing to restore, nothing left patched if a job fails). An adapter stays attached after its job (up to
``MAX_ATTACHED`` per model, least recently used dropped), so using the same LoRA again costs a flag, not a load.
"""

from __future__ import annotations

import hashlib
import logging
import re
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from webui.errors import EaselError, ModelLoadError
from webui.weights import formats
from webui.weights.hashing import HashCache
from webui.weights.registry import CheckpointInfo, ModelRegistry

log = logging.getLogger(__name__)

LORA_EXTENSIONS = (".safetensors", ".pt", ".ckpt")
LORA_KINDS = ("lora", "lyco")  # prompt tags that name a LoRA (A1111 takes LyCORIS files through <lora:> too)
MAX_ATTACHED = 8  # adapters kept on one model between jobs
_READ_CACHE = 16  # LoRA files kept read in RAM (a rank-32 SD1.5 LoRA is ~150 MB in fp32, ~75 MB in fp16)
_TAG = re.compile(r"<(lora|lyco):([^:<>]+)((?::[^<>]*)?)>")
_CONTEXT_DIMS = {768: "SD1.x", 1024: "SD2.x", 2048: "SDXL"}


class LoraError(EaselError):
    """A LoRA that cannot be used with this model (another architecture, an unreadable file)."""

    field = "prompt"


@dataclass(frozen=True)
class LoraUse:
    """One ``<lora:NAME:TE[:UNET]>`` of a prompt."""

    name: str
    te_weight: float = 1.0
    unet_weight: float | None = None  # None: the same as te_weight

    @property
    def unet(self) -> float:
        return self.te_weight if self.unet_weight is None else self.unet_weight


@dataclass(frozen=True)
class AppliedLora:
    info: CheckpointInfo
    use: LoraUse
    short_hash: str | None  # A1111's "Lora hashes" value: the addnet hash's first 12 hex characters


def _family_of(state_dict: dict[str, torch.Tensor]) -> tuple[str | None, int | None]:
    """(family hint from key names, cross-attention context width) of a LoRA, whatever its layout."""
    keys = list(state_dict)
    hint = None
    if any(k.startswith(("lora_te1_", "lora_te2_", "text_encoder_2.", "te2.")) for k in keys) or any(
        k.startswith("lora_unet_input_blocks_") or "input_blocks" in k for k in keys
    ):
        hint = "SDXL"
    context = None
    for key, value in state_dict.items():
        low = key.lower()
        cross = "attn2" in low and ("to_k" in low or "to_v" in low)
        if cross and value.ndim == 2 and any(part in low for part in ("lora_down", "lora_a", "lora.down")):
            context = int(value.shape[1])
            break
    return hint, context


class LoraLibrary:
    """The LoRA files, their read tensors, and which adapters each loaded model carries."""

    def __init__(self, root: Path, cache: HashCache, *, builtins: Sequence[Path] = ()) -> None:
        # ``builtins``: LoRAs shipped with Easel (the demo model's), listed after the user's; a user file of the
        # same name hides one.
        self.registry = ModelRegistry(
            root, cache, LORA_EXTENSIONS, label="lora", diffusers_folders=False, builtins=builtins
        )
        self._read: OrderedDict[Path, tuple[float, dict[str, torch.Tensor]]] = OrderedDict()

    # -- finding ---------------------------------------------------------------------------------------------
    def names(self) -> list[str]:
        return [i.name.rsplit(".", 1)[0] for i in self.registry.list()]

    def find(self, name: str) -> CheckpointInfo:
        """By file name without extension (A1111's ``<lora:NAME>``), with or without its subfolder, or by hash."""
        items = self.registry.list()
        wanted = name.strip().replace("\\", "/").casefold()
        for info in items:
            stem = info.name.rsplit(".", 1)[0].casefold()
            if wanted in (stem, stem.rsplit("/", 1)[-1], info.name.casefold()):
                return info
        for info in items:  # A1111 also finds a renamed LoRA by the hash an infotext recorded
            short = self.short_hash(info, compute=False)
            if short and short == wanted:
                return info
        from webui.errors import ModelNotFound

        raise ModelNotFound("lora", name, known=self.names())

    def short_hash(self, info: CheckpointInfo, *, compute: bool = True) -> str | None:
        """A1111's LoRA hash: the addnet hash (tensor data only) of a .safetensors, else the file's sha256."""
        kind = "addnet" if info.path.suffix == ".safetensors" else "sha256"
        cached = self.registry.cache.get(info.path, kind)
        if cached is None and compute:
            cached = self.registry.cache.compute(info.path, kind)
        return cached[:12] if cached else None

    def rename_by_hash(self, prompt: str, lora_hashes: str) -> str:
        """Point ``<lora:OLD:...>`` tags at the file whose hash an infotext's ``Lora hashes`` recorded, when OLD
        is no longer a LoRA's name (the file was renamed), as A1111 does on paste."""
        recorded: dict[str, str] = {}
        for pair in lora_hashes.split(","):
            name, sep, short = pair.rpartition(":")
            if sep and name.strip() and short.strip():
                recorded[name.strip()] = short.strip().lower()

        def fix(match: re.Match[str]) -> str:
            name = match[2]
            short = recorded.get(name.strip())
            if short is None or self._exists(name):
                return match[0]
            for info in self.registry.list():
                if self.short_hash(info) == short:
                    return f"<{match[1]}:{info.name.rsplit('.', 1)[0]}{match[3]}>"
            return match[0]

        return _TAG.sub(fix, prompt)

    def _exists(self, name: str) -> bool:
        try:
            self.find(name)
        except EaselError:
            return False
        return True

    # -- reading ---------------------------------------------------------------------------------------------
    def read(self, info: CheckpointInfo) -> dict[str, torch.Tensor]:
        cached = self._read.get(info.path)
        if cached is not None and cached[0] == info.mtime:
            self._read.move_to_end(info.path)
            return cached[1]
        try:
            state_dict = formats.read_state_dict(info.path)
        except ModelLoadError as exc:
            self.registry.record_error(info, exc.reason)
            raise LoraError(f"lora: {info.name} cannot be read ({exc.reason})") from exc
        self._read[info.path] = (info.mtime, state_dict)
        while len(self._read) > _READ_CACHE:
            self._read.popitem(last=False)
        return state_dict

    def check_fits(self, info: CheckpointInfo, state_dict: dict[str, torch.Tensor], model: Any) -> None:
        """Refuse a LoRA made for another architecture before it touches the model, naming both."""
        hint, context = _family_of(state_dict)
        model_context = int(model.components["unet"].config.cross_attention_dim)
        label = model.arch.label
        if hint == "SDXL" and model.arch.family != "sdxl":
            raise LoraError(f"lora: {info.name} is an SDXL LoRA; the loaded model {model.info.name} is {label}")
        if context is not None and context != model_context:
            made_for = _CONTEXT_DIMS.get(context, f"a model with {context}-wide text conditioning")
            raise LoraError(
                f"lora: {info.name} was made for {made_for}; the loaded model {model.info.name} is {label} "
                f"({model_context}-wide text conditioning)"
            )

    # -- applying ----------------------------------------------------------------------------------------------
    def apply(self, model: Any, pipe: Any, uses: list[LoraUse]) -> list[AppliedLora]:
        """Switch on exactly ``uses`` (others off) for the next job; ``deactivate`` switches them off again.

        ``model`` is the weights manager's ``ActiveModel``; ``pipe`` any pipeline built around its components.
        """
        attached: OrderedDict[str, Path] = model.lora_adapters
        applied: list[AppliedLora] = []
        names: list[str] = []
        weights: list[dict[str, float]] = []
        for use in uses:
            info = self.find(use.name)
            adapter = "lora_" + hashlib.sha1(f"{info.path}:{info.mtime}".encode()).hexdigest()[:16]
            if adapter not in attached:
                state_dict = self.read(info)
                self.check_fits(info, state_dict, model)
                try:
                    with warnings.catch_warnings():  # peft warns that a model may carry several adapters: it may
                        warnings.filterwarnings("ignore", message=".*multiple adapters.*")
                        pipe.load_lora_weights(dict(state_dict), adapter_name=adapter)
                except (ValueError, KeyError, RuntimeError, TypeError) as exc:
                    raise LoraError(f"lora: {info.name} does not load into {model.info.name} ({exc})") from exc
                attached[adapter] = info.path
                self._trim(pipe, attached, keep={adapter, *names})
            attached.move_to_end(adapter)
            if adapter in names:  # the same LoRA twice in a prompt: A1111 adds the weights
                i = names.index(adapter)
                weights[i] = {k: v + (use.unet if k == "unet" else use.te_weight) for k, v in weights[i].items()}
            else:
                names.append(adapter)
                weights.append(self._weights(pipe, use))
            applied.append(AppliedLora(info=info, use=use, short_hash=self.short_hash(info)))
        if names:
            pipe.enable_lora()
            pipe.set_adapters(names, adapter_weights=weights)
        else:
            self.deactivate(pipe)
        return applied

    def _weights(self, pipe: Any, use: LoraUse) -> dict[str, float]:
        weights = {"unet": use.unet}
        for part in ("text_encoder", "text_encoder_2"):
            if getattr(pipe, part, None) is not None:
                weights[part] = use.te_weight
        return weights

    def _trim(self, pipe: Any, attached: OrderedDict[str, Path], keep: set[str]) -> None:
        while len(attached) > MAX_ATTACHED:
            oldest = next((a for a in attached if a not in keep), None)
            if oldest is None:
                return
            attached.pop(oldest)
            pipe.delete_adapters([oldest])

    @staticmethod
    def deactivate(pipe: Any) -> None:
        """Every adapter off: the model computes exactly its own weights again."""
        if getattr(pipe, "get_list_adapters", None) and any(pipe.get_list_adapters().values()):
            pipe.disable_lora()
