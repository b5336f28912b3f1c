#!/usr/bin/env bash
# Idempotent set-up for a fresh machine: system packages, a virtualenv with the project, the default model.
# Used by `make serve`, `make test` and CI. Set DREAMFIX_SKIP_MODEL=1 to skip pulling the default model.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v bwrap >/dev/null 2>&1; then
    if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
        echo "setup: installing bubblewrap (the rustc sandbox's jail)"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null
    else
        echo "setup: bubblewrap is missing; install it (e.g. 'sudo apt-get install bubblewrap')" >&2
        exit 1
    fi
fi
command -v rustc >/dev/null 2>&1 || { echo "setup: rustc is missing; install a Rust toolchain" >&2; exit 1; }

VENV="${VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
stamp="$VENV/.dreamfix-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    "$VENV/bin/pip" install -q --upgrade pip
    # Pin the CPU wheel first: a bare `torch` requirement could pull a multi-GB CUDA build.
    "$VENV/bin/pip" install -q "torch==2.13.0"
    "$VENV/bin/pip" install -q -e ".[test,experiments]"
    touch "$stamp"
fi

if [ "${DREAMFIX_SKIP_MODEL:-0}" != "1" ]; then
    "$VENV/bin/dreamfix" model pull
fi
