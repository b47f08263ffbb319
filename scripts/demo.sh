#!/usr/bin/env bash
# The main job: set up .venv and run `tickets demo` on the embedded synthetic benchmark (CPU).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup_env.sh
exec .venv/bin/tickets demo "$@"
