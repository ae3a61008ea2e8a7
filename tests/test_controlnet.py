"""ControlNet units through the real service: tiny ControlNets saved in every layout users download.

The tiny ControlNets are random, so what is checked is what a user relies on: a unit changes the image, weight 0
or a disabled unit is pixel-identical to no ControlNet, the guidance window runs the steps it says, two units
add, control modes differ, every mode (txt2img, img2img, inpaint) takes units, a ControlNet for another base
model is refused naming both, and the infotext records each unit as the SD-WebUI extension writes it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.fixtures.services import running_service
from tests.fixtures.tiny_controlnets import LAYOUTS, make_controlnet, tiny_controlnet
from tests.fixtures.tiny_models import tiny_components
from webui.controlnet.models import check_fits, load_controlnet
from webui.controlnet.units import ControlNetUnit, units_from_infotext
from webui.errors import EaselError, InvalidRequest, ModelLoadError, ModelNotFound
from webui.outputs.infotext import parse_infotext
from webui.types import GenerationRequest

SIZE = 64
STEPS = 8


def _control_image() -> Image.Image:
    """A white square on black: a map the tiny ControlNet reacts to."""
    pixels = np.zeros((SIZE, SIZE, 3), dtype=np.uint8)
    pixels[16:48, 16:48] = 255
    return Image.fromarray(pixels)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, tiny_sd1_ckpt: Path, tiny_sdxl_ckpt: Path) -> Path:
    root = tmp_path_factory.mktemp("models")
    (root / "Stable-diffusion").mkdir()
    shutil.copy(tiny_sd1_ckpt, root / "Stable-diffusion" / "tiny.safetensors")
    shutil.copy(tiny_sdxl_ckpt, root / "Stable-diffusion" / "tiny-xl.safetensors")
    control = root / "ControlNet"
    make_controlnet(control, "sd1", layout="ldm", seed=1, name="control_tiny_canny.safetensors")
    make_controlnet(control, "sd1", layout="ldm", seed=2, name="control_tiny_other.safetensors")
    make_controlnet(control, "sd1", layout="folder", seed=1, name="control_tiny_folder")
    make_controlnet(control, "sdxl", layout="diffusers", seed=1, name="control_tiny_xl.safetensors")
    return root


@pytest.fixture(scope="module")
def service(models: Path, tmp_path_factory: pytest.TempPathFactory):
    with running_service(models, tmp_path_factory.mktemp("out")) as svc:
        yield svc


def _unit(**fields) -> dict:
    return {"model": "control_tiny_canny", "image": _control_image(), **fields}


def _run(service, *, units=(), checkpoint="tiny.safetensors", **fields):
    base = {
        "prompt": "a red circle",
        "steps": STEPS,
        "width": SIZE,
        "height": SIZE,
        "seed": 3,
        "cfg_scale": 5,
        "save_images": False,
        "checkpoint": checkpoint,
    }
    request = GenerationRequest.build(**{**base, **fields, "controlnet_units": list(units)})
    result = service.generate(request, timeout=120)
    image = result.images[0]
    return np.asarray(image.image, dtype=np.int16), parse_infotext(image.infotext), result


def _count_steps(service, name: str) -> list[int]:
    """Hook the loaded ControlNet's forward to record the U-Net calls it took part in (one per step with Euler)."""
    calls: list[int] = []
    library = service.engine.weights.controlnets
    info = library.find(name)
    _stamp, loaded = library._loaded[info.path]
    handle = loaded.model.register_forward_hook(lambda *_: calls.append(1))
    return calls, handle


# -- loading ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_layout_loads_the_same_weights(tmp_path: Path, family: str, layout: str) -> None:
    reference = tiny_controlnet(family, seed=4)
    path = make_controlnet(tmp_path, family, layout=layout, seed=4)
    base = dict(tiny_components(family)["unet"].config)
    loaded = load_controlnet(path, base, torch.float32)
    want, got = reference.state_dict(), loaded.state_dict()
    assert want.keys() == got.keys()
    assert all(torch.equal(want[k], got[k]) for k in want)
    assert loaded.config.cross_attention_dim == reference.config.cross_attention_dim


def test_a_controlnet_for_another_architecture_is_refused_naming_both(tmp_path: Path) -> None:
    path = make_controlnet(tmp_path, "sdxl", layout="diffusers", name="xl-canny.safetensors")
    base = dict(tiny_components("sd1")["unet"].config)
    with pytest.raises(ModelLoadError) as info:
        load_controlnet(path, base, torch.float32)
    message = str(info.value)
    assert "xl-canny.safetensors" in message and "64-wide" in message and "32-wide" in message
    # With real models' widths the families are named as users know them.
    with pytest.raises(ModelLoadError, match=r"ControlNet for SDXL, but the loaded checkpoint is SD1\.x"):
        check_fits(path, 2048, [320, 640, 1280], {"cross_attention_dim": 768, "block_out_channels": [320, 640]})
    with pytest.raises(ModelLoadError, match=r"block widths \[32, 64\]"):
        check_fits(path, 768, [32, 64], {"cross_attention_dim": 768, "block_out_channels": [320, 640, 1280, 1280]})


def test_files_that_are_not_controlnets_are_named(tmp_path: Path, tiny_sd1_ckpt: Path) -> None:
    base = dict(tiny_components("sd1")["unet"].config)
    with pytest.raises(ModelLoadError, match="Stable Diffusion checkpoint, not a ControlNet"):
        load_controlnet(tiny_sd1_ckpt, base, torch.float32)
    junk = tmp_path / "junk.safetensors"
    from safetensors.torch import save_file

    save_file({"something.weight": torch.zeros(2)}, str(junk))
    with pytest.raises(ModelLoadError, match="not a ControlNet"):
        load_controlnet(junk, base, torch.float32)


# -- units in generation ----------------------------------------------------------------------------------


def test_a_unit_changes_the_image_and_weight_0_or_disabled_is_identical_to_none(service) -> None:
    plain, info, _ = _run(service)
    controlled, info_c, _ = _run(service, units=[_unit()])
    assert np.abs(controlled - plain).mean() > 2
    assert "ControlNet 0" in info_c and "ControlNet 0" not in info
    weightless, _, _ = _run(service, units=[_unit(weight=0)])
    disabled, info_d, _ = _run(service, units=[_unit(enabled=False)])
    assert (weightless == plain).all() and (disabled == plain).all()
    assert "ControlNet 0" not in info_d
    after, _, _ = _run(service)
    assert (after == plain).all()  # the hook is gone after the job


def test_the_infotext_names_the_unit_as_the_extension_does_and_reads_back(service) -> None:
    unit = _unit(module="canny", threshold_a=50, weight=0.8, guidance_end=0.5, control_mode=1, processor_res=256)
    _, info, _ = _run(service, units=[unit])
    title = service.engine.weights.controlnets.find("control_tiny_canny").title
    assert info["ControlNet 0"] == (
        f"Module: canny, Model: {title}, Weight: 0.8, Resize Mode: Crop and Resize, Processor Res: 256, "
        "Threshold A: 50.0, Threshold B: 200.0, Guidance Start: 0.0, Guidance End: 0.5, Pixel Perfect: False, "
        "Control Mode: My prompt is more important"
    )
    (fields,) = units_from_infotext(info)
    restored = ControlNetUnit(**fields, image=_control_image())
    assert restored.weight == 0.8 and restored.guidance_end == 0.5 and restored.threshold_a == 50
    assert restored.control_mode.value == "My prompt is more important" and restored.processor_res == 256
    assert service.engine.weights.controlnets.find(restored.model).name == "control_tiny_canny.safetensors"


def test_the_guidance_window_runs_the_steps_it_names(service) -> None:
    _run(service, units=[_unit()])  # loaded, so its forward can be watched
    calls, handle = _count_steps(service, "control_tiny_canny")
    try:
        _run(service, units=[_unit(guidance_start=0.25, guidance_end=0.75)])
        assert len(calls) == STEPS // 2  # steps 2..5 of 8 (Euler a: one U-Net call per step, CFG batched)
        calls.clear()
        _run(service, units=[_unit()])
        assert len(calls) == STEPS
        calls.clear()
        _run(service, units=[_unit(guidance_start=0.5, guidance_end=0.5)])
        assert calls == []
    finally:
        handle.remove()


def test_two_units_add_and_control_modes_differ(service) -> None:
    one, _, _ = _run(service, units=[_unit()])
    other, _, _ = _run(service, units=[_unit(model="control_tiny_other")])
    both, info, _ = _run(service, units=[_unit(), _unit(model="control_tiny_other")])
    assert np.abs(both - one).mean() > 1 and np.abs(both - other).mean() > 1
    assert "ControlNet 0" in info and "control_tiny_other" in info["ControlNet 1"]
    prompt_first, _, _ = _run(service, units=[_unit(control_mode="My prompt is more important")])
    control_first, _, _ = _run(service, units=[_unit(control_mode="ControlNet is more important")])
    assert np.abs(prompt_first - one).mean() > 0.5 and np.abs(control_first - one).mean() > 0.5
    assert np.abs(control_first - prompt_first).mean() > 0.5


def test_a_diffusers_folder_controlnet_matches_the_same_weights_in_one_file(service) -> None:
    single, _, _ = _run(service, units=[_unit()])
    folder, _, _ = _run(service, units=[_unit(model="control_tiny_folder")])
    assert (single == folder).all()


def test_img2img_and_inpaint_take_units_and_can_use_their_input_as_the_control_image(service) -> None:
    source = _control_image()
    plain, _, _ = _run(service, mode="img2img", init_image=source, denoising_strength=0.8)
    controlled, info, _ = _run(
        service, mode="img2img", init_image=source, denoising_strength=0.8, units=[_unit(image=None)]
    )
    explicit, _, _ = _run(service, mode="img2img", init_image=source, denoising_strength=0.8, units=[_unit()])
    assert np.abs(controlled - plain).mean() > 1 and (controlled == explicit).all()
    mask = Image.new("L", (SIZE, SIZE), 0)
    mask.paste(255, (0, 0, 32, 64))
    inpaint = {"mode": "inpaint", "init_image": source, "mask": mask, "denoising_strength": 1.0, "mask_blur": 0}
    painted, _, _ = _run(service, **inpaint)
    controlled, info, _ = _run(service, **inpaint, units=[_unit(image=None)])
    assert np.abs(controlled[:, :32] - painted[:, :32]).mean() > 1
    assert (controlled[:, 32:] == np.asarray(source, dtype=np.int16)[:, 32:]).all()  # outside the mask: the original
    assert "ControlNet 0" in info


def test_detected_maps_come_back_with_the_result(service) -> None:
    _, _, result = _run(service, units=[_unit(module="canny")])
    (detected,) = result.control_maps
    edges = np.asarray(detected.convert("L")) > 127
    assert detected.size == (SIZE, SIZE)
    assert edges[14:18, 16:48].any() and not edges[24:40, 24:40].any()  # the square's outline, not its inside
    _, _, quiet = _run(service, units=[_unit(module="canny", save_detected_map=False)])
    assert quiet.control_maps == []


def test_sdxl_units_run_on_sdxl_and_an_sd1_controlnet_on_sdxl_fails_the_job_naming_it(service) -> None:
    plain, _, _ = _run(service, checkpoint="tiny-xl.safetensors")
    controlled, _, _ = _run(service, checkpoint="tiny-xl.safetensors", units=[_unit(model="control_tiny_xl")])
    assert np.abs(controlled - plain).mean() > 1
    with pytest.raises(EaselError, match=r"control_tiny_canny\.safetensors.*loaded checkpoint"):
        _run(service, checkpoint="tiny-xl.safetensors", units=[_unit()])
    again, _, _ = _run(service, checkpoint="tiny-xl.safetensors")
    assert (again == plain).all()  # the failed job left nothing attached


# -- bad input ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"weight": 2.5}, "controlnet_units[0].weight"),
        ({"guidance_start": 0.8, "guidance_end": 0.2}, "controlnet_units[0].guidance_start"),
        ({"guidance_end": 1.5}, "controlnet_units[0].guidance_end"),
        ({"module": "canny", "threshold_a": 0}, "controlnet_units[0].threshold_a"),
        ({"module": "canny", "threshold_b": 400}, "controlnet_units[0].threshold_b"),
        ({"processor_res": 10}, "controlnet_units[0].processor_res"),
        ({"module": "no-such-thing"}, "controlnet_units[0].module"),
        ({"model": "None"}, "controlnet_units[0].model"),
        ({"image": None}, "controlnet_units[0].image"),
        ({"control_mode": "Loudest"}, "controlnet_units[0].control_mode"),
        ({"resize_mode": "Stretch"}, "controlnet_units[0].resize_mode"),
    ],
)
def test_bad_unit_values_name_the_unit_and_field(fields: dict, field: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        GenerationRequest.build(prompt="x", controlnet_units=[_unit(**fields)])
    assert info.value.field == field, str(info.value)


def test_an_unknown_model_is_refused_at_submit_and_an_annotator_without_its_file_names_it(service) -> None:
    with pytest.raises(ModelNotFound) as info:
        service.submit(GenerationRequest.build(prompt="x", controlnet_units=[_unit(model="nope")]))
    assert "nope" in str(info.value)
    with pytest.raises(EaselError, match=r"body_pose_model\.pth"):
        _run(service, units=[_unit(module="openpose")])
    plain, _, _ = _run(service)
    assert plain.shape == (SIZE, SIZE, 3)  # the service is still working


def test_the_service_previews_the_map_a_unit_would_see_without_a_model(service) -> None:
    unit = ControlNetUnit(module="canny", image=_control_image(), model="None")
    detected = service.detect_map(unit, 128, 96)
    assert detected.image.size == (128, 96) and detected.resolution == 512
    edges = np.asarray(detected.image.convert("L")) > 127
    assert edges.any() and not edges[40:56, 56:72].any()
    with pytest.raises(InvalidRequest) as info:
        service.detect_map(ControlNetUnit(module="canny", threshold_a=999, image=_control_image()), 64, 64)
    assert info.value.field == "controlnet_units[0].threshold_a"
    names = {pre.name: missing for pre, missing in service.preprocessors()}
    assert names["canny"] == [] and names["openpose"] == ["body_pose_model.pth"]
    assert "control_tiny_canny" in " ".join(service.controlnet_models())
    assert service.upscaler_names(latent=True)[:2] == ["Latent", "Latent (antialiased)"]


def test_a_network_preprocessor_preview_runs_on_the_worker_thread(service, monkeypatch: pytest.MonkeyPatch) -> None:
    """torch on a second thread slows every later CPU generation (docs/ARCHITECTURE.md), so previews that run an
    annotator network are queued for the worker; OpenCV ones run where they are asked."""
    import threading

    from webui.controlnet import detect as detect_module

    threads: list[str] = []
    real = detect_module.detect

    def spy(*args, **kwargs):
        threads.append(threading.current_thread().name)
        return real(*args, **kwargs)

    monkeypatch.setattr("webui.service.service.detect", spy)
    service.detect_map(ControlNetUnit(module="canny", image=_control_image()), 64, 64)
    with pytest.raises(InvalidRequest, match=r"ControlNetHED\.pth"):
        service.detect_map(ControlNetUnit(module="softedge_hed", image=_control_image()), 64, 64)
    assert threads == [threading.current_thread().name, "easel-worker"]


def test_a_conditioning_embedding_of_another_depth_loads_from_the_original_layout(tmp_path: Path) -> None:
    """diffusers' table assumes SD's 8x embedding (``input_hint_block.14`` last); a 4x one, as the demo model's
    ControlNet has, ends at ``input_hint_block.10`` and must load the same."""
    from diffusers import ControlNetModel

    from tests.fixtures.tiny_controlnets import save_controlnet

    unet = tiny_components("sd1")["unet"]
    torch.manual_seed(0)
    reference = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32, 64)).eval()
    path = save_controlnet(reference, tmp_path / "four-x.safetensors", "ldm")
    loaded = load_controlnet(path, dict(unet.config), torch.float32)
    want, got = reference.state_dict(), loaded.state_dict()
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)
    assert list(loaded.config.conditioning_embedding_out_channels) == [16, 32, 64]
