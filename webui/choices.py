"""The fixed choices requests are made of (mode, resize mode, masked content), with A1111's labels.

Kept apart from ``webui.types`` so that parts of a request defined elsewhere (ControlNet units) can use them
without an import cycle; ``webui.types`` re-exports them.
"""

from __future__ import annotations

from enum import Enum


class Mode(str, Enum):
    TXT2IMG = "txt2img"
    IMG2IMG = "img2img"
    INPAINT = "inpaint"


class ResizeMode(int, Enum):
    JUST_RESIZE = 0
    CROP_AND_RESIZE = 1
    RESIZE_AND_FILL = 2


RESIZE_MODE_LABELS = {
    ResizeMode.JUST_RESIZE: "Just resize",
    ResizeMode.CROP_AND_RESIZE: "Crop and resize",
    ResizeMode.RESIZE_AND_FILL: "Resize and fill",
}


class MaskedContent(int, Enum):
    FILL = 0
    ORIGINAL = 1
    LATENT_NOISE = 2
    LATENT_NOTHING = 3


MASKED_CONTENT_LABELS = {
    MaskedContent.FILL: "fill",
    MaskedContent.ORIGINAL: "original",
    MaskedContent.LATENT_NOISE: "latent noise",
    MaskedContent.LATENT_NOTHING: "latent nothing",
}
