"""Stage 2 (`tickets prune`), OMP + stage 3, `tickets export`, and a killed run's resume."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from typer.testing import CliRunner

from models.evaluate import evaluate_split
from models.structure import prunable_groups
from models.vqa_model import VQAModel, hf_name, load_backbone, load_head
from pruning.export import load_masks, unpack_mask
from search.cli import app
from tests.conftest import Bench, run_tickets

TICKETS = str(Path(sys.executable).parent / "tickets")


def _config(bench: Bench, stage1: Path, out: Path, stage3: dict | None = None, **pruning) -> Path:
    raw = yaml.safe_load((bench.root / "prepare.yaml").read_text())
    raw["finetune"] = {"output_dir": str(stage1)}  # pruning.checkpoint defaults to its best/
    raw["pruning"] = {"output_dir": str(out / "prune"), "epochs": 3, "batch_size": 32,
                      "lr": 0.05, "sparsity": 0.5, "language": 0.3, "visual": 0.6,
                      "recompute_every": 5, **pruning}  # fmt: skip
    if stage3 is not None:
        raw["stage3"] = stage3
    path = out / "run.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_prune_cli_trains_masks_at_the_requested_allocation(
    tiny_bench: Bench, tiny_stage1: Path, tmp_path: Path
) -> None:
    config = _config(tiny_bench, tiny_stage1, tmp_path)
    result = CliRunner().invoke(app, ["prune", str(config), "pruning.eval_train=true"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "prune"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["complete"] and metrics["method"] == "mask"
    assert metrics["checkpoint"] == str((tiny_stage1 / "best").resolve())
    req = metrics["requested"]
    assert req["language"] == 0.3 and req["visual"] == 0.6 and req["overall"] == 0.5
    # eq. 10: the solved cross sparsity makes the size-weighted mean the budget.
    report = metrics["sparsity"]
    sizes = {g: report[g]["numel"] for g in ("language", "visual", "cross")}
    mean = sum(req[g] * sizes[g] for g in sizes) / sum(sizes.values())
    assert abs(mean - 0.5) < 1e-12
    for group in ("language", "visual", "cross"):
        # Within one weight per tensor of the request (rounding per tensor).
        assert abs(report[group]["pruned"] - req[group] * sizes[group]) <= 20, group
    assert metrics["remaining_params"] == report["overall"]["numel"] - report["overall"]["pruned"]
    assert [h["epoch"] for h in metrics["history"]] == [1, 2, 3]
    # Masks change while training (lr 0.05 on scores of size alpha*phi = 0.02).
    assert max(h["mask_change"] for h in metrics["history"]) > 0.001
    kept = max(metrics["history"], key=lambda h: h["selection"]["overall"])
    assert metrics["kept_epoch"] == kept["epoch"] and metrics["selection"] == kept["selection"]
    for split in ("test", "test_full", "train"):
        assert set(metrics[split]) >= {"overall", "yes_no", "number", "other"}
    assert {p.name for p in (out / "best").iterdir()} >= {"masks.safetensors", "sparsity.json"}
    assert "realised sparsity: language 0.3" in result.output

    again = CliRunner().invoke(app, ["prune", str(config), "pruning.eval_train=true"])
    assert again.exit_code == 0 and "already complete" in again.output
    other = CliRunner().invoke(app, ["prune", str(config), "pruning.lr=0.5"])
    assert other.exit_code == 2 and "holds a run with a different config" in other.stderr


@pytest.mark.parametrize("mode", ["modality", "global"])
def test_export_predicts_exactly_what_the_run_reported(
    tiny_bench: Bench, tiny_stage1: Path, tmp_path: Path, mode: str
) -> None:
    allocation = {"language": None, "visual": None} if mode == "global" else {}
    config = _config(tiny_bench, tiny_stage1, tmp_path, epochs=1, mode=mode, **allocation)
    assert CliRunner().invoke(app, ["prune", str(config)]).exit_code == 0
    exported = tmp_path / "exported"  # OUT given as DESIGN writes it: after RUN_DIR
    result = CliRunner().invoke(app, ["export", str(tmp_path / "prune"), str(exported)])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "prune" / "metrics.json").read_text())
    # A plain from_pretrained directory whose zeros are the kept mask's.
    model = VQAModel(load_backbone(exported), tiny_bench.data.num_answers)
    assert load_head(model, exported, tiny_bench.data.answers)
    report = metrics["sparsity"]
    packed = load_file(str(exported / "masks.safetensors"))
    shapes = {n: list(t.shape) for n, t in model.named_parameters()}
    params = dict(model.named_parameters())
    for group in ("language", "visual", "cross"):
        pruned = 0
        for name in prunable_groups(model)[group]:
            mask = unpack_mask(packed[hf_name(name)], shapes[name])
            assert torch.all(params[name][mask == 0] == 0), name
            pruned += int((mask == 0).sum())
        assert pruned == report[group]["pruned"], group
    if mode == "global":  # one exact count over the three groups, whatever moved between them
        overall = report["overall"]
        assert overall["pruned"] == round(0.5 * overall["numel"])
        assert metrics["history"][0]["mask_change"] > 0
    test = evaluate_split(model, tiny_bench.data, "test", torch.device("cpu"))
    assert test == metrics["test"]
    # One bit per weight (each tensor padded to whole bytes).
    numel = sum(report[g]["numel"] for g in ("language", "visual", "cross", "pooler"))
    assert numel / 8 <= sum(t.numel() for t in packed.values()) <= numel / 8 + len(packed)


def test_omp_with_stage3_keeps_the_mask_and_trains_the_weights(
    tiny_bench: Bench, tiny_stage1: Path, tmp_path: Path
) -> None:
    stage3 = {"epochs": 2, "batch_size": 32, "lr": 1e-3, "loss": "bce"}
    config = _config(tiny_bench, tiny_stage1, tmp_path, stage3=stage3, method="omp",
                     mode="uniform", language=None, visual=None)  # fmt: skip
    result = CliRunner().invoke(app, ["prune", str(config)])
    assert result.exit_code == 0, result.output
    out = tmp_path / "prune"
    metrics = json.loads((out / "metrics.json").read_text())
    assert [h["epoch"] for h in metrics["history"]] == [0]  # OMP: evaluated, not trained
    section = metrics["stage3"]
    assert section["output_dir"] == str(out / "stage3")
    assert [h["epoch"] for h in section["history"]] == [1, 2]
    assert section["sparsity"] == metrics["sparsity"]  # stage 3 never moves the mask
    for group in ("language", "visual", "cross", "pooler"):
        assert metrics["sparsity"][group]["realised"] == pytest.approx(0.5, abs=1e-3)
    assert "stage 3 kept epoch" in result.output

    assert (
        CliRunner().invoke(app, ["export", str(out), "--out", str(tmp_path / "x")]).exit_code == 0
    )
    exported = VQAModel(load_backbone(tmp_path / "x"), tiny_bench.data.num_answers)
    assert load_head(exported, tmp_path / "x", tiny_bench.data.answers)
    test = evaluate_split(exported, tiny_bench.data, "test", torch.device("cpu"))
    assert test == section["test"]
    # Stage 3 changed the surviving weights of the stage-1 model.
    stage1 = load_backbone(tiny_stage1 / "best").state_dict()
    name = "encoder.layer.0.attention.self.query.weight"
    kept = exported.backbone.state_dict()[name] != 0
    assert not torch.equal(exported.backbone.state_dict()[name][kept], stage1[name][kept])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["pruning.language=0.99", "pruning.visual=0.99", "pruning.sparsity=0.2"],
         "pruning: "),
        (["pruning.sparsity=1.0"], "pruning.sparsity: Input should be less than 1"),
        (["pruning.mode=uniform"], "mode 'uniform' takes sparsity only"),
        (["pruning.visual=null"], "give two of language, visual, cross"),
        (["pruning.language=0.995"], "pruning.language: 0.995 is outside bounds"),
        (["pruning.loss=nope"], "pruning.loss.name: Input should be"),
        (["pruning.method=lottery"], "pruning.method: Input should be 'mask' or 'omp'"),
        (["pruning.checkpoint=/nonexistent/ckpt"],
         "/nonexistent/ckpt: checkpoint directory not found (pruning.checkpoint)"),
    ],
)  # fmt: skip
def test_bad_pruning_requests_are_one_line_and_write_nothing(
    tiny_bench: Bench, tiny_stage1: Path, tmp_path: Path, overrides: list[str], message: str
) -> None:
    config = _config(tiny_bench, tiny_stage1, tmp_path)
    result = CliRunner().invoke(app, ["prune", str(config), *overrides])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines
    assert not (tmp_path / "prune").exists()


def test_export_refuses_what_is_not_a_finished_run(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["export", str(tmp_path)])
    assert result.exit_code == 2
    assert (
        result.stderr.strip() == f"error: {tmp_path}: not a pruning run directory (no config.yaml)"
    )
    both = CliRunner().invoke(app, ["export", str(tmp_path), str(tmp_path / "a"), "--out",
                                    str(tmp_path / "b")])  # fmt: skip
    assert both.exit_code == 2 and "disagree; give one" in both.stderr
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_masks_are_recomputed_every_t_m_steps_and_at_each_epoch_end(
    tiny_bench: Bench, tiny_stage1: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pruning.train
    from pruning.masks import recompute_masks

    calls: list[int] = []

    def counted(model: torch.nn.Module) -> None:  # the real recomputation, counted
        calls.append(1)
        recompute_masks(model)

    monkeypatch.setattr(pruning.train, "recompute_masks", counted)
    config = _config(tiny_bench, tiny_stage1, tmp_path, epochs=2, recompute_every=3)
    result = CliRunner().invoke(app, ["prune", str(config)])
    assert result.exit_code == 0, result.output
    history = json.loads((tmp_path / "prune" / "metrics.json").read_text())["history"]
    steps = history[-1]["steps"]
    assert steps == 2 * history[0]["steps"] and steps % 3 != 0  # so rounding would show
    assert len(calls) == steps // 3 + 2


def test_score_lr_moves_the_masks_while_the_head_keeps_lr(
    tiny_bench: Bench, tiny_stage1: Path, tmp_path: Path
) -> None:
    # At lr 1e-4 a score moves at most ~1e-4 a step, far from the alpha * phi = 0.02 between kept
    # and pruned scores: no bit flips. score_lr 0.05 moves the scores alone.
    runs = {}
    for name, extra in {"same": [], "own": ["pruning.score_lr=0.05"]}.items():
        (tmp_path / name).mkdir()
        config = _config(tiny_bench, tiny_stage1, tmp_path / name, lr=1e-4)
        done = run_tickets("prune", config, *extra)
        assert done.returncode == 0, done.stderr
        out = tmp_path / name / "prune"
        runs[name] = (json.loads((out / "metrics.json").read_text())["history"],
                      yaml.safe_load((out / "config.yaml").read_text())["pruning"])  # fmt: skip
    same, own = runs["same"], runs["own"]
    assert all(h["mask_change"] == 0.0 for h in same[0])
    assert max(h["mask_change"] for h in own[0]) > 0.001
    # the reported lr is the head's, decaying from 1e-4 in both
    assert [h["lr"] for h in own[0]] == pytest.approx([h["lr"] for h in same[0]])
    # a run without it saves the config as runs did before the field existed (they resume)
    assert "score_lr" not in same[1] and own[1]["score_lr"] == 0.05


def test_head_shift_puts_a_softmax_head_on_the_sigmoid_scale(
    tiny_bench: Bench, tiny_stage1: Path, tiny_pretrained: Path, tmp_path: Path
) -> None:
    from models.evaluate import split_logits
    from models.train import load_checkpoint_model
    from tests.conftest import train_tiny_stage1

    lpf = train_tiny_stage1(tiny_bench, tiny_pretrained, tmp_path / "stage1", "lpf")

    def run(name: str, stage1: Path, *extra: str) -> dict:
        (tmp_path / name).mkdir()
        config = _config(tiny_bench, stage1, tmp_path / name, epochs=1, lr=1e-3)
        done = run_tickets("prune", config, *extra)
        assert done.returncode == 0, done.stderr
        return json.loads((tmp_path / name / "prune" / "metrics.json").read_text())

    omp = run("omp", lpf, "pruning.method=omp")
    omp_shift = run("omp_shift", lpf, "pruning.method=omp", "pruning.head_shift=true")
    # c is the mean logsumexp of the logits over the training split, measured on the masked
    # model stage 2 starts from (so near, not at, the full stage-1 model's)
    model, _ = load_checkpoint_model(lpf / "best", tiny_bench.data, "required")
    logits = torch.cat(list(split_logits(model, tiny_bench.data, "train", torch.device("cpu"))))
    lse = torch.logsumexp(logits, dim=-1).mean().item()
    shift = omp_shift["head_shift"]
    assert shift == pytest.approx(lse, abs=0.02) and "head_shift" not in omp
    heads = [load_file(tmp_path / n / "prune" / "best" / "answer_head.safetensors")
             for n in ("omp", "omp_shift")]  # fmt: skip
    last = max(k for k in heads[0] if k.endswith("bias"))  # the output layer's bias
    assert torch.allclose(heads[1][last], heads[0][last] - shift, atol=1e-6)
    # it moves every logit by the same c: no prediction changes
    assert omp_shift["selection"] == omp["selection"] and omp_shift["test"] == omp["test"]
    # A BCE head is on the sigmoid scale already: nothing to shift
    assert run("bce", tiny_stage1, "pruning.head_shift=true")["head_shift"] == 0.0


def test_masks_reload_into_a_fresh_model(tiny_bench: Bench, tiny_stage1: Path, tmp_path: Path):
    from models.structure import group_sizes
    from pruning.masks import apply_masks
    from pruning.train import load_pruned
    from search.config import load_config

    config = _config(tiny_bench, tiny_stage1, tmp_path, epochs=1)
    assert CliRunner().invoke(app, ["prune", str(config)]).exit_code == 0
    cfg = load_config(tmp_path / "prune" / "config.yaml")
    model, _, answers = load_pruned(cfg.pruning, None)
    fresh = VQAModel(load_backbone(tiny_stage1 / "best"), len(answers))
    apply_masks(fresh, cfg.pruning.sparsities(group_sizes(fresh)), cfg.pruning.mode)
    before = [p.mask.clone() for _, p in _named(fresh)]
    load_masks(fresh, tmp_path / "prune" / "best" / "masks.safetensors")
    after = [p.mask for _, p in _named(fresh)]
    assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))
    assert all(torch.equal(a, p.mask) for a, (_, p) in zip(after, _named(model), strict=True))


def _named(model):
    from pruning.export import named_score_masks

    return named_score_masks(model)


def _run(config: Path) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([TICKETS, "prune", str(config)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip


@pytest.mark.slow
def test_killed_prune_resumes_to_the_same_metrics(
    tiny_bench: Bench, tiny_stage1: Path, tmp_path: Path
) -> None:
    whole_dir, killed_dir = tmp_path / "whole", tmp_path / "killed"
    runs = {}
    for d in (whole_dir, killed_dir):
        d.mkdir()
        runs[d] = _config(tiny_bench, tiny_stage1, d, epochs=4,
                          stage3={"epochs": 2, "batch_size": 32, "lr": 1e-3})  # fmt: skip
    whole = _run(runs[whole_dir])
    out, err = whole.communicate(timeout=600)
    assert whole.returncode == 0, err.decode()
    # stdout is a pipe here (as under nohup or Slurm): one line per epoch, with time and rate.
    epoch_lines = re.findall(
        r"^prune epoch (\d)/4: loss [\d.]+, dev [\d.]+, ([\d.]+) s, (\d+) samples/s$",
        out.decode(),
        flags=re.M,
    )
    assert [int(e) for e, _, _ in epoch_lines] == [1, 2, 3, 4]
    assert all(float(sec) > 0 and int(rate) > 0 for _, sec, rate in epoch_lines)
    assert len(re.findall(r"^stage3 epoch \d/2: .* samples/s$", out.decode(), flags=re.M)) == 2

    proc = _run(runs[killed_dir])
    metrics = killed_dir / "prune" / "metrics.json"
    deadline = time.time() + 600
    while time.time() < deadline:
        if metrics.is_file() and len(json.loads(metrics.read_text())["history"]) >= 2:
            break
        assert proc.poll() is None, proc.stderr.read().decode()
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = json.loads(metrics.read_text())
    assert not partial["complete"] and len(partial["history"]) < 4

    resumed = _run(runs[killed_dir])
    out, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err.decode()
    assert "resuming" in out.decode()
    a = json.loads((whole_dir / "prune" / "metrics.json").read_text())
    b = json.loads(metrics.read_text())
    for key in ("kept_epoch", "selection", "test", "test_full", "sparsity", "remaining_params"):
        assert a[key] == b[key], key
    strip = ("wall_s",)
    for ha, hb in zip(a["history"], b["history"], strict=True):
        assert {k: v for k, v in ha.items() if k not in strip} == {
            k: v for k, v in hb.items() if k not in strip
        }
    for key in ("kept_epoch", "selection", "test"):
        assert a["stage3"][key] == b["stage3"][key], key
