"""scripts/bench_regret.py: regret curves of searchers replayed against a reference table."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

from search.config import dump_config
from tests.test_replay import SIZES, lattice_rows, made_up_config

SCRIPT = Path(__file__).parent.parent / "scripts" / "bench_regret.py"


def test_regret_curves_figure_and_table_then_a_rerun_recomputes_nothing(tmp_path: Path) -> None:
    # Selection ranks allocations as test accuracy does and the seeds agree: the grid, which
    # visits every lattice point, ends at regret 0; the lattice's best is language 0.8.
    def landscape(language: float, visual: float, epoch: int, seed: int) -> tuple[float, float]:
        sel = 50 + 20 * language - 15 * (visual - 0.3) ** 2 + epoch
        return sel, sel - 3

    rows = lattice_rows(landscape, seeds=(0, 1))
    rows.to_parquet(tmp_path / "ref.parquet")
    cfg = made_up_config(tmp_path, grid={"fine_pass": False}, startup_trials=2)
    (tmp_path / "sweep.yaml").write_text(dump_config(cfg))
    out = tmp_path / "out" / "regret"
    cmd = [sys.executable, str(SCRIPT), "--table", str(tmp_path / "ref.parquet"), "--config",
           str(tmp_path / "sweep.yaml"), "--out", str(out), "--seeds", "3", "--concurrency", "2",
           "--variants", "grid+fifo", "random+fifo", "tpe+asha", "tpe+fifo+confirm2x1", "--sizes",
           *(str(SIZES[g]) for g in ("language", "visual", "cross"))]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads(Path(f"{out}.json").read_text())
    points = len(rows.groupby(["s_language", "s_visual"]))
    assert record["grid_cost"] == {"c2": 2 * points}  # every point, 2 epochs each
    grid = record["runs"]["grid+fifo/c2"]
    assert all(r["curve"][-1] == 0.0 for r in grid.values())
    for name in ("random+fifo/c2", "tpe+asha/c2"):
        runs = record["runs"][name]
        assert sorted(runs) == ["0", "1", "2"]
        assert all(len(r["curve"]) == 2 * points and r["cost"] <= 2 * points
                   for r in runs.values())  # fmt: skip
        assert all(min(v for v in r["curve"] if v == v) >= 0 for r in runs.values())
    # C / 2 epochs - 2 search trials, then the 2 best re-run once each: exactly C trial-epochs
    confirmed = record["runs"]["tpe+fifo+confirm2x1/c2"]
    assert all(r["cost"] == 2 * points for r in confirmed.values())
    table = Path(f"{out}.md").read_text()
    median = np.median([r["curve"] for r in grid.values()], axis=0)  # no NaN after epoch 2
    hit = int(np.nonzero(median[2:] <= 0.5)[0][0]) + 3
    share = f"{100 * hit / (2 * points):.0f}%"
    assert f"| grid+fifo | 2 | 3 | {hit} ({share} of {2 * points}) | 0.00 (0.00-0.00) |" in table
    assert Path(f"{out}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and ", seed " not in again.stdout  # every replay was read back
    assert json.loads(Path(f"{out}.json").read_text()) == record
    bad = subprocess.run([*cmd[:-9], "--variants", "tpe+hyperband"], capture_output=True,
                         text=True, timeout=300)  # fmt: skip
    assert bad.returncode == 2 and "'tpe+hyperband' is not SEARCHER+SCHEDULER" in bad.stderr
    bad = subprocess.run([*cmd[:-9], "--variants", "grid+fifo+confirm2x1"], capture_output=True,
                         text=True, timeout=300)  # fmt: skip
    assert bad.returncode == 2 and "optionally +confirmKxN (not the grid)" in bad.stderr
    assert yaml.safe_load((tmp_path / "sweep.yaml").read_text())["search"]["startup_trials"] == 2
