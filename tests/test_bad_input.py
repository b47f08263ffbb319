"""Bad input to stage 2, the search and run directories: one `error:` line naming the file, field or
value, exit code 2, and nothing written (the data-side cases are in tests/test_cli_errors.py)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from search.cli import app
from tests.conftest import TINY_ARCH, Bench


def _run_config(bench: Bench, stage1: Path, tmp: Path, checkpoint: Path | None = None) -> Path:
    raw = yaml.safe_load((bench.root / "prepare.yaml").read_text())
    ckpt = str(checkpoint or stage1 / "best")
    raw["pruning"] = {"output_dir": str(tmp / "out" / "prune"), "epochs": 1, "batch_size": 64,
                      "sparsity": 0.5, "checkpoint": ckpt}  # fmt: skip
    raw["search"] = {"storage_path": str(tmp / "out" / "runs"), "name": "s", "num_samples": 2}
    path = tmp / "run.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _truncated(stage1: Path, tmp: Path) -> Path:
    ckpt = tmp / "truncated"
    shutil.copytree(stage1 / "best", ckpt)
    weights = ckpt / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    return ckpt


def _other_size(stage1: Path, tmp: Path) -> Path:
    """A checkpoint of another size: same tokenizer, 8-dimensional visual features."""
    from models.config import ArchitectureConfig
    from models.vqa_model import small_backbone
    from vqa.tokenize import load_tokenizer

    ckpt = tmp / "other_size"
    tokenizer = load_tokenizer(stage1 / "best")
    small_backbone(ArchitectureConfig(**TINY_ARCH), len(tokenizer), 8).save_pretrained(str(ckpt))
    tokenizer.save_pretrained(str(ckpt))
    return ckpt


Case = Callable[[Bench, Path, Path], list[str]]


def prune(*overrides: str, checkpoint: Callable[[Path, Path], Path] | None = None) -> Case:
    def args(bench: Bench, stage1: Path, tmp: Path) -> list[str]:
        ckpt = checkpoint(stage1, tmp) if checkpoint else None
        return ["prune", str(_run_config(bench, stage1, tmp, ckpt)), *overrides]

    return args


def search(*overrides: str) -> Case:
    def args(bench: Bench, stage1: Path, tmp: Path) -> list[str]:
        return ["search", str(_run_config(bench, stage1, tmp)), *overrides]

    return args


def on_dir(command: str, *extra: str) -> Case:
    def args(bench: Bench, stage1: Path, tmp: Path) -> list[str]:
        (tmp / "not_a_run").mkdir()
        return [command, str(tmp / "not_a_run"), *extra]

    return args


CASES = [
    pytest.param(prune("pruning.language=0.99", "pruning.visual=0.99", "pruning.sparsity=0.2"),
                 "pruning: ", id="infeasible-budget"),
    pytest.param(prune("pruning.bounds=[0.8, 0.9]"), "pruning.sparsity: 0.5 is outside bounds",
                 id="bounds-exclude-the-budget"),
    pytest.param(prune("pruning.bounds=[0.6, 0.5]"), "bounds must satisfy", id="bounds-reversed"),
    pytest.param(prune("pruning.sparsity=1.0"), "pruning.sparsity: Input should be less than 1",
                 id="sparsity-one"),
    pytest.param(prune("pruning.sparsity=-0.1"), "pruning.sparsity: Input should be greater",
                 id="sparsity-negative"),
    pytest.param(prune("pruning.loss=focal"), "pruning.loss.name: Input should be",
                 id="unknown-loss"),
    pytest.param(prune("pruning.lr"), "malformed override 'pruning.lr'", id="malformed-override"),
    pytest.param(prune("pruning.epochs=[1"), "the value is not valid YAML", id="override-yaml"),
    pytest.param(prune(checkpoint=_truncated), "cannot load the LXMERT checkpoint",
                 id="truncated-checkpoint"),
    pytest.param(prune(checkpoint=_other_size), "visual_feat_dim 8 does not match",
                 id="checkpoint-of-another-size"),
    pytest.param(prune(checkpoint=lambda s, t: t / "nowhere"),
                 "checkpoint directory not found (pruning.checkpoint)", id="missing-checkpoint"),
    pytest.param(search("search.searcher=hyperband"), "search.searcher: Input should be",
                 id="unknown-searcher"),
    pytest.param(search("search.searcher=nsga2"), "nsga2' is multi-objective",
                 id="nsga2-single-metric"),
    pytest.param(search("search.metric=test_overall"),
                 "search.metric: Value error, 'test_overall' is not reported every epoch; "
                 "use one of sel_overall", id="metric-only-at-the-end"),
    pytest.param(search("search.metric=[sel_overall, remaining_params]", "search.mode=[max, min]",
                        "search.scheduler=asha"), "needs a single metric", id="asha-two-metrics"),
    pytest.param(search("search.budgets=[1.5]"), "budgets must be fractions", id="budget-above-1"),
    pytest.param(search("search.hyperparameters={lr: {type: loguniform, low: 0, high: 1}}"),
                 "needs low > 0", id="loguniform-from-zero"),
    pytest.param(search("pruning.bounds=[0.6, 0.9]"), "pruning.sparsity: 0.5 is outside bounds",
                 id="search-budget-outside-bounds"),
    pytest.param(on_dir("resume"), "not a sweep run directory", id="resume-not-a-run"),
    pytest.param(on_dir("results"), "not a sweep run directory", id="results-not-a-run"),
    pytest.param(on_dir("export"), "not a pruning run directory", id="export-not-a-run"),
    pytest.param(on_dir("pareto"), "no trials.parquet yet", id="pareto-no-results"),
    pytest.param(on_dir("pareto", "--objectives", "test_overall:up,x:min"), "up",
                 id="pareto-bad-objective"),
]  # fmt: skip


def _files(root: Path) -> set[Path]:
    return set(root.rglob("*"))


@pytest.mark.parametrize(("case", "needle"), CASES)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    tiny_bench: Bench, tiny_stage1: Path, tmp_path: Path, case: Case, needle: str
) -> None:
    args = case(tiny_bench, tiny_stage1, tmp_path)
    before = _files(tmp_path)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], lines
    assert _files(tmp_path) == before  # nothing written, not even an empty directory
