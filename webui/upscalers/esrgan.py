"""ESRGAN-family upscalers (ESRGAN, Real-ESRGAN, and the community RRDB models like 4x-UltraSharp).

spandrel would read these and many more, but it imports torchvision at import time, and PyPI's torchvision
breaks the CPU torch Easel installs; so the one architecture nearly every ``models/ESRGAN`` file uses, RRDBNet,
is written here. Both key layouts occur in the wild and are read:

- the original ESRGAN repository's ``model.0`` / ``model.1.sub.N.RDBk.convj.0`` / ``model.3`` ... names;
- BasicSR's (Real-ESRGAN) ``conv_first`` / ``body.N.rdbk.convj`` / ``conv_up1`` ... names, often wrapped in
  ``{"params_ema": ...}``; its 2x and 1x models first fold pixels into channels (pixel unshuffle).

Sizes (features, blocks, growth, scale) are read from the tensors. Files are read by Easel's safe readers
(``safetensors``, or ``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from webui.errors import ModelLoadError


class _DenseBlock(nn.Module):
    """Five 3x3 convolutions, each seeing every earlier output; the result is added back at 0.2."""

    def __init__(self, features: int, growth: int) -> None:
        super().__init__()
        widths = [features + i * growth for i in range(5)]
        self.convs = nn.ModuleList(nn.Conv2d(widths[i], growth if i < 4 else features, 3, padding=1) for i in range(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [x]
        for i, conv in enumerate(self.convs):
            y = conv(torch.cat(outs, 1))
            if i < 4:
                outs.append(F.leaky_relu(y, 0.2))
        return y * 0.2 + x


class _RRDB(nn.Module):
    def __init__(self, features: int, growth: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(_DenseBlock(features, growth) for _ in range(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        for block in self.blocks:
            y = block(y)
        return y * 0.2 + x


class RRDBNet(nn.Module):
    def __init__(
        self, in_channels: int, out_channels: int, features: int, blocks: int, growth: int, ups: int, unshuffle: int
    ) -> None:
        super().__init__()
        self.unshuffle = unshuffle
        self.conv_first = nn.Conv2d(in_channels * unshuffle * unshuffle, features, 3, padding=1)
        self.body = nn.ModuleList(_RRDB(features, growth) for _ in range(blocks))
        self.conv_body = nn.Conv2d(features, features, 3, padding=1)
        self.ups = nn.ModuleList(nn.Conv2d(features, features, 3, padding=1) for _ in range(ups))
        self.conv_hr = nn.Conv2d(features, features, 3, padding=1)
        self.conv_last = nn.Conv2d(features, out_channels, 3, padding=1)

    @property
    def scale(self) -> int:
        return 2 ** len(self.ups) // self.unshuffle

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.unshuffle > 1:
            x = F.pixel_unshuffle(x, self.unshuffle)
        feat = self.conv_first(x)
        body = feat
        for block in self.body:
            body = block(body)
        feat = feat + self.conv_body(body)
        for conv in self.ups:
            feat = F.leaky_relu(conv(F.interpolate(feat, scale_factor=2, mode="nearest")), 0.2)
        return self.conv_last(F.leaky_relu(self.conv_hr(feat), 0.2))


def _unwrap(state: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    for key in ("params_ema", "params", "state_dict"):
        inner = state.get(key)
        if isinstance(inner, Mapping):
            return dict(inner)
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}


def _from_original(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The original repository's sequential names to BasicSR's."""
    out: dict[str, torch.Tensor] = {}
    convs = sorted({int(m[1]) for k in state if (m := re.match(r"model\.(\d+)\.weight$", k))})
    # model.0 conv_first, model.1 the trunk; then the upsampling convs, the HR conv and the last conv in order.
    tail = [i for i in convs if i >= 2]
    names = {0: "conv_first"} | {i: f"conv_up{n + 1}" for n, i in enumerate(tail[:-2])}
    names |= {tail[-2]: "conv_hr", tail[-1]: "conv_last"}
    for key, value in state.items():
        if m := re.match(r"model\.1\.sub\.(\d+)\.RDB(\d)\.conv(\d)\.0\.(weight|bias)$", key):
            out[f"body.{m[1]}.rdb{m[2]}.conv{m[3]}.{m[4]}"] = value
        elif m := re.match(r"model\.1\.sub\.(\d+)\.(weight|bias)$", key):
            out[f"conv_body.{m[2]}"] = value
        elif (m := re.match(r"model\.(\d+)\.(weight|bias)$", key)) and int(m[1]) in names:
            out[f"{names[int(m[1])]}.{m[2]}"] = value
    return out


def _to_module_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """BasicSR names to this module's (``rdbK.convJ`` -> ``blocks.K-1.convs.J-1``, ``conv_upN`` -> ``ups.N-1``)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if m := re.match(r"body\.(\d+)\.rdb(\d)\.conv(\d)\.(weight|bias)$", key):
            key = f"body.{m[1]}.blocks.{int(m[2]) - 1}.convs.{int(m[3]) - 1}.{m[4]}"
        elif m := re.match(r"conv_up(\d)\.(weight|bias)$", key):
            key = f"ups.{int(m[1]) - 1}.{m[2]}"
        out[key] = value
    return out


def build(path: Path, raw: Mapping[str, Any]) -> RRDBNet:
    """An RRDBNet with ``raw``'s weights, its sizes read from the shapes; ``ModelLoadError`` if it is not one."""
    state = _unwrap(raw)
    if "model.0.weight" in state:
        state = _from_original(state)
    if "conv_first.weight" not in state or not any(k.startswith("body.") for k in state):
        kind = "a compact (SRVGG) model" if "body.0.weight" in state else "not an ESRGAN/RRDB model"
        raise ModelLoadError(path, f"{kind}; Easel reads ESRGAN and Real-ESRGAN (RRDBNet) upscalers")
    first = state["conv_first.weight"]
    features = int(first.shape[0])
    out_channels = int(state["conv_last.weight"].shape[0])
    folded = int(first.shape[1])
    in_channels = out_channels
    unshuffle = {1: 1, 4: 2, 16: 4}.get(folded // in_channels, 0) if folded % in_channels == 0 else 0
    if not unshuffle:
        raise ModelLoadError(path, f"first convolution takes {folded} channels; cannot tell its input layout")
    blocks = len({int(m[1]) for k in state if (m := re.match(r"body\.(\d+)\.", k))})
    growth = int(state["body.0.rdb1.conv1.weight"].shape[0])
    ups = len({k for k in state if re.match(r"conv_up\d\.weight$", k)})
    model = RRDBNet(in_channels, out_channels, features, blocks, growth, ups, unshuffle)
    try:
        model.load_state_dict(_to_module_names(state), strict=True)
    except RuntimeError as exc:
        raise ModelLoadError(path, f"RRDBNet weights do not fit: {str(exc).splitlines()[0]}") from exc
    return model.eval().requires_grad_(False)
