"""Assemble the service from settings: the one place that wires device, weights, engine and queue together."""

from __future__ import annotations

import logging
import os
import threading
from typing import TYPE_CHECKING

from webui.outputs.saving import cleanup_temp_files
from webui.service.service import GenerationService
from webui.settings import Settings

if TYPE_CHECKING:
    from webui.plugins.manager import PluginHost

log = logging.getLogger(__name__)


def force_offline() -> None:
    """Easel never downloads: make every Hugging Face library refuse the network before it is imported."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "DIFFUSERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ[var] = "1"
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def create_service(settings: Settings, *, start: bool = True) -> GenerationService:
    force_offline()
    # Heavy imports happen here, at composition time, never at module import.
    from webui.pipeline.device import choose
    from webui.pipeline.engine import Engine
    from webui.pipeline.taesd import TaesdPreviews
    from webui.weights.manager import WeightsManager

    settings.outputs_dir.mkdir(parents=True, exist_ok=True)
    removed = cleanup_temp_files(settings.outputs_dir)
    if removed:
        log.warning("removed %d half-written file(s) left in %s by an earlier crash", removed, settings.outputs_dir)
    device = choose(settings)
    weights = WeightsManager(settings, device)
    weights.refresh()
    previews = TaesdPreviews(settings.vae_approx_path, device.device, device.dtype)
    engine = Engine(device, weights, vae_tiling=settings.vae_tiling, previews=previews)
    service = GenerationService(settings, engine, load_extensions(settings))
    # History catches up with files saved while Easel was not running (or an index that was deleted) in the
    # background: reading 10,000 PNGs' text takes a while, and nothing needs it before the History tab opens.
    threading.Thread(target=_sync_history, args=(service,), name="easel-history-sync", daemon=True).start()
    log.info(
        "device: %s; %d checkpoint(s) in %s", device.label, len(weights.checkpoints.list()), settings.checkpoints_path
    )
    return service.start() if start else service


def load_extensions(settings: Settings) -> PluginHost | None:
    """The extensions folder's and installed packages' extensions, loaded (None when there are none to look for)."""
    if settings.extensions_dir is None and not settings.extension_packages:
        return None
    from webui.plugins.manager import PluginHost

    host = PluginHost(
        settings.extensions_dir or settings.outputs_dir / "no-extensions-folder",
        settings.outputs_dir,
        entry_points=settings.extension_packages,
    )
    host.load()
    if host.extensions:
        log.info(
            "extensions: %s",
            ", ".join(f"{e.name} ({e.status})" for e in host.extensions),
        )
    return host


def _sync_history(service: GenerationService) -> None:
    try:
        service.history.sync()
        service.history.warm_thumbnails()  # the first pages' tiles, so History opens without making them
    except Exception:
        log.warning("could not bring the history index up to date", exc_info=True)
