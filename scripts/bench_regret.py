"""Search efficiency as a user judges it (issue 13): the regret of what each searcher recommends,
replayed against a reference table instead of trained.

    .venv/bin/python scripts/bench_regret.py --table REF.parquet [RUN_DIR ...] --config CONFIG \
        --out docs/search_regret [--seeds 20] [--concurrency 2 8] [--variants grid+fifo tpe+asha]

`--table`: Parquet files in `search.replay.ReferenceTable`'s row format, or lattice sweeps' run
directories (`scripts/bench_lattice.py` writes both). `--config`: the run config whose `search:`
and `pruning:` blocks each variant starts from (a lattice sweep's `tickets.yaml` will do); its
`pruning.checkpoint` gives the model's group sizes unless `--sizes` does.

1. The grid (C.4, `search.searcher: grid`, FIFO) is replayed once per seed at each concurrency,
   to its end; the median of its trial-epochs is the grid's full cost C.
2. Every variant (searcher + scheduler) is replayed `--seeds` times at each concurrency, the
   seed seeding both the searcher and the noise (one training seed's deviation per trial),
   each to C trial-epochs. After every trial-epoch the sweep recommends its best finished
   trial by selection (`search.replay.ReplayEvent`); its regret is the table's best true
   quality minus the recommendation's true quality (points; none before a trial finished).
   A variant `SEARCHER+SCHEDULER+confirmKxN` adds `search.confirm: {top: K, seeds: N}` with
   C / epochs - K x N search trials, so that search and re-runs fit in C under FIFO; once a
   re-run has finished it recommends the confirmed allocation of best seed mean.
3. Written to OUT.json as each replay ends (a re-run skips what is there), then OUT.png
   (median regret against trial-epochs, the interquartile band, one line per variant, C
   marked; one panel per concurrency) and OUT.md: per variant the trial-epochs until the
   median regret is <= `--within` points, as a share of C, and the median regret at C.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from search.config import load_config
from search.replay import ReferenceTable, replay
from search.schema import ConfirmConfig
from vqa.atomic import write_json

SEARCHERS = ("grid", "random", "tpe", "gp")
SCHEDULERS = ("fifo", "asha")
GRID = "grid+fifo"
CONFIRM = re.compile(r"confirm[1-9][0-9]*x[1-9][0-9]*")


def variant_config(cfg: Any, variant: str, trials: int | None) -> Any:
    """`cfg` with `variant`'s searcher and scheduler and (Optuna) `trials` as num_samples.
    A `+confirmKxN` suffix sets `search.confirm` to the top K re-run with N seeds each."""
    searcher, scheduler, *confirm = variant.split("+")
    update: dict[str, Any] = {"searcher": searcher, "scheduler": scheduler, "confirm": None}
    if confirm:
        top, seeds = confirm[0].removeprefix("confirm").split("x")
        update["confirm"] = ConfirmConfig(top=int(top), seeds=int(seeds))
    if searcher != "grid" and trials is not None:
        update["num_samples"] = trials
    return cfg.model_copy(update={"search": cfg.search.model_copy(update=update)})


def refuse(message: str) -> NoReturn:
    """Bad input: one line on stderr, exit code 2."""
    print(message, file=sys.stderr)
    sys.exit(2)


def valid_variant(variant: str) -> bool:
    """SEARCHER+SCHEDULER, or an Optuna one +confirmKxN."""
    parts = variant.split("+")
    if len(parts) not in (2, 3) or parts[0] not in SEARCHERS or parts[1] not in SCHEDULERS:
        return False
    return len(parts) == 2 or (parts[0] != "grid" and CONFIRM.fullmatch(parts[2]) is not None)


def confirmed_trials(cfg: Any, variant: str, cost: int) -> int:
    """Search trials of a `+confirmKxN` variant that leave room, within `cost` trial-epochs of
    full-length trials, for its K x N re-runs."""
    top, seeds = variant.split("+")[2].removeprefix("confirm").split("x")
    return max(1, cost // cfg.pruning.epochs - int(top) * int(seeds))


def regret_curve(events: list[Any], cost: int) -> list[float]:
    """Regret after each trial-epoch 1..`cost` (the last event's regret at or before it; NaN
    before the first recommendation, the last value held after the replay ended)."""
    out, value, i = [], math.nan, 0
    for spent in range(1, cost + 1):
        while i < len(events) and events[i].trial_epochs <= spent:
            value = events[i].regret
            i += 1
        out.append(float(value))
    return out


def quantiles(curves: list[list[float]]) -> np.ndarray:
    """(3, cost): the 25th, 50th and 75th percentile over seeds; a curve with no
    recommendation yet counts as infinite regret there."""
    values = np.array(curves, dtype=float)
    values = np.where(np.isnan(values), np.inf, values)
    with np.errstate(invalid="ignore"):  # inf - inf between two curves without one: NaN, not drawn
        return np.percentile(values, [25, 50, 75], axis=0)


def reached(median: np.ndarray, within: float) -> int | None:
    """The first trial-epoch count at which the median regret is <= `within`, or None."""
    hits = np.nonzero(median <= within)[0]
    return int(hits[0]) + 1 if len(hits) else None


def run(args: argparse.Namespace) -> dict[str, Any]:
    table = ReferenceTable.load(*args.table)
    cfg = load_config(args.config)
    sizes = dict(zip(("language", "visual", "cross"), args.sizes, strict=True)) if args.sizes \
        else None  # fmt: skip
    path = Path(f"{args.out}.json")
    record: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    record.setdefault("runs", {})

    def save() -> None:
        write_json(path, record)

    for concurrency in args.concurrency:
        key = f"c{concurrency}"
        grid_runs = record["runs"].setdefault(f"{GRID}/{key}", {})
        for seed in range(args.seeds):
            if str(seed) not in grid_runs:
                events = replay(variant_config(cfg, GRID, None), table, concurrency=concurrency,
                                seed=seed, sizes=sizes)  # fmt: skip
                grid_runs[str(seed)] = {
                    "cost": events[-1].trial_epochs,
                    "curve": regret_curve(events, events[-1].trial_epochs),
                }
                save()
        cost = int(np.median([r["cost"] for r in grid_runs.values()]))
        record.setdefault("grid_cost", {})[key] = cost
        for variant in args.variants:
            if variant == GRID:
                continue
            runs = record["runs"].setdefault(f"{variant}/{key}", {})
            for seed in range(args.seeds):
                if str(seed) in runs:
                    continue
                confirm = variant.count("+") == 2
                trials = confirmed_trials(cfg, variant, cost) if confirm else cost
                events = replay(variant_config(cfg, variant, trials), table,
                                concurrency=concurrency, seed=seed, sizes=sizes,
                                max_trial_epochs=cost)  # fmt: skip
                runs[str(seed)] = {
                    "cost": events[-1].trial_epochs,
                    "curve": regret_curve(events, cost),
                }
                print(f"{variant} at concurrency {concurrency}, seed {seed}: regret at C "
                      f"{runs[str(seed)]['curve'][-1]:.2f}", flush=True)  # fmt: skip
                save()
    record["best_quality"] = table.best_quality()
    save()
    return record


def padded(runs: dict[str, Any], cost: int) -> list[list[float]]:
    """Each run's curve cut or extended (its last value held) to `cost` trial-epochs."""
    return [r["curve"][:cost] + [r["curve"][-1]] * (cost - len(r["curve"])) for r in runs.values()]


def summary(record: dict[str, Any], within: float) -> list[dict[str, Any]]:
    """One row per variant and concurrency: share of C until the median regret <= `within`,
    and the median (IQR) regret at C."""
    rows = []
    for name, runs in record["runs"].items():
        variant, key = name.split("/")
        cost = record["grid_cost"][key]
        q = quantiles(padded(runs, cost))
        hit = reached(q[1], within)
        rows.append({"variant": variant, "concurrency": int(key[1:]), "seeds": len(runs),
                     "grid_cost": cost, "reached": hit,
                     "share": None if hit is None else hit / cost,
                     "regret_at_cost": [float(v) for v in q[:, -1]]})  # fmt: skip
    return rows


def markdown(rows: list[dict[str, Any]], within: float) -> str:
    header = (f"| variant | concurrency | seeds | trial-epochs to median regret <= {within} "
              "(share of the grid's C) | median regret at C (IQR) |")  # fmt: skip
    return "\n".join([header, *table_rows(rows)])


def table_rows(rows: list[dict[str, Any]]) -> list[str]:
    """The separator and one markdown row per summary row, by concurrency, then variant."""
    lines = ["|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["concurrency"], r["variant"])):
        hit = "not within C" if r["reached"] is None else (
            f"{r['reached']} ({100 * r['share']:.0f}% of {r['grid_cost']})")  # fmt: skip
        lo, mid, hi = r["regret_at_cost"]
        lines.append(f"| {r['variant']} | {r['concurrency']} | {r['seeds']} | {hit} | "
                     f"{mid:.2f} ({lo:.2f}-{hi:.2f}) |")  # fmt: skip
    return lines


def figure(record: dict[str, Any], out: Path, within: float, *, grid: str = GRID,
           ylabel: str = "regret of the recommendation (points)",
           title: str = "concurrency {c}: median and interquartile range",
           cost_label: str = " grid's full cost") -> None:  # fmt: skip
    """Median regret and its interquartile band against trial-epochs, one line per variant
    (`grid` drawn thicker), one panel per concurrency (`title` formats `c`), C marked, the
    target `within` dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted(record["grid_cost"], key=lambda k: int(k[1:]))
    fig, axes = plt.subplots(1, len(keys), figsize=(6 * len(keys), 4.2), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        cost = record["grid_cost"][key]
        for name, runs in sorted(record["runs"].items()):
            variant, at = name.split("/")
            if at != key:
                continue
            q = quantiles(padded(runs, cost))
            x = np.arange(1, cost + 1)
            finite = np.isfinite(q[1])
            (line,) = ax.plot(x[finite], q[1][finite], label=variant,
                              lw=2.2 if variant == grid else 1.4)  # fmt: skip
            band = np.isfinite(q[0]) & np.isfinite(q[2])
            ax.fill_between(x[band], q[0][band], q[2][band], color=line.get_color(), alpha=0.15)
        ax.axvline(cost, color="k", ls=":", lw=1)
        ax.text(cost, ax.get_ylim()[1], cost_label, va="top", ha="right", fontsize=8)
        ax.axhline(within, color="grey", ls="--", lw=0.8)
        ax.set_xlabel("trial-epochs spent")
        ax.set_ylabel(ylabel)
        ax.set_title(title.format(c=key[1:]))
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--table", nargs="+", required=True)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="path prefix of .json/.png/.md")
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[2, 8])
    parser.add_argument("--variants", nargs="+",
                        default=[f"{a}+{b}" for a in SEARCHERS for b in SCHEDULERS])  # fmt: skip
    parser.add_argument("--sizes", type=int, nargs=3, metavar=("L", "V", "X"))
    parser.add_argument("--within", type=float, default=0.5)
    args = parser.parse_args()
    for v in args.variants:
        if not valid_variant(v):
            parser.error(f"--variants: {v!r} is not SEARCHER+SCHEDULER ({', '.join(SEARCHERS)} + "
                         f"{', '.join(SCHEDULERS)}), optionally +confirmKxN "
                         "(not the grid)")  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    record = run(args)
    rows = summary(record, args.within)
    text = markdown(rows, args.within)
    Path(f"{args.out}.md").write_text(text + "\n")
    figure(record, Path(f"{args.out}.png"), args.within)
    print(text)
    print(f"wrote {args.out}.json, {args.out}.png, {args.out}.md")


if __name__ == "__main__":
    main()
