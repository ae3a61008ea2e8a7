"""LoRAs from ``models/Lora``: found by name, read once, attached to the loaded model as peft adapters, switched on
for one job with the prompt's weights and switched off after it, whatever happens.

diffusers converts the files users have (kohya/A1111 ``lora_unet_*``/``lora_te_*`` with ``alpha``, LoCon, and
diffusers/peft layouts) and peft wraps the layers. A disabled adapter computes exactly the base layer, so a job
without LoRAs after one with them is pixel-identical to one made before, and no weights are ever modified in place
(nothing to restore, nothing left patched if a job fails). An adapter stays attached after its job (up to
``MAX_ATTACHED`` per model, least recently used dropped), so using the same LoRA again costs a flag, not a load.

Before a file touches the model it is checked (``webui.networks.lora_keys``): the LyCORIS algorithms diffusers
cannot read (LoHa, LoKr...) are refused by name, a LoRA for another architecture is refused naming both, and
LDM-named U-Net keys are renamed to the names diffusers' converter reads.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from webui.errors import EaselError, ModelLoadError
from webui.networks import lora_keys
from webui.networks.lora_keys import LoraFamily
from webui.weights import formats
from webui.weights.convert import ldm_module_names
from webui.weights.detect import FAMILY_LABELS
from webui.weights.hashing import HashCache
from webui.weights.registry import CheckpointInfo, ModelRegistry

log = logging.getLogger(__name__)

LORA_EXTENSIONS = (".safetensors", ".pt", ".ckpt")
LORA_KINDS = ("lora", "lyco")  # prompt tags that name a LoRA (A1111 takes LyCORIS files through <lora:> too)
MAX_ATTACHED = 8  # adapters kept on one model between jobs
_READ_CACHE = 16  # LoRA files kept read in RAM (a rank-32 SD1.5 LoRA is ~150 MB in fp32, ~75 MB in fp16)
_TAG = re.compile(r"<(lora|lyco):([^:<>]+)((?::[^<>]*)?)>")

Stamp = tuple[int, int]  # (size, mtime in ns) of a file: a changed file is another LoRA


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


class LoraLibrary:
    """The LoRA files, their read tensors, and which adapters each loaded model carries."""

    def __init__(self, root: Path, cache: HashCache, *, builtins: Sequence[Path] = ()) -> None:
        # ``builtins``: LoRAs shipped with Easel (the demo model's), listed after the user's; a user file of the
        # same name hides one.
        self.registry = ModelRegistry(
            root, cache, LORA_EXTENSIONS, label="lora", diffusers_folders=False, builtins=builtins
        )
        self._read: OrderedDict[Path, tuple[Stamp, dict[str, torch.Tensor]]] = OrderedDict()

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
    @staticmethod
    def stamp(info: CheckpointInfo) -> Stamp:
        """The file's size and mtime now, not when the folder was last scanned: a LoRA saved again under the same
        name (a training run's new epoch) is read again without a refresh."""
        try:
            st = os.stat(info.path)
        except OSError as exc:
            raise LoraError(f"lora: {info.name} cannot be read ({exc.strerror or exc})") from exc
        return st.st_size, st.st_mtime_ns

    def read(self, info: CheckpointInfo, stamp: Stamp | None = None) -> dict[str, torch.Tensor]:
        """The file's tensors, from RAM when this version was read before (the ``_READ_CACHE`` most recent)."""
        stamp = stamp or self.stamp(info)
        cached = self._read.get(info.path)
        if cached is not None and cached[0] == stamp:
            self._read.move_to_end(info.path)
            return cached[1]
        try:
            state_dict = formats.read_state_dict(info.path)
        except ModelLoadError as exc:
            self.registry.record_error(info, exc.reason)
            raise LoraError(f"lora: {info.name} cannot be read ({exc.reason})") from exc
        self._read[info.path] = (stamp, state_dict)
        self._read.move_to_end(info.path)
        while len(self._read) > _READ_CACHE:
            self._read.popitem(last=False)
        return state_dict

    @staticmethod
    def check_format(info: CheckpointInfo, state_dict: dict[str, torch.Tensor]) -> None:
        """Refuse, by name, what diffusers cannot load or would load only part of (it skips unknown keys)."""
        algorithm = lora_keys.unsupported_format(state_dict)
        if algorithm is not None:
            raise LoraError(
                f"lora: {info.name} is a LyCORIS {algorithm} file; {algorithm} is not supported yet "
                "(LoRA and LoCon files are)"
            )
        unknown = lora_keys.unknown_keys(state_dict)
        if unknown:
            raise LoraError(
                f"lora: {info.name} is not in a LoRA layout Easel reads ({len(unknown)} tensors such as "
                f"'{unknown[0]}'; kohya/A1111, LDM-named and diffusers/peft LoRAs are read)"
            )

    @staticmethod
    def check_fits(info: CheckpointInfo, state_dict: dict[str, torch.Tensor], model: Any) -> None:
        """Refuse a LoRA made for another architecture before it touches the model, naming both.

        The tensors' widths decide (the same architecture comes under several key-naming schemes); key names only
        when the file has no layer whose width tells.
        """
        found = lora_keys.family_of(state_dict)
        components = model.components
        model_context = int(components["unet"].config.cross_attention_dim)
        if found.context is not None and found.context != model_context:
            LoraLibrary._misfit(
                info, model, found, f"{model_context}-wide text conditioning, the LoRA's {found.context}"
            )
        if found.has_text2 and components.get("text_encoder_2") is None:
            LoraLibrary._misfit(info, model, found, "it has one text encoder, the LoRA has layers for a second")
        text_width = _hidden_size(components.get("text_encoder"))
        if found.text_width is not None and text_width is not None and found.text_width != text_width:
            LoraLibrary._misfit(
                info, model, found, f"its text encoder is {text_width} wide, the LoRA's {found.text_width}"
            )
        if not found.has_width and found.name_hint is not None and found.name_hint != _family_label(model):
            LoraLibrary._misfit(info, model, found, "by the LoRA's layer names")

    @staticmethod
    def _misfit(info: CheckpointInfo, model: Any, found: LoraFamily, why: str) -> None:
        made_for = found.family or "another architecture"
        raise LoraError(
            f"lora: {info.name} was made for {made_for}; the loaded model {model.info.name} is {model.arch.label} "
            f"({why})"
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
            stamp = self.stamp(info)
            adapter = "lora_" + hashlib.sha1(f"{info.path}:{stamp}".encode()).hexdigest()[:16]
            if adapter not in attached:
                self._attach(model, pipe, info, stamp, adapter)
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

    def _attach(self, model: Any, pipe: Any, info: CheckpointInfo, stamp: Stamp, adapter: str) -> None:
        """Check one LoRA file and attach it as the peft adapter ``adapter``; ``LoraError`` saying why it cannot."""
        state_dict = self.read(info, stamp)
        self.check_format(info, state_dict)
        self.check_fits(info, state_dict, model)
        ldm_names = ldm_module_names(model.components["unet"])
        self._drop_versions(pipe, model.lora_adapters, info.path)
        try:
            with warnings.catch_warnings():  # peft warns that a model may carry several adapters: it may
                warnings.filterwarnings("ignore", message=".*multiple adapters.*")
                pipe.load_lora_weights(lora_keys.with_diffusers_names(state_dict, ldm_names), adapter_name=adapter)
        except (ValueError, KeyError, RuntimeError, TypeError) as exc:
            if _is_attached(pipe, adapter):  # a text encoder may have taken its part before the U-Net failed
                _detach(pipe, adapter)
            raise LoraError(f"lora: {info.name} does not load into {model.info.name} ({exc})") from exc
        if not _is_attached(pipe, adapter):  # diffusers skips layers it cannot place without a word
            raise LoraError(f"lora: {info.name} has no layer that {model.info.name} has ({model.arch.label})")

    @staticmethod
    def _drop_versions(pipe: Any, attached: OrderedDict[str, Path], path: Path) -> None:
        """Detach adapters of an older version of the file at ``path``: it was saved again, they cannot be used."""
        for adapter in [a for a, p in attached.items() if p == path]:
            attached.pop(adapter)
            _detach(pipe, adapter)

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
            _detach(pipe, oldest)

    @staticmethod
    def deactivate(pipe: Any) -> None:
        """Every adapter off: the model computes exactly its own weights again."""
        if getattr(pipe, "get_list_adapters", None) and any(pipe.get_list_adapters().values()):
            pipe.disable_lora()


def _hidden_size(encoder: Any) -> int | None:
    config = getattr(encoder, "config", None)
    size = getattr(config, "hidden_size", None)
    return int(size) if size is not None else None


def _family_label(model: Any) -> str:
    return FAMILY_LABELS.get(model.arch.family, model.arch.family)


def _is_attached(pipe: Any, adapter: str) -> bool:
    """Whether ``adapter`` is attached to any part of the pipeline (U-Net or a text encoder)."""
    return any(adapter in names for names in pipe.get_list_adapters().values())


def _detach(pipe: Any, adapter: str) -> None:
    """Remove an adapter from every part of the pipeline. peft warns when it was the active one (it is, switched
    off, after each job); nothing depends on that, as ``apply`` sets the active adapters for every job."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*was active which is now deleted.*")
        pipe.delete_adapters([adapter])
