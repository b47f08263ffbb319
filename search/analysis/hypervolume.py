"""Hypervolume of a set of allocations on (test accuracy, share of weights kept): the area, in
accuracy points × share of the pruned groups' weights, that the set dominates above a reference
accuracy and below keeping every weight. Used to score multi-budget searches (issue 13)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np


def hypervolume(points: Iterable[tuple[float, float]], reference: float) -> float:
    """Area dominated by `points` (accuracy to maximise, kept share in [0, 1] to minimise)
    between accuracy `reference` and kept share 1. Points at or below the reference accuracy,
    or keeping every weight, add nothing; so does a dominated point."""
    pts = sorted((float(k), float(q)) for q, k in points if np.isfinite(q) and np.isfinite(k))
    area, best = 0.0, reference
    for i, (kept, quality) in enumerate(pts):
        best = max(best, quality)
        right = pts[i + 1][0] if i + 1 < len(pts) else 1.0
        area += max(0.0, min(right, 1.0) - min(kept, 1.0)) * (best - reference)
    return area


def allocation_points(
    table, allocations: Iterable[Mapping[str, float]]
) -> list[tuple[float, float]]:
    """(true quality, kept share 1 - s_overall) of each allocation, from a
    `search.replay.ReferenceTable`."""
    return [(table.true_quality(a), 1.0 - float(a["s_overall"])) for a in allocations]
