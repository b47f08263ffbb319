"""CLI conventions: -h on every command, --version, fixed choices shown and enforced by typer,
"did you mean" for an unknown config field, and the fields that differ when an output directory
holds another run. Through the installed console script where the process boundary matters."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from typer.testing import CliRunner

from models.train import check_output_dir, config_differences
from search.cli import app
from search.config import load_config, validate_config
from vqa.errors import InputError

TICKETS = str(Path(sys.executable).parent / "tickets")
# Wide enough that rich draws no option's help or error message over two lines.
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
DATA = {"dataset": "vqacp_v2", "root": "data", "features": "features.h5", "cache_dir": "cache"}


def tickets(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([TICKETS, *map(str, args)], env=ENV, cwd=cwd, capture_output=True,
                          text=True, timeout=120)  # fmt: skip


def command_paths(group: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command and sub-command of the typer group `group`, as argument lists."""
    out = [prefix]
    for name, command in group.commands.items():
        if hasattr(command, "commands"):  # a sub-group (typer's groups are not click's here)
            out += command_paths(command, (*prefix, name))
        else:
            out.append((*prefix, name))
    return out


def test_h_and_version_through_the_console_script() -> None:
    top = tickets("-h")
    assert top.returncode == 0, top.stderr
    assert "Usage: tickets [OPTIONS] COMMAND" in top.stdout and "--version" in top.stdout
    search = tickets("search", "-h")
    assert search.returncode == 0, search.stderr
    assert "Usage: tickets search" in search.stdout and "--dry-run" in search.stdout
    shown = tickets("--version")
    assert shown.returncode == 0 and shown.stderr == ""
    assert shown.stdout == f"tickets {version('tickets')}\n"


def test_every_command_and_sub_command_takes_h_as_help() -> None:
    paths = command_paths(typer.main.get_command(app))
    assert {("data", "synth"), ("search",), ("pareto",), ("data",), ()} <= set(paths)
    for path in paths:
        short = CliRunner().invoke(app, [*path, "-h"])
        assert short.exit_code == 0 and "Usage: " in short.output, path
        assert short.output == CliRunner().invoke(app, [*path, "--help"]).output, path


@pytest.mark.parametrize(
    ("args", "shown"),
    [
        (["data", "synth"], ["<vqacp_v2|vqavs>", "<spread|one>"]),
        (["data", "convert-tsv"], ["<auto|bottomup|lxmert>", "<float16|float32>"]),
    ],
)
def test_fixed_choices_are_listed_in_help(args: list[str], shown: list[str]) -> None:
    result = CliRunner().invoke(app, [*args, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for choices in shown:
        assert choices in result.output, result.output


def test_an_invalid_choice_exits_2_with_typers_message(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    proc = tickets("data", "synth", out, "--dataset", "vqa_cp")
    assert proc.returncode == 2 and proc.stdout == ""
    assert "Invalid value for '--dataset': Value error, 'vqa_cp' is not one of 'vqacp_v2', " \
           "'vqavs'." in proc.stderr  # fmt: skip
    assert not out.exists()
    for args, option in [(["--test-answers", "both"], "--test-answers"),
                         (["--questions", "80", "--dataset", "VQAVS"], "--dataset")]:  # fmt: skip
        result = CliRunner().invoke(app, ["data", "synth", str(out), *args])
        assert result.exit_code == 2 and f"Invalid value for '{option}'" in result.output, args
    tsv = ["data", "convert-tsv", str(tmp_path / "f.h5"), str(tmp_path / "x.tsv")]
    for args, option in [(["--dtype", "float64"], "--dtype"), (["--format", "csv"], "--format")]:
        result = CliRunner().invoke(app, [*tsv, *args])
        assert result.exit_code == 2 and f"Invalid value for '{option}'" in result.output, args
    assert list(tmp_path.iterdir()) == []


def test_an_unknown_config_field_suggests_the_closest(tmp_path: Path) -> None:
    config = tmp_path / "sweep.yaml"
    config.write_text(yaml.safe_dump({"data": DATA, "pruning": {"output_dir": "p", "sparsity": 0.5},
                                      "search": {"seracher": "grid"}}))  # fmt: skip
    proc = tickets("search", config, "--dry-run", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout == ""
    assert (
        proc.stderr
        == f"error: {config}: search.seracher: unknown field (did you mean 'searcher'?)\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep.yaml"]


@pytest.mark.parametrize(
    ("raw", "line"),
    [
        ({"modle": {}}, "modle: unknown field (did you mean 'model'?)"),
        ({"search": {"grid": {"coarse_stp": 0.1}}},
         "search.grid.coarse_stp: unknown field (did you mean 'coarse_step' or "
         "'coarse_values'?)"),
        ({"search": {"hyperparameters": {"lr": {"type": "uniform", "lw": 0, "high": 1}}}},
         "search.hyperparameters.lr.lw: unknown field (did you mean 'low'?)"),
        ({"pruning": {"output_dir": "p", "sparsity": 0.5, "loss": {"lpf_gama": 2}}},
         "pruning.loss.lpf_gama: unknown field (did you mean 'lpf_gamma'?)"),
        ({"search": {"asha": {"grace": 2}}},
         "search.asha.grace: unknown field (did you mean 'grace_period'?)"),
        ({"finetune": {"output_dir": "f", "lrr": 1}},
         "finetune.lrr: unknown field (did you mean 'lr'?)"),
        ({"data": {**DATA, "bogus": 1}}, "data.bogus: unknown field"),
    ],
    ids=["top-level", "nested", "in-a-mapping", "pruning-loss", "a-prefix", "optional-block",
         "nothing-close"],
)  # fmt: skip
def test_did_you_mean_walks_the_schema(raw: dict, line: str) -> None:
    raw = {"data": DATA, **raw}
    with pytest.raises(InputError) as caught:
        validate_config(raw, "cfg.yaml")
    assert str(caught.value) == f"cfg.yaml: {line}"


def test_a_refused_output_dir_names_the_fields_that_differ(tmp_path: Path) -> None:
    config = tmp_path / "run.yaml"
    # Absolute paths: the in-process run below resolves relative ones from another directory.
    data = {k: str(tmp_path / v) if k != "dataset" else v for k, v in DATA.items()}
    finetune = {"output_dir": str(tmp_path / "ft"), "lr": 0.0005, "epochs": 1}
    config.write_text(yaml.safe_dump({"data": data, "finetune": finetune}))
    saved = load_config(config).blocks_yaml("data", "model", "objective", "finetune")
    (tmp_path / "ft").mkdir()
    (tmp_path / "ft" / "config.yaml").write_text(saved)  # what stage 1 of run.yaml recorded
    proc = tickets("finetune", config, "finetune.lr=0.001", "data.selection_seed=1", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout == ""
    out = tmp_path / "ft"
    assert proc.stderr == (
        f"error: {out}: holds a run with a different config ({out / 'config.yaml'}; differs in: "
        "data.selection_seed 0 -> 1, finetune.lr 0.0005 -> 0.001); use another output_dir or "
        "delete it\n"
    )
    assert (out / "config.yaml").read_text() == saved and len(list(out.iterdir())) == 1
    # Stage 2 (tickets prune) is refused through the same check, in-process here.
    pruning = {"output_dir": str(tmp_path / "pr"), "sparsity": 0.5, "checkpoint": "ck"}
    config.write_text(yaml.safe_dump({"data": data, "pruning": pruning}))
    (tmp_path / "pr").mkdir()
    (tmp_path / "pr" / "config.yaml").write_text(load_config(config).blocks_yaml("data", "pruning"))
    result = CliRunner().invoke(app, ["prune", str(config), "pruning.lr=0.5"])
    assert result.exit_code == 2
    assert "config.yaml; differs in: pruning.lr 5e-05 -> 0.5); use another" in result.stderr


def test_config_differences_are_shortened_to_the_first_few(tmp_path: Path) -> None:
    old = {"a": {"x": 1, "y": "p", "z": [1, 2]}, "b": 0.5, "c": None}
    new = {"a": {"x": 2, "y": "q", "z": [1, 3]}, "b": 0.25, "d": {"e": True}}
    text = config_differences(yaml.safe_dump(old), yaml.safe_dump(new))
    assert text == "differs in: a.x 1 -> 2, a.y p -> q, a.z [1, 2] -> [1, 3], and 3 more"
    everything = config_differences(yaml.safe_dump(old), yaml.safe_dump(new), limit=10)
    assert everything.endswith("b 0.5 -> 0.25, c null -> (absent), d.e (absent) -> true")
    assert config_differences("a: 1\n", "a:   1\n") == "differs in formatting only"
    (tmp_path / "config.yaml").write_text("a: 1\n")
    check_output_dir(tmp_path, "a: 1\n")  # the same run: accepted
    with pytest.raises(InputError, match=r"differs in: a 1 -> 2\); use another"):
        check_output_dir(tmp_path, "a: 2\n")
