"""OpenPose's people (``openpose``, ``openpose_hand``, ``openpose_face``, ``openpose_faceonly``, ``openpose_full``)
from the extension's ``body_pose_model.pth``, ``hand_pose_model.pth`` and ``facenet.pth``.

As the extension: the people are found with the body model in the image (padded to multiples of 64, as before every
annotator), each person's hands and face are cut out where the body says they are and run through their own
models (only when the preprocessor draws them), and the poses are drawn on black in the extension's colours
(``openpose_draw``). ``openpose_faceonly`` still needs the body, to find the face.

The networks are read and cached by ``loading.network`` as the other annotators' are (its LRU holds the three
``openpose_full`` needs); ``detect_openpose`` in the package runs them through ``detect_poses`` and draws the result.
"""

from __future__ import annotations

import numpy as np
from torch import nn

from webui.controlnet.annotators import openpose_body, openpose_face, openpose_hand
from webui.controlnet.annotators.common import Array
from webui.controlnet.annotators.openpose_draw import Point, Pose


def _as_fractions(found: Array | list, x: int, y: int, width: int, height: int) -> list[Point] | None:
    """A crop's keypoints (pixels in the crop) as fractions of the image, computed in float32 as the extension does;
    a point at x or y 0 (not found) becomes negative. None when there are none."""
    points = np.asarray(found, dtype=np.float32).reshape(-1, 2)
    if len(points) == 0:
        return None
    xs = np.where(points[:, 0] < 1e-6, -1, points[:, 0] + x) / float(width)
    ys = np.where(points[:, 1] < 1e-6, -1, points[:, 1] + y) / float(height)
    return [(float(px), float(py)) for px, py in zip(xs, ys, strict=True)]


def detect_poses(
    bgr: Array, body_model: nn.Module, hand_model: nn.Module | None, face_model: nn.Module | None
) -> list[Pose]:
    """Every person in an HxWx3 ``uint8`` BGR image, with hands and face when their networks are given."""
    h, w = bgr.shape[:2]
    poses = []
    for keypoints in openpose_body.detect_people(body_model, bgr):  # type: ignore[arg-type]
        hands: dict[bool, list[Point] | None] = {True: None, False: None}
        face = None
        if hand_model is not None:
            for x, y, side, is_left in openpose_hand.hand_boxes(keypoints, w, h):
                found = openpose_hand.hand_keypoints(hand_model, bgr[y : y + side, x : x + side])  # type: ignore[arg-type]
                hands[is_left] = _as_fractions(found, x, y, w, h)
        if face_model is not None:
            box = openpose_face.face_box(keypoints, w, h)
            if box is not None:
                x, y, side = box
                found_face = openpose_face.face_keypoints(face_model, bgr[y : y + side, x : x + side])  # type: ignore[arg-type]
                face = _as_fractions(found_face, x, y, w, h)
        body = [None if point is None else (point[0] / float(w), point[1] / float(h)) for point in keypoints]
        poses.append(Pose(body, hands[True], hands[False], face))
    return poses
