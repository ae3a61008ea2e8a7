"""PiDiNet soft edges (``softedge_pidinet``, ``softedge_pidisafe``, ``scribble_pidinet``) from ``table5_pidinet.pth``.

Pixel Difference Networks (Su et al., 2021), the "carv4" model with compact dilation and spatial attention the
extension runs (table 5 of the paper; 60 base channels, dilation width 24). Its 16 depthwise 3x3 layers cycle through
four kinds: central (``cd``), angular (``ad``) and radial (``rd``) pixel differences, and a vanilla convolution. The
file stores the raw 3x3 weights (not the "converted" vanilla kernels), 83 tensors under ``module.``, in a
``state_dict`` wrapper; each difference is turned into the equivalent plain kernel here before the convolution,
which is exact algebra (the paper's own conversion).

It reads BGR in [0, 1] (the extension flips the RGB image) and gives the sigmoid of a 1x1 mix of four side outputs.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from webui.controlnet.annotators.common import Array, as_batch, safe_step, to_uint8

_KINDS = ("cd", "ad", "rd", "cv") * 4  # layer 0 is the first convolution, 1-15 the blocks' depthwise ones
_CLOCKWISE = [3, 0, 1, 6, 4, 2, 7, 8, 5]  # each 3x3 position's neighbour, one step clockwise
_RING_OUT = [0, 2, 4, 10, 14, 20, 22, 24]  # in a 5x5 kernel: the outer ring's corners and edge middles
_RING_IN = [6, 7, 8, 11, 13, 16, 17, 18]  # the inner ring around the centre


def plain_kernel(kind: str, weight: torch.Tensor) -> tuple[torch.Tensor, int]:
    """The vanilla kernel (and its padding) that computes pixel-difference convolution ``kind`` with ``weight``.

    ``cd``: each tap times (neighbour - centre), so the centre tap loses the sum of all taps. ``ad``: each tap times
    (pixel - its clockwise neighbour). ``rd``: taps 1-8 on a 5x5 ring, each times (outer pixel - inner pixel)."""
    if kind == "cv":
        return weight, 1
    out_channels, in_channels = weight.shape[:2]
    if kind == "cd":
        kernel = weight.clone()
        kernel[:, :, 1, 1] -= weight.sum(dim=(2, 3))
        return kernel, 1
    flat = weight.reshape(out_channels, in_channels, 9)
    if kind == "ad":
        return (flat - flat[:, :, _CLOCKWISE]).reshape(weight.shape), 1
    ring = weight.new_zeros(out_channels, in_channels, 25)
    ring[:, :, _RING_OUT] = flat[:, :, 1:]
    ring[:, :, _RING_IN] = -flat[:, :, 1:]
    return ring.reshape(out_channels, in_channels, 5, 5), 2


class _DifferenceConv(nn.Module):
    """A 3x3 convolution without bias whose weight is read as pixel differences of ``kind``."""

    def __init__(self, kind: str, channels_in: int, channels_out: int, groups: int = 1) -> None:
        super().__init__()
        self.kind = kind
        self.groups = groups
        self.weight = nn.Parameter(torch.empty(channels_out, channels_in // groups, 3, 3))
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kernel, padding = plain_kernel(self.kind, self.weight)
        return F.conv2d(x, kernel, padding=padding, groups=self.groups)


class _Block(nn.Module):
    """Depthwise difference convolution, ReLU, 1x1 convolution, plus the input (pooled and widened by a 1x1
    ``shortcut`` when the block halves the size)."""

    def __init__(self, kind: str, channels_in: int, channels_out: int, downsample: bool = False) -> None:
        super().__init__()
        self.downsample = downsample
        if downsample:
            self.shortcut = nn.Conv2d(channels_in, channels_out, 1)
        self.conv1 = _DifferenceConv(kind, channels_in, channels_in, groups=channels_in)
        self.conv2 = nn.Conv2d(channels_in, channels_out, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.downsample:
            x = F.max_pool2d(x, 2, 2)
        y = self.conv2(F.relu(self.conv1(x)))
        return y + (self.shortcut(x) if self.downsample else x)


class _Dilation(nn.Module):
    """CDCM: ReLU, 1x1 down to ``width`` channels, then four dilated 3x3 convolutions (5, 7, 9, 11) summed."""

    def __init__(self, channels: int, width: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, width, 1)
        self.conv2_1 = nn.Conv2d(width, width, 3, dilation=5, padding=5, bias=False)
        self.conv2_2 = nn.Conv2d(width, width, 3, dilation=7, padding=7, bias=False)
        self.conv2_3 = nn.Conv2d(width, width, 3, dilation=9, padding=9, bias=False)
        self.conv2_4 = nn.Conv2d(width, width, 3, dilation=11, padding=11, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(F.relu(x))
        return self.conv2_1(x) + self.conv2_2(x) + self.conv2_3(x) + self.conv2_4(x)


class _Attention(nn.Module):
    """CSAM: a one-channel sigmoid mask (ReLU, 1x1 to 4 channels, 3x3 to 1) that scales its input."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, 4, 1)
        self.conv2 = nn.Conv2d(4, 1, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.conv2(self.conv1(F.relu(x))))


class _Reduce(nn.Module):
    """MapReduce: a 1x1 convolution to the one-channel side output."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class PiDiNet(nn.Module):
    """PiDiNet "carv4", ``sa`` and ``dil=24``: four stages of four blocks (60, 120, 240, 240 channels)."""

    def __init__(self, base: int = 60, width: int = 24) -> None:
        super().__init__()
        widths = (base, base * 2, base * 4, base * 4)
        self.init_block = _DifferenceConv(_KINDS[0], 3, base)
        layer = 1
        channels = base
        for stage, stage_width in enumerate(widths, start=1):
            for index in range(1, 5):
                if stage == 1 and index == 4:
                    break  # the first stage has three blocks; the first convolution stands in for a fourth
                downsample = stage > 1 and index == 1
                setattr(self, f"block{stage}_{index}", _Block(_KINDS[layer], channels, stage_width, downsample))
                channels = stage_width
                layer += 1
        self.dilations = nn.ModuleList(_Dilation(w, width) for w in widths)
        self.attentions = nn.ModuleList(_Attention(width) for _ in widths)
        self.conv_reduces = nn.ModuleList(_Reduce(width) for _ in widths)
        self.classifier = nn.Conv2d(4, 1, 1)

    def _stage(self, stage: int, x: torch.Tensor) -> torch.Tensor:
        for index in range(1, 5):
            block = getattr(self, f"block{stage}_{index}", None)
            if block is not None:
                x = block(x)
        return x

    def forward(self, bgr: torch.Tensor) -> torch.Tensor:
        """The fused edge probability (1x1xHxW) for BGR in [0, 1]; sides are multiples of 8."""
        h, w = bgr.shape[2:]
        x = self.init_block(bgr)
        sides = []
        for stage in range(1, 5):
            x = self._stage(stage, x)
            i = stage - 1
            side = self.conv_reduces[i](self.attentions[i](self.dilations[i](x)))
            sides.append(F.interpolate(side, (h, w), mode="bilinear", align_corners=False))
        return torch.sigmoid(self.classifier(torch.cat(sides, 1)))


def edges(model: PiDiNet, image: Array, safe: bool = False) -> Array:
    """The soft edge map (HxW ``uint8``, white edges) of an RGB ``uint8`` image; ``safe`` quantises to three levels."""
    with torch.inference_mode():
        edge = model(as_batch(image[:, :, ::-1], 255.0))[0, 0].numpy()
    return to_uint8(safe_step(edge) if safe else edge)
