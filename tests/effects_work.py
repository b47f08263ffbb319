"""The effect tests' training runs, shared out to worker processes with one torch thread each.

On CI's two cores two runs side by side beat one run on two threads: a demo-size step runs
only 1.4x faster on two threads than on one (docs/BENCHMARKS.md, `bench_train.py --threads`),
so two one-thread workers train up to 1.5x as many samples per second. Each run is an ordinary
`fit` / `prune` of a plain config, seeded by it, so its result does not depend on which worker
runs it or when.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)


def worker_pool() -> ProcessPoolExecutor:
    """Up to two spawned workers (fork is unsafe once torch has started threads)."""
    workers = max(1, min(2, os.cpu_count() or 1))
    return ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context("spawn"), initializer=_one_thread
    )


def pretrain(raw: dict) -> None:
    """`fit("pretrain")` of the plain run config `raw`."""
    from models.train import fit
    from search.config import validate_config

    cfg = validate_config(raw, "effects")
    fit("pretrain", cfg.data, cfg.model, None, cfg.pretrain, cfg.blocks_yaml("data", "pretrain"))


def finetune(raw: dict) -> dict:
    """Stage 1 of the plain run config `raw`; its metrics."""
    from models.train import fit
    from search.config import validate_config

    c = validate_config(raw, "effects")
    return fit("finetune", c.data, c.model, c.objective, c.finetune,
               c.blocks_yaml("data", "model", "objective", "finetune"))  # fmt: skip


def prune_run(raw: dict) -> dict:
    """Stage 2 (mask training) of the plain run config `raw`; its metrics."""
    from pruning.train import prune
    from search.config import validate_config

    cfg = validate_config(raw, "effects").resolved()
    return prune(cfg.data, cfg.pruning, None, cfg.blocks_yaml("data", "pruning"))
