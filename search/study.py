"""The sweep's Optuna study, `RUN_DIR/study.db`, in sparsities (DESIGN §6).

Every trial of the study carries as user attributes its real allocation (`s_language`,
`s_visual`, `s_cross`, `s_overall`), Ray's `trial_id`, and once it ended `remaining_params`,
`kept_epoch`, `early_stopped` and the kept epoch's test metrics (`test_overall`, ...); its
intermediate values are the selection metric keyed by epoch, and the study names its metrics.
A grid sweep, which proposes without Optuna, records its trials in a study of the same shape
(:class:`GridStudyRecorder`), so optuna-dashboard shows a grid and an Optuna sweep side by side.
"""

from __future__ import annotations

import json
import math
import threading
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
from ray import tune
from ray.tune.search.optuna import OptunaSearch

from search.driver import RUN_DIRS, current_run_dir
from search.results import CONFIRM_KEY, NUMBER_KEY
from search.space import distributions, unit_coordinates

STUDY_FILE = "study.db"
TIME_ATTR = "epochs_done"  # as search.trainable reports it (not imported: that pulls in torch)
ALLOCATION_ATTRS = {"sparsity": "s_overall", "language": "s_language", "visual": "s_visual",
                    "cross": "s_cross"}  # fmt: skip
"""Trial config key -> the user attribute that holds it."""
END_KEYS = ("remaining_params", "kept_epoch")
END_PREFIXES = ("test_", "realised_")


class StudyStorage(optuna.storages.RDBStorage):
    """The sweep's SQLite study, `RUN_DIR/study.db`, that Tune's pickles of the searcher find
    again where the sweep now is: unpickled in a process that registered the sweep in
    `RUN_DIRS` (a resume of a sweep copied, moved or fetched from URI storage), it opens that
    run directory's study instead of the path it was started with."""

    def __init__(self, run_dir: Path) -> None:
        self.sweep = Path(run_dir).name
        super().__init__(f"sqlite:///{Path(run_dir) / STUDY_FILE}")

    def __setstate__(self, state: dict[Any, Any]) -> None:
        moved = RUN_DIRS.get(state.get("sweep", ""))
        if moved is not None:
            state = {**state, "url": f"sqlite:///{moved / STUDY_FILE}"}
        super().__setstate__(state)


class PicklableNSGAIISampler(optuna.samplers.NSGAIISampler):
    """NSGA-II as Optuna has it, picklable: Tune pickles the searcher (with its sampler) when
    the sweep starts and at every experiment snapshot, and Optuna 5.1's genetic samplers hold a
    `threading.Lock` for their generation cache, which cannot be pickled. The lock is left out
    of the pickle and a new one made on unpickling; the cache itself travels."""

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_thread_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._thread_lock = threading.Lock()


def directions(modes: Sequence[str]) -> list[str]:
    return ["minimize" if m == "min" else "maximize" for m in modes]


def open_study(run_dir: Path, name: str, metrics: Sequence[str],
               modes: Sequence[str]) -> optuna.Study:  # fmt: skip
    """The study `name` (the sweep's `search.name`) in `run_dir/study.db`, created if new, its
    objectives named after `metrics`."""
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # not a line per trial on the driver
    try:
        study = optuna.create_study(storage=StudyStorage(run_dir), study_name=name,
                                    directions=directions(modes), load_if_exists=True)  # fmt: skip
    finally:
        optuna.logging.set_verbosity(level)
    if study.metric_names is None:
        with warnings.catch_warnings():  # experimental since Optuna 3.2, still in 5
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(list(metrics))
    return study


def start_attrs(trial_id: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """The user attributes a trial has from its start: allocation and Ray's trial id."""
    attrs: dict[str, Any] = {"trial_id": trial_id}
    for key, attr in ALLOCATION_ATTRS.items():
        if isinstance(config.get(key), int | float):
            attrs[attr] = float(config[key])
    return attrs


def end_attrs(result: Mapping[str, Any] | None) -> dict[str, Any]:
    """The user attributes of an ended trial, from its last result: weights kept, the kept
    epoch, its test metrics and realised sparsities, whether it ended early."""
    result = result or {}
    attrs: dict[str, Any] = {"early_stopped": not result.get("trial_complete", False)}
    for key, value in result.items():
        if not (key in END_KEYS or key.startswith(END_PREFIXES)):
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if math.isfinite(value):
            attrs[key] = int(value) if key in END_KEYS else float(value)
    return attrs


def epoch_values(result: Mapping[str, Any] | None, metric: str) -> dict[int, float]:
    """Selection metric per stage-2 epoch, from a result's `history_json` (`sel_overall` ->
    each record's `selection.overall`)."""
    text = (result or {}).get("history_json")
    if not isinstance(text, str) or not metric.startswith("sel_"):
        return {}
    out = {}
    for record in json.loads(text):
        value = record.get("selection", {}).get(metric.removeprefix("sel_"))
        if isinstance(value, int | float) and math.isfinite(value):
            out[int(record["epoch"])] = float(value)
    return out


def _set_attrs(ot_trial: Any, attrs: Mapping[str, Any]) -> None:
    for key, value in attrs.items():
        ot_trial.set_user_attr(key, value)


class AllocationSearch(OptunaSearch):
    """OptunaSearch that records each trial's sparsities, Ray trial id and test metrics in the
    study, reports the selection metric keyed by epoch, tells Optuna a trial that ended early
    (no `trial_complete` in its last result: stopped by ASHA) as PRUNED instead of COMPLETE
    with its early, worse value, and comes back from a resume in step with the study on disk."""

    def suggest(self, trial_id: str) -> dict | None:
        """OptunaSearch's proposal plus the number of its Optuna trial (`NUMBER_KEY`): the trial's
        config carries it into the experiment state, and so into trials.parquet."""
        config = super().suggest(trial_id)
        ot_trial = self._ot_trials.get(trial_id)
        if isinstance(config, dict) and ot_trial is not None:
            _set_attrs(ot_trial, start_attrs(trial_id, config))
            config = {**config, NUMBER_KEY: ot_trial.number}
        return config

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self._completed_trials:  # told before a kill; see `restore`
            return
        if isinstance(self.metric, list) or "stage" not in result:
            return  # multi-objective studies take no intermediate values; the final report
        ot_trial = self._ot_trials.get(trial_id)
        value = result.get(self.metric)
        if ot_trial is not None and isinstance(value, int | float) and math.isfinite(value):
            ot_trial.report(float(value), int(result.get(TIME_ATTR, 0)))

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        if trial_id in self._completed_trials:
            return
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is not None and result:
            _set_attrs(ot_trial, end_attrs(result))
        if result and not error and not result.get("trial_complete") and ot_trial is not None:
            self._ot_study.tell(ot_trial, state=optuna.trial.TrialState.PRUNED)
            self._completed_trials.add(trial_id)
            return
        super().on_trial_complete(trial_id, result, error)

    def restore(self, checkpoint_path: str) -> None:
        """Load the searcher snapshot, then reconcile it with the study, which is written at
        every `tell` while the snapshot lags: a trial told finished after the last snapshot is
        re-run by Tune from its checkpoint but must not be reported to Optuna again (Optuna
        refuses to update a finished trial), and a trial asked for after the snapshot was never
        started by Tune, so it is marked FAIL instead of staying RUNNING in the study forever."""
        super().restore(checkpoint_path)
        states = {t.number: t.state for t in self._ot_study.get_trials(deepcopy=False)}
        known = set()
        for trial_id, ot_trial in self._ot_trials.items():
            known.add(ot_trial.number)
            if states.get(ot_trial.number, optuna.trial.TrialState.RUNNING).is_finished():
                self._completed_trials.add(trial_id)
        for number, state in states.items():
            if state == optuna.trial.TrialState.RUNNING and number not in known:
                self._ot_study.tell(number, state=optuna.trial.TrialState.FAIL)


class GridStudyRecorder(tune.Callback):
    """Records every ended trial of a grid sweep in the sweep's study as a trial with fixed
    parameters: the grid point in the unit coordinates an Optuna sweep of the same space uses,
    its values, intermediate values by epoch and the user attributes of :class:`AllocationSearch`.
    A trial recorded once (e.g. before a kill) is not recorded again."""

    def __init__(self, run_dir: Path, sizes: Mapping[str, int], bounds: tuple[float, float],
                 metrics: Sequence[str], modes: Sequence[str]) -> None:  # fmt: skip
        self.run_dir = Path(run_dir)
        self.name = self.run_dir.name  # the sweep's name: where it is started, its directory's
        self.sizes = dict(sizes)
        self.bounds = (float(bounds[0]), float(bounds[1]))
        self.metrics, self.modes = list(metrics), list(modes)

    def _study(self) -> optuna.Study:
        # The sweep where it is now (RUN_DIRS): a resume of a copied or fetched sweep.
        return open_study(current_run_dir(self.run_dir), self.name, self.metrics, self.modes)

    def _record(self, trial: Any, failed: bool) -> None:
        if CONFIRM_KEY in (trial.config or {}):
            return  # a confirmation run (search.confirm) is not a point of the grid
        study = self._study()
        # Recorded once; a failed trial that a resume retried is recorded again when it ends.
        if any(t.user_attrs.get("trial_id") == trial.trial_id
               and t.state != optuna.trial.TrialState.FAIL
               for t in study.get_trials(deepcopy=False)):  # fmt: skip
            return
        config, result = trial.config or {}, trial.last_result or {}
        s = float(config["sparsity"])
        params = unit_coordinates(s, self.sizes, float(config["language"]),
                                  float(config["visual"]), self.bounds)  # fmt: skip
        values = [result.get(m) for m in self.metrics]
        complete = not failed and all(
            isinstance(v, int | float) and math.isfinite(v) for v in values
        )
        stopped = complete and not result.get("trial_complete")
        if stopped:
            state = optuna.trial.TrialState.PRUNED
        elif complete:
            state = optuna.trial.TrialState.COMPLETE
        else:
            state = optuna.trial.TrialState.FAIL
        attrs = {**start_attrs(trial.trial_id, config), **end_attrs(result),
                 "grid_pass": config.get("grid_pass")}  # fmt: skip
        frozen = optuna.trial.create_trial(
            state=state,
            params=params,
            distributions=distributions([s], {}),
            values=[float(v) for v in values]
            if state == optuna.trial.TrialState.COMPLETE
            else None,  # fmt: skip
            intermediate_values=epoch_values(result, self.metrics[0]),
            user_attrs={k: v for k, v in attrs.items() if v is not None},
        )
        study.add_trial(frozen)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._record(trial, failed=False)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._record(trial, failed=True)


def study_links(run_dir: Path, name: str) -> dict[str, dict[str, Any]]:
    """Ray trial id -> {`number`, `warm_start`} from the study `name` of the sweep in `run_dir`
    (empty when it has none); a trial recorded twice (failed, then retried) maps to its last:
    what trials.parquet takes from the study for trials Tune's config does not number (the
    grid's) and for trials a warm start enqueued."""
    path = Path(run_dir) / STUDY_FILE
    if not path.is_file():
        return {}
    try:
        study = optuna.load_study(study_name=name, storage=f"sqlite:///{path}")
    except (KeyError, ValueError):  # no study of this name
        return {}
    links = {}
    for t in study.get_trials(deepcopy=False):
        trial_id = t.user_attrs.get("trial_id")
        if trial_id:
            links[str(trial_id)] = {"number": t.number,
                                    "warm_start": t.user_attrs.get("warm_start")}  # fmt: skip
    return links
