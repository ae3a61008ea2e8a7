"""Which device and precision the worker uses, chosen once at start from the flags and the hardware."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from webui.errors import EaselError
from webui.settings import Settings

log = logging.getLogger(__name__)

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class DeviceConfig:
    device: torch.device
    dtype: torch.dtype
    vae_dtype: torch.dtype
    memory_mode: str
    attention: str

    @property
    def label(self) -> str:
        name = self.device.type
        if name == "cuda":
            name = f"cuda ({torch.cuda.get_device_name(self.device)})"
        return f"{name}, {str(self.dtype).removeprefix('torch.')}"


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())


def choose(settings: Settings) -> DeviceConfig:
    """Resolve ``auto`` flags: CUDA fp16, else Apple MPS fp16, else CPU fp32 (CPUs are slow and unstable in fp16)."""
    want = settings.device
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "mps" if _mps_available() else "cpu"
    if want == "cuda" and not torch.cuda.is_available():
        raise EaselError("--device cuda: no CUDA device is available to this torch build")
    if want == "mps" and not _mps_available():
        raise EaselError("--device mps: Apple MPS is not available")
    device = torch.device(want)

    precision = settings.precision
    if precision == "auto":
        precision = "fp32" if want == "cpu" else "fp16"
    if precision == "bf16" and want == "cuda" and not torch.cuda.is_bf16_supported():
        raise EaselError("--precision bf16: this GPU does not support bfloat16; use fp16 or fp32")
    dtype = _DTYPES[precision]
    vae_dtype = torch.float32 if settings.no_half_vae else dtype

    memory_mode = settings.memory_mode
    if memory_mode != "none" and want != "cuda":
        log.warning("--memory-mode %s only applies to CUDA; ignored on %s", memory_mode, want)
        memory_mode = "none"
    if settings.attention == "xformers":
        try:
            import xformers  # noqa: F401
        except ImportError as exc:
            raise EaselError("--attention xformers: xformers is not installed (pip install 'easel[gpu]')") from exc
    return DeviceConfig(device, dtype, vae_dtype, memory_mode, settings.attention)
