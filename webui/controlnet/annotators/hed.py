"""HED soft edges (``softedge_hed``, ``softedge_hedsafe``, ``scribble_hed``) from ``ControlNetHED.pth``.

This is lllyasviel's Apache-2.0 re-implementation of HED (``ControlNetHED_Apache2``), the network the extension
downloads today as ``ControlNetHED.pth``; not the older ``network-bsds500.pth`` port of Xie's BGR Caffe model, whose
tensors are named ``moduleVggOne...`` and which Easel does not read. It takes RGB pixels in 0-255 and subtracts a
learned mean colour (``norm``). Five VGG-16 stages each give a one-channel side output; the edge map is the sigmoid
of their mean, each first scaled up to the input size.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from webui.controlnet.annotators.common import Array, as_batch, safe_step, to_uint8


class _Stage(nn.Module):
    """One VGG stage: (after a 2x2 max-pool, for all but the first) 3x3 convolutions with ReLU, and a 1x1
    ``projection`` of its output to one channel, the stage's side output."""

    def __init__(self, channels_in: int, channels: int, layers: int) -> None:
        super().__init__()
        self.convs = nn.Sequential(
            *(nn.Conv2d(channels_in if i == 0 else channels, channels, 3, padding=1) for i in range(layers))
        )
        self.projection = nn.Conv2d(channels, 1, 1)

    def forward(self, x: torch.Tensor, pool: bool) -> tuple[torch.Tensor, torch.Tensor]:
        if pool:
            x = F.max_pool2d(x, 2, 2)
        for conv in self.convs:
            x = F.relu(conv(x))
        return x, self.projection(x)


class HEDNetwork(nn.Module):
    """``ControlNetHED_Apache2``: tensor names ``norm``, ``blockN.convs.I.*``, ``blockN.projection.*`` (37 tensors)."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.Parameter(torch.zeros(1, 3, 1, 1))
        self.block1 = _Stage(3, 64, 2)
        self.block2 = _Stage(64, 128, 2)
        self.block3 = _Stage(128, 256, 3)
        self.block4 = _Stage(256, 512, 3)
        self.block5 = _Stage(512, 512, 3)

    def forward(self, rgb: torch.Tensor) -> list[torch.Tensor]:
        """Side outputs (logits) at 1, 1/2, 1/4, 1/8 and 1/16 of the input size, for RGB in 0-255."""
        x = rgb - self.norm
        sides = []
        for i, stage in enumerate((self.block1, self.block2, self.block3, self.block4, self.block5)):
            x, side = stage(x, pool=i > 0)
            sides.append(side)
        return sides


def edges(model: HEDNetwork, image: Array, safe: bool = False) -> Array:
    """The soft edge map (HxW ``uint8``, white edges) of an RGB ``uint8`` image whose sides are multiples of 16.

    As the extension: each side output is scaled up bilinearly with OpenCV, the five are averaged and put through a
    sigmoid in float64; ``safe`` quantises to three levels first."""
    h, w = image.shape[:2]
    with torch.inference_mode():
        sides = model(as_batch(image))
    stacked = np.stack(
        [cv2.resize(side[0, 0].numpy().astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR) for side in sides],
        axis=2,
    )
    edge = 1 / (1 + np.exp(-np.mean(stacked, axis=2).astype(np.float64)))
    return to_uint8(safe_step(edge) if safe else edge)
