"""The one web server: the A1111 API, Easel's jobs API and the Gradio page on one FastAPI app, behind one auth.

Auth is HTTP Basic on every route (page, API, files, Gradio's own endpoints), checked by one middleware before
anything else runs, so no route can be forgotten; browsers ask for the password once and send it with every
request the page makes. Request bodies are bounded before they are read into memory.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from webui.api import a1111, controlnet, jobs
from webui.errors import EaselError, InvalidRequest
from webui.service.service import GenerationService

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY_MB = 64  # a few 4K PNGs as base64; a client sending more is refused with 413


def parse_credentials(text: str | None) -> dict[str, str]:
    """``user:pass[,user2:pass2]`` (A1111's --api-auth syntax) into a user → password map."""
    if not text:
        return {}
    users: dict[str, str] = {}
    for pair in text.split(","):
        user, sep, password = pair.strip().partition(":")
        if not sep or not user or not password:
            raise ValueError(f"--auth expects user:password[,user2:password2], got an entry {pair.strip()!r}")
        users[user] = password
    return users


class BasicAuth:
    """ASGI middleware: every HTTP and websocket request needs a valid ``Authorization: Basic`` header."""

    def __init__(self, app: ASGIApp, users: Mapping[str, str], realm: str = "Easel") -> None:
        self.app = app
        self.users = dict(users)
        self.realm = realm

    def _user(self, scope: Scope) -> str | None:
        header = dict(scope.get("headers") or []).get(b"authorization", b"")
        scheme, _, token = header.decode("latin-1").partition(" ")
        if scheme.lower() != "basic" or not token:
            return None
        try:
            user, _, password = base64.b64decode(token, validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        expected = self.users.get(user)
        # Compare against something even for an unknown user, so timing does not tell which names exist.
        ok = hmac.compare_digest(password.encode(), (expected or "\0" * len(password)).encode())
        return user if ok and expected is not None else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        user = self._user(scope)
        if user is None:
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            response = JSONResponse(
                {"error": "Unauthorized", "detail": "authentication required (HTTP Basic)"},
                status_code=401,
                headers={"WWW-Authenticate": f'Basic realm="{self.realm}"'},
            )
            await response(scope, receive, send)
            return
        scope.setdefault("state", {})["user"] = user
        await self.app(scope, receive, send)


class BodyLimit:
    """ASGI middleware: refuse bodies over ``max_bytes`` with 413, by Content-Length or while streaming.

    A streamed (chunked) body is counted as it arrives; at the limit the 413 is sent from here and the app is told
    the client went away. Raising into the app instead would not work: FastAPI turns any error while reading a
    body into its own 400, which would reach the client first.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        seen = 0
        started = refused = False

        async def counting_receive() -> Message:
            nonlocal seen, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    refused = True
                    if not started:
                        await self._refuse(scope, receive, send)
                    return {"type": "http.disconnect"}
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if refused:
                return  # the 413 is the answer; whatever the app says about the cut body is dropped
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except Exception:
            if not refused:
                raise

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        mb = self.max_bytes / 1024 / 1024
        body = {"error": "RequestTooLarge", "detail": f"request body is over the {mb:g} MB limit (--max-body-mb)"}
        await JSONResponse(body, status_code=413)(scope, receive, send)


class SameOrigin:
    """ASGI middleware: a state-changing request (anything but GET/HEAD/OPTIONS) whose ``Origin`` is another site,
    or ``null``, is refused with 403, so a page elsewhere cannot make a logged-in browser generate, change settings
    or delete images (CSRF). Requests without ``Origin`` (API clients, curl) are not browsers' cross-site requests
    and pass; auth still applies to them."""

    SAFE = frozenset({"GET", "HEAD", "OPTIONS"})

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("method", "GET") not in self.SAFE:
            headers = dict(scope.get("headers") or [])
            origin = headers.get(b"origin")
            if origin is not None:
                hosts = {headers.get(b"host", b"").decode("latin-1").lower()}
                forwarded = headers.get(b"x-forwarded-host")  # behind a reverse proxy that rewrites Host
                if forwarded:
                    hosts.add(forwarded.decode("latin-1").split(",")[0].strip().lower())
                text = origin.decode("latin-1").lower()
                allowed = text != "null" and text.split("://", 1)[-1].rstrip("/") in hosts
                if not allowed:
                    body = {"error": "Forbidden", "detail": f"cross-site request from {text!r} refused"}
                    await JSONResponse(body, status_code=403)(scope, receive, send)
                    return
        await self.app(scope, receive, send)


def error_body(exc: Exception, status: int) -> dict[str, Any]:
    """A1111's error shape (``error``, ``detail``, ``errors``) plus ``field`` when one field is to blame."""
    body: dict[str, Any] = {"error": type(exc).__name__, "detail": str(exc), "errors": str(exc)}
    field = getattr(exc, "field", None)
    if field:
        body["field"] = field
    return body


def _install_error_handlers(app: FastAPI) -> None:
    async def easel_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, EaselError)
        status = a1111.error_status(exc)
        if status >= 500:
            log.warning("%s %s failed: %s", request.method, request.url.path, exc)
        headers = {"Retry-After": "5"} if status == 429 else None
        return JSONResponse(error_body(exc, status), status_code=status, headers=headers)

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        first = exc.errors()[0] if exc.errors() else {"loc": ("body",), "msg": "invalid request"}
        loc = [str(p) for p in first.get("loc", ()) if p != "body"]
        field = ".".join(loc) or "body"
        message = f"{first.get('msg', 'invalid value')}"
        if "input" in first and not isinstance(first["input"], (dict, list)):
            message += f", got {json.dumps(first['input'], default=str)[:200]}"
        err = InvalidRequest(field, message)
        return JSONResponse(error_body(err, 422), status_code=422)

    async def forbidden(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"error": "Forbidden", "detail": str(exc), "errors": str(exc)}, status_code=403)

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        """A bug must not leak a traceback to the client; it goes to the log with the route that hit it."""
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        body = {"error": "InternalError", "detail": "the server failed on this request; see its log", "errors": ""}
        return JSONResponse(body, status_code=500)

    app.add_exception_handler(EaselError, easel_error)
    app.add_exception_handler(PermissionError, forbidden)
    app.add_exception_handler(Exception, unexpected)
    app.add_exception_handler(RequestValidationError, validation_error)


def build_app(
    service: GenerationService,
    *,
    page: Any | None = None,
    users: Mapping[str, str] | None = None,
    max_body_mb: float = DEFAULT_MAX_BODY_MB,
    flags: dict[str, Any] | None = None,
    gradio_kwargs: dict[str, Any] | None = None,
) -> ASGIApp:
    """The ASGI app to serve: API routes first, then the page mounted at ``/``, wrapped in the limits and auth."""
    app = FastAPI(title="Easel", version=_version(), docs_url="/docs", redoc_url=None)
    _install_error_handlers(app)
    options = a1111.ApiOptions(service)  # one set of options for both APIs
    app.include_router(a1111.build_router(service, flags or {}, options))
    app.include_router(jobs.build_router(service, options))
    app.include_router(controlnet.build_controlnet_router(service))
    if service.plugins is not None:  # before the page's mount at "/", which would catch their paths
        service.plugins.app_started(lambda prefix, router: app.include_router(router, prefix=prefix))
    if page is not None:
        import gradio as gr

        app = gr.mount_gradio_app(app, page, path="/", **(gradio_kwargs or {}))
    wrapped: ASGIApp = SameOrigin(BodyLimit(app, int(max_body_mb * 1024 * 1024)))
    if users:
        wrapped = BasicAuth(wrapped, users)
    return _Named(wrapped, app)


class _Named:
    """The outer ASGI callable, still giving access to the FastAPI app (its routes, for tests and plugins)."""

    def __init__(self, outer: ASGIApp, app: FastAPI) -> None:
        self.outer = outer
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.outer(scope, receive, send)


def _version() -> str:
    from webui import __version__

    return __version__
