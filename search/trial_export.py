"""`tickets export RUN_DIR --trial ID OUT`: one finished sweep trial's subnetwork, from the last
checkpoint Ray kept for it (the trial's whole stage-2 run directory; see `search.trainable`)."""

from __future__ import annotations

from pathlib import Path

from pruning.export import export_pruned
from pruning.train import load_pruned
from search.config import load_config
from search.results import trial_status
from search.run_files import experiment_analysis, load_run
from vqa.errors import InputError


def export_trial(run_dir: Path, trial_id: str, out: Path) -> dict:
    """Export trial `trial_id` of the sweep in `run_dir` to `out` (as `tickets export` does for a
    `tickets prune` run). Returns the sparsity report. Checkpoints on remote storage are fetched
    into a temporary directory first."""
    cfg = load_run(run_dir)
    trials = experiment_analysis(run_dir, cfg).trials
    found = [t for t in trials if t.trial_id == trial_id]
    if not found:
        known = ", ".join(sorted(t.trial_id for t in trials)[:8])
        raise InputError(f"{run_dir}: no trial {trial_id!r} (trial_id in trials.parquet: {known}"
                         f"{', ...' if len(trials) > 8 else ''})")  # fmt: skip
    trial = found[0]
    if not (trial.last_result or {}).get("trial_complete") or trial.checkpoint is None:
        raise InputError(f"{run_dir}: trial {trial_id} did not finish ({trial_status(trial)}); "
                         "only a finished trial has a kept mask and test metrics")  # fmt: skip
    with trial.checkpoint.as_directory() as local:
        saved = Path(local) / "config.yaml"
        trial_cfg = load_config(saved)
        if trial_cfg.pruning is None:
            raise InputError(f"{saved}: no 'pruning:' block; not a trial checkpoint")
        # The trial ran in a temporary directory that no longer exists: read it from here.
        pruning = trial_cfg.pruning.model_copy(update={"output_dir": Path(local)})
        stage3 = trial_cfg.stage3
        if stage3 is not None:
            stage3 = stage3.model_copy(update={"output_dir": None})  # i.e. <run>/stage3
        model, tokenizer, answers = load_pruned(pruning, stage3)
        return export_pruned(model, answers, tokenizer, saved.read_text(), out)
