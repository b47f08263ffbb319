"""The paper's pruning effects on the synthetic benchmark.

- Realised sparsity equals the request within one weight per tensor, for 20 random feasible
  allocations of the demo model (fast).
- Mask training with `lmh` on the `bce` stage-1 model, at s = 0.5, beats that full model out of
  distribution (the paper's figure 2), averaged over the effect seeds (slow; it reuses the stage-1
  runs of tests/test_effects_stage1.py).
- At s = 0.7 some allocation differs from the uniform one by at least 5 OOD points (slow; issue
  5's precondition for the search benchmark).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from models.config import ArchitectureConfig
from models.structure import group_sizes, prunable_groups
from models.vqa_model import VQAModel, small_backbone
from pruning.budget import GROUPS, feasible_interval, solve
from pruning.masks import apply_masks, sparsity_report
from tests.conftest import Stage1Run

FIGURE2_PRUNING = {"sparsity": 0.5, "epochs": 6, "batch_size": 64, "lr": 1e-3, "loss": "lmh",
                   "recompute_every": 10}  # fmt: skip


def test_realised_sparsity_is_the_request_within_one_weight_per_tensor() -> None:
    torch.manual_seed(0)
    base = VQAModel(small_backbone(ArchitectureConfig(), vocab_size=200, feature_dim=64), 40)
    sizes = group_sizes(base)
    names = prunable_groups(base)
    rng = np.random.default_rng(0)
    for _ in range(20):
        s = float(rng.uniform(0.05, 0.95))
        lo, hi = feasible_interval(s, sizes, "language")
        language = float(rng.uniform(lo, hi))
        lo, hi = feasible_interval(s, sizes, "visual", fixed={"language": language})
        triple = solve(s, sizes, language=language, visual=float(rng.uniform(lo, hi)))
        model = copy.deepcopy(base)
        apply_masks(model, {**triple, "overall": s}, mode="modality")
        params = dict(model.named_parameters())
        report = sparsity_report(model)
        for group in GROUPS:
            pruned = 0
            for name in names[group]:
                module = model.get_submodule(name.rsplit(".", 1)[0])
                zeros = int((module.parametrizations.weight[0].mask == 0).sum())
                numel = params[name.replace("weight", "parametrizations.weight.original")].numel()
                assert abs(zeros - triple[group] * numel) <= 1, (name, triple[group])
                pruned += zeros
            assert report[group]["pruned"] == pruned
            assert report[group]["requested"] == pytest.approx(triple[group], abs=1e-12)
            slack = len(names[group]) / sizes[group]
            assert abs(report[group]["realised"] - triple[group]) <= slack
        n_tensors = sum(len(names[g]) for g in GROUPS)
        assert abs(report["overall"]["realised"] - s) <= n_tensors / sum(sizes.values())


@pytest.mark.slow
def test_lmh_mask_training_beats_the_full_bce_model_out_of_distribution(
    stage1_runs: list[Stage1Run], effect_pool
) -> None:
    from tests.effects_work import prune_run

    futures = []
    for run in stage1_runs:
        out = run.root / "prune_lmh"
        raw = {**run.raw, "pruning": {"output_dir": str(out), "seed": run.seed,
                                      "checkpoint": str(run.root / "bce" / "best"),
                                      **FIGURE2_PRUNING}}  # fmt: skip
        futures.append(effect_pool.submit(prune_run, raw))
    full, pruned = [], []
    for run, future in zip(stage1_runs, futures, strict=True):
        metrics = future.result()
        assert metrics["sparsity"]["overall"]["realised"] == pytest.approx(0.5, abs=1e-3)
        full.append(run.metrics["bce"]["test"]["overall"])
        pruned.append(metrics["test"]["overall"])
    assert np.mean(pruned) > np.mean(full), (full, pruned)


ALLOCATION_PRUNING = {**FIGURE2_PRUNING, "sparsity": 0.7}
# (language, visual) sparsity; cross follows from eq. 10. Chosen from an exploration on the
# effect seeds (docs/BENCHMARKS.md): the uniform triple and one that prunes the language side
# hardest. The visual-heavy triple (0.3, 0.99) it also ran scored within 0.3 points of uniform
# (seed means 40.6 and 40.9) and so never decided the assertion; it was dropped to keep the
# suite within 30 minutes.
ALLOCATIONS = {"uniform": (0.7, 0.7), "language-heavy": (0.99, 0.3)}


@pytest.mark.slow
def test_the_allocation_matters_at_s07(stage1_runs: list[Stage1Run], effect_pool) -> None:
    """Issue 5's precondition for the search benchmark: at s = 0.7 some allocation differs from
    the uniform one by at least 5 OOD points, averaged over the effect seeds (LMH mask training on
    each seed's BCE stage-1 model).

    Measured on the development machine on the calibrated benchmark (docs/CALIBRATION.md):
    uniform 40.9, visual-heavy (0.3, 0.99; no longer run) 40.6, language-heavy 18.9 (seed
    means). On the earlier data and
    tokenizer (docs/BENCHMARKS.md) language-light (0.1, 0.9) and visual-light (0.9, 0.1) were too
    close to uniform to hold in every run, so the test leans on the language-heavy gap."""
    from tests.effects_work import prune_run

    futures: dict[str, list] = {name: [] for name in ALLOCATIONS}
    for run in stage1_runs:
        for name, (language, visual) in ALLOCATIONS.items():
            out = run.root / f"prune_{name}"
            raw = {**run.raw, "pruning": {"output_dir": str(out), "seed": run.seed,
                                          "checkpoint": str(run.root / "bce" / "best"),
                                          "language": language, "visual": visual,
                                          **ALLOCATION_PRUNING}}  # fmt: skip
            futures[name].append(effect_pool.submit(prune_run, raw))
    ood: dict[str, list[float]] = {name: [] for name in ALLOCATIONS}
    for name, runs in futures.items():
        for future in runs:
            metrics = future.result()
            assert metrics["sparsity"]["overall"]["realised"] == pytest.approx(0.7, abs=1e-3)
            ood[name].append(metrics["test"]["overall"])
    means = {name: float(np.mean(v)) for name, v in ood.items()}
    gaps = {name: means[name] - means["uniform"] for name in ALLOCATIONS if name != "uniform"}
    assert max(abs(g) for g in gaps.values()) >= 5.0, (ood, gaps)
