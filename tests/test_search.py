"""`tickets search` / `results`: a real Ray Tune sweep with a real Optuna study (marked `ray`)."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pandas as pd
import pytest
import torch
import yaml
from typer.testing import CliRunner

from models.evaluate import evaluate_split
from models.train import load_checkpoint_model
from search.cli import app
from tests.conftest import Bench

pytestmark = pytest.mark.ray


def sweep_config(bench: Bench, stage1: Path, out: Path, **search) -> Path:
    raw = yaml.safe_load((bench.root / "prepare.yaml").read_text())
    raw["pruning"] = {"output_dir": str(out / "unused"), "checkpoint": str(stage1 / "best"),
                      "epochs": 2, "batch_size": 64, "lr": 0.05, "sparsity": 0.5,
                      "recompute_every": 5}  # fmt: skip
    raw["search"] = {"storage_path": str(out / "runs"), "name": "sweep", "searcher": "tpe",
                     "num_samples": 4, "max_concurrent_trials": 2, "seed": 0,
                     "resources": {"cpu": 1}, "snapshot_s": 1, **search}  # fmt: skip
    path = out / "sweep.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_tpe_sweep_writes_parquet_and_a_persistent_study(
    ray_session, tiny_bench: Bench, tiny_stage1: Path, tmp_path: Path
) -> None:
    config = sweep_config(tiny_bench, tiny_stage1, tmp_path,
                          hyperparameters={"lr": {"type": "loguniform", "low": 0.01,
                                                  "high": 0.1}})  # fmt: skip
    result = CliRunner().invoke(app, ["search", str(config)])
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "runs" / "sweep"
    trials = pd.read_parquet(run_dir / "trials.parquet")
    epochs = pd.read_parquet(run_dir / "epochs.parquet")
    assert len(trials) == 4 and trials["trial_id"].is_unique
    assert (trials["status"] == "finished").all() and not trials["early_stopped"].any()
    # Every proposal meets eq. 10 with the realised group sizes, within bounds.
    sizes = {g: tiny_stage1_sizes(tiny_stage1)[g] for g in ("language", "visual", "cross")}
    for _, row in trials.iterrows():
        mean = sum(row[f"s_{g}"] * n for g, n in sizes.items()) / sum(sizes.values())
        assert abs(mean - 0.5) < 1e-9
        assert abs(row["realised_overall"] - 0.5) < 1e-3
        assert 0.01 <= row["hp_lr"] <= 0.1
        assert row["epochs"] == 2 and row["kept_epoch"] in (1, 2)
        assert row["sel_overall"] >= 0 and row["test_overall"] >= 0
    # The uniform allocation is evaluated first.
    study = optuna.load_study(study_name="sweep", storage=f"sqlite:///{run_dir / 'study.db'}")
    first = min(study.trials, key=lambda t: t.number)
    uniform = trials.loc[(trials["s_language"] - 0.5).abs() < 1e-9]
    assert len(uniform) >= 1 and first.params["u_language"] == pytest.approx(
        uniform.iloc[0]["u_language"]
    )
    assert sorted(t.state.name for t in study.trials) == ["COMPLETE"] * 4
    assert sorted(epochs.groupby("trial_id").size().tolist()) == [2, 2, 2, 2]
    assert "results:" in result.output and "trials: finished 4" in result.output

    again = CliRunner().invoke(app, ["results", str(run_dir)])
    assert again.exit_code == 0, again.output
    pd.testing.assert_frame_equal(pd.read_parquet(run_dir / "trials.parquet"), trials)

    # The best trial exported from its checkpoint is that trial: its realised sparsity, and the
    # exported model scores the trial's test accuracy.
    best = trials.loc[trials["sel_overall"].idxmax()]
    out = tmp_path / "best-export"
    exported = CliRunner().invoke(app, ["export", str(run_dir), "--trial", best["trial_id"],
                                        str(out)])  # fmt: skip
    assert exported.exit_code == 0, exported.output
    saved = json.loads((out / "sparsity.json").read_text())
    for group in ("language", "visual", "cross", "overall"):
        assert saved[group]["realised"] == pytest.approx(best[f"realised_{group}"], abs=1e-12)
    model, _ = load_checkpoint_model(out, tiny_bench.data, head="required")
    test = evaluate_split(model, tiny_bench.data, "test", torch.device("cpu"))
    assert test["overall"] == pytest.approx(best["test_overall"], abs=1e-9)
    wrong = CliRunner().invoke(app, ["export", str(run_dir), "--trial", "nosuch",
                                     str(tmp_path / "nothing")])  # fmt: skip
    assert wrong.exit_code == 2 and "no trial 'nosuch'" in wrong.output
    assert not (tmp_path / "nothing").exists()


def test_asha_lets_a_trial_run_its_own_searched_epochs(
    ray_session, tiny_bench: Bench, tiny_stage1: Path, tmp_path: Path
) -> None:
    # pruning.epochs is 1 but the one trial's searched `epochs` is 3: ASHA's horizon (max_t) once
    # followed pruning.epochs and stopped it after 2, reported early-stopped.
    epochs = {"epochs": {"type": "choice", "values": [3]}}
    config = sweep_config(tiny_bench, tiny_stage1, tmp_path, scheduler="asha", num_samples=1,
                          max_concurrent_trials=1, asha={"grace_period": 1},
                          hyperparameters=epochs)  # fmt: skip
    result = CliRunner().invoke(app, ["search", str(config), "pruning.epochs=1"])
    assert result.exit_code == 0, result.output
    trials = pd.read_parquet(tmp_path / "runs" / "sweep" / "trials.parquet")
    assert trials["status"].tolist() == ["finished"] and trials["epochs"].tolist() == [3]
    assert not trials["early_stopped"].any() and trials["test_overall"].notna().all()


def tiny_stage1_sizes(stage1: Path) -> dict[str, int]:
    from search.tuner import model_sizes

    return model_sizes(stage1 / "best")


def test_asha_stops_trials_early_and_optuna_counts_them_pruned(
    ray_session, tiny_bench: Bench, tiny_stage1: Path, tmp_path: Path
) -> None:
    # The metric is one that differs between any two allocations: on this tiny benchmark the
    # selection accuracy ties between trials (most predict the same answers), ASHA never stops a
    # tie, and a CI run once ended with no trial stopped. TPE's seeded startup points then decide
    # the stops, whatever the training does.
    config = sweep_config(tiny_bench, tiny_stage1, tmp_path, scheduler="asha", num_samples=6,
                          max_concurrent_trials=1, metric="realised_language", mode="max",
                          asha={"grace_period": 1, "reduction_factor": 2})  # fmt: skip
    result = CliRunner().invoke(app, ["search", str(config), "pruning.epochs=3"])
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "runs" / "sweep"
    trials = pd.read_parquet(run_dir / "trials.parquet").set_index("trial_id")
    stopped = trials[trials["early_stopped"]]
    assert len(stopped) >= 1 and (trials["status"] == "finished").sum() >= 1
    assert (stopped["status"] == "early_stopped").all() and (stopped["epochs"] < 3).all()
    assert stopped["test_overall"].isna().all()  # no test metrics for an unfinished trial
    assert stopped["sel_overall"].notna().all()
    study = optuna.load_study(study_name="sweep", storage=f"sqlite:///{run_dir / 'study.db'}")
    states = sorted(t.state.name for t in study.trials)
    assert states.count("PRUNED") == len(stopped)
    assert states.count("COMPLETE") == (trials["status"] == "finished").sum()
    # A stopped trial has no final mask and no test metrics to export.
    out = tmp_path / "stopped-export"
    refused = CliRunner().invoke(app, ["export", str(run_dir), "--trial", stopped.index[0],
                                       str(out)])  # fmt: skip
    assert refused.exit_code == 2 and "did not finish (early_stopped)" in refused.output
    assert not out.exists()


def test_grid_sweep_runs_the_coarse_then_the_fine_pass(
    ray_session, tiny_bench: Bench, tiny_stage1: Path, tmp_path: Path
) -> None:
    grid = {"coarse_step": 0.4, "fine_step": 0.2, "fine_radius": 0.2}
    config = sweep_config(tiny_bench, tiny_stage1, tmp_path, searcher="grid", grid=grid)
    result = CliRunner().invoke(app, ["search", str(config), "pruning.epochs=1"])
    assert result.exit_code == 0, result.output
    trials = pd.read_parquet(tmp_path / "runs" / "sweep" / "trials.parquet")
    assert (trials["status"] == "finished").all()
    points = {(round(r.s_language, 6), round(r.s_visual, 6)) for r in trials.itertuples()}
    assert len(points) == len(trials)  # no point twice
    coarse = {p for p in points if all(round(v / 0.2) % 2 == 1 for v in p)}
    assert coarse and coarse < points  # a fine pass followed the coarse one


def test_search_refuses_a_run_name_that_exists(
    ray_session, tiny_bench: Bench, tiny_stage1: Path, tmp_path: Path
) -> None:
    config = sweep_config(tiny_bench, tiny_stage1, tmp_path)
    (tmp_path / "runs" / "sweep").mkdir(parents=True)
    (tmp_path / "runs" / "sweep" / "tickets.yaml").write_text("x: 1\n")
    result = CliRunner().invoke(app, ["search", str(config)])
    assert result.exit_code == 2
    assert "a sweep of this name exists" in result.stderr
    bad = CliRunner().invoke(app, ["search", str(config), "search.searcher=hyperband"])
    assert bad.exit_code == 2 and "search.searcher" in bad.stderr
    infeasible = CliRunner().invoke(app, ["search", str(config), "search.name=other",
                                          "pruning.bounds=[0.6, 0.9]"])  # fmt: skip
    assert infeasible.exit_code == 2 and "pruning" in infeasible.stderr
    assert not (tmp_path / "runs" / "other").exists()


LR = {"lr": {"type": "loguniform", "low": 0.01, "high": 0.1}}


@pytest.mark.parametrize(("searcher", "extra", "expected"), [
    ("tpe", {}, 4),  # the allocation alone: 2 dimensions
    ("gp", {"hyperparameters": LR}, 6),  # + one hyperparameter
    ("tpe", {"budgets": [0.3, 0.5, 0.7, 0.9], "hyperparameters": LR}, 8),  # + the budget
    ("tpe", {"startup_trials": 3}, 3),
    ("gp", {"startup_trials": 12}, 12),
])  # fmt: skip
def test_startup_trials_reach_the_sampler(
    tiny_bench: Bench, tiny_stage1: Path, tmp_path: Path, searcher: str, extra, expected: int
) -> None:
    from search.config import load_config
    from search.tuner import build_searcher

    cfg = load_config(sweep_config(tiny_bench, tiny_stage1, tmp_path, searcher=searcher,
                                   **extra)).resolved()  # fmt: skip
    found = build_searcher(cfg, tiny_stage1_sizes(tiny_stage1), tmp_path)
    assert found._sampler._n_startup_trials == expected


def test_a_resumed_searcher_skips_trials_the_study_finished_after_its_snapshot(
    tiny_bench: Bench, tiny_stage1: Path, tmp_path: Path
) -> None:
    """The study is written at every `tell`, the searcher snapshot only now and then: a trial
    told finished after the snapshot is re-run by Tune on resume, and reporting it to Optuna
    again used to end the resume with `UpdateFinishedTrialError`."""
    from search.config import load_config
    from search.tuner import AllocationSearch, build_searcher

    cfg = load_config(sweep_config(tiny_bench, tiny_stage1, tmp_path)).resolved()
    searcher = build_searcher(cfg, tiny_stage1_sizes(tiny_stage1), tmp_path)
    metric = cfg.search.metrics[0]
    searcher.suggest("a")
    searcher.suggest("b")
    searcher.save(str(tmp_path / "snapshot.pkl"))

    def epoch(n: int) -> dict:  # an epoch report as search.trainable makes it
        return {"stage": "prune", "epoch": n, "epochs_done": n, "training_iteration": n}

    # After the snapshot: "a" finishes, "b" reports an epoch, "c" is asked for; then the kill.
    searcher.on_trial_result("a", {metric: 40.0, **epoch(1)})
    searcher.on_trial_complete("a", {metric: 42.0, "trial_complete": True})
    searcher.on_trial_result("b", {metric: 30.0, **epoch(1)})
    searcher.suggest("c")

    resumed = AllocationSearch.__new__(AllocationSearch)  # as Tune unpickles it
    resumed.restore(str(tmp_path / "snapshot.pkl"))
    states = {t.number: t.state for t in resumed._ot_study.get_trials()}
    assert states == {0: optuna.trial.TrialState.COMPLETE, 1: optuna.trial.TrialState.RUNNING,
                      2: optuna.trial.TrialState.FAIL}  # fmt: skip
    # Tune re-runs "a" and "b" from their checkpoints: "a" is not told again, "b" goes on.
    resumed.on_trial_result("a", {metric: 40.0, **epoch(2)})
    resumed.on_trial_complete("a", {metric: 45.0, "trial_complete": True})
    resumed.on_trial_result("b", {metric: 31.0, **epoch(2)})
    resumed.on_trial_complete("b", {metric: 33.0, "trial_complete": True})
    trials = {t.number: t for t in resumed._ot_study.get_trials()}
    assert trials[0].value == 42.0 and trials[1].value == 33.0
    assert trials[1].intermediate_values == {1: 30.0, 2: 31.0}
    # ... and it goes on proposing.
    assert resumed.suggest("d") is not None


@pytest.mark.parametrize(("given", "expected"), [
    ({}, "gp"),  # the benchmark's choice (docs/BENCHMARKS.md)
    ({"metric": ["sel_overall", "remaining_params"], "mode": ["max", "min"]}, "nsga2"),
    ({"metric": ["sel_overall", "remaining_params"], "mode": ["max", "min"], "searcher": "tpe"},
     "tpe"),
    ({"searcher": "tpe"}, "tpe"),
])  # fmt: skip
def test_the_default_searcher(given: dict, expected: str) -> None:
    from search.schema import SearchConfig

    cfg = SearchConfig(**given)
    assert cfg.searcher == expected
    # What a run saves (tickets.yaml) reads back the same.
    assert SearchConfig(**cfg.model_dump()).searcher == expected


@pytest.mark.parametrize("searcher", ["gp", "nsga2"])
def test_gp_and_nsga2_sweeps_run_on_a_real_study(
    ray_session, tiny_bench: Bench, tiny_stage1: Path, tmp_path: Path, searcher: str
) -> None:
    """GP (the default) past its startup trials, and NSGA-II over two objectives and budgets."""
    extra = ({"startup_trials": 2} if searcher == "gp" else
             {"metric": ["sel_overall", "remaining_params"], "mode": ["max", "min"],
              "budgets": [0.3, 0.6]})  # fmt: skip
    config = sweep_config(tiny_bench, tiny_stage1, tmp_path, searcher=searcher, **extra)
    result = CliRunner().invoke(app, ["search", str(config), "pruning.epochs=1"])
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "runs" / "sweep"
    trials = pd.read_parquet(run_dir / "trials.parquet")
    assert len(trials) == 4 and (trials["status"] == "finished").all()
    study = optuna.load_study(study_name="sweep", storage=f"sqlite:///{run_dir / 'study.db'}")
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 4
    sizes = tiny_stage1_sizes(tiny_stage1)
    total = sum(sizes[g] for g in ("language", "visual", "cross"))
    for row in trials.itertuples():
        s = sum(getattr(row, f"s_{g}") * sizes[g] for g in ("language", "visual", "cross")) / total
        assert s == pytest.approx(row.s_overall, abs=1e-9)
    if searcher == "gp":
        saved = yaml.safe_load((run_dir / "tickets.yaml").read_text())["search"]
        assert saved["searcher"] == "gp" and saved["startup_trials"] == 2
        assert trials["s_overall"].eq(0.5).all()
        # Four distinct points, two of them GP's own after the 2 startup trials.
        assert trials[["u_language", "u_visual"]].round(9).drop_duplicates().shape[0] == 4
    else:
        assert len(study.directions) == 2
        assert {t.values[1] for t in study.trials} <= set(trials["remaining_params"])
        assert set(trials["s_overall"].round(9)) <= {0.3, 0.6}
