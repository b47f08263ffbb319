"""Live confirmation of the replay (issue 13, item 4): a variant run for real (training, Ray)
with several searcher seeds to a budget of B trial-epochs, its realised regret set beside the
replay's interquartile range at B; the grid's real sweeps scored the same way.

    .venv/bin/python scripts/bench_live.py --table REF.parquet [RUN_DIR ...] --config CONFIG \
        --out DIR --variant gp+fifo (--budget B | --regret docs/search_regret.json) \
        [--seeds 0 1 2] [--concurrency 2] [--training-seed 2] [--grid-runs LATTICE_SWEEP ...]

* B: `--budget`, or the trial-epochs until the variant's median regret is <= `--within` in
  `scripts/bench_regret.py`'s JSON at `--concurrency` (the replay's predicted budget).
* Each searcher seed k: one real `tickets search CONFIG` in its own process (into DIR/live-
  <variant>-seed<k>; a finished sweep is kept, an interrupted one resumed), the variant's
  searcher and scheduler, `search.seed` k, `pruning.seed` `--training-seed` (not a seed of the
  reference table, so no real trial repeats a table run), and as many trials as the replay of
  the same seed starts within B.
* Its recommendation after B trial-epochs: every epoch report of the sweep in time order
  (a trial's start plus its epochs' wall times), the first B of them; of the trials whose last
  epoch is among them, the best by its kept selection metric (as the sweep's summary ranks).
  The realised regret is the table's best true quality minus that allocation's true quality,
  as the replay scores its own recommendations.
* `--grid-runs`: real grid sweeps (the lattice's own: a grid's proposals do not depend on the
  searcher seed, so each training seed's sweep is one live grid), scored at B the same way.
* The replay: each arm replayed with `--replay-seeds` seeds to B; the 25th, 50th and 75th
  percentile of its regret at B.

Writes DIR/live.json (after each sweep) and DIR/live.md, one row per arm.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_lattice import run_or_resume  # noqa: E402
from bench_regret import (  # noqa: E402
    GRID,
    quantiles,
    refuse,
    regret_curve,
    summary,
    variant_config,
)

from search.config import load_config  # noqa: E402
from search.replay import ALLOCATION, ReferenceTable, replay  # noqa: E402
from search.results import CONFIRM_KEY, EPOCHS_FILE, TRIALS_FILE  # noqa: E402
from vqa.atomic import write_json  # noqa: E402


def recommended_at(run_dir: Path, budget: int, metric: str = "sel_overall",
                   mode: str = "max") -> tuple[dict[str, float] | None, int]:  # fmt: skip
    """(the sweep's recommendation after `budget` trial-epochs, the trial-epochs it spent in
    all): of the search trials whose last epoch is among the first `budget` epoch reports in
    time order, the finished one of best `metric`, the first to finish among equals; None when
    none has."""
    trials = pd.read_parquet(run_dir / TRIALS_FILE)
    if CONFIRM_KEY in trials:
        trials = trials[trials[CONFIRM_KEY].isna()]
    epochs = pd.read_parquet(run_dir / EPOCHS_FILE)
    epochs = epochs[(epochs["stage"] == "prune") & epochs["trial_id"].isin(trials["trial_id"])]
    start = trials.set_index("trial_id")["started_at"]
    epochs = epochs.sort_values(["trial_id", "epoch"]).copy()
    elapsed = epochs.groupby("trial_id")["wall_s"].cumsum()
    epochs["at"] = epochs["trial_id"].map(start) + pd.to_timedelta(elapsed, unit="s")
    first = epochs.sort_values("at", kind="stable").head(budget)
    last = first.groupby("trial_id")["epoch"].max()
    done = trials[(trials["status"] == "finished")
                  & (trials["trial_id"].map(last) == trials["epochs"])]  # fmt: skip
    done = done.dropna(subset=[metric])
    if done.empty:
        return None, len(epochs)
    # among equals the first to finish, as the replay recommends
    done = done.assign(at=done["trial_id"].map(first.groupby("trial_id")["at"].max()))
    done = done.sort_values("at", kind="stable")
    best = done.sort_values(metric, ascending=mode == "min", kind="stable").iloc[0]
    return {k: float(best[k]) for k in ALLOCATION}, len(epochs)


def predicted_budget(path: Path, variant: str, concurrency: int, within: float) -> int:
    """The trial-epochs until the variant's median regret <= `within` in bench_regret's JSON."""
    record = json.loads(path.read_text())
    for row in summary(record, within):
        if row["variant"] == variant and row["concurrency"] == concurrency:
            if row["reached"] is None:
                refuse(f"--regret {path}: {variant} at concurrency {concurrency} never reaches "
                         f"median regret <= {within} within C; give --budget")  # fmt: skip
            return int(row["reached"])
    refuse(f"--regret {path}: no replay of {variant} at concurrency {concurrency}")


def replay_quantiles(cfg: Any, table: ReferenceTable, variant: str, concurrency: int,
                     budget: int, seeds: int) -> dict[str, Any]:  # fmt: skip
    """The replay's regret at `budget` over `seeds` searcher seeds: percentiles 25/50/75, and
    each seed's trial count within the budget."""
    curves, trials = [], []
    for seed in range(seeds):
        events = replay(variant_config(cfg, variant, None if variant == GRID else 10_000), table,
                        concurrency=concurrency, seed=seed, max_trial_epochs=budget)  # fmt: skip
        curves.append(regret_curve(events, budget))
        trials.append(len({e.trial for e in events}))
    q = quantiles(curves)[:, -1]
    return {"seeds": seeds, "q25": float(q[0]), "median": float(q[1]), "q75": float(q[2]),
            "trials": trials}  # fmt: skip


def score(table: ReferenceTable, run_dir: Path, budget: int, best: float) -> dict[str, Any]:
    rec, spent = recommended_at(run_dir, budget)
    quality = table.true_quality(rec) if rec else math.nan
    return {"run": str(run_dir), "trial_epochs": spent, "recommended": rec,
            "realised_regret": best - quality}  # fmt: skip


def run(args: argparse.Namespace) -> dict[str, Any]:
    table = ReferenceTable.load(*args.table)
    cfg = load_config(args.config)
    budget = args.budget or predicted_budget(args.regret, args.variant, args.concurrency,
                                             args.within)  # fmt: skip
    best = table.best_quality([cfg.pruning.sparsity])
    path = args.out / "live.json"
    record = json.loads(path.read_text()) if path.is_file() else {}
    if record and (record.get("budget"), record.get("concurrency")) != (budget, args.concurrency):
        refuse(f"{path}: made for budget {record.get('budget')} at concurrency "
                 f"{record.get('concurrency')}; use another --out")  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    record.update(budget=budget, concurrency=args.concurrency, best_quality=best)
    arms = record.setdefault("arms", {})

    def save() -> None:
        write_json(path, record)

    searcher, scheduler = args.variant.split("+")
    arm = arms.setdefault(args.variant, {"live": {}})
    arm["replay"] = replay_quantiles(cfg, table, args.variant, args.concurrency, budget,
                                     args.replay_seeds)  # fmt: skip
    for seed in args.seeds:
        trials = max(1, arm["replay"]["trials"][seed] if seed < args.replay_seeds else
                     math.ceil(budget / cfg.pruning.epochs))  # fmt: skip
        run_dir = run_or_resume(args.config, args.out, f"live-{args.variant}-seed{seed}",
                            [f"search.searcher={searcher}", f"search.scheduler={scheduler}",
                             f"search.seed={seed}", f"pruning.seed={args.training_seed}",
                             f"search.num_samples={trials}",
                             f"search.max_concurrent_trials={args.concurrency}"])  # fmt: skip
        arm["live"][str(seed)] = score(table, run_dir, budget, best)
        save()
    if args.grid_runs:
        grid = arms.setdefault(GRID, {"live": {}})
        grid["replay"] = replay_quantiles(cfg, table, GRID, args.concurrency, budget,
                                          args.replay_seeds)  # fmt: skip
        for run_dir in args.grid_runs:
            grid["live"][run_dir.name] = score(table, run_dir, budget, best)
    save()
    return record


def markdown(record: dict[str, Any]) -> str:
    lines = [f"Budget {record['budget']} trial-epochs at concurrency {record['concurrency']}; "
             f"the table's best true quality {record['best_quality']:.2f}.", "",
             "| arm | live runs: realised regret | replay: median regret (IQR) | live inside "
             "the IQR |",
             "|---|---|---|---|"]  # fmt: skip
    for name, arm in record["arms"].items():
        r = arm["replay"]
        regrets = [v["realised_regret"] for v in arm["live"].values()]
        inside = sum(r["q25"] <= x <= r["q75"] for x in regrets)
        lines.append(f"| {name} | {', '.join(f'{x:.2f}' for x in regrets)} | {r['median']:.2f} "
                     f"({r['q25']:.2f}-{r['q75']:.2f}) | {inside} of {len(regrets)} |")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--table", nargs="+", required=True)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--variant", required=True)
    parser.add_argument("--budget", type=int)
    parser.add_argument("--regret", type=Path)
    parser.add_argument("--within", type=float, default=0.5)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--training-seed", type=int, default=2)
    parser.add_argument("--replay-seeds", type=int, default=20)
    parser.add_argument("--grid-runs", type=Path, nargs="*", default=[])
    args = parser.parse_args()
    if (args.budget is None) == (args.regret is None):
        parser.error("give one of --budget and --regret")
    if args.budget is not None and args.budget < 1:
        parser.error(f"--budget must be at least 1, got {args.budget}")
    if args.variant.partition("+")[0] in ("", "grid"):
        parser.error(f"--variant {args.variant!r}: an Optuna SEARCHER+SCHEDULER; the grid's "
                     "live runs are --grid-runs")  # fmt: skip
    record = run(args)
    text = markdown(record)
    (args.out / "live.md").write_text(text + "\n")
    print(text)
    print(f"wrote {args.out / 'live.json'}, {args.out / 'live.md'}")


if __name__ == "__main__":
    main()
