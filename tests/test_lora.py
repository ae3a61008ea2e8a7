"""LoRAs: kohya/A1111 files applied to the loaded model for one job and switched off after it.

The tiny checkpoint's LoRAs are random, so what is checked is what a user relies on: a LoRA changes the picture,
weight 0 and "after the job" are pixel-identical to no LoRA, the checkpoint is never reloaded, a LoRA for another
architecture is refused by name, and the infotext records ``Lora hashes`` as A1111 does.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from tests.fixtures.services import running_service
from tests.fixtures.tiny_models import make_lora
from webui.errors import EaselError, ModelNotFound
from webui.networks.lora import LoraUse
from webui.outputs.infotext import parse_infotext
from webui.service.factory import create_service
from webui.settings import Settings
from webui.types import GenerationRequest

SIZE = 64


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, tiny_sd1_ckpt: Path) -> Path:
    root = tmp_path_factory.mktemp("models")
    (root / "Stable-diffusion").mkdir()
    shutil.copy(tiny_sd1_ckpt, root / "Stable-diffusion" / "tiny.safetensors")
    loras = root / "Lora"
    make_lora(loras / "detail.safetensors", seed=1)
    make_lora(loras / "styles" / "other style.safetensors", seed=2)
    make_lora(loras / "old.pt", seed=3)
    make_lora(loras / "unet-only.safetensors", seed=4, text_encoder=False)
    make_lora(loras / "locon.safetensors", seed=10, conv=True, attention=False, text_encoder=False)  # convs only
    make_lora(loras / "diffusers-format.safetensors", seed=11, layout="peft")
    make_lora(loras / "kohya-same.safetensors", seed=11)  # the same weights in kohya's layout
    make_lora(loras / "xl-thing.safetensors", family="sdxl", seed=5)
    make_lora(loras / "sd15-thing.safetensors", seed=6, context_width=768)
    return root


@pytest.fixture(scope="module")
def service(models: Path, tmp_path_factory: pytest.TempPathFactory):
    with running_service(models, tmp_path_factory.mktemp("out")) as svc:
        yield svc


def _run(service, prompt: str = "a red circle", **fields):
    base = {"prompt": prompt, "steps": 2, "width": SIZE, "height": SIZE, "seed": 9, "save_images": False}
    result = service.generate(GenerationRequest.build(**{**base, **fields}), timeout=120)
    (image,) = result.images
    return np.asarray(image.image, dtype=np.int16), parse_infotext(image.infotext), result


def test_a_lora_changes_the_image_and_the_next_job_without_it_is_identical(service) -> None:
    before, info, _ = _run(service)
    model = service.engine.weights.active
    loaded_at = model.load_seconds
    with_lora, info, _ = _run(service, "a red circle <lora:detail:1>")
    assert np.abs(with_lora - before).mean() > 1
    hash12 = service.engine.weights.loras.short_hash(service.engine.weights.loras.find("detail"))
    assert info["Lora hashes"] == f"detail: {hash12}" and len(hash12) == 12
    after, info, _ = _run(service)
    assert (after == before).all() and "Lora hashes" not in info
    assert service.engine.weights.active is model and model.load_seconds == loaded_at  # never reloaded


def test_the_tag_is_not_sent_to_the_text_encoder(service) -> None:
    plain, _, _ = _run(service, "a red circle")
    zero, info, _ = _run(service, "a red circle <lora:detail:0>")
    assert (zero == plain).all()  # weight 0 and the tag gone from the text: the very same image
    assert info["Prompt"] == "a red circle <lora:detail:0>"  # the infotext keeps what the user wrote


def test_weights_scale_negative_weights_work_and_several_loras_add(service) -> None:
    plain, _, _ = _run(service)
    half, _, _ = _run(service, "a red circle <lora:detail:0.5>")
    full, _, _ = _run(service, "a red circle <lora:detail:1>")
    negative, _, _ = _run(service, "a red circle <lora:detail:-1>")
    both, info, _ = _run(service, "a red circle <lora:detail:1> <lora:other style:0.7>")
    assert 0 < np.abs(half - plain).mean() < np.abs(full - plain).mean()
    assert np.abs(negative - plain).mean() > 1 and np.abs(negative - full).mean() > 1
    assert np.abs(both - full).mean() > 1
    assert info["Lora hashes"].startswith("detail: ") and ", other style: " in info["Lora hashes"]


@pytest.mark.parametrize("name", ["old", "unet-only", "styles/other style", "locon"])
def test_pt_files_unet_only_loras_and_subfolder_names_load(service, name: str) -> None:
    plain, _, _ = _run(service)
    changed, _, _ = _run(service, f"a red circle <lora:{name}:1>")
    assert np.abs(changed - plain).mean() > 1


def test_a_diffusers_peft_lora_gives_the_same_image_as_the_same_weights_in_kohyas_layout(service) -> None:
    plain, _, _ = _run(service)
    peft, _, _ = _run(service, "a red circle <lora:diffusers-format:1>")
    kohya, _, _ = _run(service, "a red circle <lora:kohya-same:1>")
    assert np.abs(peft - plain).mean() > 1
    assert np.abs(peft - kohya).max() <= 1  # the same LoRA, two file layouts


def test_a_job_that_fails_with_a_lora_leaves_the_model_clean(service) -> None:
    plain, _, _ = _run(service)
    job = service.submit(GenerationRequest.build(
        prompt="a red circle <lora:detail:1>", steps=150, width=256, height=256, seed=9, save_images=False
    ))  # fmt: skip
    for progress in job.updates(timeout=60):
        if progress.step >= 2:
            service.cancel(job.id)
            break
    with pytest.raises(EaselError):
        job.wait(30)
    after, info, _ = _run(service)
    assert (after == plain).all() and "Lora hashes" not in info


def test_a_lora_for_another_architecture_is_refused_and_the_model_stays_clean(service) -> None:
    plain, _, _ = _run(service)
    with pytest.raises(EaselError, match=r"lora: xl-thing\.safetensors is an SDXL LoRA; the loaded model tiny"):
        _run(service, "a red circle <lora:xl-thing:1>")
    with pytest.raises(EaselError, match=r"lora: sd15-thing\.safetensors was made for SD1\.x; the loaded model"):
        _run(service, "a red circle <lora:detail:1> <lora:sd15-thing:1>")
    after, _, _ = _run(service)
    assert (after == plain).all()


def test_an_unknown_lora_is_refused_naming_the_field(service) -> None:
    with pytest.raises(ModelNotFound, match=r"^lora: 'missing' not found"):
        service.submit(GenerationRequest.build(prompt="x <lora:missing:1>", width=SIZE, height=SIZE, steps=1))


def test_applying_again_is_fast_because_the_adapter_stays_attached(service) -> None:
    engine = service.engine
    model = engine.weights.use("tiny.safetensors")
    pipe = engine.pipeline_for(model, GenerationRequest.build(prompt="x").mode)
    library = engine.weights.loras
    library.apply(model, pipe, [LoraUse("detail", 1.0)])
    library.deactivate(pipe)
    started = time.perf_counter()
    library.apply(model, pipe, [LoraUse("detail", 0.5)])
    library.deactivate(pipe)
    assert time.perf_counter() - started < 0.5


def test_an_sdxl_lora_applies_to_an_sdxl_model_with_both_text_encoders(tmp_path: Path, tiny_sdxl_ckpt: Path) -> None:
    (tmp_path / "models" / "Stable-diffusion").mkdir(parents=True)
    shutil.copy(tiny_sdxl_ckpt, tmp_path / "models" / "Stable-diffusion" / "xl.safetensors")
    make_lora(tmp_path / "models" / "Lora" / "xl-style.safetensors", family="sdxl", seed=7)
    make_lora(tmp_path / "models" / "Lora" / "xl-te-only.safetensors", family="sdxl", seed=8)
    settings = Settings(models_dir=tmp_path / "models", outputs_dir=tmp_path / "out", demo_model=False)
    service = create_service(settings)
    try:
        plain, _, _ = _run(service)
        styled, info, _ = _run(service, "a red circle <lora:xl-style:1>")
        te_only, _, _ = _run(service, "a red circle <lora:xl-style:1:0>")  # unet weight 0: text encoders only
        after, _, _ = _run(service)
        assert np.abs(styled - plain).mean() > 1 and info["Lora hashes"].startswith("xl-style: ")
        assert np.abs(te_only - plain).mean() > 0 and np.abs(te_only - styled).mean() > 0
        assert (after == plain).all()
    finally:
        service.stop()
