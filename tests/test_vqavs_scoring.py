"""VQA-VS's own scoring (``scoring: vqavs``) against the official VQA metric, by hand-computed
cases, and the shipped VQA-VS configs scoring with it. The facts about the authors' script are in
the docstring of :func:`vqa.metric.vqavs_accuracy`."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest

from search.config import load_config
from vqa.baseline import evaluate_predictions
from vqa.metric import answer_score, evaluate, vqa_accuracy, vqavs_accuracy

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "vqavs"


@pytest.mark.parametrize(
    ("k", "vqa", "vqavs"),
    [(0, 0.0, 0.0), (1, 0.3, 1 / 3), (2, 0.6, 2 / 3), (3, 0.9, 1.0), (4, 1.0, 1.0), (10, 1.0, 1.0)],
)
def test_k_of_ten_humans(k: int, vqa: float, vqavs: float) -> None:
    # vqa: the 10-choose-9 average, e.g. k = 2: 8 subsets keep both matches (2/3), 2 keep one
    # (1/3): (8 * 2/3 + 2 * 1/3) / 10 = 0.6. vqavs: min(1, k/3) over all ten, no subset.
    answers = ["cat"] * k + ["dog"] * (10 - k)
    assert vqa_accuracy("cat", answers) == pytest.approx(vqa)
    assert vqavs_accuracy("cat", answers) == pytest.approx(vqavs)
    assert answer_score("cat", answers, scoring="vqavs") == pytest.approx(vqavs)


def test_no_leave_one_out_with_few_answers() -> None:
    assert vqa_accuracy("cat", ["cat"]) == 0.0  # leaving out the one answer leaves no match
    assert vqavs_accuracy("cat", ["cat"]) == pytest.approx(1 / 3)
    assert vqavs_accuracy("cat", ["cat", "cat", "cat"]) == 1.0


def test_no_normalisation_of_either_side() -> None:
    # The official tool normalises both sides when humans disagree; VQA-VS's script compares the
    # strings as they are.
    humans = ["two"] * 3 + ["2"] + ["3"] * 6
    assert vqa_accuracy("2", humans) == 1.0  # "two" -> "2": four matches
    assert vqavs_accuracy("2", humans) == pytest.approx(1 / 3)
    assert vqavs_accuracy("two", humans) == 1.0
    assert vqavs_accuracy("yes", ["Yes"] * 10) == 0.0  # case
    assert vqavs_accuracy("yes", [" yes", "yes\n", "yes"]) == pytest.approx(1 / 3)  # whitespace
    assert vqa_accuracy("red", ["red."] * 5 + ["blue"] * 5) == 1.0
    assert vqavs_accuracy("red", ["red."] * 5 + ["blue"] * 5) == 0.0  # punctuation
    assert vqavs_accuracy("dog", ["the dog"] * 5 + ["cat"] * 5) == 0.0  # articles
    assert vqavs_accuracy("t-shirt", ["t-shirt"] * 3 + ["shirt"] * 7) == 1.0
    with pytest.raises(ValueError):
        vqavs_accuracy("cat", [])


def test_matches_the_scripts_answer_count_rule() -> None:
    # The script: k = answer_count[prediction] (Counter of the raw human answers), else 0.
    rng = random.Random(0)
    pool = ["yes", "no", "Yes", "2", "two", "red", "red.", " red"]
    for _ in range(300):
        humans = [rng.choice(pool) for _ in range(rng.randint(1, 10))]
        pred = rng.choice(pool)
        expected = min(1.0, Counter(humans).get(pred, 0) / 3)
        assert vqavs_accuracy(pred, humans) == expected


def test_splits_score_with_the_caches_scoring() -> None:
    split = SimpleNamespace(
        human_answers=[["cat"] * 2 + ["dog"] * 8, ["Two"] * 10], answer_types=["other", "number"],
        ood_sets=None,
    )  # fmt: skip
    preds = ["cat", "2"]
    vqavs = evaluate_predictions(SimpleNamespace(config={"scoring": "vqavs"}), split, preds)
    vqa = evaluate_predictions(SimpleNamespace(config={"scoring": "vqa"}), split, preds)
    assert vqavs["overall"] == pytest.approx(100 * (2 / 3 + 0) / 2)
    assert vqa["overall"] == pytest.approx(100 * (0.6 + 0) / 2)  # unanimous "Two": exact, 0
    assert evaluate(preds, split.human_answers, split.answer_types, "vqavs") == vqavs


@pytest.mark.parametrize("name", ["data.yaml", "stage1_lmh.yaml", "search_lmh.yaml"])
def test_shipped_vqavs_configs_score_as_vqavs(name: str) -> None:
    cfg = load_config(CONFIGS / name)
    assert cfg.data.dataset == "vqavs" and cfg.data.scoring == "vqavs"
    assert cfg.data.cache_dir == load_config(CONFIGS / "data.yaml").data.cache_dir


def test_every_shipped_vqavs_config_is_checked() -> None:
    assert sorted(p.name for p in CONFIGS.glob("*.yaml")) == [
        "data.yaml", "search_lmh.yaml", "stage1_lmh.yaml",
    ]  # fmt: skip
