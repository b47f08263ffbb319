"""`tickets demo`: the whole pipeline on the embedded synthetic benchmark (CPU, minutes)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import yaml

from models.train import fit
from search.config import RunConfig, apply_overrides, validate_config
from search.pareto import SWEEP_REPORT, pareto_report
from search.tuner import CONFIG_FILE, collect, resume_search, run_search
from vqa.atomic import atomic_path
from vqa.baseline import anti_prior_accuracy, format_report, prior_only_report
from vqa.cache import load_cache
from vqa.prepare import prepare
from vqa.synth import SynthSpec, generate


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
        # Stage 2 of every search trial: LMH mask training of the stage-1 model at s = 0.7.
        "pruning": {
            "output_dir": str(out / "prune"),
            "sparsity": 0.7,
            "epochs": 6,
            "batch_size": 64,
            "lr": 1e-3,
            "recompute_every": 10,
            "loss": {"name": "lmh"},
        },  # fmt: skip
        "search": {
            "storage_path": str(out / "runs"),
            "name": "demo",
            "searcher": "tpe",
            "scheduler": "asha",
            "num_samples": 12,
            "max_concurrent_trials": 2,
            "metric": "sel_overall",
            "mode": "max",
            "resources": {"cpu": 1},
            "asha": {"grace_period": 2, "reduction_factor": 2},
        },  # fmt: skip
    }


def build_stage1(out: Path, seed: int = 0, questions: int = 3000,
                 overrides: list[str] | None = None, echo: Callable[[str], None] = print,
                 progress: bool = False) -> tuple[RunConfig, Path, dict]:  # fmt: skip
    """The demo's steps 1-5 under `out` (synth -> prepare -> report -> pretrain -> stage 1);
    returns (the validated config, where it was saved, stage 1's metrics)."""
    out = Path(out).resolve()
    raw = apply_overrides(demo_config(out), overrides or [])
    config = validate_config(raw, "tickets demo")
    config_path = out / "demo.yaml"
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(config_path) as tmp:
        tmp.write_text("# tickets pretrain|finetune|search " + str(config_path) + "\n"
                       + yaml.safe_dump(raw, sort_keys=False))  # fmt: skip

    echo(f"[1/8] synthesising a VQA-CP v2 style benchmark in {config.data.root}")
    images = max(1200, (questions * 5) // 16 + 1)  # 8 questions per image at most
    meta = generate(SynthSpec(dataset="vqacp_v2", seed=seed, questions=questions, images=images),
                    config.data.root)  # fmt: skip
    echo("      " + ", ".join(f"{k} {v}" for k, v in meta["splits"].items()) + " questions")

    echo(f"[2/8] preparing the cache {config.data.cache_dir}")
    result = prepare(config.data, progress=progress)
    echo("      " + ("written" if result.written else "up to date, nothing to do"))

    echo("[3/8] data report and the prior-only baseline")
    echo(format_report(load_cache(result.cache_dir)))

    echo(f"[4/8] pre-training a small LXMERT on the balanced split -> {config.model.checkpoint}")
    pre = fit("pretrain", config.data, config.model, None,
              config.pretrain, config.blocks_yaml("data", "pretrain"), progress=progress,
              log=lambda m: echo("      " + m))  # fmt: skip
    echo(f"      pre-trained: {_line(pre)}")

    echo(f"[5/8] stage 1: fine-tuning with {config.objective.name} -> {config.finetune.output_dir}")
    stage1 = fit("finetune", config.data, config.model, config.objective, config.finetune,
                 config.blocks_yaml("data", "model", "objective", "finetune"), progress=progress,
                 log=lambda m: echo("      " + m))  # fmt: skip
    echo(f"      stage 1 ({config.objective.name}): {_line(stage1)}")
    echo("      (ID: the training distribution; OOD: the VQA-CP style test split, where each")
    echo("      question type's planted dominant answer is rare and the others share its place)")
    return config, config_path, stage1


def run_demo(out: Path, seed: int = 0, questions: int = 3000, overrides: list[str] | None = None,
             echo: Callable[[str], None] = print, progress: bool = False) -> dict:  # fmt: skip
    """synth -> prepare -> report -> pretrain -> stage 1 -> search -> results -> pareto under
    `out`; returns stage 1's metrics."""
    config, config_path, stage1 = build_stage1(out, seed, questions, overrides, echo, progress)

    search = config.search
    run_dir = Path(search.resolved().storage_path) / search.name
    echo(
        f"[6/8] search: {search.num_samples} {search.searcher} + {search.scheduler} trials of "
        f"{config.pruning.loss.name} mask training at s = {config.pruning.sparsity} -> {run_dir}"
    )
    if (run_dir / CONFIG_FILE).is_file():
        resume_search(run_dir, None, echo=lambda m: echo("      " + m))
    else:
        run_search(config, None, None, echo=lambda m: echo("      " + m))

    echo("[7/8] results")
    trials, epochs = collect(run_dir)
    echo(
        f"      {run_dir / 'trials.parquet'} ({len(trials)} trials), "
        f"{run_dir / 'epochs.parquet'} ({len(epochs)} trial-epochs)"
    )

    echo("[8/8] Pareto front by selection accuracy and weights kept (test accuracy beside)")
    objectives = [("sel_overall", "max"), ("remaining_params", "min")]
    # Written as the sweep's own report, which it replaces (and a rerun, or `tickets pareto`,
    # may replace in turn); a report the user made with `tickets pareto` is left alone.
    _, text, paths = pareto_report(run_dir, objectives, color="sel_overall",
                                   written_by=SWEEP_REPORT)  # fmt: skip
    echo("\n".join("      " + line for line in text.splitlines()))
    echo("")
    data = load_cache(config.data.resolved().cache_dir)
    anti = {name: anti_prior_accuracy(data, name) for name in (stage1["selection_split"], "test")}
    echo(_summary(trials, config.pruning.sparsity, stage1, prior_only_report(data), anti))
    echo(f"Config of every stage: {config_path}")
    echo("Plots: " + ", ".join(str(p) for p in paths if p.suffix == ".png"))
    return stage1


def _summary(trials, s: float, stage1: dict, prior: dict[str, dict[str, float]],
             anti: dict[str, float]) -> str:  # fmt: skip
    """The closing table: the training prior and the best question-only guess against it (no
    image), the full stage-1 model, the uniform and the best allocation (by selection) at s;
    selection (`dev`) and OOD (`test`) accuracy in %, and the budget weights kept (language +
    visual + cross). `anti`: `anti_prior_accuracy` of the selection and test splits."""
    sel = stage1["selection_split"]
    done = trials[trials["status"] == "finished"]
    full = None
    if len(trials) and trials["realised_overall"].notna().any():
        row = trials.dropna(subset=["realised_overall"]).iloc[0]
        full = row["remaining_params"] / (1.0 - row["realised_overall"])
    rows = [("training prior (no image)", prior[sel]["overall"], prior["test"]["overall"], "-"),
            ("best guess against the prior (no image)", anti[sel], anti["test"], "-"),
            ("full stage-1 model", stage1["selection"]["overall"], stage1["test"]["overall"],
             f"{full:,.0f}" if full else "all")]  # fmt: skip
    near = ((trials["s_language"] - s).abs() < 1e-6) & ((trials["s_visual"] - s).abs() < 1e-6)
    uniform = trials[near]
    if len(uniform):
        r = uniform.iloc[0]
        test = r["test_overall"] if r["status"] == "finished" else None
        note = "" if test is not None else f" ({r['status'].replace('_', ' ')}, no test)"
        rows.append((f"uniform allocation, s = {s}{note}", r["sel_overall"], test,
                     f"{r['remaining_params']:,.0f}"))  # fmt: skip
    best = None
    if len(done):
        best = done.sort_values("sel_overall", ascending=False).iloc[0]
        rows.append((f"best allocation found ({best['s_language']:.2f} / {best['s_visual']:.2f}"
                     f" / {best['s_cross']:.2f})", best["sel_overall"], best["test_overall"],
                     f"{best['remaining_params']:,.0f}"))  # fmt: skip
    width = max(len(r[0]) for r in rows)
    lines = [f"{'':{width}}  {sel + ' %':>8}  {'OOD %':>6}  {'weights kept':>12}"]
    for name, selection, test, kept in rows:
        test_text = f"{test:6.1f}" if test is not None else f"{'-':>6}"
        lines.append(f"{name:{width}}  {selection:8.1f}  {test_text}  {kept:>12}")
    lines.append("(best allocation: language / visual / cross sparsity; OOD: the VQA-CP style test")
    lines.append(" split; the selection split chose every kept epoch and the best allocation;")
    lines.append(" best guess against the prior: per question type, the one other answer that")
    lines.append(" scores best on that split, chosen with its answers in hand)")
    lines.append(_verdict(stage1["test"]["overall"], anti["test"], best))
    return "\n".join(lines)


def _verdict(full: float, question_only: float, best) -> str:
    """One line saying what the table shows (OOD accuracies in %)."""
    if best is None:
        return "No trial finished, so there is no allocation to compare."
    kept = 1.0 - best["realised_overall"]
    return (
        f"What it shows: keeping {kept:.0%} of the weights, the best subnetwork found scores "
        f"{best['test_overall'] - full:+.1f} OOD points against the full model and "
        f"{best['test_overall'] - question_only:+.1f} against the best answer from the question "
        "alone."
    )


def _line(metrics: dict) -> str:
    parts = []
    if "train" in metrics:
        parts.append(f"ID {metrics['train']['overall']:.1f}")
    parts.append(f"OOD {metrics['test']['overall']:.1f}")
    parts.append(f"{metrics['selection_split']} {metrics['selection']['overall']:.1f}")
    return ", ".join(parts) + f" (epoch {metrics['kept_epoch']})"
