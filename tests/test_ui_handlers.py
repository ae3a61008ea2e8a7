"""The page's handlers without a browser: widget values to requests, infotext back to widgets, progress text,
History's filters and PNG Info's reading."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from webui.errors import InvalidRequest
from webui.outputs.history import HistoryIndex
from webui.outputs.infotext import format_infotext, infotext_for
from webui.outputs.saving import save_image
from webui.types import MaskedContent, Mode, Progress, ResizeMode
from webui.ui import forms
from webui.ui.history_tab import parse_day, query
from webui.ui.pnginfo_tab import read_parameters
from webui.ui.progress import message_html, progress_html, progress_text

TXT2IMG = {
    "prompt": "a red circle",
    "negative_prompt": "blue",
    "sampler_name": "DPM++ 2M",
    "scheduler": "Karras",
    "steps": 12.0,  # sliders hand floats
    "width": 64.0,
    "height": 96.0,
    "n_iter": 2.0,
    "batch_size": 1.0,
    "cfg_scale": 5.5,
    "seed": 42.0,
}


def test_txt2img_widgets_become_a_request_with_the_top_bar_values() -> None:
    request = forms.build_request(Mode.TXT2IMG, TXT2IMG, checkpoint="model.safetensors", clip_skip=2)
    assert (request.prompt, request.negative_prompt) == ("a red circle", "blue")
    assert (request.steps, request.width, request.height, request.n_iter, request.seed) == (12, 64, 96, 2, 42)
    assert (request.sampler_name, request.scheduler, request.cfg_scale) == ("DPM++ 2M", "Karras", 5.5)
    assert (request.checkpoint, request.clip_skip, request.mode) == ("model.safetensors", 2, Mode.TXT2IMG)
    assert forms.build_request(Mode.TXT2IMG, {**TXT2IMG, "seed": None}).seed == -1  # an emptied seed box


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"steps": None}, "steps"),
        ({"steps": 12.5}, "steps"),
        ({"cfg_scale": 99}, "cfg_scale"),
        ({"seed": -7}, "seed"),
        ({"sampler_name": "Euler z"}, "sampler_name"),
    ],
)
def test_bad_widget_values_name_the_field(change: dict, field: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        forms.build_request(Mode.TXT2IMG, {**TXT2IMG, **change})
    assert err.value.field == field


def test_img2img_takes_the_upload_flattened_and_the_labelled_options() -> None:
    upload = Image.new("RGBA", (80, 64), (255, 0, 0, 0))  # fully transparent: flattened on white, as A1111 does
    values = {**TXT2IMG, "init_image": upload, "resize_mode": "Crop and resize", "denoising_strength": 0.4}
    request = forms.build_request(Mode.IMG2IMG, values)
    assert request.init_image.mode == "RGB" and request.init_image.getpixel((0, 0)) == (255, 255, 255)
    assert request.resize_mode is ResizeMode.CROP_AND_RESIZE and request.denoising_strength == 0.4
    with pytest.raises(InvalidRequest) as err:
        forms.build_request(Mode.IMG2IMG, {**values, "init_image": None})
    assert err.value.field == "init_image"
    with pytest.raises(InvalidRequest) as err:
        forms.build_request(Mode.IMG2IMG, {**values, "resize_mode": "Stretch"})
    assert err.value.field == "resize_mode" and "Just resize" in str(err.value)


def _inpaint_values(**change) -> dict:
    photo = Image.new("RGB", (64, 64), (0, 128, 0))
    stroke = np.zeros((64, 64, 4), np.uint8)
    stroke[10:20, 30:40] = (255, 255, 255, 180)  # the brush: white, partly transparent
    editor = {"background": photo, "layers": [Image.fromarray(stroke, "RGBA")], "composite": photo}
    values = {
        **TXT2IMG,
        "editor": editor,
        "mask_upload": None,
        "resize_mode": "Just resize",
        "denoising_strength": 0.75,
        "mask_blur": 4.0,
        "inpainting_fill": "latent noise",
        "inpaint_full_res": "Only masked",
        "inpaint_full_res_padding": 32.0,
        "inpainting_mask_invert": "Inpaint not masked",
    }
    return {**values, **change}


def test_inpaint_masks_what_the_brush_painted_plus_an_uploaded_mask() -> None:
    request = forms.build_request(Mode.INPAINT, _inpaint_values())
    mask = np.asarray(request.mask)
    assert mask[15, 35] == 255 and mask[40, 40] == 0 and int((mask > 0).sum()) == 100
    assert request.init_image.getpixel((15, 35)) == (0, 128, 0)  # the photo, not the painted composite
    assert request.inpainting_fill is MaskedContent.LATENT_NOISE
    assert request.inpaint_full_res is True and request.inpainting_mask_invert is True

    upload = Image.new("L", (128, 128), 0)  # another resolution: fitted to the photo
    upload.paste(255, (0, 100, 20, 128))
    combined = np.asarray(forms.build_request(Mode.INPAINT, _inpaint_values(mask_upload=upload)).mask)
    assert combined[15, 35] == 255 and combined[60, 5] == 255 and combined[5, 5] == 0


def test_inpaint_without_any_mask_names_the_mask_field() -> None:
    values = _inpaint_values()
    values["editor"] = {**values["editor"], "layers": [Image.new("RGBA", (64, 64), (0, 0, 0, 0))]}
    with pytest.raises(InvalidRequest) as err:
        forms.build_request(Mode.INPAINT, values)
    assert err.value.field == "mask"


def test_an_infotext_fills_the_form_back_with_the_same_request() -> None:
    original = forms.build_request(Mode.TXT2IMG, TXT2IMG, clip_skip=2)
    text = infotext_for(original, seed=42, sampler="DPM++ 2M", schedule="Karras", model_name="m", model_hash="abc")
    values = forms.values_from_infotext(text)
    assert values["clip_skip"] == 2 and values["checkpoint"] == "m"
    again = forms.build_request(Mode.TXT2IMG, {**TXT2IMG, "prompt": "", "seed": 1, **values}, clip_skip=2)
    fields = ("prompt", "negative_prompt", "sampler_name", "scheduler", "steps", "width", "height", "cfg_scale", "seed")
    assert {f: getattr(again, f) for f in fields} == {f: getattr(original, f) for f in fields}
    assert forms.seed_of(text) == 42 and forms.seed_of("") is None


def test_progress_shows_queue_position_steps_eta_and_escapes_messages() -> None:
    queued = Progress(job_id="j", state="queued", queue_position=3)
    assert progress_text(queued) == "Waiting in queue (position 3)"
    running = Progress(
        job_id="j", state="running", step=5, total_steps=10, image_index=1, image_count=2, eta_seconds=75
    )
    assert progress_text(running) == "image 2/2, step 5/10 (75%, ETA 1 min 15 s)"
    assert 'style="width: 75.0%"' in progress_html(running)
    assert progress_text(Progress(job_id="j", state="running")) == "Loading the model…"
    assert "&lt;b&gt;" in message_html("<b>bad</b>", "error") and "easel-error" in message_html("x", "error")


def test_history_filters_read_dates_and_include_the_whole_last_day(tmp_path: Path) -> None:
    from types import SimpleNamespace

    index = HistoryIndex(tmp_path)
    noon = datetime(2026, 3, 14, 12, 0).timestamp()
    for offset, prompt in ((0, "pi day"), (86400, "day after")):
        path = save_image(
            Image.new("RGB", (8, 8)),
            tmp_path,
            "txt2img",
            1,
            format_infotext(prompt, "", {"Steps": 2, "Seed": 1, "Size": "8x8"}),
        )
        os.utime(path, (noon + offset, noon + offset))
        index.add(path)
    service = SimpleNamespace(history=index)
    found = query(service, 0, "", "All", "All", "2026-03-14", "2026-03-14")
    assert [e.prompt for e in found.entries] == ["pi day"]
    assert query(service, 0, "day", "All", "txt2img", "", "").total == 2
    with pytest.raises(InvalidRequest) as err:
        parse_day("14/03/2026", "from")
    assert err.value.field == "from" and "YYYY-MM-DD" in str(err.value)
    assert parse_day("", "to") is None


def test_png_info_reads_our_files_others_and_says_when_there_is_nothing(tmp_path: Path) -> None:
    text = format_infotext("a cat", "dog", {"Steps": 20, "Sampler": "Euler a", "Seed": 7, "Size": "64x64"})
    ours = save_image(Image.new("RGB", (8, 8)), tmp_path, "txt2img", 7, text)
    shown, rows = read_parameters(str(ours))
    assert shown == text and ["Seed", "7"] in rows and ["Prompt", "a cat"] in rows and ["Size", "64x64"] in rows
    assert not [row for row in rows if row[0] in ("Clip skip", "Size-1")]  # parser defaults the text never said
    plain = tmp_path / "plain.png"
    Image.new("RGB", (8, 8)).save(plain)
    assert read_parameters(str(plain)) == ("This image carries no generation parameters.", [])
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not a png")
    assert read_parameters(str(junk))[0].startswith("Cannot read this file as an image")
    assert read_parameters(None) == ("", [])


def test_the_page_has_the_a1111_tabs_and_room_for_extension_tabs(tmp_path: Path) -> None:
    import gradio as gr

    from webui.service.factory import create_service
    from webui.settings import Settings
    from webui.ui.page import build_ui

    (tmp_path / "models" / "Stable-diffusion").mkdir(parents=True)
    service = create_service(Settings(models_dir=tmp_path / "models", outputs_dir=tmp_path / "out"), start=False)
    page = build_ui(service, extension_tabs=[("My Extension", lambda: gr.Markdown("made by an extension"))])
    labels = [block.label for block in page.blocks.values() if isinstance(block, gr.Tab)]
    expected = ["txt2img", "img2img", "Inpaint", "ControlNet", "History", "PNG Info", "Settings", "My Extension"]
    assert labels == expected
    texts = [block.value for block in page.blocks.values() if isinstance(block, gr.Markdown)]
    assert "made by an extension" in texts


def test_the_checkpoint_choice_keeps_its_value_when_the_title_gains_its_hash(
    tmp_path: Path, tiny_sd1_ckpt: Path
) -> None:
    """Regression: loading a model adds its hash to the title; when the title was the dropdown's value, a Generate
    clicked during the load sent the old title, which Gradio then refused as "not in the list of choices"."""
    import shutil

    import gradio as gr

    from webui.service.factory import create_service
    from webui.settings import Settings
    from webui.ui.page import build_ui

    (tmp_path / "models" / "Stable-diffusion").mkdir(parents=True)
    shutil.copy(tiny_sd1_ckpt, tmp_path / "models" / "Stable-diffusion" / "tiny.safetensors")
    settings = Settings(models_dir=tmp_path / "models", outputs_dir=tmp_path / "out", demo_model=False)
    service = create_service(settings, start=False)
    page = build_ui(service)
    refresh = next(f.fn for f in page.fns.values() if getattr(f.fn, "__name__", "") == "refresh_lists")

    def rescan(current: str | None) -> dict:
        return refresh(current, "Automatic")[0]

    before = rescan(None)
    assert before["value"] == "tiny.safetensors" and before["choices"] == [("tiny.safetensors", "tiny.safetensors")]
    info = service.engine.weights.checkpoints.get("tiny.safetensors")
    info.ensure_hash(service.engine.weights.hash_cache)
    after = rescan(before["value"])
    ((label, value),) = after["choices"]
    assert label == f"tiny.safetensors [{info.shorthash}]" and value == after["value"] == "tiny.safetensors"
    dropdown = next(b for b in page.blocks.values() if isinstance(b, gr.Dropdown) and b.elem_id == "setting_checkpoint")
    dropdown.choices = after["choices"]
    assert dropdown.preprocess(before["value"]) == "tiny.safetensors"  # what a click sent before the hash is valid


def test_png_info_shows_a_comfyui_images_parameters_and_sends_them_to_txt2img(tmp_path: Path) -> None:
    from tests.test_infotext import comfyui_png

    path = tmp_path / "ComfyUI_00001_.png"
    with comfyui_png() as image:
        image.save(path, pnginfo=_text_chunks(image))
    text, rows = read_parameters(str(path))
    assert text.startswith("beautiful scenery nature glass bottle landscape")
    assert ["Negative prompt", "text, watermark"] in rows and ["Seed", "156680208700286"] in rows
    assert ["Sampler", "Euler"] in rows and ["Model", "v1-5-pruned-emaonly"] in rows and ["Size", "512x512"] in rows
    values = forms.values_from_infotext(text)
    assert (values["steps"], values["cfg_scale"], values["sampler_name"], values["scheduler"]) == (
        20,
        8.0,
        "Euler",
        "Uniform",
    )


def _text_chunks(image: Image.Image):
    """The image's text chunks, to write them again into a saved copy."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    for key, value in image.text.items():
        info.add_text(key, value)
    return info
