"""The page's handlers without a browser: widget values to requests, infotext back to widgets, progress text,
History's filters and PNG Info's reading."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from webui.errors import InvalidRequest
from webui.outputs.history import HistoryIndex
from webui.outputs.infotext import format_infotext, infotext_for, parse_infotext
from webui.outputs.saving import save_image
from webui.service.service import GenerationService
from webui.settings import Settings
from webui.types import MaskedContent, Mode, Progress, ResizeMode
from webui.ui import forms
from webui.ui.generate_tab import RUN_OUTPUTS, run_job
from webui.ui.history_tab import PAGE_OUTPUTS, parse_day, query, remove_image, show_page
from webui.ui.page import txt2img_fill
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
    values = forms.values_from_infotext(parse_infotext(text))
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
    units = [label for label in labels if label.startswith("ControlNet Unit")]
    expected = ["txt2img", "img2img", "Inpaint", "ControlNet", "History", "PNG Info", "Settings", "Extensions", "My Extension"]  # fmt: skip
    assert [label for label in labels if label not in units] == expected
    assert units == [f"ControlNet Unit {i}" for i in range(3)] * 3  # the default unit count, in each generation tab
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
    values = forms.values_from_infotext(parse_infotext(text))
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


# -- the handlers behind the buttons, without a browser ----------------------------------------------------------


@pytest.fixture
def fake_service(tmp_path: Path) -> Iterator[Callable[..., GenerationService]]:
    """A started service over the fake engine of tests/test_service.py (steps, previews and images without a model)."""
    from tests.test_service import FakeEngine

    started: list[GenerationService] = []

    def make(**engine: Any) -> GenerationService:
        service = GenerationService(Settings(outputs_dir=tmp_path / "out"), FakeEngine(**engine)).start()
        started.append(service)
        return service

    yield make
    for service in started:
        service.stop()


def _generate(service: GenerationService, **change: Any) -> Iterator[dict[str, Any]]:
    """Generate's handler for the txt2img form, each update as {output name: value}."""
    values = {**TXT2IMG, "n_iter": 1.0, **change}
    names = list(forms.COMMON_FIELDS)
    run = run_job(service, Mode.TXT2IMG, names, "me", None, None, 1, [values[n] for n in names])
    for update in run:
        yield dict(zip(RUN_OUTPUTS, update, strict=True))


KEEP = {"__type__": "update"}  # gr.update() that changes nothing


def test_generate_sends_a_live_preview_only_when_it_is_new(fake_service: Callable[..., GenerationService]) -> None:
    """Every progress event after the first preview carries the latest preview again; re-sending it each step would
    push the same PNG to the browser over and over."""
    service = fake_service(step_delay=0.03)
    service.update_preferences(preview_every=3)
    updates = list(_generate(service, steps=9))
    running = updates[1:-1]
    sent = [u["preview"]["value"] for u in running if "value" in u["preview"]]
    assert 1 <= len(sent) <= 3  # steps 3, 6 and 9 make one each
    assert len({id(image) for image in sent}) == len(sent), "the same preview was sent twice"
    assert len(running) >= len(sent) + 3  # the steps between previews went out without one
    assert all(u["preview"] == KEEP for u in running if "value" not in u["preview"])
    assert "Done in" in updates[-1]["progress"] and updates[-1]["preview"] == {"__type__": "update", "visible": False}


def test_generate_a_failed_job_says_why_and_keeps_the_last_results(
    fake_service: Callable[..., GenerationService],
) -> None:
    service = fake_service(fail_with=RuntimeError("the GPU caught fire"))
    last = list(_generate(service))[-1]
    assert "easel-error" in last["progress"] and "RuntimeError: the GPU caught fire" in last["progress"]
    assert (last["job_id"], last["gallery"], last["info"], last["results"]) == (None, KEEP, KEEP, KEEP)


def test_generate_interrupted_saves_nothing(fake_service: Callable[..., GenerationService], tmp_path: Path) -> None:
    service = fake_service(step_delay=0.02)
    updates = _generate(service, steps=100)
    job_id = next(updates)["job_id"]
    for update in updates:
        if "step " in update["progress"]:
            service.cancel(job_id, owner="me")
            break
    last = list(updates)[-1]
    assert (
        "Interrupted: the unfinished image was not saved." in last["progress"]
        and "finished before" not in last["progress"]
    )
    assert last["gallery"] == KEEP and not list((tmp_path / "out").rglob("*.png"))


def test_generate_cancelled_while_queued(fake_service: Callable[..., GenerationService]) -> None:
    import threading

    service = fake_service(gate=threading.Event())
    ahead = service.submit(forms.build_request(Mode.TXT2IMG, {**TXT2IMG, "n_iter": 1.0}))
    next(p for p in ahead.updates(timeout=10) if p.state == "running")  # held at the gate, running
    updates = _generate(service)
    first = next(updates)
    assert "Waiting in queue (position 1)" in first["progress"]
    service.cancel(first["job_id"], owner="me")
    service.engine.gate.set()
    last = list(updates)[-1]
    assert "Cancelled before it started." in last["progress"] and last["gallery"] == KEEP
    ahead.wait(10)


def test_generate_interrupted_batch_shows_the_images_it_saved(
    fake_service: Callable[..., GenerationService], tmp_path: Path
) -> None:
    service = fake_service(step_delay=0.02)
    updates = _generate(service, steps=20, n_iter=3.0, seed=42.0)
    job_id = next(updates)["job_id"]
    for update in updates:
        if "image 2/3" in update["progress"]:
            service.cancel(job_id, owner="me")
            break
    last = list(updates)[-1]
    assert (
        "Interrupted" in last["progress"]
        and "The 1 image(s) finished before it are saved and shown." in last["progress"]
    )
    (saved,) = (tmp_path / "out").rglob("*.png")
    assert last["gallery"] == [(str(saved), saved.name)] and "Seed: 42," in last["info"]
    assert last["results"] == [(str(saved), last["info"])] and last["selected"] == 0 and saved.name in last["link"]


def test_generate_with_a_bad_value_names_the_field_and_starts_nothing(
    fake_service: Callable[..., GenerationService],
) -> None:
    service = fake_service()
    with pytest.warns(UserWarning, match="steps"):  # gr.Warning outside a page: the toast's text
        (only,) = list(_generate(service, steps=None))
    assert "easel-error" in only["progress"] and "steps" in only["progress"] and only["job_id"] is None
    assert service.engine.runs == []


def test_send_to_txt2img_fills_the_form_and_finds_a_renamed_lora_by_its_hash(tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    from webui.service.factory import create_service
    from webui.weights.hashing import addnet_hash_safetensors

    lora = tmp_path / "models" / "Lora" / "striped-v2.safetensors"  # was "striped" when the image was made
    lora.parent.mkdir(parents=True)
    save_file({"lora_unet_mid.lora_down.weight": np.ones((4, 8), np.float32)}, str(lora))
    settings = Settings(models_dir=tmp_path / "models", outputs_dir=tmp_path / "out", demo_model=False)
    service = create_service(settings, start=False)
    params = {"Steps": 12, "Sampler": "Euler a", "CFG scale": 5, "Seed": 7, "Size": "64x96", "Clip skip": 2}
    params["Lora hashes"] = f"striped: {addnet_hash_safetensors(lora)[:12]}"
    text = format_infotext("a circle <lora:striped:0.6>, <lora:missing:1>", "blurry", params)
    names = list(forms.COMMON_FIELDS)
    *fields, clip_skip, tabs, hires, controlnet, extensions = txt2img_fill(service, names, text, 0)
    filled = dict(zip(names, fields, strict=True))
    assert filled["prompt"]["value"] == "a circle <lora:striped-v2:0.6>, <lora:missing:1>"
    assert (filled["negative_prompt"]["value"], filled["steps"]["value"], filled["seed"]["value"]) == ("blurry", 12, 7)
    assert (filled["width"]["value"], filled["height"]["value"], filled["sampler_name"]["value"]) == (64, 96, "Euler a")
    assert filled["n_iter"] == KEEP and filled["batch_size"] == KEEP  # how many to make is not the image's
    assert clip_skip["value"] == 2 and tabs.selected == "txt2img"
    assert hires == controlnet == extensions == KEEP  # nothing there to show: the accordions stay as they are
    assert all(update == KEEP for update in txt2img_fill(service, names, "  ", 0))


def _history_with(tmp_path: Path, count: int) -> HistoryIndex:
    index = HistoryIndex(tmp_path)
    for seed in range(1, count + 1):
        text = format_infotext(f"picture {seed}", "", {"Steps": 2, "Seed": seed, "Size": "8x8"})
        index.add(save_image(Image.new("RGB", (8, 8), (seed, 0, 0)), tmp_path, "txt2img", seed, text))
    return index


NO_FILTERS = ("", "All", "All", "", "")


def test_history_delete_of_the_only_image_on_the_last_page_shows_the_page_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from types import SimpleNamespace

    from webui.ui import history_tab

    monkeypatch.setattr(history_tab, "PER_PAGE", 2)
    service = SimpleNamespace(history=_history_with(tmp_path, 3))
    last_page = dict(zip(PAGE_OUTPUTS, show_page(service, 1, *NO_FILTERS), strict=True))
    assert last_page["page"] == 1 and len(last_page["entries"]) == 1 and "page 2 of 2" in last_page["status"]
    ((path, _),) = last_page["entries"]
    after = dict(zip(PAGE_OUTPUTS, remove_image(service, last_page["entries"], 0, 1, *NO_FILTERS), strict=True))
    assert not Path(path).exists() and service.history.page().total == 2
    assert after["page"] == 0 and len(after["entries"]) == len(after["gallery"]) == 2
    assert "2 image(s) — page 1 of 1" in after["status"] and after["selected"] == -1 and after["info"] == ""


def test_history_delete_that_fails_or_has_nothing_selected_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from types import SimpleNamespace

    index = _history_with(tmp_path, 2)
    service = SimpleNamespace(history=index)
    shown = dict(zip(PAGE_OUTPUTS, show_page(service, 0, *NO_FILTERS), strict=True))

    def refuse(path: Any) -> None:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(index, "delete", refuse)
    failed = dict(zip(PAGE_OUTPUTS, remove_image(service, shown["entries"], 1, 0, *NO_FILTERS), strict=True))
    assert (
        "easel-error" in failed["status"]
        and f"Could not delete {shown['entries'][1][0]}: Permission denied" in failed["status"]
    )
    assert Path(shown["entries"][1][0]).exists() and len(failed["entries"]) == 2
    nothing = dict(zip(PAGE_OUTPUTS, remove_image(service, shown["entries"], -1, 0, *NO_FILTERS), strict=True))
    assert "Select an image first." in nothing["status"]
    bad_date = dict(zip(PAGE_OUTPUTS, show_page(service, 0, "", "All", "All", "yesterday", ""), strict=True))
    assert "from" in bad_date["status"] and bad_date["gallery"] == KEEP


def test_settings_apply_names_a_bad_value_saves_nothing_then_saves_a_good_form(
    fake_service: Callable[..., GenerationService],
) -> None:
    from webui.preferences import PreferencesStore
    from webui.ui.settings_tab import FIELDS, save_settings

    service = fake_service()
    names = [name for name, _ in FIELDS]
    form = {name: getattr(service.preferences.current, name) for name in names}
    form.update(jpeg_quality=0, default_steps=33)
    status, *widgets = save_settings(service, names, list(form.values()), built_units=3)
    assert "easel-error" in status and "jpeg_quality" in status and all(w == KEEP for w in widgets)
    assert not service.preferences.path.exists() and service.preferences.current.default_steps == 20
    form["jpeg_quality"] = 80
    status, *widgets = save_settings(service, names, list(form.values()), built_units=3)
    saved = dict(zip(names, widgets, strict=True))
    assert "Settings saved." in status and saved["jpeg_quality"] == 80 and saved["default_steps"] == 33
    assert PreferencesStore(service.preferences.path.parent).current.default_steps == 33


def test_a_fresh_page_fills_the_forms_with_the_default_settings(tmp_path: Path) -> None:
    from webui.service.factory import create_service
    from webui.ui.page import build_ui

    (tmp_path / "models" / "Stable-diffusion").mkdir(parents=True)
    settings = Settings(models_dir=tmp_path / "models", outputs_dir=tmp_path / "out", demo_model=False)
    service = create_service(settings, start=False)
    page = build_ui(service)
    # Saved after the page was built: the load event reads what is saved now.
    service.update_preferences(
        default_steps=33, default_cfg_scale=4.5, default_sampler="Euler", default_negative_prompt="blurry, text"
    )
    (load,) = [f for f in page.fns.values() if getattr(f.fn, "__name__", "") == "on_load"]
    filled = {o.elem_id: v for o, v in zip(load.outputs, load.fn(None), strict=True)}
    for tab in ("txt2img", "img2img", "inpaint"):
        assert filled[f"{tab}_steps"]["value"] == 33 and filled[f"{tab}_cfg_scale"]["value"] == 4.5
        assert filled[f"{tab}_sampling"]["value"] == "Euler" and filled[f"{tab}_neg_prompt"] == "blurry, text"
        assert filled[f"{tab}_width"] == KEEP  # no model says a size: the form's stays
    assert filled["setting_default_steps"] == 33 and filled["setting_default_negative_prompt"] == "blurry, text"
