"""`scripts/bench_gpu.py --dry-run`: the GPU benchmark's whole code path, tiny and on the CPU,
run as its user runs it (a fresh interpreter, its own Ray runtime), so the script is known to work
before device time is spent on it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.ray

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_gpu.py"


def test_dry_run_checks_and_measures_every_section(tmp_path: Path) -> None:
    out = tmp_path / "bench_gpu.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, str(SCRIPT), "--dry-run", "--out", str(out),
               "--work", str(tmp_path / "work")]  # fmt: skip
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["dry_run"] and report["device"] == "cpu"

    correct = report["correctness"]
    assert correct["ok"]
    for key in ("masks_modality", "masks_modality_again", "masks_global"):
        # Every prunable tensor of the tiny LXMERT (32 of them) checked, none off.
        assert correct[key]["tensors"] == 32
        assert correct[key]["wrong_count"] == [] and correct[key]["differ_from_cpu"] == []
    assert correct["export_agreement"] == 1.0
    assert len(correct["stage2_losses"]) == 2

    speed = report["throughput"]
    assert set(speed["samples_per_s"]) == {"dense", "masked", "masked_uncached"}
    assert all(v > 0 for v in speed["samples_per_s"].values())
    assert 0 < speed["recompute_share_over_t_m"] < 1
    assert speed["largest"]["largest_batch"] == speed["largest"]["cap"]  # the CPU never runs out
    assert speed["selection"]["agree"]

    flops = report["flops"]
    dense, masked = flops["dense"]["flops_per_step"], flops["masked"]["flops_per_step"]
    # Masks change no matmul's shape, so stage 2 costs what stage 1 does (LMH's g(h) aside).
    assert dense > 1e8 and abs(masked - dense) / dense < 0.01

    pack = report["packing"]
    assert pack["ok"]
    assert [t["status"] for t in pack["trials"]] == ["finished"] * 4
    assert {t["device"] for t in pack["trials"]} == {"cpu"}
    # Two trials (one CPU each, two cores) ran at the same time.
    assert pack["trials_at_once"] == min(4, os.cpu_count() or 1)
    assert "--- packing" in proc.stdout and "sweep ok True" in proc.stdout
    trials = pd.read_parquet(tmp_path / "work" / "runs" / "pack" / "trials.parquet")
    assert sorted(trials["trial_id"]) == sorted(t["trial_id"] for t in pack["trials"])
    assert (trials["device"] == "cpu").all() and trials["node"].notna().all()
