"""A sweep as its user lives it, with the installed `tickets` in fresh processes and real signals:
epoch lines while it runs, `tickets status` from another process, Ctrl-C (exit 130, the resume
command last), `tickets resume` to the end, a finished sweep's resume, growing it, reading a copy
of it elsewhere, a sweep whose every trial fails (exit 1), and a failed start (exit 2)."""

from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml
from ray.tune.stopper import Stopper

from search.driver import Outcome
from tests.conftest import TICKETS, Bench, run_tickets, tickets_env
from tests.test_search import sweep_config

pytestmark = [pytest.mark.ray, pytest.mark.slow]
EPOCHS = 32
EPOCH_LINE = re.compile(
    r"^\[\d\d:\d\d\] (\w+) L [\d.]+ V [\d.]+ X [\d.]+ \(s 0\.50\) epoch (\d+)/32: "
    r"sel_overall [\d.]+ \(best so far [\d.]+\)$",
    re.M,
)


def _config(bench: Bench, stage1: Path, out: Path, epochs: int, **search) -> Path:
    path = sweep_config(bench, stage1, out, **search)
    raw = yaml.safe_load(path.read_text())
    raw["pruning"]["epochs"] = epochs
    path.write_text(yaml.safe_dump(raw))
    return path


class Flow:
    """One sweep taken through its life; each step's outputs kept for the tests below."""

    def __init__(self, root: Path, config: Path) -> None:
        self.root, self.config = root, config
        self.run_dir = root / "runs" / "sweep"
        self.steps: dict[str, subprocess.CompletedProcess] = {}
        self.tables: dict[str, pd.DataFrame] = {}
        self.driver: dict = {}


@pytest.fixture(scope="module")
def flow(tiny_bench: Bench, tiny_stage1: Path, tmp_path_factory: pytest.TempPathFactory) -> Flow:
    """Two concurrent TPE trials of 32 epochs, a checkpoint every 2, interrupted with SIGINT
    once a trial is past epoch 3; `tickets status` read before the interrupt lands."""
    root = tmp_path_factory.mktemp("lifecycle")
    flow = Flow(root, _config(tiny_bench, tiny_stage1, root, EPOCHS, num_samples=2,
                              max_concurrent_trials=2, checkpoint_every=2))  # fmt: skip
    proc = subprocess.Popen([TICKETS, "search", str(flow.config)], env=tickets_env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    out: list[str] = []
    err: list[str] = []
    seen = threading.Event()
    latest = {"epoch": 0}

    def read_stdout() -> None:
        for line in proc.stdout:
            out.append(line)
            m = EPOCH_LINE.match(line.rstrip("\n"))
            if m:
                latest["epoch"] = int(m.group(2))
                if latest["epoch"] >= 4:
                    seen.set()

    readers = [threading.Thread(target=read_stdout, daemon=True),
               threading.Thread(target=lambda: err.extend(proc.stderr), daemon=True)]  # fmt: skip
    for r in readers:
        r.start()
    assert seen.wait(timeout=600), "".join(out)[-3000:] + "".join(err)[-3000:]
    # Both from other processes at once while the sweep runs.
    side = {"resume_running": ("resume",), "status_running": ("status",)}
    threads = [threading.Thread(target=lambda k=k, a=a: flow.steps.__setitem__(
        k, run_tickets(*a, str(flow.run_dir)))) for k, a in side.items()]  # fmt: skip
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    # Interrupt with epochs to go (the trials must still be running for the test to mean it).
    assert latest["epoch"] <= EPOCHS - 4, "the trials ran out before the interrupt"
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=300)
    for r in readers:
        r.join(timeout=30)
    flow.steps["search"] = subprocess.CompletedProcess(proc.args, proc.returncode, "".join(out),
                                                       "".join(err))  # fmt: skip
    flow.tables["interrupted"] = pd.read_parquet(flow.run_dir / "trials.parquet")
    flow.driver = json.loads((flow.run_dir / "driver.json").read_text())
    flow.steps["status_interrupted"] = run_tickets("status", str(flow.run_dir))
    flow.steps["resume"] = run_tickets("resume", str(flow.run_dir))
    flow.tables["resumed"] = pd.read_parquet(flow.run_dir / "trials.parquet")
    # A RAY_ADDRESS nobody listens on: were Ray started, the command would exit 2.
    nowhere = f"127.0.0.1:{_free_port()}"
    flow.steps["resume_finished"] = run_tickets("resume", str(flow.run_dir), RAY_ADDRESS=nowhere)
    flow.steps["resume_bad"] = run_tickets("resume", str(flow.run_dir), "search.lr=0.1")
    flow.steps["grow"] = run_tickets("resume", str(flow.run_dir), "search.num_samples=3")
    flow.tables["grown"] = pd.read_parquet(flow.run_dir / "trials.parquet")
    return flow


def test_a_running_sweep_prints_a_line_per_epoch_and_its_status_reads_from_another_process(
    flow: Flow,
) -> None:
    out = flow.steps["search"].stdout
    lines = EPOCH_LINE.findall(out)
    assert {trial for trial, _ in lines} == set(flow.tables["interrupted"]["trial_id"])
    assert len({trial for trial, epoch in lines if epoch == "1"}) == 2
    status = flow.steps["status_running"]
    assert status.returncode == 0, status.stderr
    assert f"sweep sweep ({flow.run_dir}): running (driver pid" in status.stdout
    assert re.search(r"^trials: 2 of 2 started; running 2$", status.stdout, re.M), status.stdout
    assert re.search(r"^trial-epochs: \d+ spent, 64 planned \(2 trials x 32 epochs\)$",
                     status.stdout, re.M), status.stdout  # fmt: skip
    assert re.search(r"^time left: about \d+ s \([\d.]+ s per trial-epoch, 2 at once\)$",
                     status.stdout, re.M), status.stdout  # fmt: skip
    assert "best so far by sel_overall (max):" in status.stdout
    # A second driver for the same sweep is refused while the first runs.
    twice = flow.steps["resume_running"]
    assert twice.returncode == 2 and "on this host is running this sweep" in twice.stderr


def test_ctrl_c_exits_130_naming_the_resume_command_and_marks_trials_interrupted(
    flow: Flow,
) -> None:
    search = flow.steps["search"]
    assert search.returncode == 130, search.stdout[-2000:] + search.stderr[-2000:]
    last = search.stdout.strip().splitlines()[-1]
    assert last == f"interrupted; continue with: tickets resume {flow.run_dir}"
    trials = flow.tables["interrupted"]
    assert "interrupted" in set(trials["status"])
    assert set(trials["status"]) <= {"interrupted", "finished"}
    assert not trials["early_stopped"].any()
    assert flow.driver["state"] == "interrupted"
    status = flow.steps["status_interrupted"]
    assert status.returncode == 0 and f"({flow.run_dir}): interrupted at " in status.stdout
    assert f"once resumed (tickets resume {flow.run_dir})" in status.stdout
    # Short trial directories, each with its stage-2 log.
    for trial_id in trials["trial_id"]:
        log = flow.run_dir / f"trial_{trial_id}" / "stage2.log"
        assert log.is_file()
        assert "prune epoch 1/32: loss" in log.read_text()


def test_resume_continues_from_checkpoints_every_second_epoch(flow: Flow) -> None:
    resume = flow.steps["resume"]
    assert resume.returncode == 0, resume.stdout[-2000:] + resume.stderr[-2000:]
    assert "interrupted" not in resume.stdout
    trials = flow.tables["resumed"]
    assert (trials["status"] == "finished").all() and len(trials) == 2
    assert trials["trial_id"].is_unique
    continued = trials[trials["resumed_from_epoch"] > 0]
    was = flow.tables["interrupted"].set_index("trial_id")["status"]
    assert set(continued["trial_id"]) == set(was[was == "interrupted"].index)
    # search.checkpoint_every: 2. Every report of every trial (Ray's result.json) carries a
    # checkpoint exactly at the even epochs and at the last one; so a restart is from an even
    # epoch, none after the last one the interrupted sweep reported.
    for trial_id in trials["trial_id"]:
        lines = (flow.run_dir / f"trial_{trial_id}" / "result.json").read_text().splitlines()
        reports = [json.loads(line) for line in lines if line.strip()]
        for r in reports:
            final = r.get("trial_complete") or r["epochs_done"] == EPOCHS
            has = r.get("checkpoint_dir_name") is not None
            assert has == (final or r["epochs_done"] % 2 == 0), (trial_id, r["epochs_done"])
    reported = flow.tables["interrupted"].set_index("trial_id")["epochs"]
    for _, row in continued.iterrows():
        start, last = row["resumed_from_epoch"], reported[row["trial_id"]]
        assert start % 2 == 0 and 0 < start <= last, (row["trial_id"], start, last)
    for _, row in continued.iterrows():
        log = flow.run_dir / f"trial_{row['trial_id']}"
        log /= f"stage2.from-epoch-{row['resumed_from_epoch']}.log"
        assert f"restarted after epoch {row['resumed_from_epoch']}" in log.read_text()
    assert json.loads((flow.run_dir / "driver.json").read_text())["state"] == "finished"


def test_resuming_a_finished_sweep_says_so_without_starting_ray(flow: Flow) -> None:
    again = flow.steps["resume_finished"]
    assert again.returncode == 0, again.stderr
    assert "the sweep is finished (2 trials); nothing to resume" in again.stdout
    bad = flow.steps["resume_bad"]
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
    assert "a resume takes only search.num_samples=N" in bad.stderr


def test_resume_with_more_samples_grows_the_sweep_from_the_same_study(flow: Flow) -> None:
    grow = flow.steps["grow"]
    assert grow.returncode == 0, grow.stdout[-2000:] + grow.stderr[-2000:]
    before, after = flow.tables["resumed"], flow.tables["grown"]
    assert len(after) == 3 and (after["status"] == "finished").all()
    kept = after.set_index("trial_id").loc[before["trial_id"]]
    for column in ("sel_overall", "test_overall", "kept_epoch", "s_language", "s_visual"):
        assert list(kept[column]) == list(before[column]), column
    study = optuna.load_study(study_name="sweep", storage=f"sqlite:///{flow.run_dir}/study.db")
    states = [t.state for t in study.get_trials()]
    assert states == [optuna.trial.TrialState.COMPLETE] * 3
    saved = yaml.safe_load((flow.run_dir / "tickets.yaml").read_text())
    assert saved["search"]["num_samples"] == 3


def test_a_copied_sweep_is_read_where_it_now_is(flow: Flow, tmp_path: Path) -> None:
    copy = tmp_path / "laptop" / "sweep"
    shutil.copytree(flow.run_dir, copy)
    away = flow.run_dir.with_name("sweep-away")
    flow.run_dir.rename(away)  # reading the original would now fail
    try:
        # Python lists every module it imports on stderr: the read-only commands load no model.
        results = run_tickets("results", str(copy), PYTHONPROFILEIMPORTTIME="1")
        assert results.returncode == 0, results.stderr[-2000:]
        assert f"wrote {copy / 'trials.parquet'} (3 trials)" in results.stdout
        status = run_tickets("status", str(copy), PYTHONPROFILEIMPORTTIME="1")
        assert status.returncode == 0 and f"({copy}): finished" in status.stdout
        for command in (results, status):
            imported = {line.rsplit("|", 1)[1].strip() for line in command.stderr.splitlines()
                        if line.startswith("import time:")}  # fmt: skip
            assert "ray.tune" in imported and not {"torch", "transformers"} & imported
        pareto = run_tickets("pareto", str(copy), "--objectives", "sel_overall:max,params:min")
        assert pareto.returncode == 0, pareto.stderr
        assert (copy / "pareto.parquet").is_file()
        best = pd.read_parquet(copy / "trials.parquet").iloc[0]["trial_id"]
        export = run_tickets("export", str(copy), "--trial", best, str(tmp_path / "exported"))
        assert export.returncode == 0, export.stderr
        assert (tmp_path / "exported" / "masks.safetensors").is_file()
        # Grown where it now is: the new trial is written into the copy, not the original.
        grown = run_tickets("resume", str(copy), "search.num_samples=4")
        assert grown.returncode == 0, grown.stdout[-2000:] + grown.stderr[-2000:]
        trials = pd.read_parquet(copy / "trials.parquet")
        new = set(trials["trial_id"]) - set(pd.read_parquet(away / "trials.parquet")["trial_id"])
        assert len(trials) == 4 and len(new) == 1 and (trials["status"] == "finished").all()
        (added,) = new
        assert (copy / f"trial_{added}").is_dir() and not (away / f"trial_{added}").exists()
    finally:
        away.rename(flow.run_dir)


def test_a_sweep_whose_every_trial_fails_exits_1(
    tiny_bench: Bench, tiny_stage1: Path, tmp_path: Path
) -> None:
    config = _config(tiny_bench, tiny_stage1, tmp_path, 2, num_samples=2,
                     max_concurrent_trials=2, searcher="random",
                     failure={"max_retries": 0, "inject": {"epoch": 1, "times": 9}})  # fmt: skip
    run = run_tickets("search", str(config))
    assert run.returncode == 1, run.stdout[-2000:] + run.stderr[-2000:]
    trials = pd.read_parquet(tmp_path / "runs" / "sweep" / "trials.parquet")
    assert (trials["status"] == "error").all() and len(trials) == 2
    assert re.search(rf"^failed: every trial \({trials['trial_id'].iloc[0]}, "
                     rf"{trials['trial_id'].iloc[1]}\)", run.stdout, re.M), run.stdout  # fmt: skip
    assert re.search(r"^\[\d\d:\d\d\] \w+ L .* failed: .*injected fault", run.stdout, re.M)


def test_some_failed_trials_leave_exit_0_and_a_line_naming_them() -> None:
    trials = pd.DataFrame({"trial_id": ["a", "b", "c"], "status": ["finished", "error", "error"]})
    from search.driver import outcome

    result = outcome(trials, interrupted=False)
    assert result.exit_code == 0 and result.failed == ["b", "c"]
    assert result.lines(Path("RUN")) == [
        "failed: 2 of 3 trials (b, c); the error column of RUN/trials.parquet says why"
    ]
    assert Outcome(interrupted=True, failed=["b"], total=3).exit_code == 130


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("how", ["--address", "RAY_ADDRESS"])
def test_a_cluster_that_cannot_be_reached_leaves_no_run_behind(
    how: str, tiny_bench: Bench, tiny_stage1: Path, tmp_path: Path
) -> None:
    config = _config(tiny_bench, tiny_stage1, tmp_path, 2)
    address = f"127.0.0.1:{_free_port()}"
    args = ["search", str(config), "search.connect_timeout_s=2"]
    extra = {"RAY_ADDRESS": address} if how == "RAY_ADDRESS" else {}
    run = run_tickets(*args, *(["--address", address] if how == "--address" else []), **extra)
    assert run.returncode == 2, run.stdout + run.stderr
    assert run.stderr.startswith(f"error: --address {address}: no Ray cluster reachable within 2 s")
    assert run.stderr.count("\n") == 1
    assert not (tmp_path / "runs" / "sweep").exists()  # so `tickets search` can simply be rerun


def test_a_sweep_on_uri_storage_survives_the_loss_of_the_drivers_disk(
    tiny_bench: Bench, tiny_stage1: Path, tmp_path: Path
) -> None:
    store = f"file://{tmp_path / 'store'}"  # a pyarrow filesystem URI, as s3:// is
    config = _config(tiny_bench, tiny_stage1, tmp_path, 2, num_samples=2,
                     max_concurrent_trials=2, storage_path=store)  # fmt: skip
    driver, laptop = tmp_path / "driver", tmp_path / "laptop"
    driver.mkdir()
    laptop.mkdir()

    def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
        return subprocess.run([TICKETS, *args], env=tickets_env(), cwd=cwd, capture_output=True,
                              text=True, timeout=600)  # fmt: skip

    first = run("search", str(config), cwd=driver)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    copied = tmp_path / "store" / "sweep" / "tickets"
    for name in ("tickets.yaml", "study.db", "driver.json", "trials.parquet", "epochs.parquet"):
        assert (copied / name).is_file(), name
    before = pd.read_parquet(copied / "trials.parquet")
    assert len(before) == 2 and (before["status"] == "finished").all()
    shutil.rmtree(driver / "runs")  # the driver's disk is gone

    status = run("status", f"{store}/sweep", cwd=laptop)
    assert status.returncode == 0, status.stderr
    assert f"sweep sweep ({laptop / 'runs' / 'sweep'}): finished" in status.stdout
    grow = run("resume", f"{store}/sweep", "search.num_samples=3", cwd=laptop)
    assert grow.returncode == 0, grow.stdout[-2000:] + grow.stderr[-2000:]
    after = pd.read_parquet(laptop / "runs" / "sweep" / "trials.parquet")
    assert len(after) == 3 and set(before["trial_id"]) < set(after["trial_id"])
    # The searcher went on with the study it had: the uploaded one, relocated to the laptop.
    url = f"sqlite:///{laptop / 'runs' / 'sweep' / 'study.db'}"
    study = optuna.load_study(study_name="sweep", storage=url)
    assert [t.number for t in study.get_trials()] == [0, 1, 2]
    uploaded = pd.read_parquet(copied / "trials.parquet")
    assert len(uploaded) == 3
    assert not (driver / "runs").exists()  # nothing was written where the sweep used to be


class StopAfter(Stopper):
    """Ends the whole sweep after `reports` epoch reports (as bench_search's target rule does);
    module-level, since Tune pickles the stopper with the sweep."""

    def __init__(self, reports: int) -> None:
        self.reports, self.seen = reports, 0

    def __call__(self, trial_id: str, result: dict) -> bool:
        self.seen += 1
        return False

    def stop_all(self) -> bool:
        return self.seen >= self.reports


def test_a_sweep_its_stopper_ends_is_stopped_and_its_unended_trials_early_stopped(
    ray_session, tiny_bench: Bench, tiny_stage1: Path, tmp_path: Path
) -> None:
    from search.config import load_config
    from search.tuner import run_search, sweep_outcome

    config = _config(tiny_bench, tiny_stage1, tmp_path, 12, num_samples=2,
                     max_concurrent_trials=2)  # fmt: skip
    run_dir = run_search(load_config(config), None, None, echo=lambda m: None, stop=StopAfter(3))
    assert json.loads((run_dir / "driver.json").read_text())["state"] == "stopped"
    trials = pd.read_parquet(run_dir / "trials.parquet")
    assert set(trials["status"]) == {"early_stopped"}, trials[["trial_id", "status", "epochs"]]
    assert trials["early_stopped"].all() and (trials["epochs"] < 12).all()
    assert sweep_outcome(run_dir).exit_code == 0


CLUSTER = """
import sys
from ray.cluster_utils import Cluster
cluster = Cluster(initialize_head=True, connect=False,
                  head_node_args={"num_cpus": 1, "include_dashboard": False})
print(cluster.address, flush=True)
sys.stdin.read()  # until the test closes it
cluster.shutdown()
"""


def test_a_cluster_that_wants_a_token_we_lack_is_one_line_and_leaves_no_run(
    tiny_bench: Bench, tiny_stage1: Path, tmp_path: Path
) -> None:
    # A head node with token authentication, in a process of its own: Ray reads the mode once.
    token = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "t" * 32, "HOME": str(tmp_path)}
    head = subprocess.Popen([sys.executable, "-c", CLUSTER], env=tickets_env(**token), text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # fmt: skip
    try:
        address = head.stdout.readline().strip()
        assert address, "the head node did not start"
        config = _config(tiny_bench, tiny_stage1, tmp_path, 2)
        home = tmp_path / "home"  # no ~/.ray/auth_token there
        home.mkdir()
        env = {k: v for k, v in tickets_env(HOME=str(home)).items() if not k.startswith("RAY_AUTH")}
        run = subprocess.run([TICKETS, "search", str(config), "--address", address],
                             env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
        assert run.returncode == 2, run.stdout[-2000:] + run.stderr[-2000:]
        line = run.stderr.strip().splitlines()[-1]
        assert line.startswith(f"error: --address {address}: cannot join the Ray cluster")
        assert "token" in line.lower()
        # Ray's own retry warnings are silenced: ours is the only line.
        assert run.stderr.count("\n") == 1, run.stderr[-2000:]
        assert not (tmp_path / "runs" / "sweep").exists()
    finally:
        head.stdin.close()
        head.wait(timeout=120)
