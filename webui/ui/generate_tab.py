"""One generation tab (txt2img, img2img or Inpaint): prompt, parameters, buttons, progress and results.

The three tabs share this builder, as A1111's share their layout: only the image inputs, the img2img and
inpaint options, txt2img's "Hires. fix" and img2img's "Script" (SD upscale) differ; each has a "ControlNet"
accordion (``controlnet_panel``) and, when a running extension takes per-job arguments, an "Extensions" one
(``extensions_tab``). Handlers turn widget values into a request with ``webui.ui.forms`` and follow
the job through the service; nothing here knows how images are made.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr
from PIL import Image

from webui import samplers
from webui.errors import EaselError
from webui.service.jobs import Job
from webui.service.service import GenerationService
from webui.types import Mode
from webui.ui import forms
from webui.ui.controlnet_panel import Choices, ControlNetPanel, build_controlnet_panel, wire_previews
from webui.ui.extensions_tab import build_extension_arguments
from webui.ui.networks_panel import build_lora_panel
from webui.ui.progress import file_link, message_html, progress_html
from webui.ui.widgets import FieldSlider

log = logging.getLogger(__name__)

TAB_IDS = {Mode.TXT2IMG: "txt2img", Mode.IMG2IMG: "img2img", Mode.INPAINT: "inpaint"}
SEND_TARGETS = ("img2img", "inpaint", "controlnet")


@dataclass
class TopBar:
    """The widgets above the tabs that every generation reads."""

    checkpoint: gr.Dropdown
    vae: gr.Dropdown
    clip_skip: gr.Slider


@dataclass
class GenerationTab:
    mode: Mode
    widgets: dict[str, Any]  # request field name -> widget, in ``forms.fields_for(mode)`` order
    gallery: gr.Gallery
    info: gr.Textbox
    results: gr.State  # [(file path or None, infotext)] of the last run
    selected: gr.State  # index into results
    send: dict[str, gr.Button] = field(default_factory=dict)
    controlnet: ControlNetPanel | None = None
    hires: gr.Accordion | None = None  # txt2img's "Hires. fix"
    extensions: gr.Accordion | None = None  # the extensions' per-job arguments (None: no extension takes any)

    @property
    def elem(self) -> str:
        return TAB_IDS[self.mode]


def build_generation_tab(mode: Mode, service: GenerationService, top: TopBar, modules: Choices) -> GenerationTab:
    """Build the tab's widgets inside the current ``gr.Tab`` and wire its own events; ``modules``: the ControlNet
    units' preprocessor menu (``controlnet_panel.preprocessor_choices``)."""
    m = TAB_IDS[mode]
    limits = service.settings.limits
    unit_count = service.preferences.current.controlnet_units
    widgets: dict[str, Any] = {}
    hires: gr.Accordion | None = None
    hires_size: gr.HTML | None = None
    with gr.Row(equal_height=False):
        with gr.Column(scale=6):
            widgets["prompt"] = gr.Textbox(
                label="Prompt", lines=3, elem_id=f"{m}_prompt", placeholder="Prompt (press Ctrl+Enter to generate)"
            )
            prompt_tokens = gr.HTML(_tokens_html(0, 75), elem_id=f"{m}_token_counter", elem_classes=["easel-tokens"])
            widgets["negative_prompt"] = gr.Textbox(label="Negative prompt", lines=2, elem_id=f"{m}_neg_prompt")
            negative_tokens = gr.HTML(
                _tokens_html(0, 75), elem_id=f"{m}_negative_token_counter", elem_classes=["easel-tokens"]
            )
        with gr.Column(scale=1, min_width=200):
            generate = gr.Button("Generate", variant="primary", elem_id=f"{m}_generate", size="lg")
            with gr.Row():
                interrupt = gr.Button("Interrupt", elem_id=f"{m}_interrupt", size="sm")
                skip = gr.Button("Skip", elem_id=f"{m}_skip", size="sm")
    build_lora_panel(service, widgets["prompt"], m)  # A1111's "Lora" cards: a click adds <lora:NAME:1>
    with gr.Row(equal_height=False):
        with gr.Column(scale=1):
            if mode is Mode.IMG2IMG:
                widgets["init_image"] = gr.Image(
                    label="Image for img2img",
                    type="pil",
                    sources=["upload", "clipboard"],
                    image_mode="RGBA",
                    height=360,
                    elem_id="img2img_image",
                )
            if mode is Mode.INPAINT:
                widgets["editor"] = gr.ImageEditor(
                    label="Image for inpainting: paint the area to change",
                    type="pil",
                    sources=["upload", "clipboard"],
                    transforms=(),
                    layers=False,
                    brush=gr.Brush(default_size=24, colors=[("#ffffff", 0.7)], color_mode="fixed"),
                    format="png",
                    height=420,
                    elem_id="inpaint_editor",
                )
                widgets["mask_upload"] = gr.Image(
                    label="Mask upload (optional; white = change, added to what is painted)",
                    type="pil",
                    sources=["upload", "clipboard"],
                    image_mode="L",
                    height=200,
                    elem_id="inpaint_mask",
                )
            with gr.Row():
                widgets["sampler_name"] = gr.Dropdown(
                    samplers.sampler_names(), value=samplers.DEFAULT_SAMPLER, label="Sampling method",
                    elem_id=f"{m}_sampling",
                )  # fmt: skip
                widgets["scheduler"] = gr.Dropdown(
                    samplers.schedule_labels(), value="Automatic", label="Schedule type", elem_id=f"{m}_scheduler"
                )
            widgets["steps"] = gr.Slider(
                1, limits.max_steps, value=20, step=1, label="Sampling steps", elem_id=f"{m}_steps"
            )
            with gr.Row(equal_height=True):
                with gr.Column(scale=5):
                    widgets["width"] = gr.Slider(
                        limits.min_size, limits.max_size, value=512, step=8, label="Width", elem_id=f"{m}_width"
                    )
                    widgets["height"] = gr.Slider(
                        limits.min_size, limits.max_size, value=512, step=8, label="Height", elem_id=f"{m}_height"
                    )
                swap = gr.Button("⇅", elem_id=f"{m}_swap_size", scale=0, min_width=48, size="sm")
            with gr.Row():
                widgets["n_iter"] = gr.Slider(
                    1, limits.max_batch_count, value=1, step=1, label="Batch count", elem_id=f"{m}_batch_count"
                )
                widgets["batch_size"] = gr.Slider(
                    1, limits.max_batch_size, value=1, step=1, label="Batch size", elem_id=f"{m}_batch_size"
                )
            widgets["cfg_scale"] = gr.Slider(1, 30, value=7, step=0.5, label="CFG Scale", elem_id=f"{m}_cfg_scale")
            with gr.Row(equal_height=True):
                widgets["seed"] = gr.Number(value=-1, precision=0, label="Seed", elem_id=f"{m}_seed", scale=5)
                random_seed = gr.Button("🎲", elem_id=f"{m}_random_seed", scale=0, min_width=48, size="sm")
                reuse_seed = gr.Button("♻️", elem_id=f"{m}_reuse_seed", scale=0, min_width=48, size="sm")
            if mode is not Mode.TXT2IMG:
                widgets["resize_mode"] = gr.Radio(
                    forms.RESIZE_LABELS, value=forms.RESIZE_LABELS[0], label="Resize mode", elem_id=f"{m}_resize_mode"
                )
                widgets["denoising_strength"] = gr.Slider(
                    0.01, 1.0, value=0.75, step=0.01, label="Denoising strength", elem_id=f"{m}_denoising_strength"
                )
            if mode is Mode.INPAINT:
                widgets["mask_blur"] = gr.Slider(0, 64, value=4, step=1, label="Mask blur", elem_id="inpaint_mask_blur")
                widgets["inpainting_mask_invert"] = gr.Radio(
                    list(forms.MASK_MODES), value=forms.MASK_MODES[0], label="Mask mode", elem_id="inpaint_mask_mode"
                )
                widgets["inpainting_fill"] = gr.Radio(
                    forms.MASKED_CONTENT_NAMES, value="original", label="Masked content", elem_id="inpaint_fill"
                )
                widgets["inpaint_full_res"] = gr.Radio(
                    list(forms.INPAINT_AREAS), value=forms.INPAINT_AREAS[0], label="Inpaint area",
                    elem_id="inpaint_area",
                )  # fmt: skip
                widgets["inpaint_full_res_padding"] = gr.Slider(
                    0, 256, value=32, step=4, label="Only masked padding, pixels", elem_id="inpaint_padding"
                )
            if mode is Mode.TXT2IMG:
                hires, hires_size = _build_hires(service, widgets)
            panel = build_controlnet_panel(mode, service, unit_count, m, modules)
            widgets.update(panel.widgets())
            specs = forms.argument_specs(service.plugins)
            extensions = build_extension_arguments(specs, m, widgets)
            if mode is Mode.IMG2IMG:
                _build_scripts(service, widgets)
        with gr.Column(scale=1):
            progress = gr.HTML("", elem_id=f"{m}_progress")
            preview = gr.Image(
                label="Preview", visible=False, interactive=False, elem_id=f"{m}_preview", height=256, format="png"
            )
            gallery = gr.Gallery(
                label="Output", columns=2, height=480, elem_id=f"{m}_gallery", object_fit="contain", format="png"
            )
            with gr.Row():
                send = {
                    "img2img": gr.Button("📤 img2img", elem_id=f"{m}_send_to_img2img", size="sm"),
                    "inpaint": gr.Button("📤 Inpaint", elem_id=f"{m}_send_to_inpaint", size="sm"),
                    "controlnet": gr.Button("📤 ControlNet", elem_id=f"{m}_send_to_controlnet", size="sm"),
                }
            info = gr.Textbox(label="Generation info", lines=4, interactive=False, elem_id=f"{m}_info")
            link = gr.HTML("", elem_id=f"{m}_file_link")

    job_id = gr.State(None)
    results = gr.State([])
    selected = gr.State(0)
    names = list(widgets)
    assert set(names) == set(forms.fields_for(mode, unit_count, specs)), names
    size = [widgets["width"], widgets["height"]]
    tab_inputs = {name: widgets[name] for name in _INPUTS[mode]}
    wire_previews(panel, mode, service, size, tab_inputs)
    if mode is Mode.TXT2IMG:
        sizes = [*size, widgets["hr_scale"], widgets["hr_resize_x"], widgets["hr_resize_y"]]
        for widget in sizes:
            widget.change(
                _size_html, inputs=sizes, outputs=[hires_size], show_progress="hidden", trigger_mode="always_last"
            )

    def run(
        request: gr.Request, checkpoint: str | None, vae: str | None, clip_skip: float, *values: Any
    ) -> Iterator[tuple[Any, ...]]:
        yield from run_job(service, mode, names, _owner(request), checkpoint, vae, clip_skip, values)

    inputs = [top.checkpoint, top.vae, top.clip_skip, *widgets.values()]
    shown = {
        "job_id": job_id, "progress": progress, "preview": preview, "gallery": gallery, "info": info, "link": link,
        "results": results, "selected": selected,
    }  # fmt: skip
    outputs = [shown[name] for name in RUN_OUTPUTS]
    # Gradio's own spinner would cover the progress bar that says more; previews show in their own image.
    generate.click(run, inputs=inputs, outputs=outputs, concurrency_limit=None, show_progress="hidden")

    def stop(current: str | None, request: gr.Request) -> None:
        if current:
            try:
                service.cancel(current, owner=_owner(request))
            except (EaselError, PermissionError) as exc:
                gr.Warning(str(exc))

    def skip_image(current: str | None, request: gr.Request) -> None:
        if current:
            try:
                service.skip(current, owner=_owner(request))
            except (EaselError, PermissionError) as exc:
                gr.Warning(str(exc))

    interrupt.click(stop, inputs=[job_id], outputs=None, concurrency_limit=None)
    skip.click(skip_image, inputs=[job_id], outputs=None, concurrency_limit=None)

    def on_select(kept: list[tuple[str | None, str]], evt: gr.SelectData) -> tuple[Any, ...]:
        return gallery_selection(kept, evt.index)

    gallery.select(on_select, inputs=[results], outputs=[info, link, selected])

    swap.click(lambda w, h: (h, w), inputs=[widgets["width"], widgets["height"]], outputs=[widgets["width"], widgets["height"]])  # fmt: skip
    random_seed.click(lambda: -1, outputs=[widgets["seed"]])

    def last_seed(kept: list[tuple[str | None, str]], index: int, current: Any) -> Any:
        if not 0 <= index < len(kept):  # nothing made yet, or a detected map selected: it has no seed
            return current
        seed = forms.seed_of(kept[index][1])
        return current if seed is None else seed

    reuse_seed.click(last_seed, inputs=[results, selected, widgets["seed"]], outputs=[widgets["seed"]])

    def count(text: str) -> str:
        return _tokens_html(*service.count_tokens(text or ""))

    for box, counter in ((widgets["prompt"], prompt_tokens), (widgets["negative_prompt"], negative_tokens)):
        box.change(count, inputs=[box], outputs=[counter], trigger_mode="always_last", show_progress="hidden")

    return GenerationTab(mode, widgets, gallery, info, results, selected, send, panel, hires, extensions)


# The tab's own widgets a ControlNet unit without an image takes its input from (``forms.control_inputs``).
_INPUTS = {
    Mode.TXT2IMG: (),
    Mode.IMG2IMG: ("init_image",),
    Mode.INPAINT: (
        "editor",
        "mask_upload",
        "inpainting_mask_invert",
        "inpaint_full_res",
        "inpaint_full_res_padding",
        "mask_blur",
    ),
}


def _build_hires(service: GenerationService, widgets: dict[str, Any]) -> tuple[gr.Accordion, gr.HTML]:
    """A1111's "Hires. fix": a second pass at a larger size. Its values go into the request only when enabled;
    the line under the sizes says what size the image will be, as A1111's does."""
    limits = service.settings.limits
    samplers_same = [forms.SAME_SAMPLER, *samplers.sampler_names()]
    schedules_same = [forms.SAME_SCHEDULER, *samplers.schedule_labels()]
    with gr.Accordion("Hires. fix", open=False, elem_id="txt2img_hires_fix") as accordion:
        widgets["enable_hr"] = gr.Checkbox(False, label="Enable hires. fix", elem_id="txt2img_enable_hr")
        with gr.Row():
            widgets["hr_upscaler"] = gr.Dropdown(
                service.upscaler_names(latent=True), value="Latent", label="Upscaler", allow_custom_value=True,
                elem_id="txt2img_hr_upscaler",
            )  # fmt: skip
            widgets["hr_second_pass_steps"] = FieldSlider(
                0, limits.max_steps, value=0, step=1, label="Hires steps", elem_id="txt2img_hires_steps"
            )
            widgets["denoising_strength"] = FieldSlider(
                0.01, 1.0, value=forms.HIRES_DENOISING, step=0.01, label="Denoising strength",
                elem_id="txt2img_denoising_strength",
            )  # fmt: skip
        with gr.Row():
            widgets["hr_scale"] = FieldSlider(1, 4, value=2, step=0.05, label="Upscale by", elem_id="txt2img_hr_scale")
            widgets["hr_resize_x"] = FieldSlider(
                0, limits.max_size, value=0, step=8, label="Resize width to", elem_id="txt2img_hr_resize_x"
            )
            widgets["hr_resize_y"] = FieldSlider(
                0, limits.max_size, value=0, step=8, label="Resize height to", elem_id="txt2img_hr_resize_y"
            )
        size = gr.HTML(_size_html(512, 512, 2, 0, 0), elem_id="txt2img_hires_size")
        with gr.Row():
            widgets["hr_sampler_name"] = gr.Dropdown(
                samplers_same, value=forms.SAME_SAMPLER, label="Hires sampling method", allow_custom_value=True,
                elem_id="txt2img_hr_sampler",
            )  # fmt: skip
            widgets["hr_scheduler"] = gr.Dropdown(
                schedules_same, value=forms.SAME_SCHEDULER, label="Hires schedule type", allow_custom_value=True,
                elem_id="txt2img_hr_scheduler",
            )  # fmt: skip
        with gr.Row():
            placeholder = "Prompt for hires fix pass.\nLeave empty to use the same prompt as in first pass."
            widgets["hr_prompt"] = gr.Textbox(
                label="Hires prompt", lines=2, placeholder=placeholder, elem_id="txt2img_hires_prompt"
            )
            widgets["hr_negative_prompt"] = gr.Textbox(
                label="Hires negative prompt", lines=2, placeholder=placeholder.replace("Prompt", "Negative prompt", 1)
                .replace("same prompt", "same negative prompt"), elem_id="txt2img_hires_neg_prompt",
            )  # fmt: skip
    widgets["enable_hr"].change(
        lambda on: gr.update(label=HIRES_LABELS[bool(on)]), inputs=[widgets["enable_hr"]], outputs=[accordion],
        show_progress="hidden",
    )  # fmt: skip
    return accordion, size


HIRES_LABELS = {False: "Hires. fix", True: "Hires. fix (on)"}  # the closed accordion still says it is on


def _size_html(width: Any, height: Any, scale: Any, resize_x: Any, resize_y: Any) -> str:
    text = forms.hires_size_text(width, height, scale, resize_x, resize_y)
    return f'<span class="easel-hires-size">{text}</span>'


def _build_scripts(service: GenerationService, widgets: dict[str, Any]) -> None:
    """img2img's "Script" dropdown, where A1111 keeps SD upscale; its settings show only when it is chosen."""
    widgets["sd_upscale"] = gr.Dropdown(
        list(forms.SCRIPTS), value=forms.SCRIPTS[0], label="Script", elem_id="img2img_script"
    )
    with gr.Column(visible=False, elem_id="img2img_sd_upscale") as options:
        gr.Markdown(
            "Will upscale the image by the selected scale factor, then redraw it in tiles of the **Width x Height** "
            "above (set them to the model's own size) that overlap by the tile overlap.",
            elem_classes=["easel-info"],
        )
        with gr.Row():
            widgets["sd_upscale_overlap"] = FieldSlider(
                0, 256, value=64, step=16, label="Tile overlap", elem_id="img2img_sd_upscale_overlap"
            )
            widgets["sd_upscale_scale"] = FieldSlider(
                1, 4, value=2, step=0.05, label="Scale Factor", elem_id="img2img_sd_upscale_scale"
            )
        widgets["sd_upscale_upscaler"] = gr.Dropdown(
            service.upscaler_names(), value="Lanczos", label="Upscaler", allow_custom_value=True,
            elem_id="img2img_sd_upscale_upscaler",
        )  # fmt: skip
    widgets["sd_upscale"].change(
        lambda script: gr.update(visible=script == forms.SCRIPTS[1]), inputs=[widgets["sd_upscale"]],
        outputs=[options], show_progress="hidden",
    )  # fmt: skip


# What ``run_job`` yields, in this order: the outputs of the Generate button.
RUN_OUTPUTS = ("job_id", "progress", "preview", "gallery", "info", "link", "results", "selected")


def run_job(
    service: GenerationService,
    mode: Mode,
    names: Sequence[str],
    owner: str | None,
    checkpoint: str | None,
    vae: str | None,
    clip_skip: float,
    values: Sequence[Any],
) -> Iterator[tuple[Any, ...]]:
    """Generate's handler: submit the tab's request, follow the job, end with its results or a message in words.

    Each yield is one update of ``RUN_OUTPUTS``. Outside a closure so the end states (done, failed, interrupted,
    cancelled before it started, a partly finished batch) are tested without a browser.
    """
    keep = gr.update()
    by_name = dict(zip(names, values, strict=True))
    units = forms.enabled_units(by_name)  # to name units as the page numbers them, not as the request does
    try:
        req = forms.build_request(
            mode,
            by_name,
            checkpoint=checkpoint,
            vae=vae,
            clip_skip=int(clip_skip or 1),
            save_images=service.preferences.current.save_images,
            extensions=forms.argument_specs(service.plugins),  # running now: one that failed since is not sent
        )
        job = service.submit(req, owner=owner)
    except Exception as exc:  # a bug must still end in words on the page, never Gradio's bare "Error"
        if not isinstance(exc, EaselError):
            log.exception("%s: could not start the job", TAB_IDS[mode])
        text = str(exc) if isinstance(exc, EaselError) else f"Could not start the job: {type(exc).__name__}: {exc}"
        text = forms.page_unit_names(text, units)
        gr.Warning(text)  # a toast where the user is looking, and the message stays by the results
        yield None, message_html(text, "error"), gr.update(visible=False), keep, keep, keep, keep, keep
        return
    yield job.id, progress_html(job.progress), gr.update(visible=False), keep, keep, keep, keep, keep
    for progress, preview in _progress_updates(job):
        yield job.id, progress, preview, keep, keep, keep, keep, keep
    yield _ending(job, units)


def _progress_updates(job: Job) -> Iterator[tuple[str, Any]]:
    """(progress bar, preview update) while the job waits and runs.

    A job's progress keeps its latest preview, so every step after the first preview carries it again; the
    browser is sent a preview only when it is a new one (a new image object), not the same PNG on every step.
    """
    sent: Image.Image | None = None
    for event in job.updates():
        if event.state not in ("queued", "running"):
            continue
        preview: Any = gr.update()
        if event.preview is not None and event.preview is not sent:
            sent = event.preview
            preview = gr.update(value=event.preview, visible=True)
        yield progress_html(event), preview


def _ending(job: Job, units: Sequence[int] = ()) -> tuple[Any, ...]:
    """The last update: the saved images and the first one's infotext, or a message saying why there are none.

    The ControlNet units' detected maps follow the images in the gallery, as A1111 shows them; they are not files
    and have no infotext, so ``results`` (what the info, link and send buttons use) holds the images only.
    ``units`` are the page numbers of the enabled units, to name them in an error as the page does.
    """
    keep = gr.update()
    hidden = gr.update(visible=False)
    result = job.result
    saved = result.images if result is not None else []
    if job.state == "done":
        message = f"Done in {result.seconds:.1f} s: {len(saved)} image(s)"
        message += "".join(f"; {note}" for note in result.notes)
        kind = "info"
    elif job.state == "failed":
        message, kind = forms.page_unit_names(str(job.error), units), "error"
    elif job.started:
        message, kind = "Interrupted: the unfinished image was not saved.", "info"
    else:
        message, kind = "Cancelled before it started.", "info"
    if job.state != "done" and saved:
        message += f" The {len(saved)} image(s) finished before it are saved and shown."
    if not saved and job.state != "done":  # nothing new: the last results stay on screen
        return None, message_html(message, kind), hidden, keep, keep, keep, keep, keep
    # Saved files are shown as themselves, so a download keeps its PNG infotext (not a re-encoded copy).
    shown_images = [(str(i.path), i.path.name) if i.path else (i.image, f"seed {i.seed}") for i in saved]
    maps = result.control_maps if result is not None and saved else []
    shown_images += [(image, f"ControlNet {n} detected map") for n, image in enumerate(maps)]
    kept = [(str(i.path) if i.path else None, i.infotext) for i in saved]
    first = kept[0] if kept else (None, "")
    return None, message_html(message, kind), hidden, shown_images, first[1], file_link(first[0]), kept, 0


def gallery_selection(kept: list[tuple[str | None, str]], index: Any) -> tuple[str, str, int]:
    """(infotext, file link, selected index) for a click on gallery item ``index``. Items after the images are
    detected maps: no infotext or file, and the send buttons pass nothing on for them."""
    if not isinstance(index, int) or index < 0:
        index = 0
    if index >= len(kept):
        return "", "", index
    return kept[index][1], file_link(kept[index][0]), index


def selected_image(kept: list[tuple[str | None, str]], index: int) -> str | None:
    """The file of the image the user picked in a result gallery (what the send buttons pass on); None for a
    detected map or nothing."""
    if not 0 <= index < len(kept):
        return None
    path = kept[index][0]
    return path if path and Path(path).is_file() else None


def _owner(request: gr.Request | None) -> str | None:
    """Each browser session owns its jobs: another tab or user cannot interrupt them."""
    if request is None:
        return None
    return getattr(request, "session_hash", None) or None


def _tokens_html(count: int, limit: int) -> str:
    over = " easel-tokens-over" if count > 75 else ""
    return f'<span class="easel-token-count{over}">{count}/{limit}</span>'
