"""`scripts/bench_regime.py` on its `smoke` regime (tiny data, one epoch per stage), run as its
user runs it: a fresh interpreter, then again, which must find every figure measured and
re-run nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_regime.py"


def _run(
    work: Path, regime: str = "smoke", properties: tuple[str, ...] = ("P0", "P4")
) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(SCRIPT.parents[1])}
    command = [sys.executable, str(SCRIPT), "--work", str(work), "--regime", regime,
               "--seeds", "0", "--properties", *properties]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)


def test_smoke_regime_measures_then_resumes_without_rerunning(tmp_path: Path) -> None:
    first = _run(tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    report = json.loads((tmp_path / "regime.json").read_text())["smoke"]["0"]
    p0, p4 = report["properties"]["P0"], report["properties"]["P4"]
    assert p0["value"] == pytest.approx(report["stage1_lmh"]["ood"] - report["pretrained"]["ood"])
    assert p4["value"] == pytest.approx(
        report["mask_bce_u50"]["ood"] - report["mask_bce_head_only"]["ood"]
    )
    # The head-only control keeps every weight; the mask run prunes half of them.
    assert report["mask_bce_head_only"]["overall"] == 0.0
    assert report["mask_bce_u50"]["overall"] == pytest.approx(0.5, abs=1e-3)
    assert 0.0 <= report["pretrained"]["image_dependent"] <= 100.0
    assert "| P4 | >= 3 |" in first.stdout

    metrics = sorted(tmp_path.glob("smoke/seed0/*/metrics.json"))
    stamps = {p: p.stat().st_mtime_ns for p in metrics}
    again = _run(tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((tmp_path / "regime.json").read_text())["smoke"]["0"] == report
    assert {p: p.stat().st_mtime_ns for p in metrics} == stamps
    assert again.stdout.splitlines()[-4:] == first.stdout.splitlines()[-4:]

    # A regime that differs only in `pruning` takes smoke's data, pre-training and stage 1
    shared = _run(tmp_path, "smoke-s2")
    assert shared.returncode == 0, shared.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in metrics} == stamps  # nothing of smoke's re-run
    assert sorted(p.name for p in (tmp_path / "smoke-s2" / "seed0").iterdir()) == [
        "prune_bce_head_only", "prune_bce_u50"]  # fmt: skip
    both = json.loads((tmp_path / "regime.json").read_text())
    s2 = both["smoke-s2"]["0"]
    assert both["smoke"]["0"] == report  # each regime's save replaces its own record only
    assert s2["stage1_lmh"] == report["stage1_lmh"] and s2["pretrained"] == report["pretrained"]
    run = (tmp_path / "smoke-s2" / "seed0" / "prune_bce_u50" / "config.yaml").read_text()
    assert "score_lr: 0.01" in run and str(tmp_path / "smoke" / "seed0" / "bce") in run

    # One that differs only in `finetune` (and `pruning`) takes smoke's data and pre-training
    longer = _run(tmp_path, "smoke-f2")
    assert longer.returncode == 0, longer.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in metrics} == stamps  # nothing of smoke's re-run
    assert sorted(p.name for p in (tmp_path / "smoke-f2" / "seed0").iterdir()) == [
        "bce", "lmh", "prune_bce_head_only", "prune_bce_u50"]  # fmt: skip
    f2 = json.loads((tmp_path / "regime.json").read_text())["smoke-f2"]["0"]
    assert f2["pretrained"] == report["pretrained"]
    stage1 = yaml.safe_load((tmp_path / "smoke-f2" / "seed0" / "bce" / "config.yaml").read_text())
    assert stage1["finetune"]["epochs"] == 2
    assert stage1["model"]["checkpoint"] == str(tmp_path / "smoke" / "seed0" / "pre" / "model")
    assert (
        len(json.loads((tmp_path / "smoke-f2/seed0/bce/metrics.json").read_text())["history"]) == 2
    )

    # A `pruning` variant of that one: smoke-f2's stage 1, smoke's data and pre-training
    f2_metrics = sorted(tmp_path.glob("smoke-f2/seed0/*/metrics.json"))
    f2_stamps = {p: p.stat().st_mtime_ns for p in f2_metrics}
    both_maps = _run(tmp_path, "smoke-f2-s2")
    assert both_maps.returncode == 0, both_maps.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in metrics} == stamps
    assert {p: p.stat().st_mtime_ns for p in f2_metrics} == f2_stamps
    assert sorted(p.name for p in (tmp_path / "smoke-f2" / "seed0").iterdir()) == [
        "bce", "lmh", "prune_bce_head_only", "prune_bce_u50"]  # fmt: skip
    f2s2 = json.loads((tmp_path / "regime.json").read_text())["smoke-f2-s2"]["0"]
    assert f2s2["stage1_lmh"] == f2["stage1_lmh"] and f2s2["pretrained"] == report["pretrained"]
    run = (tmp_path / "smoke-f2-s2" / "seed0" / "prune_bce_u50" / "config.yaml").read_text()
    assert str(tmp_path / "smoke-f2" / "seed0" / "bce") in run

    # Data made before a knob existed (its synth.json lacks the field, which reads as the
    # default) is the same benchmark: P5 evaluates on it, nothing re-runs. A differing value
    # is refused before P3's new runs (figures already measured are read back, data unread).
    synth = tmp_path / "smoke" / "seed0" / "data" / "synth.json"
    meta = json.loads(synth.read_text())
    older = {k: v for k, v in meta["spec"].items() if k != "answer_variants"}
    assert len(older) == len(meta["spec"]) - 1
    synth.write_text(json.dumps({**meta, "spec": older}))
    assert _run(tmp_path, properties=("P5",)).returncode == 0
    assert {p: p.stat().st_mtime_ns for p in metrics} == stamps
    synth.write_text(json.dumps({**meta, "spec": {**meta["spec"], "bias": 0.5}}))
    refused = _run(tmp_path, properties=("P3",))
    assert refused.returncode == 1
    assert "made with another synth spec than regime smoke's" in refused.stderr
    assert not list((tmp_path / "smoke" / "seed0").glob("prune_bce_u30"))
