"""Tests for pruning.budget: eq. 10 solved exactly, tight feasible intervals, the unit-variable map.

Property tests are seeded numpy loops over random sizes (1 to 1e8 weights, lxmert-base's among
them), budgets s in [0, 0.98] and bounds; eq. 10 is checked in exact rational arithmetic.
"""

from __future__ import annotations

import re
from fractions import Fraction

import numpy as np
import pytest

from pruning.budget import GROUPS, feasible_interval, remaining_params, solve

LXMERT_BASE = {"language": 87_141_888, "visual": 36_965_376, "cross": 82_575_360}
POOLER = 589_824


def _random_sizes(rng: np.random.Generator) -> dict[str, int]:
    kind = rng.integers(5)
    if kind == 0:
        sizes = dict(LXMERT_BASE)
    elif kind == 1:
        sizes = dict.fromkeys(GROUPS, int(rng.integers(1, 10**8 + 1)))
    else:  # log-uniform, so ratios between groups span up to 1e8
        sizes = {g: int(10 ** rng.uniform(0, 8)) for g in GROUPS}
    if rng.random() < 0.3:
        sizes["pooler"] = int(rng.integers(1, 10**6))
    return sizes


def _random_case(rng: np.random.Generator) -> tuple[float, dict[str, int], tuple[float, float]]:
    """A budget s in [0, 0.98] and bounds that contain it (else nothing is feasible)."""
    s = (
        float(rng.choice([0.0, 0.5, 0.7, 0.9, 0.98]))
        if rng.random() < 0.2
        else rng.uniform(0, 0.98)
    )
    r = rng.random()
    if r < 0.3:
        bounds = (0.0, 0.99)
    elif r < 0.35:
        bounds = (s, 0.99)  # s on a bound: the feasible region degenerates to corners
    elif r < 0.4:
        bounds = (0.0, s)
    else:
        bounds = (rng.uniform(0, s), rng.uniform(s, 0.99))
    return s, _random_sizes(rng), bounds


def _eq10_error(s: float, sizes: dict[str, int], out: dict[str, float]) -> float:
    """|s_L·N_L + s_R·N_R + s_X·N_X − s·N| / N, computed exactly."""
    total = sum(sizes[g] for g in GROUPS)
    lhs = sum(Fraction(out[g]) * sizes[g] for g in GROUPS)
    return float(abs(lhs - Fraction(s) * total) / total)


def _onto(u: float, interval: tuple[float, float]) -> float:
    """The search space's map of a unit variable onto an interval (clamped against rounding)."""
    lo, hi = interval
    return min(hi, max(lo, lo + u * (hi - lo)))


def _propose(
    s: float, sizes: dict[str, int], bounds: tuple[float, float], u: tuple[float, float], pair
) -> dict[str, float]:
    """Map (u1, u2) onto the first two groups of `pair` as the search space does, solve the rest."""
    first, second = pair
    v1 = _onto(u[0], feasible_interval(s, sizes, first, bounds=bounds))
    v2 = _onto(u[1], feasible_interval(s, sizes, second, fixed={first: v1}, bounds=bounds))
    return solve(s, sizes, bounds=bounds, **{first: v1, second: v2})


def _in_bounds(out: dict[str, float], bounds: tuple[float, float]) -> bool:
    return all(bounds[0] <= out[g] <= bounds[1] for g in GROUPS)


# --- (1) eq. 10 holds exactly for any feasible pair of given sparsities ------------------------


def test_solve_meets_eq10_for_any_feasible_pair() -> None:
    rng = np.random.default_rng(1)
    pairs = [(a, b) for a in GROUPS for b in GROUPS if a != b]
    for _ in range(1500):
        s, sizes, bounds = _random_case(rng)
        pair = pairs[rng.integers(len(pairs))]
        u = (
            float(rng.choice([0.0, 1.0, rng.random()])),
            float(rng.choice([0.0, 1.0, rng.random()])),
        )
        out = _propose(s, sizes, bounds, u, pair)
        assert _eq10_error(s, sizes, out) < 1e-12, (s, sizes, bounds, out)
        assert _in_bounds(out, bounds), (s, sizes, bounds, out)
        assert ("pooler" in out) == ("pooler" in sizes)
        if "pooler" in sizes:
            assert out["pooler"] == s


def test_given_sparsities_are_returned_unchanged() -> None:
    out = solve(0.7, LXMERT_BASE, visual=0.55, cross=0.8)
    assert out["visual"] == 0.55 and out["cross"] == 0.8
    assert list(out) == list(GROUPS)


# --- (2) feasible_interval endpoints are tight -------------------------------------------------


def test_unconditional_interval_endpoints_are_tight() -> None:
    rng = np.random.default_rng(2)
    checked_outside = 0
    for _ in range(400):
        s, sizes, bounds = _random_case(rng)
        lo, hi = bounds
        group = GROUPS[rng.integers(3)]
        other, third = (g for g in GROUPS if g != group)
        a, b = feasible_interval(s, sizes, group, bounds=bounds)
        assert lo <= a <= b <= hi
        for end in (a, b):
            # At an endpoint some value of `other` completes a solution.
            c, d = feasible_interval(s, sizes, other, fixed={group: end}, bounds=bounds)
            out = solve(s, sizes, bounds=bounds, **{group: end, other: _onto(rng.random(), (c, d))})
            assert _eq10_error(s, sizes, out) < 1e-12 and _in_bounds(out, bounds)
        for outside in (a - 1e-6, b + 1e-6):
            # Just outside, no value of `other` is feasible (or `outside` breaks the bounds).
            with pytest.raises(ValueError):
                feasible_interval(s, sizes, other, fixed={group: outside}, bounds=bounds)
            # solve() forgives 1e-12 of floating noise in the solved value, so it must fail only
            # where the 1e-6 step moves that value by clearly more.
            if outside < lo or outside > hi or 1e-6 * sizes[group] / sizes[third] > 1e-10:
                checked_outside += 1
                for v in (lo, (lo + hi) / 2, hi):
                    with pytest.raises(ValueError):
                        solve(s, sizes, bounds=bounds, **{group: outside, other: v})
    assert checked_outside > 600  # the guard above skips only extreme size ratios


def test_conditional_interval_endpoints_are_tight() -> None:
    rng = np.random.default_rng(3)
    checked_outside = 0
    for _ in range(600):
        s, sizes, bounds = _random_case(rng)
        lo, hi = bounds
        first, second, third = (GROUPS[i] for i in rng.permutation(3))
        v1 = _onto(rng.random(), feasible_interval(s, sizes, first, bounds=bounds))
        c, d = feasible_interval(s, sizes, second, fixed={first: v1}, bounds=bounds)
        assert lo <= c <= d <= hi
        for end in (c, d):
            out = solve(s, sizes, bounds=bounds, **{first: v1, second: end})
            assert _eq10_error(s, sizes, out) < 1e-12 and _in_bounds(out, bounds)
        for outside in (c - 1e-6, d + 1e-6):
            if outside < lo or outside > hi or 1e-6 * sizes[second] / sizes[third] > 1e-10:
                checked_outside += 1
                with pytest.raises(ValueError):
                    solve(s, sizes, bounds=bounds, **{first: v1, second: outside})
    assert checked_outside > 900


def test_interval_endpoint_puts_the_others_on_their_bounds() -> None:
    # Language's lower end is where visual and cross both sit at 0.99; rounded inwards, by < 1 ulp.
    a, _ = feasible_interval(0.9, LXMERT_BASE, "language")
    n_l, n_r, n_x = LXMERT_BASE["language"], LXMERT_BASE["visual"], LXMERT_BASE["cross"]
    expected = (Fraction(0.9) * (n_l + n_r + n_x) - Fraction(0.99) * (n_r + n_x)) / n_l
    assert Fraction(a) >= expected and a - float(expected) <= 2e-16


# --- (3) the search space's unit-variable map always yields a feasible allocation --------------


def test_ten_thousand_unit_proposals_all_feasible() -> None:
    rng = np.random.default_rng(4)
    cases = [_random_case(rng) for _ in range(100)]
    cases[0] = (0.9, {**LXMERT_BASE, "pooler": POOLER}, (0.0, 0.99))
    worst = 0.0
    for i in range(10_000):
        s, sizes, bounds = cases[i % len(cases)]
        u = (rng.random(), rng.random())
        if i < 400:  # corners of the unit square first: the endpoints are the risky points
            u = (float(i % 2), float((i // 2) % 2))
        out = _propose(s, sizes, bounds, u, ("language", "visual"))
        assert _in_bounds(out, bounds), (s, sizes, bounds, u, out)
        worst = max(worst, _eq10_error(s, sizes, out))
    assert worst < 1e-9


def test_unit_map_covers_the_interval() -> None:
    # u = 0 and u = 1 reach both ends: for lxmert-base at s = 0.9 language spans [~0.777, 0.99].
    lo_l, hi_l = feasible_interval(0.9, LXMERT_BASE, "language")
    assert hi_l == 0.99 and 0.77 < lo_l < 0.78
    out = _propose(0.9, LXMERT_BASE, (0.0, 0.99), (0.0, 0.0), ("language", "visual"))
    assert out["language"] == lo_l
    assert out["visual"] == pytest.approx(0.99) and out["cross"] == pytest.approx(0.99)


# --- (4) remaining_params ----------------------------------------------------------------------


def test_remaining_params_concrete() -> None:
    sizes = {"language": 10, "visual": 4, "cross": 3, "pooler": 2}
    # 7.5 rounds to even (8), 1.0, 3·0.4 = 1.2 -> 1; pooler absent from sparsities; "other" ignored.
    sparsities = {"language": 0.25, "visual": 0.75, "cross": 0.6, "other": 0.5}
    assert remaining_params(sizes, sparsities) == 8 + 1 + 1
    assert remaining_params(sizes, {**sparsities, "pooler": 0.0}) == 12
    assert remaining_params(sizes, {}) == 0


def test_remaining_params_matches_direct_computation_and_budget() -> None:
    rng = np.random.default_rng(5)
    for _ in range(500):
        s, sizes, bounds = _random_case(rng)
        out = _propose(s, sizes, bounds, (rng.random(), rng.random()), ("language", "visual"))
        direct = sum(round((1 - out[g]) * sizes[g]) for g in sizes)
        assert remaining_params(sizes, out) == direct
        n = sum(sizes[g] for g in GROUPS)
        three = remaining_params({g: sizes[g] for g in GROUPS}, out)
        assert abs(three - round((1 - s) * n)) <= 3


# --- (5) concrete values and error messages ---------------------------------------------------


def test_lxmert_base_concrete_solution() -> None:
    n_l, n_r, n_x = LXMERT_BASE["language"], LXMERT_BASE["visual"], LXMERT_BASE["cross"]
    out = solve(0.7, LXMERT_BASE, language=0.9, visual=0.3)
    expected = (0.7 * (n_l + n_r + n_x) - 0.9 * n_l - 0.3 * n_r) / n_x
    assert out["cross"] == pytest.approx(expected, rel=1e-12, abs=1e-12)
    assert 0.66 < out["cross"] < 0.67
    assert out["language"] == 0.9 and out["visual"] == 0.3


def test_pooler_is_pruned_at_s() -> None:
    out = solve(0.7, {**LXMERT_BASE, "pooler": POOLER}, language=0.9, visual=0.3)
    assert out["pooler"] == 0.7
    assert "pooler" not in solve(0.7, LXMERT_BASE, language=0.9, visual=0.3)


def test_infeasible_request_names_group_and_interval() -> None:
    with pytest.raises(ValueError) as info:
        solve(0.9, LXMERT_BASE, language=0.0, visual=0.0)
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith("cross sparsity ")
    a, b = feasible_interval(0.9, LXMERT_BASE, "language")
    c, d = feasible_interval(0.9, LXMERT_BASE, "visual")
    assert f"language in [{a!r}, {b!r}]" in msg
    assert f"visual in [{c!r}, {d!r}]" in msg
    solved = float(re.match(r"cross sparsity (\S+) ", msg).group(1))
    assert solved == pytest.approx(0.9 * sum(LXMERT_BASE.values()) / LXMERT_BASE["cross"])


def test_infeasible_request_gives_conditional_interval_when_second_is_feasible() -> None:
    # visual = 0.5 is feasible at s = 0.7, but language = 0.1 with it is not.
    with pytest.raises(ValueError, match="cross sparsity") as info:
        solve(0.7, LXMERT_BASE, language=0.1, visual=0.5)
    a, b = feasible_interval(0.7, LXMERT_BASE, "language", fixed={"visual": 0.5})
    assert f"in [{a!r}, {b!r}] with visual=0.5" in str(info.value)
    solve(0.7, LXMERT_BASE, language=a, visual=0.5)  # the named interval does work
    solve(0.7, LXMERT_BASE, language=b, visual=0.5)


def test_budget_outside_bounds_is_explained() -> None:
    with pytest.raises(ValueError, match=r"language.*s=0\.5.*within the bounds"):
        feasible_interval(0.5, LXMERT_BASE, "language", bounds=(0.6, 0.9))
    with pytest.raises(ValueError, match=r"cross sparsity .*s=0\.5"):
        solve(0.5, LXMERT_BASE, language=0.6, visual=0.6, bounds=(0.6, 0.9))


def test_solved_value_within_floating_noise_is_clipped_and_no_further() -> None:
    sizes = dict.fromkeys(GROUPS, 1)
    s_noise = 0.99 + 1e-13  # cross = 3s - 1.98 lands just above 0.99
    exact = 3 * Fraction(s_noise) - 2 * Fraction(0.99)
    assert Fraction(0.99) < exact < Fraction(0.99) + Fraction(1e-12)
    assert solve(s_noise, sizes, language=0.99, visual=0.99)["cross"] == 0.99
    with pytest.raises(ValueError, match="cross sparsity"):
        solve(0.99 + 1e-11, sizes, language=0.99, visual=0.99, bounds=(0.0, 0.99))


@pytest.mark.parametrize(
    "given", [{}, {"language": 0.5}, {"language": 0.5, "visual": 0.5, "cross": 0.5}]
)
def test_wrong_number_of_given_groups(given: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=f"exactly two.*got {len(given)}"):
        solve(0.5, LXMERT_BASE, **given)


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"s": 1.0}, r"s must lie in \[0, 1\)"),
        ({"s": -0.1}, r"s must lie in \[0, 1\)"),
        ({"s": float("nan")}, r"s must lie in \[0, 1\)"),
        ({"sizes": {**LXMERT_BASE, "cross": 0}}, r"sizes\['cross'\] must be positive"),
        ({"sizes": {**LXMERT_BASE, "visual": -5}}, r"sizes\['visual'\] must be positive"),
        ({"sizes": {**LXMERT_BASE, "pooler": 0}}, r"sizes\['pooler'\] must be positive"),
        ({"sizes": {**LXMERT_BASE, "cross": 1.5}}, r"sizes\['cross'\] must be an integer"),
        ({"sizes": {"language": 1, "visual": 1}}, "lacks group.*cross"),
        ({"sizes": {**LXMERT_BASE, "head": 7}}, "unknown group.*head"),
        ({"bounds": (0.5, 0.4)}, "0 <= lo <= hi < 1"),
        ({"bounds": (-0.1, 0.9)}, "0 <= lo <= hi < 1"),
        ({"bounds": (0.0, 1.0)}, "0 <= lo <= hi < 1"),
        ({"language": 0.995}, r"language sparsity 0\.995 is outside bounds"),
        ({"visual": -0.01}, r"visual sparsity -0\.01 is outside bounds"),
    ],
)
def test_invalid_arguments(kwargs: dict, pattern: str) -> None:
    call = {"s": 0.5, "sizes": LXMERT_BASE, "language": 0.5, "visual": 0.5, **kwargs}
    with pytest.raises(ValueError, match=pattern):
        solve(**call)


def test_feasible_interval_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="group must be one of"):
        feasible_interval(0.5, LXMERT_BASE, "pooler")
    with pytest.raises(ValueError, match="at most one group"):
        feasible_interval(0.5, LXMERT_BASE, "cross", fixed={"language": 0.5, "visual": 0.5})
    with pytest.raises(ValueError, match="other than 'cross'"):
        feasible_interval(0.5, LXMERT_BASE, "cross", fixed={"cross": 0.5})
    with pytest.raises(ValueError, match=r"cross.*s=0\.9.*language=0\.0 fixed.*language must lie"):
        feasible_interval(0.9, LXMERT_BASE, "cross", fixed={"language": 0.0})
