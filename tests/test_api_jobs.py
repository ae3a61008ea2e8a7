"""Easel's jobs API over HTTP on a running ``python app.py --auth`` with two users: an id at once, status,
preview, server-sent events, results, cancel, and that one user's jobs are invisible to the other."""

from __future__ import annotations

import base64
import io
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image, ImageDraw

from tests.test_ui_browser import Server, _serve

SIZE = 64
FAST = {"prompt": "a red circle", "steps": 2, "width": SIZE, "height": SIZE, "seed": 3, "sampler_name": "Euler"}
ALICE = ("alice", "alice-pw")
BOB = ("bob", "bob-pw")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_sd1_ckpt: Path) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("jobs")
    (root / "models" / "Stable-diffusion").mkdir(parents=True)
    shutil.copy(tiny_sd1_ckpt, root / "models" / "Stable-diffusion" / "tiny-sd1.safetensors")
    with _serve(root, "--no-demo-model", "--auth", "alice:alice-pw,bob:bob-pw") as running:
        yield running


def _client(server: Server, auth: tuple[str, str] | None) -> httpx.Client:
    return httpx.Client(base_url=server.url.rstrip("/") + "/easel/v1", auth=auth, timeout=60)


@pytest.fixture(scope="module")
def alice(server: Server) -> Iterator[httpx.Client]:
    with _client(server, ALICE) as client:
        yield client


@pytest.fixture(scope="module")
def bob(server: Server) -> Iterator[httpx.Client]:
    with _client(server, BOB) as client:
        yield client


def _wait(client: httpx.Client, job_id: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.get(f"/jobs/{job_id}").json()
        if status["state"] in ("done", "failed", "cancelled"):
            return status
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} still {status['state']}")


def _wait_running(client: httpx.Client, job_id: str, step: int = 2) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = client.get(f"/jobs/{job_id}").json()
        if status["state"] == "running" and status["progress"]["step"] >= step:
            return status
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not reach step {step}")


def test_a_job_answers_at_once_then_reports_and_hands_over_its_images(alice: httpx.Client) -> None:
    started = time.monotonic()
    created = alice.post("/jobs", json={**FAST, "n_iter": 2})
    assert created.status_code == 202, created.text
    assert time.monotonic() - started < 5
    job = created.json()
    assert len(job["id"]) == 32 and job["state"] in ("queued", "running") and job["mode"] == "txt2img"
    status = _wait(alice, job["id"])
    assert status["state"] == "done" and status["images_done"] == 2 and status["progress"]["fraction"] == 1.0
    results = alice.get(f"/jobs/{job['id']}/results").json()
    assert [i["seed"] for i in results["images"]] == [3, 4] and results["seconds"] > 0
    image = Image.open(io.BytesIO(base64.b64decode(results["images"][0]["image"])))
    assert image.size == (SIZE, SIZE) and image.info["parameters"] == results["images"][0]["infotext"]
    assert json.loads(results["info"])["all_seeds"] == [3, 4]
    assert any(j["id"] == job["id"] for j in alice.get("/jobs").json())


def _b64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _results(client: httpx.Client, job_id: str) -> tuple[dict[str, Any], list[np.ndarray]]:
    """A finished job's results and its images as int16 arrays (for differences)."""
    results = client.get(f"/jobs/{job_id}/results").json()
    images = [Image.open(io.BytesIO(base64.b64decode(i["image"]))).convert("RGB") for i in results["images"]]
    return results, [np.asarray(i, dtype=np.int16) for i in images]


def test_img2img_and_inpaint_jobs_finish_with_their_images(alice: httpx.Client) -> None:
    scene = Image.new("RGB", (SIZE, SIZE), (20, 40, 200))
    ImageDraw.Draw(scene).ellipse((16, 16, 48, 48), fill=(220, 30, 30))
    body = {**FAST, "mode": "img2img", "init_images": [_b64(scene)], "denoising_strength": 0.5}
    job = alice.post("/jobs", json=body)
    assert job.status_code == 202 and job.json()["mode"] == "img2img", job.text
    status = _wait(alice, job.json()["id"])
    assert status["state"] == "done" and status["images_done"] == 1, status
    results, (image,) = _results(alice, job.json()["id"])
    assert image.shape == (SIZE, SIZE, 3) and "Denoising strength: 0.5" in results["images"][0]["infotext"]

    mask = Image.new("L", (SIZE, SIZE), 0)
    ImageDraw.Draw(mask).rectangle((0, 0, 31, 63), fill=255)  # repaint the left half
    body = {**FAST, "mode": "inpaint", "init_images": [_b64(scene)], "mask": _b64(mask), "denoising_strength": 1.0}
    body |= {"mask_blur": 0, "inpainting_fill": 1, "inpaint_full_res": False}
    job = alice.post("/jobs", json=body)
    assert job.status_code == 202 and job.json()["mode"] == "inpaint", job.text
    assert _wait(alice, job.json()["id"])["state"] == "done"
    results, (painted,) = _results(alice, job.json()["id"])
    original = np.asarray(scene, dtype=np.int16)
    assert np.abs(painted[:, 36:] - original[:, 36:]).max() <= 2  # unmasked: pasted back
    assert np.abs(painted[:, :28] - original[:, :28]).mean() > 5  # masked: repainted
    assert "Mask blur: 0" in results["images"][0]["infotext"]


def test_events_stream_progress_then_end(alice: httpx.Client) -> None:
    job = alice.post("/jobs", json={**FAST, "steps": 6}).json()
    events: list[tuple[str, dict[str, Any]]] = []
    with alice.stream("GET", f"/jobs/{job['id']}/events") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        kind = ""
        for line in stream.iter_lines():
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: "):
                events.append((kind, json.loads(line.removeprefix("data: "))))
    kinds = [k for k, _ in events]
    assert kinds[-1] == "end" and events[-1][1] == {"state": "done"}
    steps = [data["progress"]["step"] for k, data in events if k == "progress" and data["state"] == "running"]
    assert steps == sorted(steps) and max(steps) == 6
    assert events[-2][1]["state"] == "done"


def test_cancel_stops_a_running_job_and_preview_is_served_while_it_runs(alice: httpx.Client, server: Server) -> None:
    options = httpx.get(server.url + "sdapi/v1/options", auth=ALICE).json()
    assert options["show_progress_every_n_steps"] == 4
    job = alice.post("/jobs", json={**FAST, "steps": 150, "width": 256, "height": 256, "n_iter": 2}).json()
    _wait_running(alice, job["id"], step=5)
    preview = alice.get(f"/jobs/{job['id']}/preview")
    assert preview.status_code == 200 and preview.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(preview.content)).size == (256, 256)
    cancelled = alice.delete(f"/jobs/{job['id']}")
    assert cancelled.status_code == 200
    status = _wait(alice, job["id"], timeout=15)
    assert status["state"] == "cancelled" and status["progress"]["step"] < 150
    assert alice.get(f"/jobs/{job['id']}/results").json()["images"] == []
    missing = alice.get(f"/jobs/{job['id']}/preview")
    assert missing.status_code == 404 and missing.json()["field"] == "preview"
    assert alice.post("/jobs", json=FAST).status_code == 202  # the queue goes on


def test_another_users_job_is_invisible_and_cannot_be_cancelled(alice: httpx.Client, bob: httpx.Client) -> None:
    job = alice.post("/jobs", json={**FAST, "steps": 150, "width": 256, "height": 256}).json()
    try:
        for response in (
            bob.get(f"/jobs/{job['id']}"),
            bob.delete(f"/jobs/{job['id']}"),
            bob.get(f"/jobs/{job['id']}/results"),
            bob.get(f"/jobs/{job['id']}/events"),
        ):
            assert response.status_code == 404 and response.json()["field"] == "job_id", response.text
        assert all(j["id"] != job["id"] for j in bob.get("/jobs").json())
        assert alice.get(f"/jobs/{job['id']}").json()["state"] in ("queued", "running")
    finally:
        alice.delete(f"/jobs/{job['id']}")
    assert _wait(alice, job["id"])["state"] == "cancelled"


def test_bad_jobs_and_unknown_ids_are_4xx_naming_the_field(alice: httpx.Client, server: Server) -> None:
    for body, status, field in (
        ({**FAST, "mode": "inpaint"}, 422, "mask"),
        ({**FAST, "mode": "img2img"}, 422, "init_images"),
        ({**FAST, "mode": "outpaint"}, 422, "mode"),
        ({**FAST, "steps": 0}, 422, "steps"),
        ({**FAST, "sampler_name": "nope"}, 400, "sampler_name"),
    ):
        response = alice.post("/jobs", json=body)
        assert response.status_code == status and response.json()["field"] == field, response.text
    unknown = alice.get("/jobs/" + "0" * 32)
    assert unknown.status_code == 404 and unknown.json()["field"] == "job_id"
    assert httpx.get(server.url + "easel/v1/jobs").status_code == 401


def test_the_openapi_schema_describes_the_jobs_api(alice: httpx.Client, server: Server) -> None:
    schema = httpx.get(server.url + "openapi.json", auth=ALICE).json()
    for path in ("/easel/v1/jobs", "/easel/v1/jobs/{job_id}", "/easel/v1/jobs/{job_id}/events"):
        assert path in schema["paths"], sorted(schema["paths"])
    assert {"post", "get"} <= set(schema["paths"]["/easel/v1/jobs"])
    assert "delete" in schema["paths"]["/easel/v1/jobs/{job_id}"]


def test_a1111_interrupt_with_auth_stops_only_the_callers_own_job(alice: httpx.Client, server: Server) -> None:
    job = alice.post("/jobs", json={**FAST, "steps": 150, "width": 256, "height": 256}).json()
    _wait_running(alice, job["id"])
    assert httpx.post(server.url + "sdapi/v1/interrupt", auth=BOB).json() == {}
    time.sleep(0.5)
    assert alice.get(f"/jobs/{job['id']}").json()["state"] == "running"  # bob's interrupt was not his to give
    assert httpx.post(server.url + "sdapi/v1/interrupt", auth=ALICE).json() == {}
    assert _wait(alice, job["id"], timeout=15)["state"] == "cancelled"
