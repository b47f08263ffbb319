"""`tickets demo`: the pipeline as far as it exists, on the embedded synthetic benchmark."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import yaml

from models.train import fit
from search.config import apply_overrides, validate_config
from vqa.atomic import atomic_path
from vqa.baseline import format_report
from vqa.cache import load_cache
from vqa.prepare import prepare
from vqa.synth import SynthSpec, generate

LATER = """\
Not built yet (open issues), in the order the demo will run them after stage 1:
  tickets search     stage 2 on Ray Tune: ~12 TPE + ASHA trials of LMH mask training at s = 0.7
  tickets results    trials.parquet / epochs.parquet
  tickets pareto     the front and a ternary map of the allocation simplex"""


def demo_config(out: Path) -> dict:
    """The demo's run config (the same settings as configs/demo.yaml, paths under `out`)."""
    data = out / "data"
    return {
        "data": {
            "dataset": "vqacp_v2",
            "root": str(data),
            "features": str(data / "features.h5"),
            "cache_dir": str(out / "cache"),
            "num_boxes": 36,
            "feature_dim": 64,
            "tokenizer": {"kind": "wordpiece", "vocab_size": 200},
        },
        "pretrain": {
            "output_dir": str(out / "pretrain"),
            "epochs": 8,
            "batch_size": 64,
            "lr": 1e-3,
            "warmup_ratio": 0.1,
        },  # fmt: skip
        "model": {"checkpoint": str(out / "pretrain" / "model")},
        "objective": {"name": "lpf"},
        "finetune": {
            "output_dir": str(out / "finetune"),
            "epochs": 6,
            "batch_size": 64,
            "lr": 5e-4,
            "eval_train": True,
        },  # fmt: skip
    }


def run_demo(out: Path, seed: int = 0, questions: int = 3000, overrides: list[str] | None = None,
             echo: Callable[[str], None] = print, progress: bool = False) -> dict:  # fmt: skip
    """synth -> prepare -> report -> pretrain -> stage 1 under `out`; returns stage 1's metrics."""
    out = Path(out).resolve()
    raw = apply_overrides(demo_config(out), overrides or [])
    config = validate_config(raw, "tickets demo")
    config_path = out / "demo.yaml"
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(config_path) as tmp:
        tmp.write_text("# tickets pretrain|finetune " + str(config_path) + "\n"
                       + yaml.safe_dump(raw, sort_keys=False))  # fmt: skip

    echo(f"[1/5] synthesising a VQA-CP v2 style benchmark in {config.data.root}")
    images = max(1200, (questions * 5) // 16 + 1)  # 8 questions per image at most
    meta = generate(SynthSpec(dataset="vqacp_v2", seed=seed, questions=questions, images=images),
                    config.data.root)  # fmt: skip
    echo("      " + ", ".join(f"{k} {v}" for k, v in meta["splits"].items()) + " questions")

    echo(f"[2/5] preparing the cache {config.data.cache_dir}")
    result = prepare(config.data, progress=progress)
    echo("      " + ("written" if result.written else "up to date, nothing to do"))

    echo("[3/5] data report and the prior-only baseline")
    echo(format_report(load_cache(result.cache_dir)))

    echo(f"[4/5] pre-training a small LXMERT on the balanced split -> {config.model.checkpoint}")
    pre = fit("pretrain", config.data, config.model, None,
              config.pretrain, config.blocks_yaml("data", "pretrain"), progress=progress,
              log=lambda m: echo("      " + m))  # fmt: skip
    echo(f"      pre-trained: {_line(pre)}")

    echo(f"[5/5] stage 1: fine-tuning with {config.objective.name} -> {config.finetune.output_dir}")
    stage1 = fit("finetune", config.data, config.model, config.objective, config.finetune,
                 config.blocks_yaml("data", "model", "objective", "finetune"), progress=progress,
                 log=lambda m: echo("      " + m))  # fmt: skip
    echo(f"      stage 1 ({config.objective.name}): {_line(stage1)}")
    echo("")
    echo("ID is the accuracy on the training distribution, OOD on the VQA-CP style test split,")
    echo("where the planted question-type bias is inverted.")
    echo(f"Config of every stage: {config_path}")
    echo("")
    echo(LATER)
    return stage1


def _line(metrics: dict) -> str:
    parts = []
    if "train" in metrics:
        parts.append(f"ID {metrics['train']['overall']:.1f}")
    parts.append(f"OOD {metrics['test']['overall']:.1f}")
    parts.append(f"{metrics['selection_split']} {metrics['selection']['overall']:.1f}")
    return ", ".join(parts) + f" (epoch {metrics['kept_epoch']})"
