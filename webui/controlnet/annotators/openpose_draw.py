"""Drawing detected poses as the OpenPose ControlNets were trained to see them (the extension's canvas).

On a black canvas of the image's size, per person: the body's 17 limbs as filled ellipses four pixels thick in the
limb's colour at 60%, then its 18 keypoints as discs of radius 4 in full colour (red nose, orange neck, ... the
colours turn round the hue circle); each hand's 20 bones as 2-pixel lines coloured round the hue circle, then its
keypoints as blue discs of radius 4; the face's landmarks as white discs of radius 3. Coordinates are given as
fractions of the canvas's width and height, as the extension keeps them, and turned into pixels the way it does
(truncated), so a map matches the extension's pixel for pixel. NumPy and OpenCV only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

Array = np.ndarray
Point = tuple[float, float]

BODY_COLOURS = (
    (255, 0, 0),
    (255, 85, 0),
    (255, 170, 0),
    (255, 255, 0),
    (170, 255, 0),
    (85, 255, 0),
    (0, 255, 0),
    (0, 255, 85),
    (0, 255, 170),
    (0, 255, 255),
    (0, 170, 255),
    (0, 85, 255),
    (0, 0, 255),
    (85, 0, 255),
    (170, 0, 255),
    (255, 0, 255),
    (255, 0, 170),
    (255, 0, 85),
)
# The drawn limbs (the body model's first 17), as pairs of keypoint numbers; limb i has colour i.
BODY_LIMBS = (
    (1, 2),
    (1, 5),
    (2, 3),
    (3, 4),
    (5, 6),
    (6, 7),
    (1, 8),
    (8, 9),
    (9, 10),
    (1, 11),
    (11, 12),
    (12, 13),
    (1, 0),
    (0, 14),
    (14, 16),
    (0, 15),
    (15, 17),
)
LIMB_DIM = 0.6
STICK_WIDTH = 4
# A hand's bones: the wrist (0) to each finger's base, and along each finger to its tip.
HAND_BONES = tuple(
    (finger * 4 + joint if joint else 0, finger * 4 + joint + 1) for finger in range(5) for joint in range(4)
)
HAND_POINT_COLOUR = (0, 0, 255)
FACE_POINT_COLOUR = (255, 255, 255)
_EPS = 0.01  # hand and face points at or left of / above this pixel are "not found" (the reference's -1)


@dataclass(frozen=True)
class Pose:
    """One person: 18 body keypoints (None: not found), and the hands' 21 and the face's points when detected, all as
    fractions of the canvas's width and height (a hand's missing keypoint is negative)."""

    body: list[Point | None]
    left_hand: list[Point] | None = None
    right_hand: list[Point] | None = None
    face: list[Point] | None = None


def hue_colour(fraction: float) -> tuple[float, float, float]:
    """The fully saturated, full-value colour at ``fraction`` of the hue circle, 0-255 (unrounded, as the reference
    hands it to OpenCV)."""
    sector_position = fraction * 6.0
    sector = int(sector_position)
    f = sector_position - sector
    rising, falling = 1.0 - (1.0 - f), 1.0 - f
    rgb = (
        (1.0, rising, 0.0),
        (falling, 1.0, 0.0),
        (0.0, 1.0, rising),
        (0.0, falling, 1.0),
        (rising, 0.0, 1.0),
        (1.0, 0.0, falling),
    )[sector % 6]
    return (rgb[0] * 255, rgb[1] * 255, rgb[2] * 255)


def draw_body(canvas: Array, keypoints: list[Point | None]) -> None:
    h, w = canvas.shape[:2]
    for (first, second), colour in zip(BODY_LIMBS, BODY_COLOURS, strict=False):
        a, b = keypoints[first], keypoints[second]
        if a is None or b is None:
            continue
        xs = np.array([a[0], b[0]]) * float(w)
        ys = np.array([a[1], b[1]]) * float(h)
        centre = (int((xs[0] + xs[1]) / 2), int((ys[0] + ys[1]) / 2))
        length = ((ys[0] - ys[1]) ** 2 + (xs[0] - xs[1]) ** 2) ** 0.5
        angle = math.degrees(math.atan2(ys[0] - ys[1], xs[0] - xs[1]))
        polygon = cv2.ellipse2Poly(centre, (int(length / 2), STICK_WIDTH), int(angle), 0, 360, 1)
        cv2.fillConvexPoly(canvas, polygon, [int(float(c) * LIMB_DIM) for c in colour])
    for point, colour in zip(keypoints, BODY_COLOURS, strict=False):
        if point is not None:
            cv2.circle(canvas, (int(point[0] * w), int(point[1] * h)), 4, colour, thickness=-1)


def draw_hand(canvas: Array, keypoints: list[Point] | None) -> None:
    if not keypoints:
        return
    h, w = canvas.shape[:2]
    for bone, (first, second) in enumerate(HAND_BONES):
        x1, y1 = int(keypoints[first][0] * w), int(keypoints[first][1] * h)
        x2, y2 = int(keypoints[second][0] * w), int(keypoints[second][1] * h)
        if min(x1, y1, x2, y2) > _EPS:
            cv2.line(canvas, (x1, y1), (x2, y2), hue_colour(bone / float(len(HAND_BONES))), thickness=2)
    for x, y in keypoints:
        px, py = int(x * w), int(y * h)
        if px > _EPS and py > _EPS:
            cv2.circle(canvas, (px, py), 4, HAND_POINT_COLOUR, thickness=-1)


def draw_face(canvas: Array, keypoints: list[Point] | None) -> None:
    if not keypoints:
        return
    h, w = canvas.shape[:2]
    for x, y in keypoints:
        px, py = int(x * w), int(y * h)
        if px > _EPS and py > _EPS:
            cv2.circle(canvas, (px, py), 3, FACE_POINT_COLOUR, thickness=-1)


def draw_poses(poses: list[Pose], height: int, width: int, *, body: bool, hand: bool, face: bool) -> Array:
    """The ControlNet's input (HxWx3 ``uint8`` RGB): each pose's body, hands and face, as asked, person by person."""
    canvas = np.zeros((height, width, 3), np.uint8)
    for pose in poses:
        if body:
            draw_body(canvas, pose.body)
        if hand:
            draw_hand(canvas, pose.left_hand)
            draw_hand(canvas, pose.right_hand)
        if face:
            draw_face(canvas, pose.face)
    return canvas
