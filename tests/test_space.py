"""The allocation space: every proposal meets eq. 10 within bounds; the uniform point maps back."""

from __future__ import annotations

import pickle

import numpy as np
import optuna
import pytest

from search.space import allocation, make_space, uniform_points, unit_coordinates

BASE = {"language": 87_141_888, "visual": 36_965_376, "cross": 82_575_360}


def _error(triple: dict[str, float], s: float, sizes: dict[str, int]) -> float:
    total = sum(sizes.values())
    return abs(sum(triple[g] * sizes[g] for g in sizes) - s * total) / total


def test_ten_thousand_proposals_meet_eq10_within_bounds() -> None:
    rng = np.random.default_rng(0)
    space = make_space(BASE, [0.3, 0.5, 0.7, 0.9], (0.05, 0.98), {})
    worst = 0.0
    for i in range(10_000):
        s = [0.3, 0.5, 0.7, 0.9][i % 4]
        u = rng.uniform(size=2)
        # Edges included: u exactly 0 or 1 is where clamping matters.
        u = np.where(rng.uniform(size=2) < 0.05, np.round(u), u)
        trial = optuna.trial.FixedTrial({"sparsity": s, "u_language": u[0], "u_visual": u[1]})
        proposal = space(trial)
        assert proposal["sparsity"] == s
        for g in BASE:
            assert 0.05 <= proposal[g] <= 0.98, (g, proposal)
        worst = max(worst, _error(proposal, s, BASE))
    assert worst < 1e-9


def test_space_in_a_real_study_with_hyperparameters_and_random_sizes() -> None:
    rng = np.random.default_rng(1)
    for _ in range(5):
        sizes = {g: int(rng.integers(1_000, 10_000_000)) for g in BASE}
        hps = {"lr": {"type": "loguniform", "low": 1e-5, "high": 1e-3},
               "recompute_every": {"type": "int", "low": 10, "high": 200},
               "loss.name": {"type": "choice", "values": ["lmh", "lpf"]}}  # fmt: skip
        space = make_space(sizes, [0.7], (0.0, 0.99), hps)
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
        for _ in range(200):
            trial = study.ask()
            proposal = space(trial)
            assert _error(proposal, 0.7, sizes) < 1e-9
            assert 1e-5 <= trial.params["lr"] <= 1e-3
            assert trial.params["loss.name"] in ("lmh", "lpf")
            assert "sparsity" not in trial.params  # one budget: not a searched variable
            study.tell(trial, 0.0)


def test_the_space_pickles_and_the_uniform_point_maps_to_the_uniform_allocation() -> None:
    space = pickle.loads(pickle.dumps(make_space(BASE, [0.7], (0.0, 0.99), {})))
    (point,) = uniform_points(BASE, [0.7], (0.0, 0.99))
    proposal = space(optuna.trial.FixedTrial(point))
    for g in BASE:
        assert proposal[g] == pytest.approx(0.7, abs=1e-12)
    # unit_coordinates inverts allocation for feasible points.
    triple = allocation(0.5, BASE, 0.2, 0.9, (0.0, 0.99))
    u = unit_coordinates(0.5, BASE, triple["language"], triple["visual"], (0.0, 0.99))
    assert u["u_language"] == pytest.approx(0.2) and u["u_visual"] == pytest.approx(0.9)
    several = uniform_points(BASE, [0.5, 0.995], (0.0, 0.99))
    assert [p["sparsity"] for p in several] == [0.5]  # 0.995 is outside the bounds
