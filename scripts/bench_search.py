"""Search efficiency on the synthetic benchmark: the C.4 grid against TPE and GP, each with and
without ASHA, at s = 0.7 on the demo model; and Ray's overhead per trial.

    .venv/bin/python scripts/bench_search.py --out /tmp/bench_search [--seeds 0 1 2] [--cap 0.3]

1. The demo's steps 1-5 (synth, prepare, pretrain, stage 1 with `lpf`) under OUT/base, once:
   data, model and every trial's training seed are fixed (seed 0), as in `tickets demo`.
2. Ray's overhead: a FIFO sweep of ``--overhead-trials`` one-epoch trials, one at a time, proposed
   by ``--overhead-searcher`` (default random; gp includes its model fits); the overhead per
   trial is (sweep wall time - the trials' own time, Ray's ``time_total_s``) / trials.
   The sweep wall time is that of `run_search` (it also writes the Parquet files and plots).
3. The grid sweep (C.4: 20% coarse pass, 5% fine pass around the best coarse point). Its final
   best selection accuracy B sets the target B - 0.5; its cost is every trial-epoch it trained.
4. For each searcher seed (``search.seed``; the data and trials stay fixed) and each of tpe, gp,
   tpe+asha, gp+asha: a sweep that stops at the first epoch report whose selection accuracy
   reaches the target, or once it has spent ``--cap`` x the grid's trial-epochs (default 0.2:
   enough to tell the goal, 0.15, apart). Variant by variant, all seeds of one before the next.

Trial-epochs are counted by a Tune stopper in the order the driver receives the epoch reports
(two trials run at a time, as in the demo). Every figure goes to OUT/bench_search.json as it is
measured (a re-run skips what is there) and a table is printed at the end.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import pandas as pd
from ray.tune.stopper import Stopper

from search.config import RunConfig
from search.demo import build_stage1
from search.space import startup_trials
from search.tuner import init_ray, run_search
from vqa.atomic import write_json

WITHIN = 0.5  # points of selection accuracy below the grid's final best that count as reached
VARIANTS = (("gp", "fifo"), ("gp", "asha"), ("tpe", "fifo"), ("tpe", "asha"))  # gp+fifo: default


class EpochCounter(Stopper):
    """Counts the epoch reports of a sweep; stops it once one reaches ``target`` or ``cap``
    reports have arrived (either may be None: never)."""

    def __init__(self, target: float | None = None, cap: int | None = None) -> None:
        self.target, self.cap = target, cap
        self.trace: list[float] = []  # selection accuracy of every epoch report, in arrival order
        self.hit: int | None = None  # trial-epochs spent when the target was first reached

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        if "stage" in result and not result.get("trial_complete"):
            self.trace.append(float(result["sel_overall"]))
            if self.hit is None and self.target is not None and self.trace[-1] >= self.target:
                self.hit = len(self.trace)
        return False

    def stop_all(self) -> bool:
        return self.hit is not None or (self.cap is not None and len(self.trace) >= self.cap)


def first_reaching(trace: list[float], target: float) -> int | None:
    """1-based position of the first value >= target."""
    return next((i + 1 for i, v in enumerate(trace) if v >= target), None)


def sweep_config(config: RunConfig, name: str, searcher: str, scheduler: str, seed: int,
                 num_samples: int, concurrent: int = 2, epochs: int | None = None,
                 startup: int | None = None) -> RunConfig:  # fmt: skip
    search = config.search.model_copy(update={
        "name": name, "searcher": searcher, "scheduler": scheduler, "seed": seed,
        "num_samples": num_samples, "max_concurrent_trials": concurrent,
        "startup_trials": startup})  # fmt: skip
    update: dict[str, Any] = {"search": search}
    if epochs is not None:
        update["pruning"] = config.pruning.model_copy(update={"epochs": epochs})
    return config.model_copy(update=update)


def sweep(config: RunConfig, stopper: EpochCounter) -> tuple[pd.DataFrame, float, float]:
    """Run one sweep to its end or its stopper; (its trials table, its wall time in s, the
    part of it before the end-of-sweep report: best trials, Parquet, plots)."""
    start = time.perf_counter()
    first_echo: list[float] = []

    def echo(_: str) -> None:  # the first line comes after Tune's fit, from the final report
        if not first_echo:
            first_echo.append(time.perf_counter())

    run_dir = run_search(config, None, None, echo=echo, stop=stopper)
    wall = time.perf_counter() - start
    return pd.read_parquet(run_dir / "trials.parquet"), wall, first_echo[0] - start


def summary_row(trials: pd.DataFrame, stopper: EpochCounter, wall: float) -> dict[str, Any]:
    return {
        "trials": len(trials),
        "statuses": trials["status"].value_counts().to_dict(),
        "trial_epochs": len(stopper.trace),
        "best_sel": max(stopper.trace, default=math.nan),
        "hit": stopper.hit,
        "wall_s": wall,
        "trial_s": float(trials["wall_s"].sum()),
        "trace": stopper.trace,  # selection accuracy of every epoch report, in arrival order
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--cap", type=float, default=0.2, help="budget, share of grid's epochs")
    parser.add_argument("--variants", nargs="+", default=[f"{a}+{b}" for a, b in VARIANTS])
    parser.add_argument("--overhead-trials", type=int, default=8)
    parser.add_argument("--overhead-searcher", default="random", choices=["random", "tpe", "gp"])
    parser.add_argument("--questions", type=int, default=3000)
    parser.add_argument("--startup", type=int, help="search.startup_trials (default: project's)")
    parser.add_argument("--table-only", action="store_true", help="print OUT's figures only")
    args = parser.parse_args()
    out = args.out.resolve()
    results_path = out / "bench_search.json"
    results: dict[str, Any] = json.loads(results_path.read_text()) if results_path.is_file() else {}

    def save() -> None:
        write_json(results_path, results)

    variants = [tuple(v.split("+")) for v in args.variants]
    if args.table_only:
        cap = math.ceil(args.cap * results["grid"]["trial_epochs"])
        print(table(results, variants, args.seeds, cap, _suffix(args.startup)))
        return

    config, _, stage1 = build_stage1(out / "base", seed=0, questions=args.questions,
                                     echo=lambda m: print(m, flush=True))  # fmt: skip
    config = config.model_copy(update={"search": config.search.model_copy(
        update={"storage_path": str(out / "runs")})})  # fmt: skip
    results["stage1_test_overall"] = stage1["test"]["overall"]
    init_ray(config, None)

    searcher = args.overhead_searcher
    over = "overhead" if searcher == "random" else f"overhead_{searcher}"
    if over not in results:
        shutil.rmtree(out / "runs" / over, ignore_errors=True)
        cfg = sweep_config(config, over, searcher, "fifo", 0, args.overhead_trials,
                           concurrent=1, epochs=1)  # fmt: skip
        trials, wall, fit = sweep(cfg, EpochCounter())
        n, trial_s = len(trials), float(trials["wall_s"].sum())
        results[over] = {"trials": n, "wall_s": wall, "before_report_s": fit,
                         "trial_s": trial_s, "per_trial_s": (wall - trial_s) / n,
                         "per_trial_before_report_s": (fit - trial_s) / n}  # fmt: skip
        save()
    o = results[over]
    print(
        f"Ray overhead ({searcher}): {o['per_trial_s']:.2f} s per trial "
        f"({o.get('per_trial_before_report_s', math.nan):.2f} s before the final report)"
    )

    if "grid" not in results:
        shutil.rmtree(out / "runs" / "grid", ignore_errors=True)  # an interrupted attempt
        stopper = EpochCounter()
        trials, wall, _ = sweep(sweep_config(config, "grid", "grid", "fifo", 0, 1), stopper)
        row = summary_row(trials, stopper, wall)
        row["target"] = row["best_sel"] - WITHIN
        row["hit"] = first_reaching(stopper.trace, row["target"])
        uniform = trials[(trials["s_language"] - 0.7).abs().lt(1e-9)
                         & (trials["s_visual"] - 0.7).abs().lt(1e-9)]  # fmt: skip
        best = trials.loc[trials["sel_overall"].idxmax()]
        row["uniform_test_overall"] = (
            float(uniform["test_overall"].iloc[0]) if len(uniform) else None
        )
        row["best_test_overall"] = float(best["test_overall"])
        row["best_allocation"] = [float(best[f"s_{g}"]) for g in ("language", "visual", "cross")]
        row["test_overall_range"] = [float(trials["test_overall"].min()),
                                     float(trials["test_overall"].max())]  # fmt: skip
        results["grid"] = row
        save()
    grid = results["grid"]
    cap = math.ceil(args.cap * grid["trial_epochs"])
    print(f"grid: {grid['trials']} trials, {grid['trial_epochs']} trial-epochs, best selection "
          f"{grid['best_sel']:.2f} (target {grid['target']:.2f}, reached after {grid['hit']})",
          flush=True)  # fmt: skip

    for searcher, scheduler in variants:  # the default searcher's seeds first
        for seed in args.seeds:
            suffix = _suffix(args.startup)
            key = f"{searcher}+{scheduler}{suffix}/seed{seed}"
            if key in results:
                continue
            stopper = EpochCounter(target=grid["target"], cap=cap)
            name = f"{searcher}-{scheduler}{suffix.replace('+', '-')}-seed{seed}"
            shutil.rmtree(out / "runs" / name, ignore_errors=True)  # an interrupted attempt
            cfg = sweep_config(config, name, searcher, scheduler, seed, cap, startup=args.startup)
            trials, wall, _ = sweep(cfg, stopper)
            if stopper.hit is None and len(stopper.trace) < cap:
                # Tune returns normally after Ctrl-C: such a sweep measured nothing.
                raise SystemExit(f"{key}: the sweep ended before its target or cap (interrupted)")
            results[key] = summary_row(trials, stopper, wall)
            save()
            print(f"{key}: {results[key]}", flush=True)

    print(table(results, variants, args.seeds, cap, _suffix(args.startup)))


def _suffix(startup: int | None) -> str:
    """`+s<startup trials>`: how sweeps with different `search.startup_trials` are told apart
    (None: the project's default for the allocation alone)."""
    return f"+s{startup_trials(0, 1) if startup is None else startup}"


def table(results: dict[str, Any], variants: list[tuple[str, ...]], seeds: list[int],
          cap: int, suffix: str = "") -> str:  # fmt: skip
    """Per variant and seed: trial-epochs spent until the target (">cap" when not reached) and
    the best selection accuracy seen by then; the median over seeds, as a share of the grid's
    trial-epochs too."""
    grid = results["grid"]
    lines = ["| searcher | " + " | ".join(f"seed {s}" for s in seeds) + " | median | / grid |",
             "|---|" + "---|" * (len(seeds) + 2),
             f"| grid (C.4), {grid['trials']} trials | {grid['trial_epochs']} "
             f"({grid['best_sel']:.2f}; target {grid['target']:.2f} first reached after "
             f"{grid['hit']}) |" + " |" * (len(seeds) - 1)
             + f" {grid['trial_epochs']} | 1.00 |"]  # fmt: skip
    for searcher, scheduler in variants:
        spent, shown = [], []
        for seed in seeds:
            row = results.get(f"{searcher}+{scheduler}{suffix}/seed{seed}")
            if row is None:
                shown.append("-")
                continue
            spent.append(row["hit"] or math.inf)
            count = str(row["hit"]) if row["hit"] else f">{cap}"
            shown.append(f"{count} ({row['best_sel']:.2f})")
        name = f"{searcher} + {scheduler}{suffix}"
        if not spent:
            lines.append(f"| {name} | " + " | ".join(shown) + " | - | - |")
            continue
        median = statistics.median(spent)
        median_text = f">{cap}" if median == math.inf else f"{median:g}"
        share = median if math.isfinite(median) else cap
        share_text = ("" if math.isfinite(median) else ">") + f"{share / grid['trial_epochs']:.2f}"
        lines.append(f"| {name} | " + " | ".join(shown)
                     + f" | {median_text} | {share_text} |")  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    main()
