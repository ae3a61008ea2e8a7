"""The demo networks' training script (``tools/train_demo_networks.py`` over ``webui.demo.train_networks``) runs end
to end at tiny settings, and what it saves is used by the real LoRA and embedding loaders on the demo model.

A couple of steps teach nothing, so what is checked is what retraining relies on: both files are written in the
layouts the loaders read, every trained layer attaches, the LoRA changes the picture, and the new word is learnt
by the tokenizer without being skipped.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.fixtures.services import fresh_install_service
from webui.outputs.infotext import parse_infotext
from webui.types import GenerationRequest
from webui.weights import formats

QUICK = ["--quick", "--scenes", "8", "--batch", "2", "--lora-steps", "2", "--embedding-steps", "2"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh install whose Lora and embeddings folders hold what a quick training run saved."""
    from tools.train_demo_networks import main

    root = tmp_path_factory.mktemp("networks")
    lora = root / "models" / "Lora" / "quickstripes.safetensors"
    embedding = root / "models" / "embeddings" / "quickviolet.safetensors"
    assert main([*QUICK, "--lora-out", str(lora), "--embedding-out", str(embedding)]) == 0
    return root


def _generate(service, prompt: str):
    request = GenerationRequest.build(
        prompt=prompt, seed=3, steps=4, width=64, height=64, cfg_scale=3.0, sampler_name="Euler a", save_images=False
    )
    result = service.generate(request, timeout=120)
    (image,) = result.images
    return np.asarray(image.image, dtype=np.int16), parse_infotext(image.infotext), result.notes


def test_the_script_saves_a_kohya_lora_and_an_embedding_with_their_training_record(trained) -> None:
    root = trained
    lora = formats.read_state_dict(root / "models" / "Lora" / "quickstripes.safetensors")
    assert lora and all(k.startswith("lora_unet_") for k in lora)
    assert {k.split(".", 1)[1] for k in lora} == {"lora_down.weight", "lora_up.weight", "alpha"}
    ups = [v for k, v in lora.items() if k.endswith(".lora_up.weight")]
    assert any(bool(v.abs().max() > 0) for v in ups)  # trained: peft starts every up matrix at zero
    record = json.loads(formats.read_metadata(root / "models" / "Lora" / "quickstripes.safetensors")["easel.training"])
    assert record["kind"] == "lora" and record["config"]["lora_steps"] == 2 and record["config"]["scenes"] == 8
    embedding = formats.read_state_dict(root / "models" / "embeddings" / "quickviolet.safetensors")
    assert list(embedding) == ["emb_params"] and embedding["emb_params"].shape[0] == 1


def test_the_real_loaders_use_what_the_script_saved_on_the_demo_model(trained) -> None:
    root = trained
    with fresh_install_service(root) as service:
        plain, _, _ = _generate(service, "a large red circle on a blue background")
        striped, info, notes = _generate(service, "a large red circle on a blue background <lora:quickstripes:1>")
        assert info["Lora hashes"].startswith("quickstripes: ") and notes == []
        assert np.abs(striped - plain).mean() > 1  # the adapter is on (two steps at full rate move it: ~6)
        model, loras = service.engine.weights.active, service.engine.weights.loras
        (adapter,) = model.lora_adapters
        trained_layers = sum(k.endswith(".lora_down.weight") for k in loras.read(loras.find("quickstripes")))
        wrapped = [m for m in model.components["unet"].modules() if adapter in getattr(m, "lora_A", {})]
        assert len(wrapped) == trained_layers > 100  # every attention projection and ResNet conv it trained

        _, info, notes = _generate(service, "a large quickviolet circle on a white background")
        assert info["TI hashes"].startswith("quickviolet: ") and notes == []
        assert "quickviolet" in model.embeddings and "quickviolet" not in service.engine.weights.embeddings.skipped
