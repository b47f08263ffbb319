"""A sweep's run directory, read without starting Ray or building a model: its saved config,
Ray's experiment state, the trials and epochs tables, how it ended (DESIGN.md §6).

`tickets status`, `tickets results` and `search.load_sweep` use only this, so that they import
no torch or transformers (`search.tuner`, which runs sweeps, does).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
from ray import tune

from search.config import RunConfig, load_config
from search.confirm import confirmed_text
from search.driver import ENDED, Outcome, driver_record, mark_interrupted_trials, outcome
from search.remote import is_uri
from search.results import CONFIRM_KEY, linked, trial_tables, write_tables
from vqa.errors import InputError

CONFIG_FILE = "tickets.yaml"


def trial_dirname(trial: Any) -> str:
    """A trial's directory under RUN_DIR: `trial_<id>` (Ray's default repeats the config).

    It lives here, not in `search.tuner`, because Tune pickles it into every trial's saved state
    by reference: reading that state imports this module, and this one needs no torch.
    """
    return f"trial_{trial.trial_id}"


def stage1_loss(checkpoint: Path) -> float:
    """The training loss of the stage-1 epoch that was kept, from its metrics.json (nan if
    none)."""
    metrics = checkpoint.parent / "metrics.json"
    if not metrics.is_file():
        return float("nan")
    data = json.loads(metrics.read_text())
    kept = [h for h in data.get("history", []) if h.get("epoch") == data.get("kept_epoch")]
    return float(kept[0]["train_loss"]) if kept else float("nan")


def shared_columns(cfg: RunConfig) -> dict[str, Any]:
    """The columns of trials.parquet that every trial of the sweep shares."""
    return {"loss_stage1": stage1_loss(cfg.pruning.checkpoint), "seed": cfg.pruning.seed}


def storage_paths(cfg: RunConfig) -> tuple[str, Path]:
    """(Ray's storage path, the local directory where this project's run files live)."""
    storage = cfg.search.resolved().storage_path
    local = Path("runs").resolve() if is_uri(storage) else Path(storage)
    return storage, local


def sweep_outcome(run_dir: Path) -> Outcome:
    """How the last `tickets search` / `resume` of `run_dir` ended (from its files)."""
    trials = pd.read_parquet(run_dir / "trials.parquet") if (
        run_dir / "trials.parquet").is_file() else pd.DataFrame()  # fmt: skip
    return outcome(trials, driver_record(run_dir)["state"] not in ENDED)


def experiment_path(cfg: RunConfig, run_dir: Path | None = None) -> str:
    """Where Ray keeps a sweep's experiment state and trial checkpoints (a path or a URI). On
    local storage that is the run directory itself: `run_dir` when given, so a sweep copied or
    moved elsewhere is read where it now is, not where it was made."""
    storage = storage_paths(cfg)[0]
    if run_dir is not None and not is_uri(storage):
        return str(Path(run_dir).resolve())
    return f"{storage.rstrip('/')}/{cfg.search.name}"


def load_run(run_dir: Path) -> RunConfig:
    """The resolved config saved in a run directory; an `InputError` if it is not a sweep."""
    if not (run_dir / CONFIG_FILE).is_file():
        raise InputError(f"{run_dir}: not a sweep run directory (no {CONFIG_FILE})")
    return load_config(run_dir / CONFIG_FILE)


def total_trials(cfg: RunConfig) -> int:
    """Trials an Optuna sweep runs in all: `search.num_samples`, plus its confirmation runs
    (`search.confirm`'s top x seeds; a grid adds the same re-runs to its own count)."""
    confirm = cfg.search.confirm
    return cfg.search.num_samples + (confirm.top * confirm.seeds if confirm else 0)


def collect(run_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(trials, epochs) DataFrames of a sweep from Ray's experiment state; rewrites the files."""
    trials, epochs = sweep_tables(run_dir)
    write_tables(run_dir, trials, epochs)
    return trials, epochs


def sweep_tables(run_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(trials, epochs) of a sweep as `collect` writes them, read from Ray's experiment state
    and the run directory only; writes nothing."""
    cfg = load_run(run_dir)
    analysis = experiment_analysis(run_dir, cfg)
    extra = shared_columns(cfg)
    trials, epochs = trial_tables(
        analysis.trials, list(cfg.search.hyperparameters), extra, cfg.search.name
    )
    trials = linked(trials, run_dir, cfg.search.name)
    trials, epochs = keep_terminal_rows(run_dir, trials, epochs)
    return mark_interrupted_trials(trials, run_dir), epochs


def experiment_analysis(run_dir: Path, cfg: RunConfig) -> tune.ExperimentAnalysis:
    """Ray's view of the sweep saved in `run_dir`: its trials, results and checkpoints."""
    try:
        return tune.ExperimentAnalysis(experiment_path(cfg, run_dir))
    except Exception as e:  # Ray raises several types for a missing or corrupt state
        raise InputError(f"{run_dir}: cannot read the experiment state ({e})") from None


TERMINAL = ("finished", "error")


def keep_terminal_rows(
    run_dir: Path, trials: pd.DataFrame, epochs: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Prefer the rows the results callback wrote from Ray's live trials where they are final
    and the experiment snapshot still says running or pending: Ray 2.60 can leave a trial that
    failed its last retry as RUNNING in the last snapshot. Not `early_stopped` rows: Tune's
    clean-up after a Ctrl-C ends every running trial, which the callback cannot tell from a
    scheduler's stop, while the snapshot taken before it still says running."""
    path = run_dir / "trials.parquet"
    if not path.is_file() or trials.empty:
        return trials, epochs
    old = pd.read_parquet(path)
    stale = trials[~trials["status"].isin(TERMINAL)]["trial_id"]
    final = old[old["trial_id"].isin(stale) & old["status"].isin(TERMINAL)]
    if final.empty:
        return trials, epochs
    keep = trials.set_index("trial_id")
    merged = pd.concat([keep.drop(index=final["trial_id"]), final.set_index("trial_id")])
    merged = merged.loc[keep.index].reset_index()
    old_epochs = pd.read_parquet(run_dir / "epochs.parquet")
    fixed = old_epochs[old_epochs["trial_id"].isin(final["trial_id"])]
    epochs = pd.concat([epochs[~epochs["trial_id"].isin(final["trial_id"])], fixed],
                       ignore_index=True)  # fmt: skip
    return merged, epochs


def best_trials_text(cfg: RunConfig, trials: pd.DataFrame, top: int = 5) -> str:
    """The best finished trials by the first metric, with their allocation."""
    metric, mode = cfg.search.metrics[0], cfg.search.modes[0]
    if trials.empty or metric not in trials:
        return "no finished trials"
    searched = trials[trials[CONFIRM_KEY].isna()] if CONFIRM_KEY in trials else trials
    done = searched[searched["status"] == "finished"].sort_values(metric, ascending=mode == "min")
    counts = searched["status"].value_counts().to_dict()
    lines = [f"trials: {', '.join(f'{k} {v}' for k, v in counts.items())}"]
    if len(searched) < len(trials):
        lines[0] += f"; confirmation runs: {len(trials) - len(searched)}"
    for _, row in done.head(top).iterrows():
        test = f", test {row['test_overall']:.2f}" if "test_overall" in row else ""
        lines.append(f"  {row['trial_id']}: L {row['s_language']:.3f} / V {row['s_visual']:.3f} / "
                     f"X {row['s_cross']:.3f} (s {row['s_overall']:.2f}): {metric} "
                     f"{row[metric]:.2f}{test}")  # fmt: skip
    confirmation = confirmed_text(trials, metric, mode)
    return "\n".join(lines + ([confirmation] if confirmation else []))
