"""No pickle is ever loaded: a checkpoint carrying a pickle payload is refused with one line and
its payload never runs. Parquet results are replaced atomically even when the writer is killed."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from vqa.cache import load_cache
from vqa.errors import InputError


class _Payload:
    """Unpickling this runs `touch <marker>`: what a hostile checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("loader", ["models.train", "pruning.train"])
def test_a_checkpoint_with_a_pickle_payload_is_refused(tmp_path: Path, loader: str) -> None:
    import importlib

    marker = tmp_path / "pwned"
    last = tmp_path / "last"
    last.mkdir()
    torch.save({"epoch": 1, "optimizer": _Payload(marker)}, last / "state.pt")
    resume = importlib.import_module(loader)._resume
    args = (last, None, None, None, None) + (([],) if loader == "models.train" else ())
    with pytest.raises(InputError) as err:
        resume(*args)
    message = str(err.value)
    assert message.startswith(f"{last / 'state.pt'}: unreadable training state")
    assert "\n" not in message
    assert not marker.exists()  # the payload never ran
    # Both stages read their state through the one reader, which loads weights only.
    import models.train

    assert "weights_only=True" in Path(models.train.__file__).read_text()
    assert "read_training_state(path)" in Path(importlib.import_module(loader).__file__).read_text()


def test_no_module_loads_pickle() -> None:
    root = Path(__file__).parent.parent
    for path in [*root.glob("vqa/*.py"), *root.glob("models/*.py"), *root.glob("pruning/*.py"),
                 *root.glob("search/*.py")]:  # fmt: skip
        text = path.read_text()
        assert "pickle.load" not in text, path
        for line in text.splitlines():
            if "torch.load(" in line:
                assert "weights_only=True" in line, (path, line)


WRITER = """
import sys, numpy as np, pandas as pd
from search.results import write_tables
run_dir = sys.argv[1]
rng = np.random.default_rng(0)
i = 0
while True:
    i += 1
    trials = pd.DataFrame({"trial_id": [f"t{i}"] * 20000, "v": rng.normal(size=20000)})
    write_tables(run_dir, trials, trials.head(10))
    print(i, flush=True)
"""


def test_killing_the_parquet_writer_leaves_the_previous_file_readable(tmp_path: Path) -> None:
    from search.results import write_tables

    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE,
                            text=True, cwd=Path(__file__).parent.parent)  # fmt: skip
    written = 0
    while written < 3:
        written = int(proc.stdout.readline())
    time.sleep(0.013)  # somewhere inside a later write
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    trials = pd.read_parquet(tmp_path / "trials.parquet")
    assert len(trials) == 20000 and trials["trial_id"].nunique() == 1
    assert int(trials["trial_id"].iloc[0][1:]) >= written
    assert len(pd.read_parquet(tmp_path / "epochs.parquet")) == 10
    # What a kill can leave is a hidden temporary sibling, never a partial result file; the
    # next write removes it.
    others = {p.name for p in tmp_path.iterdir()} - {"trials.parquet", "epochs.parquet"}
    assert all(n.startswith(".") and n.endswith(".tmp") for n in others), others
    write_tables(tmp_path, trials.head(1), trials.head(1))
    assert {p.name for p in tmp_path.iterdir()} == {"trials.parquet", "epochs.parquet"}


def _kill_after(args: list[str], writes: int, cwd: Path) -> int:
    """Run a writer that prints a count after each complete write; SIGKILL it at a random point
    of a later write. Returns the last count it printed."""
    proc = subprocess.Popen([sys.executable, "-c", *args], stdout=subprocess.PIPE, text=True,
                            cwd=cwd)  # fmt: skip
    stamps = []
    while len(stamps) < writes:
        line = proc.stdout.readline()
        assert line, "the writer died before the kill"
        stamps.append((int(line), time.perf_counter()))
    period = (stamps[-1][1] - stamps[0][1]) / (writes - 1)
    time.sleep(random.uniform(0.0, period))  # anywhere in the next write, renames included
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return stamps[-1][0]


CACHE_WRITER = """
import sys
from pathlib import Path
from search.config import load_config
from vqa.prepare import prepare
config = load_config(sys.argv[1]).data.model_copy(update={"cache_dir": Path(sys.argv[2])})
i = 0
while True:
    i += 1
    # Alternating settings: every call rewrites the whole cache.
    prepare(config.model_copy(update={"max_question_tokens": 12 + i % 2}))
    print(i, flush=True)
"""


@pytest.mark.parametrize("attempt", range(3))
def test_killing_the_cache_writer_leaves_a_complete_cache(
    tiny_bench, tmp_path: Path, attempt: int
) -> None:
    cache = tmp_path / "cache"
    root = Path(__file__).parent.parent
    _kill_after([CACHE_WRITER, str(tiny_bench.root / "prepare.yaml"), str(cache)], 3, root)
    data = load_cache(cache)  # complete: manifest, questions, answers, prior, tokenizer
    tokens = data.manifest["config"]["max_question_tokens"]
    assert tokens in (12, 13)
    for name in tiny_bench.data.split_names:  # every split reads back whole
        assert len(data.split(name)) == len(tiny_bench.data.split(name))
    assert {p.name for p in tmp_path.iterdir()} == {"cache"}  # the reader removed leftovers


CHECKPOINT_WRITER = """
import sys
from pathlib import Path
import torch
from models.objectives import ObjectiveConfig, build_objective
from models.train import _save_last, linear_schedule, load_checkpoint_model
from vqa.cache import load_cache
data = load_cache(sys.argv[2])
model, tokenizer = load_checkpoint_model(Path(sys.argv[1]), data)
objective = build_objective(ObjectiveConfig(name="lmh"), model.backbone.config.hidden_size)
optimizer = torch.optim.AdamW(list(model.parameters()) + list(objective.parameters()), lr=1e-3)
scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_schedule(0, 100))
i = 0
while True:
    i += 1
    with torch.no_grad():  # every version is told apart by its weights too
        model.head[-1].bias.fill_(float(i))
    _save_last(Path(sys.argv[3]), model, objective, optimizer, scheduler, tokenizer, data,
               "run: kill-test\\n", i, [{"epoch": i}], float(i))
    print(i, flush=True)
"""


@pytest.mark.parametrize("attempt", range(3))
def test_killing_the_checkpoint_writer_leaves_a_complete_checkpoint(
    tiny_bench, tiny_stage1: Path, tmp_path: Path, attempt: int
) -> None:
    from models.train import load_checkpoint_model, read_training_state

    last = tmp_path / "last"
    args = [CHECKPOINT_WRITER, str(tiny_stage1 / "best"), str(tiny_bench.data.dir), str(last)]
    written = _kill_after(args, 3, Path(__file__).parent.parent)
    state = read_training_state(last)
    assert state["epoch"] >= written and state["best"] == float(state["epoch"])
    model, _ = load_checkpoint_model(last, tiny_bench.data, head="required")
    # The weights and the training state are of the same version: never a mix of two writes.
    assert torch.all(model.head[-1].bias == float(state["epoch"]))
    assert {p.name for p in tmp_path.iterdir()} == {"last"}  # the reader removed leftovers


def test_a_directory_left_aside_between_the_fallback_renames_comes_back(tmp_path: Path) -> None:
    """Where the filesystem cannot swap directories, atomic_dir renames the old one aside first;
    a kill right then leaves only that copy. The next reader or writer puts it back."""
    from vqa.atomic import atomic_dir, recover_dir

    target = tmp_path / "best"
    with atomic_dir(target) as tmp:
        (tmp / "v").write_text("1")
    host, dead = socket.gethostname(), _dead_pid()
    os.replace(target, tmp_path / f".best.old-{host}-{dead}")  # the state a kill leaves
    (tmp_path / f".best.{host}-{dead}.abc.tmp").mkdir()  # and the half-written new one
    recover_dir(target)
    assert (target / "v").read_text() == "1"
    assert {p.name for p in tmp_path.iterdir()} == {"best"}
    with atomic_dir(target) as tmp:
        (tmp / "v").write_text("2")
    assert (target / "v").read_text() == "2"


def test_only_leftovers_of_dead_writers_of_this_host_are_removed(tmp_path: Path) -> None:
    from vqa.atomic import atomic_path, recover_dir

    target = tmp_path / "best"
    target.mkdir()
    host, dead = socket.gethostname(), _dead_pid()
    kept = {f".best.{host}-{os.getpid()}.live.tmp",  # a writer still running
            ".best.other-host-1.remote.tmp",  # a writer on another node of a shared filesystem
            f".best.old-other-host-{dead}", ".best.abc.tmp"}  # fmt: skip
    gone = {f".best.{host}-{dead}.xyz.tmp", f".best.old-{host}-{dead}"}
    for name in kept | gone:
        (tmp_path / name).mkdir()
    (tmp_path / f".best.json.{host}-{dead}.q1.tmp").write_text("half")  # atomic_path's kind
    recover_dir(target)
    assert {p.name for p in tmp_path.iterdir()} == kept | {
        "best",
        f".best.json.{host}-{dead}.q1.tmp",
    }
    with atomic_path(tmp_path / "best.json") as tmp:
        tmp.write_text("{}")
    assert {p.name for p in tmp_path.iterdir()} == kept | {"best", "best.json"}


def _dead_pid() -> int:
    """The pid of a process of this host that has exited and been reaped."""
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    return int(proc.stdout)


DASHBOARD = """
import sys
import ray
from search.config import load_config
from search.tuner import init_ray
init_ray(load_config("configs/demo.yaml", sys.argv[1:]), None)
print(ray._private.worker.global_worker.node.address_info.get("webui_url") or "", flush=True)
sys.stdin.readline()  # the test reads the socket table while the runtime is up
ray.shutdown()
"""


def _listening(port: int) -> set[str]:
    """Local addresses (hex, as in /proc/net/tcp and tcp6) of sockets listening on `port`."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, hex_port = fields[1].split(":")
            if fields[3] == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.add(address)
    return found


def _start_runtime(*overrides: str) -> tuple[str, set[str]]:
    """(dashboard URL or "", addresses listening on its port) of the runtime `init_ray` starts
    for configs/demo.yaml with `overrides`, in a separate process."""
    proc = subprocess.Popen([sys.executable, "-c", DASHBOARD, *overrides], stdout=subprocess.PIPE,
                            stdin=subprocess.PIPE, text=True,
                            cwd=Path(__file__).parent.parent)  # fmt: skip
    url = proc.stdout.readline().strip()
    listening = _listening(int(url.rsplit(":", 1)[1])) if url else set()
    proc.communicate("\n", timeout=120)
    assert proc.returncode == 0
    return url, listening


@pytest.mark.skipif(not Path("/proc/net/tcp").is_file(), reason="reads Linux's socket table")
def test_the_dashboard_is_off_by_default_and_on_loopback_when_enabled() -> None:
    url, _ = _start_runtime()
    assert url == ""  # no dashboard for the runtime `tickets search` starts
    url, listening = _start_runtime("search.dashboard=true")
    assert url.startswith("127.0.0.1:")
    # Loopback only: 127.0.0.1 is 0100007F in the table's little-endian hex; nothing else.
    assert listening == {"0100007F"}, listening
