"""VQA-VS test answers in the authors' packed form (github.com/PhoebusSi/VQA-VS,
new_comput_score.py: one `test_annotations.json` with `annotations` and the nine `<S>_qid` id
lists) give the same cache as the per-set files. `tickets data prepare` runs as the installed
console script in a fresh process."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from tests.test_cli_errors import one_error_line, tickets
from vqa.metric import OOD_SETS
from vqa.readers import packed_key, question_type_of, vqavs_files, vqavs_ood_files
from vqa.synth import SynthSpec, generate


def pack(root: Path) -> dict:
    """Write root/test_annotations.json as the authors' preprocess_text.py
    (compute_target_for_testing) and new_comput_score.py lay it out, then remove the files it
    replaces: IID-Test-Ans.json and OOD-Test/."""
    answers = json.loads(vqavs_files(root, "test")[1].read_text())
    records = []
    for a in sorted(answers, key=lambda r: r["question_id"]):
        count: dict[str, int] = {}
        for h in a["answers"]:
            count[h["answer"]] = count.get(h["answer"], 0) + 1
        records.append({"question_id": a["question_id"], "answer_type": a["answer_type"],
                        "answers_word": list(count), "answers_id": list(range(len(count))),
                        "answers_count": list(count.values()), "answer_count": count})  # fmt: skip
    packed = {"annotations": records}
    for ood in OOD_SETS:
        ques = json.loads(vqavs_ood_files(root, ood)[0].read_text())
        packed[packed_key(ood)] = [q["question_id"] for q in ques]
    (root / "test_annotations.json").write_text(json.dumps(packed))
    vqavs_files(root, "test")[1].unlink()
    shutil.rmtree(root / "OOD-Test")
    return packed


def plain(column: pd.Series) -> list:
    """A Parquet column as Python values (list cells as lists), for comparison."""
    return [v.tolist() if hasattr(v, "tolist") else v for v in column]


@pytest.fixture(scope="module")
def benches(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A synthetic VQA-VS benchmark in per-set files, and a copy with packed test answers."""
    base = tmp_path_factory.mktemp("vqavs_packed")
    files = base / "files"
    generate(SynthSpec(dataset="vqavs", questions=600, images=300, feature_dim=16), files)
    packed = base / "packed"
    shutil.copytree(files, packed)
    pack(packed)
    return files, packed


def prepare(bench: Path, root: Path, cache: Path, *extra: str):
    return tickets("data", "prepare", bench / "prepare.yaml", f"data.root={root}",
                   f"data.cache_dir={cache}", *extra)  # fmt: skip


def test_packed_test_answers_give_the_same_cache(
    benches: tuple[Path, Path], tmp_path: Path
) -> None:
    files, packed = benches
    for root in (files, packed):
        run = prepare(files, root, tmp_path / root.name)
        assert run.returncode == 0, run.stderr
    a = pd.read_parquet(tmp_path / "files" / "questions" / "test.parquet")
    b = pd.read_parquet(tmp_path / "packed" / "questions" / "test.parquet")
    assert len(a) == len(b) > 0
    a, b = a.sort_values("question_id"), b.sort_values("question_id")
    for col in ("question_id", "image_id", "question", "question_type", "type_id", "answer_type",
                "input_ids", "target_ids", "target_scores", "ood_sets"):  # fmt: skip
        assert plain(a[col]) == plain(b[col]), col
    assert [Counter(x) for x in a["answers"]] == [Counter(x) for x in b["answers"]]
    assert sum(len(s) > 0 for s in b["ood_sets"]) > 0
    manifest = json.loads((tmp_path / "packed" / "manifest.json").read_text())
    assert str(packed / "test_annotations.json") in manifest["inputs"]
    assert not any("OOD-Test" in p or "IID-Test-Ans" in p for p in manifest["inputs"])
    for name in ("answers.json", "prior.parquet"):
        assert (tmp_path / "files" / name).read_bytes() == (tmp_path / "packed" / name).read_bytes()
    # The prior-only baseline, per OOD set too, scores the same on both caches.
    ra = tickets("data", "report", files / "prepare.yaml", f"data.cache_dir={tmp_path / 'files'}")
    rb = tickets("data", "report", files / "prepare.yaml", f"data.cache_dir={tmp_path / 'packed'}")
    assert ra.returncode == rb.returncode == 0, ra.stderr + rb.stderr
    tail = ra.stdout[ra.stdout.index("prior-only baseline") :]
    assert "ood_mean" in tail and tail == rb.stdout[rb.stdout.index("prior-only baseline") :]


def test_question_type_is_the_longest_training_type_beginning_the_question() -> None:
    types = ["what", "what color is the", "what color", "is the"]
    assert question_type_of("What color is the bus?", types) == "what color is the"
    assert question_type_of("What colour is it?", types) == "what"
    assert question_type_of("Is there a dog?", types) == "none of the above"
    assert question_type_of("Isthe dog here?", types) == "none of the above"


@pytest.mark.parametrize(
    ("damage", "needle"),
    [
        (lambda d: d.pop("KWKO_qid"), "field 'KWKO_qid' must be a list of question ids"),
        (lambda d: d["QT_qid"].append(123), "field 'QT_qid': question_id 123 is not in the IID"),
        (lambda d: d["annotations"][0].pop("answer_count"), "missing field 'answer_count'"),
        (
            lambda d: d["annotations"][1]["answer_count"].update(yes=0),
            "field 'answer_count' must map answers to positive counts",
        ),  # fmt: skip
        (lambda d: d["annotations"].pop(), "no annotation for question_id"),
    ],
)
def test_bad_packed_answers_are_refused(benches: tuple[Path, Path], tmp_path: Path, damage,
                                        needle: str) -> None:  # fmt: skip
    root = tmp_path / "root"
    shutil.copytree(benches[1], root)
    path = root / "test_annotations.json"
    data = json.loads(path.read_text())
    damage(data)
    path.write_text(json.dumps(data))
    run = prepare(benches[0], root, tmp_path / "cache")
    assert run.returncode == 2
    one_error_line(run.stderr, str(path), needle)
    assert run.stdout == "" and not (tmp_path / "cache").exists()
