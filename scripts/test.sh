#!/usr/bin/env bash
# The whole test suite: set up (or reuse) .venv, lint, then run every test, slow ones included.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup_env.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
exec .venv/bin/python -m pytest "$@"
