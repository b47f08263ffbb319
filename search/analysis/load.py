"""`search.load_sweep(RUN_DIR)`: a sweep's tables, study and Ray results for a notebook.

Reads the run directory only: no Ray runtime is started and nothing is written.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import pandas as pd
import pyarrow.parquet as pq
from ray.tune import ResultGrid

from search.config import RunConfig
from search.results import EPOCH_COLUMNS, TRIAL_COLUMNS, arrow_table


@dataclass
class Sweep:
    """One sweep as read from its run directory.

    `trials`: one row per trial (trials.parquet's columns; warm-start rows first), `epochs`: one
    row per trial and epoch (epochs.parquet's), both as `tickets results` would write them now;
    `study`: the Optuna study (None for a sweep that has none yet); `results`: Ray Tune's
    ResultGrid (`.get_dataframe()`, `[i].checkpoint`, `[i].metrics`)."""

    run_dir: Path
    config: RunConfig
    trials: pd.DataFrame
    epochs: pd.DataFrame
    study: optuna.Study | None
    results: ResultGrid = field(repr=False)

    @property
    def finished(self) -> pd.DataFrame:
        """The trials that ran to their last epoch (what Pareto fronts are made of)."""
        stopped = self.trials["early_stopped"].astype("boolean").fillna(False).astype(bool)
        keep = (self.trials["status"] == "finished").fillna(False).astype(bool) & ~stopped
        return self.trials[keep].reset_index(drop=True)


def _as_read(df: pd.DataFrame, fixed: dict) -> pd.DataFrame:
    """`df` with the schema and pandas types `pandas.read_parquet` gives the written file."""
    buffer = io.BytesIO()
    pq.write_table(arrow_table(df, fixed), buffer)
    buffer.seek(0)
    return pd.read_parquet(buffer)


def load_sweep(run_dir: str | Path) -> Sweep:
    """The sweep in `run_dir` (a run directory, or the URI of one on remote storage, whose run
    files are fetched into ./runs/NAME). Raises `vqa.errors.InputError` if it is not a sweep."""
    from search.remote import local_run_dir
    from search.run_files import experiment_analysis, load_run, sweep_tables
    from search.study import STUDY_FILE

    path = local_run_dir(str(run_dir))
    cfg = load_run(path)
    trials, epochs = sweep_tables(path)
    trials, epochs = _as_read(trials, TRIAL_COLUMNS), _as_read(epochs, EPOCH_COLUMNS)
    study = None
    if (path / STUDY_FILE).is_file():
        study = optuna.load_study(study_name=cfg.search.name,
                                  storage=f"sqlite:///{path / STUDY_FILE}")  # fmt: skip
    # Ray calls ResultGrid's constructor private; Tuner.restore(...).get_results() would give
    # the same grid but needs a trainable and so a Ray runtime.
    results = ResultGrid(experiment_analysis(path, cfg))
    return Sweep(path, cfg, trials, epochs, study, results)
