"""Run config, the CLI and the Ray Tune sparsity search (DESIGN.md §6).

`search.load_sweep(RUN_DIR)` reads a sweep for a notebook (search/analysis/load.py); it is
imported on first use, so that `import search` (and every `tickets` command) stays light.
"""

from __future__ import annotations

from typing import Any

__all__ = ["load_sweep"]


def __getattr__(name: str) -> Any:
    if name == "load_sweep":
        from search.analysis.load import load_sweep

        return load_sweep
    raise AttributeError(f"module 'search' has no attribute {name!r}")
