"""The generation service: the one object the UI, the API and the CLI talk to.

A FIFO queue feeds a single worker thread, which alone touches the device and the loaded weights. Every
request is validated before it is queued, so a bad request fails at once and never reaches the worker.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import OrderedDict
from functools import cache
from typing import Any

from webui.controlnet import preprocessors
from webui.controlnet.detect import DetectedMap, detect
from webui.controlnet.units import ControlNetUnit
from webui.errors import (
    EaselError,
    GenerationFailed,
    ImageSkipped,
    InvalidRequest,
    JobCancelled,
    JobNotFound,
    ModelNotFound,
    QueueFull,
)
from webui.outputs.history import HistoryIndex
from webui.outputs.saving import save_image
from webui.pipeline.hires import LATENT_UPSCALERS
from webui.plugins import install as installer
from webui.plugins.manager import PluginHost
from webui.preferences import Preferences, PreferencesStore
from webui.service.jobs import Job
from webui.settings import Settings
from webui.types import GenerationRequest, GenerationResult, Mode
from webui.upscalers.library import BUILT_IN as BUILT_IN_UPSCALERS
from webui.weights.model_defaults import generation_defaults
from webui.weights.registry import CheckpointInfo

log = logging.getLogger(__name__)

_KEEP_FINISHED = 256  # finished jobs remembered for status queries; older ones are forgotten


class GenerationService:
    def __init__(self, settings: Settings, engine: Any, plugins: PluginHost | None = None) -> None:
        """``engine`` is a ``webui.pipeline.engine.Engine``; tests may pass any object with ``generate``.
        ``plugins``: the loaded extensions, called around every job (None: no extensions)."""
        self.settings = settings
        self.engine = engine
        self.plugins = plugins
        weights = getattr(engine, "weights", None)
        if plugins is not None and weights is not None and hasattr(weights, "listeners"):
            weights.listeners.append(lambda model: plugins.model_loaded(model.info, model.arch.family))
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()
        self._worker: threading.Thread | None = None
        self._current: Job | None = None
        self.history = HistoryIndex(settings.outputs_dir)
        self.preferences = PreferencesStore(settings.outputs_dir)
        self._apply_preferences()

    # -- lifecycle -----------------------------------------------------------------------------------
    def start(self) -> GenerationService:
        if self._worker is None:
            self._worker = threading.Thread(target=self._work, name="easel-worker", daemon=True)
            self._worker.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        if self._worker is not None:
            for job in self.pending():
                job.cancel()
            if self._current is not None:
                self._current.cancel()
            self._queue.put(None)
            self._worker.join(timeout)
            self._worker = None

    # -- submitting ----------------------------------------------------------------------------------
    def submit(self, request: GenerationRequest, owner: str | None = None) -> Job:
        """Validate against the server's limits and queue; raises ``InvalidRequest`` or ``QueueFull`` at once."""
        request.check_limits(self.settings.limits)
        if request.checkpoint:
            self.engine.weights.checkpoints.get(request.checkpoint)  # unknown name: ModelNotFound now, not later
        self.engine.weights.vaes.check(request.vae)
        self._check_controlnets(request)
        if request.extension_args:
            if self.plugins is None:
                raise InvalidRequest("extension_args", "no extensions are loaded (started with --disable-extensions?)")
            # The checked values: as each argument's kind says (a slider's 6.0 for an int is 6).
            request.extension_args = self.plugins.check_arguments(request.extension_args)
        if request.enable_hr and request.hr_upscaler not in LATENT_UPSCALERS:
            self.engine.weights.upscalers.check(request.hr_upscaler, "hr_upscaler")
        if request.sd_upscale:
            self.engine.weights.upscalers.check(request.sd_upscale_upscaler, "sd_upscale_upscaler")
        self._check_prompts(request)
        job = Job(request=request, run=self._run_generation, owner=owner)
        return self._enqueue(job)

    def _check_controlnets(self, request: GenerationRequest) -> None:
        """An enabled unit naming no listed ControlNet is refused now, naming the unit."""
        for index, unit in enumerate(request.controlnet_units):
            if unit.enabled:
                library = self.engine.weights.controlnets
                try:
                    library.find(unit.model)
                except ModelNotFound as exc:
                    known = [info.name for info in library.registry.list()]
                    raise ModelNotFound(f"controlnet_units[{index}].model", exc.name, known) from None

    def _check_prompts(self, request: GenerationRequest) -> None:
        """Malformed syntax (tags, weights, editing) and unknown LoRA names are refused now, naming the field,
        not after the job waited in the queue."""
        from webui.networks.lora import LORA_KINDS
        from webui.prompts.parser import parse_prompt

        for field in ("prompt", "negative_prompt"):
            parsed = parse_prompt(getattr(request, field), request.steps, field)
            for tag in parsed.networks:
                if tag.kind in LORA_KINDS:
                    self.engine.weights.loras.find(tag.name)

    def rename_loras(self, prompt: str, lora_hashes: str | None) -> str:
        """A pasted prompt's ``<lora:...>`` tags pointed at renamed files by the infotext's ``Lora hashes``."""
        if not lora_hashes:
            return prompt
        return self.engine.weights.loras.rename_by_hash(prompt, str(lora_hashes))

    def load_checkpoint(self, checkpoint: str | None, owner: str | None = None) -> Job:
        """Queue a model switch, as choosing a checkpoint in the UI does; its result is the loaded checkpoint's
        ``CheckpointInfo``. Behind running jobs in the queue, since only the worker may touch the device."""
        if checkpoint:
            self.engine.weights.checkpoints.get(checkpoint)  # unknown name: ModelNotFound now, not later

        def run(job: Job) -> CheckpointInfo:
            return self.engine.load(checkpoint or None).info

        return self._enqueue(Job(request=None, run=run, owner=owner))

    def generate(self, request: GenerationRequest, owner: str | None = None, timeout: float | None = None):
        """Submit and wait: the blocking call that the CLI and the A1111 API use."""
        return self.submit(request, owner).wait(timeout)

    def _enqueue(self, job: Job) -> Job:
        with self._lock:
            waiting = sum(1 for j in self._jobs.values() if j.state == "queued")
            if waiting >= self.settings.max_queue:
                raise QueueFull(f"the queue is full ({waiting} jobs waiting); try again later")
            self._jobs[job.id] = job
            job.publish(queue_position=waiting + 1)
            self._forget_old()
        self._queue.put(job)
        return job

    def _forget_old(self) -> None:
        finished = [jid for jid, j in self._jobs.items() if j.finished is not None]
        for jid in finished[: max(0, len(finished) - _KEEP_FINISHED)]:
            del self._jobs[jid]

    # -- queries and control -------------------------------------------------------------------------
    def job(self, job_id: str) -> Job:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise JobNotFound(job_id)
        return job

    def jobs(self) -> list[Job]:
        """Every job still remembered (queued, running and recently finished), oldest first."""
        with self._lock:
            return list(self._jobs.values())

    def pending(self) -> list[Job]:
        with self._lock:
            return [j for j in self._jobs.values() if j.state == "queued"]

    @property
    def current(self) -> Job | None:
        return self._current

    def cancel(self, job_id: str, owner: str | None = None) -> Job:
        """Cancel one job; with owners in play, only the job's owner may cancel it."""
        job = self._owned(job_id, owner)
        job.cancel()
        return job

    def skip(self, job_id: str, owner: str | None = None) -> Job:
        """Skip the image a job is making now; the same ownership rule as ``cancel``."""
        job = self._owned(job_id, owner)
        job.skip()
        return job

    def _owned(self, job_id: str, owner: str | None) -> Job:
        job = self.job(job_id)
        if job.owner is not None and owner != job.owner:
            raise PermissionError("this job belongs to another user")
        return job

    @property
    def preview_every(self) -> int:
        """Steps between live previews (0: none), from the user's settings."""
        return self.preferences.current.preview_every

    def _apply_preferences(self) -> None:
        """Preferences the engine acts on: how many checkpoints stay in RAM (the flag is the floor)."""
        weights = getattr(self.engine, "weights", None)
        if weights is not None and hasattr(weights, "ram_cache"):
            weights.ram_cache = max(self.settings.ckpt_cache, self.preferences.current.ckpt_cache)

    def update_preferences(self, **changes: Any) -> Preferences:
        """Validate, save and apply Settings-tab changes; ``InvalidRequest`` names a bad value."""
        updated = self.preferences.update(**changes)
        self._apply_preferences()
        return updated

    # -- extensions ------------------------------------------------------------------------------------
    def install_extension(self, source: str) -> str:
        """Install an extension from a local folder path or a git URL into the extensions folder (it loads at the
        next start); the message saying so. Refused (``EaselError``, in words) when extensions are off, or when
        Easel listens beyond this machine without ``--allow-extension-install``: installing runs someone else's
        code here. A bad source is an ``InvalidRequest`` naming ``source``."""
        if self.plugins is None:
            raise EaselError("Extensions are disabled (--disable-extensions): nothing can be installed.")
        refusal = installer.install_refusal(self.settings.host, self.settings.allow_extension_install)
        if refusal is not None:
            raise EaselError(refusal)
        taken = [ext.name for ext in self.plugins.extensions]  # loaded or not, from the folder or a package
        return installer.install(source, self.settings.extensions_dir, taken=taken).message

    # -- ControlNet and upscalers ---------------------------------------------------------------------
    def controlnet_models(self) -> list[str]:
        """The ControlNet models' titles (``name [hash]`` once known), as the units' model menus list them."""
        return self.engine.weights.controlnets.titles()

    def controlnet_model_choices(self, *, refresh: bool = False) -> list[tuple[str, str]]:
        """(label, name) of each ControlNet model, for the UI's menus: the label is the title, which gains the hash
        once known (and says which file came with Easel), while the name stays, so a value chosen before stays
        valid. ``refresh`` rescans ``models/ControlNet`` first (🔄)."""
        registry = self.engine.weights.controlnets.registry
        if refresh:
            registry.refresh()
        return [(f"{i.title} (built-in demo)" if i.builtin else i.title, i.name) for i in registry.list()]

    def controlnet_model_name(self, query: str) -> str:
        """The listed model an infotext's ``Model`` means (title, name, stem or hash); ``ModelNotFound`` if none."""
        return self.engine.weights.controlnets.find(query).name

    def preprocessors(self) -> list[tuple[preprocessors.Preprocessor, list[str]]]:
        """Every preprocessor with the annotator files it still lacks (empty: it can run)."""
        folder = self.settings.annotators_path
        return [(pre, preprocessors.missing_files(pre, folder)) for pre in preprocessors.PREPROCESSORS.values()]

    def detect_map(
        self,
        unit: ControlNetUnit,
        width: int,
        height: int,
        *,
        fallback_image: Any = None,
        fallback_mask: Any = None,
        crop: Any = None,
        where: str = "controlnet_units[0]",
    ) -> DetectedMap:
        """The map a unit's ControlNet would see at ``width`` x ``height`` (the UI's preview, the API's detect):
        the same code the engine runs. OpenCV preprocessors run on the caller's thread; one that runs a network
        (HED, line art...) is queued for the worker, since torch on a second thread slows every later
        generation (see docs/ARCHITECTURE.md)."""
        unit.model_copy(update={"enabled": False}).check(where)  # ranges only: a preview needs no model

        def run(_job: Job | None = None) -> DetectedMap:
            return detect(
                unit,
                width=width,
                height=height,
                where=where,
                fallback_image=fallback_image,
                fallback_mask=fallback_mask,
                crop=crop,
                annotators=self.settings.annotators_path,
            )

        if not unit.preprocessor.needs:
            return run()
        return self._enqueue(Job(request=None, run=run)).wait()

    def upscale(
        self, image: Any, upscaler: str, width: int, height: int, *, crop: bool = False, owner: str | None = None
    ) -> Any:
        """An upscaled PIL image (the API's extras). Built-in resampling runs here; a model upscaler is queued
        for the worker, which alone uses the device. An unknown name is refused now, naming ``upscaler_1``."""
        upscalers = self.engine.weights.upscalers
        upscalers.check(upscaler, "upscaler_1")

        def run(_job: Job | None = None) -> Any:
            device = self.engine.device.device
            return upscalers.upscale(image, upscaler, width, height, crop=crop, device=device, field="upscaler_1")

        if upscaler in BUILT_IN_UPSCALERS:
            return run()
        return self._enqueue(Job(request=None, run=run, owner=owner)).wait()

    def upscaler_names(self, *, latent: bool = False) -> list[str]:
        """Upscaler choices: built-in resampling and ``models/ESRGAN`` files; with ``latent`` (hires fix) the
        latent-space ones first, as A1111 lists them."""
        names = self.engine.weights.upscalers.names()
        return [*LATENT_UPSCALERS, *names] if latent else names

    # -- models --------------------------------------------------------------------------------------
    def default_checkpoint(self) -> CheckpointInfo | None:
        """What a request without a checkpoint would use (None when there is nothing usable)."""
        try:
            return self.engine.weights.default_checkpoint()
        except EaselError:
            return None

    def defaults_for(self, checkpoint: str | None) -> dict[str, Any]:
        """Request fields a checkpoint asks for (native size, steps, CFG, sampler), read from its metadata
        without loading it. The UI applies them when the model is selected; the CLI for options not given."""
        info = self.engine.weights.checkpoints.get(checkpoint) if checkpoint else self.default_checkpoint()
        return generation_defaults(info.path) if info is not None else {}

    def count_tokens(self, text: str) -> tuple[int, int]:
        """(tokens, shown limit) as A1111's counter has it: ``<lora:...>`` tags and emphasis brackets do not count,
        and the limit grows by 75 per chunk as the prompt spills over (or a BREAK starts a new chunk). Every
        supported family tokenises with CLIP's vocabulary. A prompt that does not parse is counted as plain text
        (the message naming its fault comes when it is submitted)."""
        from webui.prompts.parser import chunk_tokens, extract_networks, parse_attention

        tokenizer = _counting_tokenizer()

        def tokenize(piece: str) -> list[int]:
            return tokenizer(piece, add_special_tokens=False).input_ids

        try:
            remaining, _ = extract_networks(text or "")
            pieces = parse_attention(remaining)
        except EaselError:
            count = len(tokenize(text or ""))
            return count, max(1, -(-count // 75)) * 75
        count = sum(len(tokenize(piece)) for piece, weight in pieces if weight != -1.0)
        chunks = chunk_tokens(pieces, tokenize, 75, pad_token=-1)
        return count, max(1, len(chunks)) * 75

    # -- the worker ----------------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            if job.cancel_requested:
                self._finish(job, "cancelled")
                continue
            self._current = job
            job.started = time.time()
            job.publish(state="running", queue_position=0)
            self._update_queue_positions()
            try:
                job.result = job.run(job)
            except JobCancelled:
                self._finish(job, "cancelled", message="interrupted")
            except EaselError as exc:
                job.error = exc
                self._finish(job, "failed", message=str(exc))
            except Exception as exc:  # the worker must survive anything a job throws
                log.exception("job %s failed", job.id)
                job.error = GenerationFailed(_describe_failure(exc))
                self._finish(job, "failed", message=str(job.error))
            else:
                self._finish(job, "done")
            finally:
                self._current = None
            if job.state != "done":
                # Outside the except block, so the traceback's frames (and the tensors they hold) are gone.
                recover = getattr(self.engine, "after_failure", None)
                if recover is not None:
                    recover()

    def _finish(self, job: Job, state: str, message: str = "") -> None:
        job.finished = time.time()
        job.publish(state=state, message=message, preview=None)

    def _update_queue_positions(self) -> None:
        for position, job in enumerate(self.pending(), start=1):
            job.publish(queue_position=position)

    def _run_generation(self, job: Job) -> GenerationResult:
        request = job.request
        assert request is not None
        plugins = self.plugins
        hooks: dict[str, Any] = {}
        if plugins is not None and plugins.active:
            request = plugins.before_generation(job.id, request)  # this job's copy; the queued request is untouched
            extra = plugins.infotext_fields(job.id, request)
            step_hook = plugins.step_hook(job.id, request)
            hooks = {k: v for k, v in (("extra_infotext", extra), ("step_hook", step_hook)) if v}
        started = time.perf_counter()
        result = GenerationResult(job_id=job.id, request=request, images=[])
        # Published at once and filled as images are saved: an interrupted or failed job still hands over the
        # images it finished (they are on disk and in History already).
        job.result = result
        images_total = request.n_iter
        clock: list[float] = []  # (time, steps done) at the first step: the ETA leaves model loading out

        def on_step(info: Any) -> None:
            job.raise_if_cancelled()
            if job.skip_requested(info.iteration):
                raise ImageSkipped()
            done = info.iteration * info.total_steps + info.step
            total = images_total * info.total_steps
            now = time.perf_counter()
            if not clock:
                clock.extend((now, done))
            rate = (now - clock[0]) / (done - clock[1]) if done > clock[1] else None
            eta = rate * (total - done) if rate is not None else None
            preview = None
            if self.preview_every and (info.step % self.preview_every == 0 or info.step == info.total_steps):
                preview = info.preview()
            job.publish(
                step=info.step,
                total_steps=info.total_steps,
                image_index=info.iteration,
                image_count=images_total,
                eta_seconds=eta,
                **({"preview": preview} if preview is not None else {}),
            )

        for generated in self.engine.generate(request, on_step, result.notes, result.control_maps, **hooks):
            job.raise_if_cancelled()
            if plugins is not None and plugins.active:
                generated.image = plugins.postprocess(job.id, request, generated.image)
            if request.save_images:
                prefs = self.preferences.current
                generated.path = save_image(
                    generated.image,
                    self.settings.outputs_dir,
                    request.mode,
                    generated.seed,
                    generated.infotext,
                    folder_name=prefs.txt2img_folder if request.mode is Mode.TXT2IMG else prefs.img2img_folder,
                    fmt=prefs.output_format,
                    quality=prefs.jpeg_quality,
                    embed_infotext=prefs.save_infotext,
                )
                self._index(generated.path, generated.infotext, request.mode.value)
                if plugins is not None:
                    plugins.image_saved(job.id, request, generated.path, generated.infotext)
            result.images.append(generated)
        result.seconds = time.perf_counter() - started
        return result

    def _index(self, path: Any, infotext: str, mode: str) -> None:
        """Add a saved image to History. The file is already safe on disk and is the truth: an index that
        cannot be written costs nothing but a log line, and the next ``sync`` picks the image up."""
        try:
            self.history.add(path, infotext, mode)
        except Exception:
            log.warning("could not add %s to the history index", path, exc_info=True)


@cache
def _counting_tokenizer() -> Any:
    from webui.weights.clip_tokenizer import load_clip_tokenizer

    return load_clip_tokenizer()


def _describe_failure(exc: Exception) -> str:
    """Name the failure in user terms; out-of-memory gets its own advice."""
    text = str(exc) or type(exc).__name__
    if "out of memory" in text.lower() or type(exc).__name__ == "OutOfMemoryError":
        return f"out of memory: {text.splitlines()[0]} (try a smaller size or batch, or --memory-mode model-offload)"
    return f"generation failed: {type(exc).__name__}: {text.splitlines()[0]}"
