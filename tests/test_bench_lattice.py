"""scripts/bench_lattice.py: the reference table from real grid sweeps, and its interpolation
check."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.conftest import Bench
from tests.test_replay import lattice_rows
from tests.test_search import sweep_config

SCRIPT = Path(__file__).parent.parent / "scripts" / "bench_lattice.py"


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


@pytest.mark.ray
@pytest.mark.slow
def test_lattice_sweeps_make_the_reference_table_and_are_kept_on_a_rerun(
    tiny_bench: Bench, tiny_stage1: Path, tmp_path: Path
) -> None:
    config = sweep_config(tiny_bench, tiny_stage1, tmp_path)
    raw = yaml.safe_load(config.read_text())
    raw["pruning"]["epochs"] = 1  # the lattice's shape is what is tested, not its training
    config.write_text(yaml.safe_dump(raw))
    out = tmp_path / "lattice"
    cmd = [sys.executable, str(SCRIPT), "--config", str(config), "--out", str(out),
           "--budgets", "0.5", "--seeds", "0", "1", "--step", "0.45"]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_CHDIR_TO_TRIAL_DIR": "0"}
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
