"""Watermark: an example extension that postprocesses images and writes its own infotext field.

When a job asks for it (``enabled``) or the saved setting says "always", each finished image gets ``text`` drawn
in a corner, before it is saved; the infotext says ``Watermark: <text>``, and pasting that infotext back turns the
watermark on with the same text.
"""

from __future__ import annotations

from typing import Any

from PIL import Image, ImageDraw

from webui import plugin_api as easel

CORNERS = ("bottom right", "bottom left", "top right", "top left")


@easel.hookimpl
def easel_settings() -> list[easel.Setting]:
    return [
        easel.Setting("always", "Watermark every image", "bool", False),
        easel.Setting("default_text", "Text when a job gives none", "str", "Easel"),
        easel.Setting("corner", "Corner", "choice", "bottom right", choices=CORNERS),
    ]


@easel.hookimpl
def easel_job_arguments() -> list[easel.Setting]:
    return [
        easel.Setting("enabled", "Watermark this job", "bool", False),
        easel.Setting("text", "Text (empty: the saved default)", "str", ""),
    ]


def _text(job: easel.Job) -> str | None:
    if not (job.args["enabled"] or job.settings["always"]):
        return None
    return job.args["text"] or job.settings["default_text"] or None


def stamp(image: Image.Image, text: str, corner: str) -> Image.Image:
    """``text`` in white on a dark band in ``corner``, a tenth of the image high (at least 10 pixels)."""
    out = image.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    height = max(10, out.height // 10)
    left, top, right, bottom = draw.textbbox((0, 0), text)
    width = min(out.width, right - left + 4)
    x = out.width - width if "right" in corner else 0
    y = out.height - height if "bottom" in corner else 0
    draw.rectangle((x, y, x + width - 1, y + height - 1), fill=(0, 0, 0))
    draw.text((x + 2, y + (height - (bottom - top)) // 2 - top), text, fill=(255, 255, 255))
    return out


@easel.hookimpl
def easel_postprocess_image(image: Image.Image, job: easel.Job) -> Image.Image | None:
    text = _text(job)
    return stamp(image, text, job.settings["corner"]) if text else None


@easel.hookimpl
def easel_infotext_fields(job: easel.Job) -> dict[str, Any] | None:
    text = _text(job)
    return {"Watermark": text} if text else None


@easel.hookimpl
def easel_infotext_read(fields: dict[str, Any]) -> dict[str, Any] | None:
    text = fields.get("Watermark")
    return {"enabled": True, "text": str(text)} if text else None
