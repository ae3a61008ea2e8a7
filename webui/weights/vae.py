"""External VAEs (``models/VAE``): chosen per job, swapped into the loaded model in place, never a reload.

A1111's choices: ``Automatic`` uses a VAE named like the checkpoint (``NAME.vae.safetensors`` beside it, or
``NAME.*`` in the VAE folder) and otherwise the checkpoint's own; ``None`` always uses the checkpoint's own; a file
name uses that file. The swap copies the new weights into the model's existing ``AutoencoderKL`` with
``load_state_dict``, so every pipeline built around it sees the change and nothing is rebuilt; the checkpoint's
own ("baked-in") weights are kept on the CPU the first time they are replaced, so going back costs one copy.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

from webui.errors import EaselError, ModelLoadError
from webui.types import VAE_AUTOMATIC, VAE_NONE
from webui.weights import detect, formats
from webui.weights.hashing import HashCache
from webui.weights.registry import CheckpointInfo, ModelRegistry

log = logging.getLogger(__name__)

AUTOMATIC = VAE_AUTOMATIC
NONE = VAE_NONE
VAE_EXTENSIONS = (".safetensors", ".pt", ".ckpt", ".bin")
_CACHED = 2  # external VAEs kept converted in RAM (an SD VAE is ~160 MB in fp16)
_DROPPED_PREFIXES = ("loss.", "model_ema.")  # training leftovers in some released .ckpt/.pt VAEs


class VaeMismatch(EaselError):
    """The file is a VAE, but not one this model's VAE can take (another shape or a different latent size)."""


def read_vae_weights(path: Path, config: dict[str, Any]) -> dict[str, torch.Tensor]:
    """A VAE file in diffusers' key names, whatever layout it was saved in.

    Accepted: the original (LDM) layout as A1111 VAEs ship (``encoder.down.0...``), the same inside a full
    checkpoint (``first_stage_model.`` prefix), and diffusers' own layout (``encoder.down_blocks.0...``).
    """
    state_dict = formats.read_state_dict(path)
    if any(k.startswith(detect.VAE_PREFIX) for k in state_dict):
        state_dict = {k[len(detect.VAE_PREFIX) :]: v for k, v in state_dict.items() if k.startswith(detect.VAE_PREFIX)}
    state_dict = {k: v for k, v in state_dict.items() if not k.startswith(_DROPPED_PREFIXES)}
    if not any(k.startswith(("encoder.", "decoder.")) for k in state_dict):
        raise ModelLoadError(path, "holds no VAE weights (no encoder./decoder. tensors)")
    if any(k.startswith(("encoder.down_blocks.", "decoder.up_blocks.")) for k in state_dict):
        return state_dict  # already diffusers' names
    try:
        prefixed = {detect.VAE_PREFIX + k: v for k, v in state_dict.items()}
        return convert_ldm_vae_checkpoint(prefixed, config)
    except (KeyError, IndexError, ValueError, RuntimeError) as exc:
        raise ModelLoadError(path, f"is not a VAE in a known layout ({exc})") from exc


class VaeChooser:
    """Resolves a VAE choice for a checkpoint and puts those weights into the model's VAE."""

    def __init__(self, root: Path, cache: HashCache) -> None:
        self.registry = ModelRegistry(root, cache, VAE_EXTENSIONS, label="sd_vae", diffusers_folders=False)
        self._loaded: OrderedDict[Path, tuple[float, dict[str, torch.Tensor]]] = OrderedDict()

    def choices(self) -> list[str]:
        """What a VAE dropdown offers, A1111's order: Automatic, None, then the files."""
        return [AUTOMATIC, NONE, *(i.name for i in self.registry.list())]

    def check(self, choice: str) -> None:
        """Raise ``ModelNotFound`` (field ``sd_vae``) for a name that is neither a keyword nor a listed file."""
        if choice not in (AUTOMATIC, NONE):
            self.registry.get(choice)

    def resolve(self, choice: str, checkpoint: CheckpointInfo) -> CheckpointInfo | None:
        """The VAE file a job uses, or None for the checkpoint's own."""
        if choice == NONE:
            return None
        if choice != AUTOMATIC:
            return self.registry.get(choice)
        return self._beside(checkpoint) or self._named_like(checkpoint)

    def _beside(self, checkpoint: CheckpointInfo) -> CheckpointInfo | None:
        """``NAME.vae.pt`` / ``.ckpt`` / ``.safetensors`` next to the checkpoint file, as A1111 finds it."""
        if checkpoint.kind != "file":
            return None
        base = checkpoint.path.with_suffix("")
        for suffix in (".vae.safetensors", ".vae.pt", ".vae.ckpt"):
            candidate = base.parent / (base.name + suffix)
            if candidate.is_file():
                st = candidate.stat()
                return CheckpointInfo(candidate, candidate.name, candidate.stem, "file", st.st_size, st.st_mtime)
        return None

    def _named_like(self, checkpoint: CheckpointInfo) -> CheckpointInfo | None:
        stem = Path(checkpoint.name).stem if checkpoint.kind == "file" else Path(checkpoint.name).name
        for info in self.registry.list():
            if Path(info.name).stem in (stem, f"{stem}.vae"):
                return info
        return None

    def apply(self, model: Any, vae: CheckpointInfo | None) -> None:
        """Put ``vae``'s weights (None: the checkpoint's own) into ``model``'s VAE, unless they are there.

        ``model`` is the weights manager's ``ActiveModel``; on any failure its VAE keeps the weights it had.
        """
        current = model.vae_info
        if (current.path if current else None) == (vae.path if vae else None):
            return
        module = model.components["vae"]
        if any(p.device.type == "meta" for p in module.parameters()):
            raise EaselError("sd_vae: a VAE cannot be swapped with --memory sequential-offload; use model-offload")
        if vae is None:
            assert model.baked_vae is not None  # set when the first external VAE went in
            weights = model.baked_vae
        else:
            weights = self._weights(vae, dict(module.config))
            self._check_fits(vae, module, weights)
            if model.baked_vae is None:
                model.baked_vae = {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}
        module.load_state_dict(weights, strict=True)
        model.vae_info = vae
        log.info("VAE: %s", vae.name if vae else f"baked into {model.info.name}")

    def _weights(self, vae: CheckpointInfo, config: dict[str, Any]) -> dict[str, torch.Tensor]:
        cached = self._loaded.get(vae.path)
        if cached is not None and cached[0] == vae.mtime:
            self._loaded.move_to_end(vae.path)
            return cached[1]
        try:
            weights = read_vae_weights(vae.path, config)
        except ModelLoadError as exc:
            self.registry.record_error(vae, exc.reason)
            raise
        vae.ensure_hash(self.registry.cache)
        self._loaded[vae.path] = (vae.mtime, weights)
        while len(self._loaded) > _CACHED:
            self._loaded.popitem(last=False)
        return weights

    def _check_fits(self, vae: CheckpointInfo, module: torch.nn.Module, weights: dict[str, torch.Tensor]) -> None:
        expected = module.state_dict()
        missing = [k for k in expected if k not in weights]
        wrong = [
            f"{k} {tuple(weights[k].shape)} (model has {tuple(v.shape)})"
            for k, v in expected.items()
            if k in weights and weights[k].shape != v.shape
        ]
        extra = [k for k in weights if k not in expected]
        if missing or wrong or extra:
            first = (wrong or missing or extra)[0]
            count = len(missing) + len(wrong) + len(extra)
            raise VaeMismatch(
                f"sd_vae: {vae.name} does not fit this model's VAE ({count} tensors differ, e.g. {first}); "
                "choose a VAE made for this model's family, or Automatic"
            )
