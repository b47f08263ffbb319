"""The paper's starting point on the synthetic benchmark, averaged over three seeds (slow).

Stage 1 with `bce` learns the planted bias (in-distribution accuracy far above OOD accuracy), and
`lmh` reaches a higher OOD accuracy than `bce` from the same pre-trained model, seeds and epochs,
by answering from the image rather than by guessing against the training prior. Sizes and
difficulty are the demo's defaults (docs/CALIBRATION.md); about three CPU-minutes per seed.
"""

from __future__ import annotations

import numpy as np
import pytest

from models.evaluate import image_dependence
from models.train import load_checkpoint_model
from tests.conftest import Stage1Run
from vqa.baseline import anti_prior_accuracy


@pytest.mark.slow
def test_bce_learns_the_planted_bias(stage1_runs: list[Stage1Run]) -> None:
    id_acc = np.mean([r.metrics["bce"]["train"]["overall"] for r in stage1_runs])
    ood_acc = np.mean([r.metrics["bce"]["test"]["overall"] for r in stage1_runs])
    assert id_acc - ood_acc >= 30, (id_acc, ood_acc)


@pytest.mark.slow
def test_lmh_beats_bce_out_of_distribution(stage1_runs: list[Stage1Run]) -> None:
    bce = [r.metrics["bce"]["test"]["overall"] for r in stage1_runs]
    lmh = [r.metrics["lmh"]["test"]["overall"] for r in stage1_runs]
    assert np.mean(lmh) - np.mean(bce) >= 5, (bce, lmh)


@pytest.mark.slow
def test_lmh_wins_by_using_the_image(stage1_runs: list[Stage1Run]) -> None:
    """The calibration's point (docs/CALIBRATION.md): on the VQA-CP style test split a model can
    also score by avoiding the training prior without looking at the image. LMH's kept model must
    answer from the image and beat the best such question-only guess. Measured (seeds 0-2):
    44% of its test predictions image-dependent; OOD 55.7 against the guess's 47.0."""
    dependent, lmh, anti = [], [], []
    for run in stage1_runs:
        model, _ = load_checkpoint_model(run.root / "lmh" / "best", run.bench.data, "required")
        dependent.append(image_dependence(model, run.bench.data))
        lmh.append(run.metrics["lmh"]["test"]["overall"])
        anti.append(anti_prior_accuracy(run.bench.data))
    assert np.mean(dependent) >= 20, dependent
    assert np.mean(lmh) - np.mean(anti) >= 3, (lmh, anti)
