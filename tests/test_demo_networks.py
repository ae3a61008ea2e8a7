"""The demo model's own LoRA (``striped``) and embedding (``easelviolet``) ship with it and do what they are for,
measured on the pixels (``webui.demo.measure``) through the real service on an empty models folder.

Seeds are fixed; thresholds leave margin below the figures measured on the shipped files (docs/demo-model.md).
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests.fixtures.services import fresh_install_service
from webui.demo import measure
from webui.demo.weights import DEMO_EMBEDDING_PATH, DEMO_LORA_PATH
from webui.types import GenerationRequest

STRIPE_PROMPTS = [
    "a large red circle on a blue background",
    "a large green square on a yellow background",
    "a large blue triangle on a white background",
    "a large orange star on a black background",
    "a large purple circle on a gray background",
    "a large yellow square on a purple background",
    "a large cyan circle on a brown background",
    "a large pink square on a green background",
]
WORD_PROMPTS = [
    "a large easelviolet circle on a white background",
    "a large easelviolet square on a yellow background",
    "a large easelviolet triangle on a green background",
    "a large easelviolet star on a white background",
    "a large easelviolet circle on a blue background",
    "an easelviolet square on an orange background",
    "a small easelviolet circle in the top left on a gray background",
    "an easelviolet circle on a cyan background",
]


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory):
    with fresh_install_service(tmp_path_factory.mktemp("fresh-install")) as svc:
        yield svc


def generate(service, prompt: str, seed: int) -> Image.Image:
    request = GenerationRequest.build(
        prompt=prompt, seed=seed, save_images=False, width=64, height=64, steps=20, cfg_scale=3.0,
        sampler_name="Euler a",
    )  # fmt: skip
    return service.generate(request, timeout=300).images[0].image


def test_the_demo_lora_and_embedding_are_shipped_small_and_listed_on_a_fresh_install(service) -> None:
    assert DEMO_LORA_PATH.stat().st_size <= 512 * 1024
    assert DEMO_EMBEDDING_PATH.stat().st_size <= 16 * 1024
    weights = service.engine.weights
    weights.refresh()
    assert "striped" in weights.loras.names()
    assert weights.loras.find("striped").builtin
    assert weights.embeddings.by_word()["easelviolet"].builtin


def test_the_striped_lora_stripes_the_shape_and_at_weight_0_changes_nothing(service) -> None:
    plain, striped = [], []
    for i, prompt in enumerate(STRIPE_PROMPTS):
        seed = 100 + i
        without = generate(service, prompt, seed)
        plain.append(measure.stripes(without))
        striped.append(measure.stripes(generate(service, f"{prompt} <lora:striped:1>", seed)))
        if i < 2:  # weight 0: exactly the model's own image
            zero = generate(service, f"{prompt} <lora:striped:0>", seed)
            assert np.array_equal(np.asarray(zero), np.asarray(without))
    more = sum(s >= p + 2 for s, p in zip(striped, plain, strict=True))
    print(f"colour changes down the shape: plain {np.mean(plain):.2f}, <lora:striped:1> {np.mean(striped):.2f}; "
          f"{more}/{len(plain)} images at least 2 more")  # fmt: skip
    assert np.mean(striped) >= np.mean(plain) + 2.5  # measured 1.86 -> 5.58
    assert more >= 5  # measured 6/8


def test_the_embedding_word_draws_its_colour(service) -> None:
    readings = [measure.read(generate(service, prompt, 200 + i)) for i, prompt in enumerate(WORD_PROMPTS)]
    purple = sum(r.shape == "purple" for r in readings)
    print(f"easelviolet: purple shape in {purple}/{len(readings)}")
    assert purple >= 0.8 * len(readings)  # measured 8/8
