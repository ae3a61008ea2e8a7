"""Line art (``lineart``, ``lineart_coarse``) from ``sk_model.pth`` and ``sk_model2.pth``.

Both files hold the same network, trained for fine and for coarse lines: "informative drawings" (Chan, Durand and
Isola), a CycleGAN-style ResNet generator with three residual blocks. It sees RGB in [0, 1] and draws dark lines on
white through a sigmoid; the extension inverts the result, because line-art ControlNets want white lines on black.
Instance norms have no weights, so a file holds only convolutions (24 tensors).
"""

from __future__ import annotations

import torch
from torch import nn

from webui.controlnet.annotators.common import Array, as_batch, to_uint8


class _Residual(nn.Module):
    """Two reflection-padded 3x3 convolutions with instance norm, added back to the input."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3),
            nn.InstanceNorm2d(channels),
            nn.ReLU(),
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3),
            nn.InstanceNorm2d(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


class LineartGenerator(nn.Module):
    """The generator; the ``modelN`` groups and their layer indices are the file's tensor names."""

    def __init__(self, residual_blocks: int = 3) -> None:
        super().__init__()
        self.model0 = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(3, 64, 7), nn.InstanceNorm2d(64), nn.ReLU())
        self.model1 = nn.Sequential(  # two stride-2 steps down: 64 -> 128 -> 256 channels
            nn.Conv2d(64, 128, 3, stride=2, padding=1),
            nn.InstanceNorm2d(128),
            nn.ReLU(),
            nn.Conv2d(128, 256, 3, stride=2, padding=1),
            nn.InstanceNorm2d(256),
            nn.ReLU(),
        )
        self.model2 = nn.Sequential(*(_Residual(256) for _ in range(residual_blocks)))
        self.model3 = nn.Sequential(  # and two back up
            nn.ConvTranspose2d(256, 128, 3, stride=2, padding=1, output_padding=1),
            nn.InstanceNorm2d(128),
            nn.ReLU(),
            nn.ConvTranspose2d(128, 64, 3, stride=2, padding=1, output_padding=1),
            nn.InstanceNorm2d(64),
            nn.ReLU(),
        )
        self.model4 = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(64, 1, 7), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for group in (self.model0, self.model1, self.model2, self.model3, self.model4):
            x = group(x)
        return x


def drawing(model: LineartGenerator, image: Array) -> Array:
    """The network's own drawing (HxW ``uint8``: dark lines on white) of an RGB ``uint8`` image whose sides are
    multiples of 4."""
    with torch.inference_mode():
        line = model(as_batch(image, 255.0))[0, 0].numpy()
    return to_uint8(line)


def lines(model: LineartGenerator, image: Array) -> Array:
    """The ControlNet's input: the drawing inverted, white lines on black (the extension's "auto inversion")."""
    return 255 - drawing(model, image)
