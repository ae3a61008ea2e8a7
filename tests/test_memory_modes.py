"""Memory modes and VAE tiling: the offload hooks and tiling switch run the same math as the plain path.

Offloading matters on CUDA; here the hooks move weights to the CPU "execution device", which exercises the same
accelerate hooks and pipeline device logic without a GPU.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from webui.pipeline.device import DeviceConfig
from webui.pipeline.engine import Engine
from webui.service.service import GenerationService
from webui.settings import Settings
from webui.types import GenerationRequest
from webui.weights.manager import WeightsManager


def _service(tmp_path, ckpt, memory_mode: str = "none", vae_tiling: str = "auto") -> GenerationService:
    folder = tmp_path / "models" / "Stable-diffusion"
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / ckpt.name).exists():
        shutil.copy(ckpt, folder / ckpt.name)
    settings = Settings(models_dir=tmp_path / "models", outputs_dir=tmp_path / "out")
    device = DeviceConfig(torch.device("cpu"), torch.float32, torch.float32, memory_mode, "sdpa")
    weights = WeightsManager(settings, device)
    weights.refresh()
    return GenerationService(settings, Engine(device, weights, vae_tiling=vae_tiling)).start()


def _pixels(service: GenerationService) -> np.ndarray:
    request = GenerationRequest.build(prompt="a cat", steps=3, width=64, height=64, seed=3, save_images=False)
    try:
        return np.asarray(service.generate(request, timeout=120).images[0].image)
    finally:
        service.stop()


@pytest.mark.parametrize("mode", ["model-offload", "sequential-offload"])
def test_offload_modes_give_the_same_pixels(tmp_path, tiny_sd1_ckpt, mode):
    plain = _pixels(_service(tmp_path, tiny_sd1_ckpt))
    offloaded_service = _service(tmp_path, tiny_sd1_ckpt, memory_mode=mode)
    offloaded = _pixels(offloaded_service)
    unet = offloaded_service.engine.weights.active.components["unet"]
    assert hasattr(unet, "_hf_hook")  # the accelerate hook is really in place
    assert np.abs(plain.astype(int) - offloaded.astype(int)).max() <= 1


def test_vae_tiling_switch(tmp_path, tiny_sd1_ckpt):
    on = _service(tmp_path, tiny_sd1_ckpt, vae_tiling="on")
    tiled = _pixels(on)
    assert on.engine.weights.active.components["vae"].use_tiling
    off = _service(tmp_path, tiny_sd1_ckpt, vae_tiling="off")
    plain = _pixels(off)
    assert not off.engine.weights.active.components["vae"].use_tiling
    assert np.abs(tiled.astype(int) - plain.astype(int)).max() <= 2  # below the tile size: same decode
