"""The Gradio page: a txt2img form and a result gallery over the generation service (the full UI is its own issue).

Handlers only turn widget values into a ``GenerationRequest`` and read the job's progress; every rule lives in
the service, so the page shows the same errors as the API and the CLI. No torch or diffusers here.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import gradio as gr

from webui import samplers
from webui.errors import EaselError
from webui.service.service import GenerationService
from webui.types import GenerationRequest, Progress


def _progress_text(progress: Progress) -> str:
    if progress.state == "queued":
        return f"Waiting in queue (position {progress.queue_position})"
    if progress.state == "running" and progress.total_steps:
        eta = f", ETA {progress.eta_seconds:.0f} s" if progress.eta_seconds is not None else ""
        image = f"image {progress.image_index + 1}/{progress.image_count}, " if progress.image_count > 1 else ""
        return f"{image}step {progress.step}/{progress.total_steps} ({progress.fraction:.0%}{eta})"
    if progress.state == "running":
        return "Starting…"
    return progress.message or progress.state


def build_ui(service: GenerationService) -> gr.Blocks:
    checkpoints = service.engine.weights.checkpoints

    def checkpoint_titles() -> list[tuple[str, str]]:
        """(label, value) pairs: the value stays A1111's title; the label says which file came with Easel."""
        return [(f"{c.title} (built-in demo)" if c.builtin else c.title, c.title) for c in checkpoints.list()]

    with gr.Blocks(title="Easel") as page:
        job_id = gr.State(None)
        with gr.Row():
            checkpoint = gr.Dropdown(
                choices=checkpoint_titles(), value=None, label="Stable Diffusion checkpoint", scale=4
            )
            refresh = gr.Button("🔄", scale=0, min_width=48, elem_id="refresh_checkpoints")
        with gr.Tab("txt2img"):
            with gr.Row():
                with gr.Column(scale=3):
                    prompt = gr.Textbox(label="Prompt", lines=3, elem_id="txt2img_prompt")
                    negative = gr.Textbox(label="Negative prompt", lines=2, elem_id="txt2img_neg_prompt")
                with gr.Column(scale=1):
                    generate = gr.Button("Generate", variant="primary", elem_id="txt2img_generate")
                    interrupt = gr.Button("Interrupt", elem_id="txt2img_interrupt")
            with gr.Row():
                with gr.Column():
                    with gr.Row():
                        sampler = gr.Dropdown(
                            samplers.sampler_names(), value=samplers.DEFAULT_SAMPLER, label="Sampling method"
                        )
                        schedule = gr.Dropdown(samplers.schedule_labels(), value="Automatic", label="Schedule type")
                    steps = gr.Slider(1, service.settings.limits.max_steps, value=20, step=1, label="Sampling steps")
                    with gr.Row():
                        width = gr.Slider(64, service.settings.limits.max_size, value=512, step=8, label="Width")
                        height = gr.Slider(64, service.settings.limits.max_size, value=512, step=8, label="Height")
                    with gr.Row():
                        batch_count = gr.Slider(
                            1, service.settings.limits.max_batch_count, value=1, step=1, label="Batch count"
                        )
                        batch_size = gr.Slider(
                            1, service.settings.limits.max_batch_size, value=1, step=1, label="Batch size"
                        )
                    cfg = gr.Slider(1, 30, value=7, step=0.5, label="CFG Scale")
                    seed = gr.Number(value=-1, precision=0, label="Seed (-1 = random)")
                with gr.Column():
                    status = gr.Markdown("", elem_id="txt2img_status")
                    preview = gr.Image(label="Preview", visible=False, interactive=False, elem_id="txt2img_preview")
                    gallery = gr.Gallery(label="Output", columns=2, height=520, elem_id="txt2img_gallery")
                    info = gr.Textbox(label="Generation info", lines=4, interactive=False, elem_id="txt2img_info")

        def run(ckpt, p, n, smp, sch, st, w, h, bc, bs, c, sd) -> Iterator[tuple[Any, ...]]:
            try:
                request = GenerationRequest.build(
                    prompt=p, negative_prompt=n, sampler_name=smp, scheduler=sch, steps=int(st), width=int(w),
                    height=int(h), n_iter=int(bc), batch_size=int(bs), cfg_scale=float(c),
                    seed=int(sd if sd is not None else -1), checkpoint=ckpt or None,
                )  # fmt: skip
                job = service.submit(request)
            except EaselError as exc:
                raise gr.Error(str(exc)) from None
            yield job.id, _progress_text(job.progress), gr.update(visible=False), gr.update(), gr.update()
            for progress in job.updates():
                shown = gr.update(value=progress.preview, visible=True) if progress.preview is not None else gr.update()
                yield job.id, _progress_text(progress), shown, gr.update(), gr.update()
            if job.state == "failed":
                raise gr.Error(str(job.error))
            if job.state == "cancelled":
                yield None, "Interrupted", gr.update(visible=False), gr.update(), gr.update()
                return
            result = job.result
            # Saved files are shown as themselves, so a download keeps its PNG infotext (not a re-encoded copy).
            images = [(str(img.path), img.path.name) if img.path else (img.image, None) for img in result.images]
            text = "\n\n".join(img.infotext for img in result.images[:1])
            done = f"Done in {result.seconds:.1f} s" + "".join(f" — {note}" for note in result.notes)
            yield None, done, gr.update(visible=False), images, text

        generate.click(
            run,
            inputs=[
                checkpoint,
                prompt,
                negative,
                sampler,
                schedule,
                steps,
                width,
                height,
                batch_count,
                batch_size,
                cfg,
                seed,
            ],
            outputs=[job_id, status, preview, gallery, info],
            concurrency_limit=None,
        )

        def stop(current: str | None) -> None:
            if current:
                service.cancel(current)

        interrupt.click(stop, inputs=[job_id], outputs=None)

        def rescan(current: str | None) -> Any:
            service.engine.weights.refresh()
            try:  # a title gains its hash once loaded: follow it, or Gradio refuses the old value
                value = checkpoints.get(current).title if current else None
            except EaselError:
                value = None
            if value is None:  # show what a generation would use (the demo model on a fresh install)
                default = service.default_checkpoint()
                value = default.title if default is not None else None
            return gr.update(choices=checkpoint_titles(), value=value)

        def apply_defaults(current: str | None) -> tuple[Any, ...]:
            """Selecting a model sets what it was made for (the demo model: 64x64), as its metadata says."""
            try:
                found = service.defaults_for(current or None)
            except EaselError:
                found = {}
            names = ("width", "height", "steps", "cfg_scale", "sampler_name")
            return tuple(gr.update(value=found[n]) if n in found else gr.update() for n in names)

        model_fields = [width, height, steps, cfg, sampler]
        refresh.click(rescan, inputs=[checkpoint], outputs=[checkpoint])
        checkpoint.input(apply_defaults, inputs=[checkpoint], outputs=model_fields)
        page.load(rescan, inputs=[checkpoint], outputs=[checkpoint]).then(
            apply_defaults, inputs=[checkpoint], outputs=model_fields
        )
    return page
