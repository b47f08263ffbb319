"""A sweep's driver as the files of its run directory see it: running, finished or interrupted.

`RUN_DIR/driver.json` says which process drives the sweep (`pid`, `host`) and its `state`:
`running` while `tickets search` or `tickets resume` runs, then `finished` (the searcher ran out
of trials), `stopped` (a Tune stopper, e.g. a benchmark's stop-at-target rule, ended it) or
`interrupted` (Ctrl-C, or trials left unfinished). A driver killed with SIGKILL
leaves `running` behind; on its own host a dead pid tells, so the sweep reads as interrupted.
Commands in other processes (`status`, `results`) read this without joining Ray.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vqa.atomic import write_json

DRIVER_FILE = "driver.json"
UNFINISHED = ("running", "paused", "pending")
"""Statuses of a trial that has not ended. Ray reads a trial that was running back from its
experiment snapshot as pending, so one that has reported an epoch is told apart by that."""


RUN_DIRS: dict[str, Path] = {}
"""Sweep name -> its run directory in this driver's process. Tune pickles the sweep's callbacks
and searcher with the paths of the process that started it; a resume of a sweep copied, moved
or fetched elsewhere registers where it now is, and they write and read there."""


def current_run_dir(run_dir: Path) -> Path:
    """Where the sweep whose run directory was `run_dir` lives in this process."""
    return RUN_DIRS.get(Path(run_dir).name, Path(run_dir))


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def mark_running(run_dir: Path) -> None:
    """Record this process as the sweep's driver."""
    write_json(Path(run_dir) / DRIVER_FILE, {"state": "running", "pid": os.getpid(),
               "host": socket.gethostname(), "started_at": _now()})  # fmt: skip


ENDED = ("finished", "stopped")
"""Driver states of a sweep that ended by itself: nothing to resume."""


def mark_ended(run_dir: Path, state: str) -> None:
    """Record the driver's end: `finished`, `stopped` or `interrupted`."""
    path = Path(run_dir) / DRIVER_FILE
    record = json.loads(path.read_text()) if path.is_file() else {}
    write_json(path, {**record, "state": state, "ended_at": _now()})


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def driver_record(run_dir: Path) -> dict[str, Any]:
    """driver.json with `state` corrected for a driver that died on this host; `{"state":
    "unknown"}` for a sweep started before driver.json existed."""
    path = Path(run_dir) / DRIVER_FILE
    if not path.is_file():
        return {"state": "unknown"}
    record = json.loads(path.read_text())
    local = record.get("host") == socket.gethostname()
    if record.get("state") == "running" and local and not _alive(int(record.get("pid", -1))):
        record["state"] = "interrupted"
    return record


def mark_interrupted_trials(trials: Any, run_dir: Path) -> Any:
    """`trials` (trials.parquet rows read from Ray's snapshot) with the status of each trial
    that reported an epoch and has not ended set to `running` while a driver runs the sweep,
    `early_stopped` when a stopper ended the sweep, else `interrupted`; trials that never
    reported stay `pending`."""
    if trials.empty:
        return trials
    trials = trials.copy()
    started = trials["status"].isin(UNFINISHED) & (trials["epochs"].fillna(0) > 0)
    state = driver_record(run_dir)["state"]
    status = {"running": "running", "stopped": "early_stopped"}.get(state, "interrupted")
    trials.loc[started, "status"] = status
    if status == "early_stopped" and "early_stopped" in trials:
        trials.loc[started, "early_stopped"] = True
    return trials


def owns(run_dir: Path) -> bool:
    """Whether this process is the driver driver.json names."""
    record = driver_record(run_dir)
    return record.get("pid") == os.getpid() and record.get("host") == socket.gethostname()


@dataclass(frozen=True)
class Outcome:
    """How a sweep's command ends: exit 130 when interrupted, 1 when every trial failed."""

    interrupted: bool
    failed: list[str]
    total: int

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 130
        return 1 if self.total and len(self.failed) == self.total else 0

    def lines(self, run_dir: Path) -> list[str]:
        """What the command prints last; the very last line of an interrupted sweep is the
        command that continues it."""
        out = []
        if self.failed:
            which = "every trial" if len(self.failed) == self.total else (
                f"{len(self.failed)} of {self.total} trials")  # fmt: skip
            out.append(f"failed: {which} ({', '.join(self.failed)}); the error column of "
                       f"{Path(run_dir) / 'trials.parquet'} says why")  # fmt: skip
        if self.interrupted:
            out.append(f"interrupted; continue with: tickets resume {run_dir}")
        return out


def _ray_client() -> bool:
    try:
        from ray.util.client import ray as client
    except ImportError:
        return False
    return bool(client.is_connected())


def outcome(trials: Any, interrupted: bool) -> Outcome:
    if not trials.empty:  # a warm start's rows are earlier sweeps' trials, not this one's
        trials = trials[trials["status"] != "warm_start"]
    failed = [] if trials.empty else list(trials.loc[trials["status"] == "error", "trial_id"])
    return Outcome(interrupted=interrupted, failed=failed, total=len(trials))


def fit_noting_interrupt(fit: Callable[[], Any]) -> bool:
    """Run `fit` (Tuner.fit); True when a SIGINT ended it early.

    Tune catches the first SIGINT itself, stops the trials, saves the experiment and returns; its
    handler then puts back the handler it found. A marker installed before tells whether that
    happened. Without Tune's handler (TUNE_DISABLE_SIGINT_HANDLER) the marker raises
    KeyboardInterrupt, as Python would."""

    def marker(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread() or _ray_client():
        # Signal handlers belong to the main thread, and a Ray Client's Tune loop runs on the
        # cluster: Tune installs none here. The unended-trials check still tells.
        fit()
        return False
    previous = signal.signal(signal.SIGINT, marker)
    try:
        fit()
        return signal.getsignal(signal.SIGINT) is marker and not int(
            os.getenv("TUNE_DISABLE_SIGINT_HANDLER", "0")
        )
    finally:
        signal.signal(signal.SIGINT, previous)
