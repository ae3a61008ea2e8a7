"""OpenPose's body: the people in an image, from ``body_pose_model.pth``.

The network is CMU's 18-keypoint COCO body model (Cao et al., "Realtime Multi-Person 2D Pose Estimation using Part
Affinity Fields"), as converted from Caffe by pytorch-openpose and downloaded by the SD-WebUI ControlNet extension: the
first ten VGG-19 convolutions and two more (``conv4_3_CPM``, ``conv4_4_CPM``) make 128 feature channels at 1/8 of the
input; six stages, each of two branches, then refine 38 part-affinity-field (PAF) channels (branch ``L1``: an x and
a y channel per limb) and 19 keypoint heat maps (branch ``L2``: 18 parts and the background), every stage after the
first reading the previous stage's two outputs beside the features. The file names each convolution by its Caffe
layer alone (``conv1_1.weight``, ``conv5_3_CPM_L2.bias``, ``Mconv7_stage6_L1.weight``: 92 convolutions, 184 tensors),
so the layers are attributes of the network itself. The input is BGR, ``pixel / 256 - 0.5``. As in the reference
port, the last heat-map convolution (``Mconv7_stage6_L2``) is followed by a ReLU, the other stage outputs are not.

The rest is the extension's post-processing: the image is scaled so its height is 184 (half of the 368 box), run,
and the maps scaled back to the image's size; each heat map smoothed (Gaussian, sigma 3) has its peaks over 0.1 as
that part's candidates; for each of 19 limbs every pair of candidates is scored by the PAF sampled at ten points
between them; the best pairs are taken greedily and joined into people, and people with fewer than four parts or a
low mean score are dropped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from scipy.ndimage import gaussian_filter
from torch import nn
from torch.nn import functional as F

from webui.controlnet.annotators.common import Array

PARTS = 18  # nose, neck, right shoulder/elbow/wrist, left shoulder/elbow/wrist, right hip/knee/ankle, left
# hip/knee/ankle, right eye, left eye, right ear, left ear
BOX = 368
STRIDE = 8
PAD_VALUE = 128
PEAK_THRESHOLD = 0.1
PAF_THRESHOLD = 0.05
SAMPLES = 10  # points along a limb at which its PAF is read

# Each limb: the two parts it joins and its PAF's x and y channels. The first 17 are drawn; the last two (ear to
# shoulder) only help to join parts into people.
LIMBS: tuple[tuple[int, int, int, int], ...] = (
    (1, 2, 12, 13),
    (1, 5, 20, 21),
    (2, 3, 14, 15),
    (3, 4, 16, 17),
    (5, 6, 22, 23),
    (6, 7, 24, 25),
    (1, 8, 0, 1),
    (8, 9, 2, 3),
    (9, 10, 4, 5),
    (1, 11, 6, 7),
    (11, 12, 8, 9),
    (12, 13, 10, 11),
    (1, 0, 28, 29),
    (0, 14, 30, 31),
    (14, 16, 34, 35),
    (0, 15, 32, 33),
    (15, 17, 36, 37),
    (2, 16, 18, 19),
    (5, 17, 26, 27),
)
_STARTING_LIMBS = 17  # a connection of the last two limbs never starts a new person

# The VGG-19 part: (name, input channels, output channels); "pool" halves the size.
_TRUNK = (
    ("conv1_1", 3, 64),
    ("conv1_2", 64, 64),
    ("pool", 0, 0),
    ("conv2_1", 64, 128),
    ("conv2_2", 128, 128),
    ("pool", 0, 0),
    ("conv3_1", 128, 256),
    ("conv3_2", 256, 256),
    ("conv3_3", 256, 256),
    ("conv3_4", 256, 256),
    ("pool", 0, 0),
    ("conv4_1", 256, 512),
    ("conv4_2", 512, 512),
)


def trunk_layers(network: nn.Module, layers: tuple[tuple[str, int, int], ...]) -> None:
    """Add ``layers`` (3x3 convolutions, "pool" entries skipped) to ``network`` as attributes named as in the file."""
    for name, channels_in, channels_out in layers:
        if name != "pool":
            network.add_module(name, nn.Conv2d(channels_in, channels_out, 3, padding=1))


def run_trunk(network: nn.Module, layers: tuple[tuple[str, int, int], ...], x: torch.Tensor) -> torch.Tensor:
    """Every layer of ``layers`` in turn: a convolution and a ReLU, or a 2x2 max-pool."""
    for name, _, _ in layers:
        x = F.max_pool2d(x, 2, 2) if name == "pool" else F.relu(getattr(network, name)(x))
    return x


def stage_layers(network: nn.Module, suffix: str, channels_in: int, channels_out: int, first: bool) -> None:
    """A stage's convolutions, as attributes: the first stage's 3x3 (``conv5_N_CPM``) or a later one's 7x7 (``MconvN``)."""
    if first:
        shapes = [(f"conv5_{i}_CPM{suffix}", 128, 128, 3) for i in (1, 2, 3)]
        shapes += [(f"conv5_4_CPM{suffix}", 128, 512, 1), (f"conv5_5_CPM{suffix}", 512, channels_out, 1)]
    else:
        shapes = [(f"Mconv{i}{suffix}", channels_in if i == 1 else 128, 128, 7) for i in range(1, 6)]
        shapes += [(f"Mconv6{suffix}", 128, 128, 1), (f"Mconv7{suffix}", 128, channels_out, 1)]
    for name, cin, cout, kernel in shapes:
        network.add_module(name, nn.Conv2d(cin, cout, kernel, padding=kernel // 2))


def run_stage(network: nn.Module, names: list[str], x: torch.Tensor, relu_last: bool = False) -> torch.Tensor:
    """A stage's convolutions in turn, with a ReLU after each but the last (unless ``relu_last``)."""
    for name in names[:-1]:
        x = F.relu(getattr(network, name)(x))
    x = getattr(network, names[-1])(x)
    return F.relu(x) if relu_last else x


class BodyPoseNetwork(nn.Module):
    """``bodypose_model``: the trunk, then stages 1-6 of branches ``L1`` (38 PAF channels) and ``L2`` (19 heat maps)."""

    STAGES = 6

    def __init__(self) -> None:
        super().__init__()
        trunk_layers(self, _TRUNK)
        self.add_module("conv4_3_CPM", nn.Conv2d(512, 256, 3, padding=1))
        self.add_module("conv4_4_CPM", nn.Conv2d(256, 128, 3, padding=1))
        for stage in range(1, self.STAGES + 1):
            for branch, channels in (("L1", 38), ("L2", 19)):
                suffix = f"_{branch}" if stage == 1 else f"_stage{stage}_{branch}"
                stage_layers(self, suffix, 128 + 38 + 19, channels, first=stage == 1)

    @staticmethod
    def _names(stage: int, branch: str) -> list[str]:
        if stage == 1:
            return [f"conv5_{i}_CPM_{branch}" for i in range(1, 6)]
        return [f"Mconv{i}_stage{stage}_{branch}" for i in range(1, 8)]

    def forward(self, bgr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """PAFs (38 channels) and heat maps (19) at 1/8 of the input's size, for BGR as ``pixel / 256 - 0.5``."""
        features = run_trunk(self, _TRUNK, bgr)
        features = F.relu(self.conv4_4_CPM(F.relu(self.conv4_3_CPM(features))))
        x = features
        for stage in range(1, self.STAGES + 1):
            pafs = run_stage(self, self._names(stage, "L1"), x)
            heat = run_stage(self, self._names(stage, "L2"), x, relu_last=stage == self.STAGES)
            x = torch.cat([pafs, heat, features], 1)
        return pafs, heat


def resize(values: Array, width: int, height: int) -> Array:
    """The extension's resize of images and maps: area averaging to shrink, Lanczos to grow (judged by the sum of
    the sides), a map of many channels one channel at a time."""
    old_h, old_w = values.shape[:2]
    interpolation = cv2.INTER_AREA if (height + width) / (old_h + old_w) < 1 else cv2.INTER_LANCZOS4
    if values.ndim == 2 or values.shape[2] in (1, 3):
        return cv2.resize(values, (int(width), int(height)), interpolation=interpolation)
    return np.stack(
        [
            cv2.resize(values[:, :, c], (int(width), int(height)), interpolation=interpolation)
            for c in range(values.shape[2])
        ],
        axis=2,
    )


def network_input(bgr: Array) -> torch.Tensor:
    """An HxWx3 ``uint8`` BGR image, grown on the right and bottom to multiples of 8 with grey (128), as the network's
    1x3xHxW input ``pixel / 256 - 0.5``."""
    h, w = bgr.shape[:2]
    padded = np.pad(bgr, [[0, -h % STRIDE], [0, -w % STRIDE], [0, 0]], constant_values=PAD_VALUE)
    return torch.from_numpy(np.ascontiguousarray(padded.astype(np.float32).transpose(2, 0, 1)[None] / 256 - 0.5))


def maps_at_size(maps: torch.Tensor, scaled: tuple[int, int], size: tuple[int, int]) -> Array:
    """A 1xCxhxw network output as an HxWxC float32 map: scaled up by the stride, cropped to the network input's
    unpadded ``scaled`` (height, width), then resized to ``size`` (height, width)."""
    values = maps[0].numpy().transpose(1, 2, 0)
    values = resize(values, values.shape[1] * STRIDE, values.shape[0] * STRIDE)
    values = values[: scaled[0], : scaled[1]]
    return resize(values, size[1], size[0])


def body_maps(model: BodyPoseNetwork, bgr: Array) -> tuple[Array, Array]:
    """The 19 heat maps and 38 PAF channels (HxWxC, float64) of an HxWx3 ``uint8`` BGR image, at its size."""
    h, w = bgr.shape[:2]
    scale = 0.5 * BOX / h
    scaled_h, scaled_w = h * scale, w * scale
    image = resize(bgr, scaled_w, scaled_h)
    with torch.inference_mode():
        pafs, heat = model(network_input(image))
    size = (h, w)
    heatmaps = maps_at_size(heat, image.shape[:2], size).astype(np.float64)
    return heatmaps, maps_at_size(pafs, image.shape[:2], size).astype(np.float64)


@dataclass(frozen=True)
class Candidate:
    """One part's peak: pixel position, heat-map value and number among all peaks."""

    x: int
    y: int
    score: float
    id: int


def find_peaks(heatmaps: Array) -> list[list[Candidate]]:
    """Each part's candidates: the local maxima (over their four neighbours, the outside counting as 0) of the heat
    map smoothed with a Gaussian (sigma 3), where the smoothed value is over 0.1; scored by the unsmoothed value,
    in row order, numbered across all parts."""
    found: list[list[Candidate]] = []
    count = 0
    for part in range(PARTS):
        heat = heatmaps[:, :, part]
        smooth = gaussian_filter(heat, sigma=3)
        around = np.pad(smooth, 1)
        peak = (
            (smooth >= around[:-2, 1:-1])
            & (smooth >= around[2:, 1:-1])
            & (smooth >= around[1:-1, :-2])
            & (smooth >= around[1:-1, 2:])
            & (smooth > PEAK_THRESHOLD)
        )
        ys, xs = np.nonzero(peak)
        found.append(
            [Candidate(int(x), int(y), heat[y, x], count + i) for i, (x, y) in enumerate(zip(xs, ys, strict=True))]
        )
        count += len(xs)
    return found


def _pair_score(paf_x: Array, paf_y: Array, a: Candidate, b: Candidate, height: int) -> float | None:
    """How well the PAF joins ``a`` to ``b``: its mean component along a->b at ten points between them, less a
    penalty for a limb longer than half the image; None when fewer than nine points agree or the score is not
    positive."""
    dx, dy = b.x - a.x, b.y - a.y
    length = max(0.001, math.sqrt(dx * dx + dy * dy))
    rows = np.rint(np.linspace(a.y, b.y, num=SAMPLES)).astype(int)
    cols = np.rint(np.linspace(a.x, b.x, num=SAMPLES)).astype(int)
    along = paf_x[rows, cols] * (dx / length) + paf_y[rows, cols] * (dy / length)
    score = sum(along.tolist()) / SAMPLES + min(0.5 * height / length - 1, 0)
    if np.count_nonzero(along > PAF_THRESHOLD) > 0.8 * SAMPLES and score > 0:
        return score
    return None


def connect(pafs: Array, peaks: list[list[Candidate]], height: int) -> list[list[tuple[Candidate, Candidate, float]]]:
    """Each limb's connections: every pair of its two parts' candidates scored, then the best taken while neither
    end is used yet, up to the smaller number of candidates."""
    limbs = []
    for part_a, part_b, channel_x, channel_y in LIMBS:
        side_a, side_b = peaks[part_a], peaks[part_b]
        scored = []
        for i, a in enumerate(side_a):
            for j, b in enumerate(side_b):
                score = _pair_score(pafs[:, :, channel_x], pafs[:, :, channel_y], a, b, height)
                if score is not None:
                    scored.append((score, i, j))
        chosen: list[tuple[Candidate, Candidate, float]] = []
        used_a: set[int] = set()
        used_b: set[int] = set()
        for score, i, j in sorted(scored, key=lambda item: item[0], reverse=True):
            if i in used_a or j in used_b:
                continue
            used_a.add(i)
            used_b.add(j)
            chosen.append((side_a[i], side_b[j], score))
            if len(chosen) >= min(len(side_a), len(side_b)):
                break
        limbs.append(chosen)
    return limbs


def assemble(limbs: list[list[tuple[Candidate, Candidate, float]]], scores: Array) -> Array:
    """People from the limbs' connections, as the reference joins them: a row per person of 18 candidate numbers (-1:
    part not found), the total score and the number of parts.

    A connection whose start (or end) is already some person's goes to that person; one that touches two people
    who share no part merges them; one that touches nobody starts a new person (not for the two ear-shoulder limbs).
    People with fewer than four parts, or a mean score under 0.4, are dropped."""
    people = np.full((0, PARTS + 2), -1.0)
    for limb, ((part_a, part_b, _, _), connections) in enumerate(zip(LIMBS, limbs, strict=True)):
        for a, b, score in connections:
            owners = [n for n in range(len(people)) if people[n, part_a] == a.id or people[n, part_b] == b.id][:2]
            if len(owners) == 2 and not ((people[owners[0], :PARTS] >= 0) & (people[owners[1], :PARTS] >= 0)).any():
                first, second = people[owners[0]], people[owners[1]]
                first[:PARTS] += second[:PARTS] + 1
                first[PARTS:] += second[PARTS:]
                first[PARTS] += score
                people = np.delete(people, owners[1], axis=0)
            elif len(owners) == 2 or (len(owners) == 1 and people[owners[0], part_b] != b.id):
                person = people[owners[0]]
                person[part_b] = b.id
                person[PARTS + 1] += 1
                person[PARTS] += scores[b.id] + score
            elif not owners and limb < _STARTING_LIMBS:
                person = np.full(PARTS + 2, -1.0)
                person[part_a], person[part_b] = a.id, b.id
                person[PARTS + 1] = 2
                person[PARTS] = scores[a.id] + scores[b.id] + score
                people = np.vstack([people, person])
    keep = [n for n, person in enumerate(people) if person[-1] >= 4 and person[-2] / person[-1] >= 0.4]
    return people[keep]


def detect_people(model: BodyPoseNetwork, bgr: Array) -> list[list[tuple[float, float] | None]]:
    """Each person found in an HxWx3 ``uint8`` BGR image: 18 keypoints in pixels (None: not found)."""
    heatmaps, pafs = body_maps(model, bgr)
    return people_from_maps(heatmaps, pafs)


def people_from_maps(heatmaps: Array, pafs: Array) -> list[list[tuple[float, float] | None]]:
    """The people that the heat maps and PAFs (HxWxC at the image's size) show, keypoints in pixels."""
    peaks = find_peaks(heatmaps)
    everyone = [candidate for part in peaks for candidate in part]
    scores = np.array([c.score for c in everyone], dtype=np.float64)
    people = assemble(connect(pafs, peaks, heatmaps.shape[0]), scores)
    return [
        [
            None if index < 0 else (float(everyone[index].x), float(everyone[index].y))
            for index in person[:PARTS].astype(int)
        ]
        for person in people
    ]
