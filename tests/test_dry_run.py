"""`tickets search CONFIG --dry-run`: the plan of a sweep on a real tiny checkpoint, its numbers
checked against pruning.budget, search.space and the GridSearcher a real sweep builds; nothing
written, Ray never imported."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from pruning.budget import GROUPS, feasible_interval
from search.cli import app
from search.config import load_config
from search.space import startup_trials, unit_coordinates
from tests.conftest import Bench

TICKETS = str(Path(sys.executable).parent / "tickets")
BOUNDS = (0.05, 0.95)
HYPERPARAMETERS = {"lr": {"type": "loguniform", "low": 1e-5, "high": 1e-3},
                   "epochs": {"type": "choice", "values": [10, 20]}}  # fmt: skip

# Calls the CLI in this fresh process, then says on stderr whether Ray was imported.
IN_PROCESS = """
import sys
from search.cli import app
try:
    app(sys.argv[1:], prog_name="tickets")
except SystemExit as e:
    code = e.code
print("RAY_IMPORTED=" + str(any(m == "ray" or m.startswith("ray.") for m in sys.modules)),
      file=sys.stderr)
sys.exit(code)
"""


def write_config(bench: Bench, checkpoint: Path, root: Path, **search) -> Path:
    raw = yaml.safe_load((bench.root / "prepare.yaml").read_text())
    raw["pruning"] = {"output_dir": "prune", "checkpoint": str(checkpoint), "sparsity": 0.5,
                      "bounds": list(BOUNDS), "epochs": 3}  # fmt: skip
    raw["search"] = {"storage_path": "runs", "name": "planned", **search}  # relative: to the cwd
    path = root / "sweep.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def files_under(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in root.rglob("*")}  # fmt: skip


def f4(x: float) -> str:
    return f"{x:.4f}"


def test_dry_run_plans_an_optuna_sweep_without_ray_or_files(
    tiny_bench: Bench, tiny_pretrained: Path, tmp_path: Path
) -> None:
    from search.tuner import _budgets, model_sizes

    config = write_config(tiny_bench, tiny_pretrained, tmp_path, searcher="gp",
                          budgets=[0.5, 0.8], num_samples=7, max_concurrent_trials=3,
                          hyperparameters=HYPERPARAMETERS, scheduler="asha",
                          confirm={"top": 2, "seeds": 3})  # fmt: skip
    before, checkpoint = files_under(tmp_path), files_under(tiny_pretrained)
    proc = subprocess.run([sys.executable, "-c", IN_PROCESS, "search", str(config), "--dry-run"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "RAY_IMPORTED=False", proc.stderr
    out = proc.stdout
    # It wrote nothing: no run directory under storage_path, no study, nothing beside the config.
    assert files_under(tmp_path) == before and not (tmp_path / "runs").exists()
    assert files_under(tiny_pretrained) == checkpoint

    cfg = load_config(config).resolved()
    sizes = model_sizes(tiny_pretrained)  # what a real sweep computes, through search.tuner
    assert _budgets(cfg) == [0.5, 0.8]
    weights = ", ".join(f"{g} {sizes[g]:,}" for g in GROUPS)
    assert f"weights: {weights}; pooler {sizes['pooler']:,}, pruned at s\n" in out
    assert "budgets: 0.5, 0.8 (search.budgets)\n" in out
    # `epochs` is searched here, so no trial-epochs are promised for the re-runs either
    assert ("then confirmation: the best 2 re-run with 3 fresh seeds each (search.confirm): "
            "6 trials\n") in out  # fmt: skip
    assert "bounds: [0.05, 0.95] (pruning.bounds)\n" in out
    for s in (0.5, 0.8):
        line = re.search(rf"^s = {s}: feasible (.*)$", out, re.M)
        assert line, out
        found = {g: (a, b) for g, a, b in re.findall(r"(\w+) \[([\d.]+), ([\d.]+)\]", line[1])}
        for g in GROUPS:
            lo, hi = feasible_interval(s, sizes, g, bounds=BOUNDS)
            assert found[g] == (f4(lo), f4(hi)), (s, g)
        u = unit_coordinates(s, sizes, s, s, BOUNDS)
        assert (
            f"  uniform: s_language {f4(s)}, s_visual {f4(s)}, s_cross {f4(s)} = "
            f"u_language {f4(u['u_language'])}, u_visual {f4(u['u_visual'])}\n"
        ) in out
    # At s = 0.8 the tiny model's bounds bite: the intervals are not the bounds themselves.
    assert feasible_interval(0.8, sizes, "language", bounds=BOUNDS)[0] > BOUNDS[0]
    assert "hyperparameters: 2\n" in out and "  lr: loguniform in [1e-05, 0.001]\n" in out
    assert "  epochs: choice of [10, 20]\n" in out
    startup = startup_trials(len(HYPERPARAMETERS), 2)
    assert (f"searcher: gp (Optuna GPSampler, seed 0, {startup} random start-up trials, "
            "the uniform allocation of each budget first)\n") in out  # fmt: skip
    assert ("scheduler: asha on sel_overall (max), grace period 1 epoch, reduction factor 2.0, "
            "at most 20 epochs\n") in out  # fmt: skip
    assert "trials: 7 (search.num_samples), at most 3 at a time" in out
    assert "trial-epochs" not in out  # the epochs are searched: no bound from pruning.epochs
    assert f"run directory: {tmp_path / 'runs' / 'planned'} (not created)\n" in out
    assert "coarse points" not in out


def test_dry_run_of_the_grid_lists_the_points_a_sweep_would_run(
    tiny_bench: Bench, tiny_pretrained: Path, tmp_path: Path
) -> None:
    from search.tuner import build_searcher, model_sizes

    config = write_config(tiny_bench, tiny_pretrained, tmp_path, searcher="grid", budgets=[0.7])
    before = files_under(tmp_path)
    proc = subprocess.run([TICKETS, "search", str(config), "--dry-run", "--name", "other"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert files_under(tmp_path) == before
    out = proc.stdout

    cfg = load_config(config).resolved()
    # The searcher `tickets search` builds (the grid opens no study: run_dir is not touched).
    searcher = build_searcher(cfg, model_sizes(tiny_pretrained), tmp_path / "unused")
    assert not (tmp_path / "unused").exists()
    planned = [(f4(p["language"]), f4(p["visual"]), f4(p["cross"]))
               for p in searcher.coarse_points]  # fmt: skip
    listed = re.findall(r"^ +\d+  s_language ([\d.]+)  s_visual ([\d.]+)  s_cross ([\d.]+)$",
                        out, re.M)  # fmt: skip
    assert listed == planned and len(planned) > 1
    # Within bounds [0.05, 0.95] the coarse lattice is 0.1, 0.3, ..., 0.9 on both axes.
    assert f"  coarse points: {len(planned)} of the 25 on the grid" in out
    n = searcher.max_trials()
    fine = n - len(planned)
    assert fine > 0
    assert f"  upper bound of trials: {n} ({len(planned)} coarse + at most {fine} fine)\n" in out
    assert f"trials: at most {n}, at most 1 at a time" in out
    assert f"trial-epochs: at most {3 * n} (3 per trial)\n" in out
    assert "fine step 0.05 within 0.2 of the best coarse point on each axis" in out
    assert f"run directory: {tmp_path / 'runs' / 'other'} (not created)\n" in out


def _error(result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["pruning.checkpoint={root}/missing"],
         "error: {root}/missing: checkpoint directory not found (pruning.checkpoint)"),
        (["search.budgets=[0.97]"],
         "error: search.budgets: 0.97 is outside pruning.bounds [0.05, 0.95]; no allocation "
         "meets eq. 10 (s is the size-weighted mean of the three sparsities)"),
        (["search.searcher=grid", "pruning.bounds=[0.6,0.9]", "pruning.sparsity=0.7",
          "search.grid.coarse_step=0.9"],
         "error: search.grid: no coarse point is feasible at s=0.7 within bounds (0.6, 0.9) "
         "(grid [])"),
    ],
    ids=["missing-checkpoint", "budget-outside-bounds", "grid-without-a-point"],
)  # fmt: skip
def test_dry_run_bad_input_is_one_line_and_exit_2(
    tiny_bench: Bench, tiny_pretrained: Path, tmp_path: Path, overrides: list[str], expected: str
) -> None:
    config = write_config(tiny_bench, tiny_pretrained, tmp_path)
    before = files_under(tmp_path)
    args = [o.format(root=tmp_path) for o in overrides]
    result = CliRunner().invoke(app, ["search", str(config), "--dry-run", *args])
    assert _error(result) == expected.format(root=tmp_path)
    assert files_under(tmp_path) == before


def test_dry_run_needs_a_search_block(tiny_bench: Bench) -> None:
    result = CliRunner().invoke(app, ["search", str(tiny_bench.root / "prepare.yaml"), "--dry-run"])
    assert _error(result) == (
        "error: the config needs 'pruning:' and 'search:' blocks for tickets search"
    )
