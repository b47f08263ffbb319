"""Replay: score a searcher without training, against a reference table (issue 13, DESIGN §6).

A :class:`ReferenceTable` holds what real stage-2 runs measured on a lattice of allocations (one
row per run and epoch: the allocation, the run's training seed, the selection metrics and, where
known, the test metric). :func:`replay` runs a searcher as `tickets search` builds it
(`search.tuner.build_searcher`, `build_scheduler`, Tune's `ConcurrencyLimiter`) against that
table instead of training: `concurrency` simulated workers, one time unit per epoch, every
trial reporting the table's seed-mean curve at its allocation plus one seed's deviation from
that mean. No Ray runtime is started: the searcher and the scheduler are plain objects here.
A multi-objective sweep (several `search.metric`s, e.g. `sel_overall` and `remaining_params`
over several budgets) replays too: a finished trial's last report also carries its weights
kept, computed from the group sizes, and every event the front of the finished trials.

What is re-implemented, from Ray 2.60's `TuneController` and `SearchGenerator` (the searchers,
samplers, the scheduler's ASHA rule and the concurrency limit are Ray's and Optuna's own):

* a result the scheduler answers STOP is not passed to the searcher's `on_trial_result`; the
  trial then ends with it as its last result (scheduler, then searcher `on_trial_complete`);
* a trial that runs to its end reports its final result (`trial_complete`, the kept epoch's
  selection metrics, as `search.trainable.run_trial` does) and ends with it;
* new trials are asked for whenever a worker is free, until `num_samples` have been created or
  the searcher returns `Searcher.FINISHED` (the grid's `max_trials()` for the grid, as there);
* events at the same time are handled in the order their trials were started; a worker freed
  by a trial's end is given a new trial at once.
"""

from __future__ import annotations

import heapq
import itertools
import math
import os
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pruning.budget import remaining_params
from search.results import EPOCHS_FILE, TRIALS_FILE

ALLOCATION = ("s_overall", "s_language", "s_visual", "s_cross")
"""A table row's allocation columns (fractions removed; eq. 10 holds)."""
KEEP_METRIC = "sel_overall"
"""The kept epoch is the first epoch of best `sel_overall`, as `pruning.train` keeps it."""
PARAMS = "remaining_params"
"""A metric the replay computes (weights kept, eq. 10's sizes at the allocation), not reads."""
DECIMALS = 9  # an allocation matches a lattice point when equal to this many decimals
_CONFIG_KEYS = {"s_overall": "sparsity", "s_language": "language", "s_visual": "visual",
                "s_cross": "cross"}  # fmt: skip


def _allocation(allocation: Mapping[str, Any]) -> dict[str, float]:
    """`s_*` keys from a table row or a trial config (`sparsity`, `language`, ...)."""
    out = {}
    for column, key in _CONFIG_KEYS.items():
        value = allocation.get(column, allocation.get(key))
        if value is None:
            raise ValueError(f"allocation {dict(allocation)} lacks {column} (or {key})")
        out[column] = float(value)
    return out


@dataclass
class _Landscape:
    """One budget's lattice: `points` (P, 2) of (s_language, s_visual); per point the seed mean
    `mean` and spread `spread` (P, E, M) of every metric by epoch, the true `quality` (P,), and
    the runs' deviations from the mean, `deviations[p]` (R_p, E, M), in seed order."""

    points: np.ndarray
    cross: np.ndarray
    mean: np.ndarray
    spread: np.ndarray
    quality: np.ndarray
    deviations: list[np.ndarray]
    index: dict[tuple[float, float], int]
    linear: Any
    nearest: Any

    def at(self, language: float, visual: float) -> tuple[int, np.ndarray]:
        """(nearest lattice point, [mean, spread, quality] flattened) at (language, visual):
        the point's own values on the lattice, linear inside its triangulation, the nearest
        point's outside it."""
        near = int(self.nearest([[language, visual]])[0])
        exact = self.index.get((round(language, DECIMALS), round(visual, DECIMALS)))
        if exact is not None:
            return exact, self._flat(exact)
        if self.linear is not None:
            value = self.linear([[language, visual]])[0]
            if np.isfinite(value[-1]):
                return near, value
        return near, self._flat(near)

    def _flat(self, i: int) -> np.ndarray:
        return np.concatenate([self.mean[i].ravel(), self.spread[i].ravel(), [self.quality[i]]])


class ReferenceTable:
    """Measured allocations: per budget, a lattice over (s_language, s_visual), each point
    trained by one or more runs (training seeds). Accuracies are in percent, as reported.

    `true_quality` is the seed-mean `quality` metric (test accuracy) at the kept epoch, where
    the kept epoch is the first best epoch of the seed-mean `sel_overall` curve. Where some run
    has no test value at that epoch (a run directory's tables hold each run's test metrics at
    its own kept epoch only), it is the seed mean of each run's test value at its own kept epoch.
    """

    def __init__(self, rows: pd.DataFrame, *, quality: str = "test_overall") -> None:
        """`rows`: one per run and epoch with `ALLOCATION`, `run` (an id), `seed`, `epoch`,
        the `sel_*` metrics and `quality` (NaN where not measured)."""
        missing = [c for c in (*ALLOCATION, "run", "seed", "epoch", KEEP_METRIC, quality)
                   if c not in rows]  # fmt: skip
        if missing or rows.empty:
            raise ValueError(f"a reference table needs rows with {', '.join(missing or ['data'])}")
        self.quality_metric = quality
        self.metrics = [c for c in rows.columns if c.startswith("sel_")] + [quality]
        self.epochs = sorted(int(e) for e in rows["epoch"].unique())
        self.rows = rows
        self._lands = {round(float(b), 6): self._landscape(g)
                       for b, g in rows.groupby("s_overall")}  # fmt: skip

    @classmethod
    def load(cls, *sources: str | Path, quality: str = "test_overall",
             statuses: Sequence[str] = ("finished",)) -> ReferenceTable:  # fmt: skip
        """From run directories of `tickets search` sweeps (their trials.parquet and
        epochs.parquet: trials of `statuses`, see :func:`run_rows`), their epochs.parquet
        paths, or Parquet files already in the row format of :class:`ReferenceTable`."""
        frames = []
        for source in map(Path, sources):
            if source.is_dir() or (source.name == EPOCHS_FILE
                                   and (source.parent / TRIALS_FILE).is_file()):  # fmt: skip
                frames.append(run_rows(source if source.is_dir() else source.parent, statuses))
            else:
                frames.append(pd.read_parquet(source))
        return cls(pd.concat(frames, ignore_index=True), quality=quality)

    def _landscape(self, rows: pd.DataFrame) -> _Landscape:
        from scipy.interpolate import LinearNDInterpolator, NearestNDInterpolator
        from scipy.spatial import QhullError

        epoch_index = {e: i for i, e in enumerate(self.epochs)}
        keep, test = self.metrics.index(KEEP_METRIC), len(self.metrics) - 1
        points, keys, cross, means, spreads, quality, deviations = [], [], [], [], [], [], []
        key = rows[["s_language", "s_visual"]].round(DECIMALS).apply(tuple, axis=1)
        for (language, visual), at in rows.groupby(key, sort=True):
            runs = at.sort_values(["seed", "run"])["run"].unique()
            values = np.full((len(runs), len(self.epochs), len(self.metrics)), np.nan)
            run_at = at["run"].map({r: i for i, r in enumerate(runs)}).to_numpy()
            epoch_at = at["epoch"].astype(int).map(epoch_index).to_numpy()
            values[run_at, epoch_at] = at[self.metrics].to_numpy(dtype=float)
            with warnings.catch_warnings():  # all-NaN slices (test outside kept epochs) stay NaN
                warnings.simplefilter("ignore", RuntimeWarning)
                mean = np.nanmean(values, axis=0)
                spread = np.nanstd(values, axis=0, ddof=1) if len(runs) > 1 else np.zeros_like(mean)
            kept = int(np.nanargmax(mean[:, keep]))
            if np.isfinite(values[:, kept, test]).all():
                quality.append(float(values[:, kept, test].mean()))
            else:  # each run's test value at its own kept epoch
                own = [v[int(np.nanargmax(v[:, keep])), test] for v in values]
                quality.append(float(np.mean(own)))
            # Scaled so that a drawn deviation has the seeds' sample variance (ddof=1).
            scale = math.sqrt(len(runs) / (len(runs) - 1)) if len(runs) > 1 else 0.0
            deviations.append(np.nan_to_num(values - mean) * scale)
            first = at.iloc[0]  # the measured coordinates, not their rounded key
            points.append((float(first["s_language"]), float(first["s_visual"])))
            keys.append((language, visual))
            cross.append(float(first["s_cross"]))
            means.append(mean)
            spreads.append(np.nan_to_num(spread))
        pts = np.array(points, dtype=float)
        mean, spread, q = np.array(means), np.array(spreads), np.array(quality)
        n = len(pts)
        flat = np.concatenate([mean.reshape(n, -1), spread.reshape(n, -1), q[:, None]], axis=1)
        try:
            linear = LinearNDInterpolator(pts, flat) if len(pts) >= 3 else None
        except (QhullError, ValueError):  # collinear points: no triangulation
            linear = None
        return _Landscape(pts, np.array(cross), mean, spread, q, deviations,
                          {k: i for i, k in enumerate(keys)}, linear,
                          NearestNDInterpolator(pts, np.arange(len(pts))))  # fmt: skip

    # --- queries --------------------------------------------------------------------------------

    @property
    def budgets(self) -> list[float]:
        return sorted(self._lands)

    def _land(self, budget: float) -> _Landscape:
        land = self._lands.get(round(float(budget), 6))
        if land is None:
            raise ValueError(f"the reference table has no budget {budget} (has {self.budgets})")
        return land

    def _values(self, allocation: Mapping[str, Any]) -> tuple[_Landscape, int, np.ndarray]:
        a = _allocation(allocation)
        land = self._land(a["s_overall"])
        near, flat = land.at(a["s_language"], a["s_visual"])
        return land, near, flat

    def _frame(self, allocation: Mapping[str, Any], part: int) -> pd.DataFrame:
        """Part `part` (0: mean, 1: spread) of the interpolated values, epochs × metrics."""
        size = len(self.epochs) * len(self.metrics)
        flat = self._values(allocation)[2][part * size : (part + 1) * size]
        index = pd.Index(self.epochs, name="epoch")
        shape = (len(self.epochs), len(self.metrics))
        return pd.DataFrame(flat.reshape(shape), index=index, columns=self.metrics)

    def curve(self, allocation: Mapping[str, Any]) -> pd.DataFrame:
        """The seed-mean value of every metric (columns) by epoch (index) at `allocation`:
        exact on the lattice, linear between its points, the nearest point's outside it."""
        return self._frame(allocation, 0)

    def spread(self, allocation: Mapping[str, Any]) -> pd.DataFrame:
        """The standard deviation across seeds (ddof=1; 0 for one seed) of every metric by
        epoch at `allocation`, interpolated as :meth:`curve`."""
        return self._frame(allocation, 1)

    def value(self, allocation: Mapping[str, Any], epoch: int, metric: str = KEEP_METRIC) -> float:
        """The seed-mean `metric` at `epoch` at `allocation` (NaN where not measured)."""
        return float(self.curve(allocation).loc[epoch, metric])

    def true_quality(self, allocation: Mapping[str, Any]) -> float:
        """The seed-mean test accuracy (%) of `allocation` at its kept epoch (class docstring),
        linear between lattice points, the nearest point's outside the lattice."""
        return float(self._values(allocation)[2][-1])

    def deviation(self, allocation: Mapping[str, Any], draw: float) -> np.ndarray:
        """One seed's deviation from the seed mean (epochs × metrics), at the lattice point
        nearest `allocation`: the run of rank floor(draw · runs) there, `draw` in [0, 1)."""
        land, near, _ = self._values(allocation)
        runs = land.deviations[near]
        return runs[min(int(draw * len(runs)), len(runs) - 1)]

    def runs(self, allocation: Mapping[str, Any]) -> int:
        """How many runs (seeds) the table has at the lattice point nearest `allocation`."""
        land, near, _ = self._values(allocation)
        return len(land.deviations[near])

    def points(self) -> pd.DataFrame:
        """The lattice: one row per measured allocation with its `true_quality` and `runs`."""
        rows = []
        for budget, land in sorted(self._lands.items()):
            for i, (language, visual) in enumerate(land.points):
                rows.append({"s_overall": budget, "s_language": language, "s_visual": visual,
                             "s_cross": land.cross[i], "true_quality": land.quality[i],
                             "runs": len(land.deviations[i])})  # fmt: skip
        return pd.DataFrame(rows)

    def best_quality(self, budgets: Sequence[float] | None = None) -> float:
        """The best true quality among the lattice points of `budgets` (default: all)."""
        chosen = self.budgets if budgets is None else budgets
        return float(max(np.nanmax(self._land(b).quality) for b in chosen))


def run_rows(run_dir: Path, statuses: Sequence[str] = ("finished",)) -> pd.DataFrame:
    """A sweep's trials of `statuses` as reference-table rows: every stage-2 epoch with its
    selection metrics, the trial's test metrics on its kept epoch's row only (an early-stopped
    trial has none), `seed` the searched `hp_seed` where the sweep searched it, else the sweep's
    `pruning.seed`. Only finished trials have every epoch: a point whose runs all stopped early
    has no values (NaN) after their last epoch."""
    trials = pd.read_parquet(Path(run_dir) / TRIALS_FILE)
    epochs = pd.read_parquet(Path(run_dir) / EPOCHS_FILE)
    done = trials[trials["status"].isin(list(statuses))].copy()
    if "hp_seed" in done and done["hp_seed"].notna().all():
        done["seed"] = done["hp_seed"]
    sweep = done["sweep"].fillna(Path(run_dir).name)
    done["run"] = sweep.astype(str) + "/" + done["trial_id"].astype(str)
    tests = [c for c in done.columns if c.startswith("test_")]
    runs = done[["trial_id", "run", "seed", "kept_epoch", *ALLOCATION, *tests]]
    sel = [c for c in epochs.columns if c.startswith("sel_")]
    per_epoch = epochs[epochs["stage"] == "prune"][["trial_id", "epoch", *sel]]
    rows = per_epoch.merge(runs, on="trial_id", how="inner")
    rows.loc[rows["epoch"] != rows["kept_epoch"], tests] = np.nan
    return rows.drop(columns=["trial_id", "kept_epoch"]).reset_index(drop=True)


# --- the replay ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReplayEvent:
    """One reported trial-epoch of a replay, and what the sweep recommends after it."""

    trial_epochs: int
    """Epochs reported by all trials so far (the cost), this one included."""
    time: int
    """When it was reported, in epochs since the sweep started (every epoch takes one unit)."""
    trial: int
    """The reporting trial's place in proposal order (0: the first proposed)."""
    trial_id: str
    epoch: int
    allocation: dict[str, float]
    """The reporting trial's allocation (`s_*` keys)."""
    value: float
    """The selection metric it reported for this epoch."""
    status: str
    """`running`, `finished` (its last epoch) or `early_stopped` (stopped by the scheduler)."""
    recommended: dict[str, float] | None
    """The best finished trial's allocation by its final selection metric (the first to finish
    among equals), as the sweep's summary ranks them; once a confirmation run (`search.confirm`)
    has finished, the confirmed allocation of best mean over its finished re-runs; None before
    any trial finished."""
    quality: float
    """The recommendation's true quality (%), NaN when there is none."""
    regret: float
    """The table's best true quality at the sweep's budgets minus `quality` (points)."""
    confirm_of: int | None = None
    """For a confirmation run (`search.confirm`), the place of the trial it re-runs."""
    front: tuple[dict[str, float], ...] = ()
    """With several `search.metric`s: the allocations of the finished trials that no other
    finished trial dominates on those metrics (what `tickets pareto` would show), in
    proposal order; empty for a single metric."""


@dataclass
class _Trial:
    trial_id: str
    number: int
    allocation: dict[str, float]
    values: np.ndarray  # epochs × metrics, what it reports
    epochs: int
    epoch: int = 0
    config: dict[str, Any] | None = None  # what a scheduler reads (ConfirmingASHA: confirm_of)
    rank: float = 0.0  # the draw of its seed's deviation


def replay(cfg: Any, table: ReferenceTable, *, concurrency: int, seed: int,
           max_trial_epochs: int | None = None, sizes: Mapping[str, int] | None = None,
           noise: bool = True) -> list[ReplayEvent]:  # fmt: skip
    """Replay the sweep of `cfg` (a `RunConfig`) against `table`: its searcher and scheduler
    as `tickets search` builds them, `search.searcher` seeded with `seed` (which also seeds the
    noise), `concurrency` workers. A trial reports the table's seed-mean selection metrics at
    its allocation plus (`noise`) the deviation of one seed, drawn per trial. Ends after
    `search.num_samples` trials (the grid: its own end) or `max_trial_epochs` trial-epochs.
    `sizes`: the model's group sizes (default: read from `pruning.checkpoint`). Stage 2 only
    (a stage-3 block's epochs are not replayed); warm starts (`search.warm_start`) neither.
    With `search.confirm` the re-runs follow as in a sweep, each with the deviation of the
    table's next run after its source's (seed + j: the j-th next, wrapping around), so a
    re-run is another seed than the trial it confirms wherever the table has more than one."""
    from ray.tune.schedulers import TrialScheduler
    from ray.tune.search import ConcurrencyLimiter, Searcher

    from search.dry_run import model_sizes, sweep_budgets
    from search.results import CONFIRM_KEY
    from search.study import TIME_ATTR, open_study
    from search.tuner import build_scheduler, build_searcher, with_confirmation

    if cfg.pruning is None or cfg.search is None:
        raise ValueError("the config needs 'pruning:' and 'search:' blocks")
    metric, mode = cfg.search.metrics[0], cfg.search.modes[0]
    for m in cfg.search.metrics:
        if m not in table.metrics and m != PARAMS:
            raise ValueError(f"search.metric {m!r} is neither in the reference table "
                             f"({', '.join(table.metrics)}) nor {PARAMS}")  # fmt: skip
    if metric == PARAMS:
        raise ValueError(f"the first search.metric must be a selection metric, not {PARAMS}")
    multi = len(cfg.search.metrics) > 1
    if multi and cfg.search.confirm is not None:
        raise ValueError("replay confirms single-objective sweeps only (search.confirm)")
    search = cfg.search.model_copy(update={"seed": seed, "max_concurrent_trials": concurrency})
    cfg = cfg.model_copy(update={"search": search}).resolved()
    sizes = dict(sizes) if sizes is not None else model_sizes(cfg.pruning.checkpoint)
    budgets = sweep_budgets(cfg)[0]
    best = table.best_quality(budgets)
    rng = np.random.default_rng(seed)
    # What a trial reports every epoch: the selection metrics (test metrics come at its end).
    column = {m: i for i, m in enumerate(table.metrics) if m.startswith("sel_")}
    sign = 1.0 if mode == "max" else -1.0
    signs = np.array([1.0 if m == "max" else -1.0 for m in cfg.search.modes])

    import optuna

    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # not a line per told trial
    # The study lives in a throw-away run directory, as a real sweep's does in its own; in
    # memory where the system has a tmpfs: SQLite syncs every commit, ~10 ms each on a disk.
    shm = Path("/dev/shm")
    where = str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None
    with tempfile.TemporaryDirectory(prefix="tickets-replay-", dir=where) as tmp:
        run_dir = Path(tmp) / "replay"
        run_dir.mkdir()
        try:
            if search.searcher != "grid":  # as run_search: the study exists before the searcher
                open_study(run_dir, run_dir.name, search.metrics, search.modes)
            searcher = build_searcher(cfg, sizes, run_dir)
            num_samples = searcher.max_trials() if search.searcher == "grid" else search.num_samples
            searcher, num_samples = with_confirmation(cfg, searcher, num_samples)
            by_id: dict[str, _Trial] = {}
            confirmed: dict[str, list[float]] = {}  # search trial id -> its re-runs' values
            limiter = ConcurrencyLimiter(searcher, max_concurrent=concurrency)
            scheduler = build_scheduler(cfg)
            events: list[ReplayEvent] = []
            heap: list[tuple[int, int, _Trial]] = []  # (time of its next report, order, trial)
            order = itertools.count()
            created, finished_search = 0, False
            recommended: tuple[float, dict[str, float]] | None = None
            done: list[tuple[np.ndarray, _Trial]] = []  # finished search trials' oriented values
            front: tuple[dict[str, float], ...] = ()
            cost = 0

            def start(now: int) -> None:
                """Ask for trials while a worker is free (Tune's SearchGenerator)."""
                nonlocal created, finished_search
                while len(heap) < concurrency and created < num_samples and not finished_search:
                    trial_id = f"replay_{created:05d}"
                    config = limiter.suggest(trial_id)
                    if config == Searcher.FINISHED:
                        finished_search = True
                    if config is None or finished_search:
                        return
                    allocation = _allocation(config)
                    epochs = int(config.get("epochs", cfg.pruning.epochs))
                    if table.epochs[:epochs] != list(range(1, epochs + 1)):
                        raise ValueError(f"a trial runs {epochs} epochs; the reference table "
                                         f"has epochs {table.epochs}")  # fmt: skip
                    curve = table.curve(allocation).to_numpy()
                    draw = rng.random()  # drawn whether or not used: one stream per seed
                    source = by_id.get(config.get(CONFIRM_KEY, ""))
                    if source is not None:  # a fresh seed: the next runs after the source's
                        fresh = int(config["seed"]) - cfg.pruning.seed
                        runs = table.runs(allocation)
                        draw = (source.rank + fresh / runs) % 1.0
                    if noise:
                        curve = curve + table.deviation(allocation, draw)
                    trial = _Trial(trial_id, created, allocation, curve[:epochs], epochs,
                                   config={k: v for k, v in config.items() if k == CONFIRM_KEY},
                                   rank=draw)  # fmt: skip
                    by_id[trial_id] = trial
                    scheduler.on_trial_add(None, trial)
                    heapq.heappush(heap, (now + 1, next(order), trial))
                    created += 1

            def end(trial: _Trial, result: dict[str, Any]) -> None:
                """Tune's stop_trial: the scheduler, then the searcher, see the last result."""
                scheduler.on_trial_complete(None, trial, result)
                limiter.on_trial_complete(trial.trial_id, result=result)

            start(0)
            while heap and (max_trial_epochs is None or cost < max_trial_epochs):
                now, _, trial = heapq.heappop(heap)
                trial.epoch += 1
                cost += 1
                row = trial.values[trial.epoch - 1]
                result = {TIME_ATTR: trial.epoch, "stage": "prune", "epoch": trial.epoch,
                          "training_iteration": trial.epoch, "trial_id": trial.trial_id,
                          **{m: float(row[i]) for m, i in column.items()}}  # fmt: skip
                status = "running"
                if scheduler.on_trial_result(None, trial, result) == TrialScheduler.STOP:
                    status = "early_stopped"
                    end(trial, result)
                else:
                    limiter.on_trial_result(trial.trial_id, result)
                    if trial.epoch == trial.epochs:
                        status = "finished"
                        final = _final(trial, column, TIME_ATTR)
                        final[PARAMS] = remaining_params(sizes, _groups(trial.allocation))
                        if scheduler.on_trial_result(None, trial, final) != TrialScheduler.STOP:
                            limiter.on_trial_result(trial.trial_id, final)
                        end(trial, final)  # Tune's duplicate last result, `done`
                        value = final[metric]
                        source = by_id.get((trial.config or {}).get(CONFIRM_KEY, ""))
                        if source is not None:
                            # after confirmation: the best by the mean of its fresh seeds
                            confirmed.setdefault(source.trial_id, []).append(value)
                            means = {t: float(np.mean(v)) for t, v in confirmed.items()}
                            top = max(means, key=lambda t: sign * means[t])
                            recommended = (means[top], by_id[top].allocation)
                        elif not confirmed:
                            better = recommended is None or sign * value > sign * recommended[0]
                            if math.isfinite(value) and better:
                                recommended = (value, trial.allocation)
                            if multi:
                                values = [final[m] for m in cfg.search.metrics]
                                done.append((signs * np.array(values, dtype=float), trial))
                                front = _front(done)
                    else:
                        heapq.heappush(heap, (now + 1, next(order), trial))
                quality = table.true_quality(recommended[1]) if recommended else math.nan
                events.append(ReplayEvent(
                    trial_epochs=cost, time=now, trial=trial.number, trial_id=trial.trial_id,
                    epoch=trial.epoch, allocation=dict(trial.allocation),
                    value=result[metric], status=status,
                    recommended=dict(recommended[1]) if recommended else None,
                    quality=quality, regret=best - quality,
                    confirm_of=by_id[trial.config[CONFIRM_KEY]].number
                    if trial.config and CONFIRM_KEY in trial.config else None,
                    front=front))  # fmt: skip
                if status != "running":
                    start(now)
        finally:
            optuna.logging.set_verbosity(level)
    return events


def _groups(allocation: Mapping[str, float]) -> dict[str, float]:
    return {"language": allocation["s_language"], "visual": allocation["s_visual"],
            "cross": allocation["s_cross"]}  # fmt: skip


def _front(done: Sequence[tuple[np.ndarray, _Trial]]) -> tuple[dict[str, float], ...]:
    """The allocations of the trials (oriented values: larger is better) that no other
    dominates, in proposal order; NaN values dominate nothing and are never on the front."""
    ok = [(v, t) for v, t in done if np.isfinite(v).all()]
    kept = [t for v, t in ok if not any((w >= v).all() and (w > v).any() for w, _ in ok)]
    return tuple(dict(t.allocation) for t in sorted(kept, key=lambda t: t.number))


def _final(trial: _Trial, column: Mapping[str, int], time_attr: str) -> dict[str, Any]:
    """The last report of a trial that ran to its end (`search.trainable.run_trial`): the kept
    epoch's selection metrics, `trial_complete`."""
    kept = int(np.nanargmax(trial.values[:, column[KEEP_METRIC]]))
    row = trial.values[kept]
    return {time_attr: trial.epochs, "trial_complete": True, "kept_epoch": kept + 1,
            "training_iteration": trial.epochs + 1, "trial_id": trial.trial_id,
            **{m: float(row[i]) for m, i in column.items()}}  # fmt: skip


def proposals(events: Sequence[ReplayEvent]) -> list[dict[str, float]]:
    """The allocations the replayed searcher proposed, in proposal order (trials that
    reported at least one epoch)."""
    seen: dict[int, dict[str, float]] = {}
    for event in events:
        seen.setdefault(event.trial, event.allocation)
    return [seen[k] for k in sorted(seen)]


def events_frame(events: Sequence[ReplayEvent]) -> pd.DataFrame:
    """The events as a table: the allocations flattened to `s_*` and `rec_s_*` columns."""
    rows = []
    for event in events:
        row = asdict(event)
        row.update(row.pop("allocation"))
        rec = row.pop("recommended") or {}
        row.update({f"rec_{k}": rec.get(k, math.nan) for k in ALLOCATION})
        rows.append(row)
    return pd.DataFrame(rows)
