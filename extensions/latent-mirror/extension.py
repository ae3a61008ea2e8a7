"""Latent mirror: an example extension that works on every denoising step, with its own settings.

While the run is before ``until`` (a fraction of the steps), each step's latents are blended with their mirror
image: at strength 1 they are made exactly symmetric, so the composition is; after ``until`` the model is free
again and adds asymmetric detail. Per job: ``mode`` ("Off", "Left-right", "Top-bottom", or "Default" for the
saved setting), ``strength`` and ``until``. The infotext records it as ``Latent mirror`` and reads it back.
"""

from __future__ import annotations

from typing import Any

from webui import plugin_api as easel

MODES = ("Off", "Left-right", "Top-bottom")


@easel.hookimpl
def easel_settings() -> list[easel.Setting]:
    return [
        easel.Setting("default_mode", "Mirror jobs that do not say", "choice", "Off", choices=MODES),
    ]


@easel.hookimpl
def easel_job_arguments() -> list[easel.Setting]:
    return [
        easel.Setting("mode", "Mirror", "choice", "Default", choices=("Default", *MODES)),
        easel.Setting("strength", "Strength", "float", 1.0, minimum=0.0, maximum=1.0),
        easel.Setting("until", "Until (fraction of the steps)", "float", 0.5, minimum=0.0, maximum=1.0),
    ]


def _mode(job: easel.Job) -> str:
    mode = job.args["mode"]
    return job.settings["default_mode"] if mode == "Default" else mode


@easel.hookimpl
def easel_denoising_step(step: easel.Step) -> Any:
    mode = _mode(step.job)
    if mode == "Off" or step.index > step.job.args["until"] * step.total:
        return None
    flipped = step.latents.flip(-1 if mode == "Left-right" else -2)
    blend = step.job.args["strength"] / 2
    return step.latents * (1 - blend) + flipped * blend


@easel.hookimpl
def easel_infotext_fields(job: easel.Job) -> dict[str, Any] | None:
    mode = _mode(job)
    if mode == "Off":
        return None
    return {"Latent mirror": f"{mode} {job.args['strength']:g} until {job.args['until']:g}"}


@easel.hookimpl
def easel_infotext_read(fields: dict[str, Any]) -> dict[str, Any] | None:
    text = str(fields.get("Latent mirror", ""))
    parts = text.split()
    if len(parts) != 4 or parts[0] not in MODES or parts[2] != "until":
        return None
    return {"mode": parts[0], "strength": float(parts[1]), "until": float(parts[3])}
