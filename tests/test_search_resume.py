"""`tickets resume` after the driver of a sweep is killed with SIGKILL (slow; real Ray runtime)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import Bench
from tests.test_search import sweep_config

TICKETS = str(Path(sys.executable).parent / "tickets")
pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_CHDIR_TO_TRIAL_DIR": "0"}


def _checkpointed_trials(run_dir: Path, finished: set[str]) -> list[Path]:
    # The test looks at Ray's trial directories only to time the kill; the product never does.
    return [d for d in run_dir.glob("run_trial_*") if any(d.glob("checkpoint_*"))
            and not any(t in d.name for t in finished)]  # fmt: skip


def test_killed_sweep_resumes_without_losing_or_repeating_trials(
    tiny_bench: Bench, tiny_stage1: Path, tmp_path: Path
) -> None:
    hps = {"epochs": {"type": "int", "low": 2, "high": 6}}
    config = sweep_config(tiny_bench, tiny_stage1, tmp_path, num_samples=4, hyperparameters=hps)
    run_dir = tmp_path / "runs" / "sweep"
    proc = subprocess.Popen([TICKETS, "search", str(config)], env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    deadline, before = time.time() + 600, None
    while time.time() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        parquet = run_dir / "trials.parquet"
        if parquet.is_file():
            trials = pd.read_parquet(parquet)
            done = trials[trials["status"] == "finished"]
            if len(done) >= 1 and _checkpointed_trials(run_dir, set(done["trial_id"])):
                time.sleep(2.5)  # let an experiment snapshot record that checkpoint
                before = pd.read_parquet(parquet)
                break
        time.sleep(0.2)
    assert before is not None, "no trial finished in time"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished_before = before[before["status"] == "finished"].set_index("trial_id")
    assert len(finished_before) < 4

    resumed = subprocess.run([TICKETS, "resume", str(run_dir)], env=_env(), capture_output=True,
                             text=True, timeout=900)  # fmt: skip
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
