"""Masked object feature regression in pre-training (models/masked_objects.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from models.config import ArchitectureConfig, MaskedObjectsConfig
from models.masked_objects import MaskedObjects
from search.config import validate_config
from tests.conftest import TINY_ARCH, Bench, tiny_run_config
from vqa.errors import InputError


def test_a_masked_box_loses_exactly_half_its_dimensions() -> None:
    objects = MaskedObjects(8, 16, MaskedObjectsConfig(share=0.3))
    chosen, kept = objects.draw((64, 36, 16), np.random.default_rng(5))
    assert chosen.shape == (64, 36) and kept.shape == (64, 36, 16)
    assert 0.25 < chosen.float().mean().item() < 0.35
    zeros = (kept == 0).sum(-1)
    assert torch.equal(zeros[chosen], torch.full_like(zeros[chosen], 8))
    assert int(zeros[~chosen].sum()) == 0
    # which dimensions go differs from box to box
    assert len({tuple(row.tolist()) for row in kept[chosen]}) > 0.9 * int(chosen.sum())
    again = objects.draw((64, 36, 16), np.random.default_rng(5))
    assert torch.equal(again[0], chosen) and torch.equal(again[1], kept)


def test_the_loss_reads_only_the_masked_boxes() -> None:
    torch.manual_seed(0)
    objects = MaskedObjects(8, 16, MaskedObjectsConfig(share=0.5, weight=2.0))
    vision, feats = torch.randn(4, 10, 8), torch.randn(4, 10, 16)
    chosen = torch.zeros(4, 10, dtype=torch.bool)
    chosen[0, 3] = chosen[2, 7] = True
    loss = objects.loss(vision, feats, chosen)
    expected = 2.0 * torch.mean((objects.head(vision[chosen]) - feats[chosen]) ** 2)
    assert loss.item() == pytest.approx(expected.item())
    other = vision.clone()
    other[1] += 5.0  # no masked box in question 1
    assert objects.loss(other, feats, chosen).item() == pytest.approx(loss.item())
    assert objects.loss(vision, feats, torch.zeros_like(chosen)).item() == 0.0


def test_read_from_encoder_gives_the_visual_state_before_any_cross_modal_layer() -> None:
    from models.vqa_model import VQAModel, small_backbone

    torch.manual_seed(0)
    arch = ArchitectureConfig(hidden_size=16, num_attention_heads=2, intermediate_size=32,
                              r_layers=2, dropout=0.0)  # fmt: skip
    model = VQAModel(small_backbone(arch, vocab_size=30, feature_dim=12), num_answers=5).eval()
    mask, feats, pos = (
        torch.ones(3, 6, dtype=torch.long),
        torch.randn(3, 4, 12),
        torch.rand(3, 4, 4),
    )
    one, other = torch.randint(0, 30, (3, 6)), torch.randint(0, 30, (3, 6))
    with torch.no_grad():
        states = [model.forward_with_states(q, mask, feats, pos) for q in (one, other)]
        encoder, output = [s[3] for s in states], [s[2] for s in states]
        # the second r-layer's output, computed by hand from the visual input alone
        encoder_module = model.backbone.encoder
        hand = encoder_module.visn_fc(feats, pos)
        for layer in encoder_module.r_layers:
            hand = layer(hand, None)[0]
    assert encoder[0].shape == output[0].shape == (3, 4, 16)
    # The question reaches the visual stream only through the cross-modal layers.
    assert torch.allclose(encoder[0], encoder[1]) and not torch.allclose(output[0], output[1])
    assert torch.allclose(encoder[0], hand, atol=1e-6)


def test_pretraining_with_masked_objects_keeps_its_head_out_of_the_model(
    tiny_bench: Bench, tmp_path: Path
) -> None:
    from transformers import LxmertModel

    from models.train import fit

    raw = tiny_run_config(tiny_bench, tmp_path)
    plain = validate_config(raw, "run").blocks_yaml("pretrain")
    assert "masked_objects" not in plain  # a config without the task saves what it always did
    raw["pretrain"]["masked_objects"] = {"share": 0.5}
    cfg = validate_config(raw, "run")
    saved = cfg.blocks_yaml("data", "pretrain")
    assert yaml.safe_load(saved)["pretrain"]["masked_objects"] == {"share": 0.5, "weight": 1.0}
    metrics = fit("pretrain", cfg.data, cfg.model, None, cfg.pretrain, saved)
    assert metrics["complete"] and len(metrics["history"]) == 2
    out = tmp_path / "pre"
    head = load_file(str(out / "last" / "objective.safetensors"))
    assert head["objects.head.3.weight"].shape == (16, TINY_ARCH["hidden_size"])
    backbone = LxmertModel.from_pretrained(out / "model")  # an ordinary checkpoint directory
    assert backbone.config.visual_feat_dim == 16
    with open(out / "model" / "model.safetensors", "rb") as f:
        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
    assert not any("objects" in key for key in header)
    assert yaml.safe_load((out / "config.yaml").read_text())["pretrain"]["masked_objects"]
    raw["pretrain"]["masked_objects"] = {"share": 0.5, "read_from": "encoder"}
    recorded = yaml.safe_load(validate_config(raw, "run").blocks_yaml("pretrain"))["pretrain"]
    assert recorded["masked_objects"] == {"share": 0.5, "weight": 1.0, "read_from": "encoder"}


def test_pretraining_reads_the_masked_boxes_where_read_from_says(
    tiny_bench: Bench, tmp_path: Path
) -> None:
    from models.train import fit

    losses = {}
    for where in ("output", "encoder"):
        raw = tiny_run_config(tiny_bench, tmp_path / where)
        raw["pretrain"].update(epochs=1, masked_objects={"share": 0.5, "read_from": where})
        cfg = validate_config(raw, "run")
        metrics = fit("pretrain", cfg.data, cfg.model, None, cfg.pretrain,
                      cfg.blocks_yaml("data", "pretrain"))  # fmt: skip
        losses[where] = metrics["history"][0]["train_loss"]
    # Same seed, data and masks: only the state the head reads differs.
    assert losses["output"] != pytest.approx(losses["encoder"], rel=1e-6)


def test_a_bad_share_or_read_from_is_refused_by_name(tiny_bench: Bench, tmp_path: Path) -> None:
    raw = tiny_run_config(tiny_bench, tmp_path)
    raw["pretrain"]["masked_objects"] = {"share": 0}
    with pytest.raises(InputError, match=r"pretrain\.masked_objects\.share"):
        validate_config(raw, "run")
    raw["pretrain"]["masked_objects"] = {"read_from": "cross"}
    with pytest.raises(InputError, match=r"pretrain\.masked_objects\.read_from"):
        validate_config(raw, "run")
