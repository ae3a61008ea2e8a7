"""One auth setting covers everything served: every route in the app's table (the API's, the page's, Gradio's own,
file routes) answers 401 without credentials, and works with them. The table is enumerated, so a route added
later is covered by this test without editing it."""

from __future__ import annotations

import base64
import json
import logging
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from webui.api.server import build_app, parse_credentials
from webui.service.factory import create_service
from webui.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
USERS = {"alice": "wonder land", "bob": "b0b:with:colons"}


def _header(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    from webui.ui.page import build_ui

    root = tmp_path_factory.mktemp("auth")
    (root / "models" / "Stable-diffusion").mkdir(parents=True)
    settings = Settings(models_dir=root / "models", outputs_dir=root / "outputs", demo_model=False)
    service = create_service(settings, start=False)  # nothing here generates: no worker, no torch thread
    page = build_ui(service).queue()
    app = build_app(service, page=page, users=USERS, gradio_kwargs={"allowed_paths": [str(settings.outputs_dir)]})
    with TestClient(app) as test_client:
        yield test_client


def _routes(routes: list, prefix: str = "") -> Iterator[tuple[str, str, str]]:
    """(kind, method, concrete path) for every route, descending into mounted apps."""
    for route in routes:
        if hasattr(route, "original_router"):  # FastAPI 0.16x keeps an included router as one entry
            yield from _routes(route.original_router.routes, prefix + route.include_context.prefix)
        elif isinstance(route, Mount):
            yield from _routes(route.routes, prefix + route.path)
        elif isinstance(route, WebSocketRoute):
            yield "ws", "GET", prefix + route.path
        elif isinstance(route, Route):
            path = re.sub(r"\{[^}:]+:path\}", "a/b.png", prefix + route.path)
            path = re.sub(r"\{[^}]+\}", "x", path)
            for method in sorted(route.methods or {"GET"}):
                if method != "HEAD":
                    yield "http", method, path or "/"


def test_every_route_needs_credentials(client: TestClient) -> None:
    table = list(_routes(client.app.app.routes))
    paths = {path for _, _, path in table}
    # The table really holds the API, the page and Gradio's routes (including file routes).
    assert {"/sdapi/v1/txt2img", "/sdapi/v1/options", "/docs", "/openapi.json"} <= paths
    assert any(p.startswith("/gradio_api/file=") or "/file=" in p for p in paths), sorted(paths)
    assert any("upload" in p for p in paths) and "/" in paths
    assert len(table) > 40, len(table)
    for kind, method, path in table:
        if kind == "ws":
            with pytest.raises(WebSocketDisconnect) as closed, client.websocket_connect(path):
                pass
            assert closed.value.code == 1008, path
            continue
        response = client.request(method, path)
        assert response.status_code == 401, (method, path, response.status_code)
        assert response.headers["WWW-Authenticate"].startswith("Basic ")
        wrong = client.request(method, path, headers=_header("alice", "wrong"))
        assert wrong.status_code == 401, (method, path)


def test_credentials_open_the_page_api_and_docs(client: TestClient) -> None:
    for user, password in USERS.items():
        headers = _header(user, password)
        assert client.get("/", headers=headers).status_code == 200
        assert client.get("/sdapi/v1/options", headers=headers).status_code == 200
        assert client.get("/openapi.json", headers=headers).json()["paths"]["/sdapi/v1/txt2img"]
    assert client.get("/", headers=_header("mallory", "wonder land")).status_code == 401  # a known password alone
    assert client.get("/", headers={"Authorization": "Basic !!!"}).status_code == 401
    assert client.get("/", headers={"Authorization": "Bearer abc"}).status_code == 401


def test_credentials_parse_like_a1111s_flag() -> None:
    assert parse_credentials("alice:wonder land,bob:b0b:with:colons") == USERS
    assert parse_credentials(None) == {}
    for bad in ("alice", "alice:", ":pw", "alice:pw,"):
        with pytest.raises(ValueError, match="user:password"):
            parse_credentials(bad)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--listen"], "needs --auth"),
        (["--host", "0.0.0.0"], "needs --auth"),
        (["--auth", "nopassword"], "user:password"),
    ],
)
def test_listening_beyond_loopback_without_auth_refuses_to_start(flags: list[str], message: str) -> None:
    done = subprocess.run(
        [sys.executable, "app.py", *flags], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 2 and message in done.stderr


@pytest.fixture
def launch(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """``app.main(flags)`` up to the point of serving: the service, the app and uvicorn are stand-ins that record
    what main gave them, so the flags' effect is seen without starting a server."""
    import uvicorn

    import app
    import webui.api.server
    import webui.service.factory

    seen: dict[str, object] = {}

    class Service:
        def stop(self) -> None:
            seen["stopped"] = True

    monkeypatch.setattr(webui.service.factory, "create_service", lambda settings: Service())
    monkeypatch.setattr(webui.api.server, "build_app", lambda service, **kwargs: seen.update(app=kwargs) or "app")
    monkeypatch.setattr(uvicorn, "run", lambda app, host, port, **kwargs: seen.update(host=host, port=port))

    def run(*flags: str) -> tuple[int, dict[str, object]]:
        seen.clear()
        paths = ["--models-dir", str(tmp_path / "models"), "--outputs-dir", str(tmp_path / "outputs")]
        return app.main(["--nowebui", *paths, *flags]), dict(seen)

    return run


def test_the_default_bind_address_is_loopback_only(launch) -> None:
    import app

    args = app.build_parser().parse_args([])
    assert (args.host, args.listen, app.bind_host(args)) == ("127.0.0.1", False, "127.0.0.1")
    code, seen = launch()
    assert code == 0 and seen["host"] == "127.0.0.1" and seen["app"]["users"] == {}
    assert app.bind_host(app.build_parser().parse_args(["--listen"])) == "0.0.0.0"


def test_insecure_listen_serves_without_auth_and_warns_loudly(launch, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        code, seen = launch("--listen", "--insecure-listen")
    assert code == 0 and seen["host"] == "0.0.0.0" and seen["app"]["users"] == {}
    (warning,) = [r for r in caplog.records if r.levelno >= logging.WARNING and "WITHOUT authentication" in r.message]
    assert warning.message.startswith("!!!") and "0.0.0.0" in warning.message and "anyone" in warning.message
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert launch("--insecure-listen")[0] == 0  # on loopback there is nothing to warn about
    assert not [r for r in caplog.records if "WITHOUT authentication" in r.message]


def test_api_auth_is_the_same_flag_as_auth(launch, caplog: pytest.LogCaptureFixture) -> None:
    """A1111's spelling gives the auth middleware the same users as ``--auth`` and counts as auth for --listen."""
    with caplog.at_level(logging.WARNING):
        by_auth = launch("--listen", "--auth", "alice:wonder land")
        by_api_auth = launch("--listen", "--api-auth", "alice:wonder land")
    assert by_auth == by_api_auth and by_api_auth[0] == 0 and by_api_auth[1]["host"] == "0.0.0.0"
    assert by_api_auth[1]["app"]["users"] == {"alice": "wonder land"}
    assert "wonder land" not in json.dumps(by_api_auth[1]["app"]["flags"])  # no password in /cmd-flags
    assert not [r for r in caplog.records if "WITHOUT authentication" in r.message]
    assert launch("--listen", "--api-auth", "nopassword")[0] == 2


def test_a_cross_site_browser_post_is_refused_and_same_site_or_no_origin_passes(client: TestClient) -> None:
    headers = _header("alice", "wonder land")
    body = {"CLIP_stop_at_last_layers": 1}
    for origin in ("https://evil.example", "null", "http://testserver.evil.example", "http://localhost:7860"):
        refused = client.post("/sdapi/v1/options", json=body, headers={**headers, "Origin": origin})
        assert refused.status_code == 403 and "cross-site" in refused.json()["detail"], origin
    assert (
        client.post("/sdapi/v1/options", json=body, headers={**headers, "Origin": "http://testserver"}).status_code
        == 200
    )
    assert client.post("/sdapi/v1/options", json=body, headers=headers).status_code == 200  # curl, API clients
    assert client.get("/sdapi/v1/options", headers={**headers, "Origin": "https://evil.example"}).status_code == 200
    assert "access-control-allow-origin" not in client.get("/sdapi/v1/options", headers=headers).headers


def test_a_full_queue_answers_429_with_retry_after(tmp_path: Path) -> None:
    import threading

    from webui.service.service import GenerationService
    from webui.types import GenerationRequest

    gate = threading.Event()

    class Blocked:
        """An engine whose first job waits for the gate, so the queue fills up behind it."""

        weights = type("W", (), {"default_checkpoint": lambda self: None})()

        def generate(self, request: GenerationRequest, on_step=None, notes=None, maps=None):
            gate.wait(10)
            return iter(())

    engine = Blocked()
    engine.weights.checkpoints = engine.weights.vaes = engine.weights.loras = type(
        "R", (), {"get": lambda self, q: q, "check": lambda self, q: None, "find": lambda self, q: q}
    )()
    service = GenerationService(Settings(outputs_dir=tmp_path / "out", max_queue=1), engine).start()
    app = build_app(service)
    try:
        with TestClient(app) as api:
            body = {"prompt": "x", "steps": 1, "width": 64, "height": 64}
            first = api.post("/easel/v1/jobs", json=body)
            assert first.status_code == 202
            deadline = time.monotonic() + 10
            while service.current is None and time.monotonic() < deadline:
                time.sleep(0.01)
            assert api.post("/easel/v1/jobs", json=body).status_code == 202  # waits in the queue
            full = api.post("/easel/v1/jobs", json=body)
            assert full.status_code == 429 and full.headers["Retry-After"] == "5"
            assert "queue is full" in full.json()["detail"]
    finally:
        gate.set()
        service.stop()
