"""User-facing errors: each one says what went wrong in words a user can act on.

The UI, the REST API and the CLI all catch ``EaselError`` at their boundary and show ``str(error)``;
``InvalidRequest`` additionally carries the field name so the API can answer 422 with a ``loc``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import ValidationError


class EaselError(Exception):
    """Base class for errors whose message is meant for the user."""


class InvalidRequest(EaselError, ValueError):
    """A request field is out of range or malformed; ``field`` names it as the user typed it."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


def from_validation_error(exc: ValidationError, prefix: str = "", fallback: str = "request") -> InvalidRequest:
    """Pydantic's first error as one ``InvalidRequest`` naming the field by its path (``controlnet_units[0].weight``)
    after ``prefix`` (``fallback`` when the error has no path), with the message and the value given. A model
    validator's own ``InvalidRequest`` (no path: it names its field itself) is returned as it is."""
    err = exc.errors()[0]
    cause = err.get("ctx", {}).get("error")
    if not err["loc"] and isinstance(cause, InvalidRequest):
        return cause
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"]).lstrip(".") or fallback
    message = str(err["msg"]).removeprefix("Value error, ")
    return InvalidRequest(f"{prefix}.{path}" if prefix else path, f"{message}, got {err.get('input')!r}"[:300])


class UnknownSampler(InvalidRequest):
    """A sampler or schedule type that does not exist (A1111 answers these with 400, other bad values 422)."""


class JobNotFound(InvalidRequest, LookupError):
    """No job with that id (never existed, or finished long enough ago to be forgotten)."""

    def __init__(self, job_id: str) -> None:
        super().__init__("job_id", f"no job '{job_id}' (finished jobs are kept for a while, then forgotten)")


class ModelNotFound(EaselError, LookupError):
    """A name (checkpoint, VAE, sampler...) that matches nothing on disk or in the known lists."""

    def __init__(self, field: str, name: str, known: list[str] | None = None) -> None:
        self.field = field
        self.name = name
        hint = ""
        if known:
            shown = ", ".join(known[:10]) + (", ..." if len(known) > 10 else "")
            hint = f" (known: {shown})"
        super().__init__(f"{field}: '{name}' not found{hint}")


class ModelLoadError(EaselError):
    """A weights file could not be read or understood; names the file and the reason."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"cannot load {self.path.name}: {reason}")


class JobCancelled(EaselError):
    """Raised inside the worker when the job's owner interrupted it; never shown as a failure."""

    def __init__(self) -> None:
        super().__init__("interrupted")


class ImageSkipped(EaselError):
    """Raised inside the worker when the user skipped the image being made: the engine drops it and goes on
    with the next one of the batch count, as A1111's Skip does."""

    def __init__(self) -> None:
        super().__init__("skipped")


class GenerationFailed(EaselError):
    """Generation started but could not finish (out of memory, NaN output, disk full...)."""


class QueueFull(EaselError):
    """The queue is at its bound; the caller should retry later."""
