"""Stage-1 training throughput (samples/s) on the demo model and a base-size LXMERT, on this device.

    .venv/bin/python scripts/bench_train.py [--demo-steps 20] [--base-steps 3] [--base-batch 8] \
        [--threads 2 1]

Both models run the real stage-1 step (`models.train`'s forward, objective, backward, clip,
AdamW) on batches assembled from a synthetic cache; the base model gets 2048-d features as
bottom-up features have. Medians over the timed steps after one warm-up step. With
`--threads`, the demo model is timed at each torch thread count in turn, in `--rounds`
interleaved rounds of `--demo-steps` each (one row per count; the base model keeps the first).
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


def _time_steps(model, objective, data, split, batch: int, steps: int, device) -> list[float]:
    params = [p for p in list(model.parameters()) + list(objective.parameters())]
    opt = torch.optim.AdamW(params, lr=1e-5)
    rng = np.random.default_rng(0)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    times = []
    for i in range(steps + 1):
        b = data.make_batch(split, rng.choice(len(split), batch, replace=False)).to(device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with autocast:
            logits, pooled = model(b.input_ids, b.attention_mask, b.visual_feats, b.visual_pos)
        loss = objective(logits.float(), b.targets, b.prior, pooled.float())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i:  # the first step warms up allocators and kernels
            times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo-steps", type=int, default=20)
    parser.add_argument("--demo-batch", type=int, default=64)
    parser.add_argument("--base-steps", type=int, default=3)
    parser.add_argument("--base-batch", type=int, default=8)
    parser.add_argument("--objective", default="lmh")
    parser.add_argument("--threads", type=int, nargs="+", default=[torch.get_num_threads()])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from transformers import LxmertConfig, LxmertModel

    from models.config import ArchitectureConfig
    from models.objectives import ObjectiveConfig, build_objective
    from models.vqa_model import VQAModel, pick_device, small_backbone
    from search.config import load_config
    from vqa.cache import load_cache
    from vqa.prepare import prepare
    from vqa.synth import SynthSpec, generate

    device = pick_device("auto")
    print(f"device {device}, torch threads {args.threads}")
    with tempfile.TemporaryDirectory() as tmp:
        rows = []
        for name, dim in (("demo", 64), ("base", 2048)):
            root = Path(tmp) / name
            generate(SynthSpec(questions=1000, images=400, feature_dim=dim), root)
            cfg = load_config(root / "prepare.yaml").data
            prepare(cfg)
            data = load_cache(cfg.resolved().cache_dir)
            split = data.split("train")
            torch.manual_seed(0)
            if name == "demo":
                backbone = small_backbone(ArchitectureConfig(), 200, dim)
                batch, steps = args.demo_batch, args.demo_steps
            else:  # lxmert-base-uncased's architecture, random weights (no download)
                backbone = LxmertModel(LxmertConfig(visual_feat_dim=dim))
                batch, steps = args.base_batch, args.base_steps
            model = VQAModel(backbone, data.num_answers).to(device)
            objective = build_objective(ObjectiveConfig(name=args.objective),
                                        backbone.config.hidden_size).to(device)  # fmt: skip
            n_params = sum(p.numel() for p in model.parameters())
            counts = args.threads if name == "demo" else args.threads[:1]
            rounds = args.rounds if len(counts) > 1 else 1
            times: dict[int, list[float]] = {n: [] for n in counts}
            for _ in range(rounds):
                for n in counts:
                    torch.set_num_threads(n)
                    times[n] += _time_steps(model, objective, data, split, batch, steps, device)
            torch.set_num_threads(args.threads[0])
            for n in counts:
                step = statistics.median(times[n])
                rows.append((name, n, n_params, batch, len(times[n]), step, batch / step))
    print(f"{'model':<6} {'threads':>7} {'params':>12} {'batch':>6} {'steps':>6} {'s/step':>9} "
          f"{'samples/s':>10}")  # fmt: skip
    for name, n, n_params, batch, steps, step, sps in rows:
        print(f"{name:<6} {n:>7} {n_params:>12,} {batch:>6} {steps:>6} {step:>9.3f} {sps:>10.1f}")


if __name__ == "__main__":
    main()
