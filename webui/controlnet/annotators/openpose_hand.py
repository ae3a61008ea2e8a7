"""OpenPose's hands: 21 keypoints per hand, from ``hand_pose_model.pth``.

CMU's hand model (Simon et al., "Hand Keypoint Detection in Single Images using Multiview Bootstrapping") as
pytorch-openpose converted it: the first ten VGG-19 convolutions, five more (``conv4_3`` to ``conv5_3_CPM``) down to
128 feature channels at 1/8 of the input, a first stage of two 1x1 convolutions (``conv6_1_CPM``, ``conv6_2_CPM``) to
22 heat maps (21 keypoints and the background), and five refinement stages (``MconvN_stageS``) that read the previous
maps beside the features. Each convolution is named by its Caffe layer alone (52 convolutions, 104 tensors). The face
model (``openpose_face``) is the same network with 71 maps, so both are built here.

Where a hand is, the extension guesses from the body (``hand_boxes``: a square past the wrist, sized by the forearm
and upper arm, as OpenPose's own hand detector does). The square, cut from the BGR image and blurred a little, is run
at 184, 368, 552 and 736 pixels; the heat maps, each brought to 128x128, are averaged; for each keypoint the largest
blob of the smoothed map over 0.05 (by the sum of the map in it) gives the maximum of the map in that blob, or
nothing (0, 0) when no blob exists.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch
from scipy import ndimage
from torch import nn
from torch.nn import functional as F

from webui.controlnet.annotators.common import Array
from webui.controlnet.annotators.openpose_body import (
    _TRUNK,
    BOX,
    maps_at_size,
    network_input,
    resize,
    run_stage,
    run_trunk,
    stage_layers,
    trunk_layers,
)

KEYPOINTS = 21
SCALES = (0.5, 1.0, 1.5, 2.0)
MAP_SIZE = 128  # the averaged heat maps' side
THRESHOLD = 0.05

_CPM_TRUNK = (
    *_TRUNK,
    ("conv4_3", 512, 512),
    ("conv4_4", 512, 512),
    ("conv5_1", 512, 512),
    ("conv5_2", 512, 512),
    ("conv5_3_CPM", 512, 128),
)


class KeypointNetwork(nn.Module):
    """The hand and face models' layout: the trunk, ``conv6_1_CPM``/``conv6_2_CPM``, then stages 2-6."""

    STAGES = 6

    def __init__(self, maps: int) -> None:
        super().__init__()
        trunk_layers(self, _CPM_TRUNK)
        self.conv6_1_CPM = nn.Conv2d(128, 512, 1)
        self.conv6_2_CPM = nn.Conv2d(512, maps, 1)
        for stage in range(2, self.STAGES + 1):
            stage_layers(self, f"_stage{stage}", 128 + maps, maps, first=False)

    def forward(self, bgr: torch.Tensor) -> torch.Tensor:
        """The last stage's heat maps at 1/8 of the input's size, for BGR as ``pixel / 256 - 0.5``."""
        features = run_trunk(self, _CPM_TRUNK, bgr)
        maps = self.conv6_2_CPM(F.relu(self.conv6_1_CPM(features)))
        for stage in range(2, self.STAGES + 1):
            names = [f"Mconv{i}_stage{stage}" for i in range(1, 8)]
            maps = run_stage(self, names, torch.cat([maps, features], 1))
        return maps


class HandPoseNetwork(KeypointNetwork):
    """``handpose_model``: 22 heat maps (21 keypoints, background)."""

    def __init__(self) -> None:
        super().__init__(KEYPOINTS + 1)


def hand_heatmaps(model: HandPoseNetwork, bgr: Array) -> Array:
    """The averaged heat maps (128x128x22, float64) of a square BGR ``uint8`` crop."""
    blurred = cv2.GaussianBlur(bgr, (0, 0), 0.8)
    average = np.zeros((MAP_SIZE, MAP_SIZE, KEYPOINTS + 1))
    for scale in SCALES:
        side = scale * BOX
        image = resize(blurred, side, side)
        with torch.inference_mode():
            maps = model(network_input(image))
        average += maps_at_size(maps, image.shape[:2], (MAP_SIZE, MAP_SIZE)) / len(SCALES)
    return average


def keypoints_from_heatmaps(heatmaps: Array, height: int, width: int) -> Array:
    """Each keypoint's position (21x2 ``int``, x then y, in a crop of ``height`` x ``width``; (0, 0): not found)."""
    found = np.zeros((KEYPOINTS, 2), dtype=int)
    for part in range(KEYPOINTS):
        heat = heatmaps[:, :, part]
        blobs, count = ndimage.label(ndimage.gaussian_filter(heat, sigma=3) > THRESHOLD, structure=np.ones((3, 3)))
        if count == 0:
            continue
        best = 1 + int(np.argmax([np.sum(heat[blobs == i]) for i in range(1, count + 1)]))
        kept = np.where(blobs == best, heat, 0)
        row = int(np.argmax(kept.max(axis=1)))
        column = int(np.argmax(kept[row]))
        found[part] = (
            int(float(column) * float(width) / float(MAP_SIZE)),
            int(float(row) * float(height) / float(MAP_SIZE)),
        )
    return found


def hand_keypoints(model: HandPoseNetwork, bgr: Array) -> Array:
    """21 keypoints (x, y in the crop's pixels; (0, 0): not found) of a square BGR ``uint8`` crop of one hand."""
    return keypoints_from_heatmaps(hand_heatmaps(model, bgr), bgr.shape[0], bgr.shape[1])


def hand_boxes(
    keypoints: list[tuple[float, float] | None], width: int, height: int
) -> list[tuple[int, int, int, bool]]:
    """Where the person's hands should be, as OpenPose's body-based hand detector puts them: (x, y, side, is_left)
    squares in pixels, the left hand (keypoints 5-7) first; none for an arm without shoulder, elbow and wrist, or a
    square under 20 pixels once kept inside the image."""
    boxes = []
    for (shoulder, elbow, wrist), is_left in (((5, 6, 7), True), ((2, 3, 4), False)):
        points = [keypoints[shoulder], keypoints[elbow], keypoints[wrist]]
        if any(point is None for point in points):
            continue
        (x1, y1), (x2, y2), (x3, y3) = points  # type: ignore[misc]
        x = x3 + 0.33 * (x3 - x2)
        y = y3 + 0.33 * (y3 - y2)
        forearm = math.sqrt((x3 - x2) ** 2 + (y3 - y2) ** 2)
        upper_arm = math.sqrt((x2 - x1) ** 2 + (y2 - y1) ** 2)
        side = 1.5 * max(forearm, 0.9 * upper_arm)
        x, y = max(0, x - side / 2), max(0, y - side / 2)
        side = min(width - x if x + side > width else side, height - y if y + side > height else side)
        if side >= 20:
            boxes.append((int(x), int(y), int(side), is_left))
    return boxes
