"""scripts/bench_front.py and search.analysis.hypervolume: multi-budget search scored by the
hypervolume of its recommendations, replayed against a reference table."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from search.analysis.hypervolume import hypervolume
from search.config import dump_config
from tests.test_replay import SIZES, lattice_rows, made_up_config

SCRIPT = Path(__file__).parent.parent / "scripts" / "bench_front.py"


def test_hypervolume_of_a_staircase() -> None:
    # (accuracy, kept share): 60 at 0.3 kept, 70 at 0.5, 65 at 0.6 (dominated), above 50.
    points = [(60.0, 0.3), (70.0, 0.5), (65.0, 0.6)]
    assert hypervolume(points, 50.0) == pytest.approx(0.2 * 10 + 0.5 * 20)
    assert hypervolume([], 50.0) == 0.0
    assert hypervolume([(40.0, 0.1), (80.0, 1.0)], 50.0) == 0.0  # below the reference; all kept
    assert hypervolume([(60.0, 0.3), (float("nan"), 0.1)], 50.0) == pytest.approx(0.7 * 10)


def test_grids_per_budget_reach_the_lattice_front_and_the_searchers_are_scored_to_their_cost(
    tmp_path: Path,
) -> None:
    # Selection ranks allocations as test accuracy does and the seeds agree: each budget's
    # grid, visiting every lattice point, ends recommending that budget's best, whose front is
    # the lattice's own.
    def landscape(budget: float):
        def at(language: float, visual: float, epoch: int, seed: int) -> tuple[float, float]:
            sel = 80 - 30 * budget + 10 * language - 8 * (visual - 0.3) ** 2 + epoch
            return sel, sel - 3

        return at

    budgets = (0.3, 0.5, 0.7)
    rows = pd.concat([lattice_rows(landscape(b), seeds=(0, 1), budget=b) for b in budgets])
    rows.to_parquet(tmp_path / "ref.parquet")
    cfg = made_up_config(tmp_path, grid={"fine_pass": False}, startup_trials=3)
    (tmp_path / "sweep.yaml").write_text(dump_config(cfg))
    out = tmp_path / "out" / "front"
    cmd = [sys.executable, str(SCRIPT), "--table", str(tmp_path / "ref.parquet"), "--config",
           str(tmp_path / "sweep.yaml"), "--out", str(out), "--seeds", "2", "--concurrency", "2",
           "--budgets", *map(str, budgets), "--variants", "tpe+fifo", "nsga2+fifo", "--sizes",
           *(str(SIZES[g]) for g in ("language", "visual", "cross"))]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads(Path(f"{out}.json").read_text())
    points = sum(len(rows[rows["s_overall"] == b].groupby(["s_language", "s_visual"]))
                 for b in budgets)  # fmt: skip
    assert record["grid_cost"] == {"c2": 2 * points}  # every point of every budget, 2 epochs
    best = record["best_hypervolume"]
    # The lattice's worst point is the reference: its front is each budget's best point.
    last = rows[rows["epoch"] == 2]  # the kept epoch: selection rises with the epoch
    quality = last.groupby(["s_overall", "s_language", "s_visual"])["test_overall"].mean()
    assert record["reference_quality"] == pytest.approx(quality.min())
    tops = quality.groupby(level=0).max()
    assert best == pytest.approx(hypervolume(zip(tops, 1 - tops.index, strict=True),
                                             quality.min()))  # fmt: skip
    for run in record["runs"]["grid-per-budget/c2"].values():
        curve = np.array(run["curve"])
        assert curve[0] == pytest.approx(best) and curve[-1] == pytest.approx(0.0, abs=1e-9)
        assert (np.diff(curve) <= 1e-9).all()  # a grid's recommendations only improve
    for name in ("tpe+fifo/c2", "nsga2+fifo/c2"):
        runs = record["runs"][name]
        assert sorted(runs) == ["0", "1"]
        for run in runs.values():
            curve = np.array(run["curve"])
            assert len(curve) == 2 * points and run["cost"] <= 2 * points
            assert (curve >= -1e-9).all() and (curve <= best + 1e-9).all() and curve[-1] < best
    table = Path(f"{out}.md").read_text()
    assert f"Lattice hypervolume {best:.2f}" in table
    assert "| grid-per-budget | 2 | 2 |" in table and "| 0.00 (0.00-0.00) |" in table
    assert Path(f"{out}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and ", seed " not in again.stdout  # every replay read back
    assert json.loads(Path(f"{out}.json").read_text()) == record
    missing = subprocess.run([*cmd[:12], "--budgets", "0.3", "0.9"], capture_output=True,
                             text=True, timeout=300)  # fmt: skip
    assert missing.returncode == 2 and "--table: no lattice at budget(s) [0.9]" in missing.stderr
    assert missing.stderr.strip().count("\n") == 0  # one line
