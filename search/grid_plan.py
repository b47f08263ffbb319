"""The points of the paper's coarse-to-fine grid (appendix C.4), planned without Ray.

:class:`search.grid.GridSearcher` hands these points to Ray Tune; ``tickets search --dry-run``
prints them without importing Ray. See :mod:`search.grid` for the passes.

A plan's ``settings`` are plain JSON data (what the searcher saves): ``sizes``, ``budget``,
``bounds``, ``coarse_step``, ``fine_step`` (None: no fine pass), ``fine_radius``, ``coarse_values``
and ``extra``. A point is ``{"language", "visual", "cross"}`` with cross solved by eq. 10.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pruning.budget import solve

# Grid values are rounded to this many decimals, so 0.1 + 0.2 is 0.3 and equal points compare
# equal whichever way they were computed.
DECIMALS = 12
RESERVED = ("language", "visual", "cross", "sparsity", "grid_pass")


def c4_settings(budget: float) -> dict[str, Any]:
    """The C.4 grid for overall sparsity ``budget``, as keyword arguments of
    :class:`search.grid.GridSearcher` (or :func:`plan`).

    At s = 0.9: 0.80, 0.82, …, 0.98 in one pass; otherwise the 20%/5% defaults (``{}``).
    """
    if math.isclose(budget, 0.9):
        return {"coarse_values": lattice(0.8, 0.02, (0.8, 0.98)), "coarse_step": 0.02,
                "fine_step": None}  # fmt: skip
    return {}


def lattice(anchor: float, step: float, bounds: tuple[float, float]) -> list[float]:
    """Every ``anchor + k * step`` (k an integer, possibly negative) within ``bounds``, ascending,
    rounded to 12 decimals."""
    if not step > 0:
        raise ValueError(f"step must be positive, got {step!r}")
    lo, hi = bounds
    k = math.ceil((lo - anchor) / step - 1e-9)
    out = []
    while (v := round(anchor + k * step, DECIMALS)) <= hi:
        if v >= lo:
            out.append(v)
        k += 1
    return out


def plan(
    sizes: Mapping[str, int],
    budget: float,
    bounds: tuple[float, float] = (0.0, 0.99),
    coarse_step: float = 0.2,
    fine_step: float | None = 0.05,
    fine_radius: float | None = None,
    extra: Mapping[str, Any] | None = None,
    coarse_values: Sequence[float] | None = None,
) -> tuple[dict[str, Any], list[dict[str, float]]]:
    """(settings, the feasible coarse points in the order they are handed out); a
    ``ValueError`` for bad arguments or when no coarse point is feasible."""
    if not coarse_step > 0:
        raise ValueError(f"coarse_step must be positive, got {coarse_step!r}")
    if fine_step is not None and not fine_step > 0:
        raise ValueError(f"fine_step must be positive or None, got {fine_step!r}")
    radius = coarse_step if fine_radius is None else fine_radius
    if not radius >= 0:
        raise ValueError(f"fine_radius must be >= 0, got {fine_radius!r}")
    extra = dict(extra or {})
    clash = [k for k in extra if k in RESERVED]
    if clash:
        raise ValueError(f"extra must not set {', '.join(clash)}: the grid sets them")
    try:
        json.dumps(extra, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ValueError(f"extra must be plain JSON data: {e}") from None
    bounds = (float(bounds[0]), float(bounds[1]))
    if coarse_values is None:
        values = lattice(coarse_step / 2, coarse_step, bounds)
    else:
        values = sorted({round(float(v), DECIMALS) for v in coarse_values})
        outside = [v for v in values if not bounds[0] <= v <= bounds[1]]
        if outside:
            raise ValueError(f"coarse_values {outside} lie outside bounds {bounds}")
    settings: dict[str, Any] = {
        "sizes": {g: int(n) for g, n in sizes.items()},
        "budget": float(budget),
        "bounds": list(bounds),
        "coarse_step": float(coarse_step),
        "fine_step": None if fine_step is None else float(fine_step),
        "fine_radius": float(radius),
        "coarse_values": values,
        "extra": extra,
    }
    # Validates sizes, budget and bounds with budget.py's messages before anything is planned.
    solve(budget, sizes, language=budget, visual=budget, bounds=bounds)
    points = feasible(settings, values, values)
    if not points:
        raise ValueError(
            f"no coarse point is feasible at s={budget!r} within bounds {bounds} (grid {values})"
        )
    return settings, points


def feasible(
    settings: Mapping[str, Any], languages: Sequence[float], visuals: Sequence[float]
) -> list[dict[str, float]]:
    """Every (language, visual) in the product whose solved cross lies in bounds, solved."""
    out = []
    for language in languages:
        for visual in visuals:
            try:
                out.append(solve(settings["budget"], settings["sizes"], language=language,
                                 visual=visual, bounds=tuple(settings["bounds"])))  # fmt: skip
            except ValueError:
                continue  # cross outside bounds: C.4 drops the configuration
    return out


def neighbourhood(
    settings: Mapping[str, Any], centre: Mapping[str, Any], skip: set[tuple]
) -> list[dict[str, float]]:
    """The fine points around ``centre``: ± fine_radius in fine_step steps, feasible, not in
    ``skip`` (a set of :func:`key`)."""
    if settings["fine_step"] is None:
        return []
    step, radius, (lo, hi) = settings["fine_step"], settings["fine_radius"], settings["bounds"]
    m = math.floor(radius / step + 1e-9)
    axes = []
    for g in ("language", "visual"):
        values = (round(centre[g] + k * step, DECIMALS) for k in range(-m, m + 1))
        axes.append([v for v in values if lo <= v <= hi])
    return [p for p in feasible(settings, *axes) if key(p) not in skip]


def max_fine(settings: Mapping[str, Any], coarse: Iterable[Mapping[str, Any]]) -> int:
    """The largest fine pass any of the ``coarse`` points could lead to."""
    coarse = list(coarse)
    keys = {key(p) for p in coarse}
    return max((len(neighbourhood(settings, p, keys)) for p in coarse), default=0)


def max_trials(settings: Mapping[str, Any], coarse: Iterable[Mapping[str, Any]]) -> int:
    """An upper bound on the trials of a sweep: the coarse points plus the largest fine pass."""
    coarse = list(coarse)
    return len({key(p) for p in coarse}) + max_fine(settings, coarse)


def key(point: Mapping[str, Any]) -> tuple[float, float]:
    return (point["language"], point["visual"])
