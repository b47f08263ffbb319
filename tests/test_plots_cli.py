"""`tickets pareto` as the installed command on a sweep's real files: a tickets.yaml naming a real
(tiny, untrained) stage-1 checkpoint with its metrics.json, and trials that meet eq. 10 for that
model's group sizes. The default objectives, --out, the refusal to overwrite, and the sizes and
reference the report reads from the checkpoint, then from its own record once that is gone."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import pandas as pd
import pytest
import torch
import yaml
from transformers import LxmertConfig, LxmertModel

from models.structure import group_sizes
from pruning.budget import remaining_params, solve
from search.config import load_config
from search.pareto import pareto_report, parse_objectives
from tests.test_plots import ALLOCATIONS

TICKETS = str(Path(sys.executable).parent / "tickets")
GROUPS = ("language", "visual", "cross")
BOUNDS = (0.05, 0.95)


def tickets(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([TICKETS, *args], env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    """A run directory as a sweep leaves it (no Ray state needed by `pareto`), and its sizes."""
    root = tmp_path_factory.mktemp("plots_cli")
    stage1 = root / "finetune"
    config = LxmertConfig(hidden_size=16, num_attention_heads=2, intermediate_size=32,
                          vocab_size=64, visual_feat_dim=16, l_layers=3, x_layers=1,
                          r_layers=3)  # fmt: skip
    torch.manual_seed(0)
    model = LxmertModel(config)
    model.save_pretrained(stage1 / "best")
    sizes = {g: n for g, n in group_sizes(model).items() if g in GROUPS}
    (stage1 / "metrics.json").write_text(json.dumps({
        "selection": {"overall": 41.5}, "test": {"overall": 40.25, "ood_mean": 33.0}}))  # fmt: skip
    run = root / "runs" / "sweep"
    run.mkdir(parents=True)
    raw = {"data": {"dataset": "vqacp_v2", "root": str(root / "data"),
                    "features": str(root / "data" / "f.h5"), "cache_dir": str(root / "cache")},
           "pruning": {"checkpoint": str(stage1 / "best"), "output_dir": str(root / "prune"),
                       "sparsity": 0.5, "bounds": list(BOUNDS)},
           "search": {"name": "sweep", "budgets": [0.5, 0.8],
                      "storage_path": str(root / "runs")}}  # fmt: skip
    (run / "tickets.yaml").write_text(yaml.safe_dump(raw))
    load_config(run / "tickets.yaml")  # a valid run config, as a sweep saves it
    rows = []
    for i, (s, lang, vis) in enumerate(ALLOCATIONS):
        try:
            triple = solve(s, sizes, language=lang, visual=vis, bounds=BOUNDS)
        except ValueError:  # infeasible for this model's sizes
            continue
        sel = 30 + 10 * lang - 5 * vis + 10 * (0.8 - s)
        rows.append({"trial_id": f"t{i:02d}", "status": "finished", "early_stopped": False,
                     "s_overall": s, **{f"s_{g}": triple[g] for g in GROUPS},
                     "remaining_params": remaining_params(sizes, triple), "sel_overall": sel,
                     "test_overall": sel - 2.0, "test_ood_mean": sel - 5.0})  # fmt: skip
    assert len(rows) >= 8
    pd.DataFrame(rows).to_parquet(run / "trials.parquet", index=False)
    return run, sizes


def test_pareto_writes_to_out_and_refuses_to_overwrite(
    sweep: tuple[Path, dict[str, int]], tmp_path: Path
) -> None:
    run, sizes = sweep
    before = sorted(p.name for p in run.iterdir())
    out = tmp_path / "report"
    done = tickets("pareto", str(run), "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in run.iterdir()) == before  # nothing written in RUN_DIR
    names = ["allocation_sel_overall.png", "pareto.json", "pareto.parquet", "pareto.png"]
    assert sorted(p.name for p in out.iterdir()) == names
    for name in ("pareto.png", "allocation_sel_overall.png"):
        assert matplotlib.image.imread(out / name).ndim == 3
    # Chosen on selection by default; the test metrics of its members beside them.
    lines = done.stdout.splitlines()
    assert lines[0].startswith("Pareto front over sel_overall (max), remaining_params (min)")
    header = lines[1].split()
    assert header[:3] == ["trial_id", "sel_overall", "remaining_params"]
    assert {"test_overall", "test_ood_mean", "s_overall"} <= set(header)
    assert "note:" not in done.stdout  # sizes and stage-1 reference found
    record = json.loads((out / "pareto.json").read_text())
    assert record["sizes"] == sizes and record["sizes_source"].endswith("best/config.json")
    assert record["bounds"] == list(BOUNDS) and record["written_by"] == "tickets pareto"
    front = pd.read_parquet(out / "pareto.parquet")
    assert record["front"] == list(front["trial_id"])

    # Again: refused in one line, exit 2, the earlier files untouched.
    saved = {p.name: p.read_bytes() for p in out.iterdir()}
    again = tickets("pareto", str(run), "--out", str(out), "--objectives",
                    "test_overall:max,params:min")  # fmt: skip
    assert again.returncode == 2
    assert again.stderr.strip().count("\n") == 0
    assert f"{out / 'pareto.parquet'} exists" in again.stderr and "--overwrite" in again.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == saved


def test_a_copied_sweep_keeps_its_sizes_in_the_report_record(
    sweep: tuple[Path, dict[str, int]], tmp_path: Path
) -> None:
    run, sizes = sweep
    copy = tmp_path / "laptop" / "sweep"
    shutil.copytree(run, copy)
    objectives = parse_objectives("sel_overall:max,remaining_params:min")
    pareto_report(copy, objectives, overwrite=True, written_by="tickets search")  # sweep's end
    stage1 = Path(yaml.safe_load((copy / "tickets.yaml").read_text())["pruning"]["checkpoint"])
    hidden = stage1.parent.with_name("finetune-away")
    stage1.parent.rename(hidden)  # the copy's checkpoint is not on this machine
    try:
        _, text, paths = pareto_report(copy, objectives, out=tmp_path / "again")
    finally:
        hidden.rename(stage1.parent)
    record = json.loads(paths[-1].read_text())
    assert record["sizes"] == sizes
    assert record["sizes_source"] == f"{copy / 'pareto.json'} (from {stage1 / 'config.json'})"
    assert "no full-model reference line" in text and "group sizes unknown" not in text
    # The sweep's own report in the copy is replaced by a plain call, and says who wrote it.
    pareto_report(copy, objectives)
    assert json.loads((copy / "pareto.json").read_text())["written_by"] == "tickets pareto"
