"""Strict readers for VQA-CP v2 and VQA-VS question/annotation files (DESIGN.md §3).

Each split is returned as a `pandas.DataFrame` with one row per question and the columns
`question_id` int64, `image_id` int64, `question` str, `question_type` str, `answer_type` str
(yes/no | number | other), `multiple_choice_answer` str, `answers` list[str] (the human answers,
usually 10). VQA-VS test rows also carry `ood_sets` list[str] (the OOD sets the question is in);
its test answers are read from the per-set files or from the authors' packed
`test_annotations.json` (`read_packed_test`).
Any defect raises `InputError` naming the file and the field or id.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pandas as pd

from vqa.errors import InputError
from vqa.metric import OOD_SETS as VQAVS_OOD_SETS

DATASETS = ("vqacp_v2", "vqavs")
ANSWER_TYPES = ("yes/no", "number", "other")

QUESTION_FIELDS = {"question_id": int, "image_id": int, "question": str}
ANNOTATION_FIELDS = {
    "question_id": int,
    "image_id": int,
    "question_type": str,
    "answer_type": str,
    "multiple_choice_answer": str,
    "answers": list,
}


COLUMNS = ("question_id", "image_id", "question", "question_type", "answer_type",
           "multiple_choice_answer", "answers")  # fmt: skip


def vqacp_files(root: Path, split: str) -> tuple[Path, Path]:
    """Question and annotation file of a VQA-CP v2 split (train, test, or synthetic pretrain)."""
    return (
        root / f"vqacp_v2_{split}_questions.json",
        root / f"vqacp_v2_{split}_annotations.json",
    )


VQAVS_DIRS = {"train": "Training", "val": "Val", "test": "IID-Test", "pretrain": "Pretrain"}


def vqavs_files(root: Path, split: str) -> tuple[Path, Path]:
    """Question and answer file of a VQA-VS split (train, val, test = IID test, or pretrain)."""
    name = VQAVS_DIRS[split]
    return root / name / f"{name}-Ques.json", root / name / f"{name}-Ans.json"


def vqavs_ood_files(root: Path, ood_set: str) -> tuple[Path, Path]:
    """Question and answer file of one of the nine VQA-VS OOD test sets."""
    base = root / "OOD-Test" / ood_set
    return base / f"OOD-Test-{ood_set}-Ques.json", base / f"OOD-Test-{ood_set}-Ans.json"


# The authors' packed test answers (github.com/PhoebusSi/VQA-VS, new_comput_score.py): one JSON
# object, `annotations` (a record per IID test question: `question_id`, `answer_type`,
# `answer_count` {answer: humans}, ...) and per OOD set S a list `<S without +>_qid` of its ids.
VQAVS_PACKED = "test_annotations.json"
PACKED_FIELDS = {"question_id": int, "answer_type": str, "answer_count": dict}
NO_TYPE = "none of the above"  # VQA's question type for a question no other type begins


def vqavs_packed(root: Path) -> Path | None:
    """The packed test answers under `root` when they stand in for `IID-Test-Ans.json` (which,
    when present, is read with the nine OOD sets' files instead), else None."""
    packed = root / VQAVS_PACKED
    return packed if packed.is_file() and not vqavs_files(root, "test")[1].exists() else None


def packed_key(ood_set: str) -> str:
    """The packed file's key of an OOD set's question ids: `QT+KW` -> `QTKW_qid`."""
    return ood_set.replace("+", "") + "_qid"


def input_files(dataset: str, root: str | os.PathLike[str]) -> list[Path]:
    """Every file the reader of `dataset` will open (optional pretrain files only if present)."""
    root = Path(root)
    files: list[Path] = []
    if dataset == "vqacp_v2":
        for split in ("train", "test"):
            files += vqacp_files(root, split)
        pre = vqacp_files(root, "pretrain")
    elif dataset == "vqavs":
        for split in ("train", "val"):
            files += vqavs_files(root, split)
        packed = vqavs_packed(root)
        if packed is not None:
            files += [vqavs_files(root, "test")[0], packed]
        else:
            files += vqavs_files(root, "test")
            for ood in VQAVS_OOD_SETS:
                files += vqavs_ood_files(root, ood)
        pre = vqavs_files(root, "pretrain")
    else:
        raise InputError(f"unknown dataset '{dataset}' (expected one of {', '.join(DATASETS)})")
    if pre[0].exists() or pre[1].exists():
        files += pre
    return files


def _load_json(path: Path) -> Any:
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: malformed JSON at line {e.lineno} column {e.colno}") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text") from None


def _load_object(path: Path) -> dict[str, Any]:
    data = _load_json(path)
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _load_list(path: Path, wrapper_key: str) -> list[dict[str, Any]]:
    """A flat JSON list of records; a VQA v2 style `{wrapper_key: [...]}` object is accepted too."""
    data = _load_json(path)
    if isinstance(data, dict) and isinstance(data.get(wrapper_key), list):
        data = data[wrapper_key]
    if not isinstance(data, list):
        raise InputError(f"{path}: expected a JSON list of records, got {type(data).__name__}")
    return data


def _check(path: Path, records: list[Any], fields: dict[str, type]) -> None:
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise InputError(f"{path}: record {i} is not a JSON object")
        for name, kind in fields.items():
            if name not in rec:
                ident = rec.get("question_id", f"#{i}")
                raise InputError(f"{path}: question {ident}: missing field '{name}'")
            value = rec[name]
            ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
            if not ok:
                ident = rec.get("question_id", f"#{i}")
                raise InputError(
                    f"{path}: question {ident}: field '{name}' must be {kind.__name__}, "
                    f"got {type(value).__name__}"
                )


def _human_answers(path: Path, rec: dict[str, Any]) -> list[str]:
    qid = rec["question_id"]
    answers = rec["answers"]
    if not answers:
        raise InputError(f"{path}: question {qid}: field 'answers' is empty")
    out = []
    for a in answers:
        if not isinstance(a, dict) or not isinstance(a.get("answer"), str):
            raise InputError(f"{path}: question {qid}: field 'answers' needs objects with 'answer'")
        out.append(a["answer"])
    return out


def _index(path: Path, records: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    index: dict[int, dict[str, Any]] = {}
    for rec in records:
        qid = rec["question_id"]
        if qid in index:
            raise InputError(f"{path}: question_id {qid} appears twice")
        index[qid] = rec
    return index


def _join(ques_path: Path, questions: list[dict], ann_path: Path,
          annotations: list[dict]) -> tuple[dict, dict]:  # fmt: skip
    """Questions and annotations indexed by `question_id`; every id must be in both files."""
    q_index = _index(ques_path, questions)
    a_index = _index(ann_path, annotations)
    for qid in q_index:
        if qid not in a_index:
            raise InputError(f"{ann_path}: no annotation for question_id {qid} of {ques_path.name}")
    for qid in a_index:
        if qid not in q_index:
            raise InputError(f"{ques_path}: no question for question_id {qid} of {ann_path.name}")
    return q_index, a_index


def read_pair(ques_path: Path, ann_path: Path) -> pd.DataFrame:
    """Join one question file with its annotation file on `question_id`, strictly."""
    questions = _load_list(ques_path, "questions")
    annotations = _load_list(ann_path, "annotations")
    _check(ques_path, questions, QUESTION_FIELDS)
    _check(ann_path, annotations, ANNOTATION_FIELDS)
    q_index, a_index = _join(ques_path, questions, ann_path, annotations)
    rows = []
    for qid, q in q_index.items():
        a = a_index[qid]
        if a["image_id"] != q["image_id"]:
            raise InputError(
                f"{ann_path}: question {qid}: field 'image_id' is {a['image_id']}, "
                f"but {ques_path.name} says {q['image_id']}"
            )
        if a["answer_type"] not in ANSWER_TYPES:
            raise InputError(
                f"{ann_path}: question {qid}: field 'answer_type' is '{a['answer_type']}', "
                f"expected one of {', '.join(ANSWER_TYPES)}"
            )
        rows.append(
            (
                qid,
                q["image_id"],
                q["question"],
                a["question_type"],
                a["answer_type"],
                a["multiple_choice_answer"],
                _human_answers(ann_path, a),
            )
        )
    return _frame(rows)


def _frame(rows: list[tuple]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    return frame.astype({"question_id": "int64", "image_id": "int64"})


def read_vqacp_v2(root: str | os.PathLike[str]) -> dict[str, pd.DataFrame]:
    """Splits `train`, `test` (and `pretrain` when the synthetic benchmark wrote one)."""
    root = Path(root)
    splits = {s: read_pair(*vqacp_files(root, s)) for s in ("train", "test")}
    if any(p.exists() for p in vqacp_files(root, "pretrain")):
        splits["pretrain"] = read_pair(*vqacp_files(root, "pretrain"))
    return splits


def read_vqavs(root: str | os.PathLike[str]) -> dict[str, pd.DataFrame]:
    """Splits `train`, `val`, `test` (the IID test, with `ood_sets`), and `pretrain` if present."""
    root = Path(root)
    splits = {s: read_pair(*vqavs_files(root, s)) for s in ("train", "val")}
    packed = vqavs_packed(root)
    if packed is not None:
        types = sorted(splits["train"]["question_type"].unique())
        splits["test"] = read_packed_test(vqavs_files(root, "test")[0], packed, types)
    else:
        splits["test"] = _read_vqavs_test(root)
    if any(p.exists() for p in vqavs_files(root, "pretrain")):
        splits["pretrain"] = read_pair(*vqavs_files(root, "pretrain"))
    return splits


def _read_vqavs_test(root: Path) -> pd.DataFrame:
    """The IID test set from its own files, with the OOD sets' files giving `ood_sets`."""
    test = read_pair(*vqavs_files(root, "test"))
    by_id = {int(q): i for i, q in enumerate(test["question_id"])}
    members: list[list[str]] = [[] for _ in range(len(test))]
    for ood in VQAVS_OOD_SETS:
        ques_path, ann_path = vqavs_ood_files(root, ood)
        subset = read_pair(ques_path, ann_path)
        for j, qid in enumerate(subset["question_id"]):
            i = by_id.get(int(qid))
            if i is None:
                raise InputError(f"{ques_path}: question_id {qid} is not in the IID test set")
            for field, path in (("question", ques_path), ("image_id", ann_path),
                                ("multiple_choice_answer", ann_path)):  # fmt: skip
                if test.at[i, field] != subset.at[j, field]:
                    raise InputError(
                        f"{path}: question {qid}: field '{field}' differs from the IID test set's"
                    )
            members[i].append(ood)
    test["ood_sets"] = members
    return test


def question_type_of(question: str, types: list[str]) -> str:
    """The longest of `types` whose words begin `question` (as VQA assigns its question types),
    or VQA's 'none of the above'."""
    words = re.findall(r"[a-z0-9']+", question.lower())
    best = NO_TYPE
    for t in types:
        tw = t.split()
        if tw and words[: len(tw)] == tw and (best == NO_TYPE or len(tw) > len(best.split())):
            best = t
    return best


def _answer_count(path: Path, rec: dict[str, Any]) -> list[str]:
    """The human answers of a packed record, each `answer_count` key repeated by its count."""
    qid, counts = rec["question_id"], rec["answer_count"]
    ok = counts and all(
        isinstance(a, str) and isinstance(n, int) and not isinstance(n, bool) and n > 0
        for a, n in counts.items()
    )
    if not ok:
        raise InputError(
            f"{path}: question {qid}: field 'answer_count' must map answers to positive counts"
        )
    return [a for a, n in counts.items() for _ in range(n)]


def read_packed_test(ques_path: Path, packed: Path, types: list[str]) -> pd.DataFrame:
    """The IID test set from `IID-Test-Ques.json` and the authors' packed `test_annotations.json`
    (`ood_sets` from its per-set id lists). A record's `question_type` and
    `multiple_choice_answer` are used when it has them; otherwise the type is the longest
    training type `types` beginning the question, and the answer the most frequent one."""
    questions = _load_list(ques_path, "questions")
    _check(ques_path, questions, QUESTION_FIELDS)
    data = _load_object(packed)
    annotations = data.get("annotations")
    if not isinstance(annotations, list):
        raise InputError(f"{packed}: field 'annotations' must be a list of records")
    _check(packed, annotations, PACKED_FIELDS)
    q_index, a_index = _join(ques_path, questions, packed, annotations)
    members: dict[int, list[str]] = {qid: [] for qid in q_index}
    for ood in VQAVS_OOD_SETS:
        ids = data.get(packed_key(ood))
        if not isinstance(ids, list):
            raise InputError(f"{packed}: field '{packed_key(ood)}' must be a list of question ids")
        for qid in ids:
            if qid not in members:
                raise InputError(
                    f"{packed}: field '{packed_key(ood)}': question_id {qid} is not in the IID "
                    "test set"
                )
            if ood in members[qid]:
                raise InputError(f"{packed}: field '{packed_key(ood)}': question_id {qid} twice")
            members[qid].append(ood)
    rows = []
    for qid, q in q_index.items():
        a = a_index[qid]
        if a["answer_type"] not in ANSWER_TYPES:
            raise InputError(
                f"{packed}: question {qid}: field 'answer_type' is '{a['answer_type']}', "
                f"expected one of {', '.join(ANSWER_TYPES)}"
            )
        if "image_id" in a and a["image_id"] != q["image_id"]:
            raise InputError(
                f"{packed}: question {qid}: field 'image_id' is {a['image_id']}, "
                f"but {ques_path.name} says {q['image_id']}"
            )
        answers = _answer_count(packed, a)
        qtype = a.get("question_type")
        if not isinstance(qtype, str):
            qtype = question_type_of(q["question"], types)
        mc = a.get("multiple_choice_answer")
        if not isinstance(mc, str):
            mc = max(a["answer_count"].items(), key=lambda kv: kv[1])[0]  # first of a tie
        rows.append((qid, q["image_id"], q["question"], qtype, a["answer_type"], mc, answers))
    test = _frame(rows)
    test["ood_sets"] = [sorted(members[qid], key=VQAVS_OOD_SETS.index) for qid in q_index]
    return test


def read_dataset(dataset: str, root: str | os.PathLike[str]) -> dict[str, pd.DataFrame]:
    """Read every split of `dataset` (one of `DATASETS`) under `root`."""
    if dataset == "vqacp_v2":
        return read_vqacp_v2(root)
    if dataset == "vqavs":
        return read_vqavs(root)
    raise InputError(f"unknown dataset '{dataset}' (expected one of {', '.join(DATASETS)})")
