"""Stage 2 (`tickets prune`: mask training or OMP at one allocation) and the optional stage 3.

This is the function every search trial runs. Output directory (`pruning.output_dir`):

  config.yaml      the resolved run config
  last/            the latest epoch: `trainable.safetensors` (every trained tensor: mask scores and
                   answer head), `objective.safetensors`, `state.pt` (optimiser, scheduler, step,
                   RNG, history); a crashed run resumes from here
  best/            the kept mask: `masks.safetensors` (1 bit per weight), `answer_head.safetensors`,
                   `answers.json`, `sparsity.json`
  metrics.json     per-epoch history, the kept mask's selection and test metrics, sparsities
  stage3/          (with a `stage3:` block) the same layout for stage 3, whose `best/` holds the
                   fine-tuned subnetwork's `trainable.safetensors`

`tickets export` turns a finished run into a plain `from_pretrained` directory (W ⊙ m).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import yaml
from safetensors.torch import load_file, save_file
from torch import nn

from models.config import TrainConfig
from models.evaluate import evaluate_split
from models.objectives import SOFTMAX_LOSSES, Objective, build_objective
from models.structure import find_lxmert, group_sizes
from models.train import (
    apply_training_state,
    calibrate_head_for_sigmoid,
    finished_run,
    linear_schedule,
    load_checkpoint_model,
    load_data,
    read_training_state,
    record_config,
    recover_checkpoints,
    save_training_state,
    test_splits,
    train_epoch,
)
from models.vqa_model import HEAD_FILE, VQAModel, load_backbone, pick_device
from pruning.config import PruneConfig, Stage3Config
from pruning.export import load_masks, named_score_masks, save_masks
from pruning.masks import apply_masks, mask_parameters, recompute_masks, sparsity_report
from vqa.atomic import atomic_dir, write_json
from vqa.cache import PreparedData
from vqa.config import DataConfig
from vqa.errors import InputError
from vqa.tokenize import load_tokenizer

EpochHook = Callable[[dict, Path], None]
"""Called after every epoch with its history record and the `last/` checkpoint directory."""

TRAINABLE_FILE = "trainable.safetensors"
MASKS_FILE = "masks.safetensors"


def prune(
    data_cfg: DataConfig,
    prune_cfg: PruneConfig,
    stage3_cfg: Stage3Config | None,
    config_yaml: str,
    progress: bool = False,
    log: Callable[[str], None] = lambda _: None,
    on_epoch: EpochHook | None = None,
    data: PreparedData | None = None,
    device: str = "auto",
) -> dict:
    """Run (or resume, or confirm finished) stage 2 and, if configured, stage 3; returns the
    contents of metrics.json. `prune_cfg.checkpoint` must be set (RunConfig.resolved sets it);
    `data` is the loaded cache when the caller has it; `device` as `model.device`."""
    prune_cfg = prune_cfg.resolved()
    out = prune_cfg.output_dir
    finished = finished_run(out, config_yaml, log)
    if finished is not None:
        return finished
    done = out / "metrics.json"
    if prune_cfg.checkpoint is None:
        raise InputError("pruning.checkpoint: required (a stage-1 model directory)")

    data = data if data is not None else load_data(data_cfg)
    device = pick_device(device)
    torch.manual_seed(prune_cfg.seed)
    model, _ = load_checkpoint_model(
        prune_cfg.checkpoint, data, head="required", field="pruning.checkpoint"
    )
    requested = prune_cfg.sparsities(group_sizes(model))
    apply_masks(model, requested, prune_cfg.mode, prune_cfg.alpha, prune_cfg.phi)
    record_config(out, config_yaml)  # only once the inputs are known good
    model.to(device)
    shift: float | None = None  # a resumed run loads its trained (shifted) head from last/
    recover_checkpoints(out)  # so a last/ caught mid-rename counts as there
    if prune_cfg.head_shift and not (out / "last" / "state.pt").is_file():
        shift = 0.0
        if _softmax_head(prune_cfg):
            shift = calibrate_head_for_sigmoid(model, data, device, split="train")

    objective = build_objective(prune_cfg.loss, model.backbone.config.hidden_size).to(device)
    save_best = _mask_saver(model, data.answers)
    if prune_cfg.method == "omp":
        history = _one_shot(model, data, device, prune_cfg, out, save_best, on_epoch)
    else:
        scores, head = mask_parameters(model), _head_and(model, objective)
        # One group without score_lr, as runs saved before it existed (their optimiser state
        # resumes); with it the head's group comes first, so the reported lr stays the head's.
        groups = None
        if prune_cfg.score_lr is not None:
            groups = [{"params": head}, {"params": scores, "lr": prune_cfg.score_lr}]
        t_m = prune_cfg.recompute_every
        history = _run_phase("prune", model, objective, scores + head, prune_cfg, data, device,
                             out, save_best, t_m, progress, log, on_epoch, groups)  # fmt: skip
    restore_mask(model, out / "best")
    metrics = {
        "stage": "prune",
        "complete": False,
        "method": prune_cfg.method,
        "mode": prune_cfg.mode,
        "checkpoint": str(prune_cfg.checkpoint),
        "requested": requested,
        **({"head_shift": shift} if shift is not None else {}),
        "sparsity": sparsity_report(model),
        "remaining_params": _remaining(model),
        **_kept(model, data, device, prune_cfg, history),
    }
    if stage3_cfg is not None:
        metrics["stage3"] = _stage3(model, data, device, stage3_cfg, out, progress, log, on_epoch)
    metrics["complete"] = True
    write_json(done, metrics)
    return metrics


def restore_mask(model: VQAModel, best: Path) -> None:
    """Load a kept mask and its answer head (a `best/` directory of stage 2) into `model`."""
    load_masks(model, best / MASKS_FILE)
    _load_tensors(model.head, best / HEAD_FILE)


def _stage3(model: VQAModel, data: PreparedData, device: torch.device, cfg: Stage3Config,
            prune_out: Path, progress: bool, log, on_epoch: EpochHook | None) -> dict:  # fmt: skip
    """Fine-tune the kept subnetwork (mask fixed) with loss L3; its metrics section."""
    cfg = cfg.resolved()
    out = cfg.output_dir if cfg.output_dir is not None else prune_out / "stage3"
    _unfreeze_subnetwork(model)
    torch.manual_seed(cfg.seed)
    objective = build_objective(cfg.loss, model.backbone.config.hidden_size).to(device)
    params = [p for p in find_lxmert(model).parameters() if p.requires_grad]
    params += _head_and(model, objective)

    def save_best(path: Path) -> None:
        with atomic_dir(path) as tmp:
            _save_trainable(model, tmp / TRAINABLE_FILE)

    history = _run_phase("stage3", model, objective, params, cfg, data, device, out, save_best,
                         None, progress, log, on_epoch)  # fmt: skip
    _load_trainable(model, out / "best" / TRAINABLE_FILE)
    section = {"output_dir": str(out), **_kept(model, data, device, cfg, history)}
    section["sparsity"] = sparsity_report(model)
    return section


def _unfreeze_subnetwork(model: VQAModel) -> None:
    """Stage 3 trains the backbone's weights under the fixed mask, not the scores."""
    for param in find_lxmert(model).parameters():
        param.requires_grad_(True)
    for scores in mask_parameters(model):
        scores.requires_grad_(False)


def load_pruned(
    prune_cfg: PruneConfig, stage3_cfg: Stage3Config | None
) -> tuple[VQAModel, object, list[str]]:
    """(masked model, tokenizer, answers) of a finished run: the stage-1 checkpoint with the kept
    mask and head of `best/`, and with stage 3's fine-tuned weights when the run had a stage 3."""
    prune_cfg = prune_cfg.resolved()
    out = prune_cfg.output_dir
    done = out / "metrics.json"
    if not (done.is_file() and json.loads(done.read_text()).get("complete")):
        raise InputError(f"{out}: not a finished pruning run (no complete metrics.json)")
    answers = json.loads((out / "best" / "answers.json").read_text())
    backbone = load_backbone(prune_cfg.checkpoint, "pruning.checkpoint")
    model = VQAModel(backbone, len(answers))
    requested = prune_cfg.sparsities(group_sizes(model))
    apply_masks(model, requested, prune_cfg.mode, prune_cfg.alpha, prune_cfg.phi)
    restore_mask(model, out / "best")
    if stage3_cfg is not None:
        stage3_cfg = stage3_cfg.resolved()
        stage3_out = stage3_cfg.output_dir if stage3_cfg.output_dir else out / "stage3"
        _unfreeze_subnetwork(model)
        _load_trainable(model, stage3_out / "best" / TRAINABLE_FILE)
    model.eval()
    return model, load_tokenizer(prune_cfg.checkpoint), answers


def _softmax_head(cfg: PruneConfig) -> bool:
    """Whether `cfg.loss` reads logits as sigmoids and the stage-1 run saved in `cfg.checkpoint`
    (its `config.yaml`, which `tickets finetune` writes) trained them with a softmax loss."""
    saved = cfg.checkpoint / "config.yaml"
    if cfg.loss.name in SOFTMAX_LOSSES or not saved.is_file():
        return False
    stage1 = (yaml.safe_load(saved.read_text()) or {}).get("objective") or {}
    return stage1.get("name") in SOFTMAX_LOSSES


def _head_and(model: VQAModel, objective: Objective) -> list[nn.Parameter]:
    return list(model.head.parameters()) + [p for p in objective.parameters() if p.requires_grad]


def _mask_saver(model: VQAModel, answers: list[str]) -> Callable[[Path], None]:
    def save(path: Path) -> None:
        with atomic_dir(path) as tmp:
            save_masks(model, tmp / MASKS_FILE)
            head = {k: v.detach().cpu().contiguous() for k, v in model.head.state_dict().items()}
            save_file(head, str(tmp / HEAD_FILE))
            (tmp / "answers.json").write_text(json.dumps(answers) + "\n")
            write_json(tmp / "sparsity.json", sparsity_report(model))

    return save


def _one_shot(model, data, device, cfg: PruneConfig, out: Path, save_best,
              on_epoch: EpochHook | None) -> list[dict]:  # fmt: skip
    """OMP: the magnitude mask apply_masks starts from, evaluated once (epoch 0)."""
    start = time.perf_counter()
    selection = evaluate_split(model, data, data.selection_split, device, cfg.eval_batch_size)
    save_best(out / "best")
    record = {"stage": "prune", "epoch": 0, "selection": selection,
              "wall_s": time.perf_counter() - start}  # fmt: skip
    write_json(out / "metrics.json", {"stage": "prune", "complete": False, "history": [record]})
    if on_epoch is not None:
        on_epoch(record, out / "best")
    return [record]


def _run_phase(name: str, model: VQAModel, objective: Objective, params: list[nn.Parameter],
               cfg: TrainConfig, data: PreparedData, device: torch.device, out: Path,
               save_best: Callable[[Path], None], recompute_every: int | None, progress: bool,
               log: Callable[[str], None], on_epoch: EpochHook | None,
               groups: list[dict] | None = None) -> list[dict]:  # fmt: skip
    """Train `params` epoch by epoch with `objective`, evaluating on the selection split; keeps
    `best/` (via `save_best`) and `last/`; resumes from `last/`. Returns the history. `groups`
    (AdamW parameter groups over the same parameters) gives some of them their own lr.

    With `recompute_every` (t_m), every mask is re-binarised from its scores each t_m steps and
    at the end of every epoch, so the evaluated and saved mask is that of the epoch's scores."""
    split = data.split("train")
    steps_per_epoch = math.ceil(len(split) / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    optimizer = torch.optim.AdamW(groups or params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    warmup = int(cfg.warmup_ratio * total)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_schedule(warmup, total))
    start_epoch, history, best = 0, [], -1.0
    recover_checkpoints(out)
    if (out / "last" / "state.pt").is_file():
        start_epoch, history, best = _resume(out / "last", model, objective, optimizer, scheduler)
        if recompute_every is not None:
            recompute_masks(model)
        log(f"resuming {out} after epoch {start_epoch}")
    previous = _mask_bits(model) if recompute_every is not None else None
    counter = {"step": start_epoch * steps_per_epoch}

    def after_step() -> None:
        counter["step"] += 1
        if recompute_every is not None and counter["step"] % recompute_every == 0:
            recompute_masks(model)

    for epoch in range(start_epoch, cfg.epochs):
        started = time.perf_counter()
        losses = train_epoch(name, model, objective, params, optimizer, scheduler, data, split,
                             cfg, epoch, device, progress, after_step)  # fmt: skip
        step = counter["step"]
        record: dict = {"stage": name, "epoch": epoch + 1, "train_loss": float(np.mean(losses)),
                        "lr": scheduler.get_last_lr()[0], "steps": step}  # fmt: skip
        if recompute_every is not None:
            recompute_masks(model)
            current = _mask_bits(model)
            record["mask_change"] = float((current != previous).float().mean())
            previous = current
        record["selection"] = evaluate_split(model, data, data.selection_split, device,
                                             cfg.eval_batch_size)  # fmt: skip
        record["wall_s"] = time.perf_counter() - started
        history.append(record)
        overall = record["selection"]["overall"]
        log(f"{name} epoch {epoch + 1}/{cfg.epochs}: loss {record['train_loss']:.4f}, "
            f"{data.selection_split} {overall:.2f}, {record['wall_s']:.1f} s, "
            f"{len(split) / record['wall_s']:.0f} samples/s")  # fmt: skip
        if overall > best:
            best = overall
            save_best(out / "best")
        _save_last(out / "last", model, objective, optimizer, scheduler, epoch + 1, history, best)
        write_json(out / "metrics.json", {"stage": name, "complete": False, "history": history})
        if on_epoch is not None:
            on_epoch(record, out / "last")
    return history


def _kept(model, data: PreparedData, device, cfg: TrainConfig, history: list[dict]) -> dict:
    """The kept epoch's selection metrics and the test metrics of the model as it stands."""
    kept = max(history, key=lambda h: h["selection"]["overall"])
    section = {"kept_epoch": kept["epoch"], "selection_split": data.selection_split,
               "selection": kept["selection"], "history": history}  # fmt: skip
    for split in test_splits(data) + (["train"] if cfg.eval_train else []):
        section[split] = evaluate_split(model, data, split, device, cfg.eval_batch_size)
    return section


def _remaining(model: VQAModel) -> int:
    overall = sparsity_report(model)["overall"]
    return int(overall["numel"] - overall["pruned"])


def _mask_bits(model: VQAModel) -> torch.Tensor:
    """Every mask flattened into one bool tensor (True = kept), in a fixed order."""
    return torch.cat([p.mask.detach().flatten().bool().cpu() for _, p in named_score_masks(model)])


def _trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().contiguous() for n, p in model.named_parameters()
            if p.requires_grad}  # fmt: skip


def _save_trainable(model: nn.Module, path: Path) -> None:
    save_file(_trainable_state(model), str(path))


def _load_tensors(module: nn.Module, path: Path) -> None:
    try:
        state = load_file(str(path))
    except Exception as e:  # a truncated or foreign file: say which
        raise InputError(f"{path}: unreadable ({e})") from None
    try:
        module.load_state_dict(state)
    except RuntimeError:
        raise InputError(f"{path}: does not fit this model") from None


def _load_trainable(model: nn.Module, path: Path) -> None:
    """Load what `_save_trainable` wrote: exactly the model's trainable tensors, by name."""
    try:
        state = load_file(str(path))
    except Exception as e:
        raise InputError(f"{path}: unreadable ({e})") from None
    expected = _trainable_state(model)
    if set(state) != set(expected) or any(state[k].shape != v.shape for k, v in expected.items()):
        raise InputError(f"{path}: its tensors do not match this run's trainable parameters")
    model.load_state_dict(state, strict=False)


def _save_last(path: Path, model, objective, optimizer, scheduler, epoch: int,
               history: list[dict], best: float) -> None:  # fmt: skip
    with atomic_dir(path) as tmp:
        _save_trainable(model, tmp / TRAINABLE_FILE)
        save_training_state(tmp, objective, optimizer, scheduler, epoch, history, best)


def _resume(path: Path, model, objective, optimizer, scheduler) -> tuple[int, list[dict], float]:
    state = read_training_state(path)
    _load_trainable(model, path / TRAINABLE_FILE)
    return apply_training_state(state, path, objective, optimizer, scheduler)
