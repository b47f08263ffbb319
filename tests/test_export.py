"""Packed masks (save/load, errors) and the pruned-model export."""

from __future__ import annotations

import copy
import json
import math
import struct
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch.nn.utils import parametrize
from transformers import LxmertModel

from models.config import ArchitectureConfig
from models.structure import prunable_groups
from models.vqa_model import VQAModel, hf_name, load_backbone, load_head, small_backbone
from pruning.export import (
    FORMAT,
    FORMAT_V1,
    export_pruned,
    load_masks,
    named_score_masks,
    pack_masks,
    save_masks,
    unpack_mask,
)
from pruning.masks import ScoreMask, apply_masks, has_masks, mask_parameters, recompute_masks
from vqa.errors import InputError
from vqa.tokenize import build_wordpiece

TRIPLE = {"language": 0.9, "visual": 0.3, "cross": 0.75}
ANSWERS = ["yes", "no", "red", "blue", "2"]


def tiny_model(seed: int = 0) -> VQAModel:
    """Hidden 18 and intermediate 26, so most weight numels are not multiples of 8."""
    torch.manual_seed(seed)
    cfg = ArchitectureConfig(
        hidden_size=18, num_attention_heads=2, intermediate_size=26, dropout=0.0
    )
    model = VQAModel(small_backbone(cfg, vocab_size=51, feature_dim=7), len(ANSWERS))
    return model.eval()


def masked_model(seed: int = 0, sparsities: dict | None = None) -> VQAModel:
    """A tiny model with random (not magnitude) masks at exact counts."""
    model = tiny_model(seed)
    apply_masks(model, sparsities or TRIPLE, mode="modality")
    g = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for scores in mask_parameters(model):
            scores.copy_(torch.randn(scores.shape, generator=g))
    recompute_masks(model)
    return model


def batch(seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "input_ids": torch.randint(0, 51, (3, 6), generator=g),
        "attention_mask": torch.ones(3, 6, dtype=torch.long),
        "visual_feats": torch.randn(3, 4, 7, generator=g),
        "visual_pos": torch.rand(3, 4, 4, generator=g),
    }


def masks_of(model: VQAModel) -> dict[str, torch.Tensor]:
    return {name: p.mask.clone() for name, p in named_score_masks(model)}


def test_pack_unpack_round_trip_odd_sizes() -> None:
    model = masked_model()
    bits, meta = pack_masks(model)
    groups = prunable_groups(tiny_model())
    expected = [n for names in groups.values() for n in names]
    assert sorted(bits) == sorted(expected) and len(bits) == len(expected)
    masks = masks_of(model)
    assert sum(m.numel() % 8 != 0 for m in masks.values()) >= 10  # odd sizes are exercised
    for name, m in masks.items():
        assert bits[name].dtype == torch.uint8 and bits[name].numel() == math.ceil(m.numel() / 8)
        assert torch.equal(unpack_mask(bits[name], meta[name]["shape"]), m)
        assert meta[name]["num_pruned"] == int((m == 0).sum())
        group = next(g for g, names in groups.items() if name in names)
        assert meta[name]["group"] == group
        if group != "pooler":  # the pooler gets the size-weighted mean of the triple
            assert meta[name]["requested"] == TRIPLE[group]
    # Bit order is little: weight i is bit i % 8 of byte i // 8.
    packed = pack_masks(nn_linear_masked())[0]["weight"]
    assert packed.tolist() == [0b11111010, 0b1]
    with pytest.raises(ValueError, match="cannot hold"):
        unpack_mask(bits[name], [m.numel() + 8])


def nn_linear_masked() -> torch.nn.Module:
    """A bare Linear (9 weights) whose mask prunes flat positions 0 and 2."""
    layer = torch.nn.Linear(3, 3)
    scores = torch.tensor([0.0, 1, 0, 1, 1, 1, 1, 1, 1]).view(3, 3)
    parametrize.register_parametrization(layer, "weight", ScoreMask(scores, 2, 0.2, "language"))
    return layer


def test_save_load_restores_masks_and_outputs(tmp_path: Path) -> None:
    source = masked_model(seed=0)
    path = tmp_path / "m" / "masks.safetensors"
    save_masks(source, path)
    numels = [m.numel() for m in masks_of(source).values()]
    (header_len,) = struct.unpack("<Q", path.read_bytes()[:8])
    assert path.stat().st_size == 8 + header_len + sum(math.ceil(n / 8) for n in numels)
    assert header_len < 300 * len(numels)  # a small header: names, shapes, offsets, metadata
    assert list(tmp_path.joinpath("m").iterdir()) == [path]  # no temporary left behind
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata()["format"] == FORMAT
        # Keyed by LxmertForQuestionAnswering's names, which the export's model.safetensors uses.
        assert sorted(f.keys()) == sorted(hf_name(n) for n in masks_of(source))
        assert all(k.startswith("lxmert.") for k in f.keys())  # noqa: SIM118 (not a dict)

    # Same weights and request, other masks: loading brings back the source's masks.
    target = masked_model(seed=0)
    with torch.no_grad():
        for scores in mask_parameters(target):
            scores.copy_(torch.randn_like(scores))
    recompute_masks(target)
    before = masks_of(target)
    assert any(not torch.equal(before[n], m) for n, m in masks_of(source).items())
    scores_before = [s.clone() for s in mask_parameters(target)]
    load_masks(target, path)
    for name, m in masks_of(source).items():
        assert torch.equal(masks_of(target)[name], m), name
    after = mask_parameters(target)
    assert all(torch.equal(a, b) for a, b in zip(scores_before, after, strict=True))  # scores kept
    x = batch()
    assert torch.equal(target(**x)[0], source(**x)[0])


def rewrite(path: Path, out: Path, edit, fmt: str = FORMAT) -> Path:
    """Copy a mask file with `edit(bits, meta)` applied, as format `fmt`."""
    bits = load_file(str(path))
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["masks"])
    edit(bits, meta)
    save_file(bits, str(out), metadata={"format": fmt, "masks": json.dumps(meta)})
    return out


def old_names(bits, meta):
    """Rename a file's masks as format 1 named them: the VQAModel's own names."""
    for d in (bits, meta):
        for k in list(d):
            d["backbone." + k.removeprefix("lxmert.")] = d.pop(k)


def test_load_masks_reads_format_1_files(tmp_path: Path) -> None:
    """Mask files of earlier sweeps' checkpoints (format 1, the VQAModel's names) still load; each
    format takes only its own names."""
    source = masked_model(seed=0)
    new = tmp_path / "new.safetensors"
    save_masks(source, new)
    old = rewrite(new, tmp_path / "old.safetensors", old_names, fmt=FORMAT_V1)
    assert all(k.startswith("backbone.") for k in load_file(str(old)))
    for path in (new, old):
        target = masked_model(seed=0)
        with torch.no_grad():
            for scores in mask_parameters(target):
                scores.copy_(torch.randn_like(scores))
        recompute_masks(target)
        load_masks(target, path)
        assert all(torch.equal(m, masks_of(source)[n]) for n, m in masks_of(target).items())
    first = next(iter(masks_of(source)))
    mixed = [
        (rewrite(new, tmp_path / "a", lambda b, m: None, fmt=FORMAT_V1), hf_name(first)),
        (rewrite(new, tmp_path / "b", old_names), first),  # format 2 with format-1 names
    ]
    for path, name in mixed:
        with pytest.raises(InputError, match=f"mask for {name}, which the model has no mask for"):
            load_masks(masked_model(seed=0), path)


def test_load_masks_errors(tmp_path: Path) -> None:
    source = masked_model()
    good = tmp_path / "good.safetensors"
    save_masks(source, good)
    first = hf_name(next(iter(masks_of(source))))  # as the file names it
    weight = tmp_path / "w.safetensors"
    save_file({"x": torch.zeros(3)}, str(weight))
    other = tmp_path / "other.safetensors"
    save_file({"x": torch.zeros(3, dtype=torch.uint8)}, str(other), metadata={"format": "pt"})
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x80\x04not a safetensors file at all")

    last = hf_name(list(masks_of(source))[-1])  # errors on the last mask: nothing copied before

    def drop_bits(bits, meta):
        bits.pop(first)

    def drop_mask(bits, meta):
        bits.pop(first), meta.pop(first)

    def add_mask(bits, meta):
        bits["x"], meta["x"] = bits[first].clone(), meta[first]

    def flatten_shape(bits, meta):
        meta[last]["shape"] = [math.prod(meta[last]["shape"])]  # same number of bits

    def truncate(bits, meta):
        bits[last] = bits[last][:-1].clone()

    cases = [
        (tmp_path / "absent.safetensors", "mask file not found"),
        (garbage, "not a safetensors file"),
        (weight, "not a packed mask file"),
        (other, "not a packed mask file"),
        (rewrite(good, tmp_path / "a", drop_bits), "corrupt mask file"),
        (rewrite(good, tmp_path / "b", drop_mask), f"no mask for {first}"),
        (rewrite(good, tmp_path / "c", add_mask), "mask for x, which the model has no mask for"),
        (rewrite(good, tmp_path / "d", flatten_shape), f"{last} has shape"),
        (rewrite(good, tmp_path / "e", truncate), f"corrupt mask for {last}"),
    ]
    for path, message in cases:
        target = masked_model(seed=3)
        before = masks_of(target)
        with pytest.raises(InputError, match=message) as err:
            load_masks(target, path)
        assert str(path) in str(err.value) and "\n" not in str(err.value)
        assert all(torch.equal(before[n], m) for n, m in masks_of(target).items())  # untouched
    # Same names and shapes, another pooler sparsity: that zero count differs.
    assert last.endswith("pooler.dense.weight")
    target = masked_model(sparsities={**TRIPLE, "pooler": 0.5})
    before = masks_of(target)
    with pytest.raises(InputError, match=f"{last} has .* pruned weights, the model's mask") as err:
        load_masks(target, good)
    assert str(good) in str(err.value)
    assert all(torch.equal(before[n], m) for n, m in masks_of(target).items())


def test_export_pruned(tmp_path: Path) -> None:
    model = masked_model()
    with torch.no_grad():  # the padding row of the embeddings is zero at init: make it non-zero
        emb = model.backbone.embeddings.word_embeddings.parametrizations.weight.original
        emb[0].normal_()
    original = {n: p.clone() for n, p in model.named_parameters()}
    masks = masks_of(model)
    x = batch()
    logits = model(**x)[0]
    tok = build_wordpiece(["is the thing red?", "how many things?"] * 5, vocab_size=60)
    out = tmp_path / "export"

    report = export_pruned(model, ANSWERS, tok, "seed: 1\n", out)

    expected = ["config.json", "model.safetensors", "answer_head.safetensors", "answers.json"]
    expected += ["config.yaml", "tokenizer.json", "masks.safetensors", "sparsity.json"]
    assert set(expected) <= {p.name for p in out.iterdir()}
    assert not [p for p in tmp_path.iterdir() if p.name != "export"]  # no temporary left behind
    plain = LxmertModel.from_pretrained(str(out), local_files_only=True)
    exported = dict(plain.named_parameters())
    realised: dict[str, list[int]] = {}
    for name, m in masks.items():
        w = exported[name.removeprefix("backbone.")]
        orig = original[name.replace(".weight", ".parametrizations.weight.original")]
        assert torch.equal(w[m == 0], torch.zeros_like(w[m == 0])), name
        assert torch.equal(w[m == 1], orig[m == 1]), name
        group = next(p.group for n, p in named_score_masks(model) if n == name)
        row = realised.setdefault(group, [0, 0])
        row[0] += int((w == 0).sum())
        row[1] += w.numel()
    for group, (zeros, numel) in realised.items():
        assert report[group]["pruned"] == zeros and report[group]["numel"] == numel
        assert report[group]["realised"] == zeros / numel
    saved = json.loads((out / "sparsity.json").read_text())
    assert {k: v for k, v in saved.items() if k != "tensors"} == report
    assert set(saved["tensors"]) == {hf_name(n) for n in masks}  # the names of masks.safetensors
    for name, m in masks.items():
        row = saved["tensors"][hf_name(name)]
        assert row["pruned"] == row["zeros"] == int((m == 0).sum())
        assert row["realised"] == row["pruned"] / m.numel()

    # A VQAModel rebuilt from the directory predicts exactly the masked model's logits.
    rebuilt = VQAModel(load_backbone(out), len(ANSWERS)).eval()
    assert load_head(rebuilt, out, ANSWERS)
    assert torch.equal(rebuilt(**x)[0], logits)
    # The packed masks in the directory are the masked model's.
    fresh = masked_model(seed=0)
    load_masks(fresh, out / "masks.safetensors")
    assert all(torch.equal(m, masks[n]) for n, m in masks_of(fresh).items())

    # The masked model is unchanged.
    assert has_masks(model)
    assert all(torch.equal(p, original[n]) for n, p in model.named_parameters())
    assert all(torch.equal(m, masks[n]) for n, m in masks_of(model).items())
    assert torch.equal(model(**x)[0], logits)


def test_export_needs_masks(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs a masked model"):
        export_pruned(tiny_model(), ANSWERS, None, "", tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_export_replaces_existing_dir(tmp_path: Path) -> None:
    out = tmp_path / "export"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    tok = build_wordpiece(["is the thing red?"] * 5, vocab_size=40)
    model = copy.deepcopy(masked_model())
    export_pruned(model, ANSWERS, tok, "", out)
    assert not (out / "stale.txt").exists() and (out / "model.safetensors").is_file()
