"""Full-model training: `tickets pretrain` (`ce` by default, on the balanced split) and stage 1
(`finetune`).

Output directory (`<stage>.output_dir`):
  config.yaml      the resolved run config
  last/            the latest epoch: model directory + `state.pt` (optimiser, scheduler, RNG,
                   history) + `objective.safetensors`; a crashed run resumes from here
  best/            stage 1: the model with the best selection accuracy so far
  model/           pre-training: the final model, an ordinary `from_pretrained` directory
  metrics.json     per-epoch history, the kept model's selection and test metrics
Every directory and file is replaced atomically, so a crash leaves the previous epoch intact.
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
from tqdm.auto import tqdm

from models.config import ModelConfig, PretrainConfig, TrainConfig
from models.evaluate import evaluate_split, split_logits
from models.masked_objects import MaskedObjects, PretrainObjective
from models.object_labels import ObjectLabels
from models.objectives import ObjectiveConfig, build_objective
from models.vqa_model import (
    VQAModel,
    load_backbone,
    load_head,
    pick_device,
    restore_model,
    save_model_dir,
    small_backbone,
)
from vqa.atomic import atomic_dir, atomic_path, recover_dir, write_json
from vqa.cache import PreparedData, load_cache
from vqa.config import DataConfig
from vqa.errors import InputError
from vqa.prepare import cache_is_current
from vqa.tokenize import load_tokenizer

STAGES = {"pretrain": "pretrain", "finetune": "train"}  # stage -> training split


def load_data(data_cfg: DataConfig) -> PreparedData:
    if not cache_is_current(data_cfg):
        raise InputError(
            f"{data_cfg.resolved().cache_dir}: data cache missing or out of date; "
            "run `tickets data prepare CONFIG` first"
        )
    return load_cache(data_cfg.resolved().cache_dir)


def build_model(stage: str, model_cfg: ModelConfig, train_cfg: TrainConfig, data: PreparedData):
    """(model, tokenizer): pre-training builds a new small LXMERT (`pretrain.architecture`) with
    the cache's tokenizer; stage 1 loads `model.checkpoint` and checks it fits the data cache."""
    cache_tok = load_tokenizer(data.tokenizer_dir)
    if isinstance(train_cfg, PretrainConfig):
        rows = train_cfg.architecture.vocab_size or len(cache_tok)
        if rows < len(cache_tok):
            raise InputError(
                f"pretrain.architecture.vocab_size: {rows} is below the tokenizer's "
                f"{len(cache_tok)} tokens ({data.tokenizer_dir})"
            )
        backbone = small_backbone(train_cfg.architecture, rows, data.store.feature_dim)
        return VQAModel(backbone, data.num_answers), cache_tok
    if model_cfg.checkpoint is None:
        raise InputError("model.checkpoint: required for finetune (a local model directory)")
    return load_checkpoint_model(model_cfg.checkpoint, data, model_cfg.reuse_answer_head)


def load_checkpoint_model(
    ckpt: Path, data: PreparedData, head: bool | str = True, field: str = "model.checkpoint"
) -> tuple[VQAModel, object]:
    """(model, tokenizer) from a local model directory, checked against the data cache: same
    tokenizer vocabulary, same feature dimension. `head`: True loads the directory's answer head
    when it was trained on the cache's answers, "required" insists on it, False starts fresh."""
    cache_tok = load_tokenizer(data.tokenizer_dir)
    backbone = load_backbone(ckpt, field)
    tokenizer = load_tokenizer(ckpt)
    if tokenizer.get_vocab() != cache_tok.get_vocab():
        raise InputError(
            f"{ckpt}: its tokenizer differs from the data cache's ({data.tokenizer_dir}); "
            "prepare the data with data.tokenizer.kind=pretrained and this path"
        )
    if backbone.config.visual_feat_dim != data.store.feature_dim:
        raise InputError(
            f"{ckpt}: visual_feat_dim {backbone.config.visual_feat_dim} does not match the "
            f"features' dimension {data.store.feature_dim}"
        )
    model = VQAModel(backbone, data.num_answers)
    if head and not load_head(model, Path(ckpt), data.answers) and head == "required":
        raise InputError(f"{ckpt}: no answer head for this data cache's answers")
    return model, tokenizer


def linear_schedule(warmup: int, total: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    return factor


def fit(
    stage: str,
    data_cfg: DataConfig,
    model_cfg: ModelConfig,
    objective_cfg: ObjectiveConfig | None,
    train_cfg: TrainConfig,
    config_yaml: str,
    progress: bool = False,
    log: Callable[[str], None] = lambda _: None,
) -> dict:
    """Train (or resume, or confirm finished) one stage; returns the contents of metrics.json.

    Stage 1 trains with `objective_cfg` (its loss L1); pre-training with `train_cfg.loss`.
    """
    if isinstance(train_cfg, PretrainConfig):
        objective_cfg = ObjectiveConfig(name=train_cfg.loss)
    elif objective_cfg is None:
        raise ValueError("stage 1 needs an objective")
    train_cfg, model_cfg = train_cfg.resolved(), model_cfg.resolved()
    out = train_cfg.output_dir
    finished = finished_run(out, config_yaml, log)
    if finished is not None:
        return finished

    data = load_data(data_cfg)
    device = pick_device(model_cfg.device)
    torch.manual_seed(train_cfg.seed)
    model, tokenizer = build_model(stage, model_cfg, train_cfg, data)
    if isinstance(train_cfg, PretrainConfig) and train_cfg.object_labels is not None:
        _check_object_ids(data)
    record_config(out, config_yaml)  # only once the inputs are known good
    objective = build_objective(objective_cfg, model.backbone.config.hidden_size)
    if isinstance(train_cfg, PretrainConfig) and (
        train_cfg.masked_objects is not None or train_cfg.object_labels is not None
    ):
        objective = PretrainObjective(objective, *_visual_tasks(train_cfg, model, data))
    model.to(device)
    objective.to(device)

    split = data.split(STAGES[stage])
    steps_per_epoch = math.ceil(len(split) / train_cfg.batch_size)
    total = steps_per_epoch * train_cfg.epochs
    params = [p for p in list(model.parameters()) + list(objective.parameters()) if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)
    warmup = int(train_cfg.warmup_ratio * total)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_schedule(warmup, total))

    history: list[dict] = []
    start_epoch = 0
    best = -1.0
    recover_checkpoints(out)
    if (out / "last" / "state.pt").is_file():
        start_epoch, history, best = _resume(
            out / "last", model, objective, optimizer, scheduler, data.answers
        )
        log(f"resuming {out} after epoch {start_epoch}")

    for epoch in range(start_epoch, train_cfg.epochs):
        started = time.perf_counter()
        losses = train_epoch(stage, model, objective, params, optimizer, scheduler, data, split,
                             train_cfg, epoch, device, progress)  # fmt: skip
        selection = evaluate_split(model, data, data.selection_split, device,
                                   train_cfg.eval_batch_size)  # fmt: skip
        history.append({"epoch": epoch + 1, "train_loss": float(np.mean(losses)),
                        "lr": scheduler.get_last_lr()[0], "selection": selection})  # fmt: skip
        wall = time.perf_counter() - started
        log(f"{stage} epoch {epoch + 1}/{train_cfg.epochs}: loss {np.mean(losses):.4f}, "
            f"{data.selection_split} {selection['overall']:.2f}, {wall:.1f} s, "
            f"{len(split) / wall:.0f} samples/s")  # fmt: skip
        if stage == "finetune" and selection["overall"] > best:
            best = selection["overall"]
            with atomic_dir(out / "best") as tmp:
                save_model_dir(model, data.answers, tokenizer, config_yaml, tmp)
        _save_last(out / "last", model, objective, optimizer, scheduler, tokenizer, data,
                   config_yaml, epoch + 1, history, best)  # fmt: skip
        write_json(out / "metrics.json", {"stage": stage, "complete": False, "history": history})

    return _finish(stage, out, model, data, device, train_cfg, tokenizer, config_yaml, history)


def _check_object_ids(data: PreparedData) -> None:
    """`pretrain.object_labels` needs per-box classes in the feature store."""
    store = data.store
    if store.object_ids is None:
        raise InputError(
            f"{store.path}: pretrain.object_labels needs the field 'object_ids' (a class per box), "
            "which this feature store lacks"
        )


def _visual_tasks(train_cfg: PretrainConfig, model: VQAModel, data: PreparedData):
    """(masked-object regression or None, object label prediction or None) as configured."""
    config = model.backbone.config
    objects = labels = None
    if train_cfg.masked_objects is not None:
        objects = MaskedObjects(config.hidden_size, config.visual_feat_dim,
                                train_cfg.masked_objects)  # fmt: skip
    if train_cfg.object_labels is not None:
        num_labels = int(np.max(data.store.object_ids)) + 1
        labels = ObjectLabels(config.hidden_size, num_labels, train_cfg.object_labels)
    return objects, labels


def train_epoch(name: str, model: VQAModel, objective, params: list, optimizer, scheduler,
                data: PreparedData, split, cfg: TrainConfig, epoch: int, device: torch.device,
                progress: bool = False,
                after_step: Callable[[], None] | None = None) -> list[float]:  # fmt: skip
    """One epoch over `split` in the seeded order of (cfg.seed, epoch): AdamW steps on `params`
    with gradient clipping, bf16 autocast on CUDA; returns the batch losses. A non-finite loss
    stops the run (RuntimeError, naming its step) once the next batch is built. `after_step`
    runs after every optimiser step."""
    model.train()
    objective.train()
    order = np.random.default_rng([cfg.seed, epoch]).permutation(len(split))
    steps = math.ceil(len(split) / cfg.batch_size)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    losses: list[float] = []
    bar = tqdm(range(steps), desc=f"{name} epoch {epoch + 1}/{cfg.epochs}",
               disable=not progress, leave=False)  # fmt: skip
    pending: torch.Tensor | None = None  # the previous step's loss, not yet read

    def settle(loss: torch.Tensor, step: int) -> None:
        # Reading a CUDA loss waits for everything queued before it. Read only once the next
        # batch is built and on its way, the host's batch assembly overlaps the device's step
        # (a read right after each step idled the GPU while the host built the next batch).
        value = loss.item()
        if not math.isfinite(value):
            raise RuntimeError(f"{name}: non-finite loss at epoch {epoch + 1}, step {step}")
        losses.append(value)
        bar.set_postfix(loss=f"{value:.4f}")

    for i in bar:
        rows = order[i * cfg.batch_size : (i + 1) * cfg.batch_size]
        batch = data.make_batch(split, rows).to(device)
        if pending is not None:  # after building this batch, which overlapped the last step
            settle(pending, i)
            pending = None
        if not isinstance(objective, PretrainObjective):
            with autocast:
                logits, pooled = model(
                    batch.input_ids, batch.attention_mask, batch.visual_feats, batch.visual_pos
                )
            loss = objective(logits.float(), batch.targets, batch.prior, pooled.float())
        else:
            loss = _pretrain_loss(model, objective, batch, data, split, cfg, epoch, i, device,
                                  autocast)  # fmt: skip
        if device.type != "cuda" and not torch.isfinite(loss):  # free on the CPU: stop at once
            raise RuntimeError(f"{name}: non-finite loss at epoch {epoch + 1}, step {i + 1}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        optimizer.step()
        scheduler.step()
        if after_step is not None:
            after_step()
        pending = loss.detach()
    if pending is not None:
        settle(pending, steps)
    return losses


def _pretrain_loss(model: VQAModel, objective: PretrainObjective, batch, data: PreparedData,
                   split, cfg: TrainConfig, epoch: int, step: int, device: torch.device,
                   autocast) -> torch.Tensor:  # fmt: skip
    """The QA loss plus the configured visual tasks' losses of one pre-training step."""
    objects, labels = objective.objects, objective.labels
    feats = batch.visual_feats
    if objects is not None:
        # the masks of step `step` of this epoch, the same on a resume
        chosen, kept = objects.draw(tuple(feats.shape),
                                    np.random.default_rng([cfg.seed, epoch, step, 1]))  # fmt: skip
        chosen, kept = chosen.to(device), kept.to(device)
        feats = feats * kept
    encoder = labels is not None or (objects is not None and objects.read_from == "encoder")
    with autocast:
        logits, pooled, output, last_r = model.forward_with_states(
            batch.input_ids, batch.attention_mask, feats, batch.visual_pos, encoder=encoder
        )
    loss = objective(logits.float(), batch.targets, batch.prior, pooled.float())
    if objects is not None:
        vision = last_r if objects.read_from == "encoder" else output
        loss = loss + objects.loss(vision, batch.visual_feats, chosen)
    if labels is not None:
        # a box's class, looked up by the questions' feature rows
        ids = data.store.object_ids[split.feature_rows[batch.rows]]
        loss = loss + labels.loss(last_r, torch.from_numpy(ids).to(device))  # int64 in the store
    return loss


def _finish(stage, out: Path, model: VQAModel, data: PreparedData, device, train_cfg,
            tokenizer, config_yaml: str, history: list[dict]) -> dict:  # fmt: skip
    """Evaluate the kept model on the test splits and write metrics.json (and pretrain's model/)."""
    if stage == "finetune":
        kept = out / "best"
        best_epoch = max(history, key=lambda h: h["selection"]["overall"])["epoch"]
        restore_model(model, kept, data.answers)
    else:
        kept = out / "model"
        best_epoch = history[-1]["epoch"]
        if train_cfg.loss == "ce":
            head_shift = calibrate_head_for_sigmoid(model, data, device, train_cfg.eval_batch_size)
        with atomic_dir(kept) as tmp:
            save_model_dir(model, data.answers, tokenizer, config_yaml, tmp)
    metrics = {
        "stage": stage,
        "complete": True,
        "model_dir": str(kept),
        "kept_epoch": best_epoch,
        "selection_split": data.selection_split,
        "selection": next(h["selection"] for h in history if h["epoch"] == best_epoch),
        "history": history,
    }
    if stage == "pretrain" and train_cfg.loss == "ce":
        metrics["head_shift"] = head_shift
    names = test_splits(data) + ([STAGES[stage]] if train_cfg.eval_train else [])
    for name in names:
        metrics[name] = evaluate_split(model, data, name, device, train_cfg.eval_batch_size)
    write_json(out / "metrics.json", metrics)
    return metrics


@torch.no_grad()
def calibrate_head_for_sigmoid(
    model: VQAModel, data: PreparedData, device: torch.device, batch_size: int = 512,
    split: str = "pretrain",
) -> float:  # fmt: skip
    """Shift the answer head's output bias by c = mean over `split`'s questions of
    logsumexp(logits); returns c.

    Softmax cross-entropy leaves the logits' level free; read as sigmoids (BCE, LMH in stage 1)
    a `ce` head says "yes" to most answers, the first stage-1 losses are ~10x the question-only
    floor and their gradients erase the pre-trained grounding (docs/CALIBRATION.md). After the
    shift sigmoid(z - c) ~ softmax(z); the argmax, and so every prediction, is unchanged."""
    total, n = 0.0, 0
    for logits in split_logits(model, data, split, device, batch_size):
        total += torch.logsumexp(logits, dim=-1).sum().item()
        n += logits.shape[0]
    shift = total / max(1, n)
    model.head[-1].bias.sub_(shift)
    return shift


def test_splits(data: PreparedData) -> list[str]:
    return [s for s in ("test", "test_full") if s in data.split_names]


def finished_run(out: Path, config_yaml: str, log: Callable[[str], None]) -> dict | None:
    """The metrics of a complete run in `out` (after refusing a directory holding another run,
    see `check_output_dir`), or None when there is something left to do."""
    check_output_dir(out, config_yaml)
    done = out / "metrics.json"
    if done.is_file() and json.loads(done.read_text()).get("complete"):
        log(f"{out}: already complete, nothing to do")
        return json.loads(done.read_text())
    return None


def record_config(out: Path, config_yaml: str) -> None:
    """Write `out/config.yaml` once; callers do it only after their inputs loaded, so a refused
    run leaves nothing behind."""
    if not (out / "config.yaml").is_file():
        out.mkdir(parents=True, exist_ok=True)
        with atomic_path(out / "config.yaml") as tmp:
            tmp.write_text(config_yaml)


def check_output_dir(out: Path, config_yaml: str) -> None:
    """Refuse a directory that holds a different run (naming the fields that differ), or
    anything but a run. Stages 1 and 2 (and stage 3, whose blocks stage 2's config holds) all
    come through here."""
    saved = out / "config.yaml"
    if saved.is_file():
        text = saved.read_text()
        if text != config_yaml:
            raise InputError(
                f"{out}: holds a run with a different config ({saved}; "
                f"{config_differences(text, config_yaml)}); use another output_dir or delete it"
            )
    elif out.exists() and any(out.iterdir()):
        raise InputError(f"{out}: exists, is not empty and holds no run (no config.yaml)")


def config_differences(saved: str, current: str, limit: int = 3) -> str:
    """`differs in: a.b OLD -> NEW, ...` between two saved configs (YAML text), by dotted path,
    the first `limit` of them; mappings are compared key by key, anything else as a value."""
    try:
        old, new = _flatten(yaml.safe_load(saved)), _flatten(yaml.safe_load(current))
    except yaml.YAMLError:
        return "differs; the saved one is not valid YAML"
    keys = list(old) + [k for k in new if k not in old]
    differ = [k for k in keys if old.get(k, _ABSENT) != new.get(k, _ABSENT)]
    if not differ:
        return "differs in formatting only"
    shown = ", ".join(f"{k} {_shown(old.get(k, _ABSENT))} -> {_shown(new.get(k, _ABSENT))}"
                      for k in differ[:limit])  # fmt: skip
    more = f", and {len(differ) - limit} more" if len(differ) > limit else ""
    return f"differs in: {shown}{more}"


_ABSENT = object()


def _flatten(data: object, prefix: str = "") -> dict[str, object]:
    if not isinstance(data, dict):
        return {prefix or "(top level)": data}
    out: dict[str, object] = {}
    for key, value in data.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            out.update(_flatten(value, path))
        else:
            out[path] = value
    return out


def _shown(value: object) -> str:
    if value is _ABSENT:
        return "(absent)"
    text = value if isinstance(value, str) and value else json.dumps(value, default=str)
    return text if len(text) <= 60 else f"{text[:24]}...{text[-33:]}"


def _save_last(path: Path, model, objective, optimizer, scheduler, tokenizer, data, config_yaml,
               epoch: int, history: list[dict], best: float) -> None:  # fmt: skip
    with atomic_dir(path) as tmp:
        save_model_dir(model, data.answers, tokenizer, config_yaml, tmp)
        save_training_state(tmp, objective, optimizer, scheduler, epoch, history, best)


def save_training_state(directory: Path, objective, optimizer, scheduler, epoch: int,
                        history: list[dict], best: float) -> None:  # fmt: skip
    """`objective.safetensors` (the loss's own parameters, if any) and `state.pt` (epoch, best
    selection accuracy, history, optimiser, scheduler, RNG) into `directory`."""
    obj_state = {k: v.detach().cpu().contiguous() for k, v in objective.state_dict().items()}
    if obj_state:
        save_file(obj_state, str(directory / "objective.safetensors"))
    torch.save(
        {
            "epoch": epoch,
            "best": best,
            "history_json": json.dumps(history),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        },
        directory / "state.pt",
    )


def recover_checkpoints(out: Path) -> None:
    """Put back `out`'s `last/` and `best/` where a writer was killed between the two renames
    of `atomic_dir`'s fallback (see `vqa.atomic.recover_dir`)."""
    for kept in (out / "last", out / "best"):
        recover_dir(kept)


def read_training_state(directory: Path) -> dict:
    """`state.pt`, read without unpickling anything; a one-line `InputError` if unreadable."""
    recover_dir(directory)
    try:
        return torch.load(directory / "state.pt", map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or foreign file: say which, never unpickle
        raise InputError(f"{directory / 'state.pt'}: unreadable training state ({e})") from None


def apply_training_state(state: dict, directory: Path, objective, optimizer,
                         scheduler) -> tuple[int, list[dict], float]:  # fmt: skip
    """Restore what `save_training_state` wrote; returns (epoch, history, best)."""
    objective_file = directory / "objective.safetensors"
    if objective_file.is_file():
        try:
            objective.load_state_dict(load_file(str(objective_file)))
        except Exception as e:  # safetensors and torch raise several types for a bad file
            raise InputError(f"{objective_file}: unreadable or does not fit ({e})") from None
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return int(state["epoch"]), json.loads(state["history_json"]), float(state["best"])


def _resume(path: Path, model, objective, optimizer, scheduler,
            answers: list[str]) -> tuple[int, list[dict], float]:  # fmt: skip
    state = read_training_state(path)
    restore_model(model, path, answers)
    return apply_training_state(state, path, objective, optimizer, scheduler)
