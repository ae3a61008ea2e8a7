"""External VAEs: Automatic / None / a file, swapped in place without reloading the checkpoint, in the infotext.

The fixture VAEs are the tiny checkpoint's own VAE with the red output shifted, so which VAE decoded an image
shows in its red channel.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.fixtures.services import running_service
from tests.fixtures.tiny_models import make_vae
from webui.errors import EaselError, ModelLoadError, ModelNotFound
from webui.outputs.infotext import parse_infotext
from webui.types import GenerationRequest
from webui.weights.vae import AUTOMATIC, NONE, read_vae_weights

SIZE = 64


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, tiny_sd1_ckpt: Path) -> Path:
    root = tmp_path_factory.mktemp("models")
    (root / "Stable-diffusion").mkdir()
    shutil.copy(tiny_sd1_ckpt, root / "Stable-diffusion" / "tiny.safetensors")
    shutil.copy(tiny_sd1_ckpt, root / "Stable-diffusion" / "other.safetensors")
    vaes = root / "VAE"
    make_vae(vaes / "redder.safetensors", red=1.5)
    make_vae(vaes / "tiny.safetensors", red=-1.5)  # named like the checkpoint: Automatic picks it
    make_vae(vaes / "sub" / "diffusers-layout.safetensors", red=1.5, layout="diffusers")
    make_vae(vaes / "old.pt", red=1.5, layout="checkpoint")
    make_vae(vaes / "wide.safetensors", blocks=64)  # another shape: does not fit
    (vaes / "broken.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    return root


@pytest.fixture(scope="module")
def service(models: Path, tmp_path_factory: pytest.TempPathFactory):
    with running_service(models, tmp_path_factory.mktemp("out")) as svc:
        yield svc


def _run(service, **fields):
    base = {"prompt": "a red circle", "steps": 2, "width": SIZE, "height": SIZE, "seed": 3, "save_images": False}
    base["checkpoint"] = "tiny.safetensors"
    result = service.generate(GenerationRequest.build(**{**base, **fields}), timeout=120)
    (image,) = result.images
    return np.asarray(image.image, dtype=np.int16), parse_infotext(image.infotext)


def test_vae_list_offers_automatic_none_and_the_files(service) -> None:
    choices = service.engine.weights.vaes.choices()
    assert choices[:2] == [AUTOMATIC, NONE]
    assert set(choices[2:]) == {
        "broken.safetensors", "old.pt", "redder.safetensors", "sub/diffusers-layout.safetensors",
        "tiny.safetensors", "wide.safetensors",
    }  # fmt: skip


def test_a_chosen_vae_decodes_and_is_named_in_the_infotext_then_none_restores_the_pixels(service) -> None:
    baked, info = _run(service, vae=NONE)
    assert "VAE" not in info and "VAE hash" not in info
    model = service.engine.weights.active
    loaded_at = model.load_seconds
    redder, info = _run(service, vae="redder.safetensors")
    assert redder[..., 0].mean() > baked[..., 0].mean() + 20  # the shifted decoder shows in red
    assert np.abs(redder[..., 1:] - baked[..., 1:]).max() <= 1  # and nowhere else
    vae_info = service.engine.weights.vaes.registry.get("redder.safetensors")
    assert info["VAE"] == "redder.safetensors" and info["VAE hash"] == vae_info.sha256[:10]
    assert service.engine.weights.active is model and model.load_seconds == loaded_at  # no reload
    again, info = _run(service, vae=NONE)
    assert (again == baked).all()  # the checkpoint's own VAE is back, bit for bit
    assert "VAE" not in info


def test_automatic_uses_the_vae_named_like_the_checkpoint_else_the_baked_in_one(service) -> None:
    baked, _ = _run(service, vae=NONE)
    auto, info = _run(service, vae=AUTOMATIC)
    assert auto[..., 0].mean() < baked[..., 0].mean() - 20  # tiny.safetensors in VAE/ shifts red down
    assert info["VAE"] == "tiny.safetensors"
    other, info = _run(service, vae=AUTOMATIC, checkpoint="other.safetensors")
    assert (other == baked).all() and "VAE" not in info  # no VAE named "other": the baked-in one


def test_automatic_prefers_a_vae_beside_the_checkpoint(service, models: Path) -> None:
    beside = make_vae(models / "Stable-diffusion" / "other.vae.pt", red=1.5)
    try:
        pixels, info = _run(service, vae=AUTOMATIC, checkpoint="other.safetensors")
        baked, _ = _run(service, vae=NONE, checkpoint="other.safetensors")
        assert info["VAE"] == "other.vae.pt" and pixels[..., 0].mean() > baked[..., 0].mean() + 20
    finally:
        beside.unlink()


@pytest.mark.parametrize("name", ["sub/diffusers-layout.safetensors", "old.pt"])
def test_every_file_layout_decodes_like_the_original_layout(service, name: str) -> None:
    reference, _ = _run(service, vae="redder.safetensors")
    pixels, info = _run(service, vae=name)
    assert (pixels == reference).all() and info["VAE"] == name


def test_layouts_read_to_the_same_tensors(models: Path, service) -> None:
    config = dict(service.engine.weights.use("tiny.safetensors").components["vae"].config)
    original = read_vae_weights(models / "VAE" / "redder.safetensors", config)
    for name in ("sub/diffusers-layout.safetensors", "old.pt"):
        other = read_vae_weights(models / "VAE" / name, config)
        assert other.keys() == original.keys()
        assert all(torch.equal(other[k], original[k]) for k in original)


def test_a_vae_of_another_shape_or_a_broken_file_fails_the_job_and_the_model_keeps_its_vae(service) -> None:
    before, _ = _run(service, vae="redder.safetensors")
    with pytest.raises(EaselError, match=r"sd_vae: wide\.safetensors does not fit this model's VAE"):
        _run(service, vae="wide.safetensors")
    with pytest.raises(ModelLoadError, match=r"broken\.safetensors"):
        _run(service, vae="broken.safetensors")
    after, _ = _run(service, vae="redder.safetensors")
    assert (after == before).all()
    assert "broken.safetensors" in service.engine.weights.vaes.registry.errors


@pytest.mark.parametrize("name", ["missing.safetensors", "../Stable-diffusion/tiny.safetensors", "/etc/passwd"])
def test_an_unknown_vae_is_refused_at_submit_naming_the_field(service, name: str) -> None:
    request = GenerationRequest.build(prompt="x", width=SIZE, height=SIZE, steps=1, vae=name)
    with pytest.raises(ModelNotFound, match=r"^sd_vae: "):
        service.submit(request)
