"""Extensions through HTTP on a running ``python app.py``: listed, given per-job arguments by name in
``alwayson_scripts``, read back from an ``infotext``, their routes served behind the same auth."""

from __future__ import annotations

import base64
import io
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.test_ui_browser import Server, _serve

EXAMPLES = Path(__file__).resolve().parent.parent / "extensions"
SIZE = 64
FAST = {"prompt": "a red circle", "steps": 2, "width": SIZE, "height": SIZE, "seed": 5, "sampler_name": "Euler"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_sd1_ckpt: Path) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("api-ext")
    (root / "models" / "Stable-diffusion").mkdir(parents=True)
    shutil.copy(tiny_sd1_ckpt, root / "models" / "Stable-diffusion" / "tiny-sd1.safetensors")
    with _serve(root, "--no-demo-model", "--extensions-dir", str(EXAMPLES), "--auth", "ann:secret") as running:
        yield running


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url.rstrip("/"), timeout=120, auth=("ann", "secret")) as http:
        yield http


def _infotext(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    return json.loads(response.json()["info"])["infotexts"][0]


def test_extensions_are_listed_with_their_status(client: httpx.Client) -> None:
    listed = {e["name"]: e for e in client.get("/sdapi/v1/extensions").json()}
    assert set(listed) == {"image-stats", "latent-mirror", "watermark"}
    assert all(e["enabled"] and e["status"] == "enabled" for e in listed.values())
    info = client.get("/sdapi/v1/script-info").json()
    mirror = next(s for s in info if s["name"] == "latent-mirror")
    assert mirror["is_alwayson"] and [a["key"] for a in mirror["args"]] == ["mode", "strength", "until"]


def test_per_job_arguments_by_name_in_alwayson_scripts(client: httpx.Client) -> None:
    body = {**FAST, "alwayson_scripts": {"latent-mirror": {"args": {"mode": "Left-right", "strength": 0.5}}}}
    assert "Latent mirror: Left-right 0.5 until 0.5" in _infotext(client.post("/sdapi/v1/txt2img", json=body))
    plain = _infotext(client.post("/sdapi/v1/txt2img", json=FAST))
    assert "Latent mirror" not in plain and "Watermark" not in plain


@pytest.mark.parametrize(
    ("scripts", "field"),
    [
        ({"latent-mirror": {"args": {"strength": 3}}}, "alwayson_scripts.latent-mirror.args.strength"),
        ({"latent-mirror": {"args": {"wobble": 1}}}, "alwayson_scripts.latent-mirror.args.wobble"),
        ({"latent-mirror": {"args": ["Left-right", 0.5]}}, "alwayson_scripts.latent-mirror.args"),
        ({"not-installed": {"args": {}}}, "alwayson_scripts"),
    ],
)
def test_bad_arguments_name_the_field(client: httpx.Client, scripts: dict, field: str) -> None:
    response = client.post("/sdapi/v1/txt2img", json={**FAST, "alwayson_scripts": scripts})
    assert response.status_code == 422 and response.json()["field"] == field, response.text


def test_an_infotext_gives_extensions_their_arguments_back(client: httpx.Client) -> None:
    infotext = "a red circle\nSteps: 2, Sampler: Euler, Seed: 5, Size: 64x64, Watermark: HELLO"
    text = _infotext(client.post("/sdapi/v1/txt2img", json={**FAST, "infotext": infotext}))
    assert "Watermark: HELLO" in text


def test_extension_routes_are_served_behind_the_same_auth(client: httpx.Client, server: Server) -> None:
    image = Image.new("RGB", (8, 4), (250, 250, 250))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    body = {"image": base64.b64encode(buffer.getvalue()).decode()}
    url = "/easel/v1/ext/image-stats/stats"
    assert client.post(url, json=body).json()["width"] == 8
    with httpx.Client(base_url=server.url.rstrip("/"), timeout=30) as anonymous:
        assert anonymous.post(url, json=body).status_code == 401
