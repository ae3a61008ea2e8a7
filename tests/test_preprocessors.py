"""ControlNet's built-in preprocessors on synthetic images: each output checked for what it must show."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from webui.controlnet import preprocessors as pre
from webui.errors import InvalidRequest

SIZE = 256


def _square(size: int = SIZE, box: tuple[int, int, int, int] = (64, 64, 192, 192)) -> np.ndarray:
    image = np.full((size, size, 3), 30, np.uint8)
    x0, y0, x1, y1 = box
    image[y0:y1, x0:x1] = (220, 40, 40)
    return image


def test_canny_of_a_square_is_its_outline() -> None:
    edges = pre.run("canny", _square(), resolution=SIZE)
    assert edges.shape == (SIZE, SIZE, 3) and set(np.unique(edges)) <= {0, 255}
    on = edges[..., 0] > 0
    ring = np.zeros_like(on)
    ring[60:197, 60:197] = True
    ring[68:188, 68:188] = False  # the band around the square's border
    assert on[ring].sum() > 0.9 * on.sum() > 0  # (nearly) every edge pixel lies on the outline
    assert not on[80:176, 80:176].any() and not on[:50].any()  # nothing inside, nothing far outside
    for y in (100, 128, 160):  # each side is found
        assert on[y, 60:70].any() and on[y, 186:197].any()


def test_canny_thresholds_are_checked_and_minus_one_means_default() -> None:
    default = pre.run("canny", _square(), resolution=SIZE)
    assert (pre.run("canny", _square(), resolution=SIZE, threshold_a=100, threshold_b=200) == default).all()
    with pytest.raises(InvalidRequest, match=r"^threshold_a: Canny Low Threshold must be between 1 and 255, got 300"):
        pre.run("canny", _square(), threshold_a=300)
    with pytest.raises(InvalidRequest, match=r"^threshold_b: "):
        pre.run("canny", _square(), threshold_b=0)


def test_the_image_is_scaled_to_the_preprocessor_resolution_by_its_short_side() -> None:
    wide = np.zeros((300, 600, 3), np.uint8)
    assert pre.run("canny", wide, resolution=512).shape == (512, 1024, 3)
    assert pre.run("none", wide).shape == wide.shape  # a prepared map is passed through as it is
    with pytest.raises(InvalidRequest, match=r"^processor_res: must be between 64 and 2048"):
        pre.run("canny", wide, resolution=10)


def test_invert_threshold_and_blur() -> None:
    image = _square()
    assert (pre.run("invert", image, resolution=SIZE) == 255 - image).all()
    binary = pre.run("threshold", image, resolution=SIZE, threshold_a=50)
    assert (binary[100, 100] == 255).all() and (binary[10, 10] == 0).all()
    blurred = pre.run("blur_gaussian", image, resolution=SIZE, threshold_a=8)
    assert abs(blurred.mean() - image.mean()) < 1.5 and blurred.std() < image.std()
    assert 40 < blurred[128, 64, 0] < 220  # the border is smeared
    assert (pre.run("invert (from white bg & black line)", image, resolution=SIZE) == 255 - image).all()


def test_scribble_xdog_turns_dark_lines_into_white_scribbles() -> None:
    image = np.full((SIZE, SIZE, 3), 240, np.uint8)
    image[120:124, 20:236] = 10  # a dark horizontal line
    lines = pre.run("scribble_xdog", image, resolution=SIZE)
    assert lines[118:126, 40:216].max() == 255 and lines[:100].max() == 0 and lines[150:].max() == 0


def test_tile_resample_and_colour_grid() -> None:
    image = _square()
    assert pre.run("tile_resample", image, resolution=SIZE, threshold_a=4).shape == (64, 64, 3)
    assert pre.run("tile_resample", image, resolution=SIZE).shape == image.shape  # rate 1: unchanged
    grid = pre.run("color", image, resolution=SIZE)
    assert grid.shape == image.shape
    cells = {tuple(grid[y, x]) for y in range(0, SIZE, 64) for x in range(0, SIZE, 64)}
    for y in range(0, SIZE, 64):  # each 64 px cell is one flat colour
        for x in range(0, SIZE, 64):
            assert (grid[y : y + 64, x : x + 64] == grid[y, x]).all()
    assert len(cells) >= 2


def test_shuffle_moves_content_reproducibly_and_keeps_its_colours() -> None:
    image = _square()
    first = pre.run("shuffle", image, resolution=SIZE, seed=1)
    assert (pre.run("shuffle", image, resolution=SIZE, seed=1) == first).all()
    assert not (pre.run("shuffle", image, resolution=SIZE, seed=2) == first).all()
    assert not (first == image).all()
    red = (first[..., 0] > 150).mean()
    assert 0.05 < red < 0.95  # the square's colour is still there, somewhere else


def test_inpaint_marks_the_masked_pixels_and_needs_a_mask() -> None:
    image = _square()
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[:, :128] = 255
    marked = pre.run("inpaint", image, mask=mask)
    assert (marked[:, :128] == 0).all() and (marked[:, 128:] == image[:, 128:]).all()
    assert (pre.run("inpaint_only", image, mask=mask) == marked).all()
    with pytest.raises(InvalidRequest, match=r"^mask: preprocessor 'inpaint' needs a mask"):
        pre.run("inpaint", image)


def test_annotator_preprocessors_say_which_file_they_need_and_unknown_names_list_the_built_ins(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match=r"^module: preprocessor 'depth' needs dpt_hybrid-midas-501f0c75\.pt in"):
        pre.run("depth", _square(), annotators=tmp_path)
    (tmp_path / "body_pose_model.pth").write_bytes(b"x")
    assert pre.missing_files(pre.find("openpose_full"), tmp_path) == ["hand_pose_model.pth", "facenet.pth"]
    assert pre.missing_files(pre.find("openpose"), tmp_path) == []
    with pytest.raises(InvalidRequest, match=r"^module: unknown preprocessor 'sharpen' \(built in: none, canny, "):
        pre.run("sharpen", _square())
    assert set(pre.built_in_names()) >= {"none", "canny", "invert", "threshold", "scribble_xdog", "tile_resample",
                                          "color", "shuffle", "inpaint", "blur_gaussian"}  # fmt: skip


def test_a_non_rgb_array_is_refused_naming_the_image() -> None:
    with pytest.raises(InvalidRequest, match=r"^image: expected an RGB image"):
        pre.run("canny", np.zeros((32, 32), np.uint8))
