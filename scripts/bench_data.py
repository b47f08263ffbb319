"""Batch assembly against one training step of the demo-size LXMERT, interleaved in one process.

    .venv/bin/python scripts/bench_data.py [--batch 256] [--repeats 30] [--threads N]

Assembles a batch of B training questions from the prepared cache (features and boxes gathered
from the memory-mapped HDF5 store, tokens, dense soft targets, prior rows) and times it against one
AdamW step of a small LXMERT + answer head with BCE on that batch. Prints the medians and their
ratio (goal: assembly <= 0.05 of a step). The demo model here is the feasibility prototype's size
(hidden 64, one layer per encoder, DESIGN.md §9).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.threads:
        torch.set_num_threads(args.threads)

    from transformers import LxmertConfig, LxmertModel

    from search.config import load_config
    from vqa.cache import load_cache
    from vqa.prepare import prepare
    from vqa.synth import SynthSpec, generate
    from vqa.tokenize import load_tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "bench"
        generate(SynthSpec(dataset="vqacp_v2"), root)  # the demo's default benchmark
        config = load_config(root / "prepare.yaml").data
        prepare(config)
        data = load_cache(config.resolved().cache_dir)
        split = data.split("train")
        vocab = len(load_tokenizer(data.tokenizer_dir))
        cfg = LxmertConfig(
            vocab_size=vocab,
            hidden_size=64,
            num_attention_heads=4,
            intermediate_size=256,
            l_layers=1,
            x_layers=1,
            r_layers=1,
            visual_feat_dim=data.store.feature_dim,
            visual_pos_dim=4,
        )
        torch.manual_seed(0)
        backbone = LxmertModel(cfg)
        head = torch.nn.Sequential(
            torch.nn.Linear(64, 128),
            torch.nn.GELU(),
            torch.nn.LayerNorm(128),
            torch.nn.Linear(128, data.num_answers),
        )
        params = list(backbone.parameters()) + list(head.parameters())
        opt = torch.optim.AdamW(params, lr=1e-4)
        rng = np.random.default_rng(0)

        def assemble():
            return data.make_batch(split, rng.choice(len(split), args.batch, replace=False))

        def step(batch) -> None:
            out = backbone(
                input_ids=batch.input_ids,
                attention_mask=batch.attention_mask,
                visual_feats=batch.visual_feats,
                visual_pos=batch.visual_pos,
            )
            logits = head(out.pooled_output)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                logits, batch.targets, reduction="sum"
            ) / len(batch.rows)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        for _ in range(3):  # warm-up: allocator, page cache, autograd graphs
            step(assemble())
        t_batch, t_step = [], []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            batch = assemble()
            t1 = time.perf_counter()
            step(batch)
            t2 = time.perf_counter()
            t_batch.append(t1 - t0)
            t_step.append(t2 - t1)

    mb, ms = statistics.median(t_batch), statistics.median(t_step)
    print(f"batch {args.batch}, {args.repeats} repeats, torch threads {torch.get_num_threads()}")
    print(f"assemble batch   median {mb * 1e3:8.2f} ms")
    print(f"training step    median {ms * 1e3:8.2f} ms")
    print(f"ratio assemble/step {mb / ms:.4f} (goal <= 0.05)")


if __name__ == "__main__":
    main()
