"""Every command that reads a sweep's run directory, as the installed `tickets` in a fresh
process (no Ray runtime of the sweep's): `results`, `pareto`, `export --trial`, `resume`; on real
sweeps made by a real `tickets search` subprocess, one of them with failed trials."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import TICKETS, Bench, tickets_env
from tests.test_search import sweep_config
from tests.test_umask import assert_shared

pytestmark = pytest.mark.ray


def tickets(*args: str, umask: int = 0o022, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the installed `tickets` in a fresh process with `umask`; its output as text."""
    return subprocess.run([TICKETS, *args], env=tickets_env(), capture_output=True, text=True,
                          timeout=timeout, umask=umask)  # fmt: skip


@dataclass
class Sweep:
    """A finished sweep: its run directory, the umask its `tickets search` ran under, the mode
    of the trials.parquet that sweep wrote, and when the command began and ended."""

    run_dir: Path
    umask: int
    trials_mode: int
    began: pd.Timestamp
    ended: pd.Timestamp


def _search(root: Path, bench: Bench, stage1: Path, name: str, umask: int, exit_code: int = 0,
            **search) -> Sweep:  # fmt: skip
    config = sweep_config(bench, stage1, root, **search)
    began = pd.Timestamp.now(tz="UTC")
    done = tickets("search", str(config), "--name", name, umask=umask)
    assert done.returncode == exit_code, done.stderr[-3000:]
    run_dir = root / "runs" / name
    mode = (run_dir / "trials.parquet").stat().st_mode & 0o777
    return Sweep(run_dir, umask, mode, began, pd.Timestamp.now(tz="UTC"))


@pytest.fixture(scope="module")
def clean(tiny_bench: Bench, tiny_stage1: Path, tmp_path_factory: pytest.TempPathFactory) -> Sweep:
    """Three TPE trials of two epochs, all finished (umask 0o002: a group-writable setup)."""
    return _search(tmp_path_factory.mktemp("clean"), tiny_bench, tiny_stage1, "clean", 0o002,
                   num_samples=3)  # fmt: skip


@pytest.fixture(scope="module")
def failing(
    tiny_bench: Bench, tiny_stage1: Path, tmp_path_factory: pytest.TempPathFactory
) -> Sweep:
    """Two TPE trials that each fail once after their first epoch, with no retries: both end as
    `error` (the fault ledger lets a later attempt pass, which a resume makes)."""
    inject = {"epoch": 1, "kind": "raise", "times": 1}
    # Every trial failed: `tickets search` exits 1 (README: exit codes).
    return _search(tmp_path_factory.mktemp("failing"), tiny_bench, tiny_stage1, "failing", 0o022,
                   exit_code=1, num_samples=2,
                   failure={"max_retries": 0, "inject": inject})  # fmt: skip


@pytest.fixture(scope="module")
def failing_results(failing: Sweep, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`tickets results` of the failing sweep in a fresh process, its Parquet files removed first
    (as after a `kill -9` before any was written); a copy of what it wrote (a later test resumes
    the sweep, which rewrites them)."""
    for name in ("trials.parquet", "epochs.parquet"):
        (failing.run_dir / name).unlink()
    done = tickets("results", str(failing.run_dir))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "wrote" in done.stdout and "(2 trials)" in done.stdout
    copy = tmp_path_factory.mktemp("failing_results")
    for name in ("trials.parquet", "epochs.parquet"):
        shutil.copy2(failing.run_dir / name, copy / name)
    return copy


def test_results_in_a_fresh_process_reads_each_failed_trials_error(failing_results: Path) -> None:
    trials = pd.read_parquet(failing_results / "trials.parquet")
    assert len(trials) == 2 and (trials["status"] == "error").all()
    # The last line of Ray's error file: the exception the trial raised.
    assert (
        trials["error"]
        .str.contains("RuntimeError: injected fault at epoch 1 (attempt 1)", regex=False)
        .all()
    )
    assert (trials["retries"] == 1).all() and (trials["epochs"] == 1).all()
    epochs = pd.read_parquet(failing_results / "epochs.parquet")
    assert sorted(epochs["trial_id"]) == sorted(trials["trial_id"])  # epoch 1 of each
    assert (epochs["epoch"] == 1).all()


def test_results_in_a_fresh_process_rebuilds_what_the_sweep_wrote(clean: Sweep) -> None:
    path = clean.run_dir / "trials.parquet"
    written = pd.read_parquet(path)
    path.unlink()
    (clean.run_dir / "epochs.parquet").unlink()
    done = tickets("results", str(clean.run_dir), umask=clean.umask)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "trials: finished 3" in done.stdout
    rebuilt = pd.read_parquet(path)
    assert path.stat().st_mode & 0o777 == 0o664  # rewritten under the same umask, 0o002
    pd.testing.assert_frame_equal(rebuilt, written)
    assert rebuilt["error"].isna().all() and (rebuilt["status"] == "finished").all()


def test_pareto_and_export_in_fresh_processes(clean: Sweep, failing: Sweep, tmp_path: Path) -> None:
    done = tickets("pareto", str(clean.run_dir), "--objectives",
                   "sel_overall:max,realised_language:max")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    trials = pd.read_parquet(clean.run_dir / "trials.parquet").set_index("trial_id")
    front = pd.read_parquet(clean.run_dir / "pareto.parquet")
    assert 1 <= len(front) <= 3 and set(front["trial_id"]) <= set(trials.index)
    best = trials["sel_overall"].idxmax()
    assert trials.loc[best, "sel_overall"] == front["sel_overall"].max()
    assert (clean.run_dir / "pareto.png").stat().st_size > 0

    out = tmp_path / "exported"
    done = tickets("export", str(clean.run_dir), "--trial", best, str(out), umask=0o002)
    assert done.returncode == 0, done.stderr[-3000:]
    saved = json.loads((out / "sparsity.json").read_text())
    for group in ("language", "visual", "cross", "overall"):
        assert saved[group]["realised"] == pytest.approx(trials.loc[best, f"realised_{group}"],
                                                         abs=1e-12)  # fmt: skip
    assert (out / "config.json").is_file()
    assert_shared(out, 0o002)  # a model directory the group can share

    errored = pd.read_parquet(failing.run_dir / "trials.parquet")["trial_id"].iloc[0]
    refused = tickets("export", str(failing.run_dir), "--trial", errored, str(tmp_path / "no"))
    assert refused.returncode == 2 and "did not finish (error)" in refused.stderr
    assert not (tmp_path / "no").exists()


def test_resume_in_a_fresh_process_reruns_the_failed_trials(
    failing: Sweep, failing_results: Path
) -> None:
    before = pd.read_parquet(failing_results / "trials.parquet")
    done = tickets("resume", str(failing.run_dir))
    assert done.returncode == 0, done.stderr[-3000:]
    ids = ", ".join(before["trial_id"])
    assert f"retrying 2 failed trial(s) from their last checkpoints: {ids}" in done.stdout
    after = pd.read_parquet(failing.run_dir / "trials.parquet")
    assert sorted(after["trial_id"]) == sorted(before["trial_id"])  # no trial twice, none new
    assert (after["status"] == "finished").all() and after["error"].isna().all()
    assert (after["resumed_from_epoch"] == 1).all()  # from the checkpoint of epoch 1
    epochs = pd.read_parquet(failing.run_dir / "epochs.parquet")
    for _, group in epochs.groupby("trial_id"):
        assert group["epoch"].tolist() == [1, 2]


def test_a_sweeps_files_follow_the_umask(clean: Sweep, failing: Sweep, tmp_path: Path) -> None:
    """trials.parquet as `tickets search` wrote it (umask 0o002 and 0o022), and a model
    directory exported under 0o022."""
    assert (clean.umask, clean.trials_mode) == (0o002, 0o664)
    assert (failing.umask, failing.trials_mode) == (0o022, 0o644)
    best = pd.read_parquet(clean.run_dir / "trials.parquet")["trial_id"].iloc[0]
    out = tmp_path / "exported"
    done = tickets("export", str(clean.run_dir), "--trial", best, str(out), umask=0o022)
    assert done.returncode == 0, done.stderr[-3000:]
    assert_shared(out, 0o022)


def test_two_sweeps_read_together_with_one_schema(clean: Sweep, failing_results: Path) -> None:
    """The trials and epochs of a sweep without failures and of one with only failures, read as
    one dataset by pyarrow and by DuckDB: every shared column has one type."""
    import duckdb
    import pyarrow as pa
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    for name in ("trials.parquet", "epochs.parquet"):
        files = [str(clean.run_dir / name), str(failing_results / name)]
        schemas = [pq.read_schema(f) for f in files]
        for field in schemas[0]:
            other = schemas[1].field(field.name) if field.name in schemas[1].names else field
            assert other.type == field.type, (name, field.name, field.type, other.type)
        table = ds.dataset(files, schema=pa.unify_schemas(schemas), format="parquet").to_table()
        assert table.num_rows == sum(pq.read_metadata(f).num_rows for f in files)
        assert set(table.column("sweep").to_pylist()) == {"clean", "failing"}

    trials = str(clean.run_dir / "trials.parquet"), str(failing_results / "trials.parquet")
    con = duckdb.connect()
    rel = f"read_parquet([{', '.join(repr(f) for f in trials)}], union_by_name=true)"
    types = {row[0]: row[1] for row in con.execute(f"DESCRIBE SELECT * FROM {rel}").fetchall()}
    assert types["error"] == "VARCHAR" and types["sweep"] == "VARCHAR"
    for count in ("retries", "epochs", "kept_epoch", "resumed_from_epoch", "remaining_params",
                  "number"):  # fmt: skip
        assert types[count] == "BIGINT", count
    for column in ("s_language", "realised_overall", "sel_overall", "test_overall", "wall_s"):
        assert types[column] == "DOUBLE", column
    assert types["started_at"] == types["ended_at"] == "TIMESTAMP WITH TIME ZONE"
    per_sweep = con.execute(f"SELECT sweep, status, count(*), count(error) FROM {rel} "
                            "GROUP BY ALL ORDER BY sweep").fetchall()  # fmt: skip
    assert per_sweep == [("clean", "finished", 3, 0), ("failing", "error", 2, 2)]
    epochs = [str(clean.run_dir / "epochs.parquet"), str(failing_results / "epochs.parquet")]
    per_sweep = con.execute("SELECT sweep, count(*), max(epoch) FROM read_parquet(?) "
                            "GROUP BY sweep ORDER BY sweep", [epochs]).fetchall()  # fmt: skip
    assert per_sweep == [("clean", 6, 2), ("failing", 2, 1)]


def test_trials_carry_their_optuna_number_and_times(clean: Sweep, failing_results: Path) -> None:
    import optuna

    trials = pd.read_parquet(clean.run_dir / "trials.parquet")
    study = optuna.load_study(study_name="clean",
                              storage=f"sqlite:///{clean.run_dir / 'study.db'}")  # fmt: skip
    assert sorted(trials["number"]) == [t.number for t in study.trials] == [0, 1, 2]
    for row in trials.itertuples():
        ot = study.trials[row.number]  # the Optuna trial that proposed this Ray trial
        assert ot.params["u_language"] == pytest.approx(row.u_language, abs=1e-12)
        assert ot.params["u_visual"] == pytest.approx(row.u_visual, abs=1e-12)
        assert ot.value == pytest.approx(row.sel_overall, abs=1e-12)
    failed = pd.read_parquet(failing_results / "trials.parquet")
    for frame, sweep in ((trials, clean), (failed, None)):
        assert frame["started_at"].notna().all() and frame["ended_at"].notna().all()
        assert (frame["started_at"] <= frame["ended_at"]).all()
        if sweep is not None:  # a trial ran within its `tickets search`, for its wall_s at least
            assert (frame["started_at"] >= sweep.began).all()
            assert (frame["ended_at"] <= sweep.ended).all()
            spans = (frame["ended_at"] - frame["started_at"]).dt.total_seconds()
            assert (spans >= frame["wall_s"] - 0.5).all(), (spans, frame["wall_s"])


def test_a_trials_saved_state_names_a_module_without_torch() -> None:
    """Tune pickles the trial-directory function into every trial's saved state by reference:
    reading that state imports its module, which must be one `tickets status` can load without
    torch; sweeps saved when it lived in `search.tuner` still find it there."""
    import ray.cloudpickle as cloudpickle

    from search.run_files import trial_dirname
    from search.tuner import trial_dirname as old_home

    pickled = cloudpickle.dumps(trial_dirname)
    assert b"search.run_files" in pickled and b"search.tuner" not in pickled
    assert old_home is trial_dirname
