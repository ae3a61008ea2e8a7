"""Easel's own jobs API (``/easel/v1/jobs``): what A1111 users asked for, a job id at once, per-job progress and
preview, cancel, results, and pushed events (server-sent events).

A job takes A1111's txt2img/img2img body plus ``mode``, so a client moving from ``/sdapi/v1`` changes only the
URL. With auth on, a job belongs to the user who posted it: others get 404 for it (its existence is not theirs to
know) and cannot cancel it. Job ids are random 128-bit hex.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Literal

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from webui.api import a1111_requests as convert
from webui.api.a1111 import ApiOptions, owner_of
from webui.api.schemas import Img2ImgBody
from webui.errors import EaselError, InvalidRequest, JobNotFound
from webui.images import encode_png_base64
from webui.service.jobs import FINAL_STATES, Job
from webui.service.service import GenerationService
from webui.types import Mode, Progress

_MODES = {"txt2img": Mode.TXT2IMG, "img2img": Mode.IMG2IMG, "inpaint": Mode.INPAINT}
_EVENT_WAIT_S = 15.0  # a keep-alive comment at least this often, so proxies keep the stream open


class NoPreview(EaselError):
    """The job has no preview now (not started, previews off, or finished: the final images are the results)."""

    http_status = 404
    field = "preview"

    def __init__(self) -> None:
        super().__init__("preview: this job has no preview now")


class JobBody(Img2ImgBody):
    """A1111's body (``init_images``/``mask`` for img2img and inpaint) with the mode made explicit."""

    mode: Literal["txt2img", "img2img", "inpaint"] = "txt2img"


class JobProgress(BaseModel):
    step: int
    total_steps: int
    image_index: int
    image_count: int
    fraction: float
    eta_seconds: float | None
    queue_position: int
    message: str


class JobStatus(BaseModel):
    id: str
    state: Literal["queued", "running", "done", "failed", "cancelled"]
    mode: str
    created: float
    started: float | None
    finished: float | None
    progress: JobProgress
    images_done: int
    has_preview: bool
    error: str | None


class JobImage(BaseModel):
    seed: int
    infotext: str
    image: str  # base64 PNG with the infotext chunk
    file: str | None  # where it was saved, when it was


class JobResults(BaseModel):
    id: str
    state: str
    images: list[JobImage]
    info: str | None
    notes: list[str]
    seconds: float | None


def _progress(p: Progress) -> JobProgress:
    return JobProgress(
        step=p.step,
        total_steps=p.total_steps,
        image_index=p.image_index,
        image_count=p.image_count,
        fraction=p.fraction,
        eta_seconds=p.eta_seconds,
        queue_position=p.queue_position,
        message=p.message,
    )


def _status(job: Job, progress: Progress | None = None) -> JobStatus:
    p = progress or job.progress
    result = job.result
    return JobStatus(
        id=job.id,
        state=p.state,  # type: ignore[arg-type]
        mode=job.request.mode.value if job.request is not None else "load",
        created=job.created,
        started=job.started,
        finished=job.finished,
        progress=_progress(p),
        images_done=len(result.images) if result is not None else 0,
        has_preview=p.preview is not None,
        error=str(job.error) if job.error is not None else None,
    )


def build_router(service: GenerationService, options: ApiOptions) -> APIRouter:
    router = APIRouter(prefix="/easel/v1", tags=["Easel jobs"])

    def mine(job_id: str, request: Request) -> Job:
        """The caller's job; another user's is reported as not found."""
        job = service.job(job_id)
        user = owner_of(request)
        if job.request is None or (user is not None and job.owner != user):
            raise JobNotFound(job_id)
        return job

    @router.post("/jobs", response_model=JobStatus, status_code=202)
    def create(body: JobBody, request: Request) -> JobStatus:
        """Queue a generation and answer at once with its id; poll it, stream its events or cancel it."""
        mode = _MODES[body.mode]
        if mode is Mode.INPAINT and not body.mask:
            raise InvalidRequest("mask", "inpaint needs a mask (base64; white = repaint)")
        if mode is Mode.IMG2IMG and body.mask:
            mode = Mode.INPAINT
        return _status(options.submit(body, mode, owner_of(request)))

    @router.get("/jobs", response_model=list[JobStatus])
    def listing(request: Request) -> list[JobStatus]:
        """The caller's recent jobs (all jobs when auth is off), oldest first."""
        user = owner_of(request)
        return [_status(j) for j in service.jobs() if j.request is not None and (user is None or j.owner == user)]

    @router.get("/jobs/{job_id}", response_model=JobStatus)
    def status(job_id: str, request: Request) -> JobStatus:
        return _status(mine(job_id, request))

    @router.delete("/jobs/{job_id}", response_model=JobStatus)
    def cancel(job_id: str, request: Request) -> JobStatus:
        """Cancel: a queued job never runs, a running one stops after its current step (finished images stay)."""
        job = mine(job_id, request)
        job.cancel()
        return _status(job)

    @router.get("/jobs/{job_id}/preview", responses={200: {"content": {"image/png": {}}}})
    def preview(job_id: str, request: Request) -> Response:
        """The latest live preview as a PNG; 404 while there is none."""
        preview = mine(job_id, request).progress.preview
        if preview is None:
            raise NoPreview()
        return Response(base64.b64decode(encode_png_base64(preview)), media_type="image/png")

    @router.get("/jobs/{job_id}/results", response_model=JobResults)
    def results(job_id: str, request: Request) -> JobResults:
        """The images finished so far (all of them once done), as base64 PNGs with their infotext."""
        job = mine(job_id, request)
        result = job.result
        images = result.images if result is not None else []
        active = service.engine.weights.active
        info = None
        if result is not None and job.state in FINAL_STATES:
            name = active.info.model_name if active else ""
            info = convert.info_json(result, name, active.info.shorthash if active else None)
        shown = [
            JobImage(
                seed=i.seed,
                infotext=i.infotext,
                image=encode_png_base64(i.image, i.infotext),
                file=str(i.path) if i.path else None,
            )
            for i in images
        ]
        return JobResults(
            id=job.id,
            state=job.state,
            images=shown,
            info=info,
            notes=list(result.notes) if result is not None else [],
            seconds=result.seconds if result is not None and job.state == "done" else None,
        )

    @router.get("/jobs/{job_id}/events")
    async def events(job_id: str, request: Request) -> StreamingResponse:
        """Server-sent events: ``progress`` (a JobStatus) on every change, then ``end`` when the job is over."""
        job = await run_in_threadpool(mine, job_id, request)

        async def stream() -> AsyncIterator[str]:
            version = -1
            while True:
                new_version, progress = await run_in_threadpool(job.wait_update, version, _EVENT_WAIT_S)
                if await request.is_disconnected():
                    return
                if new_version == version:
                    yield ": keep-alive\n\n"
                    continue
                version = new_version
                data = _status(job, progress).model_dump_json()
                yield f"event: progress\ndata: {data}\n\n"
                if progress.state in FINAL_STATES:
                    yield f"event: end\ndata: {json.dumps({'state': progress.state})}\n\n"
                    return

        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)

    return router
