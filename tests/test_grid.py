"""The C.4 coarse-to-fine grid searcher: grids, passes, JSON save/restore and a real sweep."""

from __future__ import annotations

import json
import math
import sys
from fractions import Fraction
from pathlib import Path

import pytest
from ray.tune.search import Searcher

from search.grid import GridSearcher, c4_settings, lattice

LXMERT = {"language": 87_141_888, "visual": 36_965_376, "cross": 82_575_360}
COARSE = [0.1, 0.3, 0.5, 0.7, 0.9]
# The synthetic optimum: off every grid, nearest coarse point (0.7, 0.3), nearest fine (0.6, 0.25).
OPTIMUM = (0.62, 0.27)


def synthetic_acc(language: float, visual: float) -> float:
    """A smooth score whose maximum over the plane is at OPTIMUM."""
    return 0.6 - (language - OPTIMUM[0]) ** 2 - (visual - OPTIMUM[1]) ** 2


def eq10_residual(sizes: dict[str, int], s: float, cfg: dict) -> float:
    """|Σ s_g N_g − s Σ N_g| relative to Σ N_g."""
    total = sum(sizes.values())
    weighted = sum(cfg[g] * n for g, n in sizes.items())
    return abs(weighted - s * total) / total


def feasible_exact(sizes: dict[str, int], s: float, language: float, visual: float) -> bool:
    """Eq. 10 in exact decimal arithmetic: is the solved cross within [0, 0.99]?"""
    frac = {k: Fraction(str(v)) for k, v in {"s": s, "l": language, "v": visual}.items()}
    total = sum(sizes.values())
    num = frac["s"] * total - frac["l"] * sizes["language"] - frac["v"] * sizes["visual"]
    return 0 <= num / sizes["cross"] <= Fraction("0.99")


def drive(searcher: GridSearcher, prefix: str = "t", fail: set | None = None) -> list[dict]:
    """Run the searcher to FINISHED one trial at a time, scoring with synthetic_acc; a trial whose
    (language, visual) is in ``fail`` errors. Returns the configs in suggestion order."""
    out = []
    while (cfg := searcher.suggest(f"{prefix}{len(out)}")) != Searcher.FINISHED:
        assert cfg is not None  # nothing is outstanding, so there is always an answer
        out.append(cfg)
        tid = f"{prefix}{len(out) - 1}"
        if fail and (cfg["language"], cfg["visual"]) in fail:
            searcher.on_trial_complete(tid, None, error=True)
        else:
            searcher.on_trial_complete(tid, {"acc": synthetic_acc(cfg["language"], cfg["visual"])})
    return out


def on_lattice(value: float, centre: float, step: float) -> bool:
    k = (value - centre) / step
    return abs(k - round(k)) < 1e-9


# --- grids ------------------------------------------------------------------------------------


def test_lattice_is_c4s_coarse_grid() -> None:
    assert lattice(0.1, 0.2, (0.0, 0.99)) == COARSE
    assert lattice(0.1, 0.2, (0.2, 0.7)) == [0.3, 0.5, 0.7]
    assert lattice(0.6, 0.05, (0.5, 0.7)) == [0.5, 0.55, 0.6, 0.65, 0.7]
    assert c4_settings(0.5) == c4_settings(0.7) == {}
    assert c4_settings(0.9)["coarse_values"] == [0.8, 0.82, 0.84, 0.86, 0.88, 0.9, 0.92, 0.94,
                                                  0.96, 0.98]  # fmt: skip


@pytest.mark.parametrize(
    ("s", "count", "infeasible"), [(0.5, 21, (0.9, 0.9)), (0.7, 12, (0.1, 0.1))]
)
def test_coarse_pass_lxmert(s: float, count: int, infeasible: tuple[float, float]) -> None:
    g = GridSearcher(LXMERT, s, extra={"lr": 5e-5})
    points = g.coarse_points
    for cfg in points:
        assert eq10_residual(LXMERT, s, cfg) < 1e-9
        assert all(0.0 <= cfg[k] <= 0.99 for k in ("language", "visual", "cross"))
        assert cfg["language"] in COARSE and cfg["visual"] in COARSE
        assert cfg["sparsity"] == s and cfg["grid_pass"] == "coarse" and cfg["lr"] == 5e-5
    keys = [(c["language"], c["visual"]) for c in points]
    assert len(set(keys)) == len(keys) == count
    # Exactly the feasible part of the 5 x 5 grid, checked in exact arithmetic.
    assert set(keys) == {(a, b) for a in COARSE for b in COARSE if feasible_exact(LXMERT, s, a, b)}
    assert infeasible not in keys and not feasible_exact(LXMERT, s, *infeasible)
    uniform = next(c for c in points if (c["language"], c["visual"]) == (s, s))
    assert math.isclose(uniform["cross"], s, rel_tol=1e-12)
    assert g.fine_points == []


def test_c4_at_90_percent_is_one_pass() -> None:
    g = GridSearcher(LXMERT, 0.9, metric="acc", mode="max", **c4_settings(0.9))
    grid = lattice(0.8, 0.02, (0.8, 0.98))
    keys = {(c["language"], c["visual"]) for c in g.coarse_points}
    assert keys == {(a, b) for a in grid for b in grid if feasible_exact(LXMERT, 0.9, a, b)}
    assert g.max_trials() == len(keys)
    run = drive(g)
    assert len(run) == len(keys) and {c["grid_pass"] for c in run} == {"coarse"}


# --- the passes -------------------------------------------------------------------------------


def test_fine_pass_centred_on_best_coarse() -> None:
    g = GridSearcher(LXMERT, 0.5, metric="acc", mode="max")
    n = len(g.coarse_points)
    configs = [g.suggest(f"c{i}") for i in range(n)]
    assert all(c["grid_pass"] == "coarse" for c in configs)
    # Every coarse point is out but none has finished: ask later, not FINISHED.
    assert g.suggest("wait") is None
    for i, c in enumerate(configs[:-1]):
        g.on_trial_complete(f"c{i}", {"acc": synthetic_acc(c["language"], c["visual"])})
    assert g.suggest("wait") is None
    g.on_trial_complete(f"c{n - 1}", {"acc": synthetic_acc(configs[-1]["language"],
                                                            configs[-1]["visual"])})  # fmt: skip

    fine = drive(g, prefix="f")
    assert g.suggest("after") == Searcher.FINISHED and g.grid_pass == "done"
    centre = (0.7, 0.3)  # the best coarse point for OPTIMUM
    coarse_keys = {(c["language"], c["visual"]) for c in configs}
    keys = [(c["language"], c["visual"]) for c in fine]
    assert len(set(keys)) == len(keys) > 0
    assert not set(keys) & coarse_keys  # points already run are skipped
    for c in fine:
        assert c["grid_pass"] == "fine" and eq10_residual(LXMERT, 0.5, c) < 1e-9
        for g_, x in zip(("language", "visual"), centre, strict=True):
            assert abs(c[g_] - x) <= 0.2 + 1e-12 and on_lattice(c[g_], x, 0.05)
    # Exactly the feasible 9 x 9 neighbourhood less the coarse points.
    axes = [[round(x + 0.05 * k, 12) for k in range(-4, 5)] for x in centre]
    in_bounds = [[v for v in axis if 0.0 <= v <= 0.99] for axis in axes]
    expected = {(a, b) for a in in_bounds[0] for b in in_bounds[1]}
    expected = {(a, b) for a, b in expected if feasible_exact(LXMERT, 0.5, a, b)}
    assert set(keys) == expected - coarse_keys
    assert n + len(fine) <= g.max_trials()
    best = max(configs + fine, key=lambda c: synthetic_acc(c["language"], c["visual"]))
    assert (best["language"], best["visual"]) == (0.6, 0.25)


def test_errored_and_metricless_trials_are_ignored() -> None:
    # The best coarse point errors, so the fine pass centres on the runner-up.
    g = GridSearcher(LXMERT, 0.5, metric="acc", mode="max", fine_step=0.1, fine_radius=0.1)
    run = drive(g, fail={(0.7, 0.3)})
    coarse = [c for c in run if c["grid_pass"] == "coarse"]
    scores = {(c["language"], c["visual"]): synthetic_acc(c["language"], c["visual"])
              for c in coarse if (c["language"], c["visual"]) != (0.7, 0.3)}  # fmt: skip
    runner_up = max(scores, key=scores.get)
    fine = [(c["language"], c["visual"]) for c in run if c["grid_pass"] == "fine"]
    assert fine and all(
        abs(a - runner_up[0]) <= 0.1 + 1e-12 and abs(b - runner_up[1]) <= 0.1 + 1e-12
        for a, b in fine
    )
    # A NaN or missing metric counts as finished without a value; mode "min" flips the best.
    h = GridSearcher({"language": 1, "visual": 1, "cross": 1}, 0.5, metric="loss", mode="min",
                     coarse_values=[0.3, 0.5, 0.7], fine_step=0.1, fine_radius=0.1)  # fmt: skip
    out = [h.suggest(str(i)) for i in range(len(h.coarse_points))]
    for i, c in enumerate(out):
        result = {"loss": c["language"]} if c["language"] == 0.3 else {"loss": float("nan")}
        h.on_trial_complete(str(i), result if i % 2 else {"other": 1.0})
    assert (out[1]["language"], out[1]["visual"]) == (0.3, 0.5)
    fine = []
    while (c := h.suggest(f"f{len(fine)}")) != Searcher.FINISHED:
        fine.append((c["language"], c["visual"]))
    # Only trial 1, (0.3, 0.5), has a value: the fine pass surrounds it.
    assert fine and all(abs(a - 0.3) <= 0.1 + 1e-12 and abs(b - 0.5) <= 0.1 + 1e-12
                        for a, b in fine)  # fmt: skip


def test_restarted_trial_is_matched_by_config() -> None:
    # Tune's restart_errored re-runs a trial under a new id; its final result carries the config.
    g = GridSearcher({"language": 1, "visual": 1, "cross": 1}, 0.5, metric="acc", mode="max",
                     coarse_values=[0.5], fine_step=0.25, fine_radius=0.25)  # fmt: skip
    assert g.suggest("a")["language"] == 0.5
    g.on_trial_complete("a", None, error=True)
    g.on_trial_complete("b", {"acc": 1.0, "config/language": 0.5, "config/visual": 0.5})
    g.on_trial_complete("c", {"acc": 1.0, "config/language": 0.1, "config/visual": 0.5})  # unknown
    assert g.get_state()["trials"]["b"] == {"point": 0, "done": True, "value": 1.0, "error": False}
    assert "c" not in g.get_state()["trials"]
    assert g.suggest("d")["grid_pass"] == "fine"  # the re-run value planned the fine pass


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="extra must not set sparsity"):
        GridSearcher(LXMERT, 0.5, extra={"sparsity": 0.1})
    with pytest.raises(ValueError, match="no coarse point is feasible"):
        GridSearcher(LXMERT, 0.5, coarse_values=[0.9])
    with pytest.raises(ValueError, match="outside bounds"):
        GridSearcher(LXMERT, 0.5, coarse_values=[0.995])
    with pytest.raises(ValueError, match="mode"):
        GridSearcher(LXMERT, 0.5, metric="acc", mode="maximise")
    # Without metric and mode the fine pass cannot be planned: refuse before the coarse pass runs.
    g = GridSearcher(LXMERT, 0.5)
    with pytest.raises(ValueError, match="needs metric and mode"):
        g.suggest("t0")
    assert g.set_search_properties("acc", "max", {}) and g.suggest("t0")["grid_pass"] == "coarse"
    assert GridSearcher(LXMERT, 0.9, **c4_settings(0.9)).suggest("t0")["grid_pass"] == "coarse"


# --- save / restore ---------------------------------------------------------------------------


def _advance(g: GridSearcher, suggested: int, completed: int) -> list[dict]:
    cfgs = [g.suggest(f"t{i}") for i in range(suggested)]
    for i, c in enumerate(cfgs[:completed]):
        g.on_trial_complete(f"t{i}", {"acc": synthetic_acc(c["language"], c["visual"])})
    return cfgs


def _finish(g: GridSearcher, outstanding: list[tuple[str, dict]]) -> list:
    """Complete the outstanding trials, then run to FINISHED; returns every suggestion."""
    for tid, c in outstanding:
        g.on_trial_complete(tid, {"acc": synthetic_acc(c["language"], c["visual"])})
    return drive(g, prefix="r")


@pytest.mark.parametrize(("suggested", "completed"), [(12, 8), (21, 21)])
def test_save_restore_continues_identically(tmp_path: Path, suggested: int, completed: int) -> None:
    a = GridSearcher(LXMERT, 0.5, metric="acc", mode="max", extra={"epochs": 20})
    cfgs = _advance(a, suggested, completed)
    path = tmp_path / "searcher-state-x.pkl"
    a.save(str(path))

    def strict(token: str) -> float:
        raise AssertionError(f"non-JSON constant {token}")

    state = json.loads(path.read_text(), parse_constant=strict)
    assert state["format"] == "tickets.grid/1" and len(state["trials"]) == suggested

    b = GridSearcher({"language": 1, "visual": 1, "cross": 1}, 0.1)  # fresh, other settings
    b.restore(str(path))
    assert b.metric == "acc" and b.mode == "max" and b.coarse_points == a.coarse_points
    outstanding = [(f"t{i}", c) for i, c in enumerate(cfgs) if i >= completed]
    rest_a, rest_b = _finish(a, outstanding), _finish(b, outstanding)
    assert rest_a == rest_b and rest_b
    assert {c["grid_pass"] for c in rest_b} == ({"coarse", "fine"} if suggested < 21 else {"fine"})
    assert all(c["epochs"] == 20 for c in rest_b)


# --- a real sweep -----------------------------------------------------------------------------

SMALL = {"language": 3_000, "visual": 1_000, "cross": 2_000}
RAY_OPTIMUM = (0.62, 0.4, 0.41)


def ray_acc(config: dict) -> float:
    """A synthetic accuracy, smooth in the allocation, maximal at RAY_OPTIMUM."""
    groups = ("language", "visual", "cross")
    return 0.6 - sum((config[g] - t) ** 2 for g, t in zip(groups, RAY_OPTIMUM, strict=True))


def grid_trainable(config: dict) -> None:
    from ray import tune

    tune.report({"acc": ray_acc(config)})


@pytest.fixture(scope="module")
def ray_runtime(ray_session):
    """conftest's session Ray runtime, with this module's trainable shipped by value: workers
    cannot import a test module (tests/ is not on their path)."""
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


@pytest.mark.ray
def test_tuner_runs_coarse_then_fine(
    ray_runtime: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ray import tune

    monkeypatch.setenv("RAY_CHDIR_TO_TRIAL_DIR", "0")
    # Cross = 1.5 - 1.5 language - 0.5 visual: 5 of the 3 x 3 coarse points are feasible, and all
    # 8 fine points around (0.5, 0.5) at ± 0.2; a small sweep with the paper's structure.
    # Metric and mode go to the searcher: with an empty param_space Tune does not forward them.
    searcher = GridSearcher(SMALL, 0.5, metric="acc", mode="max", coarse_values=[0.1, 0.5, 0.9],
                            fine_step=0.2, fine_radius=0.2, extra={"seed": 0})  # fmt: skip
    planned = {(c["language"], c["visual"]) for c in searcher.coarse_points}
    tuner = tune.Tuner(
        grid_trainable,
        # Reusing the trial actor saves a worker start per trial (seconds on a loaded machine).
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            metric="acc",
            mode="max",
            num_samples=searcher.max_trials(),
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(storage_path=str(tmp_path), name="grid", verbose=0),
    )
    results = tuner.fit()
    assert not results.errors
    configs = [r.config for r in results]
    coarse = [c for c in configs if c["grid_pass"] == "coarse"]
    fine = [c for c in configs if c["grid_pass"] == "fine"]
    assert {(c["language"], c["visual"]) for c in coarse} == planned and len(coarse) == len(planned)

    centre = max(coarse, key=ray_acc)
    assert (centre["language"], centre["visual"]) == (0.5, 0.5)
    ring = {(a, b) for a in (0.3, 0.5, 0.7) for b in (0.3, 0.5, 0.7)} - {(0.5, 0.5)}
    assert sorted((c["language"], c["visual"]) for c in fine) == sorted(ring)
    keys = [(c["language"], c["visual"]) for c in configs]
    assert len(set(keys)) == len(keys) and all(c["seed"] == 0 for c in configs)
    best = results.get_best_result().config
    assert (best["language"], best["visual"]) == (0.7, 0.3)
    assert len(configs) == searcher.max_trials() == 13
