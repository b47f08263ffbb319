"""Strict readers for VQA-CP v2 and VQA-VS question/annotation files (DESIGN.md §3).

Each split is returned as a `pandas.DataFrame` with one row per question and the columns
`question_id` int64, `image_id` int64, `question` str, `question_type` str, `answer_type` str
(yes/no | number | other), `multiple_choice_answer` str, `answers` list[str] (the human answers,
usually 10). VQA-VS test rows also carry `ood_sets` list[str] (the OOD sets the question is in).
Any defect raises `InputError` naming the file and the field or id.
"""

from __future__ import annotations

import json
import os
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


def input_files(dataset: str, root: str | os.PathLike[str]) -> list[Path]:
    """Every file the reader of `dataset` will open (optional pretrain files only if present)."""
    root = Path(root)
    files: list[Path] = []
    if dataset == "vqacp_v2":
        for split in ("train", "test"):
            files += vqacp_files(root, split)
        pre = vqacp_files(root, "pretrain")
    elif dataset == "vqavs":
        for split in ("train", "val", "test"):
            files += vqavs_files(root, split)
        for ood in VQAVS_OOD_SETS:
            files += vqavs_ood_files(root, ood)
        pre = vqavs_files(root, "pretrain")
    else:
        raise InputError(f"unknown dataset '{dataset}' (expected one of {', '.join(DATASETS)})")
    if pre[0].exists() or pre[1].exists():
        files += pre
    return files


def _load_list(path: Path, wrapper_key: str) -> list[dict[str, Any]]:
    """A flat JSON list of records; a VQA v2 style `{wrapper_key: [...]}` object is accepted too."""
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: malformed JSON at line {e.lineno} column {e.colno}") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text") from None
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


def read_pair(ques_path: Path, ann_path: Path) -> pd.DataFrame:
    """Join one question file with its annotation file on `question_id`, strictly."""
    questions = _load_list(ques_path, "questions")
    annotations = _load_list(ann_path, "annotations")
    _check(ques_path, questions, QUESTION_FIELDS)
    _check(ann_path, annotations, ANNOTATION_FIELDS)
    q_index = _index(ques_path, questions)
    a_index = _index(ann_path, annotations)
    for qid in q_index:
        if qid not in a_index:
            raise InputError(f"{ann_path}: no annotation for question_id {qid} of {ques_path.name}")
    for qid in a_index:
        if qid not in q_index:
            raise InputError(f"{ques_path}: no question for question_id {qid} of {ann_path.name}")
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
    frame = pd.DataFrame(
        rows,
        columns=[
            "question_id",
            "image_id",
            "question",
            "question_type",
            "answer_type",
            "multiple_choice_answer",
            "answers",
        ],
    )
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
    splits = {s: read_pair(*vqavs_files(root, s)) for s in ("train", "val", "test")}
    test = splits["test"]
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
    if any(p.exists() for p in vqavs_files(root, "pretrain")):
        splits["pretrain"] = read_pair(*vqavs_files(root, "pretrain"))
    return splits


def read_dataset(dataset: str, root: str | os.PathLike[str]) -> dict[str, pd.DataFrame]:
    """Read every split of `dataset` (one of `DATASETS`) under `root`."""
    if dataset == "vqacp_v2":
        return read_vqacp_v2(root)
    if dataset == "vqavs":
        return read_vqavs(root)
    raise InputError(f"unknown dataset '{dataset}' (expected one of {', '.join(DATASETS)})")
