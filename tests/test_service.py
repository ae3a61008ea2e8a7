"""The queue and worker, driven by a fake engine so the rules are tested without any model."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image

from webui.errors import InvalidRequest, JobCancelled, QueueFull
from webui.outputs.infotext import parse_infotext
from webui.service.service import GenerationService
from webui.settings import Settings
from webui.types import GeneratedImage, GenerationRequest, Limits


class _Registry:
    def get(self, query: str) -> str:
        return query

    def check(self, choice: str) -> None:
        """The VAE chooser's name check: every name is fine here."""

    def find(self, name: str) -> str:
        """The LoRA library's lookup: every name is found here."""
        return name


@dataclass
class FakeEngine:
    """Yields one solid image per seed after ``steps`` callbacks; can block or fail on demand."""

    step_delay: float = 0.0
    fail_with: Exception | None = None
    gate: threading.Event | None = None
    runs: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.weights = SimpleNamespace(checkpoints=_Registry(), vaes=_Registry(), loras=_Registry())

    def generate(self, request, on_step=None, notes=None, maps=None):
        self.runs.append(request.prompt)
        if self.gate is not None:
            self.gate.wait(10)
        if self.fail_with is not None:
            raise self.fail_with
        seed = max(request.seed, 0)
        for it in range(request.n_iter):
            for step in range(1, request.steps + 1):
                time.sleep(self.step_delay)
                if on_step:
                    on_step(
                        SimpleNamespace(step=step, total_steps=request.steps, iteration=it,
                                        iterations=request.n_iter, preview=lambda it=it, step=step: _preview(it, step))
                    )  # fmt: skip
            for b in range(request.batch_size):
                s = seed + it * request.batch_size + b
                image = Image.new("RGB", (request.width, request.height), (s % 256, 0, 0))
                text = f"{request.prompt}\nSteps: {request.steps}, Sampler: Euler, CFG scale: 7, Seed: {s}, Size: 64x64"
                yield GeneratedImage(image=image, seed=s, infotext=text)


def _preview(image_index: int, step: int) -> Image.Image:
    """A live preview that remembers when it was made, so a test can tell which step's preview an event carries."""
    image = Image.new("RGB", (8, 8))
    image.info["made_at"] = (image_index, step)
    return image


def _service(tmp_path: Path, engine: FakeEngine, **settings) -> GenerationService:
    return GenerationService(Settings(outputs_dir=tmp_path / "out", **settings), engine).start()


def _req(**kw) -> GenerationRequest:
    return GenerationRequest.build(**{"width": 64, "height": 64, "steps": 3, "seed": 5, **kw})


def test_jobs_run_first_in_first_out_and_save_files(tmp_path):
    engine = FakeEngine(gate=threading.Event())
    service = _service(tmp_path, engine)
    jobs = [service.submit(_req(prompt=f"p{i}")) for i in range(4)]
    deadline = time.time() + 5
    positions = lambda: [j.progress.queue_position for j in jobs[1:]]  # noqa: E731
    while (jobs[0].state != "running" or positions() != [1, 2, 3]) and time.time() < deadline:
        time.sleep(0.01)
    assert jobs[0].state == "running"
    assert positions() == [1, 2, 3]
    engine.gate.set()
    results = [j.wait(10) for j in jobs]
    assert engine.runs == ["p0", "p1", "p2", "p3"]
    for result in results:
        (path,) = result.paths
        assert path.exists() and path.suffix == ".png"
        assert parse_infotext(Image.open(path).info["parameters"])["Seed"] == 5
    service.stop()


def test_progress_reports_steps_eta_and_previews(tmp_path):
    service = _service(tmp_path, FakeEngine(step_delay=0.01))
    service.update_preferences(preview_every=2)
    job = service.submit(_req(steps=5, n_iter=2, save_images=False))
    seen = list(job.updates(timeout=10))
    running = [p for p in seen if p.state == "running" and p.total_steps]
    assert running, seen
    assert all(p.total_steps == 5 and p.image_count == 2 for p in running)

    def newest_preview(image_index: int, step: int) -> tuple[int, int] | None:
        """Every 2nd step and the last one (5) make a preview; an event carries the newest made so far."""
        made = [s for s in (2, 4, 5) if s <= step]
        if made:
            return image_index, made[-1]
        return (image_index - 1, 5) if image_index else None

    carried = [(p.image_index, p.step, p.preview.info["made_at"] if p.preview else None) for p in running]
    assert all(made_at == newest_preview(i, step) for i, step, made_at in carried), carried
    assert any(made_at is not None for *_, made_at in carried)
    assert any(p.eta_seconds is not None for p in running)
    assert seen[-1].state == "done" and seen[-1].fraction == 1.0
    assert len(job.result.images) == 2
    service.stop()


def test_cancel_between_steps_stops_the_job_and_the_next_one_runs(tmp_path):
    service = _service(tmp_path, FakeEngine(step_delay=0.05))
    job = service.submit(_req(steps=100, prompt="long"))
    for progress in job.updates(timeout=10):
        if progress.step >= 2:
            service.cancel(job.id)
            break
    with pytest.raises(JobCancelled):
        job.wait(10)
    assert job.state == "cancelled"
    assert job.progress.step < 100
    assert not list((tmp_path / "out").rglob("*.png"))
    assert service.generate(_req(prompt="next"), timeout=10).images
    service.stop()


def test_cancel_of_a_queued_job_never_runs_it(tmp_path):
    engine = FakeEngine(gate=threading.Event())
    service = _service(tmp_path, engine)
    first = service.submit(_req(prompt="first"))
    second = service.submit(_req(prompt="second"))
    service.cancel(second.id)
    engine.gate.set()
    first.wait(10)
    with pytest.raises(JobCancelled):
        second.wait(10)
    assert engine.runs == ["first"]
    service.stop()


def test_only_the_owner_can_cancel(tmp_path):
    engine = FakeEngine(gate=threading.Event())
    service = _service(tmp_path, engine)
    job = service.submit(_req(), owner="alice")
    with pytest.raises(PermissionError):
        service.cancel(job.id, owner="bob")
    assert not job.cancel_requested
    engine.gate.set()
    job.wait(10)
    service.stop()


def test_a_failing_job_reports_and_the_worker_survives(tmp_path):
    engine = FakeEngine(fail_with=RuntimeError("CUDA out of memory. Tried to allocate 2 GiB"))
    service = _service(tmp_path, engine)
    job = service.submit(_req())
    with pytest.raises(Exception, match="out of memory"):
        job.wait(10)
    assert job.state == "failed"
    engine.fail_with = None
    assert service.generate(_req(), timeout=10).images
    service.stop()


@pytest.mark.parametrize(
    ("fields", "field_name"),
    [
        ({"width": 500}, "width"),
        ({"height": 4096}, "height"),
        ({"steps": 0}, "steps"),
        ({"steps": 151}, "steps"),
        ({"batch_size": 9}, "batch_size"),
        ({"n_iter": 101}, "n_iter"),
    ],
)
def test_limits_are_checked_before_queueing(tmp_path, fields, field_name):
    engine = FakeEngine()
    service = _service(tmp_path, engine)
    with pytest.raises(InvalidRequest) as err:
        service.submit(_req(**fields))
    assert err.value.field == field_name
    assert engine.runs == []
    assert service.generate(_req(), timeout=10).images  # the service still works
    service.stop()


def test_queue_bound_refuses_at_once(tmp_path):
    engine = FakeEngine(gate=threading.Event())
    service = _service(tmp_path, engine, max_queue=2)
    jobs = [service.submit(_req())]
    deadline = time.time() + 5
    while jobs[0].state != "running" and time.time() < deadline:
        time.sleep(0.01)
    jobs += [service.submit(_req()) for _ in range(2)]  # one running, two waiting
    with pytest.raises(QueueFull):
        service.submit(_req())
    engine.gate.set()
    for job in jobs:
        job.wait(10)
    service.stop()


def test_limits_follow_the_settings(tmp_path):
    service = _service(tmp_path, FakeEngine(), limits=Limits(max_steps=10))
    with pytest.raises(InvalidRequest, match="between 1 and 10"):
        service.submit(_req(steps=11))
    service.stop()


def test_disk_full_fails_the_job_leaves_no_file_and_the_queue_goes_on(tmp_path, monkeypatch):
    import errno
    import os

    service = _service(tmp_path, FakeEngine())
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left on device")))
    job = service.submit(_req())
    with pytest.raises(Exception, match="could not save image"):
        job.wait(10)
    assert job.state == "failed"
    assert not [p for p in (tmp_path / "out").rglob("*") if p.is_file()]  # no image, no temp file
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert service.generate(_req(), timeout=10).paths[0].exists()
    service.stop()


def test_saved_images_are_indexed_in_history_as_they_are_saved(tmp_path):
    service = _service(tmp_path, FakeEngine())
    result = service.generate(_req(prompt="a lighthouse at dusk", batch_size=2), timeout=10)
    page = service.history.page()
    assert page.total == 2
    assert {e.path for e in page.entries} == set(result.paths)
    assert {(e.prompt, e.mode, e.width) for e in page.entries} == {("a lighthouse at dusk", "txt2img", 64)}
    service.stop()


def test_an_index_that_cannot_be_written_loses_no_image(tmp_path, monkeypatch):
    service = _service(tmp_path, FakeEngine())
    monkeypatch.setattr(service.history, "add", lambda *a, **k: (_ for _ in ()).throw(OSError("read-only")))
    result = service.generate(_req(prompt="kept anyway"), timeout=10)
    assert result.paths[0].is_file()
    monkeypatch.undo()
    assert service.history.sync().added == 1  # the file is the truth: the next sync finds it
    assert service.history.page().entries[0].prompt == "kept anyway"
    service.stop()


def test_skip_is_for_the_image_being_made_and_only_by_its_owner(tmp_path):
    engine = FakeEngine(step_delay=0.05)
    service = _service(tmp_path, engine)
    job = service.submit(_req(steps=50, n_iter=2), owner="alice")
    for progress in job.updates(timeout=10):
        if progress.state == "running" and progress.step >= 1:
            break
    with pytest.raises(PermissionError):
        service.skip(job.id, owner="bob")
    assert not job.skip_requested(0)
    service.skip(job.id, owner="alice")
    assert job.skip_requested(0) and not job.skip_requested(1)
    service.cancel(job.id, owner="alice")
    service.stop()


def test_the_token_counter_counts_like_a1111_in_chunks_of_75(tmp_path):
    service = GenerationService(Settings(outputs_dir=tmp_path / "out"), FakeEngine())
    assert service.count_tokens("") == (0, 75)
    assert service.count_tokens("a red circle") == (3, 75)
    count, limit = service.count_tokens(", ".join(["red circle"] * 30))  # 2 words + comma, 30 times
    assert (count, limit) == (89, 150)
    # Tags and emphasis syntax are not tokens; BREAK starts a new chunk.
    assert service.count_tokens("a (red:1.3) circle <lora:detail:0.8>") == (3, 75)
    assert service.count_tokens("a red circle BREAK on blue") == (5, 150)
    assert service.count_tokens("a <lora::bad> circle")[0] > 2  # unparsable: counted as plain text, no error


def test_an_interrupted_batch_keeps_the_images_it_finished_in_its_result(tmp_path):
    service = _service(tmp_path, FakeEngine(step_delay=0.02))
    job = service.submit(_req(steps=20, n_iter=3, prompt="batch"))
    for progress in job.updates(timeout=10):
        if progress.image_index == 1 and progress.step >= 2:
            service.cancel(job.id)
            break
    with pytest.raises(JobCancelled):
        job.wait(10)
    (kept,) = job.result.images  # the first image of three, finished before the interrupt
    assert kept.seed == 5 and kept.path is not None and kept.path.is_file()
    assert sorted((tmp_path / "out").rglob("*.png")) == [kept.path]
    service.stop()
