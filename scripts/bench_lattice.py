"""The reference table of the allocation landscape (issue 13, item 1): every point of a lattice
over (s_language, s_visual), s_cross solved by eq. 10, trained by real `tickets search` sweeps.

    .venv/bin/python scripts/bench_lattice.py --config CONFIG --out DIR \
        [--budgets 0.7] [--seeds 0 1] [--step 0.1] [--concurrency 2]

For every budget s and training seed k, one grid sweep (`search.searcher: grid`, a single pass of
`--step` over `pruning.bounds`, FIFO, `pruning.seed` k) of the installed `tickets` in its own
process, into DIR/lattice-s<s>-seed<k>; a sweep already finished is kept, an interrupted one is
resumed (`tickets resume`), so the script can be stopped and run again. Then:

* DIR/reference.parquet: every run's epochs in `search.replay.ReferenceTable`'s row format
  (allocation, seed, epoch, selection metrics, test accuracy at the run's kept epoch);
* DIR/lattice.json and the printed lines: per budget the lattice points, the best true quality
  and where, and the interpolation check: each interior point's true quality predicted from
  the table without it (linear, as the replay interpolates) against its measured value, the
  error's median and maximum beside the training noise (the median over points of the seeds'
  standard deviation of test accuracy at their kept epochs).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from search.replay import ALLOCATION, ReferenceTable, run_rows
from vqa.atomic import write_json

TICKETS = str(Path(sys.executable).parent / "tickets")


def sweep_name(budget: float, seed: int) -> str:
    return f"lattice-s{budget:g}-seed{seed}"


def run_or_resume(config: Path, out: Path, name: str, overrides: list[str]) -> Path:
    """Run the installed `tickets search CONFIG` with `overrides` into OUT/NAME in its own
    process, or `tickets resume` it when interrupted, or keep it when finished; its run
    directory. A failed command ends this script, which can then be run again."""
    run_dir = out / name
    driver = run_dir / "driver.json"
    if driver.is_file() and json.loads(driver.read_text()).get("state") == "finished":
        return run_dir
    if (run_dir / "tickets.yaml").is_file():
        cmd = [TICKETS, "resume", str(run_dir)]
    else:
        cmd = [TICKETS, "search", str(config), f"search.storage_path={out}",
               f"search.name={name}", "search.confirm=null", "search.warm_start=[]",
               *overrides]  # fmt: skip
    print(" ".join(cmd), flush=True)
    done = subprocess.run(cmd, env={**os.environ, "HF_HUB_OFFLINE": "1"}, check=False)
    if done.returncode != 0:
        sys.exit(f"{name}: `{' '.join(cmd[:2])}` exited {done.returncode}; run this script "
                 "again to resume it")  # fmt: skip
    return run_dir


def run_sweep(config: Path, out: Path, budget: float, seed: int, step: float,
              concurrency: int) -> Path:  # fmt: skip
    """Run (or finish) one seed's grid sweep at `budget`; its run directory."""
    return run_or_resume(config, out, sweep_name(budget, seed), [
        "search.searcher=grid", "search.scheduler=fifo", f"search.budgets=[{budget}]",
        f"pruning.sparsity={budget}", f"pruning.seed={seed}", f"search.grid.coarse_step={step}",
        "search.grid.fine_pass=false", "search.grid.coarse_values=null",
        "search.hyperparameters={}", f"search.max_concurrent_trials={concurrency}"])  # fmt: skip


def _kept_tests(rows: pd.DataFrame, quality: str) -> pd.DataFrame:
    """Per lattice point and run: the test value at the run's kept epoch."""
    kept = rows.dropna(subset=[quality])
    return kept.groupby([*ALLOCATION, "run"], as_index=False)[quality].first()


def interpolation_check(rows: pd.DataFrame, quality: str = "test_overall") -> dict[str, Any]:
    """Leave-one-out over each budget's interior points (those inside the hull of the others):
    |predicted - measured| true quality, against the seeds' spread of kept test accuracy."""
    out: dict[str, Any] = {}
    key = rows[["s_language", "s_visual"]].round(9).apply(tuple, axis=1)
    for budget, at in rows.groupby("s_overall"):
        table = ReferenceTable(at, quality=quality)
        points = table.points()
        errors = []
        for _, p in points.iterrows():
            point = (round(p["s_language"], 9), round(p["s_visual"], 9))
            rest = at[key.loc[at.index].map(lambda k, point=point: k != point)]
            if rest.empty:
                continue
            without = ReferenceTable(rest, quality=quality)
            land = without._land(budget)
            if land.linear is None or not np.isfinite(
                land.linear([[p["s_language"], p["s_visual"]]])[0][-1]
            ):
                continue  # outside the others' hull: the replay would take the nearest point
            predicted = without.true_quality(p.to_dict())
            errors.append(abs(predicted - p["true_quality"]))
        tests = _kept_tests(at, quality)
        noise = tests.groupby(["s_language", "s_visual"])[quality].std(ddof=1).dropna()
        best = points.loc[points["true_quality"].idxmax()]
        out[f"{budget:g}"] = {
            "points": len(points),
            "runs_per_point": int(points["runs"].min()),
            "best": {k: float(best[k]) for k in (*ALLOCATION, "true_quality")},
            "interior_points": len(errors),
            "interpolation_error_median": float(np.median(errors)) if errors else None,
            "interpolation_error_max": float(np.max(errors)) if errors else None,
            "training_noise_median": float(noise.median()) if len(noise) else None,
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--budgets", type=float, nargs="+", default=[0.7])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--step", type=float, default=0.1)
    parser.add_argument("--concurrency", type=int, default=2)
    args = parser.parse_args()
    if not args.config.is_file():
        parser.error(f"--config {args.config}: no such file")
    if len(set(args.seeds)) < 2:
        parser.error("--seeds: the reference table needs at least 2 training seeds")
    args.out.mkdir(parents=True, exist_ok=True)
    run_dirs = [run_sweep(args.config, args.out.resolve(), b, k, args.step, args.concurrency)
                for b in args.budgets for k in args.seeds]  # fmt: skip
    rows = pd.concat([run_rows(d) for d in run_dirs], ignore_index=True)
    rows.to_parquet(args.out / "reference.parquet", index=False)
    check = interpolation_check(rows)
    write_json(args.out / "lattice.json", {"step": args.step, "seeds": args.seeds,
                                          "sweeps": [str(d) for d in run_dirs],
                                          "budgets": check})  # fmt: skip
    for budget, c in check.items():
        best = c["best"]
        print(f"s = {budget}: {c['points']} points x {c['runs_per_point']} runs; best "
              f"{best['true_quality']:.2f} at L {best['s_language']:.2f} / V "
              f"{best['s_visual']:.2f} / X {best['s_cross']:.2f}; leave-one-out interpolation "
              f"error median {c['interpolation_error_median']} / max "
              f"{c['interpolation_error_max']} over {c['interior_points']} interior points, "
              f"training noise (seeds' std) median {c['training_noise_median']}")  # fmt: skip
    print(f"wrote {args.out / 'reference.parquet'}, {args.out / 'lattice.json'}")


if __name__ == "__main__":
    main()
