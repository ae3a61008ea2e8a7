"""The depth preprocessors (``depth``/``depth_midas``, ``depth_leres``, ``depth_leres++``) run from the extension's
files: webui/controlnet/annotators/midas.py, leres.py, leres_boost.py, and their ``detect_*`` in ``__init__``.

The real files (470, 530 and 318 MB) cannot be fetched here, so each network is built with seeded random weights and
saved the way its file holds them: MiDaS as a flat state dict, ``res101.pth`` as AdelaiDepth's checkpoint
(``{"depth_model": {"module.depth_model...": ...}, "shift_model": ..., "focal_model": ...}``), ``latest_net_G.pth``
flat. The counts and shapes below were read from the references (controlnet_aux 0.0.10's copies of the extension's
annotator/midas with timm 0.6.13's ``vit_base_resnet50_384``, annotator/leres with its pix2pix ``unet_1024``), so a
naming slip fails here rather than on a user's file. LeReS++ at its real sizes (LeReS at 448 px and more, the merge
U-Net at 1024 px) takes tens of seconds on a CPU, so its test runs the pipeline with the networks loaded from the
files but their calls replaced by known functions.
"""

from __future__ import annotations

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
from webui.controlnet import annotators
from webui.controlnet import preprocessors as pre
from webui.controlnet.annotators import leres, leres_boost, loading, midas
from webui.errors import InvalidRequest

RESOLUTION = 64
VIT = "pretrained.model."
TRUNK = f"{VIT}patch_embed.backbone."
ENCODER = "depth_model.encoder_modules.encoder."
DECODER = "depth_model.decoder_modules."
INNERMOST = "model.model.1" + ".model.3" * 8  # the merge U-Net's tenth level, nested in the nine above it

# (network, tensor count, parameter count, a few (name, shape) pairs), as the reference definitions give them.
REFERENCE: dict[str, tuple[Callable[[], nn.Module], int, int, dict[str, list[int]]]] = {
    "midas": (
        midas.DPTHybrid,
        368,
        123_146_985,
        {
            f"{VIT}pos_embed": [1, 577, 768],
            f"{VIT}cls_token": [1, 1, 768],
            f"{TRUNK}stem.conv.weight": [64, 3, 7, 7],
            f"{TRUNK}stages.0.blocks.0.downsample.conv.weight": [256, 64, 1, 1],
            f"{TRUNK}stages.2.blocks.8.conv2.weight": [256, 256, 3, 3],
            f"{TRUNK}stages.2.blocks.8.norm3.bias": [1024],
            f"{VIT}patch_embed.proj.weight": [768, 1024, 1, 1],
            f"{VIT}blocks.11.attn.qkv.weight": [2304, 768],
            f"{VIT}blocks.0.mlp.fc1.weight": [3072, 768],
            f"{VIT}head.weight": [1000, 768],
            "pretrained.act_postprocess3.0.project.0.weight": [768, 1536],
            "pretrained.act_postprocess4.4.weight": [768, 768, 3, 3],
            "scratch.layer1_rn.weight": [256, 256, 3, 3],
            "scratch.layer4_rn.weight": [256, 768, 3, 3],
            "scratch.refinenet4.resConfUnit1.conv1.weight": [256, 256, 3, 3],
            "scratch.output_conv.2.weight": [32, 128, 3, 3],
            "scratch.output_conv.4.bias": [1],
        },
    ),
    "leres": (
        leres.LeReS,
        712,  # 600 without BatchNorm's num_batches_tracked
        115_568_065,
        {
            f"{ENCODER}conv1.weight": [64, 3, 7, 7],
            f"{ENCODER}layer1.0.conv2.weight": [256, 8, 3, 3],
            f"{ENCODER}layer3.22.conv2.weight": [1024, 32, 3, 3],
            f"{ENCODER}layer4.0.downsample.0.weight": [2048, 1024, 1, 1],
            f"{ENCODER}layer4.2.bn3.running_var": [2048],
            f"{DECODER}conv.conv1.weight": [512, 2048, 3, 3],
            f"{DECODER}conv.conv_branch.2.running_mean": [512],
            f"{DECODER}conv1.weight": [256, 512, 3, 3],
            f"{DECODER}ffm2.ftb1.conv1.weight": [256, 1024, 3, 3],
            f"{DECODER}ffm0.ftb2.conv_branch.4.bias": [256],
            f"{DECODER}outconv.adapt_conv.0.weight": [128, 256, 3, 3],
            f"{DECODER}outconv.adapt_conv.3.weight": [1, 128, 3, 3],
        },
    ),
    "merge": (
        leres_boost.MergeNet,
        21,
        79_564_801,
        {
            "model.model.0.weight": [64, 2, 4, 4],
            "model.model.3.weight": [128, 1, 4, 4],
            "model.model.3.bias": [1],
            "model.model.1.model.1.weight": [128, 64, 4, 4],
            "model.model.1.model.5.weight": [256, 64, 4, 4],
            f"{INNERMOST}.model.1.weight": [512, 512, 4, 4],
            f"{INNERMOST}.model.3.weight": [512, 512, 4, 4],
        },
    ),
}


def _seeded(build: Callable[[], nn.Module], seed: int) -> dict[str, torch.Tensor]:
    """Seeded weights; the depth head's bias set, so MiDaS's final ReLU does not zero the map."""
    return seeded_state(build, seed, {"scratch.output_conv.4.bias": lambda t: t.fill_(0.5)})


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """models/annotators with the three depth files, laid out as the downloads are (float16 to save time here; the
    loader makes every network float32)."""
    root = tmp_path_factory.mktemp("annotators")
    save_state(_seeded(midas.DPTHybrid, 1), root / annotators.MIDAS_FILE, half=True)
    point_cloud = {"module.fc.weight": torch.zeros(2, 2)}  # AdelaiDepth keeps its shift/focal networks beside
    save_state(
        _seeded(leres.LeReS, 2),
        root / annotators.LERES_FILE,
        prefix="module.",
        half=True,
        wrap="depth_model",
        extra={"shift_model": point_cloud, "focal_model": point_cloud},
    )
    save_state(_seeded(leres_boost.MergeNet, 3), root / annotators.LERES_BOOST_FILE, half=True)
    return root


@pytest.fixture(scope="module")
def maps(folder: Path) -> dict[str, np.ndarray]:
    return {
        name: pre.run(name, picture(), resolution=RESOLUTION, annotators=folder) for name in ("depth", "depth_leres")
    }


@pytest.mark.parametrize("network", sorted(REFERENCE))
def test_the_networks_have_the_reference_tensor_names_and_shapes(network: str) -> None:
    build, count, numbers, shapes = REFERENCE[network]
    assert_reference(build, count, shapes, numbers)


def test_the_files_load_strictly_under_their_real_layouts(folder: Path) -> None:
    from webui.weights.formats import read_state_dict

    tensors = read_state_dict(folder / annotators.LERES_FILE, wrappers=("depth_model",))  # "module." still on
    with torch.device("meta"):
        expected = {k: list(v.shape) for k, v in leres.LeReS().state_dict().items()}
    assert {k.removeprefix("module."): list(v.shape) for k, v in tensors.items()} == expected
    for file, network in ((annotators.MIDAS_FILE, "midas"), (annotators.LERES_BOOST_FILE, "merge")):
        with torch.device("meta"):
            expected = {k: list(v.shape) for k, v in REFERENCE[network][0]().state_dict().items()}
        assert {k: list(v.shape) for k, v in read_state_dict(folder / file).items()} == expected, file
    model = loading.network(folder / annotators.LERES_FILE, leres.LeReS, wrapper="depth_model")
    assert loading.network(folder / annotators.LERES_FILE, leres.LeReS, wrapper="depth_model") is model
    assert not model.training
    assert next(model.parameters()).dtype == torch.float32


def test_depth_maps_run_from_the_files_as_grey_rgb_at_the_resolution(folder: Path, maps: dict[str, np.ndarray]) -> None:
    for name, out in maps.items():
        assert out.dtype == np.uint8 and out.shape == (64, 80, 3), name  # short side at the resolution
        assert (out == out[:, :, :1]).all(), name
        assert int(out.max()) - int(out.min()) > 200 and len(np.unique(out)) > 20, name  # stretched (over the padding)
        assert (pre.run(name, picture(), resolution=RESOLUTION, annotators=folder) == out).all(), name  # deterministic
        assert not pre.missing_files(pre.find(name), folder)
    assert pre.find("depth_midas") is pre.find("depth")


class _KnownDepth(nn.Module):
    """Stands in for a network: returns ``values`` (1xHxW, at the input's size) and keeps what it was given."""

    def __init__(self, values: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.values = values
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.clone())
        return self.values(x)


def _disc(x: torch.Tensor) -> torch.Tensor:
    """1 inside a disc in the left half, 0.25 elsewhere, at the input's size (batch x H x W)."""
    h, w = x.shape[-2:]
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    inside = ((ys - h // 2) ** 2 + (xs - w // 4) ** 2) < (h // 4) ** 2
    return torch.where(inside, 1.0, 0.25)[None]


def test_midas_gets_rgb_in_minus_one_to_one_and_stretches_nearer_to_brighter() -> None:
    image = picture(128, 192)
    model = _KnownDepth(_disc)  # MiDaS predicts inverse depth: the disc is nearer
    out = midas.depth_map(model, image)  # type: ignore[arg-type]
    expected = torch.from_numpy(image).float().permute(2, 0, 1)[None] / 127.5 - 1.0
    assert torch.equal(model.seen[0], expected)
    assert out.dtype == np.uint8 and out.shape == (128, 192)
    assert set(np.unique(out)) == {0, 255} and out[64, 48] == 255 and out[64, 160] == 0
    flat = midas.depth_map(_KnownDepth(lambda x: torch.zeros(1, *x.shape[-2:])), image)  # type: ignore[arg-type]
    assert not flat.any()


def test_leres_gets_bgr_normalised_without_scaling_and_maps_nearer_to_brighter() -> None:
    image = picture(128, 192)
    model = _KnownDepth(lambda x: 1 - 0.5 * _disc(x)[:, None])  # LeReS predicts depth: the disc is nearer
    depth_values = leres.estimate(model, image, 192, 128)  # type: ignore[arg-type]
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    bgr = torch.from_numpy(image[:, :, ::-1].copy()).float().permute(2, 0, 1)
    assert torch.allclose(model.seen[0][0], (bgr - mean[:, None, None]) / std[:, None, None])  # 0-255, not 0-1
    out = leres.depth_image(depth_values)
    assert set(np.unique(out)) == {0, 255} and out[64, 48] == 255 and out[64, 160] == 0
    leres.estimate(model, image, 96, 64)  # a size of its own: resized in, and the depth back to the image's
    assert model.seen[1].shape == (1, 3, 64, 96)


def test_leres_thresholds_are_the_extensions_remove_near_and_background_percentages(folder: Path) -> None:
    ramp = np.tile(np.linspace(0.0, 1.0, 256, dtype=np.float32), (4, 1))  # near (0) on the left, far on the right
    plain = leres.depth_image(ramp)
    assert plain[0, 0] == 255 and plain[0, -1] == 0 and (np.diff(plain[0].astype(int)) <= 0).all()
    near = leres.depth_image(ramp, remove_near=40)  # up to 40% of 255 before inverting: saturated to white
    saturated = plain[0] >= 255 - 102
    assert (near[0, saturated] == 255).all() and (near[0, ~saturated] == plain[0, ~saturated]).all()
    far = leres.depth_image(ramp, remove_background=60)  # up to 60% of 255 after inverting: black
    assert (far[0, plain[0] <= 153] == 0).all() and (far[0, plain[0] > 153] == plain[0, plain[0] > 153]).all()
    assert (leres.depth_image(np.full((4, 4), 3.0, np.float32)) == 255).all()  # flat: all zero, inverted
    with pytest.raises(InvalidRequest, match=r"^threshold_a: Remove Near % must be between 0 and 100, got 150"):
        pre.run("depth_leres", picture(), threshold_a=150, annotators=folder)
    boosted = pre.find("depth_leres++")
    assert boosted.threshold_b is not None and boosted.threshold_b.label == "Remove Background %"
    assert pre.find("depth").threshold_a is None


def test_leres_plus_plus_loads_both_files_and_runs_the_boosting_pipeline(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The files load strictly; the networks' calls are replaced by known functions (at their real sizes the run
    takes tens of seconds): LeReS by the image's red channel as depth, the merge by the mean of its two inputs."""
    calls: list[tuple[int, int]] = []

    def known_estimate(model: leres.LeReS, image: np.ndarray, width: int, height: int) -> np.ndarray:
        assert isinstance(model, leres.LeReS)
        calls.append((width, height))
        return image[:, :, 0].astype(np.float32) / 255.0

    def known_merge(merger: leres_boost.MergeNet, outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
        assert isinstance(merger, leres_boost.MergeNet) and outer.shape == inner.shape == (1024, 1024)
        return (outer + inner) / 2

    monkeypatch.setattr(leres_boost, "estimate", known_estimate)
    monkeypatch.setattr(leres_boost, "merge", known_merge)
    image = picture()
    out = pre.run("depth_leres++", image, resolution=RESOLUTION, annotators=folder)
    assert out.shape == (64, 80, 3) and (out == out[:, :, :1]).all()
    assert calls == [(448, 448), (448, 448)]  # a small image: R_x is the receptive field, no patches
    red = pre.resize_short_side(image, RESOLUTION)[:, :, 0].astype(int)
    assert out[:, :, 0][red > 200].mean() < out[:, :, 0][red < 100].mean()  # redder = farther here = darker
    assert (pre.run("depth_leres++", image, resolution=RESOLUTION, annotators=folder) == out).all()


def test_the_merge_network_keeps_the_activated_input_in_its_skips() -> None:
    torch.manual_seed(0)
    level = leres_boost._Level(4, 8)  # an innermost level: [leaky, down, relu, up, identity]
    x = torch.randn(1, 4, 8, 8)
    out = level(x.clone())
    leaky = nn.functional.leaky_relu(x, 0.2)
    up = level.model[3](torch.relu(level.model[1](leaky)))
    assert torch.equal(out, torch.cat([leaky, up], dim=1))
    small = leres_boost.MergeNet(levels=6, width=4)  # the same layout, shallower: 64 px down to 1
    y = small(torch.rand(1, 2, 64, 64) * 2 - 1)
    assert y.shape == (1, 1, 64, 64) and y.abs().max() <= 1


def test_boosting_picks_patches_where_the_gradients_are_dense() -> None:
    image = np.full((1200, 1400, 3), 128, np.uint8)
    image[300:700, 500:900] = (np.random.default_rng(1).random((400, 400, 3)) * 255).astype(np.uint8)
    patches = leres_boost.select_patches(image, 896, factor=0.5)
    assert patches and [p[2] for p in patches] == sorted((p[2] for p in patches), reverse=True)
    for x, y, w, h in patches:
        assert w == h >= 896 and x < 900 and x + w > 500 and y < 700 and y + h > 300  # each covers the texture
    size, density = leres_boost.processing_resolution(image)
    assert size % 224 == 0 and 448 <= size <= 1600 and 0 < density <= 1
    tiny = leres_boost.processing_resolution(picture(40, 48))  # no step to search: the original fails here
    assert tiny[0] == 448


def test_a_depth_file_that_does_not_fit_is_named_not_a_traceback(tmp_path: Path) -> None:
    save_state(leres_boost.MergeNet(levels=6, width=4).state_dict(), tmp_path / "res101.pth")  # another network
    with pytest.raises(InvalidRequest) as info:
        pre.run("depth_leres", picture(), resolution=RESOLUTION, annotators=tmp_path)
    assert info.value.field == "module"
    assert info.value.message.startswith(f"preprocessor 'depth_leres' cannot use res101.pth in {tmp_path}: ")
    assert "600 tensors missing (depth_model.encoder_modules.encoder.conv1.weight" in info.value.message
    assert "13 unknown tensors (model.model.0.weight" in info.value.message

    save_state({}, tmp_path / "res101.pth", wrap="depth_model", extra={"epoch": 3})
    with pytest.raises(InvalidRequest, match=r"cannot use res101\.pth in .*holds no tensors"):
        pre.run("depth_leres", picture(), resolution=RESOLUTION, annotators=tmp_path)
