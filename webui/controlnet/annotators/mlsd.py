"""M-LSD straight lines (``mlsd``) from ``mlsd_large_512_fp32.pth``.

Mobile Line Segment Detection (Gu et al., NAVER, Apache-2.0), the "large" model: a MobileNetV2 trunk cut after the
96-channel stage, reading RGB plus a constant fourth channel in [-1, 1], and a small U-Net-like head that gives, at
half the input size, a line-centre heat map and each centre's two end points as offsets. The extension keeps the 200
strongest local maxima whose score is over the value threshold and whose segment is longer than the distance
threshold, and draws them one pixel wide, white on black. Tensors: ``backbone.features.N...`` and ``blockNN...``,
BatchNorms with running statistics.

The trunk pads stride-2 convolutions on the right and bottom only (``F.pad(0, 1, 0, 1)``), as TFLite does: the
weights were trained that way.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from webui.controlnet.annotators.common import Array


class _ConvBNReLU6(nn.Sequential):
    """Convolution (no bias), BatchNorm, ReLU6; stride 2 pads right/bottom by one instead of symmetrically."""

    def __init__(self, channels_in: int, channels_out: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> None:
        padding = 0 if stride == 2 else (kernel - 1) // 2
        super().__init__(
            nn.Conv2d(channels_in, channels_out, kernel, stride, padding, groups=groups, bias=False),
            nn.BatchNorm2d(channels_out),
            nn.ReLU6(),
        )
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 2:
            x = F.pad(x, (0, 1, 0, 1))
        return super().forward(x)


class _InvertedResidual(nn.Module):
    """MobileNetV2's block: 1x1 expansion (unless ``expand`` is 1), depthwise 3x3, linear 1x1 projection; the
    input is added back when the shape allows."""

    def __init__(self, channels_in: int, channels_out: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = channels_in * expand
        self.residual = stride == 1 and channels_in == channels_out
        layers: list[nn.Module] = [_ConvBNReLU6(channels_in, hidden, kernel=1)] if expand != 1 else []
        layers += [
            _ConvBNReLU6(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, channels_out, 1, bias=False),
            nn.BatchNorm2d(channels_out),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.residual else self.conv(x)


class _Trunk(nn.Module):
    """MobileNetV2 up to the 96-channel stage (14 layers); the outputs of layers 1, 3, 6, 10 and 13 feed the head."""

    TAPS = (1, 3, 6, 10, 13)

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = [_ConvBNReLU6(4, 32, stride=2)]
        channels = 32
        for expand, width, repeat, stride in (
            (1, 16, 1, 1),
            (6, 24, 2, 2),
            (6, 32, 3, 2),
            (6, 64, 4, 2),
            (6, 96, 3, 1),
        ):
            for i in range(repeat):
                layers.append(_InvertedResidual(channels, width, stride if i == 0 else 1, expand))
                channels = width
        self.features = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        taps = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.TAPS:
                taps.append(x)
        return taps


def _conv_bn_relu(channels_in: int, channels_out: int, kernel: int, dilation: int = 1) -> nn.Sequential:
    padding = dilation * (kernel - 1) // 2
    return nn.Sequential(
        nn.Conv2d(channels_in, channels_out, kernel, padding=padding, dilation=dilation),
        nn.BatchNorm2d(channels_out),
        nn.ReLU(),
    )


class _Merge(nn.Module):
    """BlockTypeA: the finer trunk output (``conv2``) beside the coarser path (``conv1``, doubled in size)."""

    def __init__(self, fine_in: int, coarse_in: int, upscale: bool = True) -> None:
        super().__init__()
        self.conv1 = _conv_bn_relu(coarse_in, 64, 1)
        self.conv2 = _conv_bn_relu(fine_in, 64, 1)
        self.upscale = upscale

    def forward(self, fine: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        coarse = self.conv1(coarse)
        if self.upscale:
            coarse = F.interpolate(coarse, scale_factor=2.0, mode="bilinear", align_corners=True)
        return torch.cat((self.conv2(fine), coarse), dim=1)


class _Refine(nn.Module):
    """BlockTypeB: a residual 3x3 at 128 channels, then 3x3 down to 64."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = _conv_bn_relu(128, 128, 3)
        self.conv2 = _conv_bn_relu(128, 64, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x) + x)


class _Output(nn.Module):
    """BlockTypeC: a 5-dilated 3x3, a 3x3 and a 1x1 to 16 maps (the last 9 are used)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = _conv_bn_relu(64, 64, 3, dilation=5)
        self.conv2 = _conv_bn_relu(64, 64, 3)
        self.conv3 = nn.Conv2d(64, 16, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(self.conv2(self.conv1(x)))


class MLSDLarge(nn.Module):
    """``MobileV2_MLSD_Large``: the trunk and head blocks 15-23 (named as in the file)."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = _Trunk()
        self.block15 = _Merge(64, 96, upscale=False)
        self.block16 = _Refine()
        self.block17 = _Merge(32, 64)
        self.block18 = _Refine()
        self.block19 = _Merge(24, 64)
        self.block20 = _Refine()
        self.block21 = _Merge(16, 64)
        self.block22 = _Refine()
        self.block23 = _Output()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Nine maps at half the input size (centre logit, then start x, y and end x, y offsets first)."""
        c1, c2, c3, c4, c5 = self.backbone(x)
        x = self.block16(self.block15(c4, c5))
        x = self.block18(self.block17(c3, x))
        x = self.block20(self.block19(c2, x))
        x = self.block22(self.block21(c1, x))
        return self.block23(x)[:, 7:]


def segments(model: MLSDLarge, image: Array, score_threshold: float, distance_threshold: float) -> Array:
    """Line segments (N x 4: x0, y0, x1, y1 in ``image`` pixels) found in an RGB ``uint8`` image whose sides are
    multiples of 32."""
    h, w = image.shape[:2]
    four = np.concatenate([image.astype(np.float32), np.ones((h, w, 1), np.float32)], axis=2)
    batch = torch.from_numpy(four.transpose(2, 0, 1)[None] / 127.5 - 1.0).float()
    with torch.inference_mode():
        maps = model(batch)
        heat = torch.sigmoid(maps[0, 0])
        peaks = F.max_pool2d(heat[None], 3, stride=1, padding=1)[0]
        heat = (heat * (peaks == heat).float()).reshape(-1)
        scores, indices = torch.topk(heat, min(200, heat.numel()))
    width = maps.shape[3]
    offsets = maps[0, 1:5].permute(1, 2, 0).numpy()
    lengths = np.sqrt(np.sum((offsets[:, :, :2] - offsets[:, :, 2:]) ** 2, axis=-1))
    found = []
    for score, index in zip(scores.tolist(), indices.tolist(), strict=True):
        y, x = divmod(index, width)
        if score > score_threshold and lengths[y, x] > distance_threshold:
            dx0, dy0, dx1, dy1 = offsets[y, x].astype(np.float64)  # the reference adds in float64 too
            found.append([x + dx0, y + dy0, x + dx1, y + dy1])
    return 2 * np.array(found, dtype=np.float64).reshape(-1, 4)  # the maps are at half size


def line_map(model: MLSDLarge, image: Array, score_threshold: float, distance_threshold: float) -> Array:
    """The ControlNet's input (HxW ``uint8``): each segment drawn one pixel wide in white on black."""
    drawn = np.zeros(image.shape[:2], np.uint8)
    for x0, y0, x1, y1 in segments(model, image, score_threshold, distance_threshold):
        cv2.line(drawn, (int(x0), int(y0)), (int(x1), int(y1)), 255, 1)
    return drawn
