"""Prediction and evaluation of a VQA model on a split of the data cache."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from models.vqa_model import VQAModel
from vqa.baseline import evaluate_predictions
from vqa.cache import PreparedData


@torch.no_grad()
def split_logits(
    model: VQAModel, data: PreparedData, split_name: str, device: torch.device,
    batch_size: int = 512,
) -> Iterator[torch.Tensor]:  # fmt: skip
    """The main logits (float32, [batch, answers]) of the split's questions, batch by batch, in
    eval mode (bf16 autocast on CUDA); the model's train/eval mode is restored at the end."""
    split = data.split(split_name)
    was_training = model.training
    model.eval()
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    try:
        for start in range(0, len(split), batch_size):
            rows = np.arange(start, min(start + batch_size, len(split)))
            batch = data.make_batch(split, rows).to(device)
            with autocast:
                logits, _ = model(
                    batch.input_ids, batch.attention_mask, batch.visual_feats, batch.visual_pos
                )
            yield logits.float()
    finally:
        model.train(was_training)


def predict(model: VQAModel, data: PreparedData, split_name: str, device: torch.device,
            batch_size: int = 512) -> list[str]:  # fmt: skip
    """The predicted answer of every question of the split: argmax of the main logits only."""
    preds: list[str] = []
    for logits in split_logits(model, data, split_name, device, batch_size):
        preds += [data.answers[i] for i in logits.argmax(-1).tolist()]
    return preds


def evaluate_split(model: VQAModel, data: PreparedData, split_name: str, device: torch.device,
                   batch_size: int = 512) -> dict[str, float]:  # fmt: skip
    """Percent accuracy (official metric) overall, per answer type and, for VQA-VS, per OOD set."""
    preds = predict(model, data, split_name, device, batch_size)
    return evaluate_predictions(data, data.split(split_name), preds)


@torch.no_grad()
def image_dependence(model: VQAModel, data: PreparedData, split_name: str = "test") -> float:
    """Percent of `split_name`'s predictions (argmax of the main logits, CPU) that change when
    every box feature is redrawn as Gaussian noise of the mean and std of the split's images'
    features, each image counted once (0: the model answers from the question alone). The noise
    is seeded, so the figure is repeatable."""
    split = data.split(split_name)
    feats = data.store.gather(np.unique(split.feature_rows))[0]  # each image once
    mean, std = float(feats.mean()), float(feats.std())
    gen = torch.Generator().manual_seed(0)
    changed = 0
    was_training = model.training
    model.eval()
    try:
        for i in range(0, len(split), 512):
            b = data.make_batch(split, np.arange(i, min(i + 512, len(split))))
            noise = mean + std * torch.randn(b.visual_feats.shape, generator=gen)
            real = model(b.input_ids, b.attention_mask, b.visual_feats, b.visual_pos)[0]
            fake = model(b.input_ids, b.attention_mask, noise, b.visual_pos)[0]
            changed += int((real.argmax(-1) != fake.argmax(-1)).sum())
    finally:
        model.train(was_training)
    return 100.0 * changed / len(split)
