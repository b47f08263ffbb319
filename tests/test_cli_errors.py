"""Bad input to `tickets data ...`: one `error:` line on stderr naming the culprit, exit code 2,
nothing half-written. Most cases run in-process through typer's CliRunner; a few through the
installed console script, to check the real process boundary."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from search.cli import app
from tests.tiny import write_vqacp
from vqa.features import write_feature_store

TICKETS = str(Path(sys.executable).parent / "tickets")
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}
D = 8
N_IMAGES = 10


def features_file(path: Path, image_ids: list[int], d: int = D) -> None:
    rng = np.random.default_rng(0)
    n = len(image_ids)
    boxes = np.sort(rng.random((n, 36, 4)), axis=-1).astype(np.float32)
    write_feature_store(path, image_ids, rng.standard_normal((n, 36, d)).astype(np.float32), boxes)


def setup(tmp_path: Path) -> Path:
    """tmp/data (40 train, 40 test questions over 10 images), tmp/features.h5, tmp/prepare.yaml;
    the cache would go to tmp/cache."""
    root = tmp_path / "data"
    root.mkdir()
    write_vqacp(root, n_images=N_IMAGES)
    features_file(tmp_path / "features.h5", list(range(1, N_IMAGES + 1)))
    config = {
        "data": {
            "dataset": "vqacp_v2",
            "root": str(root),
            "features": str(tmp_path / "features.h5"),
            "cache_dir": str(tmp_path / "cache"),
            "feature_dim": D,
            "min_answer_count": 1,
            "tokenizer": {"kind": "wordpiece", "vocab_size": 100},
        }
    }
    cfg = tmp_path / "prepare.yaml"
    cfg.write_text(yaml.safe_dump(config, sort_keys=False))
    return cfg


def one_error_line(stderr: str, *needles: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    line = lines[0]
    assert line.startswith("error: ") and len(line) > len("error: "), line
    for needle in needles:
        assert needle in line, line
    return line


def invoke(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args], env={"HF_HUB_OFFLINE": "1"})


def tickets(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [TICKETS, *map(str, args)], env=ENV, cwd=cwd, capture_output=True, text=True, timeout=120
    )


def nothing_written(tmp_path: Path) -> None:
    assert not (tmp_path / "cache").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".cache")] == []


# ---------------------------------------------------------------- real console script


def test_prepare_positive_control_then_up_to_date(tmp_path: Path) -> None:
    cfg = setup(tmp_path)
    first = tickets("data", "prepare", cfg)
    assert first.returncode == 0, first.stderr
    assert f"cache {tmp_path / 'cache'}: written (" in first.stdout
    assert "train 40" in first.stdout and "dev " in first.stdout
    manifest = json.loads((tmp_path / "cache" / "manifest.json").read_text())
    assert sum(manifest["splits"].values()) == 80
    second = tickets("data", "prepare", cfg)
    assert second.returncode == 0, second.stderr
    assert "up to date" in second.stdout
    assert (tmp_path / "cache" / "manifest.json").read_text() == json.dumps(
        manifest, indent=1
    ) + "\n"


def test_prepare_bad_input_through_the_console_script(tmp_path: Path) -> None:
    cfg = setup(tmp_path)
    path = tmp_path / "data" / "vqacp_v2_test_annotations.json"
    path.write_text(json.dumps(json.loads(path.read_text())[:-1]))  # drops question 2039
    proc = tickets("data", "prepare", cfg)
    assert proc.returncode == 2
    one_error_line(proc.stderr, str(path), "no annotation for question_id 2039")
    assert proc.stdout == ""
    nothing_written(tmp_path)


def test_convert_tsv_missing_input_through_the_console_script(tmp_path: Path) -> None:
    out = tmp_path / "out" / "features.h5"
    proc = tickets("data", "convert-tsv", out, tmp_path / "missing.tsv")
    assert proc.returncode == 2
    one_error_line(proc.stderr, f"{tmp_path / 'missing.tsv'}: input TSV file not found")
    assert not out.exists()
    assert not out.parent.exists()


def test_synth_train_prior_through_the_console_script(tmp_path: Path) -> None:
    """`--train-prior longtail` reaches the benchmark (its order is written to synth.json); with
    `--test-answers one` it is refused in one line, exit 2, nothing written."""
    out = tmp_path / "lt"
    args = ["data", "synth", out, "--questions", "800", "--images", "300", "--feature-dim", "16"]
    proc = tickets(*args, "--train-prior", "longtail")
    assert proc.returncode == 0, proc.stderr
    meta = json.loads((out / "synth.json").read_text())
    assert meta["spec"]["train_prior"] == "longtail"
    assert sorted(meta["train_order"]) == sorted(meta["dominant_train"])
    bad = tmp_path / "bad"
    bad_args = [bad if a == out else a for a in args]
    proc = tickets(*bad_args, "--train-prior", "longtail", "--test-answers", "one")
    assert proc.returncode == 2 and proc.stdout == ""
    one_error_line(proc.stderr, "--train-prior longtail needs --test-answers spread")
    assert not bad.exists()


def test_synth_feature_mixing_through_the_console_script(tmp_path: Path) -> None:
    """`--feature-mixing 1` reaches the benchmark (every box feature is that of mixing 0 times the
    one fixed rotation); `--feature-mixing 1.5` is refused in one line, exit 2, nothing written."""
    import h5py

    from vqa.synth import SynthSpec, feature_rotation

    args = ["--questions", "800", "--images", "300", "--feature-dim", "16"]
    feats = {}
    for w in ("0", "1"):
        proc = tickets("data", "synth", tmp_path / f"w{w}", *args, "--feature-mixing", w)
        assert proc.returncode == 0, proc.stderr
        with h5py.File(tmp_path / f"w{w}" / "features.h5") as f:
            feats[w] = f["features"][:].astype(np.float64)
    meta = json.loads((tmp_path / "w1" / "synth.json").read_text())
    assert meta["spec"]["feature_mixing"] == 1.0
    rotation = feature_rotation(SynthSpec(feature_dim=16, feature_mixing=1.0))
    assert np.abs(feats["0"] @ rotation - feats["1"]).max() < 1e-4
    assert np.abs(feats["0"] - feats["1"]).max() > 0.5
    bad = tmp_path / "bad"
    proc = tickets("data", "synth", bad, *args, "--feature-mixing", "1.5")
    assert proc.returncode == 2 and proc.stdout == ""
    one_error_line(proc.stderr, "--feature-mixing must be in [0, 1], got 1.5")
    assert not bad.exists()


def test_synth_yesno_verify_through_the_console_script(tmp_path: Path) -> None:
    """`--yesno verify` reaches the benchmark: the console script writes what `generate` writes
    for that spec, and its yes/no boxes differ from those of the default; an unknown choice is
    refused with exit 2 and nothing written."""
    import h5py

    from vqa.synth import SynthSpec, generate

    args = ["--questions", "800", "--images", "300", "--feature-dim", "16"]
    proc = tickets("data", "synth", tmp_path / "cli", *args, "--yesno", "verify")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "cli" / "synth.json").read_text())["spec"]["yesno"] == "verify"
    for mode in ("verify", "read"):
        generate(SynthSpec(questions=800, images=300, feature_dim=16, yesno=mode), tmp_path / mode)
    stores = {}
    for name in ("cli", "verify", "read"):
        with h5py.File(tmp_path / name / "features.h5") as f:
            stores[name] = (f["features"][:], f["object_ids"][:])
    assert (stores["cli"][0] == stores["verify"][0]).all()
    assert (stores["cli"][1] == stores["verify"][1]).all()
    assert (stores["cli"][1] != stores["read"][1]).any()
    bad = tmp_path / "bad"
    proc = tickets("data", "synth", bad, *args, "--yesno", "ask")
    assert proc.returncode == 2 and proc.stdout == ""
    assert "Invalid value for '--yesno'" in proc.stderr
    assert not bad.exists()


# ---------------------------------------------------------------- prepare, in-process


def _edit_json(name: str, change: Callable[[list[dict]], Any]) -> Callable[[Path], list[str]]:
    def break_it(tmp_path: Path) -> list[str]:
        path = tmp_path / "data" / name
        recs = json.loads(path.read_text())
        change(recs)
        path.write_text(json.dumps(recs, indent=1))
        return []

    return break_it


def _config_text(text: str) -> Callable[[Path], list[str]]:
    def break_it(tmp_path: Path) -> list[str]:
        (tmp_path / "prepare.yaml").write_text(text)
        return []

    return break_it


def _config_data(**extra: Any) -> Callable[[Path], list[str]]:
    def break_it(tmp_path: Path) -> list[str]:
        cfg = tmp_path / "prepare.yaml"
        raw = yaml.safe_load(cfg.read_text())
        raw["data"].update(extra)
        cfg.write_text(yaml.safe_dump(raw))
        return []

    return break_it


def _overrides(*items: str) -> Callable[[Path], list[str]]:
    return lambda tmp_path: list(items)


def _top_level_key(tmp_path: Path) -> list[str]:
    cfg = tmp_path / "prepare.yaml"
    cfg.write_text(cfg.read_text() + "modle:\n  hidden: 3\n")
    return []


def _unlink(name: str) -> Callable[[Path], list[str]]:
    def break_it(tmp_path: Path) -> list[str]:
        (tmp_path / name).unlink()
        return []

    return break_it


def _truncate(tmp_path: Path) -> list[str]:
    path = tmp_path / "data" / "vqacp_v2_train_questions.json"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:20]).rstrip())  # ends inside the 4th record, on line 20
    return []


def _features(ids: list[int], d: int = D) -> Callable[[Path], list[str]]:
    def break_it(tmp_path: Path) -> list[str]:
        features_file(tmp_path / "features.h5", ids, d)
        return []

    return break_it


def _features_text(tmp_path: Path) -> list[str]:
    (tmp_path / "features.h5").write_text("not hdf5\n")
    return []


def _drop_annotation(recs: list[dict]) -> None:
    del recs[5]  # question 1005


PREPARE_CASES = [
    pytest.param(
        lambda p: (p / "prepare.yaml").unlink() or [],
        ["prepare.yaml: config file not found"],
        id="config-missing",
    ),
    pytest.param(
        _config_text("data:\n  dataset: vqacp_v2\n   root: x\n"),  # over-indented key
        ["prepare.yaml: malformed YAML at line 3"],
        id="malformed-yaml",
    ),
    pytest.param(
        _config_text("- data\n- root\n"),
        ["prepare.yaml: expected a YAML mapping at the top level"],
        id="yaml-list",
    ),
    pytest.param(_top_level_key, ["prepare.yaml: modle: unknown field"], id="unknown-top-key"),
    pytest.param(
        _config_data(bogus=1), ["prepare.yaml: data.bogus: unknown field"], id="data.bogus"
    ),
    pytest.param(
        _overrides("data.min_answer_count=abc"),
        ["prepare.yaml: data.min_answer_count:", "(got 'abc')"],
        id="override-wrong-type",
    ),
    pytest.param(
        _overrides("data.min_answer_count=0"),
        ["data.min_answer_count: Input should be greater than or equal to 1 (got 0)"],
        id="override-out-of-range",
    ),
    pytest.param(
        _overrides("nonsense"),
        ["malformed override 'nonsense': expected key=value"],
        id="override-without-equals",
    ),
    pytest.param(
        _overrides("data..root=x"), ["malformed override 'data..root=x'"], id="override-empty-key"
    ),
    pytest.param(
        _overrides("data.root.sub=1"),
        ["override 'data.root.sub=1': 'root' is not a mapping"],
        id="override-through-scalar",
    ),
    pytest.param(
        _config_data(dataset="vqa_cp"), ["data.dataset:", "(got 'vqa_cp')"], id="unknown-dataset"
    ),
    pytest.param(
        _unlink("data/vqacp_v2_train_annotations.json"),
        ["data/vqacp_v2_train_annotations.json: file not found"],
        id="missing-annotation-file",
    ),
    pytest.param(
        _truncate,
        ["data/vqacp_v2_train_questions.json: malformed JSON at line 20 column"],
        id="malformed-json",
    ),
    pytest.param(
        _edit_json("vqacp_v2_train_annotations.json", _drop_annotation),
        ["vqacp_v2_train_annotations.json", "no annotation for question_id 1005"],
        id="question-without-annotation",
    ),
    pytest.param(
        _edit_json("vqacp_v2_test_questions.json", lambda r: r[3].update(image_id="4")),
        ["vqacp_v2_test_questions.json: question 2003: field 'image_id' must be int, got str"],
        id="image-id-string",
    ),
    pytest.param(
        _features(list(range(1, N_IMAGES))),  # image 10 left out
        ["features.h5: image_id 10 (used by the train split of", "absent from the feature store"],
        id="image-not-in-store",
    ),
    pytest.param(
        _features(list(range(1, N_IMAGES + 1)), d=12),
        ["features.h5: field 'features' has dimension 12, expected 8"],
        id="feature-dim",
    ),
    pytest.param(
        _overrides("data.num_boxes=10"),
        ["features.h5: field 'features' has 36 boxes per image, expected 10"],
        id="num-boxes",
    ),
    pytest.param(
        _features_text, ["features.h5: not a readable HDF5 feature store"], id="features-not-hdf5"
    ),
    pytest.param(_unlink("features.h5"), ["features.h5: file not found"], id="features-missing"),
    pytest.param(
        lambda p: ["data.tokenizer.kind=pretrained", f"data.tokenizer.path={p / 'lxmert'}"],
        ["lxmert: tokenizer directory not found (data.tokenizer.path)"],
        id="pretrained-tokenizer-missing",
    ),
    pytest.param(
        _overrides("data.tokenizer.kind=pretrained"),
        ["data.tokenizer:", "kind 'pretrained' needs 'path'"],
        id="pretrained-tokenizer-without-path",
    ),
    pytest.param(
        _overrides("data.min_answer_count=1000"),
        ["no training answer occurs 1000 times (data.min_answer_count)"],
        id="empty-vocabulary",
    ),
    pytest.param(
        _overrides("data.selection_fraction=0.01"),
        ["data.selection_fraction 0.01 of 10 test images leaves an empty split"],
        id="empty-dev-split",
    ),
]


@pytest.mark.parametrize(("break_it", "needles"), PREPARE_CASES)
def test_prepare_bad_input(
    tmp_path: Path, break_it: Callable[[Path], list[str]], needles: list[str]
) -> None:
    cfg = setup(tmp_path)
    overrides = break_it(tmp_path)
    result = invoke("data", "prepare", cfg, *overrides)
    assert result.exit_code == 2, result.output
    one_error_line(result.stderr, *needles)
    assert result.stdout == ""
    nothing_written(tmp_path)


def test_failed_prepare_leaves_the_previous_cache_alone(tmp_path: Path) -> None:
    cfg = setup(tmp_path)
    assert invoke("data", "prepare", cfg).exit_code == 0
    cache = tmp_path / "cache"
    before = {p.relative_to(cache): p.read_bytes() for p in cache.rglob("*") if p.is_file()}
    _edit_json("vqacp_v2_train_annotations.json", _drop_annotation)(tmp_path)
    result = invoke("data", "prepare", cfg)
    assert result.exit_code == 2
    one_error_line(result.stderr, "no annotation for question_id 1005")
    after = {p.relative_to(cache): p.read_bytes() for p in cache.rglob("*") if p.is_file()}
    assert after == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "data", "features.h5", cfg.name]


# ---------------------------------------------------------------- synth and convert-tsv


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--dataset", "nope"),
        ("--test-answers", "both"),
        ("--answer-code", "xor"),
        ("--train-prior", "zipf"),
        ("--yesno", "ask"),
    ],
)
def test_synth_unknown_choice(tmp_path: Path, option: str, value: str) -> None:
    out = tmp_path / "bench"
    result = invoke("data", "synth", out, option, value)
    assert result.exit_code == 2  # typer's own message, from the choices listed in --help
    assert f"Invalid value for '{option}'" in result.stderr and f"'{value}'" in result.stderr
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--answer-boxes", "40"], "--answer-boxes 40 needs 322 boxes per image"),
        (["--answer-boxes", "0"], "--answer-boxes must be at least 1"),
        (["--bias", "1.5"], "--bias must be in [0, 1], got 1.5"),
        (["--questions", "80", "--images", "10"], "--images 10 are too few: 200 questions need 25"),
        (["--images", "938"], "--images 938 are too few for the split sizes"),
        (["--test-fraction", "0"], "--test-fraction must be > 0, got 0.0"),
        (["--answer-strength", "-1"], "--answer-strength must be > 0, got -1.0"),
        (["--nuisance", "-0.5"], "--nuisance must be >= 0, got -0.5"),
        (["--feature-mixing", "-0.1"], "--feature-mixing must be in [0, 1], got -0.1"),
        (
            ["--train-prior", "longtail", "--test-answers", "one"],
            "--train-prior longtail needs --test-answers spread",
        ),
        (
            ["--train-prior", "longtail", "--dataset", "vqavs"],
            "--train-prior longtail is for --dataset vqacp_v2 only",
        ),
        (
            ["--answer-hops", "2"],
            "--answer-boxes 3 needs 50 boxes per image (8 question types x "
            "3 x 2 hops + 2 key objects), have 36",
        ),
        (
            ["--answer-hops", "2", "--answer-boxes", "2", "--link-codes", "4"],
            "--link-codes must be 0 or at least 8, got 4",
        ),
        (
            ["--answer-code", "product"],
            "--answer-code product needs --feature-dim divisible by 3, got 64",
        ),
        (["--answer-variants", "2"], "--answer-variants needs --answer-code product"),
        (
            ["--answer-code", "product", "--feature-dim", "48", "--answer-variants", "0"],
            "--answer-variants must be at least 1, got 0",
        ),
    ],
)
def test_synth_impossible_settings(tmp_path: Path, args: list[str], needle: str) -> None:
    out = tmp_path / "bench"
    result = invoke("data", "synth", out, *args)
    assert result.exit_code == 2
    one_error_line(result.stderr, needle)
    assert not out.exists()


def test_synth_refuses_a_directory_that_is_not_a_benchmark(tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me\n")
    (out / "sub").mkdir()
    result = invoke("data", "synth", out, "--questions", "80", "--images", "40")
    assert result.exit_code == 2
    one_error_line(result.stderr, f"{out}: exists and is not a synthetic benchmark directory")
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "sub"]
    assert (out / "notes.txt").read_text() == "keep me\n"
    assert list((out / "sub").iterdir()) == []
    assert [p.name for p in tmp_path.iterdir()] == ["mine"]  # no temporary sibling left


def test_synth_refuses_an_existing_file(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    out.write_text("keep me\n")
    result = CliRunner().invoke(
        app, ["data", "synth", str(out), "--questions", "80", "--images", "40"]
    )
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 2
    one_error_line(result.stderr, str(out))
    assert out.read_text() == "keep me\n"


def test_convert_tsv_empty_input(tmp_path: Path) -> None:
    out = tmp_path / "features.h5"
    (tmp_path / "ok.tsv").write_text("")
    result = invoke("data", "convert-tsv", out, tmp_path / "ok.tsv")
    assert result.exit_code == 2
    one_error_line(result.stderr, f"{tmp_path / 'ok.tsv'} line 1: empty file, no TSV rows")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok.tsv"]


def test_prepare_bad_input_unknown_field_in_a_known_block(tmp_path: Path) -> None:
    cfg = setup(tmp_path)
    cfg.write_text(cfg.read_text() + "model:\n  hidden: 3\n")
    result = invoke("data", "prepare", cfg)
    assert result.exit_code == 2
    one_error_line(result.stderr, "prepare.yaml: model.hidden: unknown field")
    assert not (tmp_path / "cache").exists()
