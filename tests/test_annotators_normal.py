"""The ``normal_bae`` preprocessor: NormalBAE (webui/controlnet/annotators/normal_bae.py, efficientnet.py) run from
``scannet.pt``.

The real file (291 MB) cannot be fetched here, so the network is built with seeded random weights and saved the way
the training script saved it: ``{"model": state_dict with "module." prefixes, "iter": N}``. The tensor count and
shapes below were read from the reference (the extension's annotator/normalbae with its vendored geffnet
``tf_efficientnet_b5_ap``, as controlnet_aux 0.0.10 ships it), so a naming slip fails here rather than on a user's
file.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.fixtures.annotators import (  # noqa: F401 (one_thread, forget_networks: autouse fixtures)
    assert_reference,
    forget_networks,
    one_thread,
    picture,
    save_state,
    seeded_state,
)
from webui.controlnet import preprocessors as pre
from webui.controlnet.annotators import NORMAL_BAE_FILE, loading, normal_bae, normal_colours
from webui.controlnet.annotators.efficientnet import EfficientNetB5
from webui.errors import InvalidRequest
from webui.weights.formats import read_state_dict

RESOLUTION = 64
ENCODER = "encoder.original_model."

# Read from the reference NNET(architecture="BN"): 936 tensors (852 in the encoder), 72,602,876 numbers (72,602,752
# besides the 124 BatchNorm counters).
SHAPES = {
    f"{ENCODER}conv_stem.weight": [48, 3, 3, 3],
    f"{ENCODER}bn1.running_var": [48],
    f"{ENCODER}blocks.0.0.conv_dw.weight": [48, 1, 3, 3],
    f"{ENCODER}blocks.0.0.se.conv_reduce.weight": [12, 48, 1, 1],
    f"{ENCODER}blocks.0.0.conv_pw.weight": [24, 48, 1, 1],
    f"{ENCODER}blocks.1.0.conv_pw.weight": [144, 24, 1, 1],
    f"{ENCODER}blocks.1.0.se.conv_reduce.weight": [6, 144, 1, 1],
    f"{ENCODER}blocks.2.4.conv_dw.weight": [384, 1, 5, 5],
    f"{ENCODER}blocks.4.0.conv_pwl.weight": [176, 768, 1, 1],
    f"{ENCODER}blocks.5.8.conv_dw.weight": [1824, 1, 5, 5],
    f"{ENCODER}blocks.6.2.se.conv_expand.weight": [3072, 128, 1, 1],
    f"{ENCODER}blocks.6.2.bn3.running_mean": [512],
    f"{ENCODER}conv_head.weight": [2048, 512, 1, 1],
    f"{ENCODER}bn2.weight": [2048],
    "decoder.conv2.weight": [2048, 2048, 1, 1],
    "decoder.up1._net.0.weight": [1024, 2224, 3, 3],
    "decoder.up2._net.1.running_var": [512],
    "decoder.up4._net.3.weight": [128, 128, 3, 3],
    "decoder.out_conv_res8.weight": [4, 512, 3, 3],
    "decoder.out_conv_res4.0.weight": [128, 516, 1],
    "decoder.out_conv_res2.0.weight": [128, 260, 1],
    "decoder.out_conv_res1.6.weight": [4, 128, 1],
}
BLOCKS_PER_STAGE = [3, 5, 5, 7, 7, 9, 3]
SIZE = (80, 112)  # the test picture's height and width


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """models/annotators holding scannet.pt as the extension downloads it (the training checkpoint layout)."""
    root = tmp_path_factory.mktemp("annotators")
    state = seeded_state(normal_bae.NormalBAE, 1)
    save_state(state, root / NORMAL_BAE_FILE, prefix="module.", wrap="model", extra={"iter": 12345})
    return root


@pytest.fixture(scope="module")
def normal(folder: Path) -> np.ndarray:
    return pre.run("normal_bae", picture(*SIZE), resolution=RESOLUTION, annotators=folder)


def test_the_network_has_the_reference_tensor_names_and_shapes() -> None:
    state = assert_reference(normal_bae.NormalBAE, 936, SHAPES, 72_602_752)
    with torch.device("meta"):
        assert len(EfficientNetB5().state_dict()) == 852
    for stage, count in enumerate(BLOCKS_PER_STAGE):
        assert f"{ENCODER}blocks.{stage}.{count - 1}.bn2.weight" in state
        assert f"{ENCODER}blocks.{stage}.{count}.bn2.weight" not in state
    assert not any("classifier" in name or "global_pool" in name for name in state)


def test_the_encoder_keeps_tensorflow_same_padding() -> None:
    """Stride-2 convolutions give ceil(size / 2) with the odd pixel padded after: an odd input's stages halve up."""
    with torch.device("meta"):
        stages = EfficientNetB5()(torch.empty(1, 3, 67, 101))
    sizes = [tuple(s.shape[-2:]) for s in stages]
    assert sizes == [(34, 51), (17, 26), (9, 13), (5, 7), (5, 7), (3, 4), (3, 4), (3, 4)]
    assert [s.shape[1] for s in stages] == [24, 40, 64, 128, 176, 304, 512, 2048]


def test_the_saved_file_loads_strictly_and_gives_an_rgb_map(folder: Path, normal: np.ndarray) -> None:
    assert not pre.missing_files(pre.find("normal_bae"), folder)
    model = loading.network(folder / NORMAL_BAE_FILE, normal_bae.NormalBAE, wrapper="model")
    saved = read_state_dict(folder / NORMAL_BAE_FILE, wrappers=("model",))
    assert torch.equal(model.decoder.conv2.weight, saved["module.decoder.conv2.weight"])
    assert normal.dtype == np.uint8 and normal.shape == (64, 88, 3)  # short side at the resolution
    assert not (normal == normal[:, :, :1]).all()  # a colour map, not grey
    assert len(np.unique(normal.reshape(-1, 3), axis=0)) > 50


def test_the_same_image_gives_the_same_map(folder: Path, normal: np.ndarray) -> None:
    assert (pre.run("normal_bae", picture(*SIZE), resolution=RESOLUTION, annotators=folder) == normal).all()


def test_the_map_is_the_unit_normals_coloured(folder: Path, normal: np.ndarray) -> None:
    model = loading.network(folder / NORMAL_BAE_FILE, normal_bae.NormalBAE, wrapper="model")
    resized = pre.resize_short_side(picture(*SIZE), RESOLUTION)
    padded = np.pad(resized, [[0, 0], [0, -resized.shape[1] % 64], [0, 0]], mode="edge")
    normals = normal_bae.normals(model, padded)
    assert normals.shape == (64, 128, 3) and np.allclose(np.linalg.norm(normals, axis=2), 1.0, atol=1e-5)
    assert (normal_colours(normals)[:, : normal.shape[1]] == normal).all()


def test_colours_follow_the_extension() -> None:
    """R, G, B = x, y, z mapped from [-1, 1] by (n + 1) / 2, scaled to 255 and truncated: a surface facing the
    camera (0, 0, 1) is the extension's flat lavender-blue (127, 127, 255)."""
    known = np.array(
        [[[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.6, 0.0, -0.8], [1.5, -2.0, 0.2]]], np.float32
    )
    assert normal_colours(known).tolist() == [
        [[127, 127, 255], [255, 127, 127], [127, 0, 127], [204, 127, 25], [255, 0, 153]]
    ]


def test_a_wrong_file_is_named_not_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / NORMAL_BAE_FILE
    save_state({"encoder.conv.weight": torch.zeros(2, 2)}, path, wrap="model", extra={"iter": 1})
    with pytest.raises(InvalidRequest) as info:
        pre.run("normal_bae", picture(*SIZE), annotators=tmp_path)
    assert info.value.message.startswith(f"preprocessor 'normal_bae' cannot use scannet.pt in {tmp_path}: ")
    assert "812 tensors missing (encoder.original_model.conv_stem.weight" in info.value.message  # 936 less 124 counters
    assert "1 unknown tensors (encoder.conv.weight)" in info.value.message

    save_state({"note": "no weights"}, path, wrap="model")
    os.utime(path, ns=(0, 5 * 10**9))
    with pytest.raises(InvalidRequest, match=r"cannot use scannet\.pt in .*'model' entry holds no tensors"):
        pre.run("normal_bae", picture(*SIZE), annotators=tmp_path)
