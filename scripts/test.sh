#!/usr/bin/env bash
# The whole test suite: set up (or reuse) .venv, lint, then run every test, slow ones included.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup_env.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
# Two workers, as CI has two cores: most tests wait on process and Ray start-up, so two side by
# side overlap those waits (docs/BENCHMARKS.md, "The test suite").
exec .venv/bin/python -m pytest -n 2 --dist loadfile --no-loadscope-reorder "$@"
