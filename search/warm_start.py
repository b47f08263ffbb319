"""`search.warm_start`: seed a new sweep's study with the finished trials of earlier sweeps.

Each finished trial of an earlier sweep (the same budget, another budget, another dataset) is
mapped into the new space by its sparsities: at a budget the new sweep searches, its allocation
as it was; at a lower one, every group's pruned fraction scaled by s_new / s_old (the shares of
pruned weights stay the earlier trial's), at a higher one every group's kept fraction by
(1 - s_new) / (1 - s_old) (the shares of kept weights stay); eq. 10 holds exactly either way.
What then leaves the feasible intervals is clamped into them (the note says how many).
`search.warm_start_as` says how the study takes it:

- `trials`: as a completed trial with the earlier sweep's metric values (no re-run). The
  values are taken as comparable: right for the same data at the same budget, a ranking prior
  otherwise. These trials are rows of trials.parquet with status `warm_start`.
- `enqueue`: its allocation is evaluated first by the new sweep (a re-run: for values that are
  not comparable). Those trials' rows name the earlier trial in the `warm_start` column.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import pandas as pd

from pruning.budget import feasible_interval
from search.config import RunConfig, load_config
from search.space import allocation, distributions, unit_coordinates
from vqa.errors import InputError

WARM_FILE = "warm_start.parquet"
WARM_STATUS = "warm_start"
SOURCE_ATTR = "warm_start"
"""User attribute (and trials.parquet column): the earlier trial, `<run dir>#<trial_id>`."""


@dataclass(frozen=True)
class WarmPoint:
    """One earlier trial, mapped into the new sweep's space."""

    source: str
    params: dict[str, Any]
    allocation: dict[str, float]
    values: list[float] | None
    row: dict[str, Any] = field(repr=False)


def read_source(run_dir: Path) -> tuple[RunConfig, pd.DataFrame]:
    """An earlier sweep's saved config and its trials that ran to their last epoch; an
    `InputError` naming `search.warm_start` when `run_dir` is not a sweep with trials.parquet.
    Imports no Ray (the dry run calls it)."""
    path = run_dir / "tickets.yaml"
    if not path.is_file():
        raise InputError(f"search.warm_start: {run_dir} is not a sweep run directory (no "
                         "tickets.yaml)")  # fmt: skip
    cfg = load_config(path)
    path = run_dir / "trials.parquet"
    if not path.is_file():
        raise InputError(f"search.warm_start: {run_dir} has no trials.parquet (no trial finished)")
    try:
        trials = pd.read_parquet(path)
    except (OSError, ValueError) as e:
        raise InputError(f"search.warm_start: {path}: not a readable Parquet file ({e})") from None
    keep = trials["status"] == "finished"
    if "early_stopped" in trials:
        keep &= ~trials["early_stopped"].fillna(False).astype(bool)
    if "confirm_of" in trials:  # its confirmation runs repeat allocations it searched
        keep &= trials["confirm_of"].isna()
    return cfg, trials[keep.fillna(False).to_numpy(dtype=bool)].reset_index(drop=True)


def _nested(block: Mapping[str, Any], dotted: str) -> Any:
    node: Any = block
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _in(spec: Mapping[str, Any], value: Any) -> bool:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    if spec["type"] == "choice":
        return value in spec["values"]
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False
    if spec["type"] == "int" and float(value) != int(value):
        return False
    return spec["low"] <= value <= spec["high"]


def _clamp(value: float, lo: float, hi: float) -> float:
    return min(hi, max(lo, value))


def map_allocation(
    row: Mapping[str, Any], budgets: Sequence[float], sizes: Mapping[str, int],
    bounds: tuple[float, float],
) -> tuple[float, dict[str, float], bool]:  # fmt: skip
    """(the new budget, the unit coordinates, whether clamping changed the scaled allocation)
    of an earlier trial: its own budget if searched, else the nearest, with the fraction that
    shrinks scaled (see the module)."""
    s_old = float(row["s_overall"])
    same = [b for b in budgets if math.isclose(b, s_old, abs_tol=1e-9)]
    target = same[0] if same else min(budgets, key=lambda b: (abs(b - s_old), b))
    old = {g: float(row[f"s_{g}"]) for g in ("language", "visual")}
    if same:
        scaled = old
    elif target < s_old:  # the pruned fractions shrink, each by s_new / s_old
        scaled = {g: v * target / s_old for g, v in old.items()}
    else:  # the kept fractions shrink, each by (1 - s_new) / (1 - s_old)
        scaled = {g: 1 - (1 - v) * (1 - target) / (1 - s_old) for g, v in old.items()}
    language = _clamp(scaled["language"], *feasible_interval(target, sizes, "language",
                                                             bounds=bounds))  # fmt: skip
    lo, hi = feasible_interval(target, sizes, "visual", fixed={"language": language},
                              bounds=bounds)  # fmt: skip
    visual = _clamp(scaled["visual"], lo, hi)
    clamped = abs(language - scaled["language"]) > 1e-9 or abs(visual - scaled["visual"]) > 1e-9
    return target, unit_coordinates(target, sizes, language, visual, bounds), clamped


def _told(
    metric: str,
    row: Mapping[str, Any],
    triple: Mapping[str, float],
    sizes: Mapping[str, int],
    target: float,
) -> float:
    """The value a completed warm-start trial is told for `metric`: the earlier trial's, except
    for what follows from the allocation (weights kept, realised sparsities), computed for the
    mapped one."""
    groups = ("language", "visual", "cross")
    if metric == "remaining_params":
        return float(round(sum((1 - triple[g]) * sizes[g] for g in groups)))
    if metric == "realised_overall":
        return float(target)
    if metric.startswith("realised_") and metric.removeprefix("realised_") in groups:
        return float(triple[metric.removeprefix("realised_")])
    return float(row[metric])


def _rank_key(search_metric: str, search_mode: str, source_cfg: RunConfig):
    """Sort key of an earlier trial's row: by this sweep's first metric, or where the earlier
    sweep lacks it (another dataset), by that sweep's own first metric."""
    own_metric, own_mode = source_cfg.search.metrics[0], source_cfg.search.modes[0]

    def key(row: Mapping[str, Any]) -> float:
        for metric, mode in ((search_metric, search_mode), (own_metric, own_mode)):
            value = row.get(metric)
            if isinstance(value, int | float) and math.isfinite(value):
                return -float(value) if mode == "max" else float(value)
        return math.inf

    return key


def warm_points(cfg: RunConfig, sizes: Mapping[str, int],
                budgets: Sequence[float]) -> tuple[list[WarmPoint], list[str]]:  # fmt: skip
    """The earlier sweeps' finished trials of `search.warm_start`, mapped (best first, at most
    `search.warm_start_top`), and the lines that say what was taken and how."""
    from search.remote import local_run_dir  # Ray: only when a sweep starts

    search = cfg.search
    bounds = (float(cfg.pruning.bounds[0]), float(cfg.pruning.bounds[1]))
    hps = {k: v.model_dump() for k, v in search.hyperparameters.items()}
    as_trials = search.warm_start_as == "trials"
    points: list[tuple[float, WarmPoint]] = []
    notes: list[str] = []
    for text in search.warm_start:
        run_dir = local_run_dir(text)  # a URI's run files are fetched
        source_cfg, trials = read_source(run_dir)
        if as_trials:
            derived = ("remaining_params", "realised_")
            missing = [m for m in search.metrics
                       if m not in trials.columns and not m.startswith(derived)]  # fmt: skip
            if missing:
                raise InputError(f"search.warm_start: {run_dir}/trials.parquet has no column "
                                 f"{missing[0]!r} (this sweep's metric)")  # fmt: skip
        source_pruning = source_cfg.pruning.model_dump(mode="json") if source_cfg.pruning else {}
        rank = _rank_key(search.metrics[0], search.modes[0], source_cfg)
        skipped = clamped = 0
        for row in trials.to_dict("records"):
            params: dict[str, Any] = {}
            for name, spec in hps.items():
                value = row.get(f"hp_{name}")
                if value is None or (isinstance(value, float) and math.isnan(value)):
                    value = _nested(source_pruning, name)
                if not _in(spec, value):
                    break
                params[name] = int(value) if spec["type"] == "int" else value
            else:
                target, units, was_clamped = map_allocation(row, budgets, sizes, bounds)
                triple = allocation(target, sizes, units["u_language"], units["u_visual"],
                                    bounds)  # fmt: skip
                values = None
                if as_trials:
                    values = [_told(m, row, triple, sizes, target) for m in search.metrics]
                    if not all(math.isfinite(v) for v in values):
                        skipped += 1
                        continue
                clamped += was_clamped
                params.update(units)
                if len(budgets) > 1:
                    params["sparsity"] = target
                source = f"{run_dir.resolve()}#{row['trial_id']}"
                point = WarmPoint(source, params, {"sparsity": target, **triple}, values, row)
                points.append((rank(row), point))
                continue
            skipped += 1
        used = len(trials) - skipped
        what = "completed trials" if as_trials else "points to evaluate first"
        source_budgets = sorted({round(float(s), 6) for s in trials["s_overall"].dropna()})
        notes.append(f"warm start: {used} finished trials of {run_dir} (dataset "
                     f"{source_cfg.data.dataset}, s {source_budgets}) as {what}"
                     + (f"; {clamped} clamped into the feasible region" if clamped else "")
                     + (f"; {skipped} skipped (a hyperparameter outside this sweep's range "
                        "or a missing value)" if skipped else ""))  # fmt: skip
        other = [b for b in source_budgets if not any(math.isclose(b, t) for t in budgets)]
        if as_trials and (other or source_cfg.data.dataset != cfg.data.dataset):
            notes.append(
                "warm start: values measured at another budget or on another dataset are told as "
                "this sweep's (search.warm_start_as: trials); across budgets that was slower "
                "than a cold start on the synthetic benchmark (docs/BENCHMARKS.md)"
            )
    points.sort(key=lambda item: item[0])
    chosen = [p for _, p in points]
    if search.warm_start_top is not None:
        chosen = chosen[: search.warm_start_top]
    return chosen, notes


def seed_study(
    study: optuna.Study, points: Sequence[WarmPoint], how: str, budgets: Sequence[float],
    hyperparameters: Mapping[str, Any],
) -> list[int]:  # fmt: skip
    """Add `points` to a new study (`trials`) or enqueue them (`enqueue`); their numbers."""
    dists = distributions(budgets, hyperparameters)
    numbers = []
    for p in points:
        attrs = {SOURCE_ATTR: p.source, **{f"s_{k}" if k != "sparsity" else "s_overall": v
                                            for k, v in p.allocation.items()}}  # fmt: skip
        if how == "trials":
            attrs["source_s_overall"] = float(p.row["s_overall"])
            study.add_trial(
                optuna.trial.create_trial(
                    params=p.params, distributions=dists, values=p.values, user_attrs=attrs
                )
            )
        else:
            study.enqueue_trial(p.params, user_attrs=attrs)
        numbers.append(study.get_trials(deepcopy=False)[-1].number)
    return numbers


def warm_rows(points: Sequence[WarmPoint], numbers: Sequence[int], sweep: str,
              keep: Sequence[str]) -> pd.DataFrame:  # fmt: skip
    """The rows trials.parquet shows for warm-start trials added as completed trials: the
    earlier trial's row as it was measured (only the columns `keep`, those every row of this
    sweep has, and its metrics), status `warm_start`, this study's `number`."""
    rows = []
    for p, number in zip(points, numbers, strict=True):
        row = {k: v for k, v in p.row.items() if k in keep}
        rows.append({**row, "trial_id": f"{p.row.get('sweep') or 'warm'}:{p.row['trial_id']}",
                     "sweep": sweep, "number": number, "status": WARM_STATUS,
                     SOURCE_ATTR: p.source})  # fmt: skip
    return pd.DataFrame(rows)
