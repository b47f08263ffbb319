#!/usr/bin/env bash
# The whole test suite: set up (or reuse) .venv, lint, then run every test, slow ones included.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup_env.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
# Two workers, as CI has two cores: two side by side took 1.49x less time than one, each test's
# waits on process, Ray and Tune start-up filled by the other's work (docs/BENCHMARKS.md).
exec .venv/bin/python -m pytest -n 2 --dist loadfile --no-loadscope-reorder "$@"
