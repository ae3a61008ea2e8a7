"""Which checkpoint is loaded, on which device: load on demand, keep the old one until the new one works.

Only the service's worker thread calls ``use``; the lists (``checkpoints``) are safe to read from any thread.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from webui.controlnet.models import ControlNetLibrary
from webui.demo.weights import DEMO_CONTROLNET_PATH, DEMO_EMBEDDING_PATH, DEMO_LORA_PATH, DEMO_MODEL_PATH
from webui.errors import EaselError, ModelLoadError
from webui.networks.embeddings import EmbeddingLibrary
from webui.networks.lora import LoraLibrary
from webui.pipeline.device import DeviceConfig
from webui.settings import Settings
from webui.upscalers.library import UpscalerLibrary
from webui.weights import formats, loader, model_defaults
from webui.weights.detect import Architecture
from webui.weights.hashing import HashCache
from webui.weights.registry import CheckpointInfo, ModelRegistry
from webui.weights.vae import VaeChooser

log = logging.getLogger(__name__)

_TEXT_AND_UNET = ("unet", "text_encoder", "text_encoder_2")


@dataclass
class ActiveModel:
    info: CheckpointInfo
    arch: Architecture
    components: dict[str, Any]
    load_seconds: float
    metadata: dict[str, str] = field(default_factory=dict)  # the file's safetensors metadata (empty otherwise)
    vae_info: CheckpointInfo | None = None  # the external VAE now in ``components["vae"]``; None: the baked-in one
    baked_vae: dict[str, torch.Tensor] | None = None  # the checkpoint's own VAE weights (CPU), once replaced
    lora_adapters: OrderedDict[str, Path] = field(default_factory=OrderedDict)  # peft adapters attached, LRU
    embeddings: dict[str, Path] = field(default_factory=dict)  # textual-inversion words its tokenizers know

    @property
    def scheduler_config(self) -> dict[str, Any]:
        return dict(self.components["scheduler"].config)


class WeightsManager:
    def __init__(self, settings: Settings, device: DeviceConfig) -> None:
        self.settings = settings
        self.device = device
        self.hash_cache = HashCache(settings.cache_path / "hashes.json")
        builtins = [DEMO_MODEL_PATH] if settings.demo_model else []
        self.checkpoints = ModelRegistry(
            settings.checkpoints_path, self.hash_cache, label="checkpoint", builtins=builtins
        )
        self.vaes = VaeChooser(settings.vae_path, self.hash_cache)
        # The demo model's own LoRA and embedding are listed whenever the demo model is.
        demo_lora = [DEMO_LORA_PATH] if settings.demo_model else []
        demo_embedding = [DEMO_EMBEDDING_PATH] if settings.demo_model else []
        self.loras = LoraLibrary(settings.lora_path, self.hash_cache, builtins=demo_lora)
        self.embeddings = EmbeddingLibrary(settings.embeddings_path, self.hash_cache, builtins=demo_embedding)
        demo_controlnet = [DEMO_CONTROLNET_PATH] if settings.demo_model else []
        self.controlnets = ControlNetLibrary(settings.controlnet_path, self.hash_cache, builtins=demo_controlnet)
        self.upscalers = UpscalerLibrary(settings.esrgan_path, self.hash_cache)
        self.active: ActiveModel | None = None
        # Called on the worker each time another checkpoint becomes the active one (extensions' model_loaded).
        self.listeners: list[Callable[[ActiveModel], None]] = []
        self.ram_cache = settings.ckpt_cache  # models parked in RAM after a switch; the service follows Settings
        # Models used before, parked in RAM (most recent last), so switching back skips the load.
        self._parked: OrderedDict[Path, ActiveModel] = OrderedDict()

    def refresh(self) -> list[CheckpointInfo]:
        """Rescan every model folder (the UI's refresh button does them all)."""
        self.checkpoints.refresh()
        self.vaes.registry.refresh()
        self.loras.registry.refresh()
        self.embeddings.registry.refresh()
        self.controlnets.registry.refresh()
        self.upscalers.registry.refresh()
        return self.checkpoints.list()

    def default_checkpoint(self) -> CheckpointInfo:
        """The checkpoint used when a request names none: the flag's choice, else the first valid file of the
        user's, else the built-in demo model (so a fresh install draws something without downloading)."""
        if self.settings.checkpoint:
            return self.checkpoints.get(self.settings.checkpoint)
        usable = [c for c in self.checkpoints.list() if c.name not in self.checkpoints.errors]
        usable.sort(key=lambda c: c.builtin)  # stable: the user's own files first, in listed order
        if not usable:
            raise EaselError(
                f"checkpoint: no usable checkpoint in {self.settings.checkpoints_path}; "
                "put a .safetensors model there (or pass --ckpt-dir)"
            )
        return usable[0]

    def use(self, query: str | None) -> ActiveModel:
        """Return the loaded model for ``query`` (title, name or hash), loading it if needed.

        On failure the file is marked invalid with its reason and the previously loaded model stays active.
        """
        if query is None and self.active is not None:
            return self.active
        info = self.checkpoints.get(query) if query else self.default_checkpoint()
        if self.active is not None and self.active.info.path == info.path:
            return self.active
        model = self._parked.pop(info.path, None)
        if model is not None:
            self._move(model, self.device.device)
            log.info("switched to %s from the RAM cache", info.title)
        else:
            try:
                model = self._load(info)
            except ModelLoadError as exc:
                self.checkpoints.record_error(info, exc.reason)
                raise
        previous, self.active = self.active, model
        if previous is not None:
            self._park(previous)
        for listener in list(self.listeners):
            listener(model)
        return model

    @property
    def parked(self) -> list[CheckpointInfo]:
        """Checkpoints held in RAM by --ckpt-cache, least recently used first."""
        return [m.info for m in self._parked.values()]

    def _park(self, model: ActiveModel) -> None:
        if self.ram_cache <= 0:
            self._release(model)
            return
        self._move(model, torch.device("cpu"))
        self._parked[model.info.path] = model
        while len(self._parked) > self.ram_cache:
            _, oldest = self._parked.popitem(last=False)
            self._release(oldest)

    def _move(self, model: ActiveModel, device: torch.device) -> None:
        """Move a model between RAM and the device; offload hooks already keep weights in RAM, so leave them."""
        if self.device.memory_mode != "none" or self.device.device.type == "cpu":
            return
        for name in ("text_encoder", "text_encoder_2", "unet", "vae"):
            if name in model.components:
                model.components[name].to(device)
        if self.device.device.type == "cuda":
            torch.cuda.empty_cache()

    def _load(self, info: CheckpointInfo) -> ActiveModel:
        started = time.perf_counter()
        log.info("loading %s", info.name)
        kind = formats.sniff(info.path)
        metadata: dict[str, str] = {}
        if kind == "diffusers":
            loaded = loader.load_diffusers_folder(info.path, self.device.dtype)
        else:
            state_dict = formats.read_state_dict(info.path)
            loaded = loader.load_single_file(info.path, state_dict, self.device.dtype)
            del state_dict
            metadata = formats.read_metadata(info.path)
            info.ensure_hash(self.hash_cache)
        arch = loaded.arch
        native = model_defaults.from_metadata(metadata).get("width")
        if native:
            arch = replace(arch, native_size=native)
        components = loaded.components
        self._place(components, arch)
        seconds = time.perf_counter() - started
        log.info("loaded %s (%s) in %.1f s", info.title, arch.label, seconds)
        return ActiveModel(info=info, arch=arch, components=components, load_seconds=seconds, metadata=metadata)

    def _place(self, components: dict[str, Any], arch: Architecture) -> None:
        """Move weights to the device in the chosen precision, or attach offload hooks (CUDA only)."""
        dev = self.device
        vae = components["vae"]
        vae_dtype = dev.vae_dtype
        if vae_dtype == torch.float16 and getattr(vae.config, "force_upcast", False):
            vae_dtype = torch.float32  # SDXL's VAE overflows in fp16; diffusers marks it force_upcast
        vae.to(dtype=vae_dtype)
        for name in _TEXT_AND_UNET:
            if name in components:
                components[name].to(dtype=dev.dtype)
        modules = [components[n] for n in ("text_encoder", "text_encoder_2", "unet", "vae") if n in components]
        if dev.memory_mode == "model-offload":
            from accelerate import cpu_offload_with_hook

            hook = None
            for module in modules:
                _, hook = cpu_offload_with_hook(module, dev.device, prev_module_hook=hook)
        elif dev.memory_mode == "sequential-offload":
            from accelerate import cpu_offload

            for module in modules:
                cpu_offload(module, dev.device)
        else:
            for module in modules:
                module.to(dev.device)
        if dev.attention == "xformers":
            components["unet"].enable_xformers_memory_efficient_attention()
            vae.enable_xformers_memory_efficient_attention()

    def _release(self, model: ActiveModel) -> None:
        model.components.clear()
        if self.device.device.type == "cuda":
            torch.cuda.empty_cache()
