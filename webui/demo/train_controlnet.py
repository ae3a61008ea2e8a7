"""Training the demo model's canny ControlNet (``easel-demo-canny``) beside its frozen weights.

The ControlNet starts as a copy of the demo U-Net's input side (``ControlNetModel.from_unet``), with zero output
convolutions, as ControlNets are trained. Its conditioning embedding downsamples 4x (the demo VAE's factor; SD's
ControlNets downsample 8x). It learns from the procedural scenes (``webui.demo.scenes``) with the demo model's
recipe (v-prediction, min-SNR weights with a floor, the sampler's blind first step), conditioned on the scenes'
canny edge maps made by the very code a unit uses at generation (``webui.controlnet.detect``, default settings),
so training and use see the same maps.

Captions never say where the shape is and half of them are empty (as the original ControlNet training drops
prompts), so the position can only come from the edges: with the ControlNet, ``a red circle`` lands where the
edge map draws it. Saved in the original single-file layout the SD1.5 ControlNets have, and loaded by the same
code as users' files. Everything is drawn from the seed.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from webui.controlnet.detect import detect
from webui.controlnet.units import ControlNetUnit
from webui.demo import scenes, train, train_networks

Log = Callable[[str], None]

EMBEDDING_CHANNELS = (16, 32, 64)  # three widths: two stride-2 convolutions, the demo VAE's 4x


@dataclass
class ControlNetConfig:
    seed: int = 5151
    scenes: int = 6000
    batch: int = 32
    steps: int = 1500
    lr: float = 1e-3
    warmup_steps: int = 50
    empty_caption: float = 0.5  # share of captions dropped entirely
    blind_from: int = 999
    top_share: float = 0.05
    log_every: int = 50


def edge_maps(pixels: np.ndarray) -> np.ndarray:
    """Each scene's ControlNet input (float32 NxCxHxW in [0, 1]), made as a canny unit makes it."""
    unit = ControlNetUnit(module="canny", model="demo")
    size = pixels.shape[1]
    maps = [detect(unit, width=size, height=size, where="training", fallback_image=_image(p)).hint for p in pixels]
    return torch.from_numpy(np.stack(maps)).permute(0, 3, 1, 2).contiguous()


def _image(pixels: np.ndarray) -> Any:
    from PIL import Image

    return Image.fromarray(pixels)


def positionless_caption(scene: scenes.Scene, rng: random.Random, empty: float) -> str:
    """A caption without the position words (or nothing at all), so the edges are the only clue to where."""
    if rng.random() < empty:
        return ""
    return scenes.caption(dataclasses.replace(scene, position=""), rng).replace("  ", " ").strip()


def build(unet: Any) -> Any:
    """The ControlNet, initialised from the U-Net's input side as ControlNet training starts."""
    from diffusers import ControlNetModel

    return ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=EMBEDDING_CHANNELS)


def train_controlnet(
    config: ControlNetConfig, log: Log = print, components: dict[str, Any] | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Train the canny ControlNet; returns its original-layout state dict (fp16) and metadata to save with it."""
    from webui.weights.convert import controlnet_to_original

    started = time.perf_counter()
    torch.manual_seed(config.seed)
    components = components or train_networks.load_demo()
    unet, text_encoder = components["unet"], components["text_encoder"]
    log(f"rendering {config.scenes} scenes, their canny maps and latents")
    pixels, scene_list = scenes.dataset(config.scenes, config.seed + 1)
    hints = edge_maps(pixels)
    vae = components["vae"]
    latents = train.encode_scenes(vae, pixels, train.TrainConfig()) * vae.config.scaling_factor
    del pixels
    controlnet = build(unet).train()
    params = [p for p in controlnet.parameters() if p.requires_grad]
    log(f"ControlNet: {sum(p.numel() for p in params) / 1e6:.2f} M parameters")
    rng = random.Random(config.seed + 3)

    def captions(index: list[int]) -> list[str]:
        return [positionless_caption(scene_list[i], rng, config.empty_caption) for i in index]

    def encode(ids: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return text_encoder(ids)[0]

    def predict(noisy: torch.Tensor, t: torch.Tensor, context: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        down, mid = controlnet(noisy, t, encoder_hidden_states=context, controlnet_cond=hints[index], return_dict=False)
        return unet(
            noisy, t, encoder_hidden_states=context, down_block_additional_residuals=down,
            mid_block_additional_residual=mid,
        ).sample  # fmt: skip

    training_minutes = train_networks._fit(
        components, latents, captions, encode, params, config.steps, config.lr, config, "controlnet", log, predict
    )
    controlnet.eval()
    state = {k: v.to(torch.float16) for k, v in controlnet_to_original(controlnet).items()}
    minutes = (time.perf_counter() - started) / 60
    metadata = {
        "format": "pt",
        "modelspec.title": "Easel demo: canny ControlNet",
        "modelspec.description": "Puts the Easel demo model's shape where a canny edge map draws it.",
        "modelspec.architecture": "stable-diffusion-v1/controlnet",
        "easel.training": train_networks._record(
            config,
            minutes,
            training_minutes=round(training_minutes, 1),
            kind="controlnet",
        ),
    }
    return state, metadata
