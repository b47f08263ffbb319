"""`tickets search CONFIG --dry-run`: what a sweep would run, planned without running it.

It prints the budgets, each group's feasible interval at each budget, the uniform allocation in
sparsities and in the space's unit coordinates (`u_language`, `u_visual`), the declared
hyperparameters, the searcher, scheduler, trial count and concurrency, and for the grid its
coarse points and its upper bound of trials. It reads the config and the stage-1 checkpoint's
config.json (the model is built on the meta device: no weights are read) and writes and starts
nothing: no run directory, no Optuna study, no Ray. `search.tuner` and `search.grid` import Ray,
so nothing here imports them; the grid's points come from `search.grid_plan`, which
`GridSearcher` plans with too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pruning.budget import GROUPS, feasible_interval
from search.config import RunConfig
from search.grid_plan import max_fine, plan
from search.space import startup_trials, unit_coordinates
from vqa.errors import InputError

SAMPLERS = {"tpe": "Optuna TPESampler", "gp": "Optuna GPSampler",
            "nsga2": "Optuna NSGAIISampler", "random": "Optuna RandomSampler"}  # fmt: skip


def model_sizes(checkpoint: Path) -> dict[str, int]:
    """Group sizes (language, visual, cross, pooler) of the stage-1 checkpoint, from its
    config.json, built on the meta device (no weights are read); imports no Ray."""
    import torch
    from transformers import LxmertConfig, LxmertModel

    from models.structure import group_sizes
    from models.vqa_model import check_model_dir

    path = check_model_dir(checkpoint, "pruning.checkpoint")
    config = LxmertConfig.from_pretrained(str(path), local_files_only=True)
    with torch.device("meta"):
        model = LxmertModel(config)
    return group_sizes(model)


def sweep_budgets(cfg: RunConfig) -> tuple[list[float], str]:
    """The overall sparsities a sweep searches (as `search.tuner`'s) and the field they come
    from."""
    if cfg.search.budgets:
        return [float(b) for b in cfg.search.budgets], "search.budgets"
    if cfg.pruning.sparsity is None:
        raise InputError("search.budgets: required when pruning.sparsity is not given")
    return [float(cfg.pruning.sparsity)], "pruning.sparsity"


@dataclass(frozen=True)
class BudgetPlan:
    """One budget s: each group's feasible interval (the others free, within the bounds) and the
    uniform allocation's unit coordinates."""

    s: float
    intervals: dict[str, tuple[float, float]]
    uniform_u: dict[str, float]


@dataclass(frozen=True)
class GridPlan:
    """The grid's settings (as `GridSearcher` saves them), its feasible coarse points and the
    largest fine pass any of them could lead to."""

    settings: dict[str, Any]
    coarse: list[dict[str, float]]
    max_fine: int

    @property
    def max_trials(self) -> int:
        """As `GridSearcher.max_trials()`: what the sweep gives Tune as num_samples."""
        return len(self.coarse) + self.max_fine


@dataclass(frozen=True)
class SweepPlan:
    cfg: RunConfig  # resolved
    checkpoint: Path
    sizes: dict[str, int]
    budgets_field: str
    budgets: list[BudgetPlan]
    grid: GridPlan | None

    @property
    def bounds(self) -> tuple[float, float]:
        lo, hi = self.cfg.pruning.bounds
        return float(lo), float(hi)


def plan_sweep(cfg: RunConfig) -> SweepPlan:
    """Everything `tickets search` would plan before starting Ray; an `InputError` for what it
    would refuse (no checkpoint, a budget no allocation meets, a grid with no feasible point)."""
    if cfg.pruning is None or cfg.search is None:
        raise InputError("the config needs 'pruning:' and 'search:' blocks for tickets search")
    cfg = cfg.resolved()
    checkpoint = cfg.pruning.checkpoint
    if checkpoint is None:
        raise InputError("pruning.checkpoint: required (a stage-1 model directory; default "
                         "<finetune.output_dir>/best when there is a finetune: block)")  # fmt: skip
    sizes = model_sizes(checkpoint)
    values, field = sweep_budgets(cfg)
    lo, hi = bounds = tuple(float(b) for b in cfg.pruning.bounds)
    budgets = []
    for s in values:
        if not lo <= s <= hi:
            raise InputError(
                f"{field}: {s} is outside pruning.bounds [{lo}, {hi}]; no allocation meets "
                "eq. 10 (s is the size-weighted mean of the three sparsities)"
            )
        try:
            intervals = {g: feasible_interval(s, sizes, g, bounds=bounds) for g in GROUPS}
            uniform_u = unit_coordinates(s, sizes, s, s, bounds)
        except ValueError as e:
            raise InputError(f"{field}: {e}") from None
        budgets.append(BudgetPlan(s, intervals, uniform_u))
    grid = None
    if cfg.search.searcher == "grid":
        g = cfg.search.grid  # as search.tuner.build_searcher builds the GridSearcher
        try:
            settings, coarse = plan(sizes, values[0], bounds, **g.settings(values[0], bounds))
        except ValueError as e:
            raise InputError(f"search.grid: {e}") from None
        grid = GridPlan(settings, coarse, max_fine(settings, coarse))
    return SweepPlan(cfg, Path(checkpoint), sizes, field, budgets, grid)


def _f(x: float) -> str:
    return f"{x:.4f}"


def most_epochs(cfg: RunConfig) -> int:
    """The most epochs (stages 2 and 3) a trial of the sweep can run: with `epochs` among the
    searched hyperparameters, its largest value, else `pruning.epochs`."""
    spec = cfg.search.hyperparameters.get("epochs") if cfg.search.searcher != "grid" else None
    stage2 = cfg.pruning.epochs
    if spec is not None:
        stage2 = int(max(spec.values) if spec.type == "choice" else spec.high)
    return stage2 + (cfg.stage3.epochs if cfg.stage3 is not None else 0)


def _hyperparameter(name: str, spec: Any) -> str:
    if spec.type == "choice":
        return f"  {name}: choice of {spec.values}"
    low, high = (int(spec.low), int(spec.high)) if spec.type == "int" else (spec.low, spec.high)
    return f"  {name}: {spec.type} in [{low}, {high}]"


def _searcher_lines(p: SweepPlan) -> list[str]:
    search = p.cfg.search
    metrics = ", ".join(f"{m} ({d})" for m, d in zip(search.metrics, search.modes, strict=True))
    lines = [f"metric: {metrics}"]
    if p.grid is not None:
        st = p.grid.settings
        fine = ("no fine pass" if st["fine_step"] is None else
                f"fine step {st['fine_step']} within {st['fine_radius']} of the best coarse "
                "point on each axis")  # fmt: skip
        lines.append(f"searcher: grid (the paper's C.4 at s = {st['budget']}): coarse step "
                     f"{st['coarse_step']}, {fine}")  # fmt: skip
        grid = len(st["coarse_values"]) ** 2
        lines.append(f"  coarse points: {len(p.grid.coarse)} of the {grid} on the grid "
                     "(s_cross solved by eq. 10 within the bounds)")  # fmt: skip
        for i, pt in enumerate(p.grid.coarse, 1):
            lines.append(f"  {i:>4}  s_language {_f(pt['language'])}  s_visual "
                         f"{_f(pt['visual'])}  s_cross {_f(pt['cross'])}")  # fmt: skip
        lines.append(f"  upper bound of trials: {p.grid.max_trials} ({len(p.grid.coarse)} coarse "
                     f"+ at most {p.grid.max_fine} fine)")  # fmt: skip
        return lines
    n_budgets = len(p.budgets)
    first = f"the uniform allocation{' of each budget' if n_budgets > 1 else ''} first"
    if search.warm_start:
        first += " unless a warm-start point is that allocation"
    if search.searcher in ("tpe", "gp"):
        startup = search.startup_trials or startup_trials(len(search.hyperparameters), n_budgets)
        detail = f"seed {search.seed}, {startup} random start-up trials, {first}"
    else:
        detail = f"seed {search.seed}, {first}"
    lines.append(f"searcher: {search.searcher} ({SAMPLERS[search.searcher]}, {detail})")
    return lines


def _scheduler_line(cfg: RunConfig) -> str:
    search, epochs = cfg.search, most_epochs(cfg)
    if search.scheduler == "fifo":
        return f"scheduler: fifo (every trial runs its {epochs} epochs)"
    grace = min(search.asha.grace_period, epochs)
    plural = "s" if grace != 1 else ""
    return (f"scheduler: asha on {search.metrics[0]} ({search.modes[0]}), grace period {grace} "
            f"epoch{plural}, reduction factor {search.asha.reduction_factor}, at most {epochs} "
            "epochs")  # fmt: skip


def _trials_lines(p: SweepPlan) -> list[str]:
    search, epochs = p.cfg.search, most_epochs(p.cfg)
    at_once = f"at most {search.max_concurrent_trials} at a time (search.max_concurrent_trials)"
    if p.grid is not None:
        n = p.grid.max_trials
        lines = [f"trials: at most {n}, {at_once}; the grid ends the sweep itself "
                 f"(search.num_samples {search.num_samples} is not used)"]  # fmt: skip
    else:
        n = search.num_samples
        lines = [f"trials: {n} (search.num_samples), {at_once}"]
    if "epochs" not in search.hyperparameters or p.grid is not None:
        lines.append(f"trial-epochs: at most {n * epochs} ({epochs} per trial)")
    if search.confirm is not None:
        k, seeds = search.confirm.top, search.confirm.seeds
        fixed = "epochs" not in search.hyperparameters or p.grid is not None
        cost = f", at most {k * seeds * epochs} trial-epochs" if fixed else ""
        lines.append(f"then confirmation: the best {k} re-run with {seeds} fresh seeds each "
                     f"(search.confirm): {k * seeds} trials{cost}")  # fmt: skip
    gpu = f", {search.resources.gpu:g} GPU" if search.resources.gpu else ", no GPU"
    lines.append(f"per trial: {search.resources.cpu:g} CPU{gpu} (search.resources)")
    return lines


def _where_lines(p: SweepPlan, name: str | None, address: str | None) -> list[str]:
    search = p.cfg.search
    name = name or search.name
    shown = name or "search-<date>-<time>, chosen at start"
    storage = search.storage_path  # resolved: absolute, or a URI
    sep = "" if storage.endswith("/") else "/"
    lines = [f"run directory: {storage}{sep}{shown} (not created)"]
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        lines.append(f"ray: would join {address} (not contacted)")
    else:
        dash = f"dashboard on {search.dashboard_host}" if search.dashboard else "dashboard off"
        lines.append(f"ray: would start a local runtime, {dash} (not started)")
    return lines


def format_plan(p: SweepPlan, name: str | None = None, address: str | None = None) -> str:
    """The dry run's report, one fact a line."""
    sizes = p.sizes
    lo, hi = p.bounds
    out = ["dry run: nothing is written and nothing is started",
           f"checkpoint: {p.checkpoint}"]  # fmt: skip
    groups = ", ".join(f"{g} {sizes[g]:,}" for g in GROUPS)
    pooler = f"; pooler {sizes['pooler']:,}, pruned at s" if "pooler" in sizes else ""
    out.append(f"weights: {groups}{pooler}")
    out.append(f"bounds: [{lo}, {hi}] (pruning.bounds)")
    out.append(f"budgets: {', '.join(str(b.s) for b in p.budgets)} ({p.budgets_field})")
    for b in p.budgets:
        intervals = ", ".join(f"{g} [{_f(b.intervals[g][0])}, {_f(b.intervals[g][1])}]"
                              for g in GROUPS)  # fmt: skip
        out.append(f"s = {b.s}: feasible {intervals}")
        u, s = b.uniform_u, _f(b.s)
        out.append(f"  uniform: s_language {s}, s_visual {s}, s_cross {s} = u_language "
                   f"{_f(u['u_language'])}, u_visual {_f(u['u_visual'])}")  # fmt: skip
    hps = p.cfg.search.hyperparameters
    if hps:
        # search.tuner.build_searcher gives the grid none of them: its trials use pruning:'s.
        unused = "; the grid does not search them (its trials use pruning:'s values)"
        out.append(f"hyperparameters: {len(hps)}{unused if p.grid is not None else ''}")
        out += [_hyperparameter(k, v) for k, v in hps.items()]
    else:
        out.append("hyperparameters: none (the allocation only)")
    if p.cfg.search.warm_start:
        out.append(f"warm start ({p.cfg.search.warm_start_as}): "
                   + ", ".join(p.cfg.search.warm_start))  # fmt: skip
    out += _searcher_lines(p)
    out.append(_scheduler_line(p.cfg))
    out += _trials_lines(p)
    out += _where_lines(p, name, address)
    return "\n".join(out)


LOGGER_PACKAGES = {"tensorboard": "tensorboardX", "mlflow": "mlflow", "wandb": "wandb"}


def check_loggers(cfg: RunConfig) -> None:
    """An `InputError` naming the package to install for a logger of `search.loggers`."""
    import importlib.util

    for name in cfg.search.loggers:
        package = LOGGER_PACKAGES.get(name)
        if package and importlib.util.find_spec(package) is None:
            raise InputError(f"search.loggers: {name} needs the {package} package: "
                             f"pip install {package}")  # fmt: skip


def check_warm_sources(cfg: RunConfig) -> list[str]:
    """What a warm start will read, one line per earlier sweep; an `InputError` for a local one
    that is not a sweep with finished trials (URIs are fetched when the sweep starts)."""
    from search.warm_start import read_source

    lines = []
    for text in cfg.search.warm_start:
        if "://" in text:
            lines.append(f"  {text}: fetched when the sweep starts")
            continue
        _, finished = read_source(Path(text))
        lines.append(f"  {text}: {len(finished)} finished trials, as "
                     f"{cfg.search.warm_start_as}")  # fmt: skip
    return lines


def check_before_writing(cfg: RunConfig, sizes: dict[str, int]) -> None:
    """What `tickets search` checks before it writes anything: the loggers' packages and the
    grid's plan (an infeasible or out-of-bounds grid is one line, not a half-made run)."""
    check_loggers(cfg)
    if cfg.search.searcher == "grid":
        budget = sweep_budgets(cfg)[0][0]
        bounds = (float(cfg.pruning.bounds[0]), float(cfg.pruning.bounds[1]))
        try:
            plan(sizes, budget, bounds, **cfg.search.grid.settings(budget, bounds))
        except ValueError as e:
            raise InputError(f"search.grid: {e}") from None


def dry_run(cfg: RunConfig, name: str | None = None, address: str | None = None) -> str:
    """:func:`plan_sweep` then :func:`format_plan`, after the checks `tickets search` makes
    before it writes anything; the warm-start sources listed."""
    text = format_plan(plan_sweep(cfg), name, address)  # refuses a config without search:
    check_loggers(cfg)
    warm = check_warm_sources(cfg) if cfg.search.warm_start else []
    if warm:
        text += "\nwarm start:\n" + "\n".join(warm) + "\n"
    return text
