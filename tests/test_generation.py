"""End to end through the real service, engine and loader, on tiny random-weight checkpoints in the original layout.

Random weights cannot draw a circle, so these tests check the mechanics on pixels: determinism, seeds,
paste-back, strength, files and errors. What images *mean* is tested on the demo model.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageFilter

from webui import samplers
from webui.errors import EaselError, GenerationFailed, InvalidRequest, ModelLoadError, ModelNotFound
from webui.images import decode_image
from webui.outputs.infotext import parse_infotext
from webui.service.factory import create_service
from webui.settings import Settings
from webui.types import GenerationRequest, Mode

SIZE = 64


@pytest.fixture(scope="module")
def models(tmp_path_factory, tiny_sd1_ckpt: Path, tiny_sd1_inpaint_ckpt: Path) -> Path:
    root = tmp_path_factory.mktemp("models")
    ckpts = root / "Stable-diffusion"
    ckpts.mkdir()
    shutil.copy(tiny_sd1_ckpt, ckpts / "a-tiny-sd1.safetensors")
    shutil.copy(tiny_sd1_inpaint_ckpt, ckpts / "b-tiny-sd1-inpaint.safetensors")
    return root


@pytest.fixture(scope="module")
def service(models: Path, tmp_path_factory):
    svc = create_service(Settings(models_dir=models, outputs_dir=tmp_path_factory.mktemp("outputs")))
    yield svc
    svc.stop()


def _run(service, **fields):
    base = {"prompt": "a red circle", "steps": 3, "width": SIZE, "height": SIZE, "seed": 7, "save_images": False}
    return service.generate(GenerationRequest.build(**{**base, **fields}), timeout=120)


def _pixels(result, index: int = 0) -> np.ndarray:
    return np.asarray(result.images[index].image, dtype=np.int16)


def _scene() -> Image.Image:
    image = Image.new("RGB", (SIZE, SIZE), (20, 40, 200))
    ImageDraw.Draw(image).ellipse((16, 16, 48, 48), fill=(220, 30, 30))
    return image


@pytest.mark.parametrize("sampler", samplers.sampler_names())
def test_every_sampler_runs_and_is_deterministic(service, sampler):
    first = _run(service, sampler_name=sampler)
    again = _run(service, sampler_name=sampler)
    assert first.images[0].image.size == (SIZE, SIZE)
    assert (_pixels(first) == _pixels(again)).all()


def test_another_seed_gives_another_image(service):
    assert np.abs(_pixels(_run(service, seed=1)) - _pixels(_run(service, seed=2))).mean() > 1


def test_schedule_types_change_the_sigmas_and_are_recorded(service):
    from webui.pipeline.schedulers import build_scheduler

    config = service.engine.weights.use(None).scheduler_config
    sigmas = {}
    for label in ("Karras", "Uniform", "Exponential"):
        scheduler = build_scheduler(config, "Euler", label, seed=1)
        scheduler.set_timesteps(10)
        sigmas[label] = scheduler.sigmas.numpy()
    assert sigmas["Karras"][0] == pytest.approx(sigmas["Uniform"][0], rel=1e-3)  # same range...
    assert np.abs(sigmas["Karras"][1:-1] - sigmas["Uniform"][1:-1]).max() > 0.1  # ...other spacing
    assert np.abs(sigmas["Exponential"][1:-1] - sigmas["Karras"][1:-1]).max() > 0.01
    result = _run(service, sampler_name="DPM++ 2M Karras")
    assert "Sampler: DPM++ 2M, Schedule type: Karras," in result.images[0].infotext


def test_batch_item_i_gets_seed_plus_i_and_matches_a_single_run(service):
    batch = _run(service, seed=100, batch_size=2, n_iter=2)
    assert [img.seed for img in batch.images] == [100, 101, 102, 103]
    for index, seed in enumerate([100, 101, 102, 103]):
        single = _run(service, seed=seed)
        assert np.abs(_pixels(batch, index) - _pixels(single)).max() <= 1, seed
        assert f"Seed: {seed}," in batch.images[index].infotext


def test_random_seed_is_recorded(service):
    result = _run(service, seed=-1, batch_size=2)
    first, second = (img.seed for img in result.images)
    assert first >= 0 and second == first + 1


def test_img2img_strength_moves_from_the_input_towards_the_prompt(service):
    engine = service.engine
    model = engine.weights.use(None)
    vae = model.components["vae"]
    # A random VAE neither reproduces its input nor encodes it sharply: make its posterior deterministic (logvar
    # -30) and compare with the VAE round trip of the input, which img2img converges to as strength goes to 0.
    # Its latents are also far smaller than a trained VAE's (std ~1/scaling_factor), so even the lowest noise
    # level would drown them: rescale encoder output by k and decoder input by 1/k, an exact reparametrisation.
    saved = {name: p.detach().clone() for name, p in vae.named_parameters() if "quant_conv" in name}
    pipe = engine.pipeline_for(model, Mode.IMG2IMG)
    with torch.no_grad():
        vae.quant_conv.weight[4:] = 0
        vae.quant_conv.bias[4:] = -30
        std = vae.encode(pipe.image_processor.preprocess(_scene())).latent_dist.mode().std()
        k = float(1.0 / (vae.config.scaling_factor * std))
        vae.quant_conv.weight[:4] *= k
        vae.quant_conv.bias[:4] *= k
        vae.post_quant_conv.weight /= k
    try:
        with torch.inference_mode():
            latents = vae.encode(pipe.image_processor.preprocess(_scene())).latent_dist.mode()
            roundtrip = engine._decode(pipe, model, latents * vae.config.scaling_factor, [])[0]
            roundtrip = np.asarray(roundtrip, dtype=np.int16)
        low = _run(service, mode="img2img", init_image=_scene(), denoising_strength=0.05, steps=20)
        high = _run(service, mode="img2img", init_image=_scene(), denoising_strength=1.0, steps=20)
    finally:
        with torch.no_grad():
            for name, param in vae.named_parameters():
                if name in saved:
                    param.copy_(saved[name])
    low_diff = np.abs(_pixels(low) - roundtrip).mean()
    high_diff = np.abs(_pixels(high) - roundtrip).mean()
    assert low_diff < 3, low_diff
    assert high_diff > 3 * low_diff, (low_diff, high_diff)


@pytest.mark.parametrize("fill", [0, 1, 2, 3])
@pytest.mark.parametrize("full_res", [False, True])
def test_inpaint_keeps_every_unmasked_pixel_identical(service, fill, full_res):
    image = _scene()
    mask = Image.new("L", (SIZE, SIZE), 0)
    ImageDraw.Draw(mask).rectangle((8, 8, 27, 27), fill=255)
    result = _run(
        service, mode="inpaint", init_image=image, mask=mask, mask_blur=2, inpainting_fill=fill,
        inpaint_full_res=full_res, inpaint_full_res_padding=4, denoising_strength=1.0,
    )  # fmt: skip
    out = _pixels(result)
    original = np.asarray(image, dtype=np.int16)
    blurred = np.asarray(mask.filter(ImageFilter.GaussianBlur(2)))
    outside = blurred == 0
    assert outside.sum() > SIZE * SIZE // 2
    assert (out[outside] == original[outside]).all()
    assert np.abs(out[12:24, 12:24] - original[12:24, 12:24]).mean() > 2  # the masked area did change


def test_inpaint_invert_mask_repaints_the_outside(service):
    image = _scene()
    mask = Image.new("L", (SIZE, SIZE), 0)
    ImageDraw.Draw(mask).rectangle((0, 0, 31, 63), fill=255)
    result = _run(service, mode="inpaint", init_image=image, mask=mask, mask_blur=0, inpainting_mask_invert=True)
    out, original = _pixels(result), np.asarray(image, dtype=np.int16)
    assert (out[:, :32] == original[:, :32]).all()
    assert np.abs(out[:, 32:] - original[:, 32:]).mean() > 2


def test_a_9_channel_inpainting_checkpoint_inpaints(service):
    image = _scene()
    mask = Image.new("L", (SIZE, SIZE), 0)
    ImageDraw.Draw(mask).rectangle((32, 32, 63, 63), fill=255)
    result = _run(service, mode="inpaint", init_image=image, mask=mask, mask_blur=0,
                  checkpoint="b-tiny-sd1-inpaint.safetensors")  # fmt: skip
    assert service.engine.weights.active.arch.inpaint
    out, original = _pixels(result), np.asarray(image, dtype=np.int16)
    assert (out[:32] == original[:32]).all()
    assert "Model: b-tiny-sd1-inpaint" in result.images[0].infotext
    # txt2img and img2img also work on an inpainting model (whole picture masked, as in A1111).
    assert _run(service, checkpoint="b-tiny-sd1-inpaint.safetensors").images[0].image.size == (SIZE, SIZE)
    assert _run(service, mode="img2img", init_image=image, checkpoint="b-tiny-sd1-inpaint.safetensors").images


def test_switching_modes_never_reloads_weights(service, monkeypatch):
    model = service.engine.weights.use("a-tiny-sd1.safetensors")
    unet = model.components["unet"]
    loads = []
    monkeypatch.setattr(service.engine.weights, "_load", lambda info: loads.append(info) or 1 / 0)
    image = _scene()
    mask = Image.new("L", (SIZE, SIZE), 0)
    mask.paste(255, (0, 0, 32, 32))
    _run(service, checkpoint="a-tiny-sd1.safetensors")
    _run(service, mode="img2img", init_image=image)
    _run(service, mode="inpaint", init_image=image, mask=mask)
    assert loads == []
    pipes = [service.engine.pipeline_for(model, mode) for mode in Mode]
    assert all(p.unet is unet for p in pipes)


def test_saved_png_has_infotext_in_a1111_folder_scheme(service):
    result = _run(service, save_images=True, seed=42, negative_prompt="blurry")
    (path,) = result.paths
    assert path.parent.parent.name == "txt2img-images" and path.name.endswith("-42.png")
    parsed = parse_infotext(Image.open(path).info["parameters"])
    assert parsed["Seed"] == 42 and parsed["Negative prompt"] == "blurry" and parsed["Size-1"] == SIZE
    assert parsed["Model"] == "a-tiny-sd1" and len(parsed["Model hash"]) == 10
    listed = service.engine.weights.checkpoints.get("a-tiny-sd1.safetensors")
    assert listed.title == f"a-tiny-sd1.safetensors [{parsed['Model hash']}]"


def test_vae_nan_in_half_precision_is_redecoded_in_fp32(service, monkeypatch):
    model = service.engine.weights.use("a-tiny-sd1.safetensors")
    vae = model.components["vae"]
    real_decode = vae.decode

    def flaky_decode(latents, *args, **kwargs):
        out = real_decode(latents.to(vae.dtype), *args, **kwargs)
        if vae.dtype != torch.float32:
            return (torch.full_like(out[0], float("nan")),)
        return out

    vae.to(torch.bfloat16)
    monkeypatch.setattr(vae, "decode", flaky_decode)
    result = _run(service, save_images=True)
    assert any("fp32" in note for note in result.notes)
    assert vae.dtype == torch.float32
    assert np.asarray(result.images[0].image).std() > 1  # not a black or flat image


def test_nan_that_fp32_cannot_fix_fails_and_saves_nothing(service, monkeypatch):
    model = service.engine.weights.use("a-tiny-sd1.safetensors")
    vae = model.components["vae"]
    monkeypatch.setattr(vae, "decode", lambda latents, *a, **k: (torch.full((1, 3, SIZE, SIZE), float("nan")),))
    before = set(service.settings.outputs_dir.rglob("*.png"))
    with pytest.raises(GenerationFailed, match="NaN"):
        _run(service, save_images=True)
    assert set(service.settings.outputs_dir.rglob("*.png")) == before
    monkeypatch.undo()
    assert _run(service).images


def test_interrupt_between_steps_on_the_real_engine(service):
    job = service.submit(GenerationRequest.build(prompt="x", steps=150, width=SIZE, height=SIZE, save_images=True))
    for progress in job.updates(timeout=60):
        if progress.step >= 2:
            service.cancel(job.id)
            break
    with pytest.raises(EaselError):
        job.wait(60)
    assert job.state == "cancelled" and job.progress.step < 150
    assert _run(service).images


def test_skip_drops_the_image_being_made_and_the_batch_count_goes_on(service):
    request = GenerationRequest.build(prompt="x", steps=40, n_iter=3, seed=21, width=SIZE, height=SIZE)
    job = service.submit(request)
    for progress in job.updates(timeout=60):
        if progress.image_index == 1 and progress.step >= 2:
            service.skip(job.id)
            break
    result = job.wait(120)
    assert [image.seed for image in result.images] == [21, 23]  # the second image (seed 22) was dropped
    assert "skipped image 2 of 3" in result.notes
    assert len(result.paths) == 2 and all(path.is_file() for path in result.paths)


@pytest.mark.parametrize(
    ("fields", "field_name"),
    [
        ({"width": 500}, "width"),
        ({"height": 4096}, "height"),
        ({"steps": 0}, "steps"),
        ({"steps": 1000}, "steps"),
        ({"cfg_scale": -1}, "cfg_scale"),
        ({"sampler_name": "Euler z"}, "sampler_name"),
        ({"scheduler": "Karras", "sampler_name": "DDIM"}, "scheduler"),
        ({"denoising_strength": 0, "mode": "img2img"}, "denoising_strength"),
        ({"mode": "img2img"}, "init_image"),
    ],
)
def test_bad_inputs_name_the_field_and_the_next_job_runs(service, fields, field_name):
    with pytest.raises(InvalidRequest) as err:
        _run(service, **fields)
    assert err.value.field == field_name
    assert _run(service).images


def test_mask_of_another_size_and_non_image_upload_are_refused(service):
    with pytest.raises(InvalidRequest) as err:
        _run(service, mode="inpaint", init_image=_scene(), mask=Image.new("L", (32, 32), 255))
    assert err.value.field == "mask" and "64x64" in str(err.value)
    with pytest.raises(InvalidRequest) as err:
        decode_image(b"%PDF-1.7 not an image", "init_image")
    assert err.value.field == "init_image"
    assert _run(service).images


def test_unknown_checkpoint_is_refused_before_queueing(service):
    with pytest.raises(ModelNotFound, match="checkpoint"):
        _run(service, checkpoint="nope.safetensors")
    with pytest.raises(ModelNotFound):
        _run(service, checkpoint="../../etc/passwd")


def test_broken_files_fail_with_their_name_and_the_loaded_model_stays(service, models):
    folder = models / "Stable-diffusion"
    good = (folder / "a-tiny-sd1.safetensors").read_bytes()
    (folder / "c-truncated.safetensors").write_bytes(good[: len(good) // 2])
    import pickle

    (folder / "d-pickle.safetensors").write_bytes(pickle.dumps({"a": 1}))
    service.engine.weights.refresh()
    loaded = service.engine.weights.use("a-tiny-sd1.safetensors")
    try:
        for name in ("c-truncated.safetensors", "d-pickle.safetensors"):
            with pytest.raises(ModelLoadError) as err:
                _run(service, checkpoint=name)
            assert name in str(err.value)
            assert service.engine.weights.active is loaded
            assert name in service.engine.weights.checkpoints.errors
        assert _run(service).images  # the loaded model still works
        assert len(service.engine.weights.checkpoints.list()) == 5  # every file, and the built-in demo model
    finally:
        for name in ("c-truncated.safetensors", "d-pickle.safetensors"):
            (folder / name).unlink()
        service.engine.weights.refresh()


def test_switching_the_checkpoint_loads_it_on_the_worker_and_reports_failures(service, models):
    folder = models / "Stable-diffusion"
    info = service.load_checkpoint("b-tiny-sd1-inpaint.safetensors").wait(120)
    assert info.name == "b-tiny-sd1-inpaint.safetensors"
    assert service.engine.weights.active.info.path == folder / "b-tiny-sd1-inpaint.safetensors"
    with pytest.raises(ModelNotFound):
        service.load_checkpoint("no-such-model")  # refused before it is queued
    good = (folder / "a-tiny-sd1.safetensors").read_bytes()
    (folder / "e-truncated.safetensors").write_bytes(good[: len(good) // 3])
    service.engine.weights.refresh()
    try:
        job = service.load_checkpoint("e-truncated.safetensors")
        with pytest.raises(ModelLoadError, match=r"e-truncated\.safetensors"):
            job.wait(120)
        assert job.state == "failed"
        assert service.engine.weights.active.info.name == "b-tiny-sd1-inpaint.safetensors"  # the old one stays
    finally:
        (folder / "e-truncated.safetensors").unlink()
        service.engine.weights.refresh()
    assert service.load_checkpoint("a-tiny-sd1.safetensors").wait(120).name == "a-tiny-sd1.safetensors"


@pytest.mark.parametrize(
    "fixture", ["tiny_sd2_v_ckpt", "tiny_sdxl_ckpt", "tiny_sdxl_inpaint_ckpt", "tiny_sd1_diffusers"]
)
def test_other_architectures_generate_through_the_service(request, tmp_path, fixture):
    source: Path = request.getfixturevalue(fixture)
    ckpts = tmp_path / "models" / "Stable-diffusion"
    ckpts.mkdir(parents=True)
    if source.is_dir():
        shutil.copytree(source, ckpts / source.name)
    else:
        shutil.copy(source, ckpts / source.name)
    svc = create_service(Settings(models_dir=tmp_path / "models", outputs_dir=tmp_path / "out"))
    try:
        image = _scene()
        mask = Image.new("L", (SIZE, SIZE), 0)
        mask.paste(255, (0, 0, 32, 32))
        txt = _run(svc, save_images=True)
        inpaint = _run(svc, mode="inpaint", init_image=image, mask=mask, mask_blur=0)
        img2img = _run(svc, mode="img2img", init_image=image, denoising_strength=0.5)
        assert "Clip skip: 2" in _run(svc, clip_skip=2).images[0].infotext
        arch = svc.engine.weights.active.arch
        expected = {"tiny_sd2_v_ckpt": "sd2", "tiny_sdxl_ckpt": "sdxl", "tiny_sdxl_inpaint_ckpt": "sdxl"}
        assert arch.family == expected.get(fixture, "sd1")
        if fixture == "tiny_sd2_v_ckpt":
            assert arch.prediction == "v_prediction"
            assert svc.engine.weights.active.scheduler_config["prediction_type"] == "v_prediction"
        assert txt.paths[0].exists() and img2img.images[0].image.size == (SIZE, SIZE)
        out, original = _pixels(inpaint), np.asarray(image, dtype=np.int16)
        assert (out[32:] == original[32:]).all()
    finally:
        svc.stop()


def test_clip_skip_changes_the_conditioning_and_is_recorded(service):
    plain = _run(service, clip_skip=1)
    skipped = _run(service, clip_skip=2)
    assert np.abs(_pixels(plain) - _pixels(skipped)).mean() > 0.5
    assert "Clip skip: 2" in skipped.images[0].infotext and "Clip skip" not in plain.images[0].infotext


def test_out_of_memory_mid_denoise_fails_clearly_and_the_next_job_runs(service, monkeypatch):
    unet = service.engine.weights.use("a-tiny-sd1.safetensors").components["unet"]
    real_forward = unet.forward
    calls = []

    def oom_at_step_2(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_forward(*args, **kwargs)

    monkeypatch.setattr(unet, "forward", oom_at_step_2)
    job = service.submit(GenerationRequest.build(prompt="x", steps=5, width=SIZE, height=SIZE, save_images=False))
    queued_behind = service.submit(GenerationRequest.build(prompt="y", steps=2, width=SIZE, height=SIZE, seed=1))
    with pytest.raises(GenerationFailed, match="out of memory"):
        job.wait(60)
    assert job.state == "failed" and "--memory-mode" in job.progress.message
    assert queued_behind.wait(60).paths  # the other queued job still ran
    monkeypatch.undo()
    assert _run(service).images


def test_generation_never_touches_the_network(service, monkeypatch):
    import socket

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    service.engine.weights.refresh()
    assert _run(service, checkpoint="b-tiny-sd1-inpaint.safetensors").images  # a fresh load, then a generation
    assert _run(service, checkpoint="a-tiny-sd1.safetensors", mode="img2img", init_image=_scene()).images


@pytest.mark.parametrize(("cache", "how"), [(0, "flag"), (1, "flag"), (1, "settings tab")])
def test_checkpoint_ram_cache_makes_switching_back_free(tmp_path, tiny_sd1_ckpt, tiny_sd2_ckpt, cache, how):
    ckpts = tmp_path / "models" / "Stable-diffusion"
    ckpts.mkdir(parents=True)
    shutil.copy(tiny_sd1_ckpt, ckpts / "one.safetensors")
    shutil.copy(tiny_sd2_ckpt, ckpts / "two.safetensors")
    flag = cache if how == "flag" else 0
    svc = create_service(Settings(models_dir=tmp_path / "models", outputs_dir=tmp_path / "out", ckpt_cache=flag))
    if how == "settings tab":
        svc.update_preferences(ckpt_cache=cache)  # saved with the other settings, applied at once
    weights = svc.engine.weights
    assert weights.ram_cache == cache
    loads: list[str] = []
    real_load = weights._load
    weights._load = lambda info: loads.append(info.name) or real_load(info)
    try:
        first = _pixels(_run(svc, checkpoint="one.safetensors"))
        unet = weights.active.components["unet"]
        _run(svc, checkpoint="two.safetensors")
        assert [i.name for i in weights.parked] == (["one.safetensors"] if cache else [])
        again = _pixels(_run(svc, checkpoint="one.safetensors"))
        assert (first == again).all()
        if cache:
            assert loads == ["one.safetensors", "two.safetensors"]
            assert weights.active.components["unet"] is unet
            assert [i.name for i in weights.parked] == ["two.safetensors"]
        else:
            assert loads == ["one.safetensors", "two.safetensors", "one.safetensors"]
    finally:
        svc.stop()
