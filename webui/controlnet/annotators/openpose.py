"""OpenPose preprocessors (``openpose``, ``openpose_hand``, ``openpose_face``, ``openpose_faceonly``,
``openpose_full``) from the extension's ``body_pose_model.pth``, ``hand_pose_model.pth`` and ``facenet.pth``.

As the extension: the people are found with the body model in the image (padded to multiples of 64, as before every
annotator), each person's hands and face are cut out where the body says they are and run through their own
models (only when the preprocessor draws them), and the poses are drawn on black in the extension's colours
(``openpose_draw``). ``openpose_faceonly`` still needs the body, to find the face.

The networks are read and cached by ``loading.network`` as the other annotators' are (safe readers, exact names and
shapes, a file naming error; its LRU holds the three ``openpose_full`` needs).

Importing this module does not import torch; the first call does.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from torch import nn

    from webui.controlnet.annotators.openpose_draw import Point, Pose

Array = np.ndarray

BODY_FILE = "body_pose_model.pth"
HAND_FILE = "hand_pose_model.pth"
FACE_FILE = "facenet.pth"


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
    from webui.controlnet.annotators import openpose_body, openpose_face, openpose_hand
    from webui.controlnet.annotators.openpose_draw import Pose

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


def detect_openpose(image: Array, folder: Path, *, body: bool = True, hand: bool = False, face: bool = False) -> Array:
    """The pose map (HxWx3 ``uint8`` RGB) of an RGB ``uint8`` image: the body drawn when ``body``, the hands and
    the face detected and drawn when ``hand`` / ``face``."""
    from webui.controlnet.annotators import common, loading, openpose_body, openpose_draw, openpose_face, openpose_hand

    body_model = loading.network(folder / BODY_FILE, openpose_body.BodyPoseNetwork)
    hand_model = loading.network(folder / HAND_FILE, openpose_hand.HandPoseNetwork) if hand else None
    face_model = loading.network(folder / FACE_FILE, openpose_face.FaceNetwork) if face else None

    def draw(padded: Array) -> Array:
        poses = detect_poses(np.ascontiguousarray(padded[:, :, ::-1]), body_model, hand_model, face_model)
        return openpose_draw.draw_poses(poses, padded.shape[0], padded.shape[1], body=body, hand=hand, face=face)

    return common.on_padded(image, draw)
