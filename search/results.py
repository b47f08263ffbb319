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
import pyarrow.parquet as pq
import ray
from ray import tune

from search.driver import current_run_dir
from vqa.atomic import atomic_path

TRIALS_FILE = "trials.parquet"
EPOCHS_FILE = "epochs.parquet"
GROUPS = ("language", "visual", "cross")
NUMBER_KEY = "optuna_number"
"""The trial config key where the searcher records the number of the trial's Optuna trial."""
CONFIRM_KEY = "confirm_of"
"""The trial config key (and trials.parquet column) of a confirmation run: the id of the search
trial whose allocation it re-runs with a fresh training seed (`search.confirm`)."""

F64, I64, STR, BOOL = pa.float64(), pa.int64(), pa.string(), pa.bool_()
UTC = pa.timestamp("us", tz="UTC")
_METRICS = ("overall", "yes_no", "number", "other")
TRIAL_COLUMNS: dict[str, pa.DataType] = {
    "trial_id": STR, "sweep": STR, "number": I64, "warm_start": STR, "confirm_of": STR,
    "status": STR,
    "early_stopped": BOOL, "error": STR, "retries": I64, "node": STR, "hostname": STR,
    "device": STR,
    "started_at": UTC, "ended_at": UTC, "wall_s": F64,
    "epochs": I64, "kept_epoch": I64, "resumed_from_epoch": I64,
    "s_overall": F64, **{f"s_{g}": F64 for g in GROUPS}, "u_language": F64, "u_visual": F64,
    **{f"realised_{g}": F64 for g in (*GROUPS, "pooler", "overall")}, "remaining_params": I64,
    "seed": I64, "loss_stage1": F64, "loss_stage2": F64, "loss_stage3": F64,
    **{f"sel_{m}": F64 for m in _METRICS}, **{f"test_{m}": F64 for m in _METRICS},
}  # fmt: skip
"""The columns every trials.parquet has, in this order, and their types. Then come `hp_<name>`
(typed as the searched values are) and the dataset's other metrics (float64)."""
EPOCH_COLUMNS: dict[str, pa.DataType] = {
    "trial_id": STR, "sweep": STR, "stage": STR, "epoch": I64, "train_loss": F64, "lr": F64,
    "mask_change": F64, "wall_s": F64, **{f"sel_{m}": F64 for m in _METRICS},
}  # fmt: skip
"""The columns every epochs.parquet has, in this order, and their types; other `sel_*` follow."""
_FLOAT_PREFIXES = ("s_", "u_", "realised_", "sel_", "test_", "stage3_test_", "train_", "loss_")
_PANDAS = {I64: "Int64", F64: "float64", BOOL: "bool", UTC: "datetime64[us, UTC]"}


def trial_status(trial: Any) -> str:
    """The status column of trials.parquet: finished, early_stopped, error, running, pending."""
    result = trial.last_result or {}
    if trial.status == "TERMINATED":
        return "finished" if result.get("trial_complete") else "early_stopped"
    return str(trial.status).lower()


def _error(trial: Any) -> str | None:
    """The last line of a failed trial's error file (at most 500 characters); None otherwise."""
    return last_error_line(trial) if trial.status == "ERROR" else None


def last_error_line(trial: Any, width: int = 500) -> str | None:
    """The last non-empty line of the trial's error file (at most `width` characters), "error"
    for an empty one, None when it has none."""
    text = _error_text(trial)
    if text is None:
        return None
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1][:width] if lines else "error"


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


def _utc(seconds: float | None) -> pd.Timestamp | None:
    ok = isinstance(seconds, int | float) and math.isfinite(seconds)
    return pd.Timestamp(seconds, unit="s", tz="UTC") if ok else None


def _times(trial: Any, status: str) -> dict[str, pd.Timestamp | None]:
    """`started_at`: when Ray first started the trial; `ended_at`: when a trial that has ended
    last reported (for a failed trial, its last report before the failure)."""
    meta = trial.run_metadata
    ended = meta.last_result_time if status in ("finished", "early_stopped", "error") else None
    return {"started_at": _utc(meta.start_time), "ended_at": _utc(ended)}


def trial_tables(
    trials: list[Any],
    hyperparameters: list[str],
    extra: dict[str, Any] | None = None,
    sweep: str | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(trials, epochs) DataFrames, typed as written: one row per trial, one per trial and epoch.
    `extra` holds columns shared by every trial (e.g. `loss_stage1`); `sweep` is the run name."""
    rows, epoch_rows = [], []
    for trial in sorted(trials, key=_order):
        config, result = trial.config or {}, trial.last_result or {}
        status = trial_status(trial)
        history = _history(result, "history_json")
        stage3 = _history(result, "stage3_history_json")
        row: dict[str, Any] = {
            "trial_id": trial.trial_id,
            "sweep": sweep,
            "number": config.get(NUMBER_KEY),
            "status": status,
            "early_stopped": status == "early_stopped",
            "error": _error(trial),
            "retries": int(getattr(trial, "num_failures", 0) or 0),
            "node": result.get("node"),
            "hostname": result.get("hostname"),
            "device": result.get("device"),
            **_times(trial, status),
            "wall_s": float(result.get("time_total_s", math.nan)),
            "epochs": int(result.get("epochs_done", 0)),
            "s_overall": config.get("sparsity"),
            **{f"s_{g}": config.get(g) for g in GROUPS},
            "u_language": config.get("u_language"),
            "u_visual": config.get("u_visual"),
            **{f"hp_{h}": config.get(h) for h in hyperparameters},
            **(extra or {}),
        }
        if CONFIRM_KEY in config:  # a confirmation run: its own training seed
            row.update({CONFIRM_KEY: config[CONFIRM_KEY], "seed": config["seed"]})
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
            epoch_rows.append({"trial_id": trial.trial_id, "sweep": sweep,
                               "stage": record.get("stage", "prune"),
                               "epoch": record["epoch"], **values,
                               **_flat("sel", record["selection"])})  # fmt: skip
    return typed(pd.DataFrame(rows), TRIAL_COLUMNS), typed(pd.DataFrame(epoch_rows), EPOCH_COLUMNS)


def linked(trials: pd.DataFrame, run_dir: Path, name: str) -> pd.DataFrame:
    """`trials` with what the sweep's study (`name`: its search.name) adds: the Optuna `number`
    of trials the config does not number (the grid's), the `warm_start` source of trials a warm
    start enqueued, and first the rows of earlier trials a warm start added to the study
    (status `warm_start`)."""
    from search.study import study_links
    from search.warm_start import WARM_FILE

    links = study_links(run_dir, name)
    if links and not trials.empty:
        trials = trials.copy()
        number = trials["trial_id"].map(lambda t: links.get(t, {}).get("number"))
        trials["number"] = trials["number"].astype("Int64").fillna(number.astype("Int64"))
        source = trials["trial_id"].map(lambda t: links.get(t, {}).get("warm_start"))
        trials["warm_start"] = source.astype(object).where(source.notna(), None)
    warm = Path(run_dir) / WARM_FILE
    if warm.is_file():
        trials = pd.concat([pd.read_parquet(warm), trials], ignore_index=True)
    return typed(trials, TRIAL_COLUMNS)


def column_type(name: str, fixed: dict[str, pa.DataType]) -> pa.DataType | None:
    """The Arrow type of column `name`: from `fixed`, float64 for sparsities, losses and metrics,
    None (as the values are) for anything else, e.g. `hp_<name>`."""
    if name in fixed:
        return fixed[name]
    return F64 if name.startswith(_FLOAT_PREFIXES) else None


def typed(df: pd.DataFrame, fixed: dict[str, pa.DataType]) -> pd.DataFrame:
    """`df` with the `fixed` columns first (empty where it lacks them), then its others, each cast
    to its type: counts nullable Int64, strings with None for missing, times UTC."""
    out: dict[str, pd.Series] = {}
    for name in [*fixed, *(c for c in df.columns if c not in fixed)]:
        column = df[name] if name in df.columns else pd.Series(None, df.index, dtype=object)
        dtype = column_type(name, fixed)
        if dtype == STR:
            column = column.astype(object).where(column.notna(), None)
        elif dtype == UTC:
            column = pd.to_datetime(column, utc=True).astype(_PANDAS[UTC])
        elif dtype is not None:
            column = column.astype(_PANDAS[dtype])
        out[name] = column
    return pd.DataFrame(out, index=df.index)


def arrow_table(df: pd.DataFrame, fixed: dict[str, pa.DataType]) -> pa.Table:
    """`df` (cast by :func:`typed`) as an Arrow table of an explicit schema, so that a column has
    one type in every sweep (an `error` that no trial set is still a string column)."""
    df = typed(df, fixed)
    fields = [
        pa.field(name, column_type(name, fixed) or pa.array(df[name], from_pandas=True).type)
        for name in map(str, df.columns)
    ]
    return pa.Table.from_pandas(df, schema=pa.schema(fields), preserve_index=False)


def write_tables(run_dir: Path, trials_df: pd.DataFrame, epochs_df: pd.DataFrame) -> None:
    """Replace trials.parquet and epochs.parquet in `run_dir`, each atomically."""
    for df, name, fixed in ((trials_df, TRIALS_FILE, TRIAL_COLUMNS),
                            (epochs_df, EPOCHS_FILE, EPOCH_COLUMNS)):  # fmt: skip
        table = arrow_table(df, fixed)
        with atomic_path(Path(run_dir) / name) as tmp:
            pq.write_table(table, tmp)


class ResultsCallback(tune.Callback):
    """Rewrites the Parquet files after every finished or failed trial."""

    def __init__(self, run_dir: Path, hyperparameters: list[str], extra: dict[str, Any]) -> None:
        self.run_dir = Path(run_dir)
        self.hyperparameters = list(hyperparameters)
        self.extra = dict(extra)

    def _write(self, trials: list[Any]) -> None:
        # The sweep's name is the directory's; where it is now may differ (see RUN_DIRS).
        run_dir = current_run_dir(self.run_dir)
        rows, epochs = trial_tables(trials, self.hyperparameters, self.extra, self.run_dir.name)
        write_tables(run_dir, linked(rows, run_dir, self.run_dir.name), epochs)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._write(trials)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._write(trials)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self._write(trials)
