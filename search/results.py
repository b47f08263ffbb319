"""`trials.parquet` and `epochs.parquet` of a sweep, from Ray Tune's trials (README: the schema).

Both are rebuilt from the trials' configs and last results — by a callback after every finished
trial while the sweep runs, and by `tickets results` from the experiment state — and written
atomically, so a reader never sees half a file and an interrupted sweep still has them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import ray
from ray import tune

from vqa.atomic import atomic_path

TRIALS_FILE = "trials.parquet"
EPOCHS_FILE = "epochs.parquet"
GROUPS = ("language", "visual", "cross")


def trial_status(trial: Any) -> str:
    """The status column of trials.parquet: finished, early_stopped, error, running, pending."""
    result = trial.last_result or {}
    if trial.status == "TERMINATED":
        return "finished" if result.get("trial_complete") else "early_stopped"
    return str(trial.status).lower()


def _error(trial: Any) -> str | None:
    """The last line of a failed trial's error file (at most 500 characters); None otherwise."""
    if trial.status != "ERROR":
        return None
    text = _error_text(trial)
    if text is None:
        return None
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1][:500] if lines else "error"


def _error_text(trial: Any) -> str | None:
    """The trial's error file: from the driver's staging directory while the sweep runs (Ray
    writes it there and copies it to the trial directory at the next snapshot), else from the
    trial directory on the experiment's storage, which needs no Ray runtime."""
    name = trial.run_metadata.error_filename
    if not name:
        return None
    # `trial.local_path` asserts that Ray is initialised: only the sweep's own process has it.
    if ray.is_initialized():
        staged = Path(trial.local_path, name)
        if staged.is_file():
            return staged.read_text(errors="replace")
    fs, path = trial.storage.storage_filesystem, f"{trial.storage.trial_fs_path}/{name}"
    try:
        with fs.open_input_stream(path) as f:
            return f.readall().decode(errors="replace")
    except (OSError, pa.ArrowException):  # not synced yet, or removed
        return None


def _order(trial: Any) -> tuple[int, str]:
    """Creation order: Ray's experiment tag starts with the trial's running number."""
    head = str(getattr(trial, "experiment_tag", "") or "").split("_", 1)[0]
    return (int(head) if head.isdigit() else 1 << 30, trial.trial_id)


def _flat(prefix: str, metrics: dict[str, Any]) -> dict[str, float]:
    return {f"{prefix}_{k}": float(v) for k, v in metrics.items() if isinstance(v, int | float)}


def _history(result: dict[str, Any], key: str) -> list[dict]:
    text = result.get(key)
    return json.loads(text) if isinstance(text, str) else []


def trial_tables(
    trials: list[Any], hyperparameters: list[str], extra: dict[str, Any] | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(trials, epochs) DataFrames: one row per trial, one per trial and epoch. `extra` holds
    columns shared by every trial (e.g. `loss_stage1`)."""
    rows, epoch_rows = [], []
    for trial in sorted(trials, key=_order):
        config, result = trial.config or {}, trial.last_result or {}
        status = trial_status(trial)
        history = _history(result, "history_json")
        stage3 = _history(result, "stage3_history_json")
        row: dict[str, Any] = {
            "trial_id": trial.trial_id,
            "status": status,
            "early_stopped": status == "early_stopped",
            "error": _error(trial),
            "retries": int(getattr(trial, "num_failures", 0) or 0),
            "node": result.get("node"),
            "hostname": result.get("hostname"),
            "device": result.get("device"),
            "wall_s": float(result.get("time_total_s", math.nan)),
            "epochs": int(result.get("epochs_done", 0)),
            "s_overall": config.get("sparsity"),
            **{f"s_{g}": config.get(g) for g in GROUPS},
            "u_language": config.get("u_language"),
            "u_visual": config.get("u_visual"),
            **{f"hp_{h}": config.get(h) for h in hyperparameters},
            **(extra or {}),
        }
        for key, value in result.items():
            if key.startswith(("realised_", "test_", "train_", "stage3_test")) or key in (
                "remaining_params", "kept_epoch", "loss_stage2", "loss_stage3", "seed",
                "resumed_from_epoch",
            ):  # fmt: skip
                row[key] = value
        row.pop("train_loss", None)  # a per-epoch value, in epochs.parquet
        if result.get("trial_complete"):
            row.update({k: v for k, v in result.items() if k.startswith("sel_")})
        elif history:
            best = max(history, key=lambda h: h["selection"]["overall"])
            row.update(_flat("sel", best["selection"]))
            row["kept_epoch"] = best["epoch"]
            row["loss_stage2"] = best.get("train_loss", math.nan)
        rows.append(row)
        for record in history + stage3:
            values = {k: record.get(k, math.nan) for k in ("train_loss", "lr", "mask_change",
                                                           "wall_s")}  # fmt: skip
            epoch_rows.append({"trial_id": trial.trial_id, "stage": record.get("stage", "prune"),
                               "epoch": record["epoch"], **values,
                               **_flat("sel", record["selection"])})  # fmt: skip
    epoch_columns = ["trial_id", "stage", "epoch", "train_loss", "lr", "mask_change", "wall_s"]
    epochs_df = pd.DataFrame(epoch_rows) if epoch_rows else pd.DataFrame(columns=epoch_columns)
    return pd.DataFrame(rows), epochs_df


def write_tables(run_dir: Path, trials_df: pd.DataFrame, epochs_df: pd.DataFrame) -> None:
    """Replace trials.parquet and epochs.parquet in `run_dir`, each atomically."""
    for df, name in ((trials_df, TRIALS_FILE), (epochs_df, EPOCHS_FILE)):
        with atomic_path(Path(run_dir) / name) as tmp:
            df.to_parquet(tmp, index=False)


class ResultsCallback(tune.Callback):
    """Rewrites the Parquet files after every finished or failed trial."""

    def __init__(self, run_dir: Path, hyperparameters: list[str], extra: dict[str, Any]) -> None:
        self.run_dir = Path(run_dir)
        self.hyperparameters = list(hyperparameters)
        self.extra = dict(extra)

    def _write(self, trials: list[Any]) -> None:
        write_tables(self.run_dir, *trial_tables(trials, self.hyperparameters, self.extra))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._write(trials)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._write(trials)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self._write(trials)
