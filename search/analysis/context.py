"""What a sweep's plots need besides its trials: the group sizes N_L, N_V, N_X of eq. 10, the
sparsity bounds, and the full stage-1 model's metrics.

trials.parquet holds sparsities, not sizes, and tickets.yaml only names the stage-1 checkpoint,
which a sweep copied elsewhere may not have. So the sizes are read, in this order, from the
checkpoint's config.json (`search.dry_run.model_sizes`), from a trial's kept mask
(`<trial>/checkpoint_*/best/sparsity.json`, whose `numel` are the sizes), or from the
`pareto.json` an earlier report wrote in the run directory: every report records them there, and
the sweep's own end-of-sweep report runs where the checkpoint is, so a copied run directory
carries them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vqa.errors import InputError

GROUPS = ("language", "visual", "cross")
MANIFEST = "pareto.json"
"""The report's record in its output directory: who wrote which files, the objectives, the
group sizes and where they came from."""
DEFAULT_BOUNDS = (0.0, 0.99)  # pruning.bounds' default (pruning/config.py)


@dataclass
class SweepContext:
    """A sweep's group sizes (None when nothing recorded them), bounds and stage-1 metrics."""

    sizes: dict[str, int] | None = None
    sizes_source: str = "unknown"
    bounds: tuple[float, float] = DEFAULT_BOUNDS
    stage1: dict[str, Any] | None = None  # the stage-1 metrics.json: selection, test, ...
    stage1_source: str = ""
    notes: list[str] = field(default_factory=list)

    def fractions(self) -> dict[str, float] | None:
        """N_g / (N_L + N_V + N_X) per group, or None without sizes."""
        if self.sizes is None:
            return None
        total = sum(self.sizes[g] for g in GROUPS)
        return {g: self.sizes[g] / total for g in GROUPS}


def read_manifest(directory: Path) -> dict[str, Any] | None:
    """`directory/pareto.json` as a dict, or None if absent or unreadable."""
    path = Path(directory) / MANIFEST
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _valid_sizes(raw: Any) -> dict[str, int] | None:
    if not isinstance(raw, dict):
        return None
    try:
        sizes = {g: int(raw[g]) for g in GROUPS}
    except (KeyError, TypeError, ValueError):
        return None
    return sizes if all(n > 0 for n in sizes.values()) else None


def _sizes_from_trials(run_dir: Path) -> tuple[dict[str, int], Path] | None:
    """The group sizes in the first readable kept-mask report of a trial under `run_dir`."""
    for path in sorted(run_dir.glob("*/checkpoint_*/best/sparsity.json")):
        try:
            report = json.loads(path.read_text())
            sizes = _valid_sizes({g: report[g]["numel"] for g in GROUPS})
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if sizes is not None:
            return sizes, path
    return None


def sweep_context(run_dir: Path) -> SweepContext:
    """The context of the sweep in `run_dir`, from its tickets.yaml, its stage-1 checkpoint, its
    trials' kept masks and an earlier report's pareto.json, whichever exist."""
    run_dir = Path(run_dir)
    ctx = SweepContext()
    checkpoint: Path | None = None
    if (run_dir / "tickets.yaml").is_file():
        from search.config import load_config

        try:
            cfg = load_config(run_dir / "tickets.yaml")
        except InputError as e:
            ctx.notes.append(f"tickets.yaml not read ({e})")
        else:
            if cfg.pruning is not None:
                ctx.bounds = (float(cfg.pruning.bounds[0]), float(cfg.pruning.bounds[1]))
                checkpoint = Path(cfg.pruning.checkpoint)
    if checkpoint is not None:
        from search.dry_run import model_sizes  # torch, no Ray

        try:
            ctx.sizes = {g: int(n) for g, n in model_sizes(checkpoint).items() if g in GROUPS}
            ctx.sizes_source = f"{checkpoint / 'config.json'}"
        except (InputError, OSError, ValueError):
            ctx.sizes = None
        metrics = checkpoint.parent / "metrics.json"
        try:
            ctx.stage1 = json.loads(metrics.read_text())
            ctx.stage1_source = str(metrics)
        except (OSError, ValueError):
            ctx.notes.append(f"no full-model reference line: {metrics} not found or unreadable")
    else:
        ctx.notes.append("no full-model reference line: no stage-1 checkpoint in tickets.yaml")
    if ctx.sizes is None:
        found = _sizes_from_trials(run_dir)
        if found is not None:
            ctx.sizes, path = found
            ctx.sizes_source = str(path)
    if ctx.sizes is None:
        manifest = read_manifest(run_dir) or {}
        sizes = _valid_sizes(manifest.get("sizes"))
        if sizes is not None:
            ctx.sizes = sizes
            ctx.sizes_source = f"{run_dir / MANIFEST} (from {manifest.get('sizes_source', '?')})"
    if ctx.sizes is None:
        ctx.notes.append(
            "group sizes unknown (no stage-1 config.json, trial sparsity.json or earlier "
            f"{MANIFEST}): the allocation map has no implied s_cross nor feasible region"
        )
    return ctx
