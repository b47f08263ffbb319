"""The `search:` block of a run config: searcher, scheduler, budgets, hyperparameters, resources."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Direction = Literal["max", "min"]

SEARCH_METRICS = (
    *(f"sel_{k}" for k in ("overall", "yes_no", "number", "other")),
    *(f"realised_{g}" for g in ("language", "visual", "cross", "pooler", "overall")),
    "remaining_params",
)
"""Columns a trial reports after every epoch and at its end, so searchers and schedulers can use
them: selection accuracies (%), realised sparsities, weights kept. Test metrics come only at the
end, and Tune stops a sweep whose metric is missing from a report."""


class HyperParameter(BaseModel):
    """A searched stage-2 hyperparameter; its name is a `pruning:` field (dotted for nested ones,
    e.g. `loss.lpf_gamma`)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["loguniform", "uniform", "int", "choice"]
    low: float | None = None
    high: float | None = None
    values: list[Any] | None = None

    @model_validator(mode="after")
    def _complete(self) -> HyperParameter:
        if self.type == "choice":
            if not self.values:
                raise ValueError("type 'choice' needs a non-empty `values` list")
            return self
        if self.low is None or self.high is None or not self.low < self.high:
            raise ValueError(f"type {self.type!r} needs low < high")
        if self.type == "loguniform" and self.low <= 0:
            raise ValueError("type 'loguniform' needs low > 0")
        return self


class Resources(BaseModel):
    """Per-trial resources; `gpu` may be a fraction (several trials share a GPU)."""

    model_config = ConfigDict(extra="forbid")

    cpu: float = Field(1.0, gt=0)
    gpu: float = Field(0.0, ge=0)


class AshaConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    grace_period: int = Field(1, ge=1)
    reduction_factor: float = Field(2.0, gt=1)


class GridConfig(BaseModel):
    """The paper's coarse-to-fine grid (appendix C.4). A field left empty (null) takes C.4's
    value for the budget (`search.grid_plan.c4_settings`): a 20% coarse pass, then a 5% fine
    pass around the best coarse point; at s = 0.9 a single 2% pass over 0.80-0.98."""

    model_config = ConfigDict(extra="forbid")

    coarse_step: float | None = Field(None, gt=0, lt=1)
    """Step of the coarse lattice (C.4: 0.2; 0.02 at s = 0.9)."""
    coarse_values: list[float] | None = None
    """The coarse pass's values on both axes, instead of the `coarse_step` lattice (C.4 at
    s = 0.9: 0.80, 0.82, ..., 0.98)."""
    fine_pass: bool | None = None
    """Whether a fine pass follows (C.4: yes, but not at s = 0.9)."""
    fine_step: float | None = Field(None, gt=0, lt=1)
    """Step of the fine pass (C.4: 0.05)."""
    fine_radius: float | None = Field(None, gt=0, lt=1)
    """Half-width of the fine pass around the best coarse point (default: one coarse step)."""

    @field_validator("coarse_values")
    @classmethod
    def _fractions(cls, values: list[float] | None) -> list[float] | None:
        if values is not None and (not values or any(not 0 <= v < 1 for v in values)):
            raise ValueError(f"expected a non-empty list of fractions in [0, 1), got {values}")
        return values

    def settings(self, budget: float, bounds: tuple[float, float]) -> dict[str, Any]:
        """Keyword arguments of `GridSearcher` and `grid_plan.plan` at overall sparsity
        `budget`. With no step, radius or values given: C.4's grid for the budget (at s = 0.9
        its values within `bounds`), `fine_pass` deciding the fine pass if given; with any of
        them given: that grid, the others at their defaults, a fine pass unless `fine_pass` is
        false (a saved 20%/5% grid stays one, whatever the budget)."""
        from search.grid_plan import c4_settings

        given = (self.coarse_step, self.coarse_values, self.fine_step, self.fine_radius)
        c4 = {} if any(v is not None for v in given) else c4_settings(budget)
        values = self.coarse_values
        if values is None and "coarse_values" in c4:
            values = [v for v in c4["coarse_values"] if bounds[0] <= v <= bounds[1]] or None
        fine = "fine_step" not in c4 if self.fine_pass is None else self.fine_pass
        return {"coarse_step": self.coarse_step or c4.get("coarse_step", 0.2),
                "coarse_values": values, "fine_step": (self.fine_step or 0.05) if fine else None,
                "fine_radius": self.fine_radius}  # fmt: skip


class ConfirmConfig(BaseModel):
    """Re-run the `top` best finished trials by the first metric with `seeds` fresh training seeds
    each after the search, and rank them by the seed mean (search/confirm.py)."""

    model_config = ConfigDict(extra="forbid")

    top: int = Field(3, ge=1)
    seeds: int = Field(2, ge=1)


class FaultInjection(BaseModel):
    """For testing a cluster's fault handling: every trial fails after its `epoch`-th reported
    epoch, by raising (`raise`) or by its process exiting (`exit`), on its first `times`
    attempts."""

    model_config = ConfigDict(extra="forbid")

    epoch: int = Field(ge=1)
    kind: Literal["raise", "exit"] = "raise"
    times: int = Field(1, ge=1)


class FailureConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_retries: int = Field(0, ge=0)
    """Retries of a failing trial, each from its last checkpoint."""
    inject: FaultInjection | None = None


class SearchConfig(BaseModel):
    """A sweep: every trial is one stage-2 run (`pruning:` block) at a proposed allocation."""

    model_config = ConfigDict(extra="forbid")

    storage_path: str = "runs/search"
    """Where runs live: a local directory or a URI (s3://, gs://, ...), shared on a cluster."""
    name: str | None = None
    searcher: Literal["tpe", "gp", "nsga2", "random", "grid"] = "gp"
    """Default `gp` (Optuna's GPSampler; docs/BENCHMARKS.md: on the benchmark's earlier data it
    reached the grid's best in fewer trial-epochs than `tpe`; on today's, no searcher reached it
    within the cap); `nsga2` when several metrics are given and no searcher."""
    scheduler: Literal["fifo", "asha"] = "fifo"
    num_samples: int = Field(20, ge=1)
    max_concurrent_trials: int = Field(1, ge=1)
    seed: int = 0
    startup_trials: int | None = Field(None, ge=1)
    """Trials `tpe` and `gp` draw at random (the uniform allocation first) before their model
    proposes; None: twice the space's dimensions (`search.space.startup_trials`), 4 for the
    allocation alone."""
    metric: str | list[str] = "sel_overall"
    mode: Direction | list[Direction] = "max"
    budgets: list[float] | None = None
    """Overall sparsities s to search over; default `[pruning.sparsity]`."""
    hyperparameters: dict[str, HyperParameter] = {}
    resources: Resources = Resources()
    asha: AshaConfig = AshaConfig()
    grid: GridConfig = GridConfig()
    failure: FailureConfig = FailureConfig()
    confirm: ConfirmConfig | None = None
    """After the search, `top` winners re-run with `seeds` fresh training seeds each (their
    trial-epochs come on top of the search's); None: no confirmation."""
    snapshot_s: float = Field(2.0, gt=0)
    """Seconds between experiment snapshots (what a resume after a crash starts from)."""
    checkpoint_every: int = Field(1, ge=1)
    """Epochs between a trial's checkpoints (its last epoch always has one): what a restarted
    trial continues from, and what each checkpoint costs in storage (README: sizes)."""
    connect_timeout_s: float = Field(10.0, gt=0)
    """Seconds to reach the Ray cluster of `--address` (or RAY_ADDRESS) before giving up."""
    dashboard: bool = False
    dashboard_host: str = "127.0.0.1"
    loggers: list[Literal["tensorboard", "csv", "json", "mlflow", "wandb"]] = [
        "csv", "json", "tensorboard"]  # fmt: skip
    """Ray Tune logger callbacks (default: Tune's own three): `tensorboard` (event files in each
    RUN_DIR/trial_<id>/: `tensorboard --logdir RUN_DIR`), `csv` (progress.csv), `json`
    (result.json), `mlflow` (runs under ./mlruns, or MLFLOW_TRACKING_URI), `wandb` (project =
    the sweep's name; WANDB_API_KEY or WANDB_MODE=offline). Each needs its package installed."""
    warm_start: list[str] = []
    """Earlier sweeps (run directories) whose finished trials seed this sweep's study, mapped by
    their sparsities into this space (search/warm_start.py)."""
    warm_start_as: Literal["trials", "enqueue"] = "trials"
    """`trials`: added to the study as completed trials with their metric values, not re-run
    (the values are taken as comparable: the same data and budget); `enqueue`: their allocations
    are evaluated first by this sweep (values not comparable: another dataset or budget)."""
    warm_start_top: int | None = Field(None, ge=1)
    """Use only the best K of the earlier trials (by this sweep's first metric); None: all."""

    @field_validator("metric")
    @classmethod
    def _reported(cls, metric: str | list[str]) -> str | list[str]:
        for name in [metric] if isinstance(metric, str) else metric:
            if name not in SEARCH_METRICS:
                raise ValueError(f"{name!r} is not reported every epoch; use one of "
                                 f"{', '.join(SEARCH_METRICS)}")  # fmt: skip
        return metric

    @model_validator(mode="after")
    def _consistent(self) -> SearchConfig:
        metrics = self.metric if isinstance(self.metric, list) else [self.metric]
        modes = self.mode if isinstance(self.mode, list) else [self.mode]
        if len(metrics) != len(modes):
            raise ValueError(f"{len(metrics)} metrics but {len(modes)} modes")
        multi = len(metrics) > 1
        if multi and "searcher" not in self.model_fields_set:
            self.searcher = "nsga2"  # GPSampler takes one objective
        if self.searcher == "nsga2" and not multi:
            raise ValueError("searcher 'nsga2' is multi-objective: give lists of metrics and modes")
        if multi and self.searcher not in ("nsga2", "random", "tpe"):
            raise ValueError(f"searcher {self.searcher!r} takes one metric, not a list")
        if multi and self.scheduler == "asha":
            raise ValueError("scheduler 'asha' needs a single metric")
        if self.budgets is not None:
            if not self.budgets or any(not 0 <= b < 1 for b in self.budgets):
                raise ValueError(f"budgets must be fractions in [0, 1), got {self.budgets}")
            if self.searcher == "grid" and len(self.budgets) != 1:
                raise ValueError("searcher 'grid' runs one budget at a time")
        if self.warm_start and self.searcher == "grid":
            raise ValueError("warm_start: the grid plans its own points; use an Optuna searcher")
        if self.hyperparameters and self.searcher == "grid":
            raise ValueError("hyperparameters: the grid searches the allocation only; set them "
                             "in the pruning: block")  # fmt: skip
        if self.confirm is not None and "seed" in self.hyperparameters:
            raise ValueError("confirm: re-runs winners with fresh seeds; `seed` cannot also be "
                             "a searched hyperparameter")  # fmt: skip
        if len(set(self.warm_start)) != len(self.warm_start):
            raise ValueError(f"warm_start: {self.warm_start} names one sweep twice")
        if len(set(self.loggers)) != len(self.loggers):
            raise ValueError(f"loggers: {self.loggers} names one twice")
        return self

    @property
    def metrics(self) -> list[str]:
        return self.metric if isinstance(self.metric, list) else [self.metric]

    @property
    def modes(self) -> list[str]:
        return self.mode if isinstance(self.mode, list) else [self.mode]

    def resolved(self) -> SearchConfig:
        warm = [w if "://" in w else str(Path(w).expanduser().resolve()) for w in self.warm_start]
        update: dict[str, Any] = {"warm_start": warm}
        if "://" not in self.storage_path:
            update["storage_path"] = str(Path(self.storage_path).expanduser().resolve())
        return self.model_copy(update=update)
