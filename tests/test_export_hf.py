"""The exported directory as a Hugging Face user meets it: `LxmertForQuestionAnswering` and
`LxmertModel.from_pretrained(OUT)` in a fresh process of plain transformers, on real batches of
the synthetic benchmark."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from models.config import ArchitectureConfig
from models.evaluate import predict, split_logits
from models.vqa_model import VQAModel, hf_name, question_answering_model, small_backbone, vqa_name
from pruning.export import export_pruned, named_score_masks, unpack_mask
from pruning.masks import apply_masks, mask_parameters, recompute_masks
from tests.conftest import Bench
from vqa.tokenize import load_tokenizer

TRIPLE = {"language": 0.9, "visual": 0.3, "cross": 0.75}

# What a user of plain transformers runs: nothing of this project is imported.
USER = """
import json, sys
import torch
from safetensors.torch import load_file, save_file
from transformers import LxmertForQuestionAnswering, LxmertModel

out, inputs, result = sys.argv[1:]
batches = load_file(inputs)
qa = LxmertForQuestionAnswering.from_pretrained(out, local_files_only=True).eval()
backbone = LxmertModel.from_pretrained(out, local_files_only=True).eval()
logits, answers, pooled = [], [], []
with torch.no_grad():
    for i in range(len(batches) // 4):
        x = {k: batches[f"{i}.{k}"] for k in ("input_ids", "attention_mask", "visual_feats",
                                              "visual_pos")}
        score = qa(**x).question_answering_score
        logits.append(score)
        answers += [qa.config.id2label[j] for j in score.argmax(-1).tolist()]
        pooled.append(backbone(**x).pooled_output)
state = {k: v.contiguous() for k, v in qa.state_dict().items()}
save_file({**{"state." + k: v for k, v in state.items()}, "logits": torch.cat(logits),
           "pooled": torch.cat(pooled)}, result + ".safetensors")
config = qa.config
with open(result + ".json", "w") as f:
    json.dump({"answers": answers, "num_qa_labels": config.num_qa_labels,
               "id2label": {str(k): v for k, v in config.id2label.items()},
               "label2id": config.label2id, "architectures": config.architectures}, f)
"""


def bench_model(data, seed: int = 0) -> VQAModel:
    """A tiny masked model over the benchmark's tokens, features and answers (random masks at
    exact counts). Untrained, its pooled output barely depends on the question, so the head's
    first layer standardises it over the test questions (a stand-in for a trained head): the
    argmax then varies from question to question."""
    torch.manual_seed(seed)
    cfg = ArchitectureConfig(
        hidden_size=18, num_attention_heads=2, intermediate_size=26, dropout=0.0,
        initializer_range=0.5,
    )  # fmt: skip
    vocab = len(load_tokenizer(data.tokenizer_dir))
    model = VQAModel(small_backbone(cfg, vocab, data.store.feature_dim), data.num_answers).eval()
    with torch.no_grad():
        model.backbone.embeddings.word_embeddings.weight[0].normal_()  # padding row: non-zero
    apply_masks(model, TRIPLE, mode="modality")
    g = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for scores in mask_parameters(model):
            scores.copy_(torch.randn(scores.shape, generator=g))
    recompute_masks(model)
    split = data.split("test")
    b = data.make_batch(split, np.arange(min(256, len(split))))
    with torch.no_grad():
        pooled = model(b.input_ids, b.attention_mask, b.visual_feats, b.visual_pos)[1]
        first = model.head[0]
        first.weight.div_(pooled.std(0))
        first.bias.copy_(-(first.weight @ pooled.mean(0)))
    return model


def test_names_map_both_ways() -> None:
    assert hf_name("backbone.encoder.x_layers.0.output.dense.weight") == (
        "lxmert.encoder.x_layers.0.output.dense.weight"
    )
    assert hf_name("head.3.bias") == "answer_head.logit_fc.3.bias"
    assert vqa_name("answer_head.logit_fc.0.weight") == "head.0.weight"
    assert vqa_name("lxmert.pooler.dense.weight") == "backbone.pooler.dense.weight"
    assert vqa_name("cls.predictions.bias") is None
    with pytest.raises(ValueError, match="not the name of a VQAModel weight"):
        hf_name("encoder.layer.0.weight")


def test_question_answering_model_refuses_what_it_cannot_name(tiny_bench: Bench) -> None:
    model = bench_model(tiny_bench.data)
    with pytest.raises(ValueError, match="without masks"):
        question_answering_model(model, tiny_bench.data.answers)
    with pytest.raises(ValueError, match="answers"):
        question_answering_model(model, tiny_bench.data.answers[:-1])


def test_export_loads_in_one_line_of_transformers(tiny_bench: Bench, tmp_path: Path) -> None:
    data = tiny_bench.data
    model = bench_model(data)
    split = data.split("test")
    ours = torch.cat(list(split_logits(model, data, "test", torch.device("cpu"), batch_size=64)))
    our_answers = predict(model, data, "test", torch.device("cpu"), batch_size=64)
    assert len(set(our_answers)) >= 4  # the argmax comparison below means something
    inputs = {}
    for i, start in enumerate(range(0, len(split), 64)):
        batch = data.make_batch(split, np.arange(start, min(start + 64, len(split))))
        for k in ("input_ids", "attention_mask", "visual_feats", "visual_pos"):
            inputs[f"{i}.{k}"] = getattr(batch, k).contiguous()
    save_file(inputs, str(tmp_path / "inputs.safetensors"))
    with torch.no_grad():
        our_pooled = torch.cat(
            [model(*[inputs[f"{i}.{k}"] for k in ("input_ids", "attention_mask", "visual_feats",
                                                  "visual_pos")])[1]
             for i in range(len(inputs) // 4)]
        )  # fmt: skip

    out = tmp_path / "export"
    export_pruned(model, data.answers, load_tokenizer(data.tokenizer_dir), "seed: 0\n", out)

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    result = tmp_path / "result"
    done = subprocess.run(
        [sys.executable, "-c", USER, str(out), str(tmp_path / "inputs.safetensors"), str(result)],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    facts = json.loads(result.with_suffix(".json").read_text())
    got = load_file(str(result.with_suffix(".safetensors")))

    # The trained head and the answer vocabulary, in the config a user reads.
    assert facts["architectures"] == ["LxmertForQuestionAnswering"]
    assert facts["num_qa_labels"] == data.num_answers == len(data.answers)
    assert facts["id2label"] == {str(i): a for i, a in enumerate(data.answers)}
    assert facts["label2id"] == {a: i for i, a in enumerate(data.answers)}
    # It predicts what the masked model predicted: the same answers, logits equal to rounding.
    assert facts["answers"] == our_answers
    torch.testing.assert_close(got["logits"], ours, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got["pooled"], our_pooled, rtol=1e-5, atol=1e-5)  # LxmertModel

    # masks.safetensors speaks the exported model's names, and its zeros are the weights' zeros.
    state = {k.removeprefix("state."): v for k, v in got.items() if k.startswith("state.")}
    masked = {hf_name(n) for n, _ in named_score_masks(model)}
    plain = {hf_name(k) for k in model.state_dict() if ".parametrizations." not in k}
    assert set(state) == plain | masked  # every weight of the VQAModel, nothing else
    packed = load_file(str(out / "masks.safetensors"))
    assert set(packed) <= set(state) and set(packed) == masked
    sparsity = json.loads((out / "sparsity.json").read_text())["tensors"]
    for name, bits in packed.items():
        weight = state[name]
        mask = unpack_mask(bits, list(weight.shape))
        assert torch.equal(weight == 0, mask == 0), name
        assert sparsity[name]["zeros"] == int((mask == 0).sum())
    # The head weights are the trained ones (not re-initialised by from_pretrained).
    for k, v in model.head.state_dict().items():
        assert torch.equal(state[hf_name("head." + k)], v), k
