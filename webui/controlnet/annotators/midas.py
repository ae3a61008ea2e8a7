"""MiDaS depth (``depth``, the extension's ``depth_midas``) from ``dpt_hybrid-midas-501f0c75.pt``.

MiDaS v3 DPT-Hybrid (Ranftl et al., Intel ISL, MIT): timm's ``vit_base_resnet50_384`` as the encoder and DPT's
reassemble and fusion heads as the decoder. The encoder is a ResNetV2-50 trunk cut after its third stage (weight-
standardised convolutions with TF "same" padding, GroupNorm of 32 groups), whose 1/16 features become the tokens of
a ViT-B (12 blocks, 768 wide, 12 heads) through a 1x1 projection; the position embeddings, learnt for 24x24 tokens
(384 px), are resized bilinearly to the image's grid. DPT reads four features: the ResNet's first two stages (1/4,
1/8) and ViT blocks 8 and 11 (the class token mixed back in by a learnt projection), brought to 1/16 and 1/32; the
fusion blocks (two residual units each, then 2x up) join them from coarse to fine, and the head gives one
non-negative inverse depth (bigger: nearer) per pixel.

The tensors keep the original module paths, ``pretrained.model...`` for timm's ViT (its ``head``, a 1000-class
classifier, is in the file though depth never uses it) and ``pretrained.act_postprocessN`` / ``scratch...`` for
DPT: 368 tensors. timm is not used: it imports torchvision, which breaks the CPU torch Easel installs.

As the extension (``annotator/midas``): the image at the preprocessor resolution, padded to multiples of 64, goes in
whole (not resized to 384), as RGB scaled to [-1, 1]; the map is the prediction less its minimum, over its maximum,
times 255.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from webui.controlnet.annotators.common import Array, as_batch

_WIDTH = 768  # the ViT's
_FEATURES = 256  # DPT's
_PATCH = 16  # pixels per token (the ResNet's stride)
_GRID = 24  # tokens per side the position embeddings were learnt for


def _pad_same(x: torch.Tensor, kernel: int, stride: int, value: float = 0.0) -> torch.Tensor:
    """TensorFlow's "SAME" padding (timm's ``pad_same``): the output has ceil(size / stride) pixels and the odd pixel
    of padding goes to the right and bottom."""
    pads = []
    for size in (x.shape[-1], x.shape[-2]):
        total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads, value=value) if any(pads) else x


class _StdConv(nn.Conv2d):
    """timm's ``StdConv2dSame``: each filter standardised (zero mean, unit variance, eps 1e-8) before use, no bias,
    "same" padding."""

    def __init__(self, channels_in: int, channels_out: int, kernel: int, stride: int = 1) -> None:
        super().__init__(channels_in, channels_out, kernel, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        var, mean = torch.var_mean(self.weight, dim=(1, 2, 3), keepdim=True, unbiased=False)
        weight = (self.weight - mean) / torch.sqrt(var + 1e-8)
        return F.conv2d(_pad_same(x, self.kernel_size[0], self.stride[0]), weight, None, self.stride)


def _group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, channels, eps=1e-5)


class _Projection(nn.Module):
    """The shortcut of a stage's first block: a 1x1 standardised convolution and GroupNorm (``downsample.*``)."""

    def __init__(self, channels_in: int, channels_out: int, stride: int) -> None:
        super().__init__()
        self.conv = _StdConv(channels_in, channels_out, 1, stride)
        self.norm = _group_norm(channels_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x))


class _Bottleneck(nn.Module):
    """ResNetV2's non-pre-activation bottleneck (as ResNet v1.5: the stride on the 3x3), ReLU after each norm but
    the last, which comes after the shortcut is added."""

    def __init__(self, channels_in: int, channels_out: int, stride: int, first: bool) -> None:
        super().__init__()
        middle = channels_out // 4
        self.downsample = _Projection(channels_in, channels_out, stride) if first else None
        self.conv1 = _StdConv(channels_in, middle, 1)
        self.norm1 = _group_norm(middle)
        self.conv2 = _StdConv(middle, middle, 3, stride)
        self.norm2 = _group_norm(middle)
        self.conv3 = _StdConv(middle, channels_out, 1)
        self.norm3 = _group_norm(channels_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.downsample(x) if self.downsample is not None else x
        y = F.relu(self.norm1(self.conv1(x)))
        y = F.relu(self.norm2(self.conv2(y)))
        return F.relu(self.norm3(self.conv3(y)) + shortcut)


class _Stage(nn.Module):
    def __init__(self, channels_in: int, channels_out: int, depth: int, stride: int) -> None:
        super().__init__()
        self.blocks = nn.Sequential(
            *(
                _Bottleneck(channels_in if i == 0 else channels_out, channels_out, stride if i == 0 else 1, i == 0)
                for i in range(depth)
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


class _Stem(nn.Module):
    """7x7 stride-2 standardised convolution to 64 channels, GroupNorm, ReLU, and a 3x3 stride-2 "same" max-pool."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = _StdConv(3, 64, 7, 2)
        self.norm = _group_norm(64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.norm(self.conv(x)))
        return F.max_pool2d(_pad_same(x, 3, 2, value=-math.inf), 3, 2)


class _ResNetTrunk(nn.Module):
    """ResNetV2-50's stem and first three stages (3, 4 and 9 blocks; 256, 512, 1024 channels; 1/4, 1/8, 1/16)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = _Stem()
        self.stages = nn.Sequential(_Stage(64, 256, 3, 1), _Stage(256, 512, 4, 2), _Stage(512, 1024, 9, 2))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        outputs = []
        for stage in self.stages:
            x = stage(x)
            outputs.append(x)
        return outputs


class _PatchEmbed(nn.Module):
    """timm's ``HybridEmbed``: the trunk's 1/16 features, one token per pixel through a 1x1 convolution."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = _ResNetTrunk()
        self.proj = nn.Conv2d(1024, _WIDTH, 1)


class _Attention(nn.Module):
    def __init__(self, heads: int = 12) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(_WIDTH, 3 * _WIDTH)
        self.proj = nn.Linear(_WIDTH, _WIDTH)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class _Mlp(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(_WIDTH, 4 * _WIDTH)
        self.fc2 = nn.Linear(4 * _WIDTH, _WIDTH)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class _Block(nn.Module):
    """A pre-norm transformer block (LayerNorm eps 1e-6)."""

    def __init__(self) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(_WIDTH, eps=1e-6)
        self.attn = _Attention()
        self.norm2 = nn.LayerNorm(_WIDTH, eps=1e-6)
        self.mlp = _Mlp()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class _HybridViT(nn.Module):
    """timm's ``vit_base_resnet50_384`` under its own names (``cls_token``, ``pos_embed``, ``patch_embed``,
    ``blocks``, ``norm``, ``head``). ``forward`` returns what DPT reads: the trunk's first two stages and the outputs
    of blocks 8 and 11 (the final ``norm`` and ``head`` are unused, as in MiDaS)."""

    def __init__(self) -> None:
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, _WIDTH))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + _GRID * _GRID, _WIDTH))
        self.patch_embed = _PatchEmbed()
        self.blocks = nn.Sequential(*(_Block() for _ in range(12)))
        self.norm = nn.LayerNorm(_WIDTH, eps=1e-6)
        self.head = nn.Linear(_WIDTH, 1000)

    def position_embeddings(self, rows: int, columns: int) -> torch.Tensor:
        """The class token's embedding and the 24x24 grid's, resized bilinearly (corners not aligned) to the image."""
        grid = self.pos_embed[:, 1:].reshape(1, _GRID, _GRID, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(rows, columns), mode="bilinear", align_corners=False)
        return torch.cat([self.pos_embed[:, :1], grid.permute(0, 2, 3, 1).reshape(1, rows * columns, -1)], dim=1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        rows, columns = x.shape[2] // _PATCH, x.shape[3] // _PATCH
        stages = self.patch_embed.backbone(x)
        tokens = self.patch_embed.proj(stages[-1]).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        tokens = tokens + self.position_embeddings(rows, columns)
        taps = []
        for i, block in enumerate(self.blocks):
            tokens = block(tokens)
            if i in (8, 11):
                taps.append(tokens)
        return [stages[0], stages[1], *taps]


class _ProjectReadout(nn.Module):
    """DPT's "project" readout: each token beside the class token, through Linear(1536, 768) and GELU."""

    def __init__(self) -> None:
        super().__init__()
        self.project = nn.Sequential(nn.Linear(2 * _WIDTH, _WIDTH), nn.GELU())

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        readout = tokens[:, :1].expand_as(tokens[:, 1:])
        return self.project(torch.cat([tokens[:, 1:], readout], dim=-1))


class _Reassemble(nn.Sequential):
    """``act_postprocess3``/``4``: readout, (transpose and unflatten, no weights), a 1x1 convolution to 768, and for
    block 11 a 3x3 stride-2 convolution to 1/32. Indices are the file's."""

    def __init__(self, downsample: bool) -> None:
        layers: list[nn.Module] = [_ProjectReadout(), nn.Identity(), nn.Identity(), nn.Conv2d(_WIDTH, _WIDTH, 1)]
        if downsample:
            layers.append(nn.Conv2d(_WIDTH, _WIDTH, 3, stride=2, padding=1))
        super().__init__(*layers)

    def reassemble(self, tokens: torch.Tensor, rows: int, columns: int) -> torch.Tensor:
        x = self[0](tokens).transpose(1, 2)
        x = x.reshape(x.shape[0], x.shape[1], rows, columns)
        for layer in list(self)[3:]:
            x = layer(x)
        return x


class _Encoder(nn.Module):
    """DPT's ``pretrained``: the hybrid ViT (``model``) and the reassembly of its last two taps."""

    def __init__(self) -> None:
        super().__init__()
        self.model = _HybridViT()
        self.act_postprocess3 = _Reassemble(downsample=False)
        self.act_postprocess4 = _Reassemble(downsample=True)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        rows, columns = x.shape[2] // _PATCH, x.shape[3] // _PATCH
        first, second, third, fourth = self.model(x)
        return [
            first,
            second,
            self.act_postprocess3.reassemble(third, rows, columns),
            self.act_postprocess4.reassemble(fourth, rows, columns),
        ]


class _ResidualUnit(nn.Module):
    """ReLU, 3x3, ReLU, 3x3, plus the input (the activations are not in place: the input is added back as is)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(_FEATURES, _FEATURES, 3, padding=1)
        self.conv2 = nn.Conv2d(_FEATURES, _FEATURES, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(F.relu(self.conv1(F.relu(x)))) + x


class _Fusion(nn.Module):
    """DPT's fusion block: the finer features through one residual unit added to the coarser path, a second unit,
    2x bilinear up (corners aligned), a 1x1 convolution. ``refinenet4`` starts the path, so its ``resConfUnit1`` is
    never used (its tensors are still in the file)."""

    def __init__(self) -> None:
        super().__init__()
        self.out_conv = nn.Conv2d(_FEATURES, _FEATURES, 1)
        self.resConfUnit1 = _ResidualUnit()
        self.resConfUnit2 = _ResidualUnit()

    def forward(self, path: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        if skip is not None:
            path = path + self.resConfUnit1(skip)
        path = F.interpolate(self.resConfUnit2(path), scale_factor=2, mode="bilinear", align_corners=True)
        return self.out_conv(path)


class _Head(nn.Sequential):
    """3x3 to 128, 2x bilinear up, 3x3 to 32, ReLU, 1x1 to 1, ReLU (``output_conv.0``, ``.2``, ``.4``)."""

    def __init__(self) -> None:
        super().__init__(
            nn.Conv2d(_FEATURES, _FEATURES // 2, 3, padding=1),
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True),
            nn.Conv2d(_FEATURES // 2, 32, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 1, 1),
            nn.ReLU(),
        )


class _Scratch(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer1_rn = nn.Conv2d(256, _FEATURES, 3, padding=1, bias=False)
        self.layer2_rn = nn.Conv2d(512, _FEATURES, 3, padding=1, bias=False)
        self.layer3_rn = nn.Conv2d(_WIDTH, _FEATURES, 3, padding=1, bias=False)
        self.layer4_rn = nn.Conv2d(_WIDTH, _FEATURES, 3, padding=1, bias=False)
        self.refinenet1 = _Fusion()
        self.refinenet2 = _Fusion()
        self.refinenet3 = _Fusion()
        self.refinenet4 = _Fusion()
        self.output_conv = _Head()


class DPTHybrid(nn.Module):
    """MiDaS v3 ``DPTDepthModel(backbone="vitb_rn50_384", non_negative=True)``: ``pretrained.*`` and ``scratch.*``
    (368 tensors)."""

    def __init__(self) -> None:
        super().__init__()
        self.pretrained = _Encoder()
        self.scratch = _Scratch()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Relative inverse depth, Bx H x W, for RGB in [-1, 1] whose sides are multiples of 32."""
        first, second, third, fourth = self.pretrained(x)
        s = self.scratch
        path = s.refinenet4(s.layer4_rn(fourth))
        path = s.refinenet3(path, s.layer3_rn(third))
        path = s.refinenet2(path, s.layer2_rn(second))
        path = s.refinenet1(path, s.layer1_rn(first))
        return s.output_conv(path).squeeze(1)


def depth_map(model: DPTHybrid, image: Array) -> Array:
    """The depth map (HxW ``uint8``, near bright) of an RGB ``uint8`` image whose sides are multiples of 32: the
    prediction shifted to start at 0, divided by its maximum, times 255 (a flat prediction gives black)."""
    with torch.inference_mode():
        depth = model(as_batch(image, 127.5, -1.0))[0]
    depth = depth - depth.min()
    peak = depth.max()
    if peak <= 0:
        return np.zeros(depth.shape, np.uint8)
    return (depth / peak * 255.0).clip(0, 255).numpy().astype(np.uint8)
