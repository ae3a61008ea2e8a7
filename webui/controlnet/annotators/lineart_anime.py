"""Anime line art (``lineart_anime``) from ``netG.pth``.

A pix2pix U-Net generator (eight levels, 64 base channels, instance norm without weights, so every convolution
has a bias), as the extension builds it. It works on sizes that are multiples of 256, in [-1, 1], and draws dark
lines on white through tanh; the extension scales the image up to the next multiple of 256 (bicubic), scales the
drawing back and inverts it. The file's tensors are named ``model.model.1.model.3...`` after the nesting, often
with a ``module.`` prefix (32 tensors).

pix2pix's levels apply their LeakyReLU in place, so the skip connection carries the activated features, not the raw
ones; ``_Level.forward`` does the same explicitly, or the files would give other drawings.
"""

from __future__ import annotations

import math

import cv2
import torch
from torch import nn

from webui.controlnet.annotators.common import Array, as_batch


class _Level(nn.Module):
    """One U-Net level: a 4x4 stride-2 convolution down, the ``inner`` level, a 4x4 transposed convolution up.

    ``model``'s indices are the file's names: outermost ``[down, inner, relu, up, tanh]``; innermost
    ``[leaky, down, relu, up, norm]``; the others ``[leaky, down, norm, inner, relu, up, norm]``."""

    def __init__(self, outer: int, inner: int, inside: _Level | None = None, channels_in: int | None = None) -> None:
        super().__init__()
        self.outermost = channels_in is not None
        down = nn.Conv2d(channels_in or outer, inner, 4, stride=2, padding=1)
        if self.outermost:
            assert inside is not None
            up = nn.ConvTranspose2d(inner * 2, outer, 4, stride=2, padding=1)
            layers: list[nn.Module] = [down, inside, nn.ReLU(), up, nn.Tanh()]
        elif inside is None:
            up = nn.ConvTranspose2d(inner, outer, 4, stride=2, padding=1)
            layers = [nn.LeakyReLU(0.2), down, nn.ReLU(), up, nn.InstanceNorm2d(outer)]
        else:
            up = nn.ConvTranspose2d(inner * 2, outer, 4, stride=2, padding=1)
            layers = [
                nn.LeakyReLU(0.2),
                down,
                nn.InstanceNorm2d(inner),
                inside,
                nn.ReLU(),
                up,
                nn.InstanceNorm2d(outer),
            ]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.outermost:
            return self.model(x)
        x = self.model[0](x)  # the in-place LeakyReLU of the original: the skip sees it too
        y = x
        for layer in list(self.model)[1:]:
            y = layer(y)
        return torch.cat([x, y], 1)


class AnimeUNet(nn.Module):
    """``UnetGenerator(3, 1, 8, 64)`` with instance norm: widths 64, 128, 256, then 512 for the five inner levels."""

    def __init__(self, levels: int = 8, base: int = 64) -> None:
        super().__init__()
        level = _Level(base * 8, base * 8)
        for _ in range(levels - 5):
            level = _Level(base * 8, base * 8, level)
        level = _Level(base * 4, base * 8, level)
        level = _Level(base * 2, base * 4, level)
        level = _Level(base, base * 2, level)
        self.model = _Level(1, base, level, channels_in=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def drawing(model: AnimeUNet, image: Array) -> Array:
    """The network's drawing (HxW ``uint8``, dark lines on white) of an RGB ``uint8`` image of any size."""
    h, w = image.shape[:2]
    size = (256 * math.ceil(w / 256), 256 * math.ceil(h / 256))
    big = cv2.resize(image, size, interpolation=cv2.INTER_CUBIC)
    with torch.inference_mode():
        line = model(as_batch(big, 127.5, -1.0))[0, 0] * 127.5 + 127.5
    line = cv2.resize(line.numpy(), (w, h), interpolation=cv2.INTER_CUBIC)
    return line.clip(0, 255).astype("uint8")


def lines(model: AnimeUNet, image: Array) -> Array:
    """The ControlNet's input: the drawing inverted, white lines on black."""
    return 255 - drawing(model, image)
