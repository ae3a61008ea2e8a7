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
    parser.add_argument("--auth", help="user:password required for the UI and the API")
    settings_mod.add_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["generate"]:
        from webui.cli import main as generate_main

        return generate_main(argv[1:])

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    host = "0.0.0.0" if args.listen else args.host
    if host not in ("127.0.0.1", "localhost", "::1") and not args.auth:
        print("error: listening beyond this machine needs --auth user:password", file=sys.stderr)
        return 2
    auth = tuple(args.auth.split(":", 1)) if args.auth else None

    from webui.service.factory import create_service
    from webui.ui.page import PAGE_CSS, PAGE_JS, build_ui

    service = create_service(settings_mod.from_args(args))
    page = build_ui(service)
    try:
        page.queue(default_concurrency_limit=None).launch(
            server_name=host,
            server_port=args.port,
            auth=auth,
            allowed_paths=[str(service.settings.outputs_dir)],
            css=PAGE_CSS,
            js=PAGE_JS,
        )
    finally:
        service.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
