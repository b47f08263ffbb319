"""The CLI's happy paths: demo, synth -> prepare -> report, convert-tsv, overrides."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from search.cli import app
from search.config import load_config, validate_config
from tests.conftest import run_tickets
from vqa.features import load_feature_store

runner = CliRunner()


@pytest.mark.ray
def test_demo_runs_the_whole_pipeline(tmp_path: Path) -> None:
    args = ["demo", "--out", str(tmp_path / "demo"), "--questions", "800",
            "pretrain.epochs=1", "finetune.epochs=1", "pruning.epochs=2", "search.num_samples=3",
            "search.asha.grace_period=1"]  # fmt: skip
    result = run_tickets(*args, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "prior-only baseline" in out
    row = {m[0]: float(m[1]) for m in re.findall(r"^(train|test)\s+([\d.]+)", out, re.M)}
    assert row["train"] - row["test"] >= 40
    assert re.search(r"stage 1 \(lpf\): ID [\d.]+, OOD [\d.]+, dev [\d.]+", out)
    config = load_config(tmp_path / "demo" / "demo.yaml")
    assert config.finetune.epochs == 1 and config.objective.name == "lpf"
    assert (config.data.cache_dir / "manifest.json").is_file()
    assert (tmp_path / "demo" / "finetune" / "best" / "model.safetensors").is_file()
    run_dir = tmp_path / "demo" / "runs" / "demo"
    trials = pd.read_parquet(run_dir / "trials.parquet")
    assert len(trials) == 3 and trials["trial_id"].is_unique
    stage1_test = json.loads((tmp_path / "demo" / "finetune" / "metrics.json").read_text())[
        "test"]["overall"]  # fmt: skip
    # The closing table: prior-only, full, uniform and best rows (dev %, OOD %, weights kept).
    row = (
        r"^(training prior \(no image\)|best guess against the prior \(no image\)"
        r"|full stage-1 model"
        r"|uniform allocation, s = 0.7(?: \([a-z ,]+\))?"
        r"|best allocation found \([\d. /]+\))\s+([\d.]+)\s+([\d.]+|-)\s+([\d,]+|-)$"
    )
    table = {m[0].split(" (")[0] if m[0].startswith("uniform") else m[0]: m[1:]
             for m in re.findall(row, out, re.M)}  # fmt: skip
    assert len(table) == 5, out
    assert float(table["best guess against the prior (no image)"][1]) > float(
        table["training prior (no image)"][1]
    )  # on VQA-CP's test the training prior is the worst question-only guess
    full_kept = int(table["full stage-1 model"][2].replace(",", ""))
    best = next(v for k, v in table.items() if k.startswith("best allocation"))
    assert int(best[2].replace(",", "")) == pytest.approx(0.3 * full_kept, rel=1e-3)
    assert float(table["full stage-1 model"][1]) == pytest.approx(stage1_test, abs=0.05)
    assert "What it shows: keeping 30% of the weights" in out
    for name in ("pareto.png", "allocation_sel_overall.png", "epochs.parquet"):
        assert (run_dir / name).is_file() and str(run_dir / name) in out, name
    # Run again: every stage is found complete and nothing is redone.
    again = run_tickets(*args, timeout=900)
    assert again.returncode == 0, again.stdout + again.stderr
    assert (again.stdout + again.stderr).count("already complete") == 2
    pd.testing.assert_frame_equal(pd.read_parquet(run_dir / "trials.parquet"), trials)


def test_synth_prepare_report_with_override(tmp_path: Path) -> None:
    bench = tmp_path / "vs"
    result = runner.invoke(
        app,
        ["data", "synth", str(bench), "--dataset", "vqavs", "--questions", "800",
         "--images", "400", "--feature-dim", "16", "--seed", "3"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    config = str(bench / "prepare.yaml")
    other = tmp_path / "other_cache"
    args = ["data", "prepare", config, f"data.cache_dir={other}", "data.min_answer_count=2"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "written" in result.output and (other / "manifest.json").is_file()
    assert not (bench / "cache").exists()
    saved = load_config(other / "config.yaml").data
    assert saved.min_answer_count == 2 and saved.dataset == "vqavs"
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "up to date" in again.output
    report = runner.invoke(app, ["data", "report", config, f"data.cache_dir={other}"])
    assert report.exit_code == 0, report.output
    assert "ood_mean" in report.output and "val" in report.output


def test_convert_tsv_command(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    feats = rng.standard_normal((2, 3, 5)).astype(np.float32)
    boxes = np.array([[10, 20, 30, 40]] * 3, dtype=np.float32)
    lines = []
    for i, (image_id, w, h) in enumerate([(7, 100, 50), (9, 200, 80)]):
        fields = [str(image_id), str(w), str(h), "3",
                  base64.b64encode(boxes.tobytes()).decode(),
                  base64.b64encode(feats[i].tobytes()).decode()]  # fmt: skip
        lines.append("\t".join(fields))
    tsv = tmp_path / "trainval_36.tsv"
    tsv.write_text("\n".join(lines) + "\n")
    out = tmp_path / "features.h5"
    result = runner.invoke(app, ["data", "convert-tsv", str(out), str(tsv), "--dtype", "float32"])
    assert result.exit_code == 0, result.output
    store = load_feature_store(out)
    assert store.image_ids.tolist() == [7, 9]
    np.testing.assert_array_equal(store.features, feats)
    np.testing.assert_allclose(store.boxes[1, 0], [10 / 200, 20 / 80, 30 / 200, 40 / 80])


def test_every_command_has_help() -> None:
    for args in ([], ["data"], ["data", "synth"], ["data", "prepare"], ["data", "report"],
                 ["data", "convert-tsv"], ["demo"], ["pretrain"], ["finetune"]):  # fmt: skip
        result = runner.invoke(app, [*args, "--help"])
        assert result.exit_code == 0 and "Usage" in result.output, args


def test_configs_demo_yaml_matches_what_the_demo_runs() -> None:
    from search.demo import demo_config

    repo = Path(__file__).resolve().parents[1]
    shipped = load_config(repo / "configs" / "demo.yaml").model_dump(mode="json")
    built = validate_config(demo_config(Path("tickets_demo")), "demo").model_dump(mode="json")
    for block in ("pretrain", "finetune"):
        shipped[block].pop("output_dir")
        built[block].pop("output_dir")
    for block in ("pretrain", "finetune", "objective"):
        assert shipped[block] == built[block], block
    for key in ("dataset", "num_boxes", "feature_dim", "tokenizer", "min_answer_count"):
        assert shipped["data"][key] == built["data"][key], key


@pytest.mark.parametrize(
    "path", sorted((Path(__file__).parent.parent / "configs").rglob("*.yaml")), ids=str
)
def test_every_shipped_config_validates(path: Path) -> None:
    from search.config import load_config

    cfg = load_config(path)
    first = path.read_text().splitlines()[0]
    assert first.startswith("# tickets "), first  # each opens with the command that runs it
    if cfg.search is not None:
        assert cfg.pruning is not None and cfg.finetune is not None
        assert cfg.pruning.epochs == 20 or path.name == "demo.yaml"
