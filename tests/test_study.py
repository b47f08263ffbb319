"""The sweep's Optuna study speaks sparsities, a grid sweep is recorded in one, warm starts seed
it from earlier sweeps, loggers come from the config, and `search.load_sweep` reads it all; on
real sweeps of the installed `tickets` in fresh processes, read back with plain optuna."""

from __future__ import annotations

from pathlib import Path

import optuna
import pandas as pd
import pytest

from pruning.budget import feasible_interval
from tests.conftest import Bench
from tests.test_run_dir_commands import tickets
from tests.test_search import sweep_config, tiny_stage1_sizes

pytestmark = pytest.mark.ray
GROUPS = ("language", "visual", "cross")


def _study(run_dir: Path) -> optuna.Study:
    return optuna.load_study(study_name=run_dir.name, storage=f"sqlite:///{run_dir / 'study.db'}")


@pytest.fixture(scope="module")
def source(tiny_bench: Bench, tiny_stage1: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three finished TPE trials of two epochs at s = 0.5, one searched hyperparameter."""
    root = tmp_path_factory.mktemp("source")
    config = sweep_config(tiny_bench, tiny_stage1, root, num_samples=3,
                          hyperparameters={"lr": {"type": "loguniform", "low": 0.01,
                                                  "high": 0.1}})  # fmt: skip
    done = tickets("search", str(config), "--name", "source")
    assert done.returncode == 0, done.stderr[-3000:]
    return root / "runs" / "source"


def test_study_holds_sparsities_trial_ids_test_metrics_and_epochs(source: Path) -> None:
    trials = pd.read_parquet(source / "trials.parquet").set_index("trial_id")
    epochs = pd.read_parquet(source / "epochs.parquet")
    study = _study(source)
    assert study.metric_names == ["sel_overall"]
    frame = study.trials_dataframe()
    assert {"user_attrs_s_language", "user_attrs_trial_id", "user_attrs_test_overall"} <= set(
        frame.columns
    )
    assert len(study.trials) == 3
    for t in study.trials:
        row = trials.loc[t.user_attrs["trial_id"]]
        assert row["number"] == t.number  # trials.parquet and the study name the same trial
        for g in GROUPS:
            assert t.user_attrs[f"s_{g}"] == pytest.approx(row[f"s_{g}"], abs=1e-12)
        assert t.user_attrs["s_overall"] == pytest.approx(0.5)
        assert t.user_attrs["remaining_params"] == row["remaining_params"]
        assert t.user_attrs["test_overall"] == pytest.approx(row["test_overall"], abs=1e-9)
        assert t.user_attrs["kept_epoch"] == row["kept_epoch"]
        assert t.user_attrs["early_stopped"] is False
        # Intermediate values are the selection accuracy keyed by epoch, as epochs.parquet has it.
        mine = epochs[epochs["trial_id"] == t.user_attrs["trial_id"]].set_index("epoch")
        assert sorted(t.intermediate_values) == [1, 2]
        for epoch, value in t.intermediate_values.items():
            assert value == pytest.approx(mine.loc[epoch, "sel_overall"], abs=1e-9)


def test_the_grid_at_s_0_9_is_c4s_single_2_percent_pass_recorded_in_a_study(
    tiny_bench: Bench, tiny_stage1: Path, tmp_path: Path
) -> None:
    # C.4 at s = 0.9: 0.80, 0.82, ..., 0.98 on both axes, cross solved, no fine pass. Bounds of
    # [0.88, 0.92] keep the real sweep to the points of 0.88, 0.90, 0.92 whose cross lies there.
    sizes = tiny_stage1_sizes(tiny_stage1)
    total = sum(sizes[g] for g in GROUPS)
    values = (0.88, 0.9, 0.92)
    expected = set()
    for language in values:
        for visual in values:
            cross = (0.9 * total - language * sizes["language"] - visual * sizes["visual"]) / sizes[
                "cross"
            ]
            if 0.88 - 1e-12 <= cross <= 0.92 + 1e-12:
                expected.add((language, visual))
    assert 3 <= len(expected) < 9  # the bounds drop some: cross is solved, not gridded
    config = sweep_config(tiny_bench, tiny_stage1, tmp_path, searcher="grid")
    done = tickets("search", str(config), "pruning.epochs=1", "pruning.sparsity=0.9",
                   "pruning.bounds=[0.88, 0.92]")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    trials = pd.read_parquet(tmp_path / "runs" / "sweep" / "trials.parquet")
    got = {(round(a, 9), round(b, 9)) for a, b in zip(trials["s_language"], trials["s_visual"],
                                                        strict=True)}  # fmt: skip
    assert got == expected and len(trials) == len(expected)
    # Recorded in a study of the same shape as an Optuna sweep's, with fixed parameters.
    study = _study(tmp_path / "runs" / "sweep")
    assert study.metric_names == ["sel_overall"] and len(study.trials) == len(trials)
    rows = trials.set_index("trial_id")
    lo, hi = feasible_interval(0.9, sizes, "language", bounds=(0.88, 0.92))
    for t in study.trials:
        row = rows.loc[t.user_attrs["trial_id"]]
        assert t.state == optuna.trial.TrialState.COMPLETE and row["number"] == t.number
        assert t.value == pytest.approx(row["sel_overall"], abs=1e-9)
        # The grid point in the unit coordinates an Optuna sweep of this space draws.
        assert t.params["u_language"] == pytest.approx((row["s_language"] - lo) / (hi - lo))
        assert t.user_attrs["s_visual"] == pytest.approx(row["s_visual"], abs=1e-12)
        assert t.user_attrs["grid_pass"] == "coarse"  # no fine pass at s = 0.9
        assert t.intermediate_values == {1: pytest.approx(row["sel_overall"], abs=1e-9)}
    dry = tickets("search", str(config), "--dry-run", "pruning.sparsity=0.9")
    assert dry.returncode == 0, dry.stderr
    assert "0.80" in dry.stdout and "0.98" in dry.stdout and "+ at most 0 fine" in dry.stdout


def test_warm_start_adds_earlier_trials_mapped_to_the_new_budget(
    source: Path, tiny_bench: Bench, tiny_stage1: Path, tmp_path: Path
) -> None:
    earlier = pd.read_parquet(source / "trials.parquet").set_index("trial_id")
    config = sweep_config(
        tiny_bench,
        tiny_stage1,
        tmp_path,
        num_samples=2,
        warm_start=[str(source)],
        hyperparameters={"lr": {"type": "loguniform", "low": 0.01, "high": 0.1}},
    )
    done = tickets("search", str(config), "--name", "warm", "pruning.sparsity=0.6")
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"warm start: 3 finished trials of {source}" in done.stdout
    run_dir = tmp_path / "runs" / "warm"
    trials = pd.read_parquet(run_dir / "trials.parquet")
    warm, own = trials[trials["status"] == "warm_start"], trials[trials["status"] != "warm_start"]
    assert len(warm) == 3 and len(own) == 2 and (own["status"] == "finished").all()
    assert own["warm_start"].isna().all()
    study = _study(run_dir)
    sizes = tiny_stage1_sizes(tiny_stage1)
    total = sum(sizes[g] for g in GROUPS)
    for _, row in warm.iterrows():
        source_id = row["warm_start"].rsplit("#", 1)[1]
        assert row["warm_start"] == f"{source.resolve()}#{source_id}"
        # The row is the earlier trial as it was measured; the study holds it mapped to s = 0.6.
        assert row["sel_overall"] == pytest.approx(earlier.loc[source_id, "sel_overall"])
        t = study.trials[row["number"]]
        assert t.state == optuna.trial.TrialState.COMPLETE and t.user_attrs["warm_start"]
        assert t.value == pytest.approx(earlier.loc[source_id, "sel_overall"])
        assert sum(t.user_attrs[f"s_{g}"] * sizes[g] for g in GROUPS) / total == pytest.approx(
            0.6, abs=1e-9
        )
        for g in GROUPS:  # kept fractions scaled by 0.4 / 0.5 where that stays feasible
            scaled = 1 - (1 - earlier.loc[source_id, f"s_{g}"]) * 0.8
            if scaled <= 0.99:
                assert t.user_attrs[f"s_{g}"] == pytest.approx(scaled, abs=1e-6)
        assert t.params["lr"] == pytest.approx(earlier.loc[source_id, "hp_lr"])
    # An allocation mapped from s = 0.5 does not stand for s = 0.6's uniform one: this sweep
    # measures its own, first.
    first = own.sort_values("number").iloc[0]
    assert [first[f"s_{g}"] for g in GROUPS] == pytest.approx([0.6] * 3, abs=1e-9)
    assert "values measured at another budget or on another dataset are told" in done.stdout
    assert sorted(study.trials_dataframe()["user_attrs_trial_id"].dropna()) == sorted(
        own["trial_id"]
    )
    status = tickets("status", str(run_dir))
    assert status.returncode == 0 and "trials: 2 of 2 started" in status.stdout
    assert "trial-epochs: 4 spent" in status.stdout  # the earlier trials' epochs are not this one's

    # load_sweep gives the same tables, the study and Ray's results, without a Ray runtime.
    from search import load_sweep

    sweep = load_sweep(run_dir)
    pd.testing.assert_frame_equal(sweep.trials, trials)
    assert len(sweep.results) == 2 and sweep.study is not None and len(sweep.study.trials) == 5
    assert sorted(sweep.finished["trial_id"]) == sorted(own["trial_id"])
    import duckdb

    trials = sweep.trials  # noqa: F841  (DuckDB reads the DataFrame by its name)
    by_budget = duckdb.sql("""select round(s_overall, 2) as s, count(*) as n, max(sel_overall)
                              as best from trials where status = 'finished' group by 1""").df()
    assert by_budget["s"].tolist() == [0.6] and by_budget["n"].tolist() == [2]
    assert by_budget["best"].iloc[0] == pytest.approx(own["sel_overall"].max())


def test_warm_start_enqueue_reruns_the_best_earlier_allocation_first_with_loggers(
    source: Path, tiny_bench: Bench, tiny_stage1: Path, tmp_path: Path
) -> None:
    earlier = pd.read_parquet(source / "trials.parquet")
    best = earlier.loc[earlier["sel_overall"].idxmax()]
    config = sweep_config(tiny_bench, tiny_stage1, tmp_path, num_samples=2, warm_start=[
        str(source)], warm_start_as="enqueue", warm_start_top=1, max_concurrent_trials=1,
        loggers=["tensorboard"])  # fmt: skip
    done = tickets("search", str(config))
    assert done.returncode == 0, done.stderr[-3000:]
    run_dir = tmp_path / "runs" / "sweep"
    trials = pd.read_parquet(run_dir / "trials.parquet").sort_values("number")
    assert len(trials) == 2 and not (trials["status"] == "warm_start").any()
    first = trials.iloc[0]
    assert first["warm_start"] == f"{source.resolve()}#{best['trial_id']}"
    for g in GROUPS:  # the same budget: the earlier allocation as it was
        assert first[f"s_{g}"] == pytest.approx(best[f"s_{g}"], abs=1e-9)
    second = trials.iloc[1]
    assert pd.isna(second["warm_start"])
    if not all(abs(best[f"s_{g}"] - 0.5) < 1e-9 for g in GROUPS):  # else it is not run twice
        # then the uniform allocation, as in a cold sweep
        assert [second[f"s_{g}"] for g in GROUPS] == pytest.approx([0.5] * 3, abs=1e-9)
    # The configured loggers, and json always (Ray's analysis reads it): event files and
    # result.json, no progress.csv.
    for trial_id in trials["trial_id"]:
        files = {p.name for p in (run_dir / f"trial_{trial_id}").iterdir()}
        assert "result.json" in files and "progress.csv" not in files
        assert any(name.startswith("events.out.tfevents") for name in files)
    assert "Failed to fetch metrics" not in tickets("results", str(run_dir)).stderr


def test_a_missing_logger_package_or_warm_start_source_is_one_line_and_writes_nothing(
    tiny_bench: Bench, tiny_stage1: Path, tmp_path: Path
) -> None:
    config = sweep_config(tiny_bench, tiny_stage1, tmp_path)
    done = tickets("search", str(config), "search.loggers=[csv, mlflow]")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: search.loggers: mlflow needs the mlflow package: pip install mlflow"
    ]
    done = tickets("search", str(config), f"search.warm_start=[{tmp_path / 'nosuch'}]")
    assert done.returncode == 2
    assert done.stderr.strip() == (f"error: search.warm_start: {tmp_path / 'nosuch'} is not a "
                                   "sweep run directory (no tickets.yaml)")  # fmt: skip
    grid = ["search.searcher=grid", "search.grid.coarse_values=[0.995]"]
    done = tickets("search", str(config), *grid)
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        "error: search.grid: coarse_values [0.995] lie outside bounds (0.0, 0.99)"
    ]
    hps = "search.hyperparameters={lr: {type: uniform, low: 0.01, high: 0.1}}"
    done = tickets("search", str(config), "search.searcher=grid", hps)
    assert done.returncode == 2 and "the grid searches the allocation only" in done.stderr
    for bad in ("search.loggers=[mlflow]", f"search.warm_start=[{tmp_path / 'nosuch'}]"):
        done = tickets("search", str(config), "--dry-run", bad)  # the dry run refuses it too
        assert done.returncode == 2 and done.stderr.startswith("error: search."), done.stderr
    assert not (tmp_path / "runs").exists()


def test_warm_start_scales_what_shrinks_and_keeps_eq_10() -> None:
    from search.space import allocation
    from search.warm_start import map_allocation

    sizes = {"language": 40_000, "visual": 20_000, "cross": 40_000}
    total = sum(sizes.values())
    row = {"s_overall": 0.5, "s_language": 0.8, "s_visual": 0.1, "s_cross": 0.4}
    row["s_cross"] = (0.5 * total - 0.8 * 40_000 - 0.1 * 20_000) / 40_000
    for target, expected in (
        (0.25, {"language": 0.4, "visual": 0.05}),  # pruned x 0.5
        (0.75, {"language": 0.9, "visual": 0.55}),
    ):  # kept x 0.5
        s, units, clamped = map_allocation(row, [target], sizes, (0.0, 0.99))
        triple = allocation(s, sizes, units["u_language"], units["u_visual"], (0.0, 0.99))
        assert s == target and not clamped
        assert triple["language"] == pytest.approx(expected["language"])
        assert triple["visual"] == pytest.approx(expected["visual"])
        assert sum(triple[g] * sizes[g] for g in sizes) / total == pytest.approx(target)
    # The same budget: the allocation as it was.
    s, units, _ = map_allocation(row, [0.5, 0.7], sizes, (0.0, 0.99))
    assert s == 0.5
    assert allocation(0.5, sizes, units["u_language"], units["u_visual"],
                      (0.0, 0.99))["language"] == pytest.approx(0.8)  # fmt: skip


def test_a_saved_grid_keeps_its_passes_and_c4_applies_only_when_none_is_given() -> None:
    from search.schema import GridConfig

    bounds = (0.0, 0.99)
    c4 = GridConfig().settings(0.9, bounds)
    assert c4["coarse_values"][0] == 0.8 and c4["coarse_values"][-1] == 0.98
    assert c4["fine_step"] is None
    saved = GridConfig(coarse_step=0.2, fine_step=0.05).settings(0.9, bounds)  # an old tickets.yaml
    assert saved["coarse_values"] is None and saved["fine_step"] == 0.05
    assert GridConfig().settings(0.7, bounds)["fine_step"] == 0.05
    assert GridConfig(fine_pass=False).settings(0.7, bounds)["fine_step"] is None


def test_nsga2_sampler_pickles_as_tune_pickles_it() -> None:
    """Tune cloudpickles the searcher with its sampler; Optuna 5.1's NSGA-II holds a thread
    lock. The sweep's sampler survives the round trip, generation cache included, and samples
    on with a lock of its own."""
    from ray import cloudpickle

    from search.study import PicklableNSGAIISampler

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        x, y = trial.suggest_float("x", 0, 1), trial.suggest_float("y", 0, 1)
        return x + y, x - y

    sampler = PicklableNSGAIISampler(seed=0, population_size=4)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    study.optimize(objective, n_trials=6)
    again = cloudpickle.loads(cloudpickle.dumps(sampler))
    assert again._thread_lock is not sampler._thread_lock
    assert again._cached_generation == sampler._cached_generation > 0
    study.sampler = again
    study.optimize(objective, n_trials=2)
    assert len(study.trials) == 8
