"""A1111 sampler and schedule-type names, and how each maps onto a diffusers scheduler.

The table is static (no torch import) so requests can be validated before any weights load, and so the
UI and the API list exactly what the worker can run. The equivalence with k-diffusion is approximate,
as in every diffusers-based UI; the names are A1111's so infotext and API clients keep working.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from webui.errors import UnknownSampler

SIGMA_SCHEDULES = ("Karras", "Exponential", "Beta")


@dataclass(frozen=True)
class Sampler:
    name: str
    scheduler_class: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    # A1111's "Automatic" schedule resolves to this one for the sampler.
    default_schedule: str = "Uniform"
    # Sigma schedules the diffusers class can apply (Karras, Exponential, Beta); timestep samplers have none.
    sigma_schedules: tuple[str, ...] = SIGMA_SCHEDULES
    second_order: bool = False
    stochastic: bool = False


@dataclass(frozen=True)
class ScheduleType:
    name: str
    label: str
    aliases: tuple[str, ...] = ()


SAMPLERS: tuple[Sampler, ...] = (
    Sampler(
        "DPM++ 2M",
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "dpmsolver++", "solver_order": 2},
        ("k_dpmpp_2m",),
        default_schedule="Karras",
    ),
    Sampler(
        "DPM++ SDE",
        "DPMSolverSDEScheduler",
        {},
        ("k_dpmpp_sde",),
        default_schedule="Karras",
        second_order=True,
        stochastic=True,
    ),
    Sampler(
        "DPM++ 2M SDE",
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "sde-dpmsolver++", "solver_order": 2},
        ("k_dpmpp_2m_sde",),
        default_schedule="Exponential",
        stochastic=True,
    ),
    Sampler(
        "DPM++ 2M SDE Heun",
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "sde-dpmsolver++", "solver_order": 2, "solver_type": "heun"},
        ("k_dpmpp_2m_sde_heun",),
        default_schedule="Exponential",
        stochastic=True,
    ),
    Sampler(
        "DPM++ 2S a",
        "DPMSolverSinglestepScheduler",
        {"algorithm_type": "dpmsolver++", "solver_order": 2},
        ("k_dpmpp_2s_a",),
        default_schedule="Karras",
        second_order=True,
    ),
    Sampler(
        "DPM++ 3M SDE",
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "sde-dpmsolver++", "solver_order": 3},
        ("k_dpmpp_3m_sde",),
        default_schedule="Exponential",
        stochastic=True,
    ),
    Sampler(
        "Euler a",
        "EulerAncestralDiscreteScheduler",
        {},
        ("k_euler_a", "k_euler_ancestral"),
        sigma_schedules=(),
        stochastic=True,
    ),
    Sampler("Euler", "EulerDiscreteScheduler", {}, ("k_euler",)),
    Sampler("LMS", "LMSDiscreteScheduler", {}, ("k_lms",)),
    Sampler("Heun", "HeunDiscreteScheduler", {}, ("k_heun",), second_order=True),
    Sampler("DPM2", "KDPM2DiscreteScheduler", {}, ("k_dpm_2",), default_schedule="Karras", second_order=True),
    Sampler(
        "DPM2 a",
        "KDPM2AncestralDiscreteScheduler",
        {},
        ("k_dpm_2_a",),
        default_schedule="Karras",
        second_order=True,
        stochastic=True,
    ),
    Sampler("DDIM", "DDIMScheduler", {"set_alpha_to_one": False}, ("ddim",), sigma_schedules=()),
    Sampler("PLMS", "PNDMScheduler", {"skip_prk_steps": True}, ("plms",), sigma_schedules=()),
    Sampler("UniPC", "UniPCMultistepScheduler", {}, ("unipc",)),
    Sampler("LCM", "LCMScheduler", {}, ("lcm",), sigma_schedules=()),
)

SCHEDULE_TYPES: tuple[ScheduleType, ...] = (
    ScheduleType("automatic", "Automatic"),
    ScheduleType("uniform", "Uniform"),
    ScheduleType("karras", "Karras"),
    ScheduleType("exponential", "Exponential"),
    ScheduleType("beta", "Beta"),
    ScheduleType("sgm_uniform", "SGM Uniform"),
)

DEFAULT_SAMPLER = "DPM++ 2M"

_BY_NAME: dict[str, Sampler] = {}
for _s in SAMPLERS:
    for _key in (_s.name, *_s.aliases):
        _BY_NAME[_key.lower()] = _s
_SCHEDULES_BY_NAME = {key.lower(): s for s in SCHEDULE_TYPES for key in (s.name, s.label, *s.aliases)}


def sampler_names() -> list[str]:
    return [s.name for s in SAMPLERS]


def schedule_labels() -> list[str]:
    return [s.label for s in SCHEDULE_TYPES]


def resolve(sampler_name: str, schedule: str | None = None) -> tuple[Sampler, str]:
    """Return the sampler and the schedule label to use.

    Accepts A1111's legacy combined names (``DPM++ 2M Karras``): the trailing schedule label is split off,
    as A1111 1.9+ does, unless an explicit schedule other than Automatic was given.
    """
    name = (sampler_name or "").strip()
    sampler = _BY_NAME.get(name.lower())
    if sampler is None:
        for label in ("Karras", "Exponential", "Beta", "SGM Uniform", "Uniform"):
            suffix = " " + label.lower()
            if name.lower().endswith(suffix) and name.lower()[: -len(suffix)] in _BY_NAME:
                sampler = _BY_NAME[name.lower()[: -len(suffix)]]
                if not schedule or schedule.lower() == "automatic":
                    schedule = label
                break
    if sampler is None:
        raise UnknownSampler(
            "sampler_name", f"unknown sampler '{sampler_name}' (allowed: {', '.join(sampler_names())})"
        )

    sched = _SCHEDULES_BY_NAME.get((schedule or "automatic").strip().lower())
    if sched is None:
        raise UnknownSampler(
            "scheduler", f"unknown schedule type '{schedule}' (allowed: {', '.join(schedule_labels())})"
        )
    label = sampler.default_schedule if sched.label == "Automatic" else sched.label
    if label in SIGMA_SCHEDULES and label not in sampler.sigma_schedules:
        if sched.label == "Automatic":
            label = "Uniform"
        else:
            allowed = ", ".join(["Automatic", "Uniform", "SGM Uniform", *sampler.sigma_schedules])
            raise UnknownSampler(
                "scheduler", f"'{label}' does not apply to sampler '{sampler.name}' (allowed: {allowed})"
            )
    return sampler, label


def scheduler_kwargs(sampler: Sampler, schedule: str) -> dict[str, Any]:
    """Keyword overrides for ``SchedulerClass.from_config`` that realise the sampler and schedule."""
    kwargs: dict[str, Any] = dict(sampler.kwargs)
    if schedule == "Karras":
        kwargs["use_karras_sigmas"] = True
    elif schedule == "Exponential":
        kwargs["use_exponential_sigmas"] = True
    elif schedule == "Beta":
        kwargs["use_beta_sigmas"] = True
    elif schedule == "SGM Uniform":
        kwargs["timestep_spacing"] = "trailing"
    return kwargs
