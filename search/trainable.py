"""The Ray Tune trainable: one stage-2 run (`pruning.train.prune`) at one proposed allocation.

Every epoch is reported with the whole run directory as the checkpoint (scores, head, optimiser,
RNG, the best mask so far), so a trial that is restarted — after a node loss, a retry or a
`tickets resume` — continues from its last epoch. The last report of a trial that ran to the end
carries `trial_complete` and the kept mask's test metrics.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray
import yaml
from ray import tune

from models.vqa_model import describe_device, pick_device
from pruning.train import prune
from search.config import validate_config
from search.results import CONFIRM_KEY

TIME_ATTR = "epochs_done"
"""Reported epochs of stages 2 and 3 together: the time axis of ASHA."""


def trial_run_config(base: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """The plain run config of one trial: `base` (data, pruning, stage3 blocks) with the
    proposed allocation and hyperparameters set in its `pruning:` block."""
    raw = yaml.safe_load(yaml.safe_dump(base))  # a deep copy of plain data
    pruning = raw["pruning"]
    pruning.update(mode="modality", sparsity=config["sparsity"], language=config["language"],
                   visual=config["visual"], cross=config["cross"])  # fmt: skip
    for name in base.get("hyperparameters", []):
        if name in config:
            node = pruning
            *parents, leaf = name.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = config[name]
    if CONFIRM_KEY in config:  # a confirmation run re-trains the allocation with a fresh seed
        pruning["seed"] = int(config["seed"])
    for key in ("hyperparameters", "inject", "checkpoint_every"):  # the sweep's, not the run's
        raw.pop(key, None)
    return raw


def flat(prefix: str, metrics: dict[str, Any]) -> dict[str, float]:
    """`{"overall": 61.2, ...}` -> `{"<prefix>_overall": 61.2, ...}` (numbers only)."""
    return {f"{prefix}_{k}": float(v) for k, v in metrics.items() if isinstance(v, int | float)}


def run_trial(config: dict[str, Any], base: dict[str, Any]) -> None:
    """Ray Tune function trainable: `config` from the searcher, `base` shared by every trial."""
    raw = trial_run_config(base, config)
    cfg = validate_config(raw, "trial").resolved()
    # One fixed path per trial: the saved config names it, so a restart compares equal.
    context = tune.get_context()
    work = Path(tempfile.gettempdir()) / "tickets-trials" / context.get_experiment_name()
    work /= context.get_trial_id()
    shutil.rmtree(work, ignore_errors=True)  # a killed run's leftovers: the checkpoint decides
    out = work / "run"
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        checkpoint.to_directory(str(out))
    cfg = cfg.model_copy(update={"pruning": cfg.pruning.model_copy(update={"output_dir": out})})
    if cfg.stage3 is not None:
        cfg = cfg.model_copy(update={"stage3": cfg.stage3.model_copy(update={"output_dir": None})})
    blocks = ("data", "pruning") + (("stage3",) if cfg.stage3 is not None else ())
    dumped = cfg.model_dump(mode="json")
    config_yaml = yaml.safe_dump({n: dumped[n] for n in blocks}, sort_keys=False)
    where = {"node": ray.get_runtime_context().get_node_id(), "hostname": socket.gethostname(),
             "device": describe_device(pick_device(cfg.model.device))}  # fmt: skip
    done = {"n": 0}
    for path in (out / "metrics.json", out / "stage3" / "metrics.json"):
        if path.is_file():
            done["n"] += len(json.loads(path.read_text()).get("history", []))
    # Epochs this run of the trial did not have to train: > 0 after a restart from a checkpoint.
    where["resumed_from_epoch"] = done["n"]

    every = int(base.get("checkpoint_every", 1))
    last_epoch = {"prune": cfg.pruning.epochs,
                  "stage3": cfg.stage3.epochs if cfg.stage3 is not None else 0}  # fmt: skip
    log = trial_log(Path(context.get_trial_dir()), done["n"], raw)

    def on_epoch(record: dict, _: Path) -> None:
        done["n"] += 1
        report = {**realised(out / "best" / "sparsity.json"), TIME_ATTR: done["n"],
                  "stage": record["stage"], "epoch": record["epoch"],
                  "train_loss": record.get("train_loss", float("nan")),
                  "mask_change": record.get("mask_change", float("nan")),
                  **flat("sel", record["selection"]), **where,
                  **histories(out)}  # fmt: skip
        # What a restarted trial continues from; the last epoch of each stage always has one.
        keep = done["n"] % every == 0 or record["epoch"] >= last_epoch.get(record["stage"], 0)
        checkpoint = tune.Checkpoint.from_directory(str(out)) if keep else None
        tune.report(report, checkpoint=checkpoint)
        if "inject" in base:
            inject_fault(base["inject"], context.get_trial_id(), done["n"])

    try:
        metrics = prune(cfg.data, cfg.pruning, cfg.stage3, config_yaml, on_epoch=on_epoch,
                        device=cfg.model.device, log=log)  # fmt: skip
        final = summary(metrics)
        final.update({TIME_ATTR: max(done["n"], 1), "trial_complete": True, **where})
        log(f"finished: kept epoch {metrics['kept_epoch']}, selection "
            f"{metrics['selection']['overall']:.2f}")  # fmt: skip
        tune.report(final, checkpoint=tune.Checkpoint.from_directory(str(out)))
    except BaseException as e:
        log(f"failed: {type(e).__name__}: {e}")
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


LOG_FILE = "stage2.log"


def trial_log(trial_dir: Path, resumed_from: int, raw: dict[str, Any]) -> Callable[[str], None]:
    """A line logger into the trial's directory (Tune copies it to RUN_DIR/trial_<id>/ with the
    trial's checkpoints): `stage2.log`, or `stage2.from-epoch-<n>.log` for a run of the trial
    restarted after n epochs, so a restart never overwrites what the earlier run wrote."""
    trial_dir.mkdir(parents=True, exist_ok=True)
    name = LOG_FILE if not resumed_from else f"stage2.from-epoch-{resumed_from}.log"
    path = trial_dir / name
    started = time.monotonic()

    def log(line: str) -> None:
        with path.open("a") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} +{time.monotonic() - started:.1f}s "
                    f"{line}\n")  # fmt: skip

    p = raw["pruning"]
    log(f"allocation: language {p['language']:.4f}, visual {p['visual']:.4f}, cross "
        f"{p['cross']:.4f} at s {p['sparsity']:.4f}, seed {p.get('seed', 0)}; "
        + (f"restarted after epoch {resumed_from}" if resumed_from else "new trial"))  # fmt: skip
    return log


def inject_fault(inject: dict[str, Any], trial_id: str, epochs_done: int) -> None:
    """`search.failure.inject`: fail this trial at its first epoch from `inject["epoch"]` on,
    on each of its first `inject["times"]` attempts (counted in a ledger beside the run)."""
    if epochs_done < inject["epoch"]:
        return
    ledger = Path(inject["ledger"]) / trial_id
    ledger.mkdir(parents=True, exist_ok=True)
    attempt = len(list(ledger.iterdir())) + 1
    if attempt > inject["times"]:
        return
    (ledger / f"attempt-{attempt}").touch()
    if inject["kind"] == "exit":
        os._exit(3)  # the trial's process dies without cleaning up, as on a crash or OOM kill
    raise RuntimeError(f"injected fault at epoch {epochs_done} (attempt {attempt})")


def histories(out: Path) -> dict[str, str]:
    """The stage-2 (and stage-3) epoch records so far, as JSON, from the run's metrics files."""
    found = {}
    for key, path in (("history_json", out / "metrics.json"),
                      ("stage3_history_json", out / "stage3" / "metrics.json")):  # fmt: skip
        if path.is_file():
            found[key] = json.dumps(json.loads(path.read_text()).get("history", []))
    return found


def realised(sparsity_json: Path) -> dict[str, float]:
    """`realised_<group>` and `remaining_params` from a kept mask's sparsity.json."""
    if not sparsity_json.is_file():
        return {}
    report = json.loads(sparsity_json.read_text())
    out = {f"realised_{g}": r["realised"] for g, r in report.items() if isinstance(r, dict)}
    if "overall" in report:
        out["remaining_params"] = report["overall"]["numel"] - report["overall"]["pruned"]
    return out


def summary(metrics: dict[str, Any]) -> dict[str, Any]:
    """A finished stage-2 run's metrics as one flat result: the kept epoch's selection and test
    metrics, realised sparsities, weights kept, stage losses, and the history as JSON."""
    kept = next(h for h in metrics["history"] if h["epoch"] == metrics["kept_epoch"])
    out: dict[str, Any] = {
        "kept_epoch": metrics["kept_epoch"],
        "remaining_params": metrics["remaining_params"],
        "loss_stage2": kept.get("train_loss", float("nan")),
        **flat("sel", metrics["selection"]),
        **{f"realised_{g}": r["realised"] for g, r in metrics["sparsity"].items()},
        "history_json": json.dumps(metrics["history"]),
    }
    for split in ("test", "test_full", "train"):
        if split in metrics:
            out.update(flat(split, metrics[split]))
    if "stage3" in metrics:
        section = metrics["stage3"]
        kept3 = next(h for h in section["history"] if h["epoch"] == section["kept_epoch"])
        out["loss_stage3"] = kept3["train_loss"]
        out["stage3_history_json"] = json.dumps(section["history"])
        for split in ("test", "test_full"):
            if split in section:
                out.update(flat(f"stage3_{split}", section[split]))
    return out
