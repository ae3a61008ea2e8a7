"""The OpenPose preprocessors (webui/controlnet/annotators/openpose*.py): networks, post-processing and drawing.

The real files (body_pose_model.pth 209 MB, hand_pose_model.pth 147 MB, facenet.pth 154 MB) cannot be fetched here,
so the networks are built with seeded random weights and saved under the tensor names the files use, checked
against figures read from the reference definitions (pytorch-openpose's ``bodypose_model``/``handpose_model`` as the
extension loads them, the file's names being the layer names without the ``model0.``-style group; lllyasviel's
``FaceNet``). Random networks find nobody, so the post-processing is tested on heat maps and PAFs made by hand for a
person whose keypoints are known.
"""

from __future__ import annotations

import shutil
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
from webui.controlnet.annotators import loading, openpose, openpose_body, openpose_draw, openpose_face, openpose_hand
from webui.errors import InvalidRequest

NAMES = ["openpose", "openpose_hand", "openpose_face", "openpose_faceonly", "openpose_full"]

# (network, tensor count, a few (name, shape) pairs), as the reference definitions give them.
REFERENCE: dict[str, tuple[Callable[[], nn.Module], int, dict[str, list[int]]]] = {
    "body": (
        openpose_body.BodyPoseNetwork,
        184,
        {
            "conv1_1.weight": [64, 3, 3, 3],
            "conv4_2.weight": [512, 512, 3, 3],
            "conv4_3_CPM.weight": [256, 512, 3, 3],
            "conv4_4_CPM.weight": [128, 256, 3, 3],
            "conv5_4_CPM_L1.weight": [512, 128, 1, 1],
            "conv5_5_CPM_L1.weight": [38, 512, 1, 1],
            "conv5_5_CPM_L2.bias": [19],
            "Mconv1_stage2_L1.weight": [128, 185, 7, 7],
            "Mconv6_stage4_L2.weight": [128, 128, 1, 1],
            "Mconv7_stage6_L1.weight": [38, 128, 1, 1],
            "Mconv7_stage6_L2.weight": [19, 128, 1, 1],
        },
    ),
    "hand": (
        openpose_hand.HandPoseNetwork,
        104,
        {
            "conv4_4.weight": [512, 512, 3, 3],
            "conv5_3_CPM.weight": [128, 512, 3, 3],
            "conv6_1_CPM.weight": [512, 128, 1, 1],
            "conv6_2_CPM.weight": [22, 512, 1, 1],
            "Mconv1_stage2.weight": [128, 150, 7, 7],
            "Mconv7_stage6.bias": [22],
        },
    ),
    "face": (
        openpose_face.FaceNetwork,
        104,
        {
            "conv1_2.weight": [64, 64, 3, 3],
            "conv6_2_CPM.weight": [71, 512, 1, 1],
            "Mconv1_stage3.weight": [128, 199, 7, 7],
            "Mconv5_stage6.weight": [128, 128, 7, 7],
            "Mconv7_stage6.weight": [71, 128, 1, 1],
        },
    ),
}
FILES = {"body": annotators.BODY_FILE, "hand": annotators.HAND_FILE, "face": annotators.FACE_FILE}

# A person facing the viewer in a 200x240 image: (x, y) of the 18 COCO keypoints (nose, neck, right arm, left arm,
# right leg, left leg, eyes, ears).
PERSON = [
    (100, 40),
    (100, 70),
    (75, 70),
    (65, 105),
    (60, 140),
    (125, 70),
    (135, 105),
    (140, 140),
    (88, 140),
    (88, 180),
    (88, 220),
    (112, 140),
    (112, 180),
    (112, 220),
    (94, 34),
    (106, 34),
    (86, 38),
    (114, 38),
]
WIDTH, HEIGHT = 200, 240


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """models/annotators with the three files (the body in float32 as downloaded, the others in float16)."""
    root = tmp_path_factory.mktemp("annotators")
    for seed, (network, (build, _, _)) in enumerate(REFERENCE.items()):
        save_state(seeded_state(build, seed), root / FILES[network], half=network != "body")
    return root


def _gauss(cx: float, cy: float, sigma: float, h: int = HEIGHT, w: int = WIDTH) -> np.ndarray:
    ys, xs = np.mgrid[0:h, 0:w]
    return np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma * sigma))


def _person_maps(points: list[tuple[float, float] | None], h: int, w: int, sigma: float, width: float):
    """Heat maps (HxWx19) with a peak at each keypoint and PAFs (HxWx38) holding each limb's unit vector within
    ``width`` of it: what a perfect body network would output for this person."""
    heat = np.zeros((h, w, 19))
    pafs = np.zeros((h, w, 38))
    for part, point in enumerate(points):
        if point is not None:
            heat[:, :, part] = _gauss(*point, sigma, h, w)
    ys, xs = np.mgrid[0:h, 0:w].astype(float)
    for a, b, channel_x, channel_y in openpose_body.LIMBS:
        if points[a] is None or points[b] is None:
            continue
        (ax, ay), (bx, by) = points[a], points[b]
        length = np.hypot(bx - ax, by - ay)
        ux, uy = (bx - ax) / length, (by - ay) / length
        along = (xs - ax) * ux + (ys - ay) * uy
        near = (along >= -1) & (along <= length + 1) & (np.abs((xs - ax) * uy - (ys - ay) * ux) <= width)
        pafs[:, :, channel_x][near] = ux
        pafs[:, :, channel_y][near] = uy
    return heat, pafs


@pytest.mark.parametrize("network", sorted(REFERENCE))
def test_the_networks_have_the_reference_tensor_names_and_shapes(network: str) -> None:
    numel = {"body": 52311446, "hand": 36832324, "face": 38425706}[network]
    state = assert_reference(*REFERENCE[network], numel)
    assert all(name.count(".") == 1 for name in state)  # flat Caffe layer names, as in the files


def test_seeded_networks_load_from_their_files_and_run(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """openpose_full: the body network runs on the picture (random weights find nobody); given PERSON where it
    looked, the hand network runs on both hands' crops and the face network on the face's, and PERSON is drawn."""
    monkeypatch.setattr(openpose_hand, "SCALES", (0.5,))  # the reference's four scales reach 736 px: slow here
    monkeypatch.setattr(openpose_face, "INPUT_SIZE", 96)
    found: list[tuple[type, list]] = []
    ran: list[tuple[str, type, tuple[int, ...]]] = []
    detect_people = openpose_body.detect_people

    def people(model: nn.Module, bgr: np.ndarray) -> list:
        found.append((type(model), detect_people(model, bgr)))
        return [[(float(x), float(y)) for x, y in PERSON]]

    def spy(module: object, name: str) -> None:
        original = getattr(module, name)

        def call(model: nn.Module, crop: np.ndarray) -> object:
            ran.append((name, type(model), crop.shape))
            return original(model, crop)

        monkeypatch.setattr(module, name, call)

    monkeypatch.setattr(openpose_body, "detect_people", people)
    spy(openpose_hand, "hand_keypoints")
    spy(openpose_face, "face_keypoints")
    out = pre.run("openpose_full", picture(HEIGHT, WIDTH), resolution=WIDTH, annotators=folder)
    assert out.shape == (HEIGHT, WIDTH, 3) and out.dtype == np.uint8
    assert found == [(openpose_body.BodyPoseNetwork, [])]
    assert [(name, kind) for name, kind, _ in ran] == [
        ("hand_keypoints", openpose_hand.HandPoseNetwork),
        ("hand_keypoints", openpose_hand.HandPoseNetwork),
        ("face_keypoints", openpose_face.FaceNetwork),
    ]
    assert all(shape[0] == shape[1] >= 20 for _, _, shape in ran)  # square crops
    assert tuple(out[180, 88]) == openpose_draw.BODY_COLOURS[9]  # PERSON's right knee, drawn
    body = loading.network(folder / annotators.BODY_FILE, openpose_body.BodyPoseNetwork)
    assert next(body.parameters()).dtype == torch.float32 and not body.training
    assert loading.network(folder / annotators.BODY_FILE, openpose_body.BodyPoseNetwork) is body  # held
    assert torch.equal(body.conv1_1.weight, seeded_state(openpose_body.BodyPoseNetwork, 0)["conv1_1.weight"])


def test_the_hand_and_face_networks_run_on_a_crop(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(openpose_hand, "SCALES", (0.5,))  # the reference's four scales reach 736 px: slow here
    monkeypatch.setattr(openpose_face, "INPUT_SIZE", 96)
    crop = picture(40, 40)
    hand = loading.network(folder / annotators.HAND_FILE, openpose_hand.HandPoseNetwork)
    points = openpose_hand.hand_keypoints(hand, crop)
    assert points.shape == (21, 2) and ((points >= 0) & (points < 40)).all()
    face = loading.network(folder / annotators.FACE_FILE, openpose_face.FaceNetwork)
    maps = openpose_face.face_heatmaps(face, crop)
    assert maps.shape == (71, 40, 40) and maps.dtype == np.float32


def test_each_name_draws_what_the_extension_draws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls = []

    def fake(image: np.ndarray, folder: Path, *, body: bool, hand: bool, face: bool) -> np.ndarray:
        calls.append((body, hand, face))
        return np.zeros_like(image)

    monkeypatch.setattr(annotators, "detect_openpose", fake)
    for file in FILES.values():
        (tmp_path / file).write_bytes(b"x")
    for name in NAMES:
        out = pre.run(name, picture(64, 80), resolution=64, annotators=tmp_path)
        assert out.shape == (64, 80, 3)
    assert calls == [
        (True, False, False),
        (True, True, False),
        (True, False, True),
        (False, False, True),
        (True, True, True),
    ]
    needs = {name: pre.find(name).needs for name in NAMES}
    assert needs == {
        "openpose": ("body_pose_model.pth",),
        "openpose_hand": ("body_pose_model.pth", "hand_pose_model.pth"),
        "openpose_face": ("body_pose_model.pth", "facenet.pth"),
        "openpose_faceonly": ("body_pose_model.pth", "facenet.pth"),
        "openpose_full": ("body_pose_model.pth", "hand_pose_model.pth", "facenet.pth"),
    }


def test_a_file_that_does_not_fit_is_named_not_a_traceback(folder: Path, tmp_path: Path) -> None:
    shutil.copy(folder / annotators.HAND_FILE, tmp_path / annotators.BODY_FILE)  # the hand model in the body's place
    with pytest.raises(InvalidRequest) as info:
        pre.run("openpose", picture(64, 80), resolution=64, annotators=tmp_path)
    message = info.value.message
    assert info.value.field == "module"
    assert message.startswith(f"preprocessor 'openpose' cannot use body_pose_model.pth in {tmp_path}: ")
    # conv1_1 to conv4_2 are the same layers in both
    assert "164 tensors missing (conv4_3_CPM.weight" in message and "84 unknown tensors (conv4_3.weight" in message

    shutil.copy(folder / annotators.BODY_FILE, tmp_path / annotators.BODY_FILE)
    cut = (folder / annotators.FACE_FILE).read_bytes()[:100_000]
    (tmp_path / annotators.FACE_FILE).write_bytes(cut)  # a download cut short
    with pytest.raises(InvalidRequest, match=r"^module: preprocessor 'openpose_faceonly' cannot use facenet\.pth in "):
        pre.run("openpose_faceonly", picture(64, 80), resolution=64, annotators=tmp_path)


def test_a_person_is_assembled_from_heat_maps_and_pafs() -> None:
    heat, pafs = _person_maps(PERSON, HEIGHT, WIDTH, sigma=2.0, width=2.0)
    noise = np.random.default_rng(1).uniform(0, 0.05, heat.shape)  # under the peak threshold after smoothing
    people = openpose_body.people_from_maps(heat + noise, pafs)
    assert people == [[(float(x), float(y)) for x, y in PERSON]]

    partial = [None if part in (3, 4, 9, 10, 16) else point for part, point in enumerate(PERSON)]
    heat, pafs = _person_maps(partial, HEIGHT, WIDTH, sigma=2.0, width=2.0)
    assert openpose_body.people_from_maps(heat, pafs) == [
        [None if p is None else (float(p[0]), float(p[1])) for p in partial]
    ]

    heat, _ = _person_maps(PERSON, HEIGHT, WIDTH, sigma=2.0, width=2.0)
    assert openpose_body.people_from_maps(heat, np.zeros((HEIGHT, WIDTH, 38))) == []  # parts, but no limbs

    two = [(x - 50, y) for x, y in PERSON], [(x + 50, y) for x, y in PERSON]
    maps = [_person_maps(person, HEIGHT, WIDTH, sigma=2.0, width=2.0) for person in two]
    people = openpose_body.people_from_maps(np.maximum(maps[0][0], maps[1][0]), maps[0][1] + maps[1][1])
    assert sorted(people) == sorted([[(float(x), float(y)) for x, y in person] for person in two])


def test_the_body_network_s_maps_are_brought_back_to_the_image_s_size() -> None:
    """A stand-in network that outputs the maps of PERSON at 1/8 of its input (cell c covering pixels 8c to 8c+7):
    the keypoints come back within two pixels, so the scaling to 184 pixels high, the stride and the crop of the
    padding line up."""

    class Perfect(nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            h, w = x.shape[2] // 8, x.shape[3] // 8
            scale = 0.5 * openpose_body.BOX / HEIGHT
            cells = [((px * scale - 3.5) / 8, (py * scale - 3.5) / 8) for px, py in PERSON]
            heat, pafs = _person_maps(cells, h, w, sigma=0.8, width=1.0)  # type: ignore[arg-type]
            as_tensor = lambda a: torch.from_numpy(a.transpose(2, 0, 1)[None].astype(np.float32))  # noqa: E731
            return as_tensor(pafs), as_tensor(heat)

    bgr = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    people = openpose.detect_poses(bgr, Perfect(), None, None)  # type: ignore[arg-type]
    assert len(people) == 1
    found = np.array(people[0].body) * [WIDTH, HEIGHT]
    assert np.abs(found - np.array(PERSON)).max() <= 2


def test_the_drawn_map_has_the_limb_colours_where_the_limbs_are() -> None:
    pose = openpose_draw.Pose([(x / WIDTH, y / HEIGHT) for x, y in PERSON])
    canvas = openpose_draw.draw_poses([pose], HEIGHT, WIDTH, body=True, hand=False, face=False)
    dim = lambda colour: tuple(int(c * 0.6) for c in colour)  # noqa: E731
    colours = openpose_draw.BODY_COLOURS
    assert tuple(canvas[200, 88]) == dim(colours[8]) == (0, 153, 102)  # right knee to ankle, half way
    assert tuple(canvas[105, 94]) == dim(colours[6]) == (0, 153, 0)  # neck to right hip
    assert tuple(canvas[105, 106]) == dim(colours[9])  # neck to left hip
    assert tuple(canvas[70, 87]) == dim(colours[0])  # neck to right shoulder
    assert tuple(canvas[40, 100]) == colours[0] == (255, 0, 0)  # the nose, in full colour
    assert tuple(canvas[180, 88]) == colours[9] and tuple(canvas[220, 112]) == colours[13]  # knee, ankle
    assert not canvas[:25].any() and not canvas[:, :50].any() and not canvas[230:].any()  # black elsewhere
    assert not openpose_draw.draw_poses([pose], HEIGHT, WIDTH, body=False, hand=True, face=True).any()


def test_hands_and_face_are_found_and_drawn() -> None:
    boxes = openpose_hand.hand_boxes([(float(x), float(y)) for x, y in PERSON], WIDTH, HEIGHT)
    assert boxes == [(115, 125, 53, True), (31, 125, 53, False)]  # past the wrists, the left hand first
    no_right_wrist = [None if part == 4 else (float(x), float(y)) for part, (x, y) in enumerate(PERSON)]
    assert openpose_hand.hand_boxes(no_right_wrist, WIDTH, HEIGHT) == [(115, 125, 53, True)]
    assert openpose_face.face_box([(float(x), float(y)) for x, y in PERSON], WIDTH, HEIGHT) == (79, 19, 42)
    assert openpose_face.face_box([None, *PERSON[1:]], WIDTH, HEIGHT) is None

    heat = np.zeros((128, 128, 22))
    for part in range(20):
        heat[:, :, part] = _gauss(10 + 5 * part, 64, 2.0, 128, 128)
    heat[:, :, 0] = 0.5 * _gauss(30, 40, 6.0, 128, 128) + 0.9 * _gauss(100, 100, 1.5, 128, 128)  # a bigger blob wins
    points = openpose_hand.keypoints_from_heatmaps(heat, 256, 64)  # a crop 64 wide, 256 high
    assert points[0].tolist() == [15, 80] and points[1].tolist() == [7, 128] and points[20].tolist() == [0, 0]

    maps = np.zeros((71, 30, 40), np.float32)
    maps[0, 7, 12] = 0.8
    maps[2, 3, 3] = 0.04  # under the threshold: no point
    maps[3, 9, 20] = maps[3, 5, 30] = 0.5  # two maxima: the first in row order
    assert openpose_face.keypoints_from_heatmaps(maps) == [(12, 7), (30, 5)]

    hand = [(0.5 + 0.05 * (i % 5), 0.3 + 0.05 * (i // 5)) for i in range(21)]
    hand[20] = (-1 / WIDTH, -1 / HEIGHT)  # not found
    pose = openpose_draw.Pose([None] * 18, left_hand=hand, face=[(0.2, 0.2)])
    canvas = openpose_draw.draw_poses([pose], HEIGHT, WIDTH, body=True, hand=True, face=True)
    assert tuple(canvas[72, 100]) == (0, 0, 255)  # a hand keypoint: blue
    assert tuple(canvas[48, 40]) == (255, 255, 255)  # a face point: white
    first_bone = canvas[72, 101:110]  # wrist (0) to keypoint 1, hue 0
    assert (first_bone == (255, 0, 0)).all(axis=1).any()
    faceless = openpose_draw.draw_poses([pose], HEIGHT, WIDTH, body=True, hand=True, face=False)
    assert tuple(faceless[48, 40]) == (0, 0, 0)
