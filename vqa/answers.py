"""Answer vocabulary, soft targets and the question-type prior (DESIGN.md §3).

Soft targets are kept sparse (CSR: `indptr` (Q+1,), `indices` (nnz,) int32, `scores` (nnz,)
float32): a question has at most 10 distinct human answers, the vocabulary thousands.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from vqa.metric import normalize_answer

# Official leave-one-out VQA score of an answer given by k of 10 humans: mean over the ten 9-subsets
# of min(1, matches / 3). For k = 1, 2, 3 that is 0.3, 0.6, 0.9; from k = 4 on it is 1.
SOFT_SCORES = (0.0, 0.3, 0.6, 0.9, 1.0)


def soft_score(k: int) -> float:
    """Soft target of an answer given by `k` of the 10 human annotators."""
    return SOFT_SCORES[min(max(k, 0), 4)]


def build_vocabulary(mc_answers: Iterable[str], min_count: int = 9) -> list[str]:
    """Normalised multiple-choice answers of at least `min_count` training questions.

    Order: most frequent first, ties alphabetical, so the same data gives the same indices.
    """
    counts = Counter(normalize_answer(a) for a in mc_answers)
    kept = [a for a, c in counts.items() if c >= min_count and a]
    return sorted(kept, key=lambda a: (-counts[a], a))


@dataclass(frozen=True)
class SoftTargets:
    """Sparse soft targets of Q questions over A answers (CSR)."""

    indptr: np.ndarray  # (Q + 1,) int64
    indices: np.ndarray  # (nnz,) int32 answer ids
    scores: np.ndarray  # (nnz,) float32 in {.3, .6, .9, 1}

    def row(self, q: int) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = self.indptr[q], self.indptr[q + 1]
        return self.indices[lo:hi], self.scores[lo:hi]

    def dense(self, rows: np.ndarray, num_answers: int) -> np.ndarray:
        """Dense targets (B, A) float32 of the given question rows."""
        rows = np.asarray(rows, dtype=np.int64)
        starts, stops = self.indptr[rows], self.indptr[rows + 1]
        lengths = stops - starts
        out = np.zeros((len(rows), num_answers), dtype=np.float32)
        if lengths.sum() == 0:
            return out
        batch_row = np.repeat(np.arange(len(rows)), lengths)
        # Position of each nnz inside its row, added to the row's start: one gather, no Python loop.
        offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        flat = np.repeat(starts, lengths) + offsets
        out[batch_row, self.indices[flat]] = self.scores[flat]
        return out


def soft_targets(human_answers: Sequence[Sequence[str]], vocab: Sequence[str]) -> SoftTargets:
    """Soft targets from each question's human answers (normalised, then counted)."""
    index = {a: i for i, a in enumerate(vocab)}
    indptr = np.zeros(len(human_answers) + 1, dtype=np.int64)
    indices: list[int] = []
    scores: list[float] = []
    for q, answers in enumerate(human_answers):
        counts = Counter(normalize_answer(a) for a in answers)
        for answer, k in sorted(counts.items(), key=lambda kv: index.get(kv[0], -1)):
            i = index.get(answer)
            if i is not None:
                indices.append(i)
                scores.append(soft_score(k))
        indptr[q + 1] = len(indices)
    return SoftTargets(
        indptr, np.asarray(indices, dtype=np.int32), np.asarray(scores, dtype=np.float32)
    )


def question_type_prior(
    type_ids: np.ndarray, num_types: int, targets: SoftTargets, num_answers: int
) -> np.ndarray:
    """Prior p_b: row t is the mean soft-target vector of training questions of type t.

    Shape (num_types + 1, A) float32; the last row is the global mean, used for question types
    unseen in training. Not normalised (DESIGN.md §3).
    """
    type_ids = np.asarray(type_ids, dtype=np.int64)
    lengths = np.diff(targets.indptr)
    sums = np.zeros((num_types + 1, num_answers), dtype=np.float64)
    np.add.at(sums, (np.repeat(type_ids, lengths), targets.indices), targets.scores)
    counts = np.bincount(type_ids, minlength=num_types + 1).astype(np.float64)
    sums[num_types] = sums[:num_types].sum(axis=0)
    counts[num_types] = counts[:num_types].sum()
    return (sums / np.maximum(counts, 1.0)[:, None]).astype(np.float32)
