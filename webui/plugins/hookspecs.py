"""The hooks an extension may implement (pluggy specifications). docs/plugins.md's reference is generated from
these docstrings by ``tools/gen_plugin_docs.py``, and a test fails when the two differ, so they cannot drift.

Each docstring says when the hook runs, what it may change, what its return value means, and what happens when
it raises. Hooks are called with keyword arguments: an implementation may take fewer arguments than the
specification (only the ones it needs), never other names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pluggy

from webui.plugin_api import PROJECT, App, Job, ModelInfo, Preprocessor, Setting, Step, Tab

hookspec = pluggy.HookspecMarker(PROJECT)

# Hooks whose result shapes a job: an exception fails the job with a message naming the extension.
SHAPING = (
    "easel_before_generation",
    "easel_denoising_step",
    "easel_postprocess_image",
    "easel_infotext_fields",
)
# Hooks that only observe: an exception is logged with the extension's name, and nothing else changes.
OBSERVERS = ("easel_image_saved", "easel_model_loaded", "easel_infotext_read")
# Hooks asked once, at start-up: an exception disables the extension (listed with the error).
STARTUP = (
    "easel_settings",
    "easel_job_arguments",
    "easel_app_started",
    "easel_ui_tabs",
    "easel_controlnet_preprocessors",
)


class EaselHooks:
    """Easel's hook specifications, plugin API 1.0."""

    # -- start-up ------------------------------------------------------------------------------------------------
    @hookspec
    def easel_settings(self) -> list[Setting]:
        """The extension's saved settings.

        Runs once at start-up. Return ``Setting`` objects; Easel renders them in the Extensions tab, checks every
        value against its kind and range, saves them in the data folder and hands them to every other hook as
        ``job.settings`` / ``app.settings`` (by key, defaults filled in). Raising disables the extension.
        """

    @hookspec
    def easel_job_arguments(self) -> list[Setting]:
        """The extension's per-job arguments.

        Runs once at start-up. Return ``Setting`` objects; Easel renders them in each generation tab (an
        accordion named after the extension), takes them from API requests by name
        (``alwayson_scripts: {"<extension name>": {"args": {"<key>": value}}}``) and from the command line, checks
        them, and hands them to the job's hooks as ``job.args`` (by key, defaults filled in). Raising disables the
        extension.
        """

    @hookspec
    def easel_app_started(self, app: App) -> None:
        """Easel has started; add HTTP routes here.

        Runs once, after the service is built and before the server listens. ``app.router`` is a FastAPI
        ``APIRouter`` served under ``/easel/v1/ext/<extension name>``, behind the same authentication as every
        other route; ``app.data_dir`` is the extension's own folder in the data folder. The return value is
        ignored. Raising disables the extension, and its routes are not served.
        """

    @hookspec
    def easel_ui_tabs(self) -> list[Tab]:
        """Tabs to add to the page, after Easel's own.

        Runs once while the page is built. Return ``Tab`` objects; each ``build`` runs inside its tab's Gradio
        context and may create any Gradio components and events there. Raising (here or in a ``build``) disables
        the extension's tabs: the tab shows the error instead, and the page still starts.
        """

    @hookspec
    def easel_controlnet_preprocessors(self) -> list[Preprocessor]:
        """Extra ControlNet preprocessors.

        Runs once at start-up. Return ``Preprocessor`` objects; they are listed with the built-in ones (a name
        already taken is refused and logged) and run like them, on the unit's image at its preprocessor
        resolution. An exception inside ``run`` fails that job (or preview) with a message naming the extension.
        """

    # -- a job ---------------------------------------------------------------------------------------------------
    @hookspec
    def easel_before_generation(self, job: Job) -> dict[str, Any] | None:
        """A job is about to run; change its request.

        Runs on the worker, when the job starts (after it waited in the queue), once per job. Return a dict of
        request fields to change (``{"steps": 30, "prompt": job.prompt + ", detailed"}``) or None. The changes are
        checked like any request (a bad value fails the job naming the field and the extension) and apply to this
        job only; extensions run in load order, each seeing the previous one's changes. Raising fails the job
        with a message naming the extension.
        """

    @hookspec
    def easel_denoising_step(self, step: Step) -> Any:
        """A denoising step finished; read or replace the latents.

        Runs on the worker after every sampler step of every pass (bridged from diffusers' step-end callback).
        ``step.latents`` is the batch's latent tensor. Return a tensor of the same shape to replace it, or None
        to leave it. Replacing affects this job only. Raising fails the job with a message naming the extension.
        """

    @hookspec
    def easel_postprocess_image(self, image: Any, job: Job) -> Any:
        """An image is finished (decoded, inpaint pasted back) and not saved yet; change it.

        Runs on the worker for each image, extensions in load order, each getting the previous one's result (a
        chain). ``image`` is a PIL image. Return a PIL image to replace it, or None to keep it. Raising fails the
        job with a message naming the extension; images saved before it stay saved.
        """

    @hookspec
    def easel_infotext_fields(self, job: Job) -> dict[str, Any] | None:
        """Fields to add to the images' infotext (the PNG ``parameters``).

        Runs on the worker once per job, before the first image. Return ``{"Key": value}`` (A1111's style:
        capitalised keys, values quoted when they hold commas or colons) or None. Keys Easel writes itself are
        refused. Read them back in ``easel_infotext_read``. Raising fails the job naming the extension.
        """

    @hookspec
    def easel_infotext_read(self, fields: dict[str, Any]) -> dict[str, Any] | None:
        """An infotext was pasted or reused (PNG Info, History, the API's ``infotext``); read your fields back.

        ``fields`` is the parsed infotext (``{"Steps": 20, "My key": "..."}``). Return your per-job arguments
        (``{"key": value}``, as in ``easel_job_arguments``) or None. Raising is logged and ignored.
        """

    # -- observers -----------------------------------------------------------------------------------------------
    @hookspec
    def easel_image_saved(self, path: Path, infotext: str, job: Job) -> None:
        """An image was written to the outputs folder (and indexed in History).

        Runs on the worker right after the save, for each image. The return value is ignored; the file must not
        be changed (use ``easel_postprocess_image``). Raising is logged with the extension's name.
        """

    @hookspec
    def easel_model_loaded(self, model: ModelInfo) -> None:
        """A checkpoint was loaded (from disk or from the RAM cache) and is now the active model.

        Runs on the worker. The return value is ignored. Raising is logged with the extension's name.
        """
