"""No pickle is ever loaded: a checkpoint carrying a pickle payload is refused with one line and
its payload never runs. Parquet results are replaced atomically even when the writer is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

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
    # What a kill can leave is a hidden temporary sibling, never a partial result file.
    others = {p.name for p in tmp_path.iterdir()} - {"trials.parquet", "epochs.parquet"}
    assert all(n.startswith(".") and n.endswith(".tmp") for n in others), others
