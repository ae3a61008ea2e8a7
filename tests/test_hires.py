"""Hires fix through the real service on a tiny checkpoint: A1111's second txt2img pass.

Checked: the output size (scale, one side, both sides), every upscaler kind (latent, built-in, ESRGAN file),
the infotext's ``Hires ...`` keys, progress over both passes, that the second pass reuses the loaded components,
ControlNet units' ``hr_option``, and bad values refused naming the field.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.fixtures.services import running_service
from tests.fixtures.tiny_controlnets import make_controlnet
from tests.fixtures.tiny_models import make_lora
from tests.fixtures.tiny_upscalers import save_upscaler, tiny_rrdb
from webui.errors import InvalidRequest
from webui.outputs.infotext import parse_infotext
from webui.types import GenerationRequest

SIZE = 64


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, tiny_sd1_ckpt: Path) -> Path:
    root = tmp_path_factory.mktemp("models")
    (root / "Stable-diffusion").mkdir()
    shutil.copy(tiny_sd1_ckpt, root / "Stable-diffusion" / "tiny.safetensors")
    make_controlnet(root / "ControlNet", "sd1", seed=1, name="control_tiny.safetensors")
    save_upscaler(tiny_rrdb(4, seed=1), root / "ESRGAN" / "4x-Tiny.pth", "original")
    make_lora(root / "Lora" / "detail.safetensors", seed=1)
    return root


@pytest.fixture(scope="module")
def service(models: Path, tmp_path_factory: pytest.TempPathFactory):
    with running_service(models, tmp_path_factory.mktemp("out")) as svc:
        yield svc


def _request(**fields) -> GenerationRequest:
    base = {
        "prompt": "a red circle",
        "steps": 4,
        "width": SIZE,
        "height": SIZE,
        "seed": 5,
        "save_images": False,
        "enable_hr": True,
        "denoising_strength": 0.5,
    }
    return GenerationRequest.build(**{**base, **fields})


def _run(service, events: list | None = None, **fields):
    job = service.submit(_request(**fields))
    if events is not None:
        events.extend(job.updates())
    result = job.wait(120)
    image = result.images[0]
    return image.image, parse_infotext(image.infotext), result


@pytest.mark.parametrize("upscaler", ["Latent", "Latent (bicubic antialiased)", "Lanczos", "Nearest", "4x-Tiny"])
def test_the_second_pass_doubles_the_size_with_every_kind_of_upscaler(service, upscaler: str) -> None:
    model = service.engine.weights.active
    image, info, _ = _run(service, hr_upscaler=upscaler)
    assert image.size == (2 * SIZE, 2 * SIZE)
    assert info["Size-1"] == SIZE and info["Hires upscale"] == 2.0 and info["Hires upscaler"] == upscaler
    assert info["Denoising strength"] == 0.5 and "Hires resize" not in info
    if model is not None:
        assert service.engine.weights.active is model  # the second pass reused the loaded checkpoint


def test_resize_to_sizes_keep_or_crop_the_aspect_ratio(service) -> None:
    wide, info, _ = _run(service, hr_resize_x=128, hr_resize_y=0)
    assert wide.size == (128, 128) and (info["Hires resize-1"], info["Hires resize-2"]) == (128, 128)
    assert "Hires upscale" not in info
    cropped, _, _ = _run(service, hr_resize_x=160, hr_resize_y=96, hr_upscaler="Lanczos")
    assert cropped.size == (160, 96)
    latent_cropped, _, _ = _run(service, hr_resize_x=160, hr_resize_y=96)
    assert latent_cropped.size == (160, 96)


def test_the_second_pass_changes_the_upscaled_image_and_its_steps_count_in_the_progress(service) -> None:
    events: list = []
    hires, info, _ = _run(service, events, hr_upscaler="Lanczos", hr_second_pass_steps=6, denoising_strength=0.5)
    assert info["Hires steps"] == 6
    running = [e for e in events if e.state == "running" and e.total_steps]
    assert {e.total_steps for e in running} == {4 + 3}  # 4 first-pass steps, then 6 x 0.5 second-pass steps
    assert max(e.step for e in running) == 7
    plain = service.generate(_request(enable_hr=False), timeout=120).images[0].image
    upscaled = np.asarray(plain.resize((2 * SIZE, 2 * SIZE), Image.Resampling.LANCZOS), dtype=np.int16)
    assert np.abs(np.asarray(hires, dtype=np.int16) - upscaled).mean() > 1  # denoised again, not just resized


def test_hires_sampler_and_prompt_are_written_when_they_differ(service) -> None:
    _, info, _ = _run(service, hr_sampler_name="DPM++ 2M", hr_scheduler="Karras", hr_prompt="a blue square")
    assert info["Hires sampler"] == "DPM++ 2M" and info["Hires schedule type"] == "Karras"
    assert info["Hires prompt"] == "a blue square"
    _, same, _ = _run(service)
    assert "Hires sampler" not in same and "Hires prompt" not in same


def test_each_pass_runs_the_loras_of_its_own_prompt(service) -> None:
    lora = "a red circle <lora:detail:1>"

    def pixels(**fields) -> list[np.ndarray]:
        result = service.generate(_request(hr_upscaler="Lanczos", **fields), timeout=120)
        return [np.asarray(image.image, dtype=np.int16) for image in result.images]

    def differ(a: np.ndarray, b: np.ndarray) -> bool:
        return float(np.abs(a - b).mean()) > 0.5

    (plain,) = pixels()
    second_only = pixels(hr_prompt=lora, n_iter=2)
    (both,) = pixels(prompt=lora)  # an empty hires prompt is the first's: the LoRA in both passes
    (first_only,) = pixels(prompt=lora, hr_prompt="a red circle")
    assert differ(second_only[0], plain) and differ(second_only[0], both)  # on in the second pass alone
    assert differ(first_only, both) and differ(first_only, plain) and differ(first_only, second_only[0])
    (next_seed,) = pixels(hr_prompt=lora, seed=6)
    assert np.array_equal(second_only[1], next_seed)  # the second batch's first pass ran without it again
    _, info, _ = _run(service, hr_prompt=lora)
    assert info["Lora hashes"].startswith("detail: ")
    assert np.array_equal(pixels()[0], plain)  # and nothing stays on after the job


def test_controlnet_units_follow_their_hires_option(service) -> None:
    control = Image.new("RGB", (SIZE, SIZE), "white")
    library = service.engine.weights.controlnets

    def calls_for(option: str) -> int:
        unit = {"model": "control_tiny", "image": control, "hr_option": option}
        _run(service, controlnet_units=[unit], hr_upscaler="Lanczos")  # loaded, so its forward can be counted
        _stamp, loaded = library._loaded[library.find("control_tiny").path]
        calls: list[int] = []
        handle = loaded.model.register_forward_hook(lambda *_: calls.append(1))
        try:
            _run(service, controlnet_units=[unit], hr_upscaler="Lanczos")
        finally:
            handle.remove()
        return len(calls)

    assert calls_for("Both") == 4 + 2  # 4 first-pass steps, 4 x 0.5 second-pass steps
    assert calls_for("Low res only") == 4
    assert calls_for("High res only") == 2


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"hr_scale": 5}, "hr_scale"),
        ({"hr_scale": 0.5}, "hr_scale"),
        ({"hr_resize_x": -8}, "hr_resize_x"),
        ({"hr_second_pass_steps": -1}, "hr_second_pass_steps"),
        ({"hr_sampler_name": "Nope"}, "hr_sampler_name"),
        ({"hr_scheduler": "Sideways"}, "hr_scheduler"),
    ],
)
def test_bad_hires_values_name_their_field(fields: dict, field: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        _request(**fields)
    assert info.value.field == field, str(info.value)


def test_limits_unknown_upscalers_and_other_modes_are_refused(service) -> None:
    with pytest.raises(InvalidRequest) as info:
        service.submit(_request(width=1024, height=1024, hr_scale=4))
    assert info.value.field == "hr_scale" and "4096x4096" in str(info.value)
    with pytest.raises(InvalidRequest) as info:
        service.submit(_request(hr_upscaler="R-ESRGAN 4x+"))
    assert info.value.field == "hr_upscaler" and "4x-Tiny" in str(info.value)
    with pytest.raises(InvalidRequest) as info:
        _request(mode="img2img", init_image=Image.new("RGB", (SIZE, SIZE)))
    assert info.value.field == "enable_hr"


def test_an_infotext_gives_the_hires_fields_back(service) -> None:
    from webui.outputs.infotext import request_fields_from_infotext

    _, info, _ = _run(service, hr_upscaler="Lanczos", hr_second_pass_steps=6, hr_sampler_name="DPM++ 2M")
    fields = request_fields_from_infotext(info)
    assert fields["enable_hr"] is True and fields["hr_scale"] == 2.0 and fields["hr_upscaler"] == "Lanczos"
    assert fields["hr_second_pass_steps"] == 6 and fields["hr_sampler_name"] == "DPM++ 2M"
    _, resized, _ = _run(service, hr_resize_x=128, hr_resize_y=96)
    again = request_fields_from_infotext(resized)
    assert (again["hr_resize_x"], again["hr_resize_y"]) == (128, 96)
    plain = request_fields_from_infotext(parse_infotext("a cat\nSteps: 20, Sampler: Euler, Seed: 1, Size: 64x64"))
    assert "enable_hr" not in plain
