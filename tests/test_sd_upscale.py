"""SD upscale (img2img): the input upscaled, img2img'd in overlapping tiles of the request's size, and joined.

Checked on a tiny checkpoint: the output size and tile count, that the joins fade (no seam stands out from the
picture's own pixel-to-pixel changes, where pasting tiles edge to edge leaves one), the tile ControlNet seeing
each tile's own crop, progress over all tiles, and bad values.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.fixtures.services import running_service
from tests.fixtures.tiny_controlnets import make_controlnet
from webui.errors import InvalidRequest
from webui.outputs.infotext import parse_infotext
from webui.pipeline import tiles
from webui.types import GenerationRequest

TILE = 64


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, tiny_sd1_ckpt: Path) -> Path:
    root = tmp_path_factory.mktemp("models")
    (root / "Stable-diffusion").mkdir()
    shutil.copy(tiny_sd1_ckpt, root / "Stable-diffusion" / "tiny.safetensors")
    make_controlnet(root / "ControlNet", "sd1", seed=1, name="control_tiny_tile.safetensors")
    return root


@pytest.fixture(scope="module")
def service(models: Path, tmp_path_factory: pytest.TempPathFactory):
    with running_service(models, tmp_path_factory.mktemp("out")) as svc:
        yield svc


def _gradient(size: int = 64) -> Image.Image:
    x = np.linspace(0, 255, size, dtype=np.float32)
    pixels = np.stack([np.add.outer(x, x) / 2, np.tile(x, (size, 1)), np.tile(x[:, None], (1, size))], axis=2)
    return Image.fromarray(pixels.astype(np.uint8))


def _request(**fields) -> GenerationRequest:
    base = {
        "mode": "img2img",
        "prompt": "a red circle",
        "init_image": _gradient(),
        "steps": 4,
        "width": TILE,
        "height": TILE,
        "seed": 2,
        "denoising_strength": 0.5,
        "save_images": False,
        "sd_upscale": True,
        "sd_upscale_scale": 2,
        "sd_upscale_overlap": 32,
    }
    return GenerationRequest.build(**{**base, **fields})


def test_the_grid_covers_the_image_with_the_overlap_asked_for() -> None:
    layout = tiles.grid(128, 128, 64, 64, 32)
    assert [t.left for t in layout[:3]] == [0, 32, 64] and len(layout) == 9
    assert tiles.grid(50, 40, 64, 64, 16) == [tiles.Tile(0, 0, 50, 40)]
    wide = tiles.grid(1000, 200, 512, 512, 64)
    assert len(wide) == 3 and wide[-1].left + wide[-1].width == 1000 and wide[0].height == 200


def test_the_joins_fade_where_pasted_tiles_would_show_a_seam() -> None:
    layout = tiles.grid(128, 64, 64, 64, 32)
    dark, light = Image.new("RGB", (64, 64), (40, 40, 40)), Image.new("RGB", (64, 64), (200, 200, 200))
    joined = np.asarray(tiles.blend(layout, [dark, light, dark], 128, 64), dtype=np.int16)
    steps = np.abs(np.diff(joined[32, :, 0]))
    assert steps.max() <= 12  # 160 levels spread over the 32 overlapping pixels, not a jump
    assert joined[32, 0, 0] == 40 and joined[32, 127, 0] == 40 and joined[32, :, 0].max() >= 190


def test_sd_upscale_doubles_the_input_tile_by_tile_and_says_so(service) -> None:
    events: list = []
    job = service.submit(_request())
    events.extend(job.updates())
    result = job.wait(120)
    (image,) = result.images
    assert image.image.size == (128, 128)
    info = parse_infotext(image.infotext)
    assert info["SD upscale"] == 2.0 and info["SD upscale upscaler"] == "Lanczos" and info["SD upscale overlap"] == 32
    assert (info["Size-1"], info["Size-2"]) == (TILE, TILE)  # the tile size, as A1111 writes it
    running = [e for e in events if e.state == "running" and e.total_steps]
    assert {e.total_steps for e in running} == {9 * 2}  # 9 tiles x (4 steps x 0.5 strength)


def test_on_the_demo_model_no_seam_stands_out(tmp_path: Path) -> None:
    """The demo model draws smooth pictures, so a seam would show: measured on what the model changed (the result
    minus the plainly upscaled input), the columns where tiles meet jump no more than the picture's own columns.
    Pasting the same tiles edge to edge jumps 10 to 25 levels there (measured), against a median of about 2."""
    from tests.fixtures.services import fresh_install_service
    from webui.demo import scenes

    # A plain background and a circle whose edges stay clear of the seams (a moved edge is not a seam).
    source = scenes.render(scenes.Scene("circle", "red", "large", "in the center", "blue", radius=0.2))
    with fresh_install_service(tmp_path) as demo:
        request = _request(
            init_image=source, prompt="a red circle on a blue background", steps=10, cfg_scale=3, checkpoint=None
        )
        image = demo.generate(request, timeout=120).images[0].image
    assert image.size == (128, 128)
    upscaled = np.asarray(source.resize((128, 128), Image.Resampling.LANCZOS), dtype=np.int16)
    change = np.asarray(image, dtype=np.int16) - upscaled
    for axis in (1, 0):
        jumps = np.abs(np.diff(change, axis=axis)).mean(axis=(1 - axis, 2) if axis == 1 else (1, 2))
        seams = [31, 63, 95]  # the last column (row) of each overlap's first tile
        assert jumps[seams].max() < 3 * np.median(jumps) + 2, (axis, jumps[seams], np.median(jumps))


def test_a_tile_controlnet_sees_each_tiles_own_crop(service) -> None:
    unit = {"model": "control_tiny_tile", "module": "tile_resample", "image": None}
    service.generate(_request(controlnet_units=[unit]), timeout=120)  # loaded, so its forward can be counted
    library = service.engine.weights.controlnets
    _stamp, loaded = library._loaded[library.find("control_tiny_tile").path]
    hints: list[float] = []
    handle = loaded.model.register_forward_pre_hook(
        lambda _m, _a, kwargs: hints.append(float(kwargs["controlnet_cond"].mean())), with_kwargs=True
    )
    try:
        result = service.generate(_request(controlnet_units=[unit]), timeout=120)
    finally:
        handle.remove()
    assert len(hints) == 9 * 2  # every step of every tile
    per_tile = hints[::2]
    assert per_tile[0] < per_tile[4] < per_tile[8]  # the gradient's dark corner first, its light corner last
    assert "ControlNet 0" in parse_infotext(result.images[0].infotext)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"mode": "txt2img", "init_image": None}, "sd_upscale"),
        ({"sd_upscale_scale": 8}, "sd_upscale_scale"),
        ({"sd_upscale_overlap": 40}, "sd_upscale_overlap"),
        ({"batch_size": 2}, "batch_size"),
    ],
)
def test_bad_values_name_their_field(fields: dict, field: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        _request(**fields)
    assert info.value.field == field, str(info.value)


def test_an_unknown_upscaler_is_refused_at_submit(service) -> None:
    with pytest.raises(InvalidRequest) as info:
        service.submit(_request(sd_upscale_upscaler="4x-Missing"))
    assert info.value.field == "sd_upscale_upscaler"


def test_an_infotext_gives_the_sd_upscale_fields_back(service) -> None:
    from webui.outputs.infotext import request_fields_from_infotext

    result = service.generate(_request(sd_upscale_overlap=16), timeout=120)
    fields = request_fields_from_infotext(parse_infotext(result.images[0].infotext))
    assert fields["sd_upscale"] is True and fields["sd_upscale_scale"] == 2.0
    assert fields["sd_upscale_upscaler"] == "Lanczos" and fields["sd_upscale_overlap"] == 16
