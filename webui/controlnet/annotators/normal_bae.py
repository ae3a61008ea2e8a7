"""NormalBAE surface normals (``normal_bae``) from ``scannet.pt``: the network, its weights and its inference pass.

Bae, Budvytis and Cipolla, "Estimating and Exploiting the Aleatoric Uncertainty in Surface Normal Estimation" (ICCV
2021), the ScanNet-trained model with BatchNorm the extension runs (``NNET`` with ``architecture='BN'``). The encoder
is EfficientNet-B5 (``webui.controlnet.annotators.efficientnet``, under ``encoder.original_model``); the decoder
turns its 1/32 head back up with four ``UpSampleBN`` steps (``up1``-``up4``: bilinear scaling to the skip feature's
size, concatenation, two 3x3 conv + BN + leaky ReLU), predicts normals plus a concentration ``kappa`` at 1/8
(``out_conv_res8``), and refines them at 1/4, 1/2 and full size with per-pixel MLPs (``out_conv_resN``, 1x1 Conv1d
layers) that read the finer features and the coarser prediction, both doubled in size.

In training the refinement runs only on pixels picked by uncertainty-guided sampling; in the mode the extension
calls (the default ``mode='test'``) it runs on every pixel, which is all this module does. Each prediction goes
through ``norm_normalize``: x, y, z scaled to unit length (+1e-10), kappa = elu + 1.01.

``scannet.pt`` is the training script's checkpoint, ``{"model": state_dict, "iter": N}``, with ``module.`` prefixes
when it was saved from DataParallel: ``loading.network(..., wrapper="model")`` reads it (a flat state dict or a
safetensors conversion too).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from webui.controlnet.annotators.common import IMAGENET_MEAN, IMAGENET_STD, Array, as_batch
from webui.controlnet.annotators.efficientnet import EfficientNetB5


class _Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.original_model = EfficientNetB5()


class _UpSample(nn.Module):
    """``UpSampleBN``: ``x`` scaled bilinearly (corners aligned) to the skip feature's size, the two concatenated,
    then two 3x3 convolutions, each with BatchNorm and leaky ReLU (``_net.0``-``_net.5``)."""

    def __init__(self, channels_in: int, channels_out: int) -> None:
        super().__init__()
        self._net = nn.Sequential(
            nn.Conv2d(channels_in, channels_out, 3, padding=1),
            nn.BatchNorm2d(channels_out),
            nn.LeakyReLU(),
            nn.Conv2d(channels_out, channels_out, 3, padding=1),
            nn.BatchNorm2d(channels_out),
            nn.LeakyReLU(),
        )

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=True)
        return self._net(torch.cat([up, skip], dim=1))


def _pixel_mlp(channels_in: int) -> nn.Sequential:
    """A per-pixel MLP as 1x1 Conv1d layers: ``channels_in`` -> 128 -> 128 -> 128 -> 4, ReLU between."""
    return nn.Sequential(
        nn.Conv1d(channels_in, 128, 1),
        nn.ReLU(),
        nn.Conv1d(128, 128, 1),
        nn.ReLU(),
        nn.Conv1d(128, 128, 1),
        nn.ReLU(),
        nn.Conv1d(128, 4, 1),
    )


def norm_normalize(out: torch.Tensor) -> torch.Tensor:
    """x, y, z to unit length and kappa to elu(kappa) + 1.01, along dimension 1."""
    x, y, z, kappa = torch.split(out, 1, dim=1)
    norm = torch.sqrt(x**2.0 + y**2.0 + z**2.0) + 1e-10
    return torch.cat([x / norm, y / norm, z / norm, F.elu(kappa) + 1.0 + 0.01], dim=1)


class _Decoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv2 = nn.Conv2d(2048, 2048, 1)
        self.up1 = _UpSample(2048 + 176, 1024)
        self.up2 = _UpSample(1024 + 64, 512)
        self.up3 = _UpSample(512 + 40, 256)
        self.up4 = _UpSample(256 + 24, 128)
        self.out_conv_res8 = nn.Conv2d(512, 4, 3, padding=1)
        self.out_conv_res4 = _pixel_mlp(512 + 4)
        self.out_conv_res2 = _pixel_mlp(256 + 4)
        self.out_conv_res1 = _pixel_mlp(128 + 4)

    @staticmethod
    def _refine(mlp: nn.Sequential, features: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        """Every pixel at twice ``features``' size: its features and the coarser prediction, both scaled up
        bilinearly (corners aligned), through ``mlp``."""
        both = torch.cat(
            [
                F.interpolate(features, scale_factor=2, mode="bilinear", align_corners=True),
                F.interpolate(coarse, scale_factor=2, mode="bilinear", align_corners=True),
            ],
            dim=1,
        )
        b, c, h, w = both.shape
        return norm_normalize(mlp(both.view(b, c, -1))).view(b, 4, h, w)

    def forward(self, stages: list[torch.Tensor]) -> torch.Tensor:
        """The full-size prediction (B x 4 x H x W: unit normal, kappa) from the encoder's stage outputs and head."""
        half, quarter, eighth, sixteenth, head = stages[0], stages[1], stages[2], stages[4], stages[7]
        d1 = self.up1(self.conv2(head), sixteenth)
        d2 = self.up2(d1, eighth)
        d3 = self.up3(d2, quarter)
        d4 = self.up4(d3, half)
        out = norm_normalize(self.out_conv_res8(d2))
        out = self._refine(self.out_conv_res4, d2, out)
        out = self._refine(self.out_conv_res2, d3, out)
        return self._refine(self.out_conv_res1, d4, out)


class NormalBAE(nn.Module):
    """``NNET`` (BN decoder): tensors ``encoder.original_model.*`` and ``decoder.*``."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = _Encoder()
        self.decoder = _Decoder()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder.original_model(x))


def normals(model: NormalBAE, image: Array) -> Array:
    """Unit surface normals (HxWx3 float32: x, y, z) of an RGB ``uint8`` image whose sides are multiples of 32.

    As the extension: pixels / 255, ImageNet's mean subtracted and divided by its deviation, in float32."""
    batch = as_batch(image, divide_by=255.0)
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(1, 3, 1, 1)
    with torch.inference_mode():
        out = model((batch - mean) / std)
    return np.ascontiguousarray(out[0, :3].permute(1, 2, 0).numpy())
