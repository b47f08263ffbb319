"""`tickets search` and `tickets resume`: the Ray Tune sweep over allocations (DESIGN §6, §8).

A run directory (`<search.storage_path>/<name>`) holds Ray's experiment state and trials, plus
`tickets.yaml` (the resolved run config), `study.db` (the Optuna study: optuna-dashboard opens
it), `trials.parquet` and `epochs.parquet`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import os
import socket
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna
import pyarrow.fs
import ray
import yaml
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search import ConcurrencyLimiter, SearchGenerator
from ray.tune.stopper import Stopper

from search.config import RunConfig, dump_config
from search.confirm import ConfirmingASHA, ConfirmingSearcher
from search.driver import (
    ENDED,
    RUN_DIRS,
    driver_record,
    fit_noting_interrupt,
    mark_ended,
    mark_running,
)
from search.dry_run import check_before_writing, model_sizes, most_epochs, sweep_budgets
from search.pareto import SWEEP_REPORT, pareto_report
from search.progress import EpochLines
from search.remote import RunFilesUpload, check_storage, is_uri, upload_run_files
from search.results import (
    TRIAL_COLUMNS,
    ResultsCallback,
)
from search.run_files import (  # noqa: F401  (the old home of some: imported from here too)
    CONFIG_FILE,
    best_trials_text,
    collect,
    experiment_analysis,
    experiment_path,
    load_run,
    shared_columns,
    storage_paths,
    sweep_outcome,
    sweep_tables,
    total_trials,
    trial_dirname,
)
from search.space import make_space, startup_trials, uniform_points
from search.study import (  # noqa: F401  (StudyStorage, AllocationSearch: old sweeps' pickles)
    STUDY_FILE,
    AllocationSearch,
    GridStudyRecorder,
    PicklableNSGAIISampler,
    StudyStorage,
    open_study,
)
from search.trainable import TIME_ATTR, run_trial
from search.warm_start import WARM_FILE, WarmPoint, seed_study, warm_points, warm_rows
from vqa.atomic import atomic_path
from vqa.errors import InputError

# GPSampler fits its model inside the space function at the first suggest, so Ray's warning
# that the space function is slow (more than 1 s) is expected and would print on most trials.
warnings.filterwarnings("ignore", message="Define-by-run function passed in the `space`")


def _budgets(cfg: RunConfig) -> list[float]:
    return sweep_budgets(cfg)[0]


def build_searcher(cfg: RunConfig, sizes: dict[str, int], run_dir: Path,
                   warm: list[WarmPoint] | None = None):  # fmt: skip
    """The search algorithm of `search.searcher`, seeded, the uniform allocation first (of each
    budget whose uniform allocation is not among the warm-start points `warm`)."""
    search, bounds = cfg.search, tuple(cfg.pruning.bounds)
    budgets = _budgets(cfg)
    metric = search.metric if isinstance(search.metric, str) else list(search.metric)
    mode = search.mode if isinstance(search.mode, str) else list(search.mode)
    if search.searcher == "grid":
        from search.grid import GridSearcher

        return GridSearcher(sizes, budgets[0], bounds=bounds, metric=metric, mode=mode,
                            **search.grid.settings(budgets[0], bounds))  # fmt: skip
    startup = {"n_startup_trials": search.startup_trials
               or startup_trials(len(search.hyperparameters), len(budgets))}  # fmt: skip
    samplers = {
        "tpe": lambda: optuna.samplers.TPESampler(seed=search.seed, **startup),
        "gp": lambda: optuna.samplers.GPSampler(seed=search.seed, **startup),
        "nsga2": lambda: PicklableNSGAIISampler(seed=search.seed),
        "random": lambda: optuna.samplers.RandomSampler(seed=search.seed),
    }
    hps = {k: v.model_dump() for k, v in search.hyperparameters.items()}
    storage = StudyStorage(run_dir)
    points = uniform_points(sizes, budgets, bounds)
    if warm:  # a uniform point among them is told (trials) or evaluated (enqueue) already
        points = [p for p in points if not any(_same_point(p, w) for w in warm)]
    return AllocationSearch(
        space=make_space(sizes, budgets, bounds, hps),
        metric=metric,
        mode=mode,
        points_to_evaluate=points,
        sampler=samplers[search.searcher](),
        study_name=run_dir.name,
        storage=storage,
    )


def with_confirmation(cfg: RunConfig, searcher: Any, num_samples: int) -> tuple[Any, int]:
    """(`searcher`, `num_samples`) with `search.confirm`'s re-runs after the search's
    `num_samples` trials (a `ConfirmingSearcher` and the total), unchanged without it."""
    search = cfg.search
    if search.confirm is None:
        return searcher, num_samples
    confirming = ConfirmingSearcher(searcher, search_trials=num_samples, top=search.confirm.top,
                                    seeds=search.confirm.seeds, base_seed=cfg.pruning.seed,
                                    metric=search.metric, mode=search.mode)  # fmt: skip
    return confirming, confirming.total_trials


def _same_point(point: dict[str, Any], warm: WarmPoint, tol: float = 1e-6) -> bool:
    """Whether a uniform point is a warm-start point of the same budget (the earlier sweep's
    uniform trial): an allocation mapped from another budget does not stand for this one's."""
    params = warm.params
    if not math.isclose(float(warm.row["s_overall"]), warm.allocation["sparsity"], abs_tol=1e-9):
        return False
    return all(abs(float(point[k]) - float(params.get(k, float("nan")))) <= tol
               for k in ("u_language", "u_visual")) and point.get("sparsity") == params.get(
        "sparsity")  # fmt: skip


def logger_callbacks(cfg: RunConfig) -> list[Any]:
    """Ray Tune's logger callbacks of `search.loggers`, and `json` always: Ray's
    ExperimentAnalysis and ResultGrid read each trial's result.json (Tune's automatic loggers
    are off for the sweeps this makes, see `_auto_loggers`)."""
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    out: list[Any] = []
    for name in dict.fromkeys(["json", *cfg.search.loggers]):
        if name == "csv":
            out.append(CSVLoggerCallback())
        elif name == "json":
            out.append(JsonLoggerCallback())
        elif name == "tensorboard":
            from ray.tune.logger import TBXLoggerCallback

            out.append(TBXLoggerCallback())
        elif name == "mlflow":
            from ray.air.integrations.mlflow import MLflowLoggerCallback

            out.append(MLflowLoggerCallback(experiment_name=cfg.search.name))
        elif name == "wandb":
            from ray.air.integrations.wandb import WandbLoggerCallback

            out.append(WandbLoggerCallback(project=cfg.search.name))
    return out


def build_scheduler(cfg: RunConfig):
    search = cfg.search
    if search.scheduler == "fifo":
        return FIFOScheduler()
    epochs = most_epochs(cfg)
    # max_t one past the longest trial's last epoch: ASHA stops a trial that reaches max_t, which
    # would cut off the final report (test metrics, `trial_complete`) that follows it, and with
    # a searched `epochs` a longer trial than `pruning.epochs` would be cut short.
    asha = ASHAScheduler if search.confirm is None else ConfirmingASHA
    return asha(time_attr=TIME_ATTR, metric=search.metrics[0], mode=search.modes[0],
                max_t=epochs + 1, grace_period=min(search.asha.grace_period, epochs),
                reduction_factor=search.asha.reduction_factor)  # fmt: skip


def _base(cfg: RunConfig) -> dict[str, Any]:
    """What every trial shares: plain data, stored once per node by `tune.with_parameters`."""
    dumped = cfg.resolved().model_dump(mode="json")
    base = {"data": dumped["data"], "model": dumped["model"], "pruning": dumped["pruning"],
            "hyperparameters": list(cfg.search.hyperparameters),
            "checkpoint_every": cfg.search.checkpoint_every}  # fmt: skip
    if cfg.stage3 is not None:
        base["stage3"] = dumped["stage3"]
    if cfg.search.failure.inject is not None:
        base["inject"] = dumped["search"]["failure"]["inject"]
        base["inject"]["ledger"] = str(storage_paths(cfg)[1] / cfg.search.name / "faults")
    return base


def _trainable(cfg: RunConfig):
    resources = {"cpu": cfg.search.resources.cpu, "gpu": cfg.search.resources.gpu}
    return tune.with_resources(tune.with_parameters(run_trial, base=_base(cfg)), resources)


def init_ray(cfg: RunConfig, address: str | None) -> None:
    """Join `address` (else RAY_ADDRESS, as under `ray job submit`), or start a local runtime
    with the dashboard off (or on 127.0.0.1). A cluster that cannot be reached within
    `search.connect_timeout_s`, or refuses us, is an `InputError`."""
    # num_to_keep=1 forces a snapshot after every checkpoint, which is what a resume wants;
    # Tune would warn about it on every epoch.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        join_cluster(address, cfg.search.connect_timeout_s)
    else:
        if cfg.search.dashboard and importlib.util.find_spec("aiohttp") is None:
            raise InputError('search.dashboard: the Ray dashboard needs pip install "ray[default]"')
        # "local": always a new runtime, never a stale one found in /tmp/ray.
        ray.init(address="local", include_dashboard=cfg.search.dashboard,
                 dashboard_host=cfg.search.dashboard_host, log_to_driver=False)  # fmt: skip


def _auto_loggers(own: bool) -> None:
    """Tune's automatic logger callbacks (csv, json, tensorboard) off for a sweep whose
    callbacks include the loggers of `search.loggers` (`own`), on for one started before that
    setting existed, whose saved callbacks hold none: a resume of it keeps Tune's loggers."""
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1" if own else "0"


def sweep_name(cfg: RunConfig, name: str | None) -> str:
    """The run name: `--name`, else `search.name`, else `search-<date>-<time>`."""
    if cfg.search is None:
        raise InputError("the config needs 'pruning:' and 'search:' blocks for tickets search")
    return name or cfg.search.name or time.strftime("search-%Y%m%d-%H%M%S")


def planned_run_dir(cfg: RunConfig, name: str) -> Path:
    """The run directory of `run_search(cfg, name, ...)`."""
    return storage_paths(cfg.resolved())[1] / name


def run_search(cfg: RunConfig, name: str | None, address: str | None,
               echo: Callable[[str], None] = print,
               stop: Stopper | None = None) -> Path:  # fmt: skip
    """Start a sweep; returns its run directory. `stop`: a Tune stopper (e.g. a benchmark's
    stop-at-target rule); a resume does not bring it back."""
    if cfg.pruning is None or cfg.search is None:
        raise InputError("the config needs 'pruning:' and 'search:' blocks for tickets search")
    cfg = cfg.resolved()
    name = sweep_name(cfg, name)
    cfg = cfg.model_copy(update={"search": cfg.search.model_copy(update={"name": name})})
    storage, local = storage_paths(cfg)
    run_dir = local / name
    if (run_dir / CONFIG_FILE).exists():
        raise InputError(f"{run_dir}: a sweep of this name exists; `tickets resume {run_dir}`")
    sizes = model_sizes(cfg.pruning.checkpoint)
    for b in _budgets(cfg):
        cfg.pruning.model_copy(update={"sparsity": b, "language": None, "visual": None,
                                       "cross": None}).sparsities(sizes)  # fmt: skip
    check_before_writing(cfg, sizes)  # loggers, the grid's plan
    warm, notes = warm_points(cfg, sizes, _budgets(cfg)) if cfg.search.warm_start else ([], [])
    if is_uri(storage):
        check_storage(storage, name)  # before anything is written, as the cluster below
    init_ray(cfg, address)  # before anything is written: a failed start leaves no run behind
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / CONFIG_FILE).write_text(dump_config(cfg))
    mark_running(run_dir)
    RUN_DIRS[name] = run_dir
    search = cfg.search
    if search.searcher != "grid":
        study = open_study(run_dir, name, search.metrics, search.modes)
        if warm:
            hps = {k: v.model_dump() for k, v in search.hyperparameters.items()}
            numbers = seed_study(study, warm, search.warm_start_as, _budgets(cfg), hps)
            if search.warm_start_as == "trials":
                with atomic_path(run_dir / WARM_FILE) as tmp:
                    keep = [*TRIAL_COLUMNS, *(f"hp_{h}" for h in search.hyperparameters),
                            *search.metrics]  # fmt: skip
                    warm_rows(warm, numbers, name, keep).to_parquet(tmp, index=False)
        for line in notes:
            echo(line)
    if is_uri(storage):
        upload_run_files(storage, name, run_dir)
    os.environ["TUNE_GLOBAL_CHECKPOINT_S"] = str(cfg.search.snapshot_s)
    _auto_loggers(own=True)
    searcher = build_searcher(cfg, sizes, run_dir, warm)
    # The grid ends the sweep itself (Searcher.FINISHED); num_samples only has to be large enough.
    num_samples = searcher.max_trials() if search.searcher == "grid" else search.num_samples
    searcher, num_samples = with_confirmation(cfg, searcher, num_samples)
    limited = ConcurrencyLimiter(searcher, max_concurrent=search.max_concurrent_trials)
    tuner = tune.Tuner(
        _trainable(cfg),
        tune_config=tune.TuneConfig(
            search_alg=SweepGenerator(limited, name),
            scheduler=build_scheduler(cfg),
            num_samples=num_samples,
            reuse_actors=True,
            trial_dirname_creator=trial_dirname,
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=storage,
            callbacks=_callbacks(cfg, run_dir, sizes, storage),
            stop=stop,
            # The trials' own files (their stage-2 logs) reach RUN_DIR/trial_<id>/ too.
            sync_config=tune.SyncConfig(sync_artifacts=True),
            failure_config=tune.FailureConfig(max_failures=search.failure.max_retries),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            verbose=0,
        ),
    )
    _fit(tuner, cfg, run_dir, echo, stop)
    return run_dir


def _callbacks(cfg: RunConfig, run_dir: Path, sizes: dict[str, int], storage: str) -> list[Any]:
    """The sweep's Tune callbacks: the grid's study first (the results callback reads it), then
    the Parquet files, the progress lines, the configured loggers, the upload of the run files
    (last: after the files it uploads are written)."""
    search = cfg.search
    out: list[Any] = []
    if search.searcher == "grid":
        out.append(GridStudyRecorder(run_dir, sizes, tuple(cfg.pruning.bounds), search.metrics,
                                     search.modes))  # fmt: skip
    out += [
        ResultsCallback(run_dir, list(cfg.search.hyperparameters), shared_columns(cfg)),
        EpochLines(cfg),
        *logger_callbacks(cfg),
    ]
    if is_uri(storage):
        out.append(RunFilesUpload(storage, cfg.search.name, run_dir))
    return out


EXTEND_TO: dict[str, int] = {}
"""Sweep name -> the trial count a `tickets resume ... search.num_samples=N` asks for."""


def _growable(tuner: tune.Tuner) -> bool:
    """Whether the restored sweep's search algorithm is a SweepGenerator (sweeps started before
    it existed saved a plain one, which restores its old trial count)."""
    internal = getattr(tuner, "_local_tuner", None)
    if internal is None:  # a Ray Client's tuner lives on the cluster: nothing to look at here
        return True
    config = getattr(internal, "_tune_config", None)
    return isinstance(getattr(config, "search_alg", None), SweepGenerator)


class SweepGenerator(SearchGenerator):
    """Tune's SearchGenerator whose trial count a resume can raise: Tune restores the count it
    saved, and `EXTEND_TO` (set by `resume_search` in the driver's process) lifts it."""

    def __init__(self, searcher: Any, sweep: str) -> None:
        super().__init__(searcher)
        self.sweep = sweep

    def set_state(self, state: dict) -> None:
        super().set_state(state)
        wanted = EXTEND_TO.get(self.sweep)
        if wanted is not None and wanted > self._total_samples:
            self._total_samples = wanted
        self._follow_moved_run_dir()

    def _follow_moved_run_dir(self) -> None:
        """New trials get the storage of the experiment saved in this generator's state, which
        names where the sweep was started: on local storage, point it at the run directory the
        resume is of (`RUN_DIRS`), so the trials a grown copy adds are written there, not
        into the original."""
        moved = RUN_DIRS.get(self.sweep)
        spec = getattr(self._experiment, "spec", None)
        storage = spec.get("storage") if isinstance(spec, dict) else None
        if moved is None or storage is None:
            return
        if not isinstance(storage.storage_filesystem, pyarrow.fs.LocalFileSystem):
            return  # URI storage stays where it is; only the run files are fetched
        if Path(storage.storage_fs_path) / storage.experiment_dir_name == moved:
            return
        from ray.train._internal.storage import StorageContext

        here = StorageContext(storage_path=str(moved.parent), experiment_dir_name=moved.name,
                              sync_config=storage.sync_config)  # fmt: skip
        spec["storage"] = here
        self._experiment.storage = here


@contextlib.contextmanager
def _stderr_kept_on_success() -> Iterator[None]:
    """Hold back what is written to file descriptor 2 inside (Ray's core library prints a
    warning per retry of a refused connection, for 20 s): replayed if the block succeeds,
    dropped if it raises, so a refused join ends in the one line that says why."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
        held.seek(0)  # reached only when the block succeeded
        sys.stderr.write(held.read().decode(errors="replace"))
        sys.stderr.flush()


def join_cluster(address: str, timeout_s: float) -> None:
    """`ray.init(address=...)`, refusing in one line a cluster that is unreachable within
    `timeout_s` or that refuses the connection (e.g. token authentication without the token)."""
    if address.startswith(("http://", "https://")):
        raise InputError(f"--address {address}: a dashboard or job-submission address; give the "
                         "cluster's GCS address (HEAD:6379) or ray://HEAD:10001")  # fmt: skip
    hostport = address.removeprefix("ray://")
    if address != "auto" and ":" in hostport:
        host, _, port = hostport.rpartition(":")
        try:
            socket.create_connection((host, int(port)), timeout=timeout_s).close()
        except (OSError, ValueError) as e:
            raise InputError(f"--address {address}: no Ray cluster reachable within "
                             f"{timeout_s:g} s ({e})") from None  # fmt: skip
    try:
        with _stderr_kept_on_success():
            ray.init(address=address, log_to_driver=False)
    except Exception as e:  # Ray raises ConnectionError, AuthenticationError, ... for a refusal
        while e.__cause__ is not None:  # "Failed to connect" hides why: e.g. a missing token
            e = e.__cause__
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()] or [type(e).__name__]
        # A message that embeds a traceback ends with the error that matters.
        why = lines[-1] if any("Traceback" in ln for ln in lines) else lines[0]
        raise InputError(f"--address {address}: cannot join the Ray cluster ({why[:300]})"
                         ) from None  # fmt: skip


def _fit(tuner: tune.Tuner, cfg: RunConfig, run_dir: Path, echo: Callable[[str], None],
         stop: Stopper | None = None) -> None:  # fmt: skip
    """Run the sweep to its end, to its stopper's or to a Ctrl-C, record which in driver.json,
    then write the results and the summary."""
    try:
        interrupted = fit_noting_interrupt(tuner.fit)
    except BaseException:
        mark_ended(run_dir, "interrupted")
        raise
    if not interrupted and stop is not None and stop.stop_all():
        # Tune ends the running trials after its last snapshot: they stopped early.
        mark_ended(run_dir, "stopped")
        _finish(cfg, run_dir, storage_paths(cfg)[0], echo)
        return
    # Provisionally interrupted, so that collect marks trials left unended; the snapshot alone
    # cannot tell (Ray 2.60 can leave a trial that failed its last retry as RUNNING there).
    mark_ended(run_dir, "interrupted")
    trials, _ = collect(run_dir)
    unended = not trials.empty and trials["status"].isin(("interrupted", "pending")).any()
    mark_ended(run_dir, "interrupted" if interrupted or unended else "finished")
    # Either final state marks these rows as the provisional one did: no trial is left unended
    # when finished, and every unended one is already interrupted.
    _finish(cfg, run_dir, storage_paths(cfg)[0], echo, trials)


def resume_search(run_dir: Path, address: str | None, echo: Callable[[str], None] = print,
                  num_samples: int | None = None) -> Path:  # fmt: skip
    """Continue an interrupted sweep: finished trials stay, unfinished ones continue. With
    `num_samples` above the sweep's, the searcher proposes more trials (a finished sweep too).
    A finished sweep with nothing more to do is only reported: Ray is not started."""
    cfg = load_run(run_dir)
    experiment = experiment_path(cfg, run_dir)
    if not tune.Tuner.can_restore(experiment):
        raise InputError(f"{run_dir}: no Ray Tune experiment state to resume from")
    if num_samples is not None:
        if cfg.search.searcher == "grid":
            raise InputError("search.num_samples: the grid plans its own trials; it cannot grow")
        if cfg.search.confirm is not None and num_samples > cfg.search.num_samples:
            raise InputError("search.num_samples: a sweep with search.confirm cannot grow (its "
                             "confirmation runs follow its last trial); start a new sweep with "
                             f"search.warm_start: [{run_dir}]")  # fmt: skip
        if num_samples < cfg.search.num_samples:
            raise InputError(f"search.num_samples: {num_samples} is below the sweep's "
                             f"{cfg.search.num_samples}; a resume only adds trials")  # fmt: skip
    record = driver_record(run_dir)
    if record["state"] == "running" and record.get("host") == socket.gethostname():
        raise InputError(
            f"{run_dir}: driver pid {record.get('pid')} on this host is running "
            "this sweep; stop it (Ctrl-C) first, or watch it: tickets status"
        )
    grows = num_samples is not None and num_samples > cfg.search.num_samples
    failed = sweep_outcome(run_dir).failed
    count = len(experiment_analysis(run_dir, cfg).trials)
    short = cfg.search.searcher != "grid" and count < total_trials(cfg)
    if record["state"] in ENDED and not (grows or failed or short):
        echo(f"{run_dir}: the sweep is finished ({count} trials); nothing to resume "
             f"(more trials: tickets resume {run_dir} search.num_samples=N)")  # fmt: skip
        return run_dir
    if failed:
        echo(
            f"retrying {len(failed)} failed trial(s) from their last checkpoints: "
            + ", ".join(failed)
        )
    init_ray(cfg, address)
    # A sweep saved before `search.loggers` existed has no `loggers` in its tickets.yaml.
    saved = yaml.safe_load((run_dir / CONFIG_FILE).read_text()) or {}
    _auto_loggers(own="loggers" in (saved.get("search") or {}))
    RUN_DIRS[cfg.search.name] = Path(run_dir).resolve()
    os.environ["TUNE_GLOBAL_CHECKPOINT_S"] = str(cfg.search.snapshot_s)
    tuner = tune.Tuner.restore(experiment, trainable=_trainable(cfg), resume_unfinished=True,
                               resume_errored=True)  # fmt: skip
    if cfg.search.searcher != "grid":
        if (grows or short) and not _growable(tuner):
            raise InputError(f"{run_dir}: this sweep was started by an older tickets, whose "
                             "saved searcher cannot take more trials")  # fmt: skip
        # tickets.yaml holds the count the sweep is to reach, also after a growth cut short.
        EXTEND_TO[cfg.search.name] = num_samples if grows else total_trials(cfg)
    if grows:
        cfg = cfg.model_copy(update={"search": cfg.search.model_copy(
            update={"num_samples": num_samples})})  # fmt: skip
        with atomic_path(run_dir / CONFIG_FILE) as tmp:
            tmp.write_text(dump_config(cfg))
    mark_running(run_dir)
    try:
        _fit(tuner, cfg, run_dir, echo)
    finally:
        EXTEND_TO.pop(cfg.search.name, None)
    return run_dir


def _finish(cfg: RunConfig, run_dir: Path, storage: str, echo: Callable[[str], None],
            trials: Any = None) -> None:  # fmt: skip
    """The summary, plots and (URI storage) upload of an ended sweep; `trials` as `collect`
    wrote them, when the caller just did."""
    if trials is None:
        trials, _ = collect(run_dir)
    echo(best_trials_text(cfg, trials))
    echo(f"results: {run_dir / 'trials.parquet'}, {run_dir / 'epochs.parquet'}")
    echo(f"study: sqlite:///{run_dir / STUDY_FILE} (optuna-dashboard opens it)")
    # On the selection metric and the weights kept, the test metrics beside: a front chosen on
    # the test split would be selection on test.
    objectives = [(cfg.search.metrics[0], cfg.search.modes[0])]
    objectives += [("remaining_params", "min")] if objectives[0][0] != "remaining_params" else [
        ("sel_overall", "max")]  # fmt: skip
    try:
        # Replaces its own earlier report (a resume's), never a `tickets pareto` one.
        _, _, paths = pareto_report(run_dir, objectives, written_by=SWEEP_REPORT)
        echo("plots: " + ", ".join(str(p) for p in paths if p.suffix == ".png"))
    except InputError as e:  # e.g. no trial finished: the sweep's results still stand
        echo(f"no plots: {e}")
    spec = ",".join(f"{c}:{m}" for c, m in objectives)
    echo(f"more: tickets pareto {run_dir} --objectives {spec}")
    if is_uri(storage):
        upload_run_files(storage, cfg.search.name, run_dir)
