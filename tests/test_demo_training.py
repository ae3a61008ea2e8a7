"""The demo model's data set, training script and latent normalisation: deterministic, loadable, exact."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from webui.demo import measure, scenes, train
from webui.pipeline.preview import PreviewProjection
from webui.weights import formats, loader, model_defaults


def test_the_data_set_is_the_same_for_a_seed_and_differs_across_seeds() -> None:
    a, scenes_a = scenes.dataset(16, seed=7)
    b, scenes_b = scenes.dataset(16, seed=7)
    c, _ = scenes.dataset(16, seed=8)
    assert a.shape == (16, 64, 64, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and scenes_a == scenes_b
    assert not np.array_equal(a, c)


def test_captions_are_plain_english_and_dropout_keeps_them_grammatical() -> None:
    scene = scenes.Scene("triangle", "green", "small", "in the top left", "white")
    assert scenes.caption(scene) == "a small green triangle in the top left on a white background"
    orange = scenes.Scene("circle", "orange", "large", "in the center", "orange", "blue")
    assert scenes.caption(orange).startswith("a large orange circle")
    assert scenes.caption(orange).endswith("on an orange and blue background")
    rng = random.Random(0)
    seen = {scenes.caption(orange, rng) for _ in range(300)}
    assert "" in seen  # the unconditional caption CFG needs
    assert "an orange circle" in seen
    assert all(text == "" or text.startswith(("a ", "an ")) for text in seen)
    assert all(" a orange" not in text and " an large" not in text for text in seen)


def test_measure_reads_rendered_scenes_correctly() -> None:
    rng = random.Random(11)
    checked = 0
    for _ in range(150):
        scene = scenes.random_scene(rng)
        if scene.background2 is not None:
            continue
        reading = measure.read(scenes.render(scene))
        assert (reading.shape, reading.background) == (scene.colour, scene.background), scene
        if scene.position != "in the center":
            assert reading.quadrant is not None and reading.quadrant in scene.position, scene
        checked += 1
    assert checked > 100


def test_folding_the_latent_normalisation_into_the_vae_keeps_its_output() -> None:
    config = train.TrainConfig(vae_channels=(32, 32), seed=3)
    vae = train.build_components(config)["vae"].eval()
    pixels, _ = scenes.dataset(32, seed=1)
    x = train._to_tensor(pixels)
    with torch.no_grad():
        before = vae.decode(vae.encode(x).latent_dist.mean).sample
        raw = train.encode_scenes(vae, pixels, config)
        scaled = train.normalise_latents(vae, raw)
        posterior = vae.encode(x).latent_dist
        after = vae.decode(posterior.mean).sample
    assert torch.allclose(before, after, atol=1e-4)
    assert torch.allclose(posterior.mean * vae.config.scaling_factor, scaled, atol=1e-4)
    assert abs(float(scaled.mean(dim=(0, 2, 3)).abs().max())) < 1e-4
    assert float(scaled.std()) == pytest.approx(1.0, abs=0.02)


def _micro_config() -> train.TrainConfig:
    return train.TrainConfig(
        vae_steps=3, vae_batch=4, unet_steps=4, unet_batch=4, scenes=64, warmup_steps=1, log_every=1, snapshot_every=2
    )


def test_the_training_script_is_reproducible_and_saves_a_checkpoint_the_normal_loader_runs(tmp_path: Path) -> None:
    from tools.train_demo_model import main

    lines: list[str] = []
    first, meta = train.train(_micro_config(), log=lines.append, snapshot_path=tmp_path / "snap.safetensors")
    path = train.save(first, meta, tmp_path / "demo.safetensors")
    assert any(line.startswith("[vae] step 3/3") for line in lines)
    assert any(line.startswith("[unet] step 4/4") and "eta" in line for line in lines)
    assert (tmp_path / "snap.safetensors").is_file()  # snapshot at step 2 of 4

    again, _ = train.train(_micro_config(), log=lambda _: None)
    for name in ("unet", "text_encoder", "vae"):
        for (key, a), b in zip(first[name].state_dict().items(), again[name].state_dict().values(), strict=True):
            assert torch.equal(a, b), f"{name}.{key} differs between two runs with the same seed"

    with safe_open(str(path), "pt") as f:
        keys = list(f.keys())
        assert all(f.get_slice(k).get_dtype() == "F16" for k in keys)
    assert any(k.startswith("model.diffusion_model.input_blocks.") for k in keys)
    assert any(k.startswith("cond_stage_model.transformer.text_model.") for k in keys)
    assert any(k.startswith("first_stage_model.encoder.") for k in keys)
    assert "v_pred" in keys  # A1111's marker of a v-prediction model, the recipe's default

    metadata = formats.read_metadata(path)
    assert model_defaults.from_metadata(metadata) == {
        "width": 64,
        "height": 64,
        "steps": 20,
        "cfg_scale": 3.0,
        "sampler_name": "Euler a",
    }
    assert json.loads(metadata["easel.training"])["config"]["seed"] == 1234
    assert PreviewProjection.from_metadata(metadata) is not None

    loaded = loader.load_single_file(path, formats.read_state_dict(path), torch.float32)
    assert loaded.arch.family == "sd1"
    assert loaded.components["scheduler"].config.prediction_type == "v_prediction"
    assert loaded.components["vae"].config.block_out_channels == [32, 64, 64]
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(
        **loaded.components, safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )
    image = pipe("a red circle", num_inference_steps=2, width=64, height=64, output_type="pil").images[0]
    assert image.size == (64, 64)

    # The command-line wrapper runs the same code end to end.
    assert main(["--quick", "--vae-steps", "2", "--unet-steps", "2", "--out", str(tmp_path / "quick.safetensors")]) == 0
    assert (tmp_path / "quick.safetensors").stat().st_size > 1_000_000


def test_model_defaults_take_only_sane_known_fields() -> None:
    found = model_defaults.from_metadata(
        {
            "modelspec.resolution": "1024x768",
            "easel.defaults": json.dumps({"steps": 30, "cfg_scale": 99, "width": 63, "prompt": "x", "sampler_name": 5}),
        }
    )
    assert found == {"width": 1024, "height": 768, "steps": 30}
    assert model_defaults.from_metadata({"easel.defaults": "not json"}) == {}


def test_resume_continues_the_unet_and_text_encoder_keeps_the_vae_and_records_both_runs(tmp_path: Path) -> None:
    from tools.train_demo_model import main

    first, meta = train.train(_micro_config(), log=lambda _: None)
    source = train.save(first, meta, tmp_path / "first.safetensors")
    out = tmp_path / "resumed.safetensors"
    recipe = ["--unet-steps", "3", "--unet-lr", "1e-3", "--blind-from", "950", "--snr-floor", "0.1"]
    recipe += ["--top-share", "0.5", "--prediction", "epsilon"]
    assert main(["--quick", "--resume", str(source), *recipe, "--out", str(out)]) == 0

    before, after = formats.read_state_dict(source), formats.read_state_dict(out)
    assert before.keys() - {"v_pred"} == after.keys() - {"v_pred"}
    vae_keys = [k for k in before if k.startswith("first_stage_model.")]
    unet_keys = [k for k in before if k.startswith("model.diffusion_model.")]
    assert vae_keys and all(torch.equal(before[k], after[k]) for k in vae_keys)
    assert any(not torch.equal(before[k], after[k]) for k in unet_keys)

    metadata, old = formats.read_metadata(out), formats.read_metadata(source)
    assert metadata["easel.preview"] == old["easel.preview"] and metadata["easel.defaults"] == old["easel.defaults"]
    stages = json.loads(metadata["easel.training"])["stages"]
    assert len(stages) == 2 and stages[0] == json.loads(old["easel.training"])
    assert stages[1]["resumed_from"] == "first.safetensors"
    assert stages[1]["config"]["blind_from"] == 950 and stages[1]["unet_steps_done"] == 3
    assert stages[1]["config"]["top_share"] == 0.5
    # The recipe's prediction type replaces the file's: the v model became an epsilon one.
    assert "v_pred" in before and "v_pred" not in after
    reloaded = loader.load_single_file(out, after, torch.float32)
    assert reloaded.components["scheduler"].config.prediction_type == "epsilon"


def test_blind_training_pairs_lead_the_samplers_formula_from_pure_noise_back_to_the_image() -> None:
    gen = torch.Generator().manual_seed(0)
    x0, noise = torch.randn((4, 4, 8, 8), generator=gen), torch.randn((4, 4, 8, 8), generator=gen)
    a = torch.tensor([0.9, 0.5, 0.01, 0.0047])[:, None, None, None]
    blind = torch.tensor([False, False, True, True])
    noisy, target = train.noised(x0, noise, a, blind, "epsilon")
    assert torch.allclose(noisy[:2], a[:2].sqrt() * x0[:2] + (1 - a[:2]).sqrt() * noise[:2])
    assert torch.equal(target[:2], noise[:2])
    assert torch.allclose(noisy[2:], (1 - a[2:]).sqrt() * noise[2:])  # nothing of the image in the input
    recovered = (noisy - (1 - a).sqrt() * target) / a.sqrt()  # what the sampler computes as x0
    assert torch.allclose(recovered, x0, atol=1e-4)


def test_v_training_pairs_lead_the_samplers_formula_back_to_the_image_blind_or_not() -> None:
    gen = torch.Generator().manual_seed(1)
    x0, noise = torch.randn((4, 4, 8, 8), generator=gen), torch.randn((4, 4, 8, 8), generator=gen)
    a = torch.tensor([0.9, 0.5, 0.01, 0.0047])[:, None, None, None]
    blind = torch.tensor([False, False, True, True])
    noisy, v = train.noised(x0, noise, a, blind, "v_prediction")
    assert torch.allclose(noisy[2:], (1 - a[2:]).sqrt() * noise[2:])
    assert torch.allclose(v[:2], a[:2].sqrt() * noise[:2] - (1 - a[:2]).sqrt() * x0[:2])
    recovered = a.sqrt() * noisy - (1 - a).sqrt() * v  # diffusers' x0 from a v prediction
    assert torch.allclose(recovered, x0, atol=1e-4)
    assert float((v[3] + x0[3]).abs().max()) < 0.3  # at t=999, v is nearly -x0: the layout itself
    with pytest.raises(ValueError, match="prediction"):
        train.noised(x0, noise, a, blind, "sample")


def test_loss_weights_are_min_snr_in_x0_space_with_a_floor_for_either_prediction() -> None:
    alphas = train.build_components(train.TrainConfig())["scheduler"].alphas_cumprod.float()
    snr = alphas / (1 - alphas)
    v = train.loss_weights(alphas, train.TrainConfig(prediction="v_prediction", snr_floor=1.0, min_snr_gamma=5.0))
    eps = train.loss_weights(alphas, train.TrainConfig(prediction="epsilon", snr_floor=0.0, min_snr_gamma=5.0))
    # Carried back to x0 space (v error = x0 error / sqrt(1 - a), eps error = x0 error * sqrt(SNR)):
    assert torch.allclose(v * (snr + 1), torch.clamp(snr, 1.0, 5.0), rtol=1e-4)
    assert torch.allclose(eps * snr, torch.clamp(snr, max=5.0), rtol=1e-4)
    # The layout-deciding top step: the floor weighs it ~200x more than plain min-SNR does.
    assert float(v[999]) > 0.99 and float(eps[999] * snr[999]) < 0.01


def test_a_share_of_each_batch_comes_from_the_top_timesteps() -> None:
    config = train.TrainConfig(blind_from=900, top_share=0.25)
    t = train.sample_timesteps(48, config, 1000, torch.Generator().manual_seed(0))
    assert t.shape == (48,) and bool((t[:12] >= 900).all()) and int(t.max()) < 1000
    assert int((t[12:] < 900).sum()) > 24  # the rest stay uniform
    none = train.sample_timesteps(48, train.TrainConfig(top_share=0.0), 1000, torch.Generator().manual_seed(0))
    assert int((none < 900).sum()) > 36
