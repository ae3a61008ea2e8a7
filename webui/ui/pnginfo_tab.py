"""The PNG Info tab: drop an image from Easel or any SD tool, read its parameters, send them to txt2img."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
from PIL import Image

from webui.outputs.infotext import parse_infotext, read_infotext


@dataclass
class PngInfoTab:
    text: gr.Textbox  # the raw infotext
    send: gr.Button


def read_parameters(path: str | None) -> tuple[str, list[list[str]]]:
    """The infotext of an image file and its fields as rows; a readable note when there is none."""
    if not path:
        return "", []
    try:
        with Image.open(Path(path)) as image:
            text = read_infotext(image)
    except (OSError, ValueError) as exc:
        return f"Cannot read this file as an image: {exc}", []
    if not text:
        return "This image carries no generation parameters.", []
    parsed = parse_infotext(text)
    # The parser fills A1111's defaults for keys an old text lacks; the table shows only what the text says.
    said = {"Prompt", "Negative prompt", *(k for k in parsed if f"{k.removesuffix('-1').removesuffix('-2')}:" in text)}
    rows = []
    for key, value in parsed.items():
        if key not in said or value in ("", None) or key.endswith("-2"):
            continue
        if key.endswith("-1") and f"{key[:-2]}-2" in parsed:  # Size-1, Size-2 -> Size 64x48, as written
            rows.append([key[:-2], f"{value}x{parsed[key[:-2] + '-2']}"])
        else:
            rows.append([key, str(value)])
    return text, rows


def build_pnginfo_tab() -> PngInfoTab:
    with gr.Row(equal_height=False):
        with gr.Column():
            # type="filepath" with no image_mode hands over the uploaded file untouched, metadata included.
            image = gr.Image(
                label="Source", type="filepath", image_mode=None, sources=["upload", "clipboard"],
                elem_id="pnginfo_image", height=420,
            )  # fmt: skip
        with gr.Column():
            text = gr.Textbox(label="Parameters", lines=8, interactive=False, elem_id="pnginfo_text")
            table = gr.Dataframe(
                headers=["Field", "Value"],
                interactive=False,
                elem_id="pnginfo_fields",
                wrap=True,
                column_count=(2, "fixed"),
            )
            send = gr.Button("📤 Send to txt2img", elem_id="pnginfo_send_to_txt2img")

    def on_upload(path: Any) -> tuple[str, Any]:
        return read_parameters(path)

    image.change(on_upload, inputs=[image], outputs=[text, table])
    return PngInfoTab(text=text, send=send)
