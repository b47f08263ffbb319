"""Tests for vqa.readers: strict VQA-CP v2 / VQA-VS readers, every defect one `InputError` line."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.tiny import dump, make_records, write_vqacp
from vqa.errors import InputError
from vqa.readers import (
    VQAVS_OOD_SETS,
    read_pair,
    read_vqacp_v2,
    read_vqavs,
    vqacp_files,
    vqavs_files,
    vqavs_ood_files,
)

COLUMNS = [
    "question_id",
    "image_id",
    "question",
    "question_type",
    "answer_type",
    "multiple_choice_answer",
    "answers",
]


def ood_members(i: int) -> list[str]:
    """The OOD sets IID test question #i is put in (in VQAVS_OOD_SETS order; #0 is in none)."""
    return [s for j, s in enumerate(VQAVS_OOD_SETS) if i and (i + j) % 3 == 0]


def write_vqavs(root: Path, n_test: int = 18) -> Path:
    """A valid VQA-VS directory: train 30, val 12, IID test `n_test` (ids 3000..), nine OOD sets."""
    for split, n, first in (("train", 30, 1000), ("val", 12, 2000), ("test", n_test, 3000)):
        q, a = make_records(n, first, 6)
        q_path, a_path = vqavs_files(root, split)
        dump(q_path, q)
        dump(a_path, a)
    q, a = make_records(n_test, 3000, 6)
    for j, s in enumerate(VQAVS_OOD_SETS):
        keep = [i for i in range(n_test) if s in ood_members(i)]
        assert keep, j
        q_path, a_path = vqavs_ood_files(root, s)
        dump(q_path, [q[i] for i in keep])
        dump(a_path, [a[i] for i in keep])
    return root


def edit(path: Path, change: Callable[[list[dict]], Any]) -> None:
    """Load a JSON list, let `change` modify it in place, write it back."""
    records = json.loads(path.read_text())
    change(records)
    dump(path, records)


def error_of(fn: Callable[[], Any]) -> str:
    with pytest.raises(InputError) as info:
        fn()
    msg = str(info.value)
    assert "\n" not in msg
    return msg


# ---------------------------------------------------------------- positive


def test_vqacp_frame_columns_and_a_known_record(tmp_path: Path) -> None:
    splits = read_vqacp_v2(write_vqacp(tmp_path))
    assert sorted(splits) == ["test", "train"]
    train = splits["train"]
    assert list(train.columns) == COLUMNS
    assert len(train) == 40 and len(splits["test"]) == 40
    assert str(train["question_id"].dtype) == "int64"
    assert str(train["image_id"].dtype) == "int64"
    row = train.set_index("question_id").loc[1004]  # i = 4: image 5, "how many", answer "2"
    assert row["image_id"] == 5
    assert row["question"] == "how many thing number 4?"
    assert row["question_type"] == "how many"
    assert row["answer_type"] == "number"
    assert row["multiple_choice_answer"] == "2"
    assert row["answers"] == ["2"] * 9 + ["3"]
    assert splits["test"]["question_id"].tolist() == list(range(2000, 2040))


def test_vqa_v2_style_wrapper_objects_are_accepted(tmp_path: Path) -> None:
    flat = read_vqacp_v2(write_vqacp(tmp_path / "flat"))["train"]
    root = write_vqacp(tmp_path / "wrapped")
    q_path, a_path = vqacp_files(root, "train")
    dump(q_path, {"info": {}, "questions": json.loads(q_path.read_text())})
    dump(a_path, {"annotations": json.loads(a_path.read_text()), "license": {}})
    wrapped = read_vqacp_v2(root)["train"]
    assert wrapped.equals(flat)


def test_pretrain_split_is_read_when_present(tmp_path: Path) -> None:
    root = write_vqacp(tmp_path)
    q, a = make_records(6, 5000, 3)
    q_path, a_path = vqacp_files(root, "pretrain")
    dump(q_path, q)
    dump(a_path, a)
    splits = read_vqacp_v2(root)
    assert splits["pretrain"]["question_id"].tolist() == list(range(5000, 5006))


def test_vqavs_ood_sets_lists_exactly_the_sets_of_each_question(tmp_path: Path) -> None:
    splits = read_vqavs(write_vqavs(tmp_path))
    assert sorted(splits) == ["test", "train", "val"]
    test = splits["test"]
    assert list(test.columns) == [*COLUMNS, "ood_sets"]
    assert "ood_sets" not in splits["train"].columns
    for qid, sets in zip(test["question_id"], test["ood_sets"], strict=True):
        assert sets == ood_members(int(qid) - 3000), qid
    assert test.set_index("question_id").at[3000, "ood_sets"] == []
    assert test.set_index("question_id").at[3003, "ood_sets"] == ["QT", "QT+KW", "QT+KO"]


# ---------------------------------------------------------------- VQA-CP v2 defects

TRAIN_Q = "vqacp_v2_train_questions.json"
TRAIN_A = "vqacp_v2_train_annotations.json"
TEST_A = "vqacp_v2_test_annotations.json"


def _unlink(name: str) -> Callable[[Path], None]:
    return lambda root: (root / name).unlink()


def _write_text(name: str, text: str) -> Callable[[Path], None]:
    return lambda root: (root / name).write_text(text)


def _edit(name: str, change: Callable[[list[dict]], Any]) -> Callable[[Path], None]:
    return lambda root: edit(root / name, change)


def _set(i: int, field: str, value: Any) -> Callable[[list[dict]], None]:
    return lambda records: records[i].__setitem__(field, value)


def _dup(records: list[dict]) -> None:
    records[7]["question_id"] = records[6]["question_id"]


def _drop(qid: int) -> Callable[[list[dict]], None]:
    def change(records: list[dict]) -> None:
        records[:] = [r for r in records if r["question_id"] != qid]

    return change


VQACP_CASES = [
    pytest.param(_unlink(TRAIN_Q), TRAIN_Q, ["file not found"], id="missing-question-file"),
    pytest.param(_unlink(TEST_A), TEST_A, ["file not found"], id="missing-annotation-file"),
    pytest.param(
        _write_text(TRAIN_Q, '{"questions": 3}'),
        TRAIN_Q,
        ["expected a JSON list of records, got dict"],
        id="top-level-dict",
    ),
    pytest.param(
        _write_text(TRAIN_A, '"annotations"'),
        TRAIN_A,
        ["expected a JSON list of records, got str"],
        id="top-level-string",
    ),
    pytest.param(
        _write_text(TRAIN_Q, "[1, 2]"), TRAIN_Q, ["record 0 is not a JSON object"], id="not-object"
    ),
    pytest.param(
        _edit(TRAIN_Q, _set(3, "image_id", "12")),
        TRAIN_Q,
        ["question 1003", "field 'image_id' must be int, got str"],
        id="image-id-string",
    ),
    pytest.param(
        _edit(TRAIN_A, _set(3, "image_id", True)),
        TRAIN_A,
        ["question 1003", "field 'image_id' must be int, got bool"],
        id="image-id-bool",
    ),
    pytest.param(
        _edit(TRAIN_Q, _set(2, "question_id", 1002.5)),
        TRAIN_Q,
        ["field 'question_id' must be int, got float"],
        id="question-id-float",
    ),
    pytest.param(
        _edit(TRAIN_Q, _set(5, "question", 17)),
        TRAIN_Q,
        ["question 1005", "field 'question' must be str, got int"],
        id="question-int",
    ),
    pytest.param(
        _edit(TRAIN_A, _set(5, "answers", "yes")),
        TRAIN_A,
        ["question 1005", "field 'answers' must be list, got str"],
        id="answers-string",
    ),
    pytest.param(
        _edit(TRAIN_A, _drop(1017)),
        TRAIN_A,
        ["no annotation for question_id 1017", TRAIN_Q],
        id="question-without-annotation",
    ),
    pytest.param(
        _edit(TRAIN_Q, _drop(1023)),
        TRAIN_Q,
        ["no question for question_id 1023", TRAIN_A],
        id="annotation-without-question",
    ),
    pytest.param(
        _edit(TRAIN_Q, _dup), TRAIN_Q, ["question_id 1006 appears twice"], id="duplicate-question"
    ),
    pytest.param(
        _edit(TRAIN_A, _dup),
        TRAIN_A,
        ["question_id 1006 appears twice"],
        id="duplicate-annotation",
    ),
    pytest.param(
        _edit(TRAIN_A, _set(8, "image_id", 77)),
        TRAIN_A,
        ["question 1008", "field 'image_id' is 77", f"{TRAIN_Q} says 9"],
        id="image-id-disagrees",
    ),
    pytest.param(
        _edit(TRAIN_A, _set(9, "answer_type", "color")),
        TRAIN_A,
        ["question 1009", "field 'answer_type' is 'color'", "yes/no, number, other"],
        id="unknown-answer-type",
    ),
    pytest.param(
        _edit(TRAIN_A, _set(11, "answers", [])),
        TRAIN_A,
        ["question 1011", "field 'answers' is empty"],
        id="empty-answers",
    ),
    pytest.param(
        _edit(TRAIN_A, _set(11, "answers", [{"answer_id": 1}])),
        TRAIN_A,
        ["question 1011", "field 'answers' needs objects with 'answer'"],
        id="answer-without-text",
    ),
]


@pytest.mark.parametrize(("break_it", "file", "needles"), VQACP_CASES)
def test_vqacp_defect_names_file_and_field(
    tmp_path: Path, break_it: Callable[[Path], None], file: str, needles: list[str]
) -> None:
    root = write_vqacp(tmp_path)
    break_it(root)
    msg = error_of(lambda: read_vqacp_v2(root))
    assert msg.startswith(f"{root / file}: "), msg
    for needle in needles:
        assert needle in msg, msg


def test_truncated_json_names_file_and_line(tmp_path: Path) -> None:
    root = write_vqacp(tmp_path)
    path = root / TRAIN_A
    text = path.read_text()
    cut = text[: len(text) // 2]
    path.write_text(cut)
    msg = error_of(lambda: read_vqacp_v2(root))
    assert msg.startswith(f"{path}: malformed JSON at line {cut.count(chr(10)) + 1} column "), msg


def test_malformed_json_gives_line_and_column_of_the_defect(tmp_path: Path) -> None:
    root = write_vqacp(tmp_path)
    path = root / TRAIN_Q
    path.write_text(
        '[\n {"question_id": 1, "image_id": 2, "question": "a?"},\n {"question_id" 3}\n]'
    )
    msg = error_of(lambda: read_vqacp_v2(root))
    assert msg == f"{path}: malformed JSON at line 3 column 17"  # at the "3"


def test_non_utf8_file_is_named(tmp_path: Path) -> None:
    root = write_vqacp(tmp_path)
    (root / TRAIN_Q).write_bytes(b'[{"question": "caf\xe9"}]')
    assert error_of(lambda: read_vqacp_v2(root)) == f"{root / TRAIN_Q}: not UTF-8 text"


QUESTION_FIELDS = ["question_id", "image_id", "question"]
ANNOTATION_FIELDS = [
    "question_id",
    "image_id",
    "question_type",
    "answer_type",
    "multiple_choice_answer",
    "answers",
]


@pytest.mark.parametrize(
    ("file", "field"),
    [(TRAIN_Q, f) for f in QUESTION_FIELDS] + [(TRAIN_A, f) for f in ANNOTATION_FIELDS],
)
def test_missing_field_names_file_record_and_field(tmp_path: Path, file: str, field: str) -> None:
    root = write_vqacp(tmp_path)
    edit(root / file, lambda records: records[12].pop(field))
    msg = error_of(lambda: read_vqacp_v2(root))
    # Without its question_id a record is named by its position.
    who = "#12" if field == "question_id" else "1012"
    assert msg == f"{root / file}: question {who}: missing field '{field}'"


def test_read_pair_reads_any_two_files(tmp_path: Path) -> None:
    q, a = make_records(5, 7, 2)
    dump(tmp_path / "q.json", q)
    dump(tmp_path / "a.json", a)
    frame = read_pair(tmp_path / "q.json", tmp_path / "a.json")
    assert frame["question_id"].tolist() == [7, 8, 9, 10, 11]
    assert frame["image_id"].tolist() == [1, 2, 1, 2, 1]
    a[4]["multiple_choice_answer"] = 5
    dump(tmp_path / "a.json", a)
    msg = error_of(lambda: read_pair(tmp_path / "q.json", tmp_path / "a.json"))
    assert msg == (
        f"{tmp_path / 'a.json'}: question 11: field 'multiple_choice_answer' must be str, got int"
    )


# ---------------------------------------------------------------- VQA-VS defects


def test_vqavs_ood_question_not_in_iid_test_set(tmp_path: Path) -> None:
    root = write_vqavs(tmp_path)
    q_path, a_path = vqavs_ood_files(root, "KW")
    extra_q, extra_a = make_records(1, 9999, 6)
    edit(q_path, lambda records: records.extend(extra_q))
    edit(a_path, lambda records: records.extend(extra_a))
    msg = error_of(lambda: read_vqavs(root))
    assert msg == f"{q_path}: question_id 9999 is not in the IID test set"


def test_vqavs_ood_answer_differs_from_iid_test(tmp_path: Path) -> None:
    root = write_vqavs(tmp_path)
    _, a_path = vqavs_ood_files(root, "QT+KO")
    edit(a_path, _set(0, "multiple_choice_answer", "purple"))
    qid = json.loads(a_path.read_text())[0]["question_id"]
    msg = error_of(lambda: read_vqavs(root))
    assert msg.startswith(f"{a_path}: question {qid}: field 'multiple_choice_answer' differs")


@pytest.mark.parametrize("which", [0, 1], ids=["questions", "answers"])
def test_vqavs_missing_ood_file(tmp_path: Path, which: int) -> None:
    root = write_vqavs(tmp_path)
    path = vqavs_ood_files(root, "KOP")[which]
    path.unlink()
    assert error_of(lambda: read_vqavs(root)) == f"{path}: file not found"


def test_vqavs_missing_val_file(tmp_path: Path) -> None:
    root = write_vqavs(tmp_path)
    path = root / "Val" / "Val-Ans.json"
    path.unlink()
    assert error_of(lambda: read_vqavs(root)) == f"{path}: file not found"


def test_vqavs_defect_in_iid_test_names_the_file(tmp_path: Path) -> None:
    root = write_vqavs(tmp_path)
    q_path, a_path = vqavs_files(root, "test")
    edit(a_path, _set(2, "answer_type", "Yes/No"))
    msg = error_of(lambda: read_vqavs(root))
    assert msg.startswith(f"{a_path}: question 3002: field 'answer_type' is 'Yes/No'"), msg


def test_vqavs_ood_question_text_differs_from_iid_test(tmp_path: Path) -> None:
    root = write_vqavs(tmp_path)
    q_path, _ = vqavs_ood_files(root, "KOP")
    edit(q_path, _set(0, "question", "something else?"))
    qid = json.loads(q_path.read_text())[0]["question_id"]
    msg = error_of(lambda: read_vqavs(root))
    assert msg == f"{q_path}: question {qid}: field 'question' differs from the IID test set's"
