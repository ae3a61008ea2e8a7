"""LeReS depth (``depth_leres``, and the base estimates of ``depth_leres++``) from ``res101.pth``.

LeReS (Wei Yin et al., "Learning to Recover 3D Scene Shape from a Single Image", AdelaiDepth) relative depth: a
ResNeXt-101 32x8d encoder (torchvision's layout: bottlenecks with the stride on the grouped 3x3, BatchNorm) whose four
stages (1/4 ... 1/32) feed Ke Xian's decoder: feature-transfer blocks (FTB: 3x3, then a residual branch of ReLU,
3x3, BatchNorm, ReLU, 3x3), fusion blocks that add each finer stage and double the size (bilinear, corners aligned),
and an adaptive output head back at full size. The output is depth: bigger is farther.

AdelaiDepth's checkpoint keeps the weights under ``depth_model`` (beside the point-cloud modules), with
``module.`` in front of names that start ``depth_model.encoder_modules.encoder.`` and ``depth_model.decoder_modules.``
(the class nesting here: 712 tensors, 600 without BatchNorm's counters).

FTB's first ReLU is in place in the original, so the residual sum reads the activated features; ``_FeatureTransfer``
does that explicitly, or the files would give other maps.

The extension's steps (``annotator/leres``): the RGB image is flipped to BGR and normalised with ImageNet's RGB mean
and deviation without being divided by 255 first (its ``ToTensor`` gets a float array, which it does not scale);
the network was not trained that way, but ControlNet users get the maps it gives, so Easel gives the same. The map
is the depth stretched to 16 bits, brought to 8 bits, "remove near %" zeroing the nearest values, inverted (near
bright), and "remove background %" zeroing the farthest.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from webui.controlnet.annotators.common import IMAGENET_MEAN, IMAGENET_STD, Array


class _Bottleneck(nn.Module):
    """torchvision's ResNeXt bottleneck: 1x1, grouped 3x3 (32 groups, the stride here), 1x1 to 4x ``planes``; the
    shortcut is ``downsample`` (1x1 with the stride, BatchNorm) in a stage's first block."""

    def __init__(self, channels_in: int, planes: int, stride: int) -> None:
        super().__init__()
        width = planes * 4  # int(planes * 8 / 64) * 32
        self.conv1 = nn.Conv2d(channels_in, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, groups=32, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample: nn.Sequential | None = None
        if stride != 1 or channels_in != planes * 4:
            self.downsample = nn.Sequential(
                nn.Conv2d(channels_in, planes * 4, 1, stride=stride, bias=False), nn.BatchNorm2d(planes * 4)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.downsample(x) if self.downsample is not None else x
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        return F.relu(self.bn3(self.conv3(y)) + shortcut)


class _ResNeXt101(nn.Module):
    """ResNeXt-101 32x8d without its classifier; ``forward`` gives the four stages' outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        channels = 64
        for index, (planes, blocks, stride) in enumerate(((64, 3, 1), (128, 4, 2), (256, 23, 2), (512, 3, 2)), 1):
            layers = []
            for i in range(blocks):
                layers.append(_Bottleneck(channels, planes, stride if i == 0 else 1))
                channels = planes * 4
            self.add_module(f"layer{index}", nn.Sequential(*layers))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, stride=2, padding=1)
        features = []
        for index in range(1, 5):
            x = getattr(self, f"layer{index}")(x)
            features.append(x)
        return features


class _Encoder(nn.Module):
    """``encoder_modules``: the original's ``DepthNet`` wrapper, which only holds the trunk as ``encoder``."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = _ResNeXt101()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.encoder(x)


class _FeatureTransfer(nn.Module):
    """FTB: ``conv1`` (3x3 with bias), then ``x + branch(x)`` and ReLU, where the branch is ReLU, 3x3, BatchNorm,
    ReLU, 3x3 (``conv_branch.1``, ``.2``, ``.4``). The branch's first ReLU acts in place in the original, so ``x`` in
    the sum is already activated."""

    def __init__(self, channels_in: int, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels_in, channels, 3, padding=1)
        self.conv_branch = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        return F.relu(x + self.conv_branch[1:](x))


def _double(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)


class _Fusion(nn.Module):
    """FFM: the finer stage through ``ftb1``, plus the coarser path, through ``ftb2``, doubled in size."""

    def __init__(self, channels_in: int, channels: int) -> None:
        super().__init__()
        self.ftb1 = _FeatureTransfer(channels_in, channels)
        self.ftb2 = _FeatureTransfer(channels, channels)

    def forward(self, fine: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        return _double(self.ftb2(self.ftb1(fine) + coarse))


class _Output(nn.Module):
    """AO: 3x3 halving the channels, BatchNorm, ReLU, 3x3 to one channel, doubled in size (``adapt_conv.0/.1/.3``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.adapt_conv = nn.Sequential(
            nn.Conv2d(channels, channels // 2, 3, padding=1),
            nn.BatchNorm2d(channels // 2),
            nn.ReLU(),
            nn.Conv2d(channels // 2, 1, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _double(self.adapt_conv(x))


class _Decoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = _FeatureTransfer(2048, 512)
        self.conv1 = nn.Conv2d(512, 256, 3, padding=1)
        self.ffm2 = _Fusion(1024, 256)
        self.ffm1 = _Fusion(512, 256)
        self.ffm0 = _Fusion(256, 256)
        self.outconv = _Output(256)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = _double(self.conv1(self.conv(features[3])))  # 1/32 -> 1/16
        x = self.ffm2(features[2], x)  # 1/8
        x = self.ffm1(features[1], x)  # 1/4
        x = self.ffm0(features[0], x)  # 1/2
        return self.outconv(x)


class _DepthModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder_modules = _Encoder()
        self.decoder_modules = _Decoder()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder_modules(self.encoder_modules(x))


class LeReS(nn.Module):
    """AdelaiDepth's ``RelDepthModel(backbone="resnext101")``: ``depth_model.encoder_modules.encoder.*`` and
    ``depth_model.decoder_modules.*``."""

    def __init__(self) -> None:
        super().__init__()
        self.depth_model = _DepthModel()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Relative depth, Bx1xHxW, for sides that are multiples of 32."""
        return self.depth_model(x)


def estimate(model: LeReS, image: Array, width: int, height: int) -> Array:
    """The extension's ``estimateleres``: the RGB ``uint8`` image as BGR, resized to ``width`` x ``height``
    (bilinear), normalised with ImageNet's mean and deviation on the 0-255 values, through the network; the float32
    depth is resized back to the image's size (bicubic)."""
    bgr = np.ascontiguousarray(image[:, :, ::-1])
    if (bgr.shape[1], bgr.shape[0]) != (width, height):
        bgr = cv2.resize(bgr, (width, height))
    x = torch.from_numpy(bgr.astype(np.float32)).permute(2, 0, 1)
    x = (x - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(IMAGENET_STD).view(3, 1, 1)
    with torch.inference_mode():
        depth = model(x.unsqueeze(0)).squeeze().numpy()
    if depth.shape != image.shape[:2]:
        depth = cv2.resize(depth, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_CUBIC)
    return depth


def depth_image(depth: Array, remove_near: float = 0.0, remove_background: float = 0.0) -> Array:
    """The map (HxW ``uint8``, near bright) of a depth estimate (bigger: farther), as the extension makes it.

    The depth is stretched to 0-65535 and truncated to 16 bits, then scaled to 8 bits (rounded). ``remove_near``
    (percent) zeroes the values at or under that share of 255 before the map is inverted, so the nearest parts come
    out white; ``remove_background`` (percent) zeroes those at or under it after, so the farthest go black."""
    low, high = depth.min(), depth.max()
    flat = high - low <= np.finfo("float").eps
    stretched = np.zeros(depth.shape) if flat else 65535 * (depth - low) / (high - low)
    image = cv2.convertScaleAbs(stretched.astype(np.uint16), alpha=255.0 / 65535.0)
    if remove_near != 0:
        image = cv2.threshold(image, remove_near / 100 * 255, 255, cv2.THRESH_TOZERO)[1]
    image = cv2.bitwise_not(image)
    if remove_background != 0:
        image = cv2.threshold(image, remove_background / 100 * 255, 255, cv2.THRESH_TOZERO)[1]
    return image
