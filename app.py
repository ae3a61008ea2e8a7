"""Easel's entry point: read flags, build the service, mount the page, launch.

``python app.py`` starts the web UI; ``python app.py generate ...`` runs the headless command on the same service.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from webui import settings as settings_mod


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python app.py", description="Easel: a self-hosted Stable Diffusion web UI.")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--listen", action="store_true", help="bind 0.0.0.0 (requires --auth)")
    parser.add_argument(
        "--auth",
        "--api-auth",
        dest="auth",
        help="user:password[,user2:password2]: HTTP Basic auth on everything served (page, API, files)",
    )
    parser.add_argument(
        "--insecure-listen",
        action="store_true",
        help="allow binding beyond this machine without --auth (warns loudly; anyone who can reach it can use it)",
    )
    parser.add_argument("--max-body-mb", type=float, default=64, help="largest request body accepted (MB)")
    parser.add_argument("--api", action="store_true", help="accepted for A1111 compatibility; the API is always on")
    parser.add_argument("--nowebui", action="store_true", help="serve the API only, without the page")
    settings_mod.add_arguments(parser)
    return parser


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def bind_host(args: argparse.Namespace) -> str:
    """The address to serve on: loopback unless ``--listen`` or ``--host`` says otherwise."""
    return "0.0.0.0" if args.listen else args.host


def exposure_error(host: str, users: dict[str, str], insecure_listen: bool) -> str | None:
    """Why serving beyond this machine without a password must not start (None when it may). With
    ``--insecure-listen`` it starts, and says loudly in the log that anyone who can reach it can use it."""
    if host in LOOPBACK or users:
        return None
    if not insecure_listen:
        return "listening beyond this machine needs --auth user:password (or --insecure-listen to serve without a password)"
    logging.getLogger("easel").warning(
        "!!! serving on %s WITHOUT authentication: anyone who can reach this port can generate, read your "
        "outputs and change settings !!!",
        host,
    )
    return None


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["generate"]:
        from webui.cli import main as generate_main

        return generate_main(argv[1:])

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    host = bind_host(args)
    from webui.api.server import parse_credentials

    try:
        users = parse_credentials(args.auth)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    refused = exposure_error(host, users, args.insecure_listen)
    if refused is not None:
        print(f"error: {refused}", file=sys.stderr)
        return 2

    import uvicorn

    from webui.api.server import build_app
    from webui.service.factory import create_service

    service = create_service(settings_mod.from_args(args))
    page = None
    gradio_kwargs: dict[str, object] = {}
    if not args.nowebui:
        from webui.ui.page import PAGE_CSS, PAGE_JS, build_ui

        page = build_ui(service).queue(default_concurrency_limit=None)
        gradio_kwargs = {"allowed_paths": [str(service.settings.outputs_dir)], "css": PAGE_CSS, "js": PAGE_JS}
    flags = {k: v for k, v in vars(args).items() if k != "auth"}  # no secrets in /sdapi/v1/cmd-flags
    app = build_app(
        service,
        page=page,
        users=users,
        max_body_mb=args.max_body_mb,
        flags={k: str(v) if not isinstance(v, (bool, int, float, type(None))) else v for k, v in flags.items()},
        gradio_kwargs=gradio_kwargs,
    )
    print(f"Easel on http://{host}:{args.port}/ (API: /sdapi/v1, docs: /docs)", flush=True)
    try:
        uvicorn.run(app, host=host, port=args.port, log_level="warning")
    finally:
        service.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
