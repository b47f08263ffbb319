"""Mask-training step against dense fine-tuning of the same LXMERT and batch, interleaved.

    .venv/bin/python scripts/bench_mask.py [--sizes demo,medium,base] [--steps N] [--threads T]

For each size, one process holds a dense VQAModel and a deep copy of it masked with
``pruning.masks.apply_masks(model, {"overall": 0.5}, mode="uniform")`` (backbone frozen; scores and
answer head train). Both take the same full step on the same random batch: forward, BCE against
random soft targets, backward, gradient clipping 1.0, AdamW over their trainable parameters. After
warm-up the two alternate (the first of each pair alternates too), so load from other processes
falls on both alike; medians per variant, their ratio (goal <= 1.05x) and the median of the
per-pair ratios (steady when the load drifts). OpenMP waits passively unless OMP_WAIT_POLICY is
set (the cores are shared). Then ``recompute_masks`` is timed and amortised over t_m = 100 steps
as a share of the masked step (goal <= 2%). Peak memory: each variant runs a few steps in a fresh
spawned process whose peak RSS (``VmHWM``) less its RSS after imports is the model + training
footprint; the table gives the masked/dense ratio of those footprints.
"""

from __future__ import annotations

import argparse
import copy
import gc
import multiprocessing as mp
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

# Other processes share the two cores: OpenMP threads that spin while a partner thread is
# descheduled made 2-thread steps 5-30x slower and erratic here. Passive waiting keeps them sane.
# Read when torch loads OpenMP, so it is set before the import; the spawned children inherit it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
from torch import nn  # noqa: E402

T_M = 100  # DESIGN.md §5: thresholds recomputed every t_m steps
SPARSITY = 0.5
TOKENS, BOXES = 20, 36


@dataclass(frozen=True)
class Size:
    """One model size and the batch it is stepped with."""

    hidden: int
    heads: int
    intermediate: int
    layers: tuple[int, int, int]  # language, visual (r), cross (x)
    vocab: int
    feature_dim: int
    batch: int
    answers: int
    steps: int  # default timed pairs; fewer on big models to keep the run to minutes


SIZES: dict[str, Size] = {
    # The demo's LXMERT (ArchitectureConfig defaults) with bench_train.py's vocabulary and features.
    "demo": Size(64, 4, 256, (1, 1, 1), 200, 64, 64, 50, 40),
    "medium": Size(256, 4, 1024, (2, 2, 2), 30522, 2048, 32, 50, 20),
    # lxmert-base-uncased's architecture (BERT vocabulary, bottom-up 2048-d features, 3129
    # answers as LXMERT's VQA head) at bench_train.py's batch: about 3 s a step on 2 cores.
    "base": Size(768, 12, 3072, (9, 5, 5), 30522, 2048, 8, 3129, 6),
}


def build_model(size: Size, seed: int = 0) -> nn.Module:
    """A randomly initialised VQAModel of ``size`` (train mode, dropout as configured)."""
    from models.config import ArchitectureConfig
    from models.vqa_model import VQAModel, small_backbone

    torch.manual_seed(seed)
    lang, visn, cross = size.layers
    arch = ArchitectureConfig(
        hidden_size=size.hidden,
        num_attention_heads=size.heads,
        intermediate_size=size.intermediate,
        l_layers=lang,
        r_layers=visn,
        x_layers=cross,
    )
    return VQAModel(small_backbone(arch, size.vocab, size.feature_dim), size.answers).train()


def masked_copy(model: nn.Module) -> nn.Module:
    from pruning.masks import apply_masks

    masked = copy.deepcopy(model)
    apply_masks(masked, {"overall": SPARSITY}, mode="uniform")
    return masked


def make_batch(size: Size, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    b = size.batch
    lengths = torch.randint(TOKENS // 2, TOKENS + 1, (b, 1), generator=g)
    xy = torch.rand(b, BOXES, 2, generator=g) * 0.5
    return {
        "input_ids": torch.randint(0, size.vocab, (b, TOKENS), generator=g),
        "attention_mask": (torch.arange(TOKENS) < lengths).long(),  # padded questions
        "visual_feats": torch.randn(b, BOXES, size.feature_dim, generator=g),
        "visual_pos": torch.cat([xy, xy + 0.5 * torch.rand(b, BOXES, 2, generator=g)], -1),
        # Sparse soft scores, as VQA targets are: a few answers per question in (0, 1].
        "targets": torch.rand(b, size.answers, generator=g)
        * (torch.rand(b, size.answers, generator=g) < 0.05),
    }


def make_step(model: nn.Module, batch: dict[str, torch.Tensor]) -> Callable[[], None]:
    """One training step of ``model`` on ``batch`` over its trainable parameters."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=5e-5, weight_decay=0.0)  # DESIGN.md §5 defaults
    inputs = {k: v for k, v in batch.items() if k != "targets"}
    targets = batch["targets"]

    def step() -> None:
        logits, _ = model(**inputs)
        loss = nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="mean")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()

    return step


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def _timed(fn: Callable[[], None]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _status_kib(field: str) -> int:
    """``VmRSS``/``VmHWM`` of this process from /proc, KiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def _memory_child(name: str, masked: bool, steps: int, threads: int, queue: mp.Queue) -> None:
    """Run in a fresh process: footprint (peak RSS - RSS after imports), MiB.

    Not ``ru_maxrss``: Linux carries it over fork and exec, so a spawned child starts with its
    parent's peak. ``VmHWM`` belongs to the child's own address space."""
    torch.set_num_threads(threads)
    import models.vqa_model  # noqa: F401  (imported before the baseline reading)
    import pruning.masks  # noqa: F401

    try:  # reset the high-water mark so import transients do not count
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    base = _status_kib("VmRSS")
    size = SIZES[name]
    model = build_model(size)
    if masked:
        from pruning.masks import apply_masks

        apply_masks(model, {"overall": SPARSITY}, mode="uniform")
    step = make_step(model, make_batch(size))
    for _ in range(steps):
        step()
    queue.put((_status_kib("VmHWM") - base) / 1024)


def peak_memory(name: str, masked: bool, steps: int, threads: int) -> float:
    ctx = mp.get_context("spawn")  # a fresh interpreter: nothing inherited in the peak
    queue = ctx.Queue()
    proc = ctx.Process(target=_memory_child, args=(name, masked, steps, threads, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


@dataclass
class Row:
    name: str
    params: int
    trainable_dense: int
    trainable_masked: int
    batch: int
    pairs: int
    dense_ms: float
    masked_ms: float
    pair_ratio: float
    recompute_ms: float
    dense_mib: float = 0.0
    masked_mib: float = 0.0

    @property
    def ratio(self) -> float:
        return self.masked_ms / self.dense_ms

    @property
    def recompute_pct(self) -> float:
        return 100 * self.recompute_ms / T_M / self.masked_ms


def _numel(model: nn.Module, trainable: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable)


def time_size(name: str, pairs: int, warmup: int, recompute_repeats: int) -> Row:
    from pruning.masks import recompute_masks

    size = SIZES[name]
    dense = build_model(size)
    masked = masked_copy(dense)
    batch = make_batch(size)
    steps = {"dense": make_step(dense, batch), "masked": make_step(masked, batch)}
    for _ in range(warmup):  # allocator, kernels, AdamW state
        steps["dense"]()
        steps["masked"]()
    times: dict[str, list[float]] = {"dense": [], "masked": []}
    for i in range(pairs):
        order = ("dense", "masked") if i % 2 == 0 else ("masked", "dense")
        for variant in order:
            times[variant].append(_timed(steps[variant]))
    # After the steps the scores have moved off their two-valued init, as in training.
    recompute = [_timed(lambda: recompute_masks(masked)) for _ in range(recompute_repeats)]
    return Row(
        name=name,
        params=_numel(dense),
        trainable_dense=_numel(dense, trainable=True),
        trainable_masked=_numel(masked, trainable=True),
        batch=size.batch,
        pairs=pairs,
        dense_ms=1e3 * statistics.median(times["dense"]),
        masked_ms=1e3 * statistics.median(times["masked"]),
        pair_ratio=statistics.median(
            [m / d for m, d in zip(times["masked"], times["dense"], strict=True)]
        ),
        recompute_ms=1e3 * statistics.median(recompute),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="demo,medium,base", help=f"of {','.join(SIZES)}")
    parser.add_argument("--steps", type=int, default=0, help="timed pairs per size (0: per size)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps of each variant")
    parser.add_argument("--recompute-repeats", type=int, default=3)
    parser.add_argument("--memory-steps", type=int, default=3)
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory processes")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    names = [n.strip() for n in args.sizes.split(",") if n.strip()]
    unknown = [n for n in names if n not in SIZES]
    if unknown:
        parser.error(f"unknown size(s) {', '.join(unknown)}; choose from {', '.join(SIZES)}")
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, torch threads {torch.get_num_threads()}, t_m {T_M}, "
          f"sparsity {SPARSITY} uniform, OMP_WAIT_POLICY {os.environ['OMP_WAIT_POLICY']}, "
          f"load average {_load()}")  # fmt: skip

    rows = []
    for name in names:
        row = time_size(name, args.steps or SIZES[name].steps, args.warmup, args.recompute_repeats)
        gc.collect()  # this size's models are gone before the memory processes build theirs
        if not args.no_memory:
            row.dense_mib = peak_memory(name, False, args.memory_steps, args.threads)
            row.masked_mib = peak_memory(name, True, args.memory_steps, args.threads)
        rows.append(row)
        print(f"{name}: dense {row.dense_ms:.1f} ms, masked {row.masked_ms:.1f} ms", flush=True)

    print()
    print(
        f"{'size':<7} {'params':>12} {'train d/m':>23} {'batch':>5} {'pairs':>5} "
        f"{'dense ms':>9} {'masked ms':>9} {'ratio':>6} {'pair':>6} "
        f"{'recomp ms':>9} {'recomp %':>8} {'dense MiB':>9} {'mask MiB':>9} {'mem':>5}"
    )
    for r in rows:
        mem = f"{r.masked_mib / r.dense_mib:5.2f}" if r.dense_mib else f"{'-':>5}"
        print(
            f"{r.name:<7} {r.params:>12,} {r.trainable_dense:>11,}/{r.trainable_masked:<11,} "
            f"{r.batch:>5} {r.pairs:>5} {r.dense_ms:>9.1f} {r.masked_ms:>9.1f} {r.ratio:>6.3f} "
            f"{r.pair_ratio:>6.3f} {r.recompute_ms:>9.1f} {r.recompute_pct:>7.2f}% "
            f"{r.dense_mib:>9.0f} {r.masked_mib:>9.0f} {mem}"
        )
    print(f"load average at the end {_load()} (other processes share the cores)")
    print("goals: ratio <= 1.05, recompute (amortised over t_m) <= 2% of a masked step")


if __name__ == "__main__":
    main()
