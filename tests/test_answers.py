"""Answer vocabulary, soft targets and the question-type prior."""

from __future__ import annotations

import numpy as np
import pytest

from vqa.answers import (
    build_vocabulary,
    question_type_prior,
    soft_score,
    soft_targets,
)
from vqa.metric import vqa_accuracy


@pytest.mark.parametrize("k,score", [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)])
def test_soft_score_is_the_official_leave_one_out_score(k: int, score: float) -> None:
    assert soft_score(k) == score
    humans = ["cat"] * k + ["dog"] * (10 - k)
    # The same number from the official metric, where the humans disagree.
    if 0 < k < 10:
        assert vqa_accuracy("cat", humans) == pytest.approx(score)


def test_vocabulary_threshold_normalisation_and_order() -> None:
    mc = ["Two"] * 5 + ["2"] * 5 + ["red"] * 9 + ["blue"] * 12 + ["green"] * 8 + ["a cat"] * 9
    vocab = build_vocabulary(mc, min_count=9)
    # "Two" and "2" are one answer after normalisation (10 uses); green (8) is below 9.
    assert vocab == ["blue", "2", "cat", "red"]


def test_soft_targets_count_normalised_human_answers() -> None:
    vocab = ["2", "red", "blue"]
    humans = [
        ["2", "two", "Two", "2", "3", "2", "2", "2", "2", "2"],  # "2" by 9 after normalising
        ["red", "blue", "blue", "green", "green", "green", "green", "green", "green", "green"],
    ]
    t = soft_targets(humans, vocab)
    ids, scores = t.row(0)
    assert ids.tolist() == [0] and scores.tolist() == pytest.approx([1.0])
    ids, scores = t.row(1)
    assert dict(zip(ids.tolist(), scores.tolist(), strict=True)) == pytest.approx({1: 0.3, 2: 0.6})
    dense = t.dense(np.array([1, 0, 1]), len(vocab))
    assert dense.shape == (3, 3)
    np.testing.assert_allclose(dense[0], [0.0, 0.3, 0.6], rtol=1e-6)
    np.testing.assert_allclose(dense[1], [1.0, 0.0, 0.0])
    np.testing.assert_allclose(dense[2], dense[0])


def test_prior_is_mean_soft_target_per_type_with_global_row() -> None:
    vocab = ["yes", "no", "red"]
    humans = [["yes"] * 10, ["no"] * 10, ["yes"] * 3 + ["no"] * 7, ["red"] * 10]
    types = np.array([0, 0, 0, 1])
    t = soft_targets(humans, vocab)
    prior = question_type_prior(types, 2, t, len(vocab))
    assert prior.shape == (3, 3)
    np.testing.assert_allclose(prior[0], [(1 + 0 + 0.9) / 3, (0 + 1 + 1) / 3, 0.0], rtol=1e-6)
    np.testing.assert_allclose(prior[1], [0.0, 0.0, 1.0])
    np.testing.assert_allclose(prior[2], [1.9 / 4, 2 / 4, 1 / 4], rtol=1e-6)
