"""Confirmation of a sweep's winners (`search.confirm: {top: K, seeds: N}`).

A sweep's best trial by selection is partly the luckiest: its one training seed may have given
it a point or two over an allocation that is as good. After the search, the K best finished
trials by the first metric are re-run with N fresh training seeds each (`pruning.seed` + 1, ...,
+ N) at the same allocation and hyperparameters, and the allocations are ranked by the seed mean
of those fresh runs alone (the search run was selected for being high, so it would bias the mean
up). The confirmation runs are trials of the same Tune experiment: a resume continues them, and
trials.parquet holds them with `confirm_of` naming the trial they confirm and `seed` their seed.
They are never told to the study, and ASHA does not stop them.
"""

from __future__ import annotations

import base64
import json
import math
import os
import tempfile
from typing import Any

import pandas as pd
from ray.tune.schedulers import ASHAScheduler, TrialScheduler
from ray.tune.search import Searcher

from search.results import CONFIRM_KEY, NUMBER_KEY

FORMAT = "tickets-confirm-1"


class ConfirmingSearcher(Searcher):
    """`inner`'s first `search_trials` proposals, then, once every one of them has ended, `seeds`
    re-runs of each of the `top` best finished ones (by `metric`, the first if several; `mode`)
    with seeds `base_seed` + 1 ... + `seeds`, then `Searcher.FINISHED`."""

    def __init__(
        self,
        inner: Searcher,
        *,
        search_trials: int,
        top: int,
        seeds: int,
        base_seed: int,
        metric: str | list[str],
        mode: str | list[str],
    ) -> None:
        first_metric = metric if isinstance(metric, str) else metric[0]
        first_mode = mode if isinstance(mode, str) else mode[0]
        super().__init__(metric=first_metric, mode=first_mode)
        self.inner = inner
        self.search_trials, self.top, self.seeds = int(search_trials), int(top), int(seeds)
        self.base_seed = int(base_seed)
        self._issued: dict[str, dict[str, Any]] = {}  # search trial id -> its config
        self._ended: dict[str, float | None] = {}  # search trial id -> value (None: not finished)
        self._inner_done = False
        self._queue: list[dict[str, Any]] | None = None  # confirmation configs not yet handed out
        self._confirming: set[str] = set()

    @property
    def total_trials(self) -> int:
        """Trials of the whole sweep at most: the search's, then every confirmation run."""
        return self.search_trials + self.top * self.seeds

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict,
                              **spec: Any) -> bool:  # fmt: skip
        return self.inner.set_search_properties(metric, mode, config, **spec)

    def suggest(self, trial_id: str) -> dict | str | None:
        if not self._inner_done and len(self._issued) < self.search_trials:
            config = self.inner.suggest(trial_id)
            if config == Searcher.FINISHED:
                self._inner_done = True
            elif config is None:
                return None
            else:
                self._issued[trial_id] = dict(config)
                return config
        self._inner_done = True
        if any(t not in self._ended for t in self._issued):
            return None  # the ranking needs every search trial's end
        if self._queue is None:
            self._queue = self._plan()
        if not self._queue:
            return Searcher.FINISHED
        self._confirming.add(trial_id)
        return self._queue.pop(0)

    def _plan(self) -> list[dict[str, Any]]:
        finished = [(v, t) for t, v in self._ended.items() if v is not None]
        finished.sort(key=lambda vt: vt[0], reverse=self._mode == "max")
        out = []
        for _, trial_id in finished[: self.top]:
            config = {k: v for k, v in self._issued[trial_id].items() if k != NUMBER_KEY}
            for j in range(1, self.seeds + 1):
                out.append({**config, "seed": self.base_seed + j, CONFIRM_KEY: trial_id})
        return out

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self._issued:
            self.inner.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:  # fmt: skip
        if trial_id not in self._issued:
            return
        self.inner.on_trial_complete(trial_id, result=result, error=error)
        value = (result or {}).get(self._metric)
        complete = not error and bool((result or {}).get("trial_complete"))
        ok = complete and isinstance(value, int | float) and math.isfinite(value)
        self._ended[trial_id] = float(value) if ok else None

    def get_state(self) -> dict[str, Any]:
        return {"format": FORMAT, "search_trials": self.search_trials, "top": self.top,
                "seeds": self.seeds, "base_seed": self.base_seed, "issued": self._issued,
                "ended": self._ended, "inner_done": self._inner_done, "queue": self._queue,
                "confirming": sorted(self._confirming), "metric": self._metric,
                "mode": self._mode}  # fmt: skip

    def set_state(self, state: dict[str, Any]) -> None:
        if state.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} searcher state (format {state.get('format')!r})")
        self.search_trials, self.top = state["search_trials"], state["top"]
        self.seeds, self.base_seed = state["seeds"], state["base_seed"]
        self._issued, self._ended = state["issued"], state["ended"]
        self._inner_done, self._queue = state["inner_done"], state["queue"]
        self._confirming = set(state["confirming"])
        self._metric, self._mode = state["metric"], state["mode"]

    def save(self, checkpoint_path: str) -> None:
        """This searcher's state and the inner searcher's own snapshot (its bytes, as base64), in
        one JSON file."""
        with tempfile.TemporaryDirectory() as tmp:
            inner_path = os.path.join(tmp, "inner")
            self.inner.save(inner_path)
            with open(inner_path, "rb") as f:
                inner = f.read()
        state = {**self.get_state(), "inner": base64.b64encode(inner).decode("ascii")}
        with open(checkpoint_path, "w", encoding="utf-8") as f:
            json.dump(state, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, encoding="utf-8") as f:
            saved = json.load(f)
        self.set_state(saved)
        with tempfile.TemporaryDirectory() as tmp:
            inner_path = os.path.join(tmp, "inner")
            with open(inner_path, "wb") as f:
                f.write(base64.b64decode(saved["inner"]))
            self.inner.restore(inner_path)


class ConfirmingASHA(ASHAScheduler):
    """ASHA that lets confirmation runs (`CONFIRM_KEY` in their config) train to their end and
    leaves them out of its rungs: they run after every search trial has ended."""

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        if CONFIRM_KEY in (getattr(trial, "config", None) or {}):
            return TrialScheduler.CONTINUE
        return super().on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        if CONFIRM_KEY in (getattr(trial, "config", None) or {}):
            return
        super().on_trial_complete(tune_controller, trial, result)


def confirmed(trials: pd.DataFrame, metric: str, mode: str) -> pd.DataFrame:
    """One row per confirmed allocation: the search trial (`trial_id`) and its sparsities, its
    search value (`search_<metric>`), the number of finished confirmation runs (`runs`), and the
    mean and std over them of `metric` and `test_overall`; ranked by the mean of `metric`."""
    if trials.empty or CONFIRM_KEY not in trials:
        return pd.DataFrame()
    runs = trials[trials[CONFIRM_KEY].notna() & (trials["status"] == "finished")]
    if runs.empty:
        return pd.DataFrame()
    values = [c for c in (metric, "test_overall") if c in runs]
    grouped = runs.groupby(CONFIRM_KEY)[values]
    stats = grouped.mean().add_suffix("_mean").join(grouped.std(ddof=1).add_suffix("_std"))
    stats["runs"] = runs.groupby(CONFIRM_KEY).size()
    search = trials.set_index("trial_id")
    keep = [c for c in ("s_language", "s_visual", "s_cross", "s_overall") if c in search]
    out = search.loc[stats.index, keep].join(stats)
    out[f"search_{metric}"] = search.loc[stats.index, metric]
    out = out.sort_values(f"{metric}_mean", ascending=mode == "min")
    return out.rename_axis("trial_id").reset_index()


def confirmed_text(trials: pd.DataFrame, metric: str, mode: str) -> str | None:
    """The summary's lines on the confirmed allocations, or None when there are none."""
    table = confirmed(trials, metric, mode)
    if table.empty:
        return None

    def pm(row: pd.Series, col: str) -> str:
        std = row.get(f"{col}_std")
        spread = f" ± {std:.2f}" if isinstance(std, float) and math.isfinite(std) else ""
        return f"{row[f'{col}_mean']:.2f}{spread}"

    lines = [f"confirmed with fresh training seeds (mean ± std, ranked by {metric}):"]
    for _, row in table.iterrows():
        test = f", test {pm(row, 'test_overall')}" if "test_overall_mean" in row else ""
        where = f"L {row['s_language']:.3f} / V {row['s_visual']:.3f} / X {row['s_cross']:.3f}"
        runs = f"over {int(row['runs'])} runs (search run {row[f'search_{metric}']:.2f})"
        lines.append(f"  {row['trial_id']}: {where}: {metric} {pm(row, metric)}{test} {runs}")
    return "\n".join(lines)
