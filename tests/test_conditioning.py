"""Prompt conditioning in A1111's syntax, on tiny SD1, SD2 (OpenCLIP padding) and SDXL text encoders.

A plain prompt must encode exactly as diffusers encodes it (so nothing changes for users who write no syntax);
weights, long prompts, BREAK, prompt editing and alternation must change the conditioning where and when the
syntax says.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.fixtures.tiny_models import tiny_components
from webui.errors import InvalidRequest
from webui.prompts.conditioning import CHUNK, PromptEncoder, build_conditioning


def _pipe(family: str):
    import diffusers

    components = tiny_components(family, seed=0)
    if family == "sdxl":
        return diffusers.StableDiffusionXLPipeline(**components)
    extras = {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}
    return diffusers.StableDiffusionPipeline(**components, **extras)


@pytest.fixture(scope="module", params=["sd1", "sd2", "sdxl"])
def pipe(request: pytest.FixtureRequest):
    return _pipe(request.param)


def _encoder(pipe, clip_skip: int = 1) -> PromptEncoder:
    return PromptEncoder(pipe, sdxl=hasattr(pipe, "text_encoder_2"), clip_skip=clip_skip)


@pytest.mark.parametrize("prompt", ["a red circle", "", "a small green triangle in the top left on a white background"])
@pytest.mark.parametrize("clip_skip", [1, 2])
def test_a_plain_prompt_encodes_exactly_as_diffusers_does(pipe, prompt: str, clip_skip: int) -> None:
    sdxl = hasattr(pipe, "text_encoder_2")
    with torch.no_grad():
        ours = _encoder(pipe, clip_skip).encode(prompt)
        if sdxl:
            theirs, _, pooled, _ = pipe.encode_prompt(
                prompt, do_classifier_free_guidance=False, clip_skip=clip_skip - 1 or None
            )
            assert torch.equal(ours.pooled, pooled)
        elif clip_skip == 1:
            theirs, _ = pipe.encode_prompt(prompt, "cpu", 1, False)
        else:  # diffusers' SD clip-skip path needs text_model.final_layer_norm, gone in transformers 5: by hand
            tokens = pipe.tokenizer(prompt, padding="max_length", max_length=77, truncation=True, return_tensors="pt")
            hidden = pipe.text_encoder(tokens.input_ids, output_hidden_states=True).hidden_states[-clip_skip]
            theirs = pipe.text_encoder.final_layer_norm(hidden)
    assert ours.embeds.shape == (1, CHUNK + 2, theirs.shape[-1])
    assert torch.equal(ours.embeds, theirs)


def test_weights_scale_their_tokens_and_keep_the_mean(pipe) -> None:
    encoder = _encoder(pipe)
    with torch.no_grad():
        plain = encoder.encode("a red circle").embeds
        weighted = encoder.encode("a (red:1.5) circle").embeds
        bracket = encoder.encode("a [red] circle").embeds
    assert not torch.equal(plain, weighted) and not torch.equal(plain, bracket)
    assert torch.allclose(weighted.mean(), plain.mean(), atol=1e-5)  # A1111's emphasis normalisation
    assert torch.equal(encoder.encode("a (red:1) circle").embeds, plain)  # weight 1 is the plain prompt
    escaped = encoder.encode("a \\(red\\) circle").embeds  # literal brackets: tokens, not a weight
    assert not torch.equal(escaped, encoder.encode("a (red) circle").embeds)


def test_long_prompts_and_break_make_more_chunks(pipe) -> None:
    encoder = _encoder(pipe)
    long_prompt = ", ".join(["a red circle"] * 30)  # 4 tokens x 30 > 75
    with torch.no_grad():
        long = encoder.encode(long_prompt)
        split = encoder.encode("a red circle BREAK on a blue background")
        short = encoder.encode("a red circle")
    assert long.chunks == 2 and long.embeds.shape[1] == 2 * (CHUNK + 2)
    assert split.chunks == 2 and short.chunks == 1
    # The first chunk of "A BREAK B" is "A" alone.
    assert torch.equal(split.embeds[:, : CHUNK + 2], short.embeds)


def test_prompt_editing_and_alternation_switch_at_the_right_steps(pipe) -> None:
    encoder = _encoder(pipe)
    with torch.no_grad():
        edited = build_conditioning(encoder, "a [red:blue:4] circle", "", steps=10, count=2)
        alternating = build_conditioning(encoder, "a [red|blue] circle", "", steps=4, count=1)
        red = encoder.encode("a red circle").embeds
        blue = encoder.encode("a blue circle").embeds
    assert [r[0] for r in edited.ranges] == [4, 10]
    assert edited.ranges[0][1].shape[0] == 2  # batched for the batch size
    assert torch.equal(edited.ranges[0][1][:1], red) and torch.equal(edited.ranges[1][1][:1], blue)
    assert [edited.at(step) for step in (1, 4, 5, 10)] == [0, 0, 1, 1]
    assert [r[0] for r in alternating.ranges] == [1, 2, 3, 4]
    assert torch.equal(alternating.ranges[0][1], red) and torch.equal(alternating.ranges[1][1], blue)


def test_positive_and_negative_of_different_lengths_are_padded_alike(pipe) -> None:
    encoder = _encoder(pipe)
    with torch.no_grad():
        conditioning = build_conditioning(encoder, ", ".join(["a red circle"] * 30), "blurry", steps=5, count=1)
    ((_, positive, negative, *_),) = conditioning.ranges
    assert positive.shape == negative.shape and positive.shape[1] == 2 * (CHUNK + 2)


def test_malformed_prompts_name_their_field() -> None:
    encoder = _encoder(_pipe("sd1"))
    with pytest.raises(InvalidRequest, match=r"^negative_prompt: "):
        build_conditioning(encoder, "fine", "(" * 500 + "x", steps=5, count=1)


def test_editing_changes_the_image_mid_run_in_the_engine(tmp_path, tiny_sd1_ckpt) -> None:
    """End to end: ``[red:blue:N]`` lands between the all-red and the all-blue images, and N matters."""
    import shutil

    from webui.service.factory import create_service
    from webui.settings import Settings
    from webui.types import GenerationRequest

    (tmp_path / "models" / "Stable-diffusion").mkdir(parents=True)
    shutil.copy(tiny_sd1_ckpt, tmp_path / "models" / "Stable-diffusion" / "tiny.safetensors")
    service = create_service(Settings(models_dir=tmp_path / "models", outputs_dir=tmp_path / "out"))
    try:

        def run(prompt: str) -> np.ndarray:
            request = GenerationRequest.build(prompt=prompt, steps=6, width=64, height=64, seed=2, save_images=False)
            return np.asarray(service.generate(request, timeout=120).images[0].image, dtype=np.int16)

        red, blue = run("a red circle"), run("a blue circle")
        early, late = run("a [red:blue:2] circle"), run("a [red:blue:5] circle")
        assert (run("a [red:blue:6] circle") == red).all()  # switches after the last step: all red
        assert (run("a [red:blue:0] circle") == blue).all()  # switches before the first step: all blue
        for mixed in (early, late):
            assert not (mixed == red).all() and not (mixed == blue).all()
        assert np.abs(late - red).mean() < np.abs(early - red).mean()  # red for longer: closer to red
    finally:
        service.stop()
