"""Multi-budget search (issue 13, item 7): one sweep over several budgets against one grid per
budget, scored by the hypervolume of what each recommends, replayed against a reference table.

    .venv/bin/python scripts/bench_front.py --table REF.parquet [RUN_DIR ...] --config CONFIG \
        --out docs/search_front [--budgets 0.5 0.7 0.9] [--seeds 20] [--concurrency 2 8] \
        [--variants tpe+fifo nsga2+fifo]

`--table` holds a lattice at every budget (`scripts/bench_lattice.py --budgets 0.5 0.7 0.9`);
`--config` is the run config each replay starts from, as for `scripts/bench_regret.py`.

* The grid arm: the C.4 grid (`search.searcher: grid`, FIFO) of each budget in turn, each to its
  end, the next starting where the last ended; after B trial-epochs it recommends, per budget
  whose grid has finished a trial, that grid's best by selection. Its median total cost over
  the seeds is C.
* A multi-budget variant: one sweep over `--budgets` with the objectives (`sel_overall` max,
  `remaining_params` min), replayed to C trial-epochs; after B it recommends the Pareto front
  of its finished trials (`search.replay.ReplayEvent.front`).
* The score after B: the hypervolume (`search.analysis.hypervolume`) of the recommendations'
  (true quality, share of weights kept) points above the lattice's worst true quality, in
  accuracy points × share of weights; its regret is the lattice's own front's hypervolume
  (every lattice point) minus it.

Written: OUT.json as each replay ends (a re-run skips what is there), OUT.png (median
hypervolume regret against trial-epochs with the interquartile band, one panel per
concurrency, C marked) and OUT.md: per variant the trial-epochs until the median regret is at
most `--within` of the lattice's hypervolume, as a share of C, and the regret at C.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_regret import figure as regret_figure  # noqa: E402
from bench_regret import (
    refuse,  # noqa: E402
    table_rows,  # noqa: E402
)
from bench_regret import summary as regret_summary  # noqa: E402

from search.analysis.hypervolume import allocation_points, hypervolume  # noqa: E402
from search.config import load_config  # noqa: E402
from search.replay import ReferenceTable, replay  # noqa: E402
from vqa.atomic import write_json  # noqa: E402

GRID = "grid-per-budget"
SEARCHERS = ("tpe", "nsga2", "random")
SCHEDULERS = ("fifo", "asha")
OBJECTIVES = {"metric": ["sel_overall", "remaining_params"], "mode": ["max", "min"]}


def _with(cfg: Any, search: dict[str, Any], sparsity: float) -> Any:
    pruning = cfg.pruning.model_copy(update={"sparsity": sparsity})
    return cfg.model_copy(update={"search": cfg.search.model_copy(update=search),
                                  "pruning": pruning})  # fmt: skip


def grid_config(cfg: Any, budget: float) -> Any:
    """`cfg` as one budget's C.4 grid: single objective, FIFO, no confirmation."""
    search = {"searcher": "grid", "scheduler": "fifo", "budgets": [budget], "metric": "sel_overall",
              "mode": "max", "confirm": None}  # fmt: skip
    return _with(cfg, search, budget)


def front_config(cfg: Any, variant: str, budgets: list[float], trials: int) -> Any:
    """`cfg` as one multi-budget sweep of `variant` (SEARCHER+SCHEDULER) on the two objectives."""
    searcher, scheduler = variant.split("+")
    search = {"searcher": searcher, "scheduler": scheduler, "budgets": list(budgets),
              "num_samples": trials, "confirm": None, **OBJECTIVES}  # fmt: skip
    return _with(cfg, search, budgets[0])


def grid_arm(cfg: Any, table: ReferenceTable, budgets: list[float], concurrency: int, seed: int,
             sizes: dict[str, int] | None) -> tuple[int, list[list[dict[str, float]]]]:  # fmt: skip
    """(total cost, the recommendations after each trial-epoch 1..cost) of the grids run one
    budget after another."""
    steps: list[list[dict[str, float]]] = []
    chosen: list[dict[str, float]] = []
    for budget in budgets:
        events = replay(grid_config(cfg, budget), table, concurrency=concurrency, seed=seed,
                        sizes=sizes)  # fmt: skip
        for event in events:
            now = [*chosen, event.recommended] if event.recommended else list(chosen)
            steps.append(now)
        if events and events[-1].recommended:
            chosen.append(events[-1].recommended)
    return len(steps), steps


def regret_curve(steps: list[list[dict[str, float]]], table: ReferenceTable, reference: float,
                 best: float, cost: int) -> list[float]:  # fmt: skip
    """Hypervolume regret after each trial-epoch 1..`cost`, the last held after the end."""
    cache: dict[tuple, float] = {}
    out = []
    for spent in range(cost):
        recs = steps[min(spent, len(steps) - 1)] if steps else []
        key = tuple(sorted(tuple(sorted(a.items())) for a in recs))
        if key not in cache:
            cache[key] = best - hypervolume(allocation_points(table, recs), reference)
        out.append(cache[key])
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    table = ReferenceTable.load(*args.table)
    missing = [b for b in args.budgets if round(b, 6) not in [round(x, 6) for x in table.budgets]]
    if missing:
        refuse(f"--table: no lattice at budget(s) {missing} (has {table.budgets})")
    cfg = load_config(args.config)
    sizes = dict(zip(("language", "visual", "cross"), args.sizes, strict=True)) if args.sizes \
        else None  # fmt: skip
    lattice = table.points()
    lattice = lattice[lattice["s_overall"].round(6).isin([round(b, 6) for b in args.budgets])]
    reference = float(lattice["true_quality"].min())
    points = zip(lattice["true_quality"], 1.0 - lattice["s_overall"], strict=True)
    best = hypervolume(points, reference)
    path = Path(f"{args.out}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    record.update(budgets=args.budgets, reference_quality=reference, best_hypervolume=best)
    record.setdefault("runs", {})

    def save() -> None:
        write_json(path, record)

    for concurrency in args.concurrency:
        key = f"c{concurrency}"
        grid_runs = record["runs"].setdefault(f"{GRID}/{key}", {})
        for seed in range(args.seeds):
            if str(seed) not in grid_runs:
                cost, steps = grid_arm(cfg, table, args.budgets, concurrency, seed, sizes)
                curve = regret_curve(steps, table, reference, best, cost)
                grid_runs[str(seed)] = {"cost": cost, "curve": curve}
                save()
        cost = int(np.median([r["cost"] for r in grid_runs.values()]))
        record.setdefault("grid_cost", {})[key] = cost
        for variant in args.variants:
            runs = record["runs"].setdefault(f"{variant}/{key}", {})
            for seed in range(args.seeds):
                if str(seed) in runs:
                    continue
                events = replay(front_config(cfg, variant, args.budgets, cost), table,
                                concurrency=concurrency, seed=seed, sizes=sizes,
                                max_trial_epochs=cost)  # fmt: skip
                steps = [list(e.front) for e in events]
                curve = regret_curve(steps, table, reference, best, cost)
                runs[str(seed)] = {"cost": events[-1].trial_epochs, "curve": curve}
                print(f"{variant} at concurrency {concurrency}, seed {seed}: hypervolume regret "
                      f"at C {curve[-1]:.2f} of {best:.2f}", flush=True)  # fmt: skip
                save()
    save()
    return record


def summary(record: dict[str, Any], within: float) -> list[dict[str, Any]]:
    """Per variant and concurrency: share of C until the median regret <= `within` x the
    lattice's hypervolume, and the median (IQR) regret at C."""
    return regret_summary(record, within * record["best_hypervolume"])


def markdown(rows: list[dict[str, Any]], record: dict[str, Any], within: float) -> str:
    best = record["best_hypervolume"]
    lines = [f"Lattice hypervolume {best:.2f} (accuracy points x share of weights kept, above "
             f"{record['reference_quality']:.1f}%); budgets {record['budgets']}.", "",
             f"| variant | concurrency | seeds | trial-epochs to median regret <= {within:.0%} of "
             "it (share of the grids' C) | median regret at C (IQR) |"]  # fmt: skip
    return "\n".join([*lines, *table_rows(rows)])


def figure(record: dict[str, Any], out: Path, within: float) -> None:
    regret_figure(record, out, within * record["best_hypervolume"], grid=GRID,
                  ylabel="hypervolume regret (points x share of weights)",
                  title=f"budgets {record['budgets']}, concurrency {{c}}",
                  cost_label=" the grids' full cost")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--table", nargs="+", required=True)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="path prefix of .json/.png/.md")
    parser.add_argument("--budgets", type=float, nargs="+", default=[0.5, 0.7, 0.9])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[2, 8])
    parser.add_argument("--variants", nargs="+", default=["tpe+fifo", "nsga2+fifo"])
    parser.add_argument("--sizes", type=int, nargs=3, metavar=("L", "V", "X"))
    parser.add_argument("--within", type=float, default=0.05,
                        help="target: median regret at most this share of the lattice's "
                        "hypervolume")  # fmt: skip
    args = parser.parse_args()
    for v in args.variants:
        searcher, _, scheduler = v.partition("+")
        if searcher not in SEARCHERS or scheduler not in SCHEDULERS:
            parser.error(f"--variants: {v!r} is not SEARCHER+SCHEDULER ({', '.join(SEARCHERS)} "
                         f"+ {', '.join(SCHEDULERS)})")  # fmt: skip
    record = run(args)
    rows = summary(record, args.within)
    text = markdown(rows, record, args.within)
    Path(f"{args.out}.md").write_text(text + "\n")
    figure(record, Path(f"{args.out}.png"), args.within)
    print(text)
    print(f"wrote {args.out}.json, {args.out}.png, {args.out}.md")


if __name__ == "__main__":
    main()
