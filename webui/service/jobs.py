"""A job: one request's life from queued to done, with progress that any number of watchers can follow.

Progress is kept as "latest event + version number" rather than a list, so a job that runs for an hour
holds one event in memory, and a slow watcher simply skips to the newest state.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from webui.errors import EaselError, JobCancelled
from webui.types import GenerationRequest, GenerationResult, Progress

FINAL_STATES = frozenset({"done", "failed", "cancelled"})


@dataclass
class Job:
    request: GenerationRequest | None
    run: Callable[[Job], Any]
    owner: str | None = None

    def __post_init__(self) -> None:
        self.id = uuid.uuid4().hex
        self.created = time.time()
        self.started: float | None = None
        self.finished: float | None = None
        self.result: Any = None
        self.error: BaseException | None = None
        self._cancel = threading.Event()
        self._skip_index: int | None = None
        self._cond = threading.Condition()
        self._version = 0
        self._progress = Progress(job_id=self.id, state="queued")

    # -- state ---------------------------------------------------------------------------------------
    @property
    def state(self) -> str:
        return self._progress.state

    @property
    def progress(self) -> Progress:
        return self._progress

    @property
    def cancel_requested(self) -> bool:
        return self._cancel.is_set()

    def cancel(self) -> None:
        """Ask the job to stop: a queued job never starts, a running one stops after its current step."""
        self._cancel.set()
        if self.state == "queued":
            self.publish(state="cancelled", message="cancelled before it started")

    def skip(self) -> None:
        """Drop the image being made now (one of the batch count) and go on with the next."""
        if self.state == "running":
            self._skip_index = self._progress.image_index

    def skip_requested(self, image_index: int) -> bool:
        """Whether the user skipped this image; a skip aimed at an image already finished is ignored."""
        return self._skip_index == image_index

    def raise_if_cancelled(self) -> None:
        if self._cancel.is_set():
            raise JobCancelled()

    def publish(self, **changes: Any) -> None:
        with self._cond:
            if self._progress.state in FINAL_STATES:
                return
            fields = {**self._progress.__dict__, **changes, "timestamp": time.time()}
            self._progress = Progress(**fields)
            self._version += 1
            self._cond.notify_all()

    # -- watching ------------------------------------------------------------------------------------
    def wait_update(self, version: int, timeout: float | None = None) -> tuple[int, Progress]:
        """Block until the progress is newer than ``version`` (or the timeout passes); return the newest."""
        with self._cond:
            self._cond.wait_for(lambda: self._version > version, timeout=timeout)
            return self._version, self._progress

    def updates(self, timeout: float | None = None) -> Iterator[Progress]:
        """Yield progress events until the job ends; a watcher that falls behind sees only the latest."""
        version = -1
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            new_version, progress = self.wait_update(version, remaining)
            if new_version != version:
                version = new_version
                yield progress
            if progress.state in FINAL_STATES or (deadline is not None and time.monotonic() >= deadline):
                return

    def wait(self, timeout: float | None = None) -> GenerationResult:
        """Block until the job ends; return its result or raise its error (``JobCancelled`` if interrupted)."""
        for _ in self.updates(timeout):
            pass
        if self.state == "done":
            return self.result
        if self.state == "cancelled":
            raise JobCancelled()
        if self.error is not None:
            raise self.error
        raise EaselError(f"job {self.id} did not finish within {timeout} s")
