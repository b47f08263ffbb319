"""search.replay: a searcher scored against a reference table, without training or Ray."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import ray

from pruning.budget import remaining_params
from search.config import load_config, validate_config
from search.grid_plan import plan
from search.replay import ALLOCATION, ReferenceTable, events_frame, proposals, replay
from tests.conftest import Bench
from tests.test_search import sweep_config

TICKETS = str(Path(sys.executable).parent / "tickets")
SIZES = {"language": 400, "visual": 200, "cross": 400}
"""Group sizes of a made-up model for the hand-made tables."""


def lattice_rows(landscape, seeds=(0,), epochs=(1, 2), budget: float = 0.5) -> pd.DataFrame:
    """Reference rows on the 20% C.4 lattice at `budget`: `landscape(language, visual, epoch,
    seed)` -> (selection, test) in percent, test on every epoch."""
    _, points = plan(SIZES, budget, (0.0, 0.99), coarse_step=0.2, fine_step=None)
    rows = []
    for i, p in enumerate(points):
        for seed in seeds:
            for epoch in epochs:
                sel, test = landscape(p["language"], p["visual"], epoch, seed)
                rows.append({"s_overall": budget, "s_language": p["language"],
                             "s_visual": p["visual"], "s_cross": p["cross"], "run": f"{i}/{seed}",
                             "seed": seed, "epoch": epoch, "sel_overall": sel,
                             "test_overall": test})  # fmt: skip
    return pd.DataFrame(rows)


def made_up_config(tmp_path: Path, **search) -> object:
    """A run config whose data and checkpoint are never read (the replay gets `SIZES`)."""
    raw = {"data": {"dataset": "vqacp_v2", "root": str(tmp_path / "data"),
                    "features": str(tmp_path / "f.h5"), "cache_dir": str(tmp_path / "cache")},
           "pruning": {"output_dir": str(tmp_path / "out"), "checkpoint": str(tmp_path / "ck"),
                       "epochs": 2, "sparsity": 0.5},
           "search": {"storage_path": str(tmp_path / "runs"), **search}}  # fmt: skip
    return validate_config(raw, "replay")


def no_ray_init(monkeypatch: pytest.MonkeyPatch) -> bool:
    """Make `ray.init` fail the test (the replay must not start or join Ray); whether Ray was
    up before (earlier tests of the same process may have started it)."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the replay called ray.init")

    monkeypatch.setattr(ray, "init", refuse)
    return ray.is_initialized()


def at(language: float, visual: float, budget: float = 0.5) -> dict[str, float]:
    return {"s_overall": budget, "s_language": language, "s_visual": visual, "s_cross": 0.0}


@pytest.mark.ray
def test_replay_proposes_what_a_real_sweep_proposed(
    tiny_bench: Bench, tiny_stage1: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A real sweep (training, Ray, in its own process): TPE after 2 start-up trials, ASHA, one
    # worker. Its own Parquet is the reference table (one seed: no noise), so the replay reports
    # exactly the values the sweep's trials reported, and TPE, which conditions on them (PRUNED
    # trials by their intermediate values), must propose the same allocations in the same order.
    asha = {"grace_period": 1, "reduction_factor": 2}
    config = sweep_config(tiny_bench, tiny_stage1, tmp_path, num_samples=5,
                          max_concurrent_trials=1, startup_trials=2, seed=3, scheduler="asha",
                          asha=asha, loggers=["json"])  # fmt: skip
    done = subprocess.run([TICKETS, "search", str(config)], capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    run_dir = tmp_path / "runs" / "sweep"
    trials = pd.read_parquet(run_dir / "trials.parquet").sort_values("number")
    epochs = pd.read_parquet(run_dir / "epochs.parquet")
    table = ReferenceTable.load(run_dir, statuses=("finished", "early_stopped"))
    cfg = load_config(run_dir / "tickets.yaml")

    ray_was_up = no_ray_init(monkeypatch)
    events = replay(cfg, table, concurrency=1, seed=cfg.search.seed)
    assert ray.is_initialized() == ray_was_up
    assert proposals(events) == trials[list(ALLOCATION)].to_dict("records")
    frame = events_frame(events)
    last = frame.groupby("trial").last()
    assert last["status"].tolist() == trials["status"].tolist()
    assert last["epoch"].tolist() == trials["epochs"].tolist()
    reported = epochs.merge(trials[["trial_id", "number"]], on="trial_id").sort_values(
        ["number", "epoch"])  # fmt: skip
    assert frame["value"].tolist() == reported["sel_overall"].tolist()
    assert frame["trial_epochs"].tolist() == list(range(1, len(frame) + 1))

    # The match is not vacuous: with the ranking of the last epoch's values turned upside down
    # (the kept epoch stays the last) TPE proposes otherwise.
    if trials["sel_overall"].nunique() > 1:
        rows = table.rows.copy()
        last_epoch = rows["epoch"] == rows["epoch"].max()
        rows.loc[last_epoch, "sel_overall"] = 100 - rows.loc[last_epoch, "sel_overall"]
        other = replay(cfg, ReferenceTable(rows), concurrency=1, seed=cfg.search.seed)
        assert proposals(other) != proposals(events)


def test_interpolation_is_exact_on_the_lattice_and_linear_between(tmp_path: Path) -> None:
    def landscape(language: float, visual: float, epoch: int, seed: int) -> tuple[float, float]:
        sel = 40 + 30 * language**2 - 10 * visual * language + epoch + 2 * seed
        return sel, sel - 5

    table = ReferenceTable(lattice_rows(landscape, seeds=(0, 1)))
    points = table.points()
    assert len(points) == 22 and (points["runs"] == 2).all()
    for p in points.itertuples():
        for epoch in (1, 2):  # the seed mean, exactly
            want = landscape(p.s_language, p.s_visual, epoch, 0)[0] + 1
            assert table.value(p._asdict(), epoch) == pytest.approx(want, abs=1e-12)
        assert table.spread(p._asdict()).loc[2, "sel_overall"] == pytest.approx(np.sqrt(2))
    # Between two neighbours on either axis: the mean of their values.
    for a, b in (((0.3, 0.5), (0.5, 0.5)), ((0.5, 0.3), (0.5, 0.5)), ((0.7, 0.1), (0.7, 0.3))):
        mid = ((a[0] + b[0]) / 2, (a[1] + b[1]) / 2)
        want = (table.value(at(*a), 2) + table.value(at(*b), 2)) / 2
        assert table.value(at(*mid), 2) == pytest.approx(want, abs=1e-9)
        assert table.true_quality(at(*mid)) == pytest.approx(
            (table.true_quality(at(*a)) + table.true_quality(at(*b))) / 2, abs=1e-9)  # fmt: skip
    # Outside the lattice's hull (feasible, unmeasured): the nearest point's values.
    assert table.value(at(0.95, 0.1), 1) == table.value(at(0.9, 0.1), 1)
    with pytest.raises(ValueError, match="no budget 0.7"):
        table.true_quality(at(0.5, 0.5, budget=0.7))


def test_true_quality_is_the_test_accuracy_at_the_seed_mean_curves_kept_epoch() -> None:
    # Seed 0 peaks at epoch 1, seed 1 at epoch 3; their mean peaks at epoch 2.
    curves = {0: [60.0, 59.0, 50.0], 1: [50.0, 58.0, 59.0]}
    tests = {0: [70.0, 66.0, 60.0], 1: [62.0, 64.0, 68.0]}

    def landscape(language: float, visual: float, epoch: int, seed: int) -> tuple[float, float]:
        return curves[seed][epoch - 1], tests[seed][epoch - 1]

    rows = lattice_rows(landscape, seeds=(0, 1), epochs=(1, 2, 3))
    assert ReferenceTable(rows).true_quality(at(0.5, 0.5)) == pytest.approx(65.0)
    # A run directory holds each run's test accuracy at its own kept epoch only: their mean.
    own = rows["epoch"] == rows["seed"].map({0: 1, 1: 3})
    sparse = rows.assign(test_overall=rows["test_overall"].where(own))
    assert ReferenceTable(sparse).true_quality(at(0.5, 0.5)) == pytest.approx(69.0)


def test_regret_is_zero_once_the_recommendation_is_the_lattice_best(tmp_path: Path) -> None:
    # Selection ranks allocations as test accuracy does; the coarse grid is the lattice, so it
    # ends recommending the lattice's best, at regret 0, and its regret never rises on the way.
    def landscape(language: float, visual: float, epoch: int, seed: int) -> tuple[float, float]:
        sel = 50 + 20 * language - 15 * (visual - 0.3) ** 2 + epoch
        return sel, sel - 3

    table = ReferenceTable(lattice_rows(landscape))
    cfg = made_up_config(tmp_path, searcher="grid", grid={"fine_pass": False})
    events = replay(cfg, table, concurrency=3, seed=0, sizes=SIZES)
    frame = events_frame(events)
    points = table.points()
    assert len(proposals(events)) == len(points) and frame["trial_epochs"].max() == 2 * len(points)
    best = points.loc[points["true_quality"].idxmax()]
    assert events[-1].recommended == {k: best[k] for k in ALLOCATION}
    assert events[-1].quality == table.best_quality() and events[-1].regret == 0.0
    regret = frame["regret"].dropna()
    assert (regret >= 0).all() and (regret.diff().dropna() <= 0).all() and regret.iloc[0] > 0
    assert frame["regret"].isna().sum() == frame.index[frame["status"] == "finished"][0]


def test_noisy_asynchronous_replay_is_seeded_and_keeps_its_limits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def landscape(language: float, visual: float, epoch: int, seed: int) -> tuple[float, float]:
        sel = 50 + 20 * language - 10 * visual + 3 * epoch + (4 * seed - 2) * epoch
        return sel, sel

    table = ReferenceTable(lattice_rows(landscape, seeds=(0, 1), epochs=(1, 2, 3, 4)))
    cfg = made_up_config(tmp_path, searcher="tpe", scheduler="asha", num_samples=30,
                         asha={"grace_period": 1, "reduction_factor": 2})  # fmt: skip
    cfg = cfg.model_copy(update={"pruning": cfg.pruning.model_copy(update={"epochs": 4})})
    ray_was_up = no_ray_init(monkeypatch)
    events = replay(cfg, table, concurrency=3, seed=1, sizes=SIZES, max_trial_epochs=25)
    frame = events_frame(events)
    assert frame["trial_epochs"].tolist() == list(range(1, 26))
    assert ray.is_initialized() == ray_was_up
    # Never more than 3 trials report in one time unit, and every proposal meets eq. 10.
    assert frame.groupby("time")["trial"].nunique().max() <= 3
    kept = sum(frame[f"s_{g}"] * n for g, n in SIZES.items()) / sum(SIZES.values())
    assert np.allclose(kept, 0.5)
    assert (frame["status"] == "early_stopped").any()  # ASHA stops some, noise or not
    # Noise: one seed's deviation (±2 per epoch, scaled to the seeds' spread), drawn per trial.
    first = frame[frame["trial"] == 0]
    mean = [table.value(at(0.5, 0.5), e) for e in first["epoch"]]
    deviation = (first["value"] - mean) / first["epoch"]
    assert np.allclose(deviation.abs(), 2 * np.sqrt(2))
    again = events_frame(replay(cfg, table, concurrency=3, seed=1, sizes=SIZES,
                                max_trial_epochs=25))  # fmt: skip
    pd.testing.assert_frame_equal(again, frame)
    quiet = events_frame(replay(cfg, table, concurrency=3, seed=1, sizes=SIZES,
                                max_trial_epochs=25, noise=False))  # fmt: skip
    assert quiet.loc[quiet["trial"] == 0, "value"].tolist() == mean[: (quiet["trial"] == 0).sum()]


def test_replayed_confirmation_reruns_the_best_at_other_seeds_and_recommends_by_their_mean(
    tmp_path: Path,
) -> None:
    # Seed 1 flatters allocations with little language sparsity by 6 points, seed 0 does not:
    # a trial that drew seed 1 can win the search and lose its confirmation, which draws the
    # other seed.
    def landscape(language: float, visual: float, epoch: int, seed: int) -> tuple[float, float]:
        sel = 50 + 10 * language + epoch + (6 * (1 - language) if seed else 0)
        return sel, 50 + 10 * language

    table = ReferenceTable(lattice_rows(landscape, seeds=(0, 1)))
    cfg = made_up_config(tmp_path, searcher="random", scheduler="asha", num_samples=8,
                         asha={"grace_period": 1}, confirm={"top": 2, "seeds": 3})  # fmt: skip
    frame = events_frame(replay(cfg, table, concurrency=2, seed=3, sizes=SIZES))
    runs = frame[frame["confirm_of"].notna()]
    search = frame[frame["confirm_of"].isna()]
    assert runs["trial"].nunique() == 6 and search["trial"].nunique() == 8
    assert runs["time"].min() > search["time"].max()  # after every search trial ended
    assert (runs.groupby("trial")["epoch"].max() == 2).all()  # ASHA stopped none
    final = search[search["status"] == "finished"].groupby("trial")["value"].last()
    sources = sorted(set(runs["confirm_of"].astype(int)))
    assert sources == sorted(final.sort_values(ascending=False).index[:2])
    # The re-runs' seeds are the 1st, 2nd and 3rd run after the source's, of the point's 2:
    # the other seed, the source's own, the other again (the two differ: language < 1).
    for source in sources:
        ends = runs[(runs["confirm_of"] == source) & (runs["status"] == "finished")]
        values = ends.sort_values("trial")["value"].tolist()
        assert len(values) == 3 and values[0] == values[2] != values[1]
        assert values[1] == final[source]
    last = frame.iloc[-1]
    means = runs[runs["status"] == "finished"].groupby("confirm_of")["value"].mean()
    winner = frame.loc[frame["trial"] == int(means.idxmax())].iloc[0]
    assert last["rec_s_language"] == winner["s_language"]
    assert last["quality"] == table.true_quality(at(winner["s_language"], winner["s_visual"]))


@pytest.mark.parametrize("searcher", ["nsga2", "tpe"])
def test_multi_objective_replay_recommends_the_front_of_its_finished_trials(
    tmp_path: Path, searcher: str
) -> None:
    # Two budgets; selection falls with sparsity and with visual sparsity, so the front on
    # (selection, weights kept) holds each budget's best trial, and within a budget those whose
    # weights kept differ by a rounded weight (eq. 10's rounding per group) without a better
    # trial keeping fewer.
    def landscape(budget: float):
        def at(language: float, visual: float, epoch: int, seed: int) -> tuple[float, float]:
            sel = 80 - 30 * budget - 10 * visual + language + epoch
            return sel, sel - 2

        return at

    rows = pd.concat([lattice_rows(landscape(b), budget=b) for b in (0.3, 0.7)])
    table = ReferenceTable(rows)
    objectives = {"metric": ["sel_overall", "remaining_params"], "mode": ["max", "min"]}
    cfg = made_up_config(tmp_path, searcher=searcher, num_samples=14, budgets=[0.3, 0.7],
                         **objectives)  # fmt: skip
    events = replay(cfg, table, concurrency=2, seed=3, sizes=SIZES)
    frame = events_frame(events)
    finished = frame[frame["status"] == "finished"]
    assert len(finished) == 14 and set(finished["s_overall"]) == {0.3, 0.7}
    kept = {
        i: remaining_params(SIZES, {g: r[f"s_{g}"] for g in SIZES}) for i, r in finished.iterrows()
    }
    for i, event in enumerate(events):
        done = finished[finished.index <= i]
        front = [
            {k: r[k] for k in ALLOCATION}
            for j, r in done.iterrows()
            if not any(
                (o["value"] >= r["value"] and kept[k] <= kept[j])
                and (o["value"] > r["value"] or kept[k] < kept[j])
                for k, o in done.iterrows()
            )
        ]
        assert list(event.front) == front
        for budget in done["s_overall"].unique():  # each budget's best is on it
            same = done[done["s_overall"] == budget]
            assert {k: same.loc[same["value"].idxmax(), k] for k in ALLOCATION} in front
    assert 2 <= len(events[-1].front) < 14
    # the single-objective fields still rank by the first metric
    assert events[-1].recommended["s_overall"] == 0.3
    with pytest.raises(ValueError, match="the first search.metric must be a selection metric"):
        flipped = {k: v[::-1] for k, v in objectives.items()}
        replay(made_up_config(tmp_path, searcher="nsga2", **flipped), table, concurrency=1,
               seed=0, sizes=SIZES)  # fmt: skip
