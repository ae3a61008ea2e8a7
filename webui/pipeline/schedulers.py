"""Turn an A1111 sampler + schedule name into a configured diffusers scheduler for one job."""

from __future__ import annotations

import inspect
from typing import Any

import diffusers

from webui import samplers


def build_scheduler(base_config: dict[str, Any], sampler_name: str, schedule: str | None, seed: int) -> Any:
    """A fresh scheduler per job: schedulers keep per-run state, so sharing one across jobs would leak it.

    ``base_config`` is the model's own scheduler config, which carries its noise schedule and prediction type
    (epsilon or v); only the sampling algorithm and sigma spacing change here.
    """
    sampler, label = samplers.resolve(sampler_name, schedule)
    cls = getattr(diffusers, sampler.scheduler_class)
    kwargs = samplers.scheduler_kwargs(sampler, label)
    if sampler.scheduler_class == "DPMSolverSDEScheduler":
        kwargs["noise_sampler_seed"] = seed
    accepted = inspect.signature(cls.__init__).parameters
    # Only keys the chosen class understands: a PNDM config's skip_prk_steps means nothing to LCM, say.
    config = {k: v for k, v in base_config.items() if k in accepted}
    # Settings from the checkpoint's own scheduler that would fight the chosen sampler.
    for key in ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas"):
        config.pop(key, None)
    if "timestep_spacing" not in kwargs:
        # A1111's "Uniform" for k-diffusion samplers spaces timesteps linearly from 999 down to 0; diffusers'
        # SD default "leading" never visits t=999. Timestep samplers (DDIM, PLMS, LCM) keep "leading" as in A1111.
        timestep_samplers = ("DDIMScheduler", "PNDMScheduler", "LCMScheduler")
        kwargs["timestep_spacing"] = "leading" if sampler.scheduler_class in timestep_samplers else "linspace"
    return cls.from_config(config, **kwargs)


def schedule_label(sampler_name: str, schedule: str | None) -> tuple[str, str]:
    """The canonical sampler name and the schedule actually applied, as written into infotext."""
    sampler, label = samplers.resolve(sampler_name, schedule)
    return sampler.name, label
