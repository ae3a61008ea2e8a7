"""Device and precision choice: automatic picks and the errors for impossible flags."""

from __future__ import annotations

import builtins

import pytest
import torch

from webui.errors import EaselError
from webui.pipeline import device as device_mod
from webui.settings import Settings


def test_cpu_defaults_to_fp32_and_ignores_offload(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(device_mod, "_mps_available", lambda: False)
    cfg = device_mod.choose(Settings(memory_mode="model-offload"))
    assert cfg.device.type == "cpu" and cfg.dtype == torch.float32 and cfg.memory_mode == "none"


def test_cuda_is_preferred_in_fp16_and_bf16_on_request(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    cfg = device_mod.choose(Settings())
    assert cfg.device.type == "cuda" and cfg.dtype == torch.float16 and cfg.vae_dtype == torch.float16
    cfg = device_mod.choose(Settings(precision="bf16", no_half_vae=True, memory_mode="sequential-offload"))
    assert cfg.dtype == torch.bfloat16 and cfg.vae_dtype == torch.float32 and cfg.memory_mode == "sequential-offload"


def test_mps_when_no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(device_mod, "_mps_available", lambda: True)
    cfg = device_mod.choose(Settings())
    assert cfg.device.type == "mps" and cfg.dtype == torch.float16


def test_impossible_flags_say_what_is_missing(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(EaselError, match="--device cuda"):
        device_mod.choose(Settings(device="cuda"))
    real_import = builtins.__import__

    def no_xformers(name, *args, **kwargs):
        if name == "xformers":
            raise ImportError("no xformers")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_xformers)
    with pytest.raises(EaselError, match="xformers is not installed"):
        device_mod.choose(Settings(device="cpu", attention="xformers"))
