"""Tiny, valid VQA-CP v2 records and directories written by hand, for error-path tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vqa.readers import vqacp_files

QTYPES = (("is the", "yes/no"), ("how many", "number"), ("what color is the", "other"))
POOLS = {"yes/no": ("yes", "no"), "number": ("1", "2", "3"), "other": ("red", "blue")}


def make_records(n: int, first_qid: int, n_images: int) -> tuple[list[dict], list[dict]]:
    """`n` questions over images 1..n_images; nine annotators agree, the tenth gives another."""
    questions, annotations = [], []
    for i in range(n):
        qid, image_id = first_qid + i, 1 + i % n_images
        qtype, atype = QTYPES[i % len(QTYPES)]
        pool = POOLS[atype]
        answer, other = pool[i % len(pool)], pool[(i + 1) % len(pool)]
        questions.append(
            {
                "question_id": qid,
                "image_id": image_id,
                "question": f"{qtype} thing number {i}?",
                "coco_split": "train2014",
            }
        )
        humans = [answer] * 9 + [other]
        annotations.append(
            {
                "question_id": qid,
                "image_id": image_id,
                "question_type": qtype,
                "answer_type": atype,
                "multiple_choice_answer": answer,
                "answers": [
                    {"answer": h, "answer_confidence": "yes", "answer_id": j + 1}
                    for j, h in enumerate(humans)
                ],
            }
        )
    return questions, annotations


def dump(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1))


def write_vqacp(root: Path, n_train: int = 40, n_test: int = 40, n_images: int = 10) -> Path:
    """A valid VQA-CP v2 directory: train question ids 1000.., test 2000.."""
    for split, n, first in (("train", n_train, 1000), ("test", n_test, 2000)):
        q, a = make_records(n, first, n_images)
        q_path, a_path = vqacp_files(root, split)
        dump(q_path, q)
        dump(a_path, a)
    return root
