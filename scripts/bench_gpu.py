"""The CUDA path of stages 1 and 2, checked and measured on one GPU, side by side in one process.

    python scripts/bench_gpu.py [--out bench_gpu.json] [--sections ...] [--peak-tflops T]
    python scripts/bench_gpu.py --dry-run          # the same code, tiny sizes, CPU, < 1 minute

Run it in an environment with this project and a CUDA build of torch installed
(``pip install -e .`` after the cluster's torch). Sections (``--sections``, comma-separated):

- ``correctness``: a lxmert-base-sized VQAModel (random weights, 2048-d features, 3,129 answers,
  batch 256) takes stage-1 steps (dense, LPF) and stage-2 steps (masked at a modality triple of
  eq. 10, LMH) under bf16 autocast: losses finite. After ``recompute_masks`` on the device every
  mask has exactly its count of zeros and equals the CPU recomputation from the same scores (the
  k-th value path against numpy's); the same for a ``global`` mask. The model written by
  ``export_pruned`` and loaded back predicts on the GPU what the masked model predicted.
- ``throughput``: samples/s of the dense stage-1 step and the masked stage-2 step (W ⊙ m cached,
  the default, and rebuilt every forward), interleaved, their ratio (goal <= 1.05); the largest
  power-of-two batch that fits and its rate; ``recompute_masks`` amortised over t_m = 100 steps as
  a share of a step; three k-th value selections on a word-embedding-sized tensor; a batch's
  host-to-device copy from pageable and from pinned memory; peak memory of each variant alone.
- ``flops``: forward + backward FLOPs of one step (torch's FlopCounterMode: matmuls) over its
  time, against the device's bf16 dense peak (goal >= 50%).
- ``packing``: how many stage-2 trials fit on the device by memory (after ``throughput``, which
  sizes a trial), and a 4-trial Ray Tune sweep of the demo benchmark with ``resources: {gpu:
  0.25}``: the four trials must run at the same time (their ``started_at`` / ``ended_at``
  intervals in trials.parquet overlap; ``nvidia-smi``'s process count is printed beside), on one
  device (trials.parquet's ``device``, with the node).

Prints one line per figure and writes them all as JSON (``--out``), section by section as they
finish.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import functools
import gc
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from bench_mask import Size, build_model, make_batch  # noqa: E402
from torch import Tensor, nn  # noqa: E402

T_M = 100  # DESIGN.md §5: thresholds recomputed every t_m steps
SPARSITY = 0.7
LANGUAGE, VISUAL = 0.8, 0.5  # a modality triple with cross solved by eq. 10, visual spared
SECTIONS = ("correctness", "throughput", "flops", "packing")

SIZES = {  # hidden, heads, intermediate, (l, r, x) layers, vocab, feature dim, batch, answers
    "base": Size(768, 12, 3072, (9, 5, 5), 30522, 2048, 256, 3129, 0),
    "tiny": Size(64, 4, 256, (1, 1, 1), 200, 64, 16, 50, 0),
}

# bf16 dense tensor throughput (TFLOP/s, no sparsity) from NVIDIA's data sheets; the first name
# found in torch's device name wins, so the more specific comes first.
PEAK_BF16_TFLOPS = (
    ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("GH200", 989.4), ("H200", 989.4),
    ("H100", 989.4), ("H800", 989.4), ("H20", 148.0), ("B200", 2250.0), ("B100", 1750.0),
    ("A100", 312.0), ("A800", 312.0), ("A10G", 70.0), ("A10", 125.0), ("L40S", 362.0),
    ("L40", 181.0), ("L4", 121.0), ("A6000", 154.8), ("A30", 165.0),
)  # fmt: skip


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def per_call(fn: Callable[[], Any], device: torch.device, calls: int) -> float:
    """Seconds per call of ``fn``, ``calls`` calls between two device synchronisations."""
    sync(device)
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    sync(device)
    return (time.perf_counter() - start) / calls


def gpu_batch(size: Size, device: torch.device, batch: int | None = None) -> dict[str, Tensor]:
    """bench_mask's random batch (padded questions, sparse soft targets) plus a question-type
    prior, on ``device``."""
    b = make_batch(dataclasses.replace(size, batch=batch) if batch else size)
    g = torch.Generator().manual_seed(2)
    prior = torch.rand(b["targets"].shape, generator=g)
    b["prior"] = prior / prior.sum(-1, keepdim=True)
    return {k: v.to(device) for k, v in b.items()}


def train_step(
    model: nn.Module, objective: nn.Module, batch: dict[str, Tensor], device: torch.device
) -> Callable[[], Tensor]:
    """One step as ``models.train.train_epoch`` takes it: bf16 autocast on CUDA, the loss in
    float32, AdamW (lr 5e-5, no decay) with clipping 1.0 over the trainable parameters."""
    params = [p for p in [*model.parameters(), *objective.parameters()] if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=5e-5, weight_decay=0.0)
    inputs = [batch[k] for k in ("input_ids", "attention_mask", "visual_feats", "visual_pos")]

    def step() -> Tensor:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits, pooled = model(*inputs)
        loss = objective(logits.float(), batch["targets"], batch["prior"], pooled.float())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        return loss.detach()

    return step


def objective_for(name: str, model: nn.Module, device: torch.device) -> nn.Module:
    from models.objectives import ObjectiveConfig, build_objective

    hidden = model.backbone.config.hidden_size
    return build_objective(ObjectiveConfig(name=name), hidden).to(device)


def masked(
    dense_cpu: nn.Module, device: torch.device, mode: str = "modality", cache_product: bool = True
) -> nn.Module:
    """A copy of ``dense_cpu`` masked as ``tickets prune`` does (on the CPU, then moved), or
    masked on the device itself for ``global`` (its one sort of every weight is the GPU's job)."""
    from models.structure import group_sizes
    from pruning.budget import solve
    from pruning.masks import ScoreMask, apply_masks

    model = copy.deepcopy(dense_cpu)
    if mode == "global":
        model.to(device)
        apply_masks(model, {"overall": SPARSITY}, mode="global")
    else:
        request = solve(SPARSITY, group_sizes(model), language=LANGUAGE, visual=VISUAL)
        apply_masks(model, request, mode="modality")
        model.to(device)
    for module in model.modules():
        if isinstance(module, ScoreMask):
            module.cache_product = cache_product
    return model.train()


def mask_checks(model: nn.Module) -> dict[str, Any]:
    """Exact zero counts of every mask on the device, and agreement with the CPU selection from
    the same scores (per tensor; or over the pool, for ``global``)."""
    from pruning.export import named_score_masks
    from pruning.masks import _mask_with_count

    masks = named_score_masks(model)
    wrong_count = [
        n for n, p in masks if p.pool is None and int((p.mask == 0).sum()) != p.num_pruned
    ]
    pooled = [p for _, p in masks if p.pool is not None]
    differ = []
    for name, p in masks:
        if p.pool is None:
            cpu = _mask_with_count(p.scores.detach().cpu(), p.num_pruned)
            if not torch.equal(cpu, p.mask.detach().cpu()):
                differ.append(name)
    if pooled:
        flat = torch.cat([p.scores.detach().cpu().flatten() for p in pooled])
        total = sum(p.num_pruned for p in pooled)
        cpu = _mask_with_count(flat, total)
        gpu = torch.cat([p.mask.detach().cpu().flatten() for p in pooled])
        if not torch.equal(cpu, gpu):
            differ.append("<global pool>")
        if int((gpu == 0).sum()) != total:
            wrong_count.append("<global pool>")
    return {
        "tensors": len(masks),
        "wrong_count": wrong_count,
        "differ_from_cpu": differ,
        "exact": not wrong_count and not differ,
    }


@torch.no_grad()
def predictions(model: nn.Module, batch: dict[str, Tensor], device: torch.device) -> Tensor:
    model.eval()
    inputs = [batch[k] for k in ("input_ids", "attention_mask", "visual_feats", "visual_pos")]
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
        logits, _ = model(*inputs)
    model.train()
    return logits.float().argmax(-1).cpu()


def correctness(size: Size, device: torch.device, steps: int) -> dict[str, Any]:
    from models.vqa_model import VQAModel, load_backbone, load_head
    from pruning.export import export_pruned
    from pruning.masks import recompute_masks
    from vqa.tokenize import build_wordpiece

    out: dict[str, Any] = {}
    dense_cpu = build_model(size)
    batch = gpu_batch(size, device)

    dense = copy.deepcopy(dense_cpu).to(device)
    step = train_step(dense, objective_for("lpf", dense, device), batch, device)
    out["stage1_losses"] = [float(step()) for _ in range(steps)]
    del dense, step

    model = masked(dense_cpu, device)
    step = train_step(model, objective_for("lmh", model, device), batch, device)
    out["stage2_losses"] = [float(step()) for _ in range(steps)]
    recompute_masks(model)
    out["masks_modality"] = mask_checks(model)
    for _ in range(steps):  # scores moved, masks re-binarised: the second mask trains too
        step()
    recompute_masks(model)
    out["masks_modality_again"] = mask_checks(model)

    answers = [f"answer {i}" for i in range(size.answers)]
    tokenizer = build_wordpiece(["what colour is the cat", "how many dogs are there"], 60)
    with tempfile.TemporaryDirectory() as tmp:
        export_pruned(model, answers, tokenizer, "bench: gpu\n", Path(tmp) / "export")
        exported = VQAModel(load_backbone(Path(tmp) / "export"), size.answers)
        load_head(exported, Path(tmp) / "export", answers)
    exported.to(device)
    want, got = predictions(model, batch, device), predictions(exported, batch, device)
    out["export_agreement"] = float((want == got).float().mean())
    del model, step, exported

    model = masked(dense_cpu, device, mode="global")
    step = train_step(model, objective_for("lmh", model, device), batch, device)
    out["stage2_global_losses"] = [float(step()) for _ in range(steps)]
    recompute_masks(model)
    out["masks_global"] = mask_checks(model)
    del model, step
    losses = out["stage1_losses"] + out["stage2_losses"] + out["stage2_global_losses"]
    out["ok"] = bool(
        all(math.isfinite(x) for x in losses)
        and out["masks_modality"]["exact"]
        and out["masks_modality_again"]["exact"]
        and out["masks_global"]["exact"]
        and out["export_agreement"] == 1.0
    )
    return out


def peak_bytes(build: Callable[[], Callable[[], Tensor]], device: torch.device, steps: int) -> int:
    """Peak allocated device memory of building a trial's model and taking ``steps`` steps."""
    if device.type != "cuda":
        return 0
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    step = build()
    for _ in range(steps):
        step()
    sync(device)
    peak = torch.cuda.max_memory_allocated(device) - before
    del step
    gc.collect()
    torch.cuda.empty_cache()
    return int(peak)


def largest_batch(dense_cpu: nn.Module, size: Size, device: torch.device, cap: int) -> dict:
    """The largest power-of-two batch (from ``size.batch`` up to ``cap``) whose masked stage-2
    step fits in device memory, and its samples/s."""
    model = masked(dense_cpu, device)
    objective = objective_for("lmh", model, device)
    fits, rate, batch = None, None, size.batch
    while batch <= cap:
        try:
            step = train_step(model, objective, gpu_batch(size, device, batch), device)
            step()
            rate = batch / per_call(step, device, 3)
            fits = batch
            del step
        except torch.cuda.OutOfMemoryError:
            break
        finally:
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
        batch *= 2
    del model
    return {"largest_batch": fits, "samples_per_s": rate, "cap": cap}


def selection_times(numel: int, device: torch.device) -> dict[str, Any]:
    """ms of the k-th smallest of ``numel`` scores (k = 70%) by kthvalue, sort and topk; the
    CPU path of ``pruning.masks`` (numpy's introselect) for comparison."""
    from pruning.masks import _kth_smallest

    flat = torch.randn(numel, device=device)
    k = int(SPARSITY * numel)
    ways = {
        "masks._kth_smallest": lambda: _kth_smallest(flat, k),
        "kthvalue": lambda: flat.kthvalue(k).values,
        "sort": lambda: flat.sort().values[k - 1],
        "topk": lambda: flat.topk(k, largest=False, sorted=False).values.max(),
    }
    times = {name: 1e3 * per_call(fn, device, 3) for name, fn in ways.items()}
    values = {name: float(fn()) for name, fn in ways.items()}
    cpu = flat.cpu()
    times["cpu numpy (masks._kth_smallest)"] = 1e3 * per_call(
        lambda: _kth_smallest(cpu, k), torch.device("cpu"), 1
    )
    return {"numel": numel, "ms": times, "agree": len(set(values.values())) == 1}


def copy_times(size: Size, device: torch.device) -> dict[str, float]:
    """ms to move one batch's visual features (B, 36, D) float32 to the device."""
    feats = make_batch(size)["visual_feats"]
    if device.type != "cuda":
        return {"bytes": feats.numel() * 4}
    pinned = feats.pin_memory()
    return {
        "bytes": feats.numel() * 4,
        "pageable_ms": 1e3 * per_call(lambda: feats.to(device, non_blocking=True), device, 5),
        "pin_then_copy_ms": 1e3
        * per_call(lambda: feats.pin_memory().to(device, non_blocking=True), device, 5),
        "pinned_ms": 1e3 * per_call(lambda: pinned.to(device, non_blocking=True), device, 5),
    }


def throughput(size: Size, device: torch.device, rounds: int, cap: int) -> dict[str, Any]:
    from pruning.masks import recompute_masks

    dense_cpu = build_model(size)
    batch = gpu_batch(size, device)

    def build(kind: str) -> Callable[[], tuple[nn.Module, Callable[[], Tensor]]]:
        def make() -> tuple[nn.Module, Callable[[], Tensor]]:
            if kind == "dense":
                model = copy.deepcopy(dense_cpu).to(device).train()
                return model, train_step(model, objective_for("lpf", model, device), batch, device)
            model = masked(dense_cpu, device, cache_product=kind == "masked")
            return model, train_step(model, objective_for("lmh", model, device), batch, device)

        return make

    kinds = ("dense", "masked", "masked_uncached")
    out: dict[str, Any] = {"batch": size.batch}
    out["peak_bytes"] = {k: peak_bytes(lambda k=k: build(k)()[1], device, 2) for k in kinds}

    built = {k: build(k)() for k in kinds}
    models = {k: step for k, (_, step) in built.items()}
    for step in models.values():  # kernels chosen, allocator warm, AdamW state made
        step()
        step()
    times: dict[str, list[float]] = {k: [] for k in kinds}
    for i in range(rounds):
        order = kinds if i % 2 == 0 else kinds[::-1]
        for k in order:
            times[k].append(per_call(models[k], device, 5))
    step_s = {k: statistics.median(v) for k, v in times.items()}
    out["step_ms"] = {k: 1e3 * v for k, v in step_s.items()}
    out["samples_per_s"] = {k: size.batch / v for k, v in step_s.items()}
    out["masked_over_dense"] = step_s["masked"] / step_s["dense"]
    out["uncached_over_dense"] = step_s["masked_uncached"] / step_s["dense"]

    # On the timed masked model: its scores have moved off their two-valued init.
    timed_masked = built["masked"][0]
    recompute_s = statistics.median(
        per_call(functools.partial(recompute_masks, timed_masked), device, 1) for _ in range(3)
    )
    out["recompute_ms"] = 1e3 * recompute_s
    out["recompute_share_over_t_m"] = recompute_s / T_M / step_s["masked"]
    del built, models, timed_masked
    gc.collect()
    out["largest"] = largest_batch(dense_cpu, size, device, cap)
    out["selection"] = selection_times(size.vocab * size.hidden, device)
    out["copy"] = copy_times(size, device)
    return out


def peak_tflops(name: str, given: float | None) -> float | None:
    if given:
        return given
    return next((v for key, v in PEAK_BF16_TFLOPS if key in name), None)


def flops(size: Size, device: torch.device, device_name: str, given: float | None) -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    dense_cpu = build_model(size)
    batch = gpu_batch(size, device)
    out: dict[str, Any] = {"peak_tflops_bf16": peak_tflops(device_name, given)}
    for kind in ("dense", "masked"):
        if kind == "dense":
            model = copy.deepcopy(dense_cpu).to(device).train()
            step = train_step(model, objective_for("lpf", model, device), batch, device)
        else:
            model = masked(dense_cpu, device)
            step = train_step(model, objective_for("lmh", model, device), batch, device)
        step()
        counter = FlopCounterMode(display=False)
        with counter:
            step()
        total = counter.get_total_flops()
        seconds = statistics.median(per_call(step, device, 5) for _ in range(3))
        achieved = total / seconds / 1e12
        peak = out["peak_tflops_bf16"]
        out[kind] = {
            "flops_per_step": total,
            "step_ms": 1e3 * seconds,
            "tflops": achieved,
            "share_of_peak": achieved / peak if peak else None,
        }
        del model, step
        gc.collect()
    return out


class DeviceProcesses(threading.Thread):
    """Polls ``nvidia-smi`` for the compute processes on the GPUs; keeps the largest count."""

    def __init__(self, interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.interval, self.most, self.samples = interval, 0, 0
        self.halt = threading.Event()

    def run(self) -> None:
        query = ["nvidia-smi", "--query-compute-apps=pid", "--format=csv,noheader"]
        while not self.halt.is_set():
            try:
                text = subprocess.run(query, capture_output=True, text=True, timeout=10).stdout
            except (OSError, subprocess.SubprocessError):
                return
            pids = {ln.strip() for ln in text.splitlines() if ln.strip()} - {str(os.getpid())}
            self.most, self.samples = max(self.most, len(pids)), self.samples + 1
            self.halt.wait(self.interval)


def packing(
    peak_trial_bytes: int | None, device: torch.device, dry: bool, work: Path
) -> dict[str, Any]:
    """Trials per device by memory, and a real 4-trial sweep sharing the device, under `work`."""
    from search.demo import build_stage1
    from search.tuner import collect, run_search

    out: dict[str, Any] = {}
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        context = total - free - torch.cuda.memory_reserved(device)  # CUDA context, not tensors
        # The trial's peak comes from the throughput section; alone, packing cannot size it.
        fits = int(0.95 * total // (peak_trial_bytes + context)) if peak_trial_bytes else None
        out.update(total_bytes=total, context_bytes=context, trial_peak_bytes=peak_trial_bytes,
                   trials_by_memory=fits)  # fmt: skip
    trials = 4
    overrides = [
        "search.name=pack",
        "search.searcher=random",
        "search.scheduler=fifo",
        f"search.num_samples={trials}",
        f"search.max_concurrent_trials={trials}",
        f"pruning.epochs={1 if dry else 4}",
        "search.resources={cpu: 1" + (", gpu: 0.25}" if device.type == "cuda" else "}"),
    ] + (["pretrain.epochs=1", "finetune.epochs=1"] if dry else [])
    cfg, _, _ = build_stage1(
        work, questions=600 if dry else 3000, overrides=overrides, echo=lambda m: None
    )
    watcher = DeviceProcesses()
    if device.type == "cuda":
        watcher.start()
    started = time.perf_counter()
    run_dir = run_search(cfg, None, None, echo=lambda m: None)
    out["sweep_s"] = time.perf_counter() - started
    watcher.halt.set()
    table, _ = collect(run_dir)
    out["device_processes_at_once"] = watcher.most if device.type == "cuda" else None
    out["trials_at_once"] = most_at_once(table)
    columns = ["trial_id", "status", "node", "device", "wall_s", "started_at", "ended_at"]
    out["trials"] = table[columns].astype({"started_at": str, "ended_at": str}).to_dict("records")
    out["run_dir"] = str(run_dir)
    # Four at once on the GPU; on the CPU of a dry run as many as its cores take (one each).
    wanted = trials if device.type == "cuda" else min(trials, os.cpu_count() or 1)
    out["ok"] = bool(
        len(table) == trials
        and (table["status"] == "finished").all()
        and table["device"].nunique() == 1
        and out["trials_at_once"] >= wanted
    )
    return out


def most_at_once(table: Any) -> int:
    """The most trials whose [started_at, ended_at] intervals of trials.parquet overlap."""
    events = [(t, +1) for t in table["started_at"].dropna()]
    events += [(t, -1) for t in table["ended_at"].dropna()]
    running = most = 0
    for _, step in sorted(events, key=lambda e: (e[0], e[1])):  # an end before a start at a tie
        running += step
        most = max(most, running)
    return most


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU")
    parser.add_argument("--out", type=Path, default=Path("bench_gpu.json"))
    parser.add_argument("--sections", default=",".join(SECTIONS), help=",".join(SECTIONS))
    parser.add_argument("--rounds", type=int, default=0, help="timed rounds (0: 8, dry 2)")
    parser.add_argument("--max-batch", type=int, default=0, help="largest batch tried")
    parser.add_argument("--peak-tflops", type=float, default=None, help="bf16 dense peak")
    parser.add_argument("--work", type=Path, default=None,
                        help="keep the packing sweep's data and run here (default: a temporary "
                        "directory, removed)")  # fmt: skip
    args = parser.parse_args()
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    if unknown := [s for s in sections if s not in SECTIONS]:
        parser.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    if args.dry_run:
        device, size = torch.device("cpu"), SIZES["tiny"]
        torch.set_num_threads(min(2, os.cpu_count() or 1))
    elif torch.cuda.is_available():
        device, size = torch.device("cuda"), SIZES["base"]
    else:
        parser.error("no CUDA device; --dry-run runs the same code on the CPU at a tiny size")
    rounds = args.rounds or (2 if args.dry_run else 8)
    cap = args.max_batch or (4 * size.batch if args.dry_run else 8192)
    torch.backends.cuda.matmul.allow_tf32 = True  # as a user's GPU run would

    from models.vqa_model import describe_device

    name = describe_device(device)
    report: dict[str, Any] = {
        "device": name,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "size": dataclasses.asdict(size),
        "dry_run": args.dry_run,
        "commit": _commit(),
    }
    print(f"{name}, torch {torch.__version__}, CUDA {torch.version.cuda}, size {report['size']}")

    def save() -> None:
        tmp = args.out.with_name(args.out.name + ".tmp")
        tmp.write_text(json.dumps(report, indent=1, default=str) + "\n")
        tmp.replace(args.out)

    started = time.perf_counter()
    steps = 2 if args.dry_run else 3
    for section in sections:
        t0 = time.perf_counter()
        if section == "correctness":
            report[section] = correctness(size, device, steps)
        elif section == "throughput":
            report[section] = throughput(size, device, rounds, cap)
        elif section == "flops":
            report[section] = flops(size, device, name, args.peak_tflops)
        else:
            peak = report.get("throughput", {}).get("peak_bytes", {}).get("masked")
            with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
                work = args.work.resolve() if args.work else Path(tmp)
                report[section] = packing(peak, device, args.dry_run, work)
        report[section]["section_s"] = time.perf_counter() - t0
        print_section(section, report[section])
        save()
    report["total_s"] = time.perf_counter() - started
    save()
    print(f"total {report['total_s']:.0f} s; figures in {args.out}")


def print_section(name: str, r: dict[str, Any]) -> None:
    mib = 2**20
    print(f"--- {name} ({r['section_s']:.1f} s)")
    if name == "correctness":
        print(
            f"ok {r['ok']}: losses stage 1 {_f(r['stage1_losses'])}, stage 2 "
            f"{_f(r['stage2_losses'])}, global {_f(r['stage2_global_losses'])}"
        )
        for key in ("masks_modality", "masks_modality_again", "masks_global"):
            m = r[key]
            print(
                f"{key}: {m['tensors']} masks, exact {m['exact']} "
                f"(wrong count {m['wrong_count']}, differ from CPU {m['differ_from_cpu']})"
            )
        print(f"exported model agrees with the masked one on {100 * r['export_agreement']:.1f}%")
    elif name == "throughput":
        s, ms = r["samples_per_s"], r["step_ms"]
        for k in s:
            print(
                f"{k:<16} batch {r['batch']}: {ms[k]:8.1f} ms/step {s[k]:9.0f} samples/s, "
                f"peak {r['peak_bytes'][k] / mib:8.0f} MiB"
            )
        print(
            f"masked/dense {r['masked_over_dense']:.3f} (goal <= 1.05), uncached/dense "
            f"{r['uncached_over_dense']:.3f}"
        )
        print(
            f"recompute {r['recompute_ms']:.1f} ms = {100 * r['recompute_share_over_t_m']:.2f}% "
            f"of a step over t_m = {T_M}"
        )
        big = r["largest"]
        print(
            f"largest batch that fits (cap {big['cap']}): {big['largest_batch']}, "
            f"{big['samples_per_s'] or 0:.0f} samples/s"
        )
        sel = r["selection"]
        print(
            f"k-th value of {sel['numel']:,} scores (agree {sel['agree']}): "
            + ", ".join(f"{k} {v:.1f} ms" for k, v in sel["ms"].items())
        )
        print("batch copy: " + ", ".join(f"{k} {v:.2f}" for k, v in r["copy"].items()))
    elif name == "flops":
        for k in ("dense", "masked"):
            f = r[k]
            share = f"{100 * f['share_of_peak']:.1f}%" if f["share_of_peak"] else "peak unknown"
            print(
                f"{k:<7} {f['flops_per_step'] / 1e9:.2f} GFLOP/step in {f['step_ms']:.1f} ms: "
                f"{f['tflops']:.1f} TFLOP/s, {share} of {r['peak_tflops_bf16']} (goal >= 50%)"
            )
    else:
        if r.get("trials_by_memory") is not None:
            print(
                f"trials by memory: {r['trials_by_memory']} (trial peak "
                f"{r['trial_peak_bytes'] / mib:.0f} MiB + context {r['context_bytes'] / mib:.0f} "
                f"MiB of {r['total_bytes'] / mib:.0f} MiB)"
            )
        print(
            f"sweep ok {r['ok']} in {r['sweep_s']:.0f} s: {r['trials_at_once']} trials at once "
            f"(trials.parquet times), processes on the device at once (nvidia-smi): "
            f"{r['device_processes_at_once']}"
        )
        for t in r["trials"]:
            print(
                f"  {t['trial_id']} {t['status']} node {str(t['node'])[:12]} {t['device']} "
                f"{t['wall_s']:.1f} s"
            )


def _f(values: list[float]) -> str:
    return "[" + ", ".join(f"{v:.4f}" for v in values) + "]"


def _commit() -> str | None:
    try:
        return (
            subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"],
                capture_output=True,
                text=True,
                cwd=Path(__file__).parent,
            ).stdout.strip()
            or None
        )
    except OSError:
        return None


if __name__ == "__main__":
    main()
