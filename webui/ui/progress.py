"""What the page shows while a job waits and runs: a bar with step count and ETA, or a readable message.

Plain HTML strings from job events, so they are tested without a browser; the page's stylesheet colours them.
"""

from __future__ import annotations

from html import escape
from pathlib import Path
from urllib.parse import quote

from webui.types import Progress


def progress_text(progress: Progress) -> str:
    if progress.state == "queued":
        return f"Waiting in queue (position {progress.queue_position})"
    if progress.state == "running" and progress.total_steps:
        eta = f", ETA {_duration(progress.eta_seconds)}" if progress.eta_seconds is not None else ""
        image = f"image {progress.image_index + 1}/{progress.image_count}, " if progress.image_count > 1 else ""
        return f"{image}step {progress.step}/{progress.total_steps} ({progress.fraction:.0%}{eta})"
    if progress.state == "running":
        return "Loading the model…"
    return progress.message or progress.state


def progress_html(progress: Progress) -> str:
    """A bar and its caption; the bar shows the job's fraction of all its steps."""
    percent = round(progress.fraction * 100, 1) if progress.state == "running" else 0
    return (
        f'<div class="easel-progress" data-state="{escape(progress.state)}">'
        f'<div class="easel-progress-bar" style="width: {percent}%"></div>'
        f'<span class="easel-progress-text">{escape(progress_text(progress))}</span></div>'
    )


def message_html(text: str, kind: str = "info") -> str:
    """A finished job's summary (``info``), or an error (``error``) in words, never a traceback."""
    return f'<div class="easel-message easel-{escape(kind)}">{escape(text)}</div>'


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def file_link(path: str | None) -> str:
    """A link that opens (or downloads) a saved image from the outputs folder, under its own name."""
    if not path:
        return ""
    name = escape(Path(path).name)
    return f'<a href="/gradio_api/file={quote(path)}" target="_blank" download="{name}">📄 {name}</a>'
