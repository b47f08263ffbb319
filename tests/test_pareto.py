"""The Pareto front against brute force, trial filtering, objective parsing, the report's files."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from search.pareto import (
    check_columns,
    format_table,
    load_trials,
    non_dominated,
    pareto_report,
    parse_objectives,
)
from vqa.errors import InputError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def brute_front(df: pd.DataFrame, objectives: list[tuple[str, str]]) -> set[str]:
    """The non-dominated trial ids by the definition, one pair of rows at a time."""
    rows = []
    for _, row in df.iterrows():
        values = [row[c] if d == "max" else -row[c] for c, d in objectives]
        if not any(np.isnan(v) for v in values):
            rows.append((row["trial_id"], values))
    front = set()
    for tid, a in rows:
        dominated = False
        for _, b in rows:
            if all(x >= y for x, y in zip(b, a, strict=True)) and any(
                x > y for x, y in zip(b, a, strict=True)
            ):
                dominated = True
                break
        if not dominated:
            front.add(tid)
    return front


def random_trials(seed: int, n: int = 200) -> pd.DataFrame:
    """Random trials with small integer metrics (ties), floats, and duplicated rows."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "a": rng.integers(0, 6, n).astype(float),
            "b": rng.integers(0, 6, n),
            "c": rng.normal(size=n).round(1),
            "d": rng.integers(0, 4, n).astype(float),
        }
    )
    dup = rng.integers(0, n, 20)
    df.iloc[n - 20 :] = df.iloc[dup].to_numpy()  # exact copies of other rows
    df["trial_id"] = [f"t{i:03d}" for i in range(n)]
    return df


def trials_frame(n: int = 12, seed: int = 0) -> pd.DataFrame:
    """A small trials table in the shape of a sweep's trials.parquet."""
    rng = np.random.default_rng(seed)
    alloc = rng.uniform(0.3, 0.95, (n, 3))  # requested sparsities: fractions removed
    return pd.DataFrame(
        {
            "trial_id": [f"trial_{i:02d}" for i in range(n)],
            "status": ["finished"] * n,
            "early_stopped": [False] * n,
            "s_language": alloc[:, 0],
            "s_visual": alloc[:, 1],
            "s_cross": alloc[:, 2],
            "s_overall": np.full(n, 0.7),
            "remaining_params": rng.integers(1_000_000, 9_000_000, n),
            "realised_language": alloc[:, 0],
            "sel_overall": rng.uniform(40, 60, n),
            "test_overall": rng.uniform(40, 60, n),
            "test_yes_no": rng.uniform(60, 90, n),
            "test_ood_mean": rng.uniform(30, 50, n),
            "hp_lr": rng.uniform(1e-4, 1e-3, n),
            "error": [""] * n,
        }
    )


def write_run(tmp_path: Path, df: pd.DataFrame) -> Path:
    run = tmp_path / "run"
    run.mkdir(parents=True)
    df.to_parquet(run / "trials.parquet", index=False)
    return run


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize(
    "objectives",
    [
        [("a", "max"), ("b", "min")],
        [("b", "max"), ("c", "max")],
        [("a", "min"), ("b", "max"), ("d", "min")],
        [("c", "max"), ("a", "max"), ("b", "max")],
    ],
)
def test_non_dominated_matches_brute_force(seed: int, objectives: list[tuple[str, str]]) -> None:
    df = random_trials(seed)
    front = non_dominated(df, objectives)
    assert set(front["trial_id"]) == brute_front(df, objectives)
    assert len(front) == len(set(front["trial_id"]))  # each duplicate once, none lost
    first, direction = objectives[0]
    ordered = front[first].to_numpy()
    assert (np.diff(ordered) <= 0).all() if direction == "max" else (np.diff(ordered) >= 0).all()


def test_duplicates_of_a_front_point_are_all_kept() -> None:
    df = pd.DataFrame({"trial_id": list("pqrs"), "x": [1.0, 1.0, 0.0, 2.0], "y": [1, 1, 0, 0]})
    front = non_dominated(df, [("x", "max"), ("y", "max")])
    assert list(front["trial_id"]) == ["s", "p", "q"]


def test_rows_with_nan_objectives_are_excluded() -> None:
    df = pd.DataFrame(
        {"trial_id": list("abcd"), "x": [np.nan, 1.0, 0.5, 9.0], "y": [99.0, 1.0, 2.0, np.nan]}
    )
    front = non_dominated(df, [("x", "max"), ("y", "max")])
    assert list(front["trial_id"]) == ["b", "c"]


def test_load_trials_keeps_finished_and_asked_early_stopped(tmp_path: Path) -> None:
    df = trials_frame(6)
    df["status"] = ["finished", "early_stopped", "error", "running", "pending", "finished"]
    df["early_stopped"] = [False, True, False, False, False, False]
    run = write_run(tmp_path, df)
    assert list(load_trials(run)["trial_id"]) == ["trial_00", "trial_05"]
    with_es = load_trials(run, include_early_stopped=True)
    assert list(with_es["trial_id"]) == ["trial_00", "trial_01", "trial_05"]


def test_load_trials_without_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no trials.parquet yet"):
        load_trials(tmp_path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("test_overall:max,remaining_params:min",
         [("test_overall", "max"), ("remaining_params", "min")]),
        (" a:min , b:MAX , c:max ", [("a", "min"), ("b", "max"), ("c", "max")]),
    ],
)  # fmt: skip
def test_parse_objectives(text: str, expected: list[tuple[str, str]]) -> None:
    assert parse_objectives(text) == expected


@pytest.mark.parametrize(
    ("text", "bad"),
    [
        ("x:max", "2 or 3"),
        ("a:max,b:max,c:max,d:min", "2 or 3"),
        ("x:up,y:max", "'x:up'"),
        ("x,y:max", "'x'"),
        ("", "2 or 3"),
        ("a:max,,b:min", "''"),
        (":max,b:min", "':max'"),
        ("a:max,a:min", "'a' given twice"),
    ],
)
def test_parse_objectives_rejects(text: str, bad: str) -> None:
    with pytest.raises(InputError, match=bad) as info:
        parse_objectives(text)
    assert "\n" not in str(info.value)


def test_unknown_column_is_named(tmp_path: Path) -> None:
    run = write_run(tmp_path, trials_frame())
    df = load_trials(run)
    with pytest.raises(InputError, match="'test_overal'.*numeric columns:.*test_overall") as info:
        check_columns(df, [("test_overal", "max"), ("remaining_params", "min")])
    assert "trial_id" not in str(info.value) and "early_stopped" not in str(info.value)
    with pytest.raises(InputError, match="'status' is not numeric"):
        pareto_report(run, [("status", "max"), ("remaining_params", "min")])
    with pytest.raises(InputError, match="colour column 'nope'"):
        pareto_report(run, [("test_overall", "max"), ("remaining_params", "min")], color="nope")


def assert_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and min(image.shape[:2]) > 200
    assert image[..., :3].std() > 0.05  # not a blank canvas


@pytest.mark.parametrize("n_objectives", [2, 3])
def test_report_on_partial_sweep(tmp_path: Path, n_objectives: int) -> None:
    df = trials_frame(16)
    # A running sweep: some trials still running or pending, with no metrics yet.
    df.loc[[3, 7, 11], "status"] = ["running", "pending", "running"]
    df.loc[[3, 7, 11], ["sel_overall", "test_overall", "test_yes_no", "test_ood_mean"]] = np.nan
    run = write_run(tmp_path, df)
    objectives = [("test_overall", "max"), ("remaining_params", "min"), ("test_ood_mean", "max")]
    objectives = objectives[:n_objectives]
    front, text, paths = pareto_report(run, objectives, color="test_yes_no")

    finished = df[df["status"] == "finished"]
    assert set(front["trial_id"]) == brute_front(finished, objectives)
    assert paths == [run / "pareto.parquet", run / "pareto.png", run / "allocation_test_yes_no.png",
                     run / "pareto.json"]  # fmt: skip
    pd.testing.assert_frame_equal(pd.read_parquet(run / "pareto.parquet"), front)
    for png in paths[1:3]:
        assert_png(png)
    manifest = json.loads((run / "pareto.json").read_text())
    assert manifest["written_by"] == "tickets pareto" and manifest["color"] == "test_yes_no"
    assert manifest["files"] == [p.name for p in paths[:3]]
    assert manifest["front"] == list(front["trial_id"]) and manifest["trials"] == len(finished)
    assert manifest["sizes"] is None  # no tickets.yaml, no trial checkpoints: unknown, said so
    assert "note: group sizes unknown" in text
    assert not [p for p in run.iterdir() if p.name.startswith(".")]  # no temporary left behind
    assert f"{len(front)} of {len(finished)} finished trials" in text
    for tid in front["trial_id"]:
        assert tid in text
    assert "test_yes_no" in text and "s_cross" in text


def test_the_short_names_ood_and_params(tmp_path: Path) -> None:
    """`--objectives ood:max,params:min` (DESIGN.md's example): VQA-VS's mean over its OOD
    sets where trials have it, else the (VQA-CP v2) test accuracy; the weights kept."""
    df = trials_frame(16)
    vqavs = write_run(tmp_path / "vs", df)
    front, text, _ = pareto_report(vqavs, [("ood", "max"), ("params", "min")])
    expected = [("test_ood_mean", "max"), ("remaining_params", "min")]
    assert set(front["trial_id"]) == brute_front(df, expected)
    assert "test_ood_mean (max), remaining_params (min)" in text
    assert (vqavs / "allocation_test_ood_mean.png").is_file()
    vqacp = write_run(tmp_path / "cp", df.drop(columns="test_ood_mean"))
    front, text, _ = pareto_report(vqacp, [("ood", "max"), ("params", "min")], color="ood")
    expected = [("test_overall", "max"), ("remaining_params", "min")]
    assert set(front["trial_id"]) == brute_front(df, expected)
    assert (vqacp / "allocation_test_overall.png").is_file()


def test_report_without_finished_trials(tmp_path: Path) -> None:
    df = trials_frame(3)
    df["status"] = ["running", "error", "early_stopped"]
    run = write_run(tmp_path, df)
    with pytest.raises(InputError, match="no finished trials yet"):
        pareto_report(run, [("test_overall", "max"), ("remaining_params", "min")])
    front, text, paths = pareto_report(
        run, [("test_overall", "max"), ("remaining_params", "min")], include_early_stopped=True
    )
    assert list(front["trial_id"]) == ["trial_02"]
    assert "early_stopped" in text  # the status column is shown when early-stopped trials count
    assert paths[2] == run / "allocation_test_overall.png"  # coloured by the first objective
    assert_png(paths[2])


def test_format_table() -> None:
    front = trials_frame(3)
    objectives = [("test_overall", "max"), ("remaining_params", "min")]
    text = format_table(front, objectives, extra=["hp_lr", "no_such_column"])
    header = text.splitlines()[0].split()
    assert header == ["trial_id", "test_overall", "remaining_params", "s_language", "s_visual",
                      "s_cross", "hp_lr"]  # fmt: skip
    row = text.splitlines()[1].split()
    assert row[0] == "trial_00" and row[2] == str(front["remaining_params"][0])
    assert row[1] == f"{front['test_overall'][0]:.2f}" and row[3] == f"{front['s_language'][0]:.3f}"
    assert row[-1] == f"{front['hp_lr'][0]:.2e}"  # small values keep their digits
    assert len(text.splitlines()) == 4


def test_brute_force_is_itself_right() -> None:
    # Guard the oracle: a hand-checked case with a tie, a duplicate and a dominated row.
    df = pd.DataFrame({"trial_id": list("abcde"), "x": [3, 3, 1, 3, 2], "y": [1, 1, 3, 0, 2]})
    assert brute_front(df, [("x", "max"), ("y", "max")]) == {"a", "b", "c", "e"}


def test_selection_front_with_test_metrics_beside(tmp_path: Path) -> None:
    """The default objectives (selection accuracy, weights kept): the test metrics of the
    front's members are in the table; a front chosen on a test metric says what that is."""
    df = trials_frame(16)
    df["s_overall"] = [0.5, 0.9] * 8
    run = write_run(tmp_path, df)
    objectives = parse_objectives("sel_overall:max,remaining_params:min")
    front, text, _ = pareto_report(run, objectives)
    assert set(front["trial_id"]) == brute_front(df, objectives)
    header = text.splitlines()[1].split()
    assert header[:3] == ["trial_id", "sel_overall", "remaining_params"]
    assert {"test_overall", "test_ood_mean", "s_overall"} <= set(header)  # two budgets
    for line, (_, row) in zip(text.splitlines()[2:], front.iterrows(), strict=False):
        cells = dict(zip(header, line.split(), strict=True))
        assert cells["test_overall"] == f"{row['test_overall']:.2f}"
    assert "selection on test" not in text
    _, text, _ = pareto_report(run, parse_objectives("test_overall:max,params:min"),
                               overwrite=True)  # fmt: skip
    assert "chosen on test_overall, a test metric" in text


def test_an_earlier_report_is_not_overwritten(tmp_path: Path) -> None:
    run = write_run(tmp_path, trials_frame(8))
    objectives = [("sel_overall", "max"), ("remaining_params", "min")]
    pareto_report(run, objectives)
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    with pytest.raises(InputError, match="pareto.parquet exists") as info:
        pareto_report(run, [("test_overall", "max"), ("remaining_params", "min")])
    assert "--overwrite" in str(info.value) and "\n" not in str(info.value)
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before  # nothing touched
    # Another colour writes a new allocation map, but the front's files would still be replaced.
    with pytest.raises(InputError, match="exists"):
        pareto_report(run, objectives, color="test_yes_no")
    assert not (run / "allocation_test_yes_no.png").exists()
    # Elsewhere with out=..., or here with overwrite=True.
    other = tmp_path / "elsewhere" / "report"
    _, _, paths = pareto_report(run, objectives, color="test_yes_no", out=other)
    assert all(p.parent == other and p.is_file() for p in paths)
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before
    pareto_report(run, [("test_overall", "max"), ("remaining_params", "min")], overwrite=True)
    assert (run / "pareto.parquet").read_bytes() != before["pareto.parquet"]


def test_the_sweeps_own_report_may_be_replaced(tmp_path: Path) -> None:
    """What `tickets search` wrote at the end of the sweep (and rewrites on every resume) is
    replaced by a later `tickets pareto`; a file of unknown origin is not."""
    run = write_run(tmp_path, trials_frame(8))
    objectives = [("sel_overall", "max"), ("remaining_params", "min")]
    pareto_report(run, objectives, overwrite=True, written_by="tickets search")
    pareto_report(run, objectives, overwrite=True, written_by="tickets search")  # a resume
    pareto_report(run, [("test_overall", "max"), ("remaining_params", "min")])
    assert json.loads((run / "pareto.json").read_text())["written_by"] == "tickets pareto"
    stray = write_run(tmp_path / "stray", trials_frame(8))
    (stray / "pareto.png").write_bytes(b"someone's figure")
    with pytest.raises(InputError, match="pareto.png exists"):
        pareto_report(stray, objectives)
    assert (stray / "pareto.png").read_bytes() == b"someone's figure"
