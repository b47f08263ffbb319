"""Failing trials (`search.failure`): retries from the last checkpoint, and a trial that keeps
failing ends as `error` with its message while the sweep completes (a real Ray runtime)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from search.cli import app
from tests.conftest import Bench
from tests.test_search import sweep_config

pytestmark = pytest.mark.ray


def _sweep(tmp_path: Path, bench: Bench, stage1: Path, inject: dict, retries: int):
    config = sweep_config(bench, stage1, tmp_path, num_samples=2,
                          failure={"max_retries": retries, "inject": inject})  # fmt: skip
    result = CliRunner().invoke(app, ["search", str(config), "pruning.epochs=3"])
    assert result.exit_code == 0, result.output
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
    trials, _ = _sweep(tmp_path, tiny_bench, tiny_stage1,
                       {"epoch": 1, "kind": "exit", "times": 5}, retries=1)  # fmt: skip
    assert len(trials) == 2 and (trials["status"] == "error").all()
    assert trials["error"].notna().all() and (trials["error"].str.len() > 0).all()
    assert trials["test_overall"].isna().all() if "test_overall" in trials else True
