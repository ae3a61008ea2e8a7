"""The annotator networks (webui/controlnet/annotators) behind the weight-needing ControlNet preprocessors.

Real annotator files are hundreds of MB and cannot be fetched here, so each network is built with seeded random
weights and saved under the tensor names the extension's files use (HED in float16 as the real file, netG.pth with
``module.``, PiDiNet wrapped in ``state_dict`` with ``module.``). The names and shapes are checked against figures
read from the reference definitions (the extension's annotator/*; lllyasviel's ControlNet-v1-1 annotators), so a
naming slip fails here rather than on a user's file.
"""

from __future__ import annotations

import gc
import os
import re
import weakref
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from tests.fixtures.annotators import (  # noqa: F401 (one_thread, forget_networks: autouse fixtures)
    assert_reference,
    forget_networks,
    one_thread,
    picture,
    save_state,
    seeded_state,
)
from webui.controlnet import preprocessors as pre
from webui.controlnet.annotators import common, hed, lineart, lineart_anime, loading, mlsd, pidinet
from webui.errors import InvalidRequest, ModelLoadError

RESOLUTION = 128
INNERMOST = "model.model.1" + ".model.3" * 6  # the anime U-Net's eighth level, nested in the seven above it

# (network, tensor count, a few (name, shape) pairs), as the reference definitions give them.
REFERENCE: dict[str, tuple[Callable[[], nn.Module], int, dict[str, list[int]]]] = {
    "hed": (
        hed.HEDNetwork,
        37,
        {
            "norm": [1, 3, 1, 1],
            "block1.convs.0.weight": [64, 3, 3, 3],
            "block3.projection.weight": [1, 256, 1, 1],
            "block5.convs.2.weight": [512, 512, 3, 3],
        },
    ),
    "lineart": (
        lineart.LineartGenerator,
        24,
        {
            "model0.1.weight": [64, 3, 7, 7],
            "model1.3.weight": [256, 128, 3, 3],
            "model2.2.conv_block.5.weight": [256, 256, 3, 3],
            "model3.0.weight": [256, 128, 3, 3],
            "model4.1.weight": [1, 64, 7, 7],
        },
    ),
    "lineart_anime": (
        lineart_anime.AnimeUNet,
        32,
        {
            "model.model.0.weight": [64, 3, 4, 4],
            "model.model.3.weight": [128, 1, 4, 4],
            "model.model.1.model.1.bias": [128],
            "model.model.1.model.5.weight": [256, 64, 4, 4],
            f"{INNERMOST}.model.1.weight": [512, 512, 4, 4],
            f"{INNERMOST}.model.3.weight": [512, 512, 4, 4],
        },
    ),
    "pidinet": (
        pidinet.PiDiNet,
        83,
        {
            "init_block.weight": [60, 3, 3, 3],
            "block1_3.conv2.weight": [60, 60, 1, 1],
            "block2_1.shortcut.weight": [120, 60, 1, 1],
            "block4_4.conv1.weight": [240, 1, 3, 3],
            "dilations.0.conv1.weight": [24, 60, 1, 1],
            "attentions.3.conv2.weight": [1, 4, 3, 3],
            "classifier.weight": [1, 4, 1, 1],
        },
    ),
    "mlsd": (
        mlsd.MLSDLarge,
        362,
        {
            "backbone.features.0.0.weight": [32, 4, 3, 3],
            "backbone.features.1.conv.1.weight": [16, 32, 1, 1],
            "backbone.features.13.conv.1.0.weight": [576, 1, 3, 3],
            "block15.conv1.0.weight": [64, 96, 1, 1],
            "block23.conv3.weight": [16, 64, 1, 1],
        },
    ),
}

NETWORK_NAMES = [
    "softedge_hed",
    "softedge_hedsafe",
    "scribble_hed",
    "lineart",
    "lineart_coarse",
    "lineart_anime",
    "softedge_pidinet",
    "softedge_pidisafe",
    "scribble_pidinet",
    "mlsd",
]


def _seeded(build: Callable[[], nn.Module], seed: int) -> dict[str, torch.Tensor]:
    """Seeded weights; HED's mean colour a colour, and M-LSD's offsets scaled past its 0.1 px distance threshold."""
    special = {"norm": lambda t: t.uniform_(80, 160), "block23.conv3.weight": lambda t: t.mul_(10)}
    return seeded_state(build, seed, special)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """models/annotators with every supported file, written as the extension's downloads are laid out."""
    root = tmp_path_factory.mktemp("annotators")
    save_state(_seeded(hed.HEDNetwork, 1), root / "ControlNetHED.pth", half=True)
    save_state(_seeded(lineart.LineartGenerator, 2), root / "sk_model.pth")
    save_state(_seeded(lineart.LineartGenerator, 3), root / "sk_model2.pth")
    save_state(_seeded(lineart_anime.AnimeUNet, 4), root / "netG.pth", prefix="module.", half=True)
    save_state(_seeded(pidinet.PiDiNet, 5), root / "table5_pidinet.pth", prefix="module.", wrap="state_dict")
    save_state(_seeded(mlsd.MLSDLarge, 6), root / "mlsd_large_512_fp32.pth")
    return root


@pytest.fixture(scope="module")
def maps(folder: Path) -> dict[str, np.ndarray]:
    """Every network preprocessor's map of ``picture()``, made once for the tests that look at them."""
    return {name: pre.run(name, picture(), resolution=RESOLUTION, annotators=folder) for name in NETWORK_NAMES}


@pytest.mark.parametrize("network", sorted(REFERENCE))
def test_the_networks_have_the_reference_tensor_names_and_shapes(network: str) -> None:
    state = assert_reference(*REFERENCE[network])
    assert not any(name.startswith("module.") for name in state)


def test_the_saved_files_hold_exactly_the_networks_names(folder: Path) -> None:
    from webui.weights.formats import read_state_dict

    files = {
        "ControlNetHED.pth": "hed",
        "sk_model.pth": "lineart",
        "sk_model2.pth": "lineart",
        "netG.pth": "lineart_anime",
        "table5_pidinet.pth": "pidinet",
        "mlsd_large_512_fp32.pth": "mlsd",
    }
    for file, network in files.items():
        build, count, _ = REFERENCE[network]
        with torch.device("meta"):
            expected = {k: list(v.shape) for k, v in build().state_dict().items()}
        got = {k.removeprefix("module."): list(v.shape) for k, v in read_state_dict(folder / file).items()}
        assert got == expected and len(got) == count, file


def test_each_network_preprocessor_runs_from_its_file(folder: Path, maps: dict[str, np.ndarray]) -> None:
    for name, out in maps.items():
        assert out.dtype == np.uint8 and out.shape == (128, 160, 3), name  # short side at the resolution
        assert (out == out[:, :, :1]).all(), name  # a grey map as RGB
        assert not pre.missing_files(pre.find(name), folder)


@pytest.mark.parametrize("name", ["softedge_hed", "lineart", "lineart_anime", "softedge_pidinet", "mlsd"])
def test_the_same_image_gives_the_same_map(folder: Path, maps: dict[str, np.ndarray], name: str) -> None:
    assert (pre.run(name, picture(), resolution=RESOLUTION, annotators=folder) == maps[name]).all()


@pytest.mark.parametrize("name", [p.name for p in pre.PREPROCESSORS.values() if p.needs])
def test_without_its_files_a_network_preprocessor_names_them(tmp_path: Path, name: str) -> None:
    needed = pre.find(name).needs
    assert pre.missing_files(pre.find(name), tmp_path) == list(needed)
    needs = re.escape(f"module: preprocessor '{name}' needs {', '.join(needed)} in {tmp_path}")
    with pytest.raises(InvalidRequest, match=rf"^{needs} \(Easel never downloads it\)$"):
        pre.run(name, picture(), resolution=RESOLUTION, annotators=tmp_path)
    with pytest.raises(InvalidRequest, match=rf"needs {re.escape(', '.join(needed))} in models/annotators"):
        pre.run(name, picture(), resolution=RESOLUTION)  # no folder given: nothing is looked for
    (tmp_path / needed[0]).write_bytes(b"<html>rate limited</html>")  # a failed download
    assert pre.missing_files(pre.find(name), tmp_path) == list(needed[1:])
    for file in needed[1:]:
        (tmp_path / file).write_bytes(b"<html>rate limited</html>")
    cannot = re.escape(f"module: preprocessor '{name}' cannot use {needed[0]} in {tmp_path}: ")
    with pytest.raises(InvalidRequest, match=rf"^{cannot}.*unrecognised"):
        pre.run(name, picture(), resolution=RESOLUTION, annotators=tmp_path)


def test_scribbles_are_the_thinned_soft_edges_in_black_and_white(maps: dict[str, np.ndarray]) -> None:
    for soft, scribble in (("softedge_hed", "scribble_hed"), ("softedge_pidinet", "scribble_pidinet")):
        assert set(np.unique(maps[scribble])) <= {0, 255}
        assert (maps[scribble][:, :, 0] == common.scribble(maps[soft][:, :, 0])).all()
    soft = np.zeros((64, 96), np.uint8)  # a soft ridge along row 32, as a network's edge map has
    soft[26:39] = (255 * np.exp(-((np.arange(26, 39) - 32) ** 2) / 8.0))[:, None].astype(np.uint8)
    thin = common.scribble(soft)
    assert set(np.unique(thin)) == {0, 255}
    assert thin[32, 10:86].all() and not thin[:20].any() and not thin[45:].any()


def test_safe_variants_quantise_to_three_levels(maps: dict[str, np.ndarray]) -> None:
    for plain, safe in (("softedge_hed", "softedge_hedsafe"), ("softedge_pidinet", "softedge_pidisafe")):
        assert set(np.unique(maps[plain])) - {0, 127, 255}  # other levels, which the safe step removes
        assert set(np.unique(maps[safe])) <= {0, 127, 255}
    assert common.safe_step(np.array([0.0, 0.3, 0.34, 0.5, 0.67, 1.0])).tolist() == [0.0, 0.0, 0.5, 0.5, 1.0, 1.5]


def test_line_art_is_the_drawing_inverted(folder: Path, maps: dict[str, np.ndarray]) -> None:
    image = picture()
    out = maps["lineart"]
    model = loading.network(folder / "sk_model.pth", lineart.LineartGenerator)
    resized = pre.resize_short_side(image, RESOLUTION)
    drawing = common.on_padded(resized, lambda padded: lineart.drawing(model, padded))
    assert (out[:, :, 0] == 255 - drawing).all() and 0 < out.mean() < 255


@pytest.mark.parametrize(
    ("name", "file", "build", "last_bias"),
    [
        ("lineart_coarse", "sk_model2.pth", lineart.LineartGenerator, "model4.1.bias"),
        ("lineart_anime", "netG.pth", lineart_anime.AnimeUNet, "model.model.3.bias"),
    ],
)
def test_blank_paper_gives_a_black_map_and_ink_a_white_one(
    tmp_path: Path, name: str, file: str, build: Callable[[], nn.Module], last_bias: str
) -> None:
    """All weights zero, so the last layer's bias alone decides: a drawing of white paper (+) must come out black
    and one of solid ink (-) white, which pins the inversion and the output scaling."""
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in build().state_dict().items()}
    for bias, expected in ((20.0, 0), (-20.0, 255)):
        state = {k: torch.zeros(shape) for k, shape in shapes.items()}
        state[last_bias].fill_(bias)
        save_state(state, tmp_path / file, half=True)
        os.utime(tmp_path / file, ns=(0, int(bias + 30) * 10**9))  # a new mtime: the cached network is stale
        out = pre.run(name, picture(), resolution=RESOLUTION, annotators=tmp_path)
        assert (out == expected).all()


def test_mlsd_draws_thin_white_segments_and_checks_its_thresholds(folder: Path, maps: dict[str, np.ndarray]) -> None:
    out = maps["mlsd"]
    assert set(np.unique(out)) <= {0, 255} and out.any()
    strict = pre.run("mlsd", picture(), resolution=RESOLUTION, annotators=folder, threshold_a=1.5, threshold_b=19)
    assert set(np.unique(strict)) <= {0, 255} and strict.sum() < out.sum()  # higher thresholds keep fewer
    with pytest.raises(InvalidRequest, match=r"^threshold_a: MLSD Value Threshold must be between 0.01 and 2"):
        pre.run("mlsd", picture(), annotators=folder, threshold_a=5)
    with pytest.raises(InvalidRequest, match=r"^threshold_b: MLSD Distance Threshold must be between"):
        pre.run("mlsd", picture(), annotators=folder, threshold_b=30)


def test_a_file_that_does_not_fit_is_named_not_a_traceback(tmp_path: Path) -> None:
    save_state(_seeded(lineart.LineartGenerator, 7), tmp_path / "ControlNetHED.pth")  # the wrong network
    with pytest.raises(InvalidRequest) as info:
        pre.run("softedge_hed", picture(), resolution=RESOLUTION, annotators=tmp_path)
    message = info.value.message
    assert info.value.field == "module"
    assert message.startswith(f"preprocessor 'softedge_hed' cannot use ControlNetHED.pth in {tmp_path}: ")
    assert "37 tensors missing (norm, block1.convs.0.weight" in message and "24 unknown tensors" in message

    state = _seeded(pidinet.PiDiNet, 8)
    state["classifier.weight"] = torch.zeros(1, 5, 1, 1)
    save_state(state, tmp_path / "table5_pidinet.pth")
    with pytest.raises(InvalidRequest, match=r"classifier\.weight is \[1, 5, 1, 1\], the network needs \[1, 4, 1, 1\]"):
        pre.run("softedge_pidinet", picture(), resolution=RESOLUTION, annotators=tmp_path)


def test_networks_are_loaded_once_and_again_when_the_file_changes(tmp_path: Path) -> None:
    path = tmp_path / "sk_model.pth"
    save_state(_seeded(lineart.LineartGenerator, 9), path)
    first = loading.network(path, lineart.LineartGenerator)
    assert loading.network(path, lineart.LineartGenerator) is first
    assert next(first.parameters()).dtype == torch.float32 and not first.training
    save_state(_seeded(lineart.LineartGenerator, 10), path)
    os.utime(path, ns=(0, 123 * 10**9))
    second = loading.network(path, lineart.LineartGenerator)
    assert second is not first and not torch.equal(second.model0[1].weight, first.model0[1].weight)

    held = weakref.ref(second)
    del first, second
    path.write_bytes(b"x")  # changed again, and now unreadable: the stale network is not kept meanwhile
    with pytest.raises(ModelLoadError):
        loading.network(path, lineart.LineartGenerator)
    gc.collect()
    assert held() is None


def test_the_three_networks_openpose_full_needs_stay_loaded_together(folder: Path) -> None:
    files = [(folder / "sk_model.pth", lineart.LineartGenerator), (folder / "sk_model2.pth", lineart.LineartGenerator)]
    files.append((folder / "netG.pth", lineart_anime.AnimeUNet))
    loaded = [loading.network(path, build) for path, build in files]
    again = [loading.network(path, build) for path, build in files]  # the first again after the third: still held
    assert all(a is b for a, b in zip(loaded, again, strict=True))


def test_legacy_names() -> None:
    assert pre.find("hed").name == "softedge_hed" and pre.find("fake_scribble").name == "scribble_hed"
    assert pre.find("pidinet").name == "softedge_pidinet" and pre.find("lineart_realistic").name == "lineart"


def test_a_units_detected_map_comes_from_the_network(folder: Path, tmp_path: Path) -> None:
    from PIL import Image

    from webui.controlnet.detect import detect
    from webui.controlnet.units import ControlNetUnit

    unit = ControlNetUnit(module="scribble_hed", image=Image.fromarray(picture()), model="None", processor_res=128)
    detected = detect(unit, width=200, height=160, where="controlnet_units[0]", annotators=folder)
    assert detected.preview.shape == (160, 200, 3) and set(np.unique(detected.preview)) <= {0, 255}
    with pytest.raises(InvalidRequest) as info:
        detect(unit, width=200, height=160, where="controlnet_units[0]", annotators=tmp_path)
    assert info.value.field == "controlnet_units[0].module" and "needs ControlNetHED.pth" in info.value.message
