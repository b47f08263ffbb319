"""Failing trials (`search.failure`): retries from the last checkpoint, and a trial that keeps
failing ends as `error` with its message while the sweep completes (a real Ray runtime)."""

from __future__ import annotations

from pathlib import Path

import optuna
import pandas as pd
import pytest
from typer.testing import CliRunner

from search.cli import app
from tests.conftest import Bench
from tests.test_search import sweep_config

pytestmark = pytest.mark.ray


def _sweep(tmp_path: Path, bench: Bench, stage1: Path, inject: dict, retries: int,
           exit_code: int = 0):  # fmt: skip
    config = sweep_config(bench, stage1, tmp_path, num_samples=2,
                          failure={"max_retries": retries, "inject": inject})  # fmt: skip
    result = CliRunner().invoke(app, ["search", str(config), "pruning.epochs=3"])
    assert result.exit_code == exit_code, result.output
    run_dir = tmp_path / "runs" / "sweep"
    return pd.read_parquet(run_dir / "trials.parquet"), pd.read_parquet(run_dir / "epochs.parquet")


def test_a_failing_trial_is_retried_from_its_last_checkpoint(
    ray_session, tiny_bench: Bench, tiny_stage1: Path, tmp_path: Path
) -> None:
    trials, epochs = _sweep(tmp_path, tiny_bench, tiny_stage1,
                            {"epoch": 2, "kind": "raise", "times": 1}, retries=1)  # fmt: skip
    assert (trials["status"] == "finished").all() and len(trials) == 2
    assert (trials["retries"] == 1).all()
    assert (trials["resumed_from_epoch"] == 2).all()  # epochs 1-2 were not trained again
    for _, group in epochs.groupby("trial_id"):
        assert group["epoch"].tolist() == [1, 2, 3]


def test_a_trial_that_keeps_failing_ends_as_error_and_the_sweep_completes(
    ray_session, tiny_bench: Bench, tiny_stage1: Path, tmp_path: Path
) -> None:
    # Every trial failed: the command exits 1 (README: exit codes).
    inject = {"epoch": 1, "kind": "exit", "times": 5}
    trials, _ = _sweep(tmp_path, tiny_bench, tiny_stage1, inject, retries=1, exit_code=1)
    assert len(trials) == 2 and (trials["status"] == "error").all()
    assert trials["error"].notna().all() and (trials["error"].str.len() > 0).all()
    assert trials["test_overall"].isna().all() if "test_overall" in trials else True


def test_a_trial_whose_loss_turns_non_finite_fails_and_the_searcher_goes_on(
    ray_session, tiny_bench: Bench, tiny_stage1: Path, tmp_path: Path
) -> None:
    """No injection: a learning rate of 1e30 really overflows the weights, the loss turns NaN or
    inf within the first epoch, and stage 2 raises. That trial ends as `error` (no retries: a
    retry would diverge again) while the searcher keeps proposing and the sweep completes."""
    lr = {"lr": {"type": "choice", "values": [0.05, 1e30]}}
    config = sweep_config(tiny_bench, tiny_stage1, tmp_path, searcher="random", num_samples=4,
                          hyperparameters=lr)  # fmt: skip
    result = CliRunner().invoke(app, ["search", str(config)])
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "runs" / "sweep"
    trials = pd.read_parquet(run_dir / "trials.parquet")
    assert len(trials) == 4 and trials["trial_id"].is_unique
    diverged, sane = trials[trials["hp_lr"] == 1e30], trials[trials["hp_lr"] == 0.05]
    assert len(diverged) and len(sane)  # the seeded sampler proposes both
    assert (diverged["status"] == "error").all()
    assert diverged["error"].str.contains("non-finite loss").all()
    assert (sane["status"] == "finished").all() and sane["test_overall"].notna().all()
    study = optuna.load_study(study_name="sweep", storage=f"sqlite:///{run_dir / 'study.db'}")
    states = [t.state for t in study.trials]
    assert len(states) == 4
    assert states.count(optuna.trial.TrialState.FAIL) == len(diverged)
    assert states.count(optuna.trial.TrialState.COMPLETE) == len(sane)
