"""Image stats: an example extension that adds a tab and an HTTP route.

Drop an image in the "Image stats" tab, or POST one to ``/easel/v1/ext/image-stats/stats``
(``{"image": "<base64>"}``): both answer with the same numbers, from the same function, as Easel's own UI and API
share the generation service.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image
from pydantic import BaseModel

from webui import plugin_api as easel

LEVELS = 4  # each channel quantised to 4 levels: 64 colour bins


def stats(image: Image.Image, top: int = 5) -> dict[str, Any]:
    """Size, mean colour and the ``top`` dominant colours (bin centres) with their share of the pixels."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.uint8).reshape(-1, 3)
    bins = (pixels // (256 // LEVELS)).astype(np.int32)
    keys = bins[:, 0] * LEVELS * LEVELS + bins[:, 1] * LEVELS + bins[:, 2]
    counts = np.bincount(keys, minlength=LEVELS**3)
    order = np.argsort(counts)[::-1][:top]
    step = 256 // LEVELS
    dominant = [
        {
            "rgb": [
                int((k // (LEVELS * LEVELS)) * step + step // 2),
                int((k // LEVELS % LEVELS) * step + step // 2),
                int((k % LEVELS) * step + step // 2),
            ],
            "share": round(float(counts[k]) / len(keys), 4),
        }
        for k in order
        if counts[k]
    ]
    return {
        "width": image.width,
        "height": image.height,
        "mean_rgb": [round(float(v), 2) for v in pixels.mean(axis=0)],
        "dominant": dominant,
    }


class StatsBody(BaseModel):
    image: str


@easel.hookimpl
def easel_app_started(app: easel.App) -> None:
    @app.router.post("/stats")
    def post_stats(body: StatsBody) -> dict[str, Any]:
        return stats(easel.decode_image(body.image, "image"))


@easel.hookimpl
def easel_ui_tabs() -> list[easel.Tab]:
    def build() -> None:
        import gradio as gr

        with gr.Row():
            picture = gr.Image(type="pil", label="Image", sources=["upload", "clipboard"], elem_id="image_stats_input")
            numbers = gr.JSON(label="Stats", elem_id="image_stats_output")
        picture.change(lambda image: stats(image) if image is not None else None, inputs=picture, outputs=numbers)

    return [easel.Tab("Image stats", build)]
