"""The search space: define-by-run over unit variables mapped onto the feasible region (§6, §8).

Optuna's multivariate TPE drops from its joint model any parameter whose bounds change between
trials, and the feasible interval of s_L depends on s. So the sampler only ever sees fixed unit
variables `u_language`, `u_visual` in [0, 1] (and `sparsity` among the budgets when there are
several); :func:`allocation_space` maps them onto the allocation and returns the sparsities as
derived values. Every proposal meets eq. 10 by construction.

The space is a module-level function bound with :func:`functools.partial` (plain data only), so
Ray can pickle the searcher that holds it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pruning.budget import feasible_interval, solve


def _onto(u: float, lo: float, hi: float) -> float:
    # Clamped: lo + u*(hi - lo) can leave [lo, hi] by one rounding step.
    return min(hi, max(lo, lo + u * (hi - lo)))


def allocation(
    s: float, sizes: Mapping[str, int], u_language: float, u_visual: float,
    bounds: tuple[float, float],
) -> dict[str, float]:  # fmt: skip
    """The triple for unit coordinates: s_L at `u_language` of its feasible interval, s_R at
    `u_visual` of the interval left by s_L, s_X solved by eq. 10."""
    lo, hi = feasible_interval(s, sizes, "language", bounds=bounds)
    language = _onto(u_language, lo, hi)
    lo, hi = feasible_interval(s, sizes, "visual", fixed={"language": language}, bounds=bounds)
    visual = _onto(u_visual, lo, hi)
    return solve(s, sizes, language=language, visual=visual, bounds=bounds)


def unit_coordinates(
    s: float, sizes: Mapping[str, int], language: float, visual: float,
    bounds: tuple[float, float],
) -> dict[str, float]:  # fmt: skip
    """The inverse of :func:`allocation` for a feasible (language, visual) at budget s."""
    lo, hi = feasible_interval(s, sizes, "language", bounds=bounds)
    u_language = 0.5 if hi == lo else (language - lo) / (hi - lo)
    lo, hi = feasible_interval(s, sizes, "visual", fixed={"language": language}, bounds=bounds)
    u_visual = 0.5 if hi == lo else (visual - lo) / (hi - lo)
    return {"u_language": min(1.0, max(0.0, u_language)), "u_visual": min(1.0, max(0.0, u_visual))}


def suggest_hyperparameter(trial: Any, name: str, spec: Mapping[str, Any]) -> Any:
    """One declared hyperparameter: `{type: loguniform|uniform|int|choice, low, high, values}`."""
    kind = spec["type"]
    if kind == "loguniform":
        return trial.suggest_float(name, spec["low"], spec["high"], log=True)
    if kind == "uniform":
        return trial.suggest_float(name, spec["low"], spec["high"])
    if kind == "int":
        return trial.suggest_int(name, int(spec["low"]), int(spec["high"]))
    if kind == "choice":
        return trial.suggest_categorical(name, list(spec["values"]))
    raise ValueError(f"unknown hyperparameter type {kind!r}")


def allocation_space(
    trial: Any,
    sizes: Mapping[str, int],
    budgets: Sequence[float],
    bounds: tuple[float, float],
    hyperparameters: Mapping[str, Mapping[str, Any]],
) -> dict[str, float]:
    """Define-by-run space for OptunaSearch: suggests the unit variables (and `sparsity` when
    there are several budgets) and the declared hyperparameters; returns the derived
    `sparsity`, `language`, `visual`, `cross` (fractions removed, eq. 10 exact)."""
    s = float(budgets[0]) if len(budgets) == 1 else trial.suggest_categorical("sparsity", budgets)
    u_language = trial.suggest_float("u_language", 0.0, 1.0)
    u_visual = trial.suggest_float("u_visual", 0.0, 1.0)
    for name, spec in hyperparameters.items():
        suggest_hyperparameter(trial, name, spec)
    triple = allocation(s, sizes, u_language, u_visual, bounds)
    return {"sparsity": float(s), **triple}


def startup_trials(n_hyperparameters: int, n_budgets: int) -> int:
    """Random trials before TPE or GP model the results: twice the space's dimensions (the two
    unit variables, each hyperparameter, the budget when there are several), and at least one
    more than the uniform points evaluated first. 4 for the allocation alone: on the synthetic
    benchmark Optuna's default of 10 spent the whole budget at random (docs/BENCHMARKS.md)."""
    dims = 2 + n_hyperparameters + (1 if n_budgets > 1 else 0)
    return max(2 * dims, n_budgets + 1)


def make_space(
    sizes: Mapping[str, int], budgets: Sequence[float], bounds: tuple[float, float],
    hyperparameters: Mapping[str, Mapping[str, Any]],
) -> Callable[[Any], dict[str, float]]:  # fmt: skip
    """:func:`allocation_space` bound to plain data (picklable, unlike a closure)."""
    return functools.partial(
        allocation_space,
        sizes=dict(sizes),
        budgets=[float(b) for b in budgets],
        bounds=(float(bounds[0]), float(bounds[1])),
        hyperparameters={k: dict(v) for k, v in hyperparameters.items()},
    )


def uniform_points(
    sizes: Mapping[str, int], budgets: Sequence[float], bounds: tuple[float, float]
) -> list[dict[str, float]]:
    """The uniform allocation (every group at s) of each budget, in the space's coordinates, for
    `points_to_evaluate`; budgets whose uniform allocation is outside `bounds` are skipped."""
    points = []
    for s in budgets:
        if not bounds[0] <= s <= bounds[1]:
            continue
        point = unit_coordinates(s, sizes, s, s, bounds)
        if len(budgets) > 1:
            point["sparsity"] = float(s)
        points.append(point)
    return points


def distributions(
    budgets: Sequence[float], hyperparameters: Mapping[str, Mapping[str, Any]]
) -> dict[str, Any]:
    """The Optuna distributions :func:`allocation_space` suggests from, by parameter name: what
    a trial added to the study from outside (a warm start, a grid point) must be given."""
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    out: dict[str, Any] = {}
    if len(budgets) > 1:
        out["sparsity"] = CategoricalDistribution([float(b) for b in budgets])
    out["u_language"] = FloatDistribution(0.0, 1.0)
    out["u_visual"] = FloatDistribution(0.0, 1.0)
    for name, spec in hyperparameters.items():
        kind = spec["type"]
        if kind in ("loguniform", "uniform"):
            out[name] = FloatDistribution(spec["low"], spec["high"], log=kind == "loguniform")
        elif kind == "int":
            out[name] = IntDistribution(int(spec["low"]), int(spec["high"]))
        else:
            out[name] = CategoricalDistribution(list(spec["values"]))
    return out
