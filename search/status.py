"""`tickets status RUN_DIR`: where a sweep stands, read from its files, without joining Ray.

Works on a running sweep (from another shell: Tune's experiment snapshot is rewritten every
`search.snapshot_s`), an interrupted one and a finished one, here or copied elsewhere. Imports
no torch, but for a grid sweep, whose plan needs the model's group sizes.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import pandas as pd

from search.config import RunConfig
from search.driver import driver_record
from search.run_files import load_run, sweep_tables, total_trials


def planned_trials(cfg: RunConfig, run_dir: Path) -> int | None:
    """Trials the sweep plans: `search.num_samples`, or the grid's upper bound (None when the
    stage-1 checkpoint it is computed from cannot be read here), and `search.confirm`'s re-runs."""
    reruns = total_trials(cfg) - cfg.search.num_samples
    if cfg.search.searcher != "grid":
        return total_trials(cfg)
    from search.tuner import build_searcher, model_sizes  # torch: a grid's plan needs the model

    try:
        sizes = model_sizes(cfg.pruning.checkpoint)
    except Exception:  # e.g. a sweep copied without its stage-1 checkpoint
        return None
    return build_searcher(cfg, sizes, run_dir).max_trials() + reruns  # the grid opens no study


def _epochs_per_trial(cfg: RunConfig, trials: pd.DataFrame) -> float:
    stage3 = cfg.stage3.epochs if cfg.stage3 is not None else 0
    if "hp_epochs" in trials and trials["hp_epochs"].notna().any():
        return float(trials["hp_epochs"].dropna().mean()) + stage3
    return float(cfg.pruning.epochs + stage3)


def _minutes(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def status_text(run_dir: Path, top: int = 5) -> str:
    """Counts by status, the best trials so far, trial-epochs spent and an estimate of the time
    left (from the mean epoch time of the trials so far and the sweep's concurrency)."""
    cfg = load_run(run_dir)
    record = driver_record(run_dir)
    trials, epochs = sweep_tables(run_dir)  # as `tickets results` reads them, unwritten
    state = record["state"]
    head = f"sweep {cfg.search.name} ({run_dir}): {state}"
    if state == "running":
        head += (
            f" (driver pid {record.get('pid')} on {record.get('host')}, since "
            f"{record.get('started_at')})"
        )
    elif record.get("ended_at"):
        head += f" at {record['ended_at']}"
    lines = [head]
    planned = planned_trials(cfg, run_dir)
    own = trials[trials["status"] != "warm_start"] if not trials.empty else trials
    counts = trials["status"].value_counts().to_dict() if not trials.empty else {}
    of = f" of {planned}" if planned else ""
    lines.append(
        f"trials: {len(own)}{of} started; "
        + (", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none yet")
    )
    spent = int(own["epochs"].sum()) if not own.empty else 0
    per_trial = _epochs_per_trial(cfg, trials)
    budget = planned * per_trial if planned else math.nan
    asha = " at most" if cfg.search.scheduler == "asha" else ""
    lines.append(
        f"trial-epochs: {spent} spent"
        + (
            f", {budget:.0f}{asha} planned ({planned} trials x {per_trial:g} epochs)"
            if planned
            else ""
        )
    )

    metric, mode = cfg.search.metrics[0], cfg.search.modes[0]
    if not own.empty and metric in own and own[metric].notna().any():
        ranked = own.dropna(subset=[metric]).sort_values(metric, ascending=mode == "min")
        lines.append(f"best so far by {metric} ({mode}):")
        for _, row in ranked.head(top).iterrows():
            test = row.get("test_overall")
            shown = f", test {test:.2f}" if isinstance(test, float) and math.isfinite(test) else ""
            lines.append(
                f"  {row['trial_id']} [{row['status']}] L {row['s_language']:.3f} / "
                f"V {row['s_visual']:.3f} / X {row['s_cross']:.3f} (s "
                f"{row['s_overall']:.2f}): {metric} {row[metric]:.2f}{shown}"
            )

    if state in ("finished",):
        lines.append("time left: none, the sweep is finished")
    elif not epochs.empty and epochs["wall_s"].notna().any() and planned:
        per_epoch = float(epochs["wall_s"].mean())
        left = max(0.0, budget - spent) * per_epoch / cfg.search.max_concurrent_trials
        when = "" if state == "running" else f" once resumed (tickets resume {run_dir})"
        lines.append(
            f"time left:{asha} about {_minutes(left)}{when} ({per_epoch:.1f} s per "
            f"trial-epoch, {cfg.search.max_concurrent_trials} at once)"
        )
    else:
        lines.append("time left: unknown until a trial has reported an epoch")
    lines.append(f"as of {time.strftime('%Y-%m-%d %H:%M:%S')}")
    return "\n".join(lines)
