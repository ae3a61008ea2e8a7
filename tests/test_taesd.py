"""TAESD live previews from ``models/VAE-approx``: the released file layout, per family, with a safe fallback.

The fixture decoder paints every latent one flat colour, so a preview shows which decoder drew it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.fixtures.tiny_models import make_taesd_decoder
from webui.pipeline.taesd import decoder_weights
from webui.service.factory import create_service
from webui.settings import Settings
from webui.types import GenerationRequest

SIZE = 64


def _previews(tmp_path: Path, checkpoint: Path) -> list[Image.Image]:
    """Every step's preview of one 3-step job, straight from the engine."""
    models = tmp_path / "models"
    (models / "Stable-diffusion").mkdir(parents=True, exist_ok=True)
    shutil.copy(checkpoint, models / "Stable-diffusion" / checkpoint.name)
    settings = Settings(models_dir=models, outputs_dir=tmp_path / "out", demo_model=False)
    service = create_service(settings, start=False)
    request = GenerationRequest.build(
        prompt="a red circle", steps=3, width=SIZE, height=SIZE, seed=1, save_images=False
    )
    shown: list[Image.Image] = []
    list(service.engine.generate(request, on_step=lambda info: shown.append(info.preview())))
    return shown


def _colours(images: list[Image.Image]) -> set[tuple[int, ...]]:
    return {tuple(int(c) for c in np.asarray(i).reshape(-1, 3).mean(axis=0).round()) for i in images}


def test_the_fixture_has_the_released_taesd_key_layout(tmp_path: Path) -> None:
    state = torch.load(make_taesd_decoder(tmp_path / "taesd_decoder.pth"), weights_only=True)
    # The released decoder: clamp (0, no weights), conv 1, 3 blocks at 3-5, upsample+conv (7, no bias) three
    # times, a last block at 18 and the RGB conv at 19.
    assert state["1.weight"].shape == (64, 4, 3, 3) and state["19.weight"].shape == (3, 64, 3, 3)
    assert "3.conv.4.bias" in state and "7.weight" in state and "7.bias" not in state and "0.weight" not in state
    from diffusers import AutoencoderTiny

    assert set(decoder_weights(state)) == set(AutoencoderTiny().decoder.state_dict())


@pytest.mark.parametrize("name", ["taesd_decoder.pth", "taesd_decoder.safetensors"])
def test_a_taesd_decoder_in_vae_approx_draws_the_sd_previews(tmp_path: Path, tiny_sd1_ckpt: Path, name: str) -> None:
    make_taesd_decoder(tmp_path / "models" / "VAE-approx" / name, colour=(1.0, 0.0, 0.0))
    shown = _previews(tmp_path, tiny_sd1_ckpt)
    assert len(shown) == 3
    assert all(image.size == (SIZE, SIZE) for image in shown)  # TAESD upsamples 8x itself
    assert _colours(shown) == {(255, 0, 0)}


def test_without_the_file_or_with_another_familys_file_the_cheap_preview_is_used(
    tmp_path: Path, tiny_sd1_ckpt: Path
) -> None:
    make_taesd_decoder(tmp_path / "models" / "VAE-approx" / "taesdxl_decoder.pth", colour=(1.0, 0.0, 0.0))
    shown = _previews(tmp_path, tiny_sd1_ckpt)
    assert len(shown) == 3 and all(image.size == (SIZE, SIZE) for image in shown)
    assert (255, 0, 0) not in _colours(shown)


def test_the_sdxl_decoder_serves_sdxl_models(tmp_path: Path, tiny_sdxl_ckpt: Path) -> None:
    make_taesd_decoder(tmp_path / "models" / "VAE-approx" / "taesdxl_decoder.pth", colour=(0.0, 0.0, 1.0))
    make_taesd_decoder(tmp_path / "models" / "VAE-approx" / "taesd_decoder.pth", colour=(1.0, 0.0, 0.0))
    assert _colours(_previews(tmp_path, tiny_sdxl_ckpt)) == {(0, 0, 255)}


def test_a_broken_taesd_file_falls_back_to_the_cheap_preview_and_the_job_runs(
    tmp_path: Path, tiny_sd1_ckpt: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broken = tmp_path / "models" / "VAE-approx" / "taesd_decoder.pth"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"not a checkpoint")
    shown = _previews(tmp_path, tiny_sd1_ckpt)
    assert len(shown) == 3 and (255, 0, 0) not in _colours(shown)
    assert "not a usable TAESD decoder" in caplog.text
