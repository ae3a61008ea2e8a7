"""Reading a demo-model image back: which colour the shape is, which the background is, and where the shape sits.

Pixels are classified to the nearest named colour of the training vocabulary. The background is the colour
most of the image border has; the shape is every pixel of another colour. This is what the meaning tests and
the demo grid's captions use, so "the model drew a red circle" is a measured statement, not a look.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from webui.demo.scenes import COLOURS, nearest_colours

_NAMES = list(COLOURS)


@dataclass(frozen=True)
class Reading:
    background: str
    shape: str | None  # None when nothing stands out from the background
    shape_fraction: float  # of the image covered by the shape
    shape_purity: float  # of the shape's pixels that have the shape's colour
    centre: tuple[float, float] | None  # the shape's centre of mass, as fractions of width and height
    shares: dict[str, float]  # each colour's share of the whole image

    @property
    def quadrant(self) -> str | None:
        if self.centre is None:
            return None
        x, y = self.centre
        return f"{'top' if y < 0.5 else 'bottom'} {'left' if x < 0.5 else 'right'}"

    def share_in_shape(self, colour: str) -> float:
        """How much of the shape is ``colour`` (0 when there is no shape)."""
        return self.shape_purity if self.shape == colour else 0.0


def read(image: Image.Image) -> Reading:
    classes = nearest_colours(np.asarray(image.convert("RGB")))
    border = np.concatenate([classes[0], classes[-1], classes[1:-1, 0], classes[1:-1, -1]])
    background = int(np.bincount(border, minlength=len(_NAMES)).argmax())
    counts = np.bincount(classes.ravel(), minlength=len(_NAMES))
    shares = {name: float(counts[i]) / classes.size for i, name in enumerate(_NAMES)}
    mask = classes != background
    if mask.sum() < classes.size * 0.005:
        return Reading(_NAMES[background], None, 0.0, 0.0, None, shares)
    inside = np.bincount(classes[mask], minlength=len(_NAMES))
    shape = int(inside.argmax())
    ys, xs = np.nonzero(mask)
    h, w = classes.shape
    centre = ((xs.mean() + 0.5) / w, (ys.mean() + 0.5) / h)
    return Reading(
        background=_NAMES[background],
        shape=_NAMES[shape],
        shape_fraction=float(mask.mean()),
        shape_purity=float(inside[shape]) / float(mask.sum()),
        centre=(float(centre[0]), float(centre[1])),
        shares=shares,
    )


def stripes(image: Image.Image) -> float:
    """How striped the shape is: colour changes down each column, between the shape's top and bottom edge,
    averaged over the columns that cross the shape (at least 4 of its pixels). A flat shape reads about 0 (edge
    pixels aside); the ``striped`` LoRA's bands, 4 pixels each, about one change every 4 pixels of height."""
    classes = nearest_colours(np.asarray(image.convert("RGB")))
    border = np.concatenate([classes[0], classes[-1], classes[1:-1, 0], classes[1:-1, -1]])
    background = int(np.bincount(border, minlength=len(_NAMES)).argmax())
    mask = classes != background
    changes = []
    for x in range(classes.shape[1]):
        rows = np.nonzero(mask[:, x])[0]
        if len(rows) < 4:
            continue
        column = classes[rows[0] : rows[-1] + 1, x]
        changes.append(int((column[1:] != column[:-1]).sum()))
    return float(np.mean(changes)) if changes else 0.0
