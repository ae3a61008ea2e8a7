"""EfficientNet-B5 as NormalBAE's encoder: geffnet's ``tf_efficientnet_b5_ap`` (the TensorFlow-compatible port of the
AdvProp weights), written here with geffnet's module names so ``scannet.pt`` loads into it strictly.

Scaled from EfficientNet-B0 by 1.6 in width (channels rounded to multiples of 8) and 2.2 in depth (repeats rounded
up): a 3x3 stem to 48 channels, seven stages of 3, 5, 5, 7, 7, 9 and 3 blocks, and a 1x1 head to 2048 channels. The
first stage's blocks are depthwise-separable (``conv_dw``, ``bn1``, ``se``, ``conv_pw``, ``bn2``), the others inverted
residuals (``conv_pw`` expanding sixfold, ``bn1``, ``conv_dw``, ``bn2``, ``se``, ``conv_pwl``, ``bn3``); every block
has a squeeze-excite (``se.conv_reduce``/``se.conv_expand``, a quarter of the block's input channels) and the input
added back when the shape allows. Swish throughout, sigmoid gates, BatchNorm with TensorFlow's eps of 1e-3,
convolutions without bias.

TensorFlow's "SAME" padding matters for the stride-2 convolutions: the input is padded so the output is
ceil(size / 2), with the odd pixel on the right and bottom; stride-1 ones pad symmetrically by half the kernel. The
classifier (``global_pool``, ``classifier``) is gone, as NormalBAE removes it before saving, so the file has no
tensors for it.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

_BN_EPS = 1e-3
STEM = 48
HEAD = 2048
# Per stage: blocks, depthwise kernel, stride of the first block, expansion, output channels (already scaled).
STAGES = (
    (3, 3, 1, 1, 24),
    (5, 3, 2, 6, 40),
    (5, 5, 2, 6, 64),
    (7, 3, 2, 6, 128),
    (7, 5, 1, 6, 176),
    (9, 5, 2, 6, 304),
    (3, 3, 1, 6, 512),
)


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's SAME padding along one axis: (before, after), the odd pixel after."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class _Conv(nn.Conv2d):
    """A bias-free convolution with TensorFlow's SAME padding (static for stride 1, computed per input for 2)."""

    def __init__(self, channels_in: int, channels_out: int, kernel: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__(
            channels_in,
            channels_out,
            kernel,
            stride,
            padding=kernel // 2 if stride == 1 else 0,
            groups=groups,
            bias=False,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride[0] > 1:
            kernel, stride = self.kernel_size[0], self.stride[0]
            top, bottom = _same_padding(x.shape[-2], kernel, stride)
            left, right = _same_padding(x.shape[-1], kernel, stride)
            x = F.pad(x, (left, right, top, bottom))
        return super().forward(x)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=_BN_EPS)


class _SqueezeExcite(nn.Module):
    """Each channel scaled by a gate from the channels' means: 1x1 down to ``reduced``, swish, 1x1 up, sigmoid."""

    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        self.conv_reduce = nn.Conv2d(channels, reduced, 1)
        self.conv_expand = nn.Conv2d(reduced, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.conv_expand(F.silu(self.conv_reduce(F.adaptive_avg_pool2d(x, 1))))
        return x * torch.sigmoid(gate)


class _DepthwiseSeparable(nn.Module):
    """Stage 0's block: depthwise conv, BN, swish, squeeze-excite, 1x1 conv, BN (no activation)."""

    def __init__(self, channels_in: int, channels_out: int, kernel: int, stride: int) -> None:
        super().__init__()
        self.conv_dw = _Conv(channels_in, channels_in, kernel, stride, groups=channels_in)
        self.bn1 = _bn(channels_in)
        self.se = _SqueezeExcite(channels_in, channels_in // 4)
        self.conv_pw = _Conv(channels_in, channels_out, 1)
        self.bn2 = _bn(channels_out)
        self.residual = stride == 1 and channels_in == channels_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv_pw(self.se(F.silu(self.bn1(self.conv_dw(x))))))
        return out + x if self.residual else out


class _InvertedResidual(nn.Module):
    """The other stages' block: 1x1 expansion, BN, swish, depthwise conv, BN, swish, squeeze-excite (reduced from
    the block's input width), linear 1x1 projection, BN."""

    def __init__(self, channels_in: int, channels_out: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = channels_in * expand
        self.conv_pw = _Conv(channels_in, mid, 1)
        self.bn1 = _bn(mid)
        self.conv_dw = _Conv(mid, mid, kernel, stride, groups=mid)
        self.bn2 = _bn(mid)
        self.se = _SqueezeExcite(mid, channels_in // 4)
        self.conv_pwl = _Conv(mid, channels_out, 1)
        self.bn3 = _bn(channels_out)
        self.residual = stride == 1 and channels_in == channels_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.silu(self.bn1(self.conv_pw(x)))
        out = self.se(F.silu(self.bn2(self.conv_dw(out))))
        out = self.bn3(self.conv_pwl(out))
        return out + x if self.residual else out


class EfficientNetB5(nn.Module):
    """``tf_efficientnet_b5_ap`` without its classifier: ``conv_stem``, ``bn1``, ``blocks.S.B.*``, ``conv_head``,
    ``bn2`` (852 tensors)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv_stem = _Conv(3, STEM, 3, stride=2)
        self.bn1 = _bn(STEM)
        stages: list[nn.Module] = []
        channels = STEM
        for index, (repeats, kernel, stride, expand, width) in enumerate(STAGES):
            blocks: list[nn.Module] = []
            for i in range(repeats):
                step = stride if i == 0 else 1
                if index == 0:
                    blocks.append(_DepthwiseSeparable(channels, width, kernel, step))
                else:
                    blocks.append(_InvertedResidual(channels, width, kernel, step, expand))
                channels = width
            stages.append(nn.Sequential(*blocks))
        self.blocks = nn.Sequential(*stages)
        self.conv_head = _Conv(channels, HEAD, 1)
        self.bn2 = _bn(HEAD)  # in the file, but NormalBAE reads the head before it

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Each stage's output (at 1/2, 1/4, 1/8, 1/16, 1/16, 1/32, 1/32 of the input size), then the head's
        convolution (2048 channels at 1/32, before ``bn2``)."""
        x = F.silu(self.bn1(self.conv_stem(x)))
        outputs = []
        for stage in self.blocks:
            x = stage(x)
            outputs.append(x)
        outputs.append(self.conv_head(x))
        return outputs
