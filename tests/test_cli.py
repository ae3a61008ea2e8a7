"""The headless ``generate`` command, run in-process on a tiny random-weight checkpoint.

Each call builds and stops a fresh service, as a script would; at 64x64 and 2 steps a run takes well under a
second once torch and diffusers are imported. Only stdout's shape (one saved path per line), the exit status,
stderr's wording and what lands on disk are checked: the pixels are ``test_generation.py``'s business.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

import app
from webui import cli

SIZE = 64
FAST = ["-W", str(SIZE), "-H", str(SIZE), "--steps", "2", "--prompt", "a red circle"]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, tiny_sd1_ckpt: Path) -> Path:
    root = tmp_path_factory.mktemp("cli-models")
    (root / "Stable-diffusion").mkdir()
    shutil.copy(tiny_sd1_ckpt, root / "Stable-diffusion" / "tiny-sd1.safetensors")
    return root


@pytest.fixture
def outputs(tmp_path: Path) -> Path:
    return tmp_path / "outputs"


def _generate(
    capsys: pytest.CaptureFixture[str], models: Path, outputs: Path, *args: str, via_app: bool = False
) -> tuple[int, list[Path], str]:
    """Run the command; returns the exit status, the printed paths and stderr."""
    argv = ["--models-dir", str(models), "--outputs-dir", str(outputs), *args]
    capsys.readouterr()  # drop anything an earlier step printed
    code = app.main(["generate", *argv]) if via_app else cli.main(argv)
    captured = capsys.readouterr()
    return code, [Path(line) for line in captured.out.splitlines()], captured.err


def _pngs(outputs: Path) -> list[Path]:
    return sorted(outputs.rglob("*.png")) if outputs.exists() else []


def _scene(folder: Path) -> tuple[Path, Path]:
    image = Image.new("RGB", (SIZE, SIZE), (20, 40, 200))
    ImageDraw.Draw(image).ellipse((16, 16, 48, 48), fill=(220, 30, 30))
    mask = Image.new("L", (SIZE, SIZE), 0)
    ImageDraw.Draw(mask).rectangle((8, 8, 31, 31), fill=255)
    image.save(folder / "init.png")
    mask.save(folder / "mask.png")
    return folder / "init.png", folder / "mask.png"


def test_txt2img_prints_one_saved_png_per_image(capsys, models, outputs):
    code, paths, err = _generate(capsys, models, outputs, *FAST, "--seed", "5", "--batch-size", "2")
    assert code == 0, err
    assert len(paths) == 2
    assert [p.name[-6:] for p in paths] == ["-5.png", "-6.png"]
    for path in paths:
        assert path.is_file() and path.is_relative_to(outputs / "txt2img-images")
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size == (SIZE, SIZE)
            assert "Seed: " in image.info["parameters"]
    assert _pngs(outputs) == sorted(paths)


def test_img2img_and_inpaint_read_their_images_from_files(capsys, models, outputs, tmp_path):
    init, mask = _scene(tmp_path)
    code, (path,), err = _generate(capsys, models, outputs, *FAST, "--seed", "3", "--mode", "img2img",
                                   "--init-image", str(init))  # fmt: skip
    assert code == 0, err
    assert path.is_file() and path.is_relative_to(outputs / "img2img-images") and path.name.endswith("-3.png")

    code, (path,), err = _generate(capsys, models, outputs, *FAST, "--seed", "4", "--mode", "inpaint",
                                   "--init-image", str(init), "--mask", str(mask), "--mask-blur", "0")  # fmt: skip
    assert code == 0, err
    assert path.is_file() and path.is_relative_to(outputs / "img2img-images") and path.name.endswith("-4.png")
    with Image.open(path) as out, Image.open(init) as original:
        # Outside the mask inpainting pastes the input back, pixel for pixel.
        assert out.crop((40, 40, SIZE, SIZE)).tobytes() == original.convert("RGB").crop((40, 40, SIZE, SIZE)).tobytes()
    assert len(_pngs(outputs)) == 2


def test_out_of_range_width_exits_2_naming_the_field_and_saves_nothing(capsys, models, outputs):
    code, paths, err = _generate(capsys, models, outputs, *FAST, "-W", "500")
    assert code == 2
    assert paths == []
    assert "width" in err and "between 64 and 2048" in err and "500" in err
    assert _pngs(outputs) == []


def test_a_text_file_named_png_is_refused_as_init_image(capsys, models, outputs, tmp_path):
    fake = tmp_path / "photo.png"
    fake.write_text("these are not the pixels you are looking for\n")
    code, paths, err = _generate(capsys, models, outputs, *FAST, "--mode", "img2img", "--init-image", str(fake))
    assert code == 2
    assert paths == []
    assert "init_image" in err and "not a supported image" in err
    assert _pngs(outputs) == []


def test_app_py_generate_runs_the_same_command(capsys, models, outputs):
    code, (path,), err = _generate(capsys, models, outputs, *FAST, "--seed", "11", via_app=True)
    assert code == 0, err
    assert path.is_file() and path.name.endswith("-11.png")

    code, paths, err = _generate(capsys, models, outputs, *FAST, "--steps", "0", via_app=True)
    assert code == 2 and paths == [] and "steps" in err


def test_vae_flag_uses_a_vae_file_and_an_unknown_one_exits_2_naming_sd_vae(capsys, models, outputs, tmp_path):
    from tests.fixtures.tiny_models import make_vae

    root = tmp_path / "models"
    shutil.copytree(models, root)
    make_vae(root / "VAE" / "redder.safetensors", red=1.5)
    code, (path,), err = _generate(capsys, root, outputs, *FAST, "--seed", "3", "--vae", "redder.safetensors")
    assert code == 0, err
    with Image.open(path) as image:
        assert "VAE: redder.safetensors" in image.info["parameters"]
    code, paths, err = _generate(capsys, root, outputs, *FAST, "--vae", "nope.safetensors")
    assert code == 2 and paths == []
    assert "sd_vae: 'nope.safetensors' not found" in err and "redder.safetensors" in err


def test_hires_sd_upscale_controlnet_and_extension_options(capsys, models, outputs, tmp_path):
    from tests.fixtures.tiny_controlnets import make_controlnet

    make_controlnet(models / "ControlNet", "sd1", seed=1, name="control_tiny.safetensors")
    init, _mask = _scene(tmp_path)
    code, (hires,), err = _generate(capsys, models, outputs, *FAST, "--hires", "--hr-upscaler", "Lanczos")
    assert code == 0, err
    with Image.open(hires) as image:
        assert image.size == (2 * SIZE, 2 * SIZE) and "Hires upscaler: Lanczos" in image.info["parameters"]
    args = ["--mode", "img2img", "--init-image", str(init), "--sd-upscale", "2", "--sd-upscale-overlap", "16"]
    code, (upscaled,), err = _generate(capsys, models, outputs, *FAST, *args)
    assert code == 0, err
    with Image.open(upscaled) as image:
        assert image.size == (2 * SIZE, 2 * SIZE) and "SD upscale: 2" in image.info["parameters"]
    unit = f"model=control_tiny,module=canny,image={init},weight=0.8,guidance_end=0.5"
    mirror = ["--ext", "latent-mirror.mode=Left-right", "--ext", "latent-mirror.strength=0.5"]
    code, (controlled,), err = _generate(capsys, models, outputs, *FAST, "--controlnet", unit, *mirror)
    assert code == 0, err
    with Image.open(controlled) as image:
        text = image.info["parameters"]
        assert 'ControlNet 0: "Module: canny, Model: control_tiny' in text and "Weight: 0.8" in text
        assert "Latent mirror: Left-right 0.5 until 0.5" in text


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["--controlnet", "model=control_tiny,weight=5"], "controlnet_units[0].weight"),
        (["--controlnet", "model=nope,image=SCENE"], "controlnet_units[0].model"),
        (["--controlnet", "weight"], "controlnet_units[0]"),
        (["--ext", "latent-mirror.strength=9"], "extension_args.latent-mirror.strength"),
        (["--ext", "nobody.x=1"], "extension_args.nobody"),
        (["--hires", "--hr-scale", "9"], "hr_scale"),
    ],
)
def test_bad_new_options_exit_2_naming_the_field(capsys, models, outputs, tmp_path, args, field):
    init, _mask = _scene(tmp_path)
    args = [a.replace("SCENE", str(init)) for a in args]
    code, paths, err = _generate(capsys, models, outputs, *FAST, *args)
    assert code == 2 and paths == [] and f"error: {field}" in err, err
    assert _pngs(outputs) == []
