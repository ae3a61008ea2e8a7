"""Upscalers: built-in resampling and ESRGAN-family files, read in both key layouts, run in tiles."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.fixtures.tiny_upscalers import save_upscaler, tiny_rrdb
from webui.errors import InvalidRequest, ModelLoadError
from webui.upscalers import esrgan, library
from webui.upscalers.library import UpscalerLibrary
from webui.weights import formats
from webui.weights.hashing import HashCache


def _picture(size: tuple[int, int] = (40, 30)) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "ESRGAN"
    save_upscaler(tiny_rrdb(4, seed=1), root / "4x-Tiny.pth", "original")
    save_upscaler(tiny_rrdb(4, seed=1), root / "4x-Tiny-basicsr.pth", "basicsr")
    save_upscaler(tiny_rrdb(2, seed=2), root / "RealESRGAN_x2plus.safetensors", "safetensors")
    return root


@pytest.fixture
def upscalers(folder: Path, tmp_path: Path) -> UpscalerLibrary:
    lib = UpscalerLibrary(folder, HashCache(tmp_path / "hashes.json"))
    lib.registry.refresh()
    return lib


def test_both_layouts_read_the_same_network_and_the_scale_from_the_shapes(folder: Path) -> None:
    reference = tiny_rrdb(4, seed=1)
    x = torch.rand(1, 3, 12, 10)
    for name in ("4x-Tiny.pth", "4x-Tiny-basicsr.pth"):
        model = esrgan.build(folder / name, formats.read_state_dict(folder / name))
        assert model.scale == 4
        assert torch.equal(model(x), reference(x))
    two = esrgan.build(
        folder / "RealESRGAN_x2plus.safetensors", formats.read_state_dict(folder / "RealESRGAN_x2plus.safetensors")
    )
    assert two.scale == 2 and two(x).shape == (1, 3, 24, 20)


def test_the_list_has_the_built_ins_then_the_files_and_unknown_names_are_refused(upscalers: UpscalerLibrary) -> None:
    assert upscalers.names() == ["None", "Lanczos", "Nearest", "4x-Tiny-basicsr", "4x-Tiny", "RealESRGAN_x2plus"]
    upscalers.check("4x-Tiny", "hr_upscaler")
    with pytest.raises(InvalidRequest) as info:
        upscalers.check("../../etc/passwd", "hr_upscaler")
    assert info.value.field == "hr_upscaler" and "4x-Tiny" in str(info.value)


def test_a_model_upscaler_reaches_any_size_and_built_ins_resample(upscalers: UpscalerLibrary) -> None:
    image = _picture()
    out = upscalers.upscale(image, "4x-Tiny", 160, 120)
    assert out.size == (160, 120)
    big = upscalers.upscale(image, "RealESRGAN_x2plus", 300, 225)  # 2x twice, then Lanczos down to the size
    assert big.size == (300, 225)
    cropped = upscalers.upscale(image, "4x-Tiny", 120, 40, crop=True)  # covered, then the middle cut
    assert cropped.size == (120, 40)
    middle = upscalers.upscale(image, "4x-Tiny", 120, 90).crop((0, 25, 120, 65))
    assert np.array_equal(np.asarray(cropped), np.asarray(middle))
    nearest = upscalers.upscale(image, "Nearest", 80, 60)
    assert (np.asarray(nearest)[::2, ::2] == np.asarray(image)).all()


def test_tiles_join_without_seams(upscalers: UpscalerLibrary, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a margin wider than the network sees, tiling is exact; with the default margin the tiles' joins
    differ from one whole pass only in the last bits."""
    model = tiny_rrdb(4, seed=1)
    image = _picture((70, 50))
    whole = np.asarray(library.run_tiled(model, image, torch.device("cpu"), torch.float32), dtype=np.int16)
    monkeypatch.setattr(library, "TILE", 24)
    monkeypatch.setattr(library, "TILE_MARGIN", 40)
    exact = np.asarray(library.run_tiled(model, image, torch.device("cpu"), torch.float32), dtype=np.int16)
    assert np.abs(exact - whole).max() <= 1
    monkeypatch.setattr(library, "TILE_MARGIN", 16)
    tiled = np.asarray(library.run_tiled(model, image, torch.device("cpu"), torch.float32), dtype=np.int16)
    assert np.abs(tiled - whole).mean() < 0.5


def test_a_file_that_is_not_rrdb_is_refused_with_its_kind(tmp_path: Path) -> None:
    path = tmp_path / "compact.pth"
    torch.save({"params": {"body.0.weight": torch.zeros(8, 3, 3, 3), "body.0.bias": torch.zeros(8)}}, path)
    with pytest.raises(ModelLoadError, match="compact"):
        esrgan.build(path, formats.read_state_dict(path))
