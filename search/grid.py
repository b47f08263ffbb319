"""The paper's coarse-to-fine grid (appendix C.4) as a Ray Tune searcher: the baseline of §6.

At overall sparsity s, two modules (language and visual) are traversed on a grid and the third
(cross) is solved from eq. 10; a point whose solved sparsity leaves ``bounds`` is dropped (the
paper's footnote 8 drops only values outside [0, 1]; here the run's bounds apply).

* **Coarse pass**: C.4 traverses "[10%, 30%, 50%, 70%, 90%] (i.e. step size of 20%)". The default
  grid is that lattice, ``coarse_step / 2 + k * coarse_step`` (every value within ``bounds``), on
  both axes; ``coarse_values`` replaces it with an explicit list.
* **Fine pass**: C.4 then traverses "the reduced range with a smaller step size of 5%". Here the
  range is the best coarse point ± ``fine_radius`` (default: one coarse step) on each axis, in
  ``fine_step`` steps centred on that point; values outside ``bounds``, infeasible points and
  points the coarse pass already ran are dropped. ``fine_step=None`` disables the fine pass.
* At s = 90% C.4 "directly" traverses 80%…98% in 2% steps: one pass, :func:`c4_settings`.

The fine pass depends on the coarse results, so the number of trials is not known in advance:
give the Tuner ``num_samples=searcher.max_trials()`` (an upper bound) and the searcher ends the
sweep by returning ``Searcher.FINISHED``. While coarse trials are still running, ``suggest``
returns ``None`` (Tune asks again later). Give ``metric`` and ``mode`` to the searcher itself: Tune
2.60 passes TuneConfig's to ``set_search_properties`` only when ``param_space`` is non-empty, and
``suggest`` refuses to start a two-pass grid without them.

The state is saved as JSON (Ray names the file ``searcher-state-*.pkl``; its content is JSON). A
resume must keep the ids of unfinished trials (``resume_unfinished=True``): a trial Tune skips
without telling the searcher would leave the fine pass waiting for it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from ray.tune.search import Searcher

from search.grid_plan import DECIMALS as _DECIMALS
from search.grid_plan import c4_settings, feasible, lattice, max_fine, neighbourhood, plan
from search.grid_plan import key as _key
from vqa.atomic import write_json

__all__ = ["COARSE", "DONE", "FINE", "FORMAT", "GridSearcher", "c4_settings", "lattice"]

FORMAT = "tickets.grid/1"
COARSE, FINE, DONE = "coarse", "fine", "done"


class GridSearcher(Searcher):
    """C.4's coarse-to-fine grid over (language, visual) with cross solved by eq. 10.

    Every suggested config is ``{"language", "visual", "cross", "sparsity": budget, "grid_pass":
    "coarse" | "fine", **extra}``. The fine pass is planned from the best finished coarse trial by
    ``metric``/``mode`` (errored trials and trials without a finite metric are ignored).
    """

    def __init__(
        self,
        sizes: Mapping[str, int],
        budget: float,
        bounds: tuple[float, float] = (0.0, 0.99),
        metric: str | None = None,
        mode: str | None = None,
        coarse_step: float = 0.2,
        fine_step: float | None = 0.05,
        fine_radius: float | None = None,
        extra: Mapping[str, Any] | None = None,
        coarse_values: Sequence[float] | None = None,
    ) -> None:
        if mode is not None and mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        super().__init__(metric=metric, mode=mode)
        # The points are planned Ray-free (search.grid_plan), so a dry run can print them.
        self._settings, coarse = plan(sizes, budget, bounds, coarse_step=coarse_step,
                                      fine_step=fine_step, fine_radius=fine_radius, extra=extra,
                                      coarse_values=coarse_values)  # fmt: skip
        self._points = [_point(p, COARSE) for p in coarse]
        self._next = 0  # index in _points of the next point to hand out
        self._pass = COARSE
        self._trials: dict[str, dict[str, Any]] = {}  # id -> {point, done, value, error}
        self._max_fine: int | None = None

    # --- Ray Tune API ---------------------------------------------------------------------------

    def set_search_properties(
        self, metric: str | None, mode: str | None, config: dict, **spec: Any
    ) -> bool:
        """Take ``metric`` and ``mode`` from the Tuner where the searcher was given none."""
        if self._metric is None and metric:
            self._metric = metric
        if self._mode is None and mode:
            if mode not in ("min", "max"):
                raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
            self._mode = mode
        return True

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        """The next grid point as a config; ``None`` while the coarse pass is still running;
        ``Searcher.FINISHED`` once every point is handed out."""
        if self._settings["fine_step"] is not None and (self._metric is None or self._mode is None):
            # Fail before the coarse pass runs, not after: without them no fine pass can be planned.
            raise ValueError(
                "GridSearcher needs metric and mode to plan its fine pass: pass them to "
                "GridSearcher (Tune forwards TuneConfig's only when param_space is non-empty)"
            )
        if self._pass == COARSE and self._next == len(self._points) and self._coarse_done():
            self._plan_fine()
        if self._next < len(self._points):
            index = self._next
            self._next += 1
            self._trials[trial_id] = {"point": index, "done": False, "value": None, "error": False}
            return self._config(index)
        if self._pass == COARSE and self._settings["fine_step"] is not None:
            return None  # the fine pass needs every coarse result
        self._pass = DONE
        return Searcher.FINISHED

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        """Record the trial's final ``metric`` value (none if it errored or did not report it)."""
        trial = self._trials.get(trial_id)
        if trial is None:
            # A trial Tune restarted under a new id (e.g. restart_errored): match it by its config.
            index = self._point_of(result)
            if index is None:
                return
            trial = self._trials[trial_id] = {"point": index}
        trial["done"] = True
        trial["error"] = bool(error)
        trial["value"] = None if error else self._value(result)

    def save(self, checkpoint_path: str) -> None:
        """Write the settings, the planned points and every trial's outcome as JSON."""
        write_json(checkpoint_path, self.get_state())

    def restore(self, checkpoint_path: str) -> None:
        """Replace this searcher's settings and state with those saved at ``checkpoint_path``."""
        with open(checkpoint_path, encoding="utf-8") as f:
            self.set_state(json.load(f))

    def get_state(self) -> dict[str, Any]:
        """The searcher as plain JSON data."""
        return {
            "format": FORMAT,
            "settings": self._settings,
            "metric": self._metric,
            "mode": self._mode,
            "pass": self._pass,
            "next": self._next,
            "points": self._points,
            "trials": self._trials,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Load what :meth:`get_state` returned."""
        if state.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} searcher state (format {state.get('format')!r})")
        self._settings = state["settings"]
        self._metric = state["metric"]
        self._mode = state["mode"]
        self._pass = state["pass"]
        self._next = int(state["next"])
        self._points = state["points"]
        self._trials = state["trials"]
        self._max_fine = None

    # --- inspection -----------------------------------------------------------------------------

    @property
    def coarse_points(self) -> list[dict[str, Any]]:
        """The coarse pass's configs, in the order they are handed out."""
        return [self._config(i) for i, p in enumerate(self._points) if p["grid_pass"] == COARSE]

    @property
    def fine_points(self) -> list[dict[str, Any]]:
        """The fine pass's configs (empty until the coarse pass has finished)."""
        return [self._config(i) for i, p in enumerate(self._points) if p["grid_pass"] == FINE]

    @property
    def grid_pass(self) -> str:
        """``"coarse"``, ``"fine"`` or ``"done"`` (every point handed out)."""
        return self._pass

    def max_trials(self) -> int:
        """An upper bound on the trials of the sweep: the coarse points plus the largest fine pass
        any coarse point could lead to. Use it as the Tuner's ``num_samples``."""
        if self._max_fine is None:
            centres = [p for p in self._points if p["grid_pass"] == COARSE]
            self._max_fine = max_fine(self._settings, centres)
        return len(self._coarse_keys()) + self._max_fine

    # --- planning -------------------------------------------------------------------------------

    def _feasible(
        self, languages: Sequence[float], visuals: Sequence[float]
    ) -> list[dict[str, float]]:
        """Every (language, visual) in the product whose solved cross lies in bounds."""
        return feasible(self._settings, languages, visuals)

    def _neighbourhood(self, centre: Mapping[str, Any], skip: set[tuple]) -> list[dict]:
        """The fine points around ``centre``: ± fine_radius in fine_step steps, feasible, not in
        ``skip``."""
        return neighbourhood(self._settings, centre, skip)

    def _plan_fine(self) -> None:
        """Append the fine pass around the best coarse result and switch to it."""
        best = self._best_coarse()
        if best is not None:
            skip = {_key(p) for p in self._points}
            self._points += [_point(p, FINE) for p in self._neighbourhood(best, skip)]
        self._pass = FINE

    def _best_coarse(self) -> dict[str, Any] | None:
        """The coarse point with the best finite metric value (the first one on ties)."""
        scored = [
            (t["value"], t["point"])
            for t in self._trials.values()
            if t["value"] is not None and self._points[t["point"]]["grid_pass"] == COARSE
        ]
        if not scored:
            return None
        sign = 1.0 if self._mode == "max" else -1.0
        _, index = max(scored, key=lambda vi: (sign * vi[0], -vi[1]))
        return self._points[index]

    def _coarse_done(self) -> bool:
        done = {t["point"] for t in self._trials.values() if t["done"]}
        return all(i in done for i, p in enumerate(self._points) if p["grid_pass"] == COARSE)

    def _coarse_keys(self) -> set[tuple]:
        return {_key(p) for p in self._points if p["grid_pass"] == COARSE}

    # --- helpers --------------------------------------------------------------------------------

    def _config(self, index: int) -> dict[str, Any]:
        p = self._points[index]
        return {
            "language": p["language"],
            "visual": p["visual"],
            "cross": p["cross"],
            "sparsity": self._settings["budget"],
            "grid_pass": p["grid_pass"],
            **self._settings["extra"],
        }

    def _value(self, result: Mapping[str, Any] | None) -> float | None:
        if not result or self._metric is None or self._metric not in result:
            return None
        try:
            value = float(result[self._metric])
        except (TypeError, ValueError):
            return None
        # NaN or inf would make the best ill-defined and the saved state invalid JSON.
        return value if math.isfinite(value) else None

    def _point_of(self, result: Mapping[str, Any] | None) -> int | None:
        """The index of the planned point whose allocation ``result``'s config carries, if any."""
        if not result:
            return None
        config = result.get("config")
        if not isinstance(config, Mapping):
            # Tune flattens the final result: the config arrives as "config/<key>" entries.
            config = {k[len("config/") :]: v for k, v in result.items() if k.startswith("config/")}
        try:
            key = (round(float(config["language"]), _DECIMALS),
                   round(float(config["visual"]), _DECIMALS))  # fmt: skip
        except (KeyError, TypeError, ValueError):
            return None
        for i, p in enumerate(self._points[: self._next]):
            if _key(p) == key:
                return i
        return None


def _point(solved: Mapping[str, float], grid_pass: str) -> dict[str, Any]:
    return {
        "language": solved["language"],
        "visual": solved["visual"],
        "cross": solved["cross"],
        "grid_pass": grid_pass,
    }
