"""OpenPose's face: up to 70 landmarks, from ``facenet.pth``.

CMU's face model as lllyasviel ported it for ControlNet 1.1: the hand model's layout (``openpose_hand``) with 71 heat
maps (70 landmarks and the background), its tensors named as the hand model's (104). Where the face is, the extension
guesses from the body (``face_box``: a square around the nose, sized by the eyes and ears); the square, cut from the
BGR image, is run at 384x384, and the last stage's maps are scaled back to the square's size (bilinear, corners
aligned). Every one of the 71 maps whose maximum is over 0.05 gives a point there (the first maximum in row order).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from webui.controlnet.annotators.common import Array, as_batch
from webui.controlnet.annotators.openpose_body import resize
from webui.controlnet.annotators.openpose_hand import KeypointNetwork

MAPS = 71
INPUT_SIZE = 384
THRESHOLD = 0.05


class FaceNetwork(KeypointNetwork):
    """``FaceNet``: 71 heat maps."""

    def __init__(self) -> None:
        super().__init__(MAPS)


def face_heatmaps(model: FaceNetwork, bgr: Array) -> Array:
    """The 71 heat maps (71xHxW float32) of a square BGR ``uint8`` crop, at the crop's size."""
    h, w = bgr.shape[:2]
    image = resize(bgr, INPUT_SIZE, INPUT_SIZE)
    batch = as_batch(image, 256.0, -0.5)
    with torch.inference_mode():
        maps = F.interpolate(model(batch), (h, w), mode="bilinear", align_corners=True)
    return maps[0].numpy()


def keypoints_from_heatmaps(heatmaps: Array) -> list[tuple[int, int]]:
    """(x, y) of the first maximum of each map whose maximum is over 0.05, in map order; maps without are skipped."""
    found = []
    for heat in heatmaps:
        over = heat > THRESHOLD
        if over.any():
            y, x = np.unravel_index(int(np.argmax(np.where(over, heat, -np.inf))), heat.shape)
            found.append((int(x), int(y)))
    return found


def face_keypoints(model: FaceNetwork, bgr: Array) -> list[tuple[int, int]]:
    """The landmarks found in a square BGR ``uint8`` crop of a face, in the crop's pixels."""
    return keypoints_from_heatmaps(face_heatmaps(model, bgr))


def face_box(keypoints: list[tuple[float, float] | None], width: int, height: int) -> tuple[int, int, int] | None:
    """The square (x, y, side in pixels) the extension cuts around a person's face: centred on the nose, its half
    side three times the largest distance (along x or y) to an eye, or 1.5 times that to an ear; None without a nose,
    without any eye or ear, or when the square is under 20 pixels once kept inside the image."""
    nose = keypoints[0]
    around = [(keypoints[part], factor) for part, factor in ((14, 3.0), (15, 3.0), (16, 1.5), (17, 1.5))]
    if nose is None or all(point is None for point, _ in around):
        return None
    x0, y0 = nose
    half = 0.0
    for point, factor in around:
        if point is not None:
            half = max(half, max(abs(x0 - point[0]), abs(y0 - point[1])) * factor)
    x, y = max(0, x0 - half), max(0, y0 - half)
    side = min(width - x if x + half > width else half * 2, height - y if y + half > height else half * 2)
    return (int(x), int(y), int(side)) if side >= 20 else None
