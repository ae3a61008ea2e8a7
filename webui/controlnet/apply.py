"""Running ControlNets beside the U-Net during one denoising run.

The hook sits on the U-Net's forward call (a pre-hook that adds ``down_block_additional_residuals`` and
``mid_block_additional_residual``), so the txt2img, img2img and inpaint pipelines of SD1, SD2 and SDXL all get
ControlNet without ControlNet pipelines of their own, and several units with their own windows, weights and
control modes add up. It is attached for one run and always removed after it.

Control modes are the extension's:
- *Balanced*: each residual times the unit's weight, on the conditional and unconditional halves alike;
- *My prompt is more important*: deeper residuals weaker (x 0.825 per level from the middle block out),
  so the prompt can win where they disagree;
- *ControlNet is more important*: the same decay, and the control on the conditional half only, so CFG pushes
  the image towards it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from webui.controlnet.units import ControlMode

SOFT_DECAY = 0.825  # the extension's (and the original ControlNet's "guess mode") per-level factor


@dataclass
class ActiveUnit:
    """One enabled unit ready to run: its model, its hint tensor (1xCxHxW, on the device) and its window."""

    model: Any
    hint: torch.Tensor
    weight: float
    start: float
    end: float
    mode: ControlMode
    steps_run: set[int] = field(default_factory=set)

    def active_at(self, fraction: float) -> bool:
        """Whether the unit runs at this point of the run: ``start <= fraction < end`` (an end of 1 includes the
        last step), so with 20 steps a 0.25-0.75 window runs steps 5 to 14."""
        return self.start <= fraction + 1e-9 and (fraction < self.end - 1e-9 or self.end >= 1.0)

    def scales(self, count: int) -> list[float]:
        """Per-residual multipliers, shallowest first, the middle block's last."""
        if self.mode is ControlMode.BALANCED:
            return [self.weight] * count
        return [self.weight * SOFT_DECAY ** float(count - 1 - i) for i in range(count)]


class ControlHook:
    """Adds the units' residuals to every U-Net call while attached; the engine's step callback moves it on."""

    def __init__(self, units: list[ActiveUnit], guided: bool) -> None:
        self.units = units
        self.guided = guided  # CFG on: the batch is [unconditional, conditional]
        self.step = 0
        self.total = 1

    def advance(self, step: int, total: int) -> None:
        """Called after each step with the number of steps done and the run's length."""
        self.step, self.total = step, max(1, total)

    @contextlib.contextmanager
    def attached(self, unet: torch.nn.Module) -> Iterator[ControlHook]:
        handle = unet.register_forward_pre_hook(self._pre_forward, with_kwargs=True)
        try:
            yield self
        finally:
            handle.remove()

    def _pre_forward(
        self, _module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        fraction = self.step / self.total
        running = [u for u in self.units if u.active_at(fraction)]
        if not running:
            return args, kwargs
        sample = args[0] if args else kwargs["sample"]
        timestep = args[1] if len(args) > 1 else kwargs["timestep"]
        context = args[2] if len(args) > 2 else kwargs["encoder_hidden_states"]
        added = kwargs.get("added_cond_kwargs")
        down: list[torch.Tensor] | None = None
        mid: torch.Tensor | None = None
        for unit in running:
            unit.steps_run.add(self.step)
            residuals = self._run(unit, sample, timestep, context, added)
            scales = unit.scales(len(residuals))
            scaled = [r * s for r, s in zip(residuals, scales, strict=True)]
            if down is None:
                down, mid = scaled[:-1], scaled[-1]
            else:
                down = [a + b for a, b in zip(down, scaled[:-1], strict=True)]
                mid = mid + scaled[-1]
        for name, value in (("down_block_additional_residuals", down), ("mid_block_additional_residual", mid)):
            given = kwargs.get(name)
            if given is not None and value is not None:
                value = [a + b for a, b in zip(given, value, strict=True)] if isinstance(value, list) else given + value
            kwargs[name] = tuple(value) if isinstance(value, list) else value
        return args, kwargs

    def _run(
        self,
        unit: ActiveUnit,
        sample: torch.Tensor,
        timestep: Any,
        context: torch.Tensor,
        added: dict[str, torch.Tensor] | None,
    ) -> list[torch.Tensor]:
        """The unit's residuals for the whole batch; with "ControlNet is more important" under CFG the
        unconditional half gets zeros (the ControlNet only runs on the conditional half)."""
        model = unit.model
        x = sample[:, : model.config.in_channels]  # an inpainting U-Net's mask channels are not the ControlNet's
        batch = x.shape[0]
        start = batch // 2 if (self.guided and unit.mode is ControlMode.CONTROL and batch % 2 == 0) else 0

        def part(value: Any) -> Any:
            if isinstance(value, torch.Tensor) and value.ndim > 0 and value.shape[0] == batch:
                return value[start:]
            return value

        hint = unit.hint.to(x.device, x.dtype).expand(batch - start, -1, -1, -1)
        extra = {k: part(v) for k, v in added.items()} if added else None
        down, mid = model(
            part(x),
            part(timestep),
            encoder_hidden_states=part(context),
            controlnet_cond=hint,
            conditioning_scale=1.0,
            added_cond_kwargs=extra,
            return_dict=False,
        )
        residuals = [*down, mid]
        if start:
            residuals = [torch.cat([torch.zeros_like(r), r]) for r in residuals]
        return residuals
