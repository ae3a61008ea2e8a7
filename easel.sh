#!/usr/bin/env bash
# Easel's two commands.
#   ./easel.sh [flags]      set up .venv (first run only) and start the web UI
#   ./easel.sh test [args]  set up .venv with the test tools and run the test suite (what CI runs)
# Environment: EASEL_TORCH picks the torch build (default torch==2.13.0), PYTHON the interpreter, EASEL_VENV the venv.
set -euo pipefail
cd "$(dirname "$0")"

PY=${PYTHON:-python3}
VENV=${EASEL_VENV:-.venv}
TORCH_SPEC=${EASEL_TORCH:-torch==2.13.0}

setup() {
    local extras=$1 stamp
    [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
    stamp="$VENV/.easel-setup-${extras:-base}"
    if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
        echo "easel: installing dependencies into $VENV (torch: $TORCH_SPEC)..." >&2
        "$VENV/bin/python" -m pip install -q --upgrade pip
        # torch first, so the pinned build is the one every later requirement sees as satisfied.
        "$VENV/bin/python" -m pip install -q "$TORCH_SPEC"
        "$VENV/bin/python" -m pip install -q -e ".${extras:+[$extras]}"
        touch "$stamp"
    fi
}

browser() {
    # Browser tests drive Debian's chromium through Playwright (Playwright cannot download its own browser here).
    if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null; then
        echo "easel: installing chromium for the browser tests..." >&2
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
            || echo "easel: could not install chromium; browser tests will fail" >&2
    fi
}

if [ "${1:-}" = "test" ]; then
    shift
    setup test
    browser
    exec "$VENV/bin/python" -m pytest "$@"
fi
setup ""
exec "$VENV/bin/python" app.py "$@"
