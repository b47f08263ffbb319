"""scripts/bench_lattice.py: the reference table from real grid sweeps, and its interpolation
check."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from search.replay import ALLOCATION, ReferenceTable
from tests.conftest import Bench, tickets_env
from tests.test_replay import lattice_rows
from tests.test_search import sweep_config

SCRIPT = Path(__file__).parent.parent / "scripts" / "bench_lattice.py"
LIVE = Path(__file__).parent.parent / "scripts" / "bench_live.py"


def _script():
    spec = importlib.util.spec_from_file_location("bench_lattice", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_interpolation_check_is_exact_on_a_plane_and_sees_a_bump() -> None:
    """On a landscape linear in (language, visual) leaving a point out and interpolating it
    errs by nothing; a bump at one interior point shows as that point's error."""

    def plane(language: float, visual: float, epoch: int, seed: int) -> tuple[float, float]:
        return 50 + epoch + 10 * language, 40 + 10 * language - 5 * visual + seed

    check = _script().interpolation_check(lattice_rows(plane, seeds=(0, 1)))["0.5"]
    assert check["interior_points"] >= 1 and check["interpolation_error_max"] < 1e-9
    assert check["training_noise_median"] == pytest.approx(2**-0.5)  # seeds 0 and 1: std 0.71
    assert check["runs_per_point"] == 2

    # The lattice point nearest the centre of the others lies inside their hull: bumped by 30
    # points of test accuracy, it is 30 points off what its neighbours interpolate.
    rows = lattice_rows(plane, seeds=(0, 1))
    grid = rows[["s_language", "s_visual"]].drop_duplicates()
    centre = grid.mean()
    nearest = grid.loc[((grid - centre) ** 2).sum(axis=1).idxmin()]
    at = (rows["s_language"] == nearest["s_language"]) & (rows["s_visual"] == nearest["s_visual"])
    rows.loc[at, "test_overall"] += 30
    bumped = _script().interpolation_check(rows)["0.5"]
    assert bumped["interpolation_error_max"] == pytest.approx(30, abs=1e-9)
    assert bumped["best"]["true_quality"] >= 30


def _best_of_first(run_dir: Path, budget: int) -> pd.Series:
    """Of a sweep of one-epoch trials, the best by selection among the first `budget` to
    report (a trial's start plus its epoch's wall time), the first reported among equals."""
    trials = pd.read_parquet(run_dir / "trials.parquet")
    walls = pd.read_parquet(run_dir / "epochs.parquet").set_index("trial_id")["wall_s"]
    at = trials["started_at"] + pd.to_timedelta(trials["trial_id"].map(walls), unit="s")
    first = trials.assign(at=at).sort_values("at").head(budget)
    return first.sort_values("sel_overall", ascending=False, kind="stable").iloc[0]


@pytest.mark.ray
@pytest.mark.slow
def test_lattice_sweeps_make_the_reference_table_are_kept_on_a_rerun_and_confirm_live(
    tiny_bench: Bench, tiny_stage1: Path, tmp_path: Path
) -> None:
    config = sweep_config(tiny_bench, tiny_stage1, tmp_path)
    raw = yaml.safe_load(config.read_text())
    raw["pruning"]["epochs"] = 1  # the lattice's shape is what is tested, not its training
    config.write_text(yaml.safe_dump(raw))
    out = tmp_path / "lattice"
    cmd = [sys.executable, str(SCRIPT), "--config", str(config), "--out", str(out),
           "--budgets", "0.5", "--seeds", "0", "1", "--step", "0.45"]  # fmt: skip
    env = tickets_env()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = pd.read_parquet(out / "reference.parquet")
    points = rows.groupby(["s_language", "s_visual"])
    assert points["seed"].apply(lambda s: sorted(set(s)) == [0, 1]).all()
    assert set(rows["epoch"]) == {1} and (rows["s_overall"] == 0.5).all()
    for sweep in ("lattice-s0.5-seed0", "lattice-s0.5-seed1"):
        trials = pd.read_parquet(out / sweep / "trials.parquet")
        assert (trials["status"] == "finished").all() and len(trials) == points.ngroups
    record = json.loads((out / "lattice.json").read_text())["budgets"]["0.5"]
    assert record["points"] == points.ngroups and record["runs_per_point"] == 2
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "tickets search" not in again.stdout  # both sweeps are finished: kept, not re-run
    pd.testing.assert_frame_equal(pd.read_parquet(out / "reference.parquet"), rows)
    # The live confirmation on that table: one real sweep of a variant to 2 trial-epochs, the
    # lattice's own seed-0 grid scored at the same budget, both beside the replay's quartiles.
    live = tmp_path / "live"
    sweep = out / "lattice-s0.5-seed0"
    cmd = [sys.executable, str(LIVE), "--table", str(out / "reference.parquet"), "--config",
           str(sweep / "tickets.yaml"), "--out", str(live), "--variant", "random+fifo",
           "--budget", "2", "--seeds", "0", "--replay-seeds", "2",
           "--grid-runs", str(sweep)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((live / "live.json").read_text())
    table = ReferenceTable.load(out / "reference.parquet")
    best = table.best_quality([0.5])
    assert record["budget"] == 2 and record["best_quality"] == pytest.approx(best)
    real = pd.read_parquet(live / "live-random+fifo-seed0" / "trials.parquet")
    assert len(real) == 2 and (real["status"] == "finished").all() and (real["seed"] == 2).all()
    top = _best_of_first(live / "live-random+fifo-seed0", 2)
    scored = record["arms"]["random+fifo"]["live"]["0"]
    assert scored["trial_epochs"] == 2
    assert scored["recommended"] == {k: top[k] for k in ALLOCATION}
    assert scored["realised_regret"] == pytest.approx(best - table.true_quality(top))
    # The grid's first two epoch reports are all it has spent at a budget of 2.
    first = _best_of_first(sweep, 2)
    assert record["arms"]["grid+fifo"]["live"][sweep.name]["recommended"] == {
        k: first[k] for k in ALLOCATION}  # fmt: skip
    for arm in record["arms"].values():
        r = arm["replay"]
        assert r["seeds"] == 2 and r["q25"] <= r["median"] <= r["q75"]
    assert "| random+fifo | " in (live / "live.md").read_text()
    bad = subprocess.run(cmd[:10], capture_output=True, text=True, timeout=300, env=env)
    assert bad.returncode == 2 and "give one of --budget and --regret" in bad.stderr
