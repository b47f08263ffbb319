"""Model directories that do not fit are refused with one line; the hub's LxmertForPreTraining
layout and sharded checkpoints are read. The CLI cases run the installed `tickets` in a fresh
process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file
from transformers import LxmertConfig, LxmertForPreTraining, LxmertModel

from models.vqa_model import load_backbone
from tests.conftest import Bench, tiny_run_config
from vqa.errors import InputError
from vqa.tokenize import load_tokenizer

TICKETS = str(Path(sys.executable).parent / "tickets")
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def tiny_config(bench: Bench) -> LxmertConfig:
    """An LXMERT small enough for a test, fitting `bench`'s tokenizer and features."""
    return LxmertConfig(
        vocab_size=len(load_tokenizer(bench.data.tokenizer_dir)),
        hidden_size=16, num_attention_heads=2, intermediate_size=32, l_layers=1, x_layers=1,
        r_layers=1, visual_feat_dim=bench.data.store.feature_dim, visual_pos_dim=4,
        num_qa_labels=5, num_object_labels=7, num_attr_labels=3,
    )  # fmt: skip


def with_tokenizer(bench: Bench, out: Path) -> Path:
    """Copy the data cache's tokenizer into the model directory `out`, as a real one has it."""
    for f in bench.data.tokenizer_dir.iterdir():
        shutil.copy(f, out / f.name)
    return out


def finetune(bench: Bench, tmp_path: Path, checkpoint: Path) -> subprocess.CompletedProcess:
    raw = tiny_run_config(
        bench, tmp_path, model={"checkpoint": str(checkpoint)}, objective={"name": "bce"},
        finetune={"output_dir": str(tmp_path / "ft"), "epochs": 1, "batch_size": 64, "lr": 1e-3},
    )  # fmt: skip
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump(raw, sort_keys=False))
    return subprocess.run([TICKETS, "finetune", str(cfg)], env=ENV, capture_output=True,
                          text=True, timeout=300)  # fmt: skip


def test_module_prefixed_weights_are_refused_by_finetune(tiny_bench: Bench, tmp_path: Path) -> None:
    ckpt = tmp_path / "ddp"
    LxmertModel(tiny_config(tiny_bench)).save_pretrained(str(ckpt))
    weights = ckpt / "model.safetensors"
    state = load_file(str(weights))
    save_file({f"module.{k}": v for k, v in state.items()}, str(weights), metadata={"format": "pt"})
    with_tokenizer(tiny_bench, ckpt)

    run = finetune(tiny_bench, tmp_path, ckpt)
    assert run.returncode == 2, run.stderr
    lines = run.stderr.splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith(f"error: {weights}: cannot load the LXMERT checkpoint: ")
    assert f"{len(state)} of {len(state)} backbone weights missing (embeddings." in lines[0]
    assert "other keys such as module.embeddings." in lines[0]
    assert not (tmp_path / "ft").exists()


def test_hub_pretraining_checkpoint_is_accepted_with_one_summary_line(
    tiny_bench: Bench, tmp_path: Path
) -> None:
    ckpt = tmp_path / "hub"
    pre = LxmertForPreTraining(tiny_config(tiny_bench))
    pre.save_pretrained(str(ckpt))
    with_tokenizer(tiny_bench, ckpt)
    stored = load_file(str(ckpt / "model.safetensors"))
    heads = [k for k in stored if not k.startswith("lxmert.")]
    assert heads and all(k.startswith(("cls.", "obj_predict_head.", "answer_head.")) for k in heads)

    said: list[str] = []
    backbone = load_backbone(ckpt, log=said.append)
    for name, value in backbone.state_dict().items():
        assert torch.equal(value, pre.lxmert.state_dict()[name]), name
    assert said == [
        f"{ckpt / 'model.safetensors'}: LXMERT backbone loaded; {len(heads)} weights of its "
        "pre-training heads left unused (answer_head 6, cls 7, obj_predict_head 10)"
    ]

    run = finetune(tiny_bench, tmp_path, ckpt)
    assert run.returncode == 0, run.stderr
    assert run.stderr.splitlines() == said, run.stderr  # transformers' load report is not shown
    assert (tmp_path / "ft" / "best" / "model.safetensors").is_file()


def test_sharded_checkpoint_loads_with_equal_weights(tiny_bench: Bench, tmp_path: Path) -> None:
    ckpt = tmp_path / "sharded"
    model = LxmertModel(tiny_config(tiny_bench))
    model.save_pretrained(str(ckpt), max_shard_size="50KB")
    assert not (ckpt / "model.safetensors").exists()
    index = json.loads((ckpt / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1
    said: list[str] = []
    loaded = load_backbone(ckpt, log=said.append)
    assert said == []
    expected = model.state_dict()
    assert loaded.state_dict().keys() == expected.keys()
    for name, value in loaded.state_dict().items():
        assert torch.equal(value, expected[name]), name

    (ckpt / shards[-1]).unlink()
    with pytest.raises(InputError) as info:
        load_backbone(ckpt)
    assert str(info.value) == (
        f"{ckpt / 'model.safetensors.index.json'}: shard {shards[-1]} not found in {ckpt}"
    )


def test_weights_of_another_shape_or_foreign_keys_are_refused(
    tiny_bench: Bench, tmp_path: Path
) -> None:
    cfg = tiny_config(tiny_bench)
    wide = tmp_path / "wide"
    LxmertModel(LxmertConfig(**{**cfg.to_dict(), "intermediate_size": 48})).save_pretrained(wide)
    (wide / "config.json").write_text(json.dumps({**cfg.to_dict(), "intermediate_size": 32}))
    with pytest.raises(InputError) as info:
        load_backbone(wide)
    assert str(info.value) == (
        f"{wide / 'model.safetensors'}: cannot load the LXMERT checkpoint: 12 weights of another "
        "shape than config.json says, e.g. encoder.layer.0.intermediate.dense.bias (48,) in the "
        "file, (32,) by the config"
    )

    extra = tmp_path / "extra"
    LxmertModel(cfg).save_pretrained(str(extra))
    state = load_file(str(extra / "model.safetensors"))
    state["adapter.down.weight"] = torch.zeros(2, 2)
    save_file(state, str(extra / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(InputError) as info:
        load_backbone(extra)
    assert str(info.value) == (
        f"{extra / 'model.safetensors'}: cannot load the LXMERT checkpoint: 1 keys that are not "
        "LXMERT weights (adapter.down.weight)"
    )
