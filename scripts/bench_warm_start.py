"""Warm start against a cold start on the synthetic benchmark: a sweep at s = 0.5 seeded with
the finished trials of a sweep at s = 0.7 (`search.warm_start`, `warm_start_as: trials`)
against the same sweep without, over searcher seeds.

    .venv/bin/python scripts/bench_warm_start.py --out /tmp/bench_warm [--seeds 0 1 2]

Fixed before any result was seen:

1. The demo's steps 1-5 (synth, prepare, pretrain, stage 1 with `lpf`) under OUT/base, seed 0, as
   in `tickets demo` and scripts/bench_search.py: LMH mask training, 6 epochs per trial, two
   trials at a time, every trial's training seed 0.
2. The source: one sweep at s = 0.7 of ``--trials`` (12) trials, the project's default searcher
   (`gp`, FIFO, 4 start-up trials), searcher seed 100 (none of the measured seeds).
3. For each searcher seed: a cold sweep at s = 0.5 and a warm one (the same, plus
   `warm_start: [source]`), ``--trials`` trials each. Trial-epochs are the sweep's own epoch
   reports in the order the driver receives them (the warm start's trials cost none).
4. Figures per seed: the target T is the cold sweep's best selection accuracy over its whole
   run; the trial-epochs until each sweep's first report >= T (the issue's "trial-epochs until
   the same best selection accuracy"; the warm one may never reach it: ">N"). Beside it, as a
   check that does not favour the sweep that defines T, the trial-epochs until each reaches
   min(best cold, best warm), each sweep's best after 12, 24, 36 and 48 trial-epochs, and the
   test accuracy of each sweep's recommendation (its best finished trial by selection).

Every figure goes to OUT/bench_warm_start.json as it is measured (a re-run skips what is there),
and a table is printed at the end.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from search.config import RunConfig
from search.demo import build_stage1
from search.tuner import init_ray, run_search
from vqa.atomic import write_json

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_search import EpochCounter, first_reaching  # noqa: E402

CHECKPOINTS = (12, 24, 36, 48)
SOURCE_SEED = 100


def sweep_config(config: RunConfig, name: str, budget: float, seed: int, trials: int,
                 warm: list[str], how: str = "trials",
                 top: int | None = None) -> RunConfig:  # fmt: skip
    search = config.search.model_copy(update={
        "name": name, "searcher": "gp", "scheduler": "fifo", "seed": seed, "num_samples": trials,
        "max_concurrent_trials": 2, "startup_trials": None, "budgets": None,
        "warm_start": warm, "warm_start_as": how, "warm_start_top": top})  # fmt: skip
    pruning = config.pruning.model_copy(update={"sparsity": budget})
    return config.model_copy(update={"search": search, "pruning": pruning})


def run(config: RunConfig, out: Path) -> tuple[pd.DataFrame, list[float]]:
    """One sweep to its end: (its own trials, the selection accuracy of every epoch report)."""
    shutil.rmtree(out / "runs" / config.search.name, ignore_errors=True)  # an interrupted try
    counter = EpochCounter()
    run_dir = run_search(config, None, None, echo=lambda m: print("   ", m, flush=True),
                         stop=counter)  # fmt: skip
    trials = pd.read_parquet(run_dir / "trials.parquet")
    return trials[trials["status"] != "warm_start"], counter.trace


def summary(trials: pd.DataFrame, trace: list[float]) -> dict[str, Any]:
    done = trials[trials["status"] == "finished"]
    best = done.loc[done["sel_overall"].idxmax()] if len(done) else None
    return {
        "trial_epochs": len(trace),
        "best_sel": max(trace, default=math.nan),
        "best_at": {str(n): max(trace[:n], default=math.nan) for n in CHECKPOINTS},
        "recommended": None if best is None else {
            "trial_id": best["trial_id"], "sel_overall": float(best["sel_overall"]),
            "test_overall": float(best["test_overall"]),
            "allocation": [float(best[f"s_{g}"]) for g in ("language", "visual", "cross")]},
        "trace": trace,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--table-only", action="store_true")
    parser.add_argument("--enqueue", type=int, metavar="K",
                        help="also: warm sweeps that re-run the source's K best first "
                        "(warm_start_as: enqueue), keyed enqueue<K>/seed<n>")  # fmt: skip
    args = parser.parse_args()
    out = args.out.resolve()
    path = out / "bench_warm_start.json"
    results: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    if args.table_only:
        print(table(results, args.seeds))
        if args.enqueue:
            print(table(results, args.seeds, f"enqueue{args.enqueue}"))
        return

    config, _, stage1 = build_stage1(out / "base", seed=0, echo=lambda m: print(m, flush=True))
    config = config.model_copy(update={"search": config.search.model_copy(
        update={"storage_path": str(out / "runs")})})  # fmt: skip
    results["stage1_test_overall"] = stage1["test"]["overall"]
    init_ray(config, None)

    if "source" not in results:
        trials, trace = run(sweep_config(config, "source", 0.7, SOURCE_SEED, args.trials, []), out)
        results["source"] = summary(trials, trace)
        write_json(path, results)
    source_dir = str(out / "runs" / "source")
    kinds = ["cold", "warm"] + ([f"enqueue{args.enqueue}"] if args.enqueue else [])
    for seed in args.seeds:
        for kind in kinds:
            key = f"{kind}/seed{seed}"
            if key in results:
                continue
            warm = [] if kind == "cold" else [source_dir]
            how = "enqueue" if kind.startswith("enqueue") else "trials"
            cfg = sweep_config(config, f"{kind}-seed{seed}", 0.5, seed, args.trials, warm, how,
                               args.enqueue if how == "enqueue" else None)  # fmt: skip
            trials, trace = run(cfg, out)
            results[key] = summary(trials, trace)
            write_json(path, results)
            print(f"{key}: best {results[key]['best_sel']:.2f} after {len(trace)} trial-epochs",
                  flush=True)  # fmt: skip
    print(table(results, args.seeds))
    if args.enqueue:
        print(table(results, args.seeds, f"enqueue{args.enqueue}"))


def table(results: dict[str, Any], seeds: list[int], warm_kind: str = "warm") -> str:
    """Per seed: T, trial-epochs until T and until the common target, bests by budget; cold
    against the warm sweeps `warm_kind`."""
    lines = [f"| seed | T (cold's best) | cold: to T | {warm_kind}: to T | common target | cold: "
             f"to it | {warm_kind}: to it | best at 12/24/36/48, cold | {warm_kind} | recommended "
             f"test, cold | {warm_kind} |", "|---|" + "---|" * 10]  # fmt: skip
    to_t, to_common = {"cold": [], "warm": []}, {"cold": [], "warm": []}
    for seed in seeds:
        cold, warm = results.get(f"cold/seed{seed}"), results.get(f"{warm_kind}/seed{seed}")
        if cold is None or warm is None:
            continue
        target = cold["best_sel"]
        common = min(cold["best_sel"], warm["best_sel"])
        cells = []
        for row, kind in ((cold, "cold"), (warm, "warm")):
            hit = first_reaching(row["trace"], target)
            to_t[kind].append(hit or math.inf)
            cells.append(str(hit) if hit else f">{row['trial_epochs']}")
        common_cells = []
        for row, kind in ((cold, "cold"), (warm, "warm")):
            hit = first_reaching(row["trace"], common)
            to_common[kind].append(hit)
            common_cells.append(str(hit))
        bests = ["/".join(f"{r['best_at'][str(n)]:.1f}" for n in CHECKPOINTS) for r in (cold, warm)]
        tests = [f"{r['recommended']['test_overall']:.1f}" if r["recommended"] else "-"
                 for r in (cold, warm)]  # fmt: skip
        lines.append(f"| {seed} | {target:.2f} | {cells[0]} | {cells[1]} | {common:.2f} | "
                     f"{common_cells[0]} | {common_cells[1]} | {bests[0]} | {bests[1]} | "
                     f"{tests[0]} | {tests[1]} |")  # fmt: skip
    if to_t["cold"]:
        med = {k: statistics.median(v) for k, v in to_t.items()}
        medc = {k: statistics.median(v) for k, v in to_common.items()}
        shown = {k: ("inf" if math.isinf(v) else f"{v:g}") for k, v in med.items()}
        lines.append(f"| median | | {shown['cold']} | {shown['warm']} | | {medc['cold']:g} | "
                     f"{medc['warm']:g} | | | | |")  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    main()
