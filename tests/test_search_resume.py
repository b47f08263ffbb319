"""`tickets resume` after the driver of a sweep is killed with SIGKILL (slow; real Ray runtime)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import TICKETS, Bench, run_tickets, tickets_env
from tests.test_search import sweep_config

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _resumable_checkpoint(run_dir: Path, finished: set[str], to_go: int) -> float | None:
    """When the checkpoint of an unfinished trial with at least `to_go` epochs still to run was
    written (mtime, s), or None when no trial is such."""
    # The test looks at Ray's trial directories only to time the kill; the product never does.
    for trial_dir in run_dir.glob("trial_*"):
        checkpoints = sorted(trial_dir.glob("checkpoint_*"))
        results = trial_dir / "result.json"
        if any(t in trial_dir.name for t in finished) or not checkpoints or not results.is_file():
            continue
        try:
            last = json.loads(results.read_text().splitlines()[-1])
            left = int(last["config"]["epochs"]) - int(last["epochs_done"])
            written = checkpoints[-1].stat().st_mtime
        except (IndexError, KeyError, ValueError, FileNotFoundError):
            continue  # a line still being written, or a checkpoint just replaced by the next
        if not last.get("trial_complete") and left >= to_go:
            return written
    return None


def _snapshot_after(run_dir: Path, moment: float, timeout: float = 20.0) -> bool:
    """Wait until Tune's experiment snapshot was written after `moment` (a file mtime)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for path in run_dir.glob("experiment_state-*.json"):
            try:
                if path.stat().st_mtime > moment:
                    return True
            except FileNotFoundError:  # replaced while we looked
                pass
        time.sleep(0.05)
    return False


def test_killed_sweep_resumes_without_losing_or_repeating_trials(
    tiny_bench: Bench, tiny_stage1: Path, tmp_path: Path
) -> None:
    # An epoch of the tiny model takes about half a second, a trial's start several: many epochs
    # leave a window of seconds in which a trial is running and has a checkpoint on record.
    hps = {"epochs": {"type": "int", "low": 12, "high": 24}}
    config = sweep_config(tiny_bench, tiny_stage1, tmp_path, num_samples=4, hyperparameters=hps)
    run_dir = tmp_path / "runs" / "sweep"
    proc = subprocess.Popen([TICKETS, "search", str(config)], env=tickets_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    deadline, before = time.time() + 600, None
    while time.time() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        parquet = run_dir / "trials.parquet"
        if parquet.is_file():
            trials = pd.read_parquet(parquet)
            done = set(trials.loc[trials["status"] == "finished", "trial_id"])
            written = _resumable_checkpoint(run_dir, done, to_go=6) if done else None
            # Kill only once a snapshot has recorded that checkpoint, and kill at once.
            if written is not None and _snapshot_after(run_dir, written):
                before = pd.read_parquet(parquet)
                break
        time.sleep(0.1)
    assert before is not None, "no trial finished in time"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished_before = before[before["status"] == "finished"].set_index("trial_id")
    assert len(finished_before) < 4
    # The killed driver left driver.json saying running; its dead pid tells the truth.
    status = run_tickets("status", str(run_dir), timeout=120)
    assert status.returncode == 0, status.stderr
    assert f"sweep sweep ({run_dir}): interrupted" in status.stdout
    assert "[interrupted]" in status.stdout  # the trial that was running

    resumed = run_tickets("resume", str(run_dir), timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = pd.read_parquet(run_dir / "trials.parquet")
    assert after["trial_id"].is_unique
    assert (after["status"] == "finished").sum() == 4, after[["trial_id", "status"]]
    after = after.set_index("trial_id")
    columns = ["s_language", "s_visual", "s_cross", "hp_epochs", "sel_overall", "test_overall"]
    pd.testing.assert_frame_equal(after.loc[finished_before.index, columns],
                                  finished_before[columns])  # fmt: skip
    # A trial that was running continued from its checkpoint instead of starting over.
    assert (after["resumed_from_epoch"] > 0).any(), after["resumed_from_epoch"]
    epochs = pd.read_parquet(run_dir / "epochs.parquet")
    per_trial = epochs.groupby("trial_id")["epoch"].apply(list)
    for trial_id, row in after.iterrows():
        assert per_trial[trial_id] == list(range(1, int(row["hp_epochs"]) + 1)), trial_id
