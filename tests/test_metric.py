"""Tests for vqa.metric against the behaviour of the official VQA evaluation tool (vqaEval.py)."""

from __future__ import annotations

import pytest

from vqa.metric import (
    OOD_GROUPS,
    OOD_SETS,
    answer_score,
    evaluate,
    normalize_answer,
    vqa_accuracy,
    vqavs_accuracy,
)

# ---------------------------------------------------------------- normalisation


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("two", "2"),
        ("Two dogs", "2 dogs"),
        ("a dog", "dog"),
        ("dont", "don't"),
        ("yes.", "yes"),
        ("1,000", "1000"),
        ("t-shirt", "t shirt"),
        ("a.m.", "am"),
        ("10:30", "10:30"),
        ("mr. smith", "mr smith"),
        ("1.5", "1.5"),
        ("the red ball", "red ball"),
        ("won't", "won't"),
        ("isnt", "isn't"),
        ("\tyes\n", "yes"),
        ("red\tand\nblue", "red and blue"),
        ("An Apple", "apple"),
        ("ten", "10"),
        ("none", "0"),
        ("eleven", "eleven"),
        ("YES!", "yes"),
        # a mark next to a space is removed rather than spaced out
        ("black / white", "black white"),
        ("black/white", "black white"),
        # a digit-comma-digit anywhere makes every mark vanish, even the '-'
        ("1,000-2", "10002"),
        ("what's", "what's"),
        ("whats", "what's"),
        ("oclock", "o'clock"),
        ("Ive", "ive"),  # capitalised table keys never match after lower-casing
        ("", ""),
    ],
)
def test_normalize_answer(raw: str, expected: str) -> None:
    assert normalize_answer(raw) == expected


def test_normalize_period_strip_is_capped_at_32() -> None:
    # The official tool passes re.UNICODE (32) as the `count` of re.sub.
    assert normalize_answer("x" + "." * 40) == "x" + "." * 8


# ---------------------------------------------------------------- vqa_accuracy


@pytest.mark.parametrize(
    ("k", "expected"),
    [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)],
)
def test_vqa_accuracy_ten_humans(k: int, expected: float) -> None:
    answers = ["cat"] * k + ["dog"] * (10 - k)
    if k == 10:
        answers = ["cat"] * 10
    assert vqa_accuracy("cat", answers) == pytest.approx(expected)


def test_vqa_accuracy_zero_when_all_humans_disagree_with_prediction() -> None:
    assert vqa_accuracy("cat", ["dog"] * 10) == 0.0


def test_identical_answers_are_compared_without_normalisation() -> None:
    humans = ["Two"] * 10
    assert vqa_accuracy("2", humans) == 0.0
    assert vqa_accuracy("two", humans) == 0.0  # not even lower-cased
    assert vqa_accuracy("Two", humans) == pytest.approx(1.0)
    # the whitespace step still applies to both sides
    assert vqa_accuracy(" Two\n", humans) == pytest.approx(1.0)


def test_whitespace_only_differences_count_as_identical_answers() -> None:
    # after the newline/tab/strip step the humans agree, so "two" must not be mapped to "2"
    humans = ["Two"] * 5 + ["Two "] * 5
    assert vqa_accuracy("2", humans) == 0.0
    assert vqa_accuracy("Two", humans) == pytest.approx(1.0)


def test_differing_answers_are_normalised_on_both_sides() -> None:
    humans = ["two"] * 9 + ["2 "]
    assert vqa_accuracy("2", humans) == pytest.approx(1.0)
    assert vqa_accuracy("Two.", humans) == pytest.approx(1.0)
    humans = ["two"] + ["three"] * 9
    assert vqa_accuracy("2", humans) == pytest.approx(0.3)


def test_vqa_accuracy_other_answer_counts() -> None:
    # leave-one-out over 3 answers, 2 matching: (1/3 + 1/3 + 2/3) / 3
    assert vqa_accuracy("cat", ["cat", "cat", "dog"]) == pytest.approx(4 / 9)
    # a single answer leaves nothing to match once it is left out
    assert vqa_accuracy("cat", ["cat"]) == 0.0
    # 5 answers, 4 matching: left-out match -> min(1, 3/3); left-out miss -> 1
    assert vqa_accuracy("cat", ["cat"] * 4 + ["dog"]) == pytest.approx(1.0)


def test_vqa_accuracy_empty_answers_raises() -> None:
    with pytest.raises(ValueError):
        vqa_accuracy("cat", [])


# ---------------------------------------------------------------- vqavs_accuracy


@pytest.mark.parametrize(
    ("k", "expected"),
    [(0, 0.0), (1, 1 / 3), (2, 2 / 3), (3, 1.0), (4, 1.0), (10, 1.0)],
)
def test_vqavs_accuracy(k: int, expected: float) -> None:
    answers = ["cat"] * k + ["dog"] * (10 - k)
    assert vqavs_accuracy("cat", answers) == pytest.approx(expected)


def test_vqavs_has_no_leave_one_out() -> None:
    assert vqavs_accuracy("cat", ["cat"]) == pytest.approx(1 / 3)


def test_vqavs_matches_exactly() -> None:  # more cases in tests/test_vqavs_scoring.py
    assert vqavs_accuracy("2", ["Two"] * 10) == 0.0
    assert vqavs_accuracy("2", ["Two", "two", "three"]) == 0.0
    assert vqavs_accuracy("two", ["Two", "two", "three"]) == pytest.approx(1 / 3)


def test_vqavs_empty_answers_raises() -> None:
    with pytest.raises(ValueError):
        vqavs_accuracy("cat", [])


# ---------------------------------------------------------------- answer_score


def test_answer_score_dispatch() -> None:
    answers = ["cat"] + ["dog"] * 9
    assert answer_score("cat", answers) == pytest.approx(0.3)
    assert answer_score("cat", answers, scoring="vqa") == pytest.approx(0.3)
    assert answer_score("cat", answers, scoring="vqavs") == pytest.approx(1 / 3)


def test_answer_score_unknown_scoring_names_the_value() -> None:
    with pytest.raises(ValueError, match="bleu"):
        answer_score("cat", ["cat"], scoring="bleu")


# ---------------------------------------------------------------- evaluate


def test_evaluate_per_answer_type() -> None:
    predictions = ["yes", "yes", "two", "Red.", "blue"]
    answers = [
        ["yes"] * 10,  # 1.0
        ["no"] * 10,  # 0.0
        ["2"] * 3 + ["3"] * 7,  # "two" -> "2", 3 matches: 0.9
        ["red"] + ["blue"] * 9,  # "Red." -> "red", 1 match: 0.3
        ["blue"] * 10,  # 1.0
    ]
    types = ["yes/no", "yes/no", "number", "other", "other"]
    result = evaluate(predictions, answers, types)
    assert set(result) == {"overall", "yes_no", "number", "other", "count"}
    assert result["overall"] == pytest.approx(64.0)
    assert result["yes_no"] == pytest.approx(50.0)
    assert result["number"] == pytest.approx(90.0)
    assert result["other"] == pytest.approx(65.0)
    assert result["count"] == 5.0


def test_evaluate_omits_absent_answer_types() -> None:
    result = evaluate(["yes"], [["yes"] * 10], ["yes/no"])
    assert result == {"overall": pytest.approx(100.0), "yes_no": pytest.approx(100.0), "count": 1.0}


def test_evaluate_vqavs_scoring() -> None:
    result = evaluate(["cat"], [["cat"] + ["dog"] * 9], ["other"], scoring="vqavs")
    assert result["overall"] == pytest.approx(100 / 3)


def _vqavs_example() -> tuple[list[str], list[list[str]], list[str], list[list[str]]]:
    predictions = ["yes", "no", "cat", "3", "blue"]
    answers = [
        ["yes"] * 10,  # k=10 -> 1
        ["yes"] * 8 + ["no"] * 2,  # k=2 -> 2/3
        ["dog"] * 10,  # k=0 -> 0
        ["3"] + ["4"] * 9,  # k=1 -> 1/3 (VQA-VS matches exactly: "three" would give 0)
        ["blue"] * 3 + ["navy"] * 7,  # k=3 -> 1
    ]
    types = ["yes/no", "yes/no", "other", "number", "other"]
    ood = [
        ["QT", "KW"],
        ["QT", "KO"],
        ["KW", "QT+KW+KO"],
        ["KWP", "QT+KW", "KOP", "QT+KO", "KW+KO"],
        [],
    ]
    return predictions, answers, types, ood


def test_evaluate_ood_sets_groups_and_mean() -> None:
    predictions, answers, types, ood = _vqavs_example()
    result = evaluate(predictions, answers, types, scoring="vqavs", ood_sets=ood)
    third = 100 / 3
    expected_sets = {
        "QT": (100 + 2 * third) / 2,  # 83.33
        "KW": 50.0,
        "KWP": third,
        "QT+KW": third,
        "KO": 2 * third,
        "KOP": third,
        "QT+KO": third,
        "KW+KO": third,
        "QT+KW+KO": 0.0,
    }
    for name, value in expected_sets.items():
        assert result[f"ood_{name}"] == pytest.approx(value), name
    assert result["ood_language"] == pytest.approx(50.0)
    assert result["ood_visual"] == pytest.approx(50.0)
    assert result["ood_cross"] == pytest.approx(200 / 9)
    assert result["ood_mean"] == pytest.approx(1100 / 27)
    assert result["overall"] == pytest.approx(60.0)
    assert result["yes_no"] == pytest.approx(250 / 3)
    assert result["number"] == pytest.approx(third)
    assert result["other"] == pytest.approx(50.0)
    assert result["count"] == 5.0
    assert len(result) == 5 + 9 + 4


def test_evaluate_skips_empty_ood_set() -> None:
    predictions, answers, types, ood = _vqavs_example()
    ood[3] = [name for name in ood[3] if name != "KOP"]
    result = evaluate(predictions, answers, types, scoring="vqavs", ood_sets=ood)
    assert "ood_KOP" not in result
    assert result["ood_visual"] == pytest.approx(200 / 3)  # KO alone
    # mean over the eight sets present: 1100/3 total minus KOP's 100/3
    assert result["ood_mean"] == pytest.approx(1000 / 3 / 8)


def test_evaluate_drops_group_with_no_sets() -> None:
    result = evaluate(["yes"], [["yes"] * 10], ["yes/no"], ood_sets=[["QT"]])
    assert result["ood_QT"] == pytest.approx(100.0)
    assert result["ood_language"] == pytest.approx(100.0)
    assert result["ood_mean"] == pytest.approx(100.0)
    assert "ood_visual" not in result
    assert "ood_cross" not in result


def test_evaluate_ood_set_listed_twice_counts_once() -> None:
    result = evaluate(
        ["yes", "no"], [["yes"] * 10, ["yes"] * 10], ["yes/no"] * 2, ood_sets=[["QT", "QT"], ["QT"]]
    )
    assert result["ood_QT"] == pytest.approx(50.0)


def test_ood_constants() -> None:
    assert OOD_SETS == ("QT", "KW", "KWP", "QT+KW", "KO", "KOP", "QT+KO", "KW+KO", "QT+KW+KO")
    assert OOD_GROUPS == {
        "language": ("QT", "KW", "KWP", "QT+KW"),
        "visual": ("KO", "KOP"),
        "cross": ("QT+KO", "KW+KO", "QT+KW+KO"),
    }


@pytest.mark.parametrize(
    "kwargs",
    [
        {"answers": [["yes"]], "answer_types": ["yes/no", "yes/no"]},
        {"answers": [["yes"], ["no"], ["no"]], "answer_types": ["yes/no", "yes/no"]},
        {"answers": [["yes"], ["no"]], "answer_types": ["yes/no", "yes/no"], "ood_sets": [["QT"]]},
    ],
)
def test_evaluate_length_mismatch_raises(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        evaluate(["yes", "no"], **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"scoring": "exact"}, "exact"),
        ({"ood_sets": [["QX"]]}, "QX"),
        ({"answer_types": ["boolean"]}, "boolean"),
    ],
)
def test_evaluate_invalid_values_raise(kwargs: dict, message: str) -> None:
    args = {"answer_types": ["yes/no"], **kwargs}
    with pytest.raises(ValueError, match=message):
        evaluate(["yes"], [["yes"]], **args)


def test_evaluate_empty_raises() -> None:
    with pytest.raises(ValueError):
        evaluate([], [], [])


def test_evaluate_question_without_answers_raises() -> None:
    with pytest.raises(ValueError):
        evaluate(["yes"], [[]], ["yes/no"])
