"""The sparsity budget of eq. 10: per-modality sparsities that average, weighted by size, to s.

    s_L·N_L + s_R·N_R + s_X·N_X = s·(N_L + N_R + N_X),   every s_g within ``bounds``.

Sparsity is the fraction of weights removed. The pooler is outside eq. 10 and is pruned at s
directly (the paper's footnote 3). Pure Python: arithmetic is exact on integers (every float is a
dyadic rational) and rounds to float only at the end, so results hold to floating precision for
any sizes.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping

GROUPS: tuple[str, ...] = ("language", "visual", "cross")

_POOLER = "pooler"
# A solved sparsity this close outside its bounds is floating noise in the caller's inputs.
_CLIP_TOL = 1e-12


def solve(
    s: float,
    sizes: Mapping[str, int],
    language: float | None = None,
    visual: float | None = None,
    cross: float | None = None,
    bounds: tuple[float, float] = (0.0, 0.99),
) -> dict[str, float]:
    """Solve eq. 10 for the one group of ``language``/``visual``/``cross`` not given.

    Returns ``{"language": s_L, "visual": s_R, "cross": s_X}``, plus ``"pooler": s`` when ``sizes``
    has a pooler. Raises ``ValueError`` unless exactly two groups are given, or if any sparsity
    (given or solved) lies outside ``bounds``; the message then gives the feasible interval.
    """
    lo, hi = _check_bounds(bounds)
    s = _check_budget(s)
    n = _check_sizes(sizes)
    args = {"language": language, "visual": visual, "cross": cross}
    given = {g: v for g, v in args.items() if v is not None}
    if len(given) != 2:
        raise ValueError(
            f"solve() needs exactly two of language/visual/cross, got {len(given)}"
            f" ({', '.join(given) or 'none'}); the third is solved from eq. 10"
        )
    for g, v in given.items():
        given[g] = _check_sparsity(v, g, lo, hi)
    (target,) = (g for g in GROUPS if g not in given)

    (s_i, *given_i), scale = _scaled([s, *given.values()])
    num = s_i * _total(n) - sum(v * n[g] for v, g in zip(given_i, given, strict=True))
    value = num / (scale * n[target])  # correctly rounded, and monotone: in-bounds stays in
    if lo - _CLIP_TOL < value < lo:
        value = lo
    elif hi < value < hi + _CLIP_TOL:
        value = hi
    if not lo <= value <= hi:
        raise ValueError(_infeasible_message(s, n, given, target, value, lo, hi))

    out = {g: given.get(g, value) for g in GROUPS}
    if _POOLER in n:
        out[_POOLER] = s
    return out


def feasible_interval(
    s: float,
    sizes: Mapping[str, int],
    group: str,
    fixed: Mapping[str, float] | None = None,
    bounds: tuple[float, float] = (0.0, 0.99),
) -> tuple[float, float]:
    """Interval of sparsities of ``group`` for which the other, not ``fixed`` groups can take
    values within ``bounds`` that satisfy eq. 10.

    ``fixed`` maps at most one other group to its sparsity. Endpoints are rounded inwards, so every
    float in the returned interval is feasible. Raises ``ValueError`` if the interval is empty.
    """
    lo, hi = _check_bounds(bounds)
    s = _check_budget(s)
    n = _check_sizes(sizes)
    if group not in GROUPS:
        raise ValueError(f"group must be one of {', '.join(GROUPS)}, got {group!r}")
    fixed = dict(fixed or {})
    if len(fixed) > 1:
        raise ValueError(f"fixed may hold at most one group, got {', '.join(map(str, fixed))}")
    for g, v in fixed.items():
        if g not in GROUPS or g == group:
            raise ValueError(f"fixed must name a group other than {group!r}, got {g!r}")
        fixed[g] = _check_sparsity(v, g, lo, hi)

    exact = _exact_interval(s, n, group, fixed, lo, hi)
    if exact is None:
        raise ValueError(_empty_message(s, n, group, fixed, lo, hi))
    a, b, den = exact
    lo_f, hi_f = _round_up(a, den), _round_down(b, den)
    if lo_f > hi_f:
        # The exact interval is narrower than one float spacing and holds no float; the nearest
        # float is the best available and solve() absorbs the error as floating noise.
        lo_f = hi_f = (a + b) / (2 * den)
    return lo_f, hi_f


def remaining_params(sizes: Mapping[str, int], sparsities: Mapping[str, float]) -> int:
    """Weights kept: the sum over groups in both mappings of ``round((1 - s_g) * N_g)``."""
    kept = 0
    for g, size in sizes.items():
        if g in sparsities:
            kept += round((1.0 - float(sparsities[g])) * size)
    return kept


# --- exact arithmetic ------------------------------------------------------------------------
# Every float is m / 2**k, so scaling by the largest 2**k turns the floats into integers and eq. 10
# into integer arithmetic: exact, and much faster than Fraction.


def _scaled(values: list[float]) -> tuple[list[int], int]:
    """Integers ``v * scale`` for each value, and ``scale`` (a power of two)."""
    ratios = [v.as_integer_ratio() for v in values]
    scale = max(q for _, q in ratios)
    return [p * (scale // q) for p, q in ratios], scale


def _exact_interval(
    s: float, n: dict[str, int], group: str, fixed: dict[str, float], lo: float, hi: float
) -> tuple[int, int, int] | None:
    """The exact feasible interval of ``group`` as ``(a, b, den)``, meaning [a/den, b/den], or
    None when empty."""
    (s_i, lo_i, hi_i, *fixed_i), scale = _scaled([s, lo, hi, *fixed.values()])
    rest = s_i * _total(n) - sum(v * n[g] for v, g in zip(fixed_i, fixed, strict=True))
    free = sum(n[g] for g in GROUPS if g != group and g not in fixed)
    # The free groups absorb anything from lo·free to hi·free weights of the remaining budget.
    a = max(lo_i * n[group], rest - hi_i * free)
    b = min(hi_i * n[group], rest - lo_i * free)
    return (a, b, scale * n[group]) if a <= b else None


def _round_up(num: int, den: int) -> float:
    """The least float >= num/den (den > 0)."""
    f = num / den
    p, q = f.as_integer_ratio()
    return f if p * den >= num * q else math.nextafter(f, math.inf)


def _round_down(num: int, den: int) -> float:
    """The greatest float <= num/den (den > 0)."""
    f = num / den
    p, q = f.as_integer_ratio()
    return f if p * den <= num * q else math.nextafter(f, -math.inf)


def _total(n: dict[str, int]) -> int:
    return sum(n[g] for g in GROUPS)


# --- validation and messages -----------------------------------------------------------------


def _check_bounds(bounds: tuple[float, float]) -> tuple[float, float]:
    try:
        lo, hi = (float(b) for b in bounds)
    except (TypeError, ValueError):
        raise ValueError(f"bounds must be a pair of numbers (lo, hi), got {bounds!r}") from None
    if not 0.0 <= lo <= hi < 1.0:
        raise ValueError(f"bounds must satisfy 0 <= lo <= hi < 1, got ({lo!r}, {hi!r})")
    return lo, hi


def _check_budget(s: float) -> float:
    s = float(s)
    if not 0.0 <= s < 1.0:
        raise ValueError(f"target sparsity s must lie in [0, 1), got {s!r}")
    return s


def _check_sparsity(value: float, group: str, lo: float, hi: float) -> float:
    value = float(value)
    if not lo <= value <= hi:
        raise ValueError(f"{group} sparsity {value!r} is outside bounds [{lo!r}, {hi!r}]")
    return value


def _check_sizes(sizes: Mapping[str, int]) -> dict[str, int]:
    unknown = [k for k in sizes if k not in GROUPS and k != _POOLER]
    if unknown:
        raise ValueError(f"unknown group(s) in sizes: {', '.join(map(repr, unknown))}")
    missing = [g for g in GROUPS if g not in sizes]
    if missing:
        raise ValueError(f"sizes lacks group(s) {', '.join(missing)}; eq. 10 needs all three")
    out: dict[str, int] = {}
    for g, v in sizes.items():
        try:
            if isinstance(v, bool):
                raise TypeError
            count = operator.index(v)
        except TypeError:
            raise ValueError(f"sizes[{g!r}] must be an integer weight count, got {v!r}") from None
        if count <= 0:
            raise ValueError(f"sizes[{g!r}] must be positive, got {count}")
        out[g] = count
    return out


def _infeasible_message(
    s: float,
    n: dict[str, int],
    given: dict[str, float],
    target: str,
    value: float,
    lo: float,
    hi: float,
) -> str:
    first, second = (g for g in GROUPS if g in given)
    head = (
        f"{target} sparsity {value!r} is outside [{lo!r}, {hi!r}]; with "
        f"{first}={given[first]!r} and {second}={given[second]!r} no feasible value at s={s!r}"
    )
    if _exact_interval(s, n, first, {}, lo, hi) is None:
        return f"{head}; {_empty_message(s, n, first, {}, lo, hi)}"
    a, b = feasible_interval(s, n, first, bounds=(lo, hi))
    msg = f"{head}; a solution needs {first} in [{a!r}, {b!r}]"
    if _exact_interval(s, n, first, {second: given[second]}, lo, hi) is not None:
        a2, b2 = feasible_interval(s, n, first, fixed={second: given[second]}, bounds=(lo, hi))
        msg += f" (in [{a2!r}, {b2!r}] with {second}={given[second]!r})"
    else:
        c, d = feasible_interval(s, n, second, bounds=(lo, hi))
        msg += f", and {second} in [{c!r}, {d!r}]"
    return msg


def _empty_message(
    s: float, n: dict[str, int], group: str, fixed: dict[str, float], lo: float, hi: float
) -> str:
    where = f"s={s!r}, bounds [{lo!r}, {hi!r}]"
    if fixed:
        ((g, v),) = fixed.items()
        where += f" and {g}={v!r} fixed"
        if _exact_interval(s, n, g, {}, lo, hi) is not None:
            c, d = feasible_interval(s, n, g, bounds=(lo, hi))
            return (
                f"no {group} sparsity is feasible with {where}: eq. 10 cannot be met; "
                f"{g} must lie in [{c!r}, {d!r}]"
            )
    if not lo <= s <= hi:
        # Eq. 10 makes s a size-weighted mean of the three, so it must lie within the bounds.
        return (
            f"no {group} sparsity is feasible with {where}: s is a weighted mean of the group "
            f"sparsities and must lie within the bounds"
        )
    return f"no {group} sparsity is feasible with {where}: eq. 10 cannot be met"
