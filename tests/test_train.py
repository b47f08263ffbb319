"""Pre-training and stage 1: outputs, resume after a kill, refusal of foreign output directories."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from search.cli import app
from tests.conftest import Bench, tiny_run_config

TICKETS = str(Path(sys.executable).parent / "tickets")


def _write_config(bench: Bench, tiny_pretrained: Path, out: Path, **finetune) -> Path:
    raw = tiny_run_config(
        bench, out,
        model={"checkpoint": str(tiny_pretrained)},
        objective={"name": "lmh"},
        finetune={"output_dir": str(out / "ft"), "epochs": 3, "batch_size": 32, "lr": 1e-3,
                  **finetune},
    )  # fmt: skip
    path = out / "run.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_finetune_cli_writes_metrics_best_model_and_is_idempotent(
    tiny_bench: Bench, tiny_pretrained: Path, tmp_path: Path
) -> None:
    config = _write_config(tiny_bench, tiny_pretrained, tmp_path, epochs=2)
    result = CliRunner().invoke(app, ["finetune", str(config), "finetune.eval_train=true"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "ft"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["complete"] and metrics["selection_split"] == "dev"
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]
    best = max(metrics["history"], key=lambda h: h["selection"]["overall"])
    assert metrics["kept_epoch"] == best["epoch"]
    assert metrics["selection"] == best["selection"]
    for split in ("test", "test_full", "train"):
        assert set(metrics[split]) >= {"overall", "yes_no", "number", "other"}
    assert (out / "best" / "model.safetensors").is_file()
    assert "objective:\n  name: lmh" in (out / "config.yaml").read_text()
    assert "test_full" in result.output
    again = CliRunner().invoke(app, ["finetune", str(config), "finetune.eval_train=true"])
    assert again.exit_code == 0 and "already complete" in again.output
    # The same output directory with another config is refused, nothing is touched.
    other = CliRunner().invoke(app, ["finetune", str(config), "finetune.lr=0.5"])
    assert other.exit_code == 2
    assert "holds a run with a different config" in other.stderr
    assert json.loads((out / "metrics.json").read_text()) == metrics


def test_lmh_parameters_are_trained_and_checkpointed(
    tiny_bench: Bench, tiny_pretrained: Path, tmp_path: Path
) -> None:
    from safetensors.torch import load_file

    config = _write_config(tiny_bench, tiny_pretrained, tmp_path, epochs=1)
    assert CliRunner().invoke(app, ["finetune", str(config)]).exit_code == 0
    state = load_file(str(tmp_path / "ft" / "last" / "objective.safetensors"))
    # smooth starts at -1 and g(h)'s bias at 0: stage 1 moved both.
    assert float(state["smooth"]) != -1.0
    assert float(state["bias_lin.bias"]) != 0.0
    saved = torch.load(tmp_path / "ft" / "last" / "state.pt", weights_only=True)
    n_model = sum(1 for _ in saved["optimizer"]["state"])
    assert n_model > 0 and saved["epoch"] == 1


def _run(config: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([TICKETS, "finetune", str(config), *extra], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip


@pytest.mark.slow
def test_killed_finetune_resumes_to_the_same_metrics(
    tiny_bench: Bench, tiny_pretrained: Path, tmp_path: Path
) -> None:
    whole_dir, killed_dir = tmp_path / "whole", tmp_path / "killed"
    whole_dir.mkdir()
    killed_dir.mkdir()
    whole = _write_config(tiny_bench, tiny_pretrained, whole_dir)
    killed = _write_config(tiny_bench, tiny_pretrained, killed_dir)
    assert _run(whole).wait(timeout=600) == 0

    proc = _run(killed)
    metrics = killed_dir / "ft" / "metrics.json"
    deadline = time.time() + 600
    while time.time() < deadline:
        if metrics.is_file() and len(json.loads(metrics.read_text())["history"]) >= 1:
            break
        assert proc.poll() is None, proc.stderr.read().decode()
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = json.loads(metrics.read_text())
    assert not partial["complete"] and len(partial["history"]) < 3

    resumed = _run(killed)
    out, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err.decode()
    assert "resuming" in out.decode()
    a = json.loads((whole_dir / "ft" / "metrics.json").read_text())
    b = json.loads(metrics.read_text())
    for key in ("kept_epoch", "selection", "test", "test_full"):
        assert a[key] == b[key], key
    assert [h["train_loss"] for h in a["history"]] == [h["train_loss"] for h in b["history"]]


def test_pretrain_needs_its_block(tiny_bench: Bench, tmp_path: Path) -> None:
    raw = yaml.safe_load((tiny_bench.root / "prepare.yaml").read_text())
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(raw))
    result = CliRunner().invoke(app, ["pretrain", str(path)])
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: {path}: no 'pretrain:' block (output_dir, epochs, ...)"


def test_stale_cache_is_refused(tiny_bench: Bench, tiny_pretrained: Path, tmp_path: Path) -> None:
    config = _write_config(tiny_bench, tiny_pretrained, tmp_path)
    result = CliRunner().invoke(app, ["finetune", str(config), "data.min_answer_count=3"])
    assert result.exit_code == 2
    assert "data cache missing or out of date" in result.stderr
    assert not (tmp_path / "ft" / "last").exists()


def test_missing_checkpoint_leaves_no_output_dir(tiny_bench: Bench, tmp_path: Path) -> None:
    config = _write_config(tiny_bench, tmp_path / "nope", tmp_path)
    result = CliRunner().invoke(app, ["finetune", str(config)])
    assert result.exit_code == 2
    assert "checkpoint directory not found (model.checkpoint)" in result.stderr
    assert not (tmp_path / "ft").exists()


def test_ce_pretraining_leaves_a_head_calibrated_for_sigmoid_losses(
    tiny_bench: Bench, tiny_pretrained: Path
) -> None:
    """A `ce` head's logits are on a softmax scale: read as sigmoids they say "yes" to many
    answers. The saved head is shifted so that the mean logsumexp over `pretrain` is 0 (then
    sigmoid(z) ~ softmax(z)); the shift is in metrics.json and the predictions are unchanged."""
    import numpy as np

    from models.evaluate import evaluate_split
    from models.train import load_checkpoint_model

    data = tiny_bench.data
    metrics = json.loads((tiny_pretrained.parent / "metrics.json").read_text())
    assert metrics["head_shift"] != 0.0
    model, _ = load_checkpoint_model(tiny_pretrained, data, "required")
    model.eval()
    split = data.split("pretrain")
    b = data.make_batch(split, np.arange(len(split)))
    with torch.no_grad():
        logits, _ = model(b.input_ids, b.attention_mask, b.visual_feats, b.visual_pos)
    assert float(torch.logsumexp(logits, -1).mean()) == pytest.approx(0.0, abs=1e-4)
    assert float(torch.sigmoid(logits).sum(-1).mean()) < 1.5  # about one answer per question
    # Undo the shift: a constant on every logit changes no prediction, so the same test metrics.
    with torch.no_grad():
        model.head[-1].bias.add_(metrics["head_shift"])
        logits, _ = model(b.input_ids, b.attention_mask, b.visual_feats, b.visual_pos)
    assert float(torch.sigmoid(logits).sum(-1).mean()) > 1.5
    assert evaluate_split(model, data, "test", torch.device("cpu"), 512) == metrics["test"]
