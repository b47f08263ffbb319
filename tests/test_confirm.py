"""`search.confirm`: a sweep's winners re-run with fresh training seeds after the search."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
from ray.tune.schedulers import TrialScheduler

from search.config import validate_config
from search.confirm import ConfirmingASHA, confirmed
from tests.conftest import TICKETS, Bench, run_tickets, tickets_env
from tests.test_search import sweep_config


def _confirmation_running(run_dir: Path) -> bool:
    """Whether a confirmation trial has reported an epoch and not ended (Ray's trial files are
    read only to time the interrupt)."""
    for results in run_dir.glob("trial_*/result.json"):
        try:
            last = json.loads(results.read_text().splitlines()[-1])
        except (IndexError, ValueError, FileNotFoundError):
            continue
        if "confirm_of" in last.get("config", {}) and not last.get("trial_complete"):
            return True
    return False


@pytest.mark.ray
@pytest.mark.slow
def test_confirmation_reruns_the_winners_with_fresh_seeds_and_survives_an_interrupt(
    tiny_bench: Bench, tiny_stage1: Path, tmp_path: Path
) -> None:
    """The 2 best of 3 search trials re-run with seeds 1 and 2 (`pruning.seed` 0 + 1, + 2) at
    their allocations, after every search trial ended; a Ctrl-C during confirmation and a
    resume leave exactly those 4 runs, all trained to the end, none told to the study."""
    config = sweep_config(tiny_bench, tiny_stage1, tmp_path, num_samples=3,
                          max_concurrent_trials=2, scheduler="asha",
                          confirm={"top": 2, "seeds": 2})  # fmt: skip
    run_dir = tmp_path / "runs" / "sweep"
    cmd = [TICKETS, "search", str(config), "pruning.epochs=4"]
    proc = subprocess.Popen(cmd, env=tickets_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None and not _confirmation_running(run_dir):
        time.sleep(0.1)
    assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err.decode()[-3000:]
    interrupted = pd.read_parquet(run_dir / "trials.parquet")
    assert (interrupted["confirm_of"].notna() & (interrupted["status"] == "finished")).sum() < 4

    resumed = run_tickets("resume", str(run_dir), timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    trials = pd.read_parquet(run_dir / "trials.parquet")
    assert trials["trial_id"].is_unique
    search = trials[trials["confirm_of"].isna()]
    runs = trials[trials["confirm_of"].notna()]
    assert len(search) == 3 and (search["seed"] == 0).all()
    finished = search[search["status"] == "finished"].set_index("trial_id")["sel_overall"]
    top = sorted(set(runs["confirm_of"]))
    assert len(top) == min(2, len(finished)) and set(top) <= set(finished.index)
    # the best by selection (the tiny benchmark ties often: any of a tie may be taken)
    rest = finished.drop(top)
    assert rest.empty or finished[top].min() >= rest.max()
    assert len(runs) == 2 * len(top) and (runs["status"] == "finished").all()
    assert sorted(zip(runs["confirm_of"], runs["seed"], strict=True)) == sorted(
        (t, s) for t in top for s in (1, 2)
    )
    assert (runs["epochs"] == 4).all() and not runs["early_stopped"].any()  # ASHA let them run
    by_id = trials.set_index("trial_id")
    for _, run in runs.iterrows():
        source = by_id.loc[run["confirm_of"]]
        for col in ("s_language", "s_visual", "s_cross"):
            assert run[col] == source[col]
        log = (run_dir / f"trial_{run['trial_id']}" / "stage2.log").read_text()
        assert f"seed {run['seed']};" in log.splitlines()[0]
    study = optuna.load_study(study_name="sweep", storage=f"sqlite:///{run_dir / 'study.db'}")
    assert len(study.trials) == 3
    assert "confirmed with fresh training seeds" in resumed.stdout
    assert "confirmation runs: 4" in resumed.stdout
    status = run_tickets("status", str(run_dir), timeout=300)
    assert status.returncode == 0 and "trials: 7 of 7 started" in status.stdout, status.stdout

    table = confirmed(trials, "sel_overall", "max")
    assert table["runs"].tolist() == [2] * len(top)
    for _, row in table.iterrows():
        mine = runs[runs["confirm_of"] == row["trial_id"]]["sel_overall"]
        assert row["sel_overall_mean"] == pytest.approx(mine.mean())
        assert row["sel_overall_std"] == pytest.approx(mine.std(ddof=1))
    assert table["sel_overall_mean"].is_monotonic_decreasing
    # The Pareto front is the search's: the re-runs repeat its allocations.
    front = run_tickets("pareto", str(run_dir), timeout=300)
    assert front.returncode == 0, front.stderr[-2000:]
    grown = run_tickets("resume", str(run_dir), "search.num_samples=5", timeout=300)
    assert grown.returncode == 2 and "cannot grow" in grown.stderr
    assert len(pd.read_parquet(run_dir / "trials.parquet")) == 7


class _Trial:
    def __init__(self, trial_id: str, config: dict) -> None:
        self.trial_id, self.config = trial_id, config


def test_confirming_asha_never_stops_a_confirmation_run() -> None:
    """At a rung where ASHA stops a search trial below the others, a confirmation run with the
    same value goes on."""
    asha = ConfirmingASHA(time_attr="epochs_done", metric="sel_overall", mode="max", max_t=10,
                          grace_period=1, reduction_factor=2)  # fmt: skip
    trials = [_Trial("a", {}), _Trial("b", {}), _Trial("c", {}), _Trial("r", {"confirm_of": "a"})]
    for t in trials:
        asha.on_trial_add(None, t)
    answers = {}
    for t, value in zip(trials, (60.0, 70.0, 10.0, 10.0), strict=True):
        result = {"epochs_done": 1, "sel_overall": value}
        answers[t.trial_id] = asha.on_trial_result(None, t, result)
    assert answers["c"] == TrialScheduler.STOP
    assert answers["r"] == TrialScheduler.CONTINUE


def test_confirm_config_is_checked() -> None:
    data = {"dataset": "vqacp_v2", "root": "d", "features": "f.h5", "cache_dir": "c"}
    raw = {"data": data, "pruning": {"output_dir": "p", "sparsity": 0.5},
           "search": {"confirm": {"top": 0}}}  # fmt: skip
    with pytest.raises(Exception, match=r"search\.confirm\.top: Input should be greater"):
        validate_config(raw, "x.yaml")
    raw["search"] = {
        "confirm": {"top": 2},
        "hyperparameters": {"seed": {"type": "choice", "values": [1, 2]}},
    }
    with pytest.raises(Exception, match="`seed` cannot also be a searched hyperparameter"):
        validate_config(raw, "x.yaml")
