"""Easel's plugin API: the one module an extension imports.

Everything an extension may use is here, and nothing here exposes Easel's internals: hooks receive small, typed
views (``Job``, ``Step``, ``ModelInfo``) and return plain values; arguments travel by name, never by position.
The API is versioned (``API_VERSION``, major.minor). An extension's manifest says which version it needs; Easel
loads it when the major numbers match and its own minor is at least the one asked for, so a minor release only
ever adds. Hook specifications, with when each runs and what it may change, are in ``webui/plugins/hookspecs.py``
and in docs/plugins.md (generated from them).

    from webui import plugin_api as easel

    @easel.hookimpl
    def easel_postprocess_image(image, job):
        return image.rotate(180) if job.args.get("upside_down") else None
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pluggy

API_VERSION = "1.0"
PROJECT = "easel"

hookimpl = pluggy.HookimplMarker(PROJECT)
"""Mark an extension's function as the implementation of the hook of the same name."""


class PluginError(Exception):
    """Raise it from a hook that shapes a job to fail the job with your message (Easel adds your extension's name);
    any other exception does the same, with its type named."""


SettingKind = Literal["bool", "int", "float", "str", "choice"]


@dataclass(frozen=True)
class Setting:
    """One typed value Easel asks for, checks and stores on the extension's behalf: a saved setting
    (``easel_settings``) or a per-job argument (``easel_job_arguments``). Easel renders it (checkbox, number,
    slider with ``minimum``/``maximum``, text, dropdown of ``choices``) and hands it over by ``key``."""

    key: str
    label: str
    kind: SettingKind
    default: Any
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    help: str = ""


@dataclass(frozen=True)
class Tab:
    """A tab of the page: ``build`` runs inside the tab's Gradio context while the page is built."""

    label: str
    build: Callable[[], None]


@dataclass(frozen=True)
class ModelInfo:
    """The checkpoint that was loaded: its file name, A1111 title, family ("sd1", "sd2", "sdxl") and short hash."""

    name: str
    title: str
    family: str
    short_hash: str | None


@dataclass(frozen=True)
class Job:
    """One generation job as an extension sees it: the request's values (read-only; ``easel_before_generation``
    returns changes instead), this extension's per-job ``args`` and its saved ``settings``."""

    id: str
    mode: str  # "txt2img", "img2img" or "inpaint"
    values: Mapping[str, Any]  # the request's fields by name (prompt, steps, cfg_scale, seed, width...)
    args: Mapping[str, Any]  # this extension's per-job arguments (its ``easel_job_arguments``), defaults filled in
    settings: Mapping[str, Any]  # this extension's saved settings (its ``easel_settings``), defaults filled in

    def __getattr__(self, name: str) -> Any:  # job.prompt, job.steps... as shorthands for job.values[...]
        try:
            return self.values[name]
        except KeyError:
            raise AttributeError(name) from None


@dataclass
class Step:
    """One denoising step, after the sampler moved: ``latents`` is the batch's latent tensor (torch), ``index``
    counts from 1 to ``total`` within the pass, ``image_index`` says which image of the batch count."""

    job: Job
    index: int
    total: int
    image_index: int
    timestep: float
    latents: Any


@dataclass(frozen=True)
class Slider:
    """A preprocessor threshold: its label, default and range (the ControlNet extension's sliders)."""

    label: str
    default: float
    minimum: float
    maximum: float


@dataclass(frozen=True)
class Preprocessor:
    """An extra ControlNet preprocessor. ``run(image, threshold_a, threshold_b)`` gets an RGB uint8 NumPy array
    (already at the unit's preprocessor resolution) and returns the map as an RGB or grey uint8 array."""

    name: str
    run: Callable[..., Any]
    threshold_a: Slider | None = None
    threshold_b: Slider | None = None


@dataclass
class App:
    """What ``easel_app_started`` gets: ``router`` is a FastAPI ``APIRouter`` served under
    ``/easel/v1/ext/<extension name>`` (behind the same auth as everything else); ``data_dir`` is a folder of the
    extension's own inside Easel's data folder; ``settings`` its saved settings."""

    name: str
    router: Any
    data_dir: Path
    settings: Mapping[str, Any] = field(default_factory=dict)


def decode_image(data: str, field: str = "image") -> Any:
    """A base64 image from a client as an RGB PIL image, with Easel's checks (size bomb, not an image, a file path
    or URL given instead); a fault raises ``InvalidRequest`` naming ``field``, which routes answer with a 422."""
    from webui.images import decode_image as decode

    return decode(data, field)


def encode_png(image: Any) -> str:
    """A PIL image as base64 PNG text, as Easel's API returns images."""
    from webui.images import encode_png_base64

    return encode_png_base64(image)
