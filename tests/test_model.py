"""The VQA model: a plain transformers directory; checkpoints and configs are checked."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import LxmertModel

from models.evaluate import predict
from models.train import build_model
from models.vqa_model import (
    VQAModel,
    check_model_dir,
    load_backbone,
    load_head,
    pick_device,
    save_model_dir,
)
from search.config import validate_config
from tests.conftest import Bench, tiny_run_config
from vqa.errors import InputError
from vqa.tokenize import load_tokenizer


def _cfg(bench: Bench, out: Path, **blocks: dict):
    return validate_config(tiny_run_config(bench, out, **blocks), "test")


def test_pretrained_directory_is_a_plain_from_pretrained_directory(
    tiny_bench: Bench, tiny_pretrained: Path
) -> None:
    names = {p.name for p in tiny_pretrained.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "answer_head.safetensors",
            "answers.json", "config.yaml"} <= names  # fmt: skip
    assert not any(n.endswith((".bin", ".pt", ".pkl")) for n in names)
    plain = LxmertModel.from_pretrained(str(tiny_pretrained), local_files_only=True)
    assert plain.config.hidden_size == 16
    assert json.loads((tiny_pretrained / "answers.json").read_text()) == tiny_bench.data.answers


def test_model_directory_round_trip_predicts_the_same(
    tiny_bench: Bench, tiny_pretrained: Path, tmp_path: Path
) -> None:
    data = tiny_bench.data
    cfg = _cfg(tiny_bench, tmp_path)
    model, tokenizer = build_model("finetune", cfg.model, cfg.pretrain, data)
    assert load_head(model, tiny_pretrained, data.answers)  # same vocabulary: head reused
    model.eval()
    out = tmp_path / "copy"
    out.mkdir()
    save_model_dir(model, data.answers, tokenizer, "x: 1\n", out)
    again = VQAModel(load_backbone(out), data.num_answers)
    assert load_head(again, out, data.answers)
    again.eval()
    split = data.split("dev")
    batch = data.make_batch(split, np.arange(20))
    args = (batch.input_ids, batch.attention_mask, batch.visual_feats, batch.visual_pos)
    with torch.no_grad():
        torch.testing.assert_close(model(*args)[0], again(*args)[0], rtol=0, atol=0)
    # Prediction takes the argmax of the main logits only.
    with torch.no_grad():
        logits = model(*args)[0]
    preds = predict(model, data, "dev", torch.device("cpu"), batch_size=7)[:20]
    assert preds == [data.answers[i] for i in logits.argmax(-1).tolist()]


def test_head_is_not_reused_for_another_vocabulary(tiny_bench: Bench, tiny_pretrained: Path,
                                                   tmp_path: Path) -> None:  # fmt: skip
    model = VQAModel(load_backbone(tiny_pretrained), tiny_bench.data.num_answers)
    before = model.head[-1].weight.clone()
    assert not load_head(model, tiny_pretrained, ["other", "answers"] + tiny_bench.data.answers)
    assert torch.equal(model.head[-1].weight, before)


@pytest.mark.parametrize(
    "damage,needle",
    [
        ("missing", "checkpoint directory not found"),
        ("no_config", "no config.json"),
        ("no_weights", "no model.safetensors or pytorch_model.bin"),
        ("truncated", "cannot load the LXMERT checkpoint"),
    ],
)
def test_bad_checkpoint_directories(tiny_pretrained: Path, tmp_path: Path, damage: str,
                                    needle: str) -> None:  # fmt: skip
    path = tmp_path / "ckpt"
    if damage != "missing":
        shutil.copytree(tiny_pretrained, path)
    if damage == "no_config":
        (path / "config.json").unlink()
    elif damage == "no_weights":
        (path / "model.safetensors").unlink()
    elif damage == "truncated":
        blob = (path / "model.safetensors").read_bytes()
        (path / "model.safetensors").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(InputError) as info:
        load_backbone(path)
    assert needle in str(info.value) and str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_checkpoint_must_fit_the_data(tiny_bench: Bench, tiny_pretrained: Path,
                                      tmp_path: Path) -> None:  # fmt: skip
    # A config.json that disagrees with its weights: a checkpoint of another model size.
    other = tmp_path / "other"
    shutil.copytree(tiny_pretrained, other)
    config = json.loads((other / "config.json").read_text())
    config["visual_feat_dim"] = 32
    (other / "config.json").write_text(json.dumps(config))
    cfg = _cfg(tiny_bench, tmp_path, model={"checkpoint": str(other)})
    with pytest.raises(InputError, match="cannot load the LXMERT checkpoint"):
        build_model("finetune", cfg.model, cfg.finetune, tiny_bench.data)
    # A sound checkpoint made for features of another dimension.
    wide = tmp_path / "wide"
    shutil.copytree(tiny_pretrained, wide)
    LxmertModel(LxmertModel.config_class.from_dict(config)).save_pretrained(str(wide))
    cfg = _cfg(tiny_bench, tmp_path, model={"checkpoint": str(wide)})
    with pytest.raises(InputError, match="visual_feat_dim 32 does not match"):
        build_model("finetune", cfg.model, cfg.finetune, tiny_bench.data)
    # A tokenizer other than the cache's is refused too.
    shutil.copytree(tiny_pretrained, tmp_path / "tok", dirs_exist_ok=True)
    tok = load_tokenizer(tmp_path / "tok")
    tok.add_tokens(["zzzunseen"])
    tok.save_pretrained(str(tmp_path / "tok"))
    cfg = _cfg(tiny_bench, tmp_path, model={"checkpoint": str(tmp_path / "tok")})
    with pytest.raises(InputError, match="tokenizer differs from the data cache"):
        build_model("finetune", cfg.model, cfg.finetune, tiny_bench.data)
    cfg = _cfg(tiny_bench, tmp_path, model={"checkpoint": None})
    with pytest.raises(InputError, match="model.checkpoint: required for finetune"):
        build_model("finetune", cfg.model, cfg.finetune, tiny_bench.data)


def test_device_choice() -> None:
    assert pick_device("cpu").type == "cpu"
    assert pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="no CUDA device"):
            pick_device("cuda")


def test_unknown_loss_is_a_config_error_naming_the_field(tiny_bench: Bench, tmp_path: Path) -> None:
    raw = tiny_run_config(tiny_bench, tmp_path, objective={"name": "focal"})
    with pytest.raises(InputError) as info:
        validate_config(raw, "run.yaml")
    assert str(info.value).startswith("run.yaml: objective.name: ")
    assert "focal" in str(info.value)


def test_checkpoint_check_accepts_a_complete_directory(tiny_pretrained: Path) -> None:
    assert check_model_dir(tiny_pretrained) == tiny_pretrained
