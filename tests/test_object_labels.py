"""Object label prediction in pre-training (models/object_labels.py) and the per-box classes it
reads (`object_ids` in the feature store, written by the synthetic benchmark)."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import load_file

from models.config import ObjectLabelsConfig
from models.object_labels import ObjectLabels
from search.config import validate_config
from tests.conftest import TINY_ARCH, Bench, run_tickets, tiny_run_config
from vqa.errors import InputError
from vqa.features import load_feature_store, write_feature_store
from vqa.synth import KEY_OBJECTS, QUESTION_TYPES, SynthSpec, generate

N_TYPES = len(QUESTION_TYPES)


@pytest.mark.parametrize("code", ["dense", "product"])
def test_a_boxs_class_names_the_answer_it_carries(tmp_path: Path, code: str) -> None:
    spec = SynthSpec(questions=300, images=120, feature_dim=24, answer_code=code)
    generate(spec, tmp_path)
    store = load_feature_store(tmp_path / "features.h5")
    ids = store.object_ids
    assert ids is not None and ids.shape == (120, 36) and ids.dtype == np.int64
    for row in ids:
        counts = np.bincount(row, minlength=1 + 6 * N_TYPES + len(KEY_OBJECTS))
        answers = counts[1 : 1 + 6 * N_TYPES].reshape(N_TYPES, 6)
        # one answer per type, on exactly answer_boxes boxes; two key objects; the rest background
        assert (answers.sum(1) == spec.answer_boxes).all()
        assert ((answers == spec.answer_boxes).sum(1) == 1).all()
        assert counts[1 + 6 * N_TYPES :].sum() == 2
        assert counts[0] == 36 - N_TYPES * spec.answer_boxes - 2
    # The class is the answer the image's questions have (question id = image id * 10 + type).
    row_of = {int(i): r for r, i in enumerate(store.image_ids)}
    agree = total = 0
    for split in ("pretrain", "train", "test"):
        anns = json.loads((tmp_path / f"vqacp_v2_{split}_annotations.json").read_text())
        for ann in anns:
            t = ann["question_id"] % 10
            classes = ids[row_of[ann["image_id"]]]
            planted = [c - 1 - 6 * t for c in classes if 1 + 6 * t <= c < 7 + 6 * t]
            answer = QUESTION_TYPES[t][2][planted[0]]
            agree += answer == ann["multiple_choice_answer"]
            total += 1
    # the annotators' majority answer is the planted one unless they disagree (`agreement`)
    assert agree / total > 0.9


def test_two_hop_boxes_name_the_answer_on_the_link_box(tmp_path: Path) -> None:
    generate(SynthSpec(questions=300, images=100, feature_dim=16, answer_hops=2, answer_boxes=2),
             tmp_path)  # fmt: skip
    ids = load_feature_store(tmp_path / "features.h5").object_ids
    first_type_class = 1 + 6 * N_TYPES + len(KEY_OBJECTS)
    for row in ids:
        assert sorted(row[row >= first_type_class] - first_type_class) == sorted(
            list(range(N_TYPES)) * 2
        )
        assert ((row >= 1) & (row < 1 + 6 * N_TYPES)).sum() == 2 * N_TYPES


def test_the_store_checks_its_object_ids(tmp_path: Path) -> None:
    ids, feats, boxes = np.arange(1, 4), np.zeros((3, 5, 4), np.float32), np.zeros((3, 5, 4))
    write_feature_store(tmp_path / "none.h5", ids, feats, boxes)
    assert load_feature_store(tmp_path / "none.h5").object_ids is None
    classes = np.arange(15).reshape(3, 5)
    write_feature_store(tmp_path / "ok.h5", ids, feats, boxes, classes)
    assert np.array_equal(load_feature_store(tmp_path / "ok.h5").object_ids, classes)
    for name, bad in (("shape.h5", np.zeros((3, 4), np.int64)), ("neg.h5", -classes),
                      ("float.h5", np.zeros((3, 5), np.float32))):  # fmt: skip
        write_feature_store(tmp_path / name, ids, feats, boxes)
        with h5py.File(tmp_path / name, "a") as f:
            f["object_ids"] = bad
        with pytest.raises(InputError, match=rf"{name}: field 'object_ids'"):
            load_feature_store(tmp_path / name)


def test_the_loss_is_the_weighted_cross_entropy_of_a_linear_read_out() -> None:
    torch.manual_seed(0)
    labels = ObjectLabels(8, 7, ObjectLabelsConfig(weight=0.5))
    vision, classes = torch.randn(4, 10, 8), torch.randint(0, 7, (4, 10))
    expected = F.cross_entropy(vision.reshape(40, 8) @ labels.head.weight.T + labels.head.bias,
                               classes.reshape(40))  # fmt: skip
    assert labels.loss(vision, classes).item() == pytest.approx(0.5 * expected.item(), rel=1e-6)


def test_pretraining_with_object_labels_trains_the_encoder_and_keeps_the_head_out(
    tiny_bench: Bench, tmp_path: Path
) -> None:
    from models.train import fit

    raw = tiny_run_config(tiny_bench, tmp_path)
    raw["pretrain"].update(epochs=3, lr=3e-3, object_labels={"weight": 1.0})
    cfg = validate_config(raw, "run")
    saved = cfg.blocks_yaml("data", "pretrain")
    assert yaml.safe_load(saved)["pretrain"]["object_labels"] == {"weight": 1.0}
    metrics = fit("pretrain", cfg.data, cfg.model, None, cfg.pretrain, saved)
    assert metrics["complete"]
    out = tmp_path / "pre"
    head = load_file(str(out / "last" / "objective.safetensors"))
    n_classes = int(tiny_bench.data.store.object_ids.max()) + 1
    assert head["labels.head.weight"].shape == (n_classes, TINY_ARCH["hidden_size"])
    with open(out / "model" / "model.safetensors", "rb") as f:
        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
    assert not any("labels" in key for key in header)
    # The head, restored, reads the trained encoder's boxes far better than the majority class.
    from models.train import load_checkpoint_model

    model = load_checkpoint_model(out / "model", tiny_bench.data)[0].eval()
    labels = ObjectLabels(TINY_ARCH["hidden_size"], n_classes, ObjectLabelsConfig())
    labels.load_state_dict({"head.weight": head["labels.head.weight"],
                            "head.bias": head["labels.head.bias"]})  # fmt: skip
    data = tiny_bench.data
    split = data.split("pretrain")
    batch = data.make_batch(split, np.arange(64))
    with torch.no_grad():
        last_r = model.forward_with_states(batch.input_ids, batch.attention_mask,
                                           batch.visual_feats, batch.visual_pos)[3]  # fmt: skip
    classes = torch.from_numpy(data.store.object_ids[split.feature_rows[batch.rows]])
    majority = float((classes == 0).float().mean())
    assert labels.accuracy(last_r, classes) > majority + 0.2


def test_object_labels_without_object_ids_is_refused_before_anything_is_written(
    tmp_path: Path,
) -> None:
    bench = tmp_path / "bench"
    generate(SynthSpec(questions=300, images=100, feature_dim=16), bench)
    store = load_feature_store(bench / "features.h5")
    plain = tmp_path / "plain.h5"  # the same features without classes, as a bottom-up TSV gives
    write_feature_store(plain, store.image_ids, np.asarray(store.features), store.boxes)
    raw = yaml.safe_load((bench / "prepare.yaml").read_text())
    raw["data"]["features"] = str(plain)
    raw["pretrain"] = {"output_dir": str(tmp_path / "pre"), "epochs": 1,
                       "architecture": TINY_ARCH, "object_labels": {}}  # fmt: skip
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(raw))
    done = run_tickets("data", "prepare", config)
    assert done.returncode == 0, done.stderr
    done = run_tickets("pretrain", config)
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert str(plain) in last and "'object_ids'" in last and "pretrain.object_labels" in last
    assert not (tmp_path / "pre").exists()


def test_a_bad_object_labels_weight_is_refused_by_name(tiny_bench: Bench, tmp_path: Path) -> None:
    raw = tiny_run_config(tiny_bench, tmp_path)
    raw["pretrain"]["object_labels"] = {"weight": 0}
    with pytest.raises(InputError, match=r"pretrain\.object_labels\.weight"):
        validate_config(raw, "run")
    plain = validate_config(tiny_run_config(tiny_bench, tmp_path), "run").blocks_yaml("pretrain")
    assert "object_labels" not in yaml.safe_load(plain)["pretrain"]


def test_both_visual_tasks_train_together(tiny_bench: Bench, tmp_path: Path) -> None:
    from models.train import fit

    losses = {}
    for name, tasks in (("both", {"masked_objects": {"share": 0.3},
                                  "object_labels": {"weight": 0.5}}),
                        ("objects", {"masked_objects": {"share": 0.3}})):  # fmt: skip
        raw = tiny_run_config(tiny_bench, tmp_path / name)
        raw["pretrain"].update(epochs=1, **tasks)
        cfg = validate_config(raw, "run")
        metrics = fit("pretrain", cfg.data, cfg.model, None, cfg.pretrain,
                      cfg.blocks_yaml("data", "pretrain"))  # fmt: skip
        losses[name] = metrics["history"][0]["train_loss"]
    head = load_file(str(tmp_path / "both" / "pre" / "last" / "objective.safetensors"))
    assert {k.split(".")[0] for k in head} == {"objects", "labels"}
    # the label loss (about log of the class count at the start) adds to the regression's
    assert losses["both"] > losses["objects"] + 0.5
