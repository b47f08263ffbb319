"""The `pruning:` block (stage 2, one allocation) and the optional `stage3:` block of a run config.

Sparsities are fractions removed. The allocation is asked for in one of three ways:

- `mode: modality` with two of `language`/`visual`/`cross` and the budget `sparsity` (eq. 10 solves
  the third), with all three (the budget follows from them), or with none (every group at
  `sparsity`: the uniform allocation of the triple);
- `mode: uniform` (every prunable tensor at `sparsity`) or `mode: global` (all prunable weights
  ranked together, at the first mask and at every recomputation), both with `sparsity` only.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_serializer, model_validator

from models.config import ObjectiveConfig, TrainConfig
from pruning.budget import GROUPS as BUDGET_GROUPS
from pruning.budget import solve
from vqa.errors import InputError

Fraction = Field(None, ge=0.0, lt=1.0)


def _loss_from_name(value: Any) -> Any:
    """`loss: lmh` is shorthand for `loss: {name: lmh}`."""
    return {"name": value} if isinstance(value, str) else value


class PruneConfig(TrainConfig):
    """Stage 2: mask training (`method: mask`, loss L2 = `loss`) or one-shot magnitude pruning
    (`method: omp`) of the stage-1 model at `checkpoint` (default `<finetune.output_dir>/best`).
    Training defaults are the seed code's: AdamW lr 5e-5, no warm-up, no weight decay, 20 epochs,
    batch 256 (its GPU batch)."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(20, ge=1)
    batch_size: int = Field(256, ge=1)
    warmup_ratio: float = Field(0.0, ge=0.0, lt=1.0)
    checkpoint: Path | None = None
    method: Literal["mask", "omp"] = "mask"
    mode: Literal["modality", "uniform", "global"] = "modality"
    sparsity: float | None = Fraction
    language: float | None = Fraction
    visual: float | None = Fraction
    cross: float | None = Fraction
    bounds: tuple[float, float] = (0.0, 0.99)
    alpha: float = Field(2.0, gt=0.0)
    phi: float = Field(0.01, gt=0.0)
    score_lr: float | None = Field(None, gt=0)
    """Learning rate of the mask scores (default `lr`, the paper's single rate); the answer head
    and the objective's parameters train at `lr`. Scores start α·φ apart, so a mask flips only
    once a score has moved that far: a run of far fewer steps than the paper's needs a larger
    score rate (docs/CALIBRATION.md), as movement pruning gives its scores their own."""
    head_shift: bool = False
    """Before a sigmoid loss (`bce`, `lmh`) trains the head of a stage-1 model trained with a
    softmax loss (`lpf`, `rubi`, `ce`: the objective its `config.yaml` names), shift the head's
    output bias so that sigmoid(z - c) ~ softmax(z) over the training split (as after `ce`
    pre-training); predictions are unchanged. Unshifted, such a head says "yes" to most answers
    and the first stage-2 gradients are several times the usual (docs/CALIBRATION.md)."""
    recompute_every: int = Field(100, ge=1)
    """t_m: steps between threshold recomputations (each tensor's mask re-binarised at its exact
    count; in `global` mode all budget tensors ranked together)."""
    loss: ObjectiveConfig = ObjectiveConfig(name="lmh")

    _loss_name = field_validator("loss", mode="before")(_loss_from_name)

    @model_serializer(mode="wrap")
    def _omit_unset_fields(self, handler):
        # Runs recorded before these fields existed saved neither: they still resume.
        dumped = handler(self)
        if dumped.get("score_lr", 0) is None:
            del dumped["score_lr"]
        if dumped.get("head_shift") is False:
            del dumped["head_shift"]
        return dumped

    @model_validator(mode="after")
    def _allocation_is_asked(self) -> PruneConfig:
        lo, hi = self.bounds
        if not 0.0 <= lo <= hi < 1.0:
            raise ValueError(f"bounds must satisfy 0 <= low <= high < 1, got {list(self.bounds)}")
        given = [g for g in BUDGET_GROUPS if getattr(self, g) is not None]
        if self.mode != "modality" and given:
            raise ValueError(f"mode {self.mode!r} takes sparsity only, not {', '.join(given)}")
        if self.sparsity is None and len(given) < 3:
            raise ValueError("give the budget `sparsity` (or all of language, visual, cross)")
        if len(given) == 1:
            raise ValueError(f"give two of language, visual, cross (or none), not only {given[0]}")
        return self

    def resolved(self) -> PruneConfig:
        out = super().resolved()
        if out.checkpoint is not None:
            out = out.model_copy(update={"checkpoint": out.checkpoint.expanduser().resolve()})
        return out

    def sparsities(self, sizes: Mapping[str, int]) -> dict[str, float]:
        """`language`, `visual`, `cross` and `overall` (eq. 10's s) for `sizes` (group_sizes);
        an `InputError` naming the fields when the request cannot meet eq. 10 in `bounds`."""
        lo, hi = self.bounds
        if self.sparsity is not None and not lo <= self.sparsity <= hi:
            raise InputError(f"pruning.sparsity: {self.sparsity} is outside bounds [{lo}, {hi}]")
        given = {g: getattr(self, g) for g in BUDGET_GROUPS if getattr(self, g) is not None}
        for group, value in given.items():
            if not lo <= value <= hi:
                raise InputError(f"pruning.{group}: {value} is outside bounds [{lo}, {hi}]")
        if not given:
            return {**{g: float(self.sparsity) for g in BUDGET_GROUPS}, "overall": self.sparsity}
        if len(given) == 3:
            total = sum(sizes[g] for g in BUDGET_GROUPS)
            s = sum(given[g] * sizes[g] for g in BUDGET_GROUPS) / total
            if self.sparsity is not None and abs(s - self.sparsity) > 1e-6:
                raise InputError(
                    f"pruning: language/visual/cross give an overall sparsity of {s:.6f}, "
                    f"not pruning.sparsity {self.sparsity}; give two of the three to solve eq. 10"
                )
            return {**given, "overall": s}
        try:
            triple = solve(self.sparsity, sizes, **given, bounds=self.bounds)
        except ValueError as e:
            raise InputError(f"pruning: {e}") from None
        return {**triple, "overall": float(self.sparsity)}


class Stage3Config(TrainConfig):
    """Stage 3 (optional): fine-tune the kept subnetwork's weights, mask fixed, with loss L3
    (`loss`). Writes into `output_dir`, default `<pruning.output_dir>/stage3`."""

    model_config = ConfigDict(extra="forbid")

    output_dir: Path | None = None  # type: ignore[assignment]
    warmup_ratio: float = Field(0.0, ge=0.0, lt=1.0)
    loss: ObjectiveConfig = ObjectiveConfig(name="lmh")

    _loss_name = field_validator("loss", mode="before")(_loss_from_name)

    def resolved(self) -> Stage3Config:
        if self.output_dir is None:
            return self
        return self.model_copy(update={"output_dir": self.output_dir.expanduser().resolve()})
