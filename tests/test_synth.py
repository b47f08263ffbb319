"""The synthetic benchmark does its job: real layouts, a planted bias, recoverable answers."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import Bench
from vqa.baseline import evaluate_predictions, prior_only_report
from vqa.cache import PreparedData
from vqa.errors import InputError
from vqa.metric import OOD_SETS, normalize_answer
from vqa.readers import read_vqacp_v2, read_vqavs
from vqa.synth import QUESTION_TYPES, SynthSpec, _World, generate


def test_vqacp_prior_only_is_40_points_better_in_distribution(vqacp_bench: Bench) -> None:
    report = prior_only_report(vqacp_bench.data)
    gap = report["train"]["overall"] - report["test"]["overall"]
    assert gap >= 40, report
    assert report["test_full"]["overall"] < 35


def test_vqavs_prior_only_fails_where_the_question_type_shortcut_breaks(vqavs_bench: Bench) -> None:
    report = prior_only_report(vqavs_bench.data)
    test = report["test"]
    # IID splits share the training distribution; OOD-QT breaks the question-type shortcut.
    assert abs(report["val"]["overall"] - report["train"]["overall"]) < 5
    assert report["train"]["overall"] - test["ood_QT"] >= 40, test
    # Sets that do not break QT keep the prior-only prediction's advantage.
    assert test["ood_KO"] - test["ood_QT"] >= 30, test


class _TypeAttention(torch.nn.Module):
    """Attend over boxes with a query per question type, then classify the attended feature."""

    def __init__(self, num_types: int, dim: int, num_answers: int) -> None:
        super().__init__()
        self.query = torch.nn.Embedding(num_types, dim)
        torch.nn.init.zeros_(self.query.weight)
        self.type_emb = torch.nn.Embedding(num_types, dim)
        self.head = torch.nn.Sequential(
            torch.nn.Linear(2 * dim, 256), torch.nn.ReLU(), torch.nn.Linear(256, num_answers)
        )

    def forward(self, feats: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
        att = torch.softmax(torch.einsum("bkd,bd->bk", feats, self.query(types)), dim=-1)
        pooled = torch.einsum("bk,bkd->bd", att, feats)
        return self.head(torch.cat([pooled, self.type_emb(types)], dim=-1))


def _fit_and_score(data: PreparedData, eval_split: str, epochs: int = 3) -> dict:
    torch.manual_seed(0)
    train = data.split("pretrain")
    model = _TypeAttention(len(data.question_types) + 1, data.store.feature_dim, data.num_answers)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for epoch in range(epochs):
        order = np.random.default_rng(epoch).permutation(len(train))
        for i in range(0, len(train), 32):
            b = data.make_batch(train, order[i : i + 32])
            logits = model(b.visual_feats, torch.from_numpy(train.type_ids[b.rows]))
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                logits, b.targets, reduction="sum"
            ) / len(b.rows)
            opt.zero_grad()
            loss.backward()
            opt.step()
    split = data.split(eval_split)
    preds: list[str] = []
    with torch.no_grad():
        for i in range(0, len(split), 256):
            b = data.make_batch(split, np.arange(i, min(i + 256, len(split))))
            logits = model(b.visual_feats, torch.from_numpy(split.type_ids[b.rows]))
            preds += [data.answers[j] for j in logits.argmax(-1).tolist()]
    return evaluate_predictions(data, split, preds)


def test_answers_are_recoverable_from_image_features_vqacp(vqacp_bench: Bench) -> None:
    # Trained on the balanced pretrain split from features + question type only.
    assert _fit_and_score(vqacp_bench.data, "test")["overall"] >= 80


def test_test_answers_one_puts_the_test_bias_on_a_single_other_answer(tmp_path: Path) -> None:
    """`test_answers="one"` (the uncalibrated VQA-CP inversion): each type's test answers
    concentrate on one answer other than the training-dominant one, named in the metadata."""
    spec = SynthSpec(questions=800, images=300, feature_dim=16, test_answers="one")
    meta = generate(spec, tmp_path / "one")
    test = read_vqacp_v2(tmp_path / "one")["test"]
    for qtype, group in test.groupby("question_type"):
        share = Counter(group["multiple_choice_answer"].map(normalize_answer))
        top, count = share.most_common(1)[0]
        assert top == meta["dominant_test"][qtype] != meta["dominant_train"][qtype]
        assert count >= 0.6 * len(group)  # bias 0.8 plus its uniform share, less small-n noise


def test_train_prior_longtail_halves_down_an_order_that_test_reverses(tmp_path: Path) -> None:
    """`train_prior="longtail"`: per type, training answers follow the order in the metadata
    (the dominant first) with shares near bias * 2^-rank (normalised) + (1 - bias) / n, and test
    answers follow the same shares down the reversed order."""
    bias = 0.9
    spec = SynthSpec(questions=3000, images=1200, feature_dim=16, bias=bias, train_prior="longtail")
    meta = generate(spec, tmp_path / "lt")
    splits = read_vqacp_v2(tmp_path / "lt")
    for qtype, order in meta["train_order"].items():
        assert order[0] == meta["dominant_train"][qtype]
        halving = 0.5 ** np.arange(len(order))
        expected = bias * halving / halving.sum() + (1 - bias) / len(order)
        for name, ranked in (("train", order), ("test", order[::-1])):
            frame = splits[name]
            group = frame[frame["question_type"] == qtype]
            share = Counter(group["multiple_choice_answer"].map(normalize_answer))
            got = np.array([share[a] for a in ranked]) / len(group)
            # stratified counts, less the annotators' majority flips (a few %)
            np.testing.assert_allclose(got, expected, atol=0.05, err_msg=f"{name} {qtype}")
            assert got[0] > got[-1] + 0.25, (name, qtype, got)


def test_answers_are_recoverable_from_image_features_vqavs(vqavs_bench: Bench) -> None:
    metrics = _fit_and_score(vqavs_bench.data, "test")
    assert metrics["ood_mean"] >= 80, metrics


def test_vqacp_files_answers_and_bias(vqacp_bench: Bench) -> None:
    splits = read_vqacp_v2(vqacp_bench.root)
    assert set(splits) == {"train", "test", "pretrain"}
    raw = json.loads((vqacp_bench.root / "vqacp_v2_train_annotations.json").read_text())
    assert isinstance(raw, list)
    assert set(raw[0]) == {
        "question_id", "image_id", "question_type", "answer_type",
        "multiple_choice_answer", "answers",
    }  # fmt: skip
    assert set(raw[0]["answers"][0]) == {"answer", "answer_confidence", "answer_id"}
    dominant_train = vqacp_bench.meta["dominant_train"]
    assert "dominant_test" not in vqacp_bench.meta  # test answers are spread (test_answers)
    for name, frame in splits.items():
        assert set(frame["answer_type"]) == {"yes/no", "number", "other"}
        assert (frame["answers"].map(len) == 10).all()
        for qtype, group in frame.groupby("question_type"):
            share = Counter(group["multiple_choice_answer"].map(normalize_answer))
            top = share.most_common(1)[0][0]
            if name == "train":
                assert top == dominant_train[qtype]
            elif name == "test":  # the bias share is spread over the non-dominant answers
                assert top != dominant_train[qtype]
                n_answers = len(next(q[2] for q in QUESTION_TYPES if q[0] == qtype))
                assert share[dominant_train[qtype]] < len(group) / n_answers
            else:  # pretrain: answers independent of the type, exactly balanced
                n_answers = len(next(q[2] for q in QUESTION_TYPES if q[0] == qtype))
                assert max(share.values()) - min(share.values()) <= 2 + len(group) // 10
                assert len(share) == n_answers
    # Humans disagree realistically: not every question is unanimous, most have a clear majority.
    humans = splits["train"]["answers"].map(lambda a: Counter(map(normalize_answer, a)))
    unanimous = humans.map(lambda c: len(c) == 1).mean()
    majority = humans.map(lambda c: max(c.values()) >= 5).mean()
    assert 0.1 < unanimous < 0.8 and majority > 0.9


def test_vqavs_ood_sets_are_subsets_that_break_their_shortcuts(vqavs_bench: Bench) -> None:
    splits = read_vqavs(vqavs_bench.root)
    test = splits["test"]
    members = {s: set(test.loc[test["ood_sets"].map(lambda x, s=s: s in x), "question_id"])
               for s in OOD_SETS}  # fmt: skip
    for s in OOD_SETS:
        assert len(members[s]) >= 30, s
        for part in s.split("+"):
            assert members[s] <= members[part]
    dominant = vqavs_bench.meta["dominant_train"]
    in_qt = test[test["question_id"].isin(members["QT"])]
    assert (in_qt["multiple_choice_answer"] != in_qt["question_type"].map(dominant)).mean() > 0.9
    not_qt = test[~test["question_id"].isin(members["QT"])]
    assert (not_qt["multiple_choice_answer"] == not_qt["question_type"].map(dominant)).mean() > 0.9


def test_same_seed_same_files_other_seed_other_files(tmp_path: Path) -> None:
    spec = SynthSpec(questions=400, images=200, feature_dim=8)
    generate(spec, tmp_path / "a")
    generate(spec, tmp_path / "b")
    generate(SynthSpec(questions=400, images=200, feature_dim=8, seed=1), tmp_path / "c")
    name = "vqacp_v2_train_annotations.json"
    assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert (tmp_path / "a" / name).read_bytes() != (tmp_path / "c" / name).read_bytes()


def test_answer_boxes_knob_plants_that_many_answer_boxes(tmp_path: Path) -> None:
    import h5py

    for boxes in (1, 4):
        spec = SynthSpec(questions=400, images=200, feature_dim=32, noise=0.0, answer_boxes=boxes)
        generate(spec, tmp_path / f"k{boxes}")
        # The world's codes come first from the seeded generator, so they can be rebuilt here;
        # the store holds float32, hence the tolerance.
        world = _World(spec, np.random.default_rng(spec.seed))
        codes = (world.type_code[:, None] + world.answer_code) / np.sqrt(2)  # (types, 6, D)
        with h5py.File(tmp_path / f"k{boxes}" / "features.h5") as f:
            feats = f["features"][:20].astype(np.float64)
        dist = np.abs(feats[:, :, None, None, :] - codes[None, None]).max(-1)  # (20, K, 8, 6)
        per_type = (dist.min(-1) < 1e-5).sum(1)  # (20, 8): boxes carrying type t's answer
        assert (per_type == boxes).all()


def test_answer_strength_scales_only_the_answer_code(tmp_path: Path) -> None:
    """`answer_strength` multiplies each answer box's answer code and nothing else: with the
    same seed, every other box and every question are the same, and an answer box moves by
    exactly (1 - strength) * answer code / sqrt(2)."""
    import h5py

    feats = {}
    for strength in (1.0, 0.25):
        spec = SynthSpec(questions=400, images=200, feature_dim=32, answer_strength=strength)
        generate(spec, tmp_path / str(strength))
        with h5py.File(tmp_path / str(strength) / "features.h5") as f:
            feats[strength] = f["features"][:20].astype(np.float64)
    world = _World(spec, np.random.default_rng(spec.seed))
    moved = feats[1.0] - feats[0.25]  # (20, K, D)
    changed = np.abs(moved).max(-1) > 1e-5
    assert (changed.sum(1) == 8 * spec.answer_boxes).all()
    steps = 0.75 * world.answer_code.reshape(-1, 32) / np.sqrt(2)  # (types * 6, D)
    dist = np.abs(moved[changed][:, None] - steps[None]).max(-1)
    assert (dist.min(-1) < 1e-5).all()
    name = "vqacp_v2_test_annotations.json"
    assert (tmp_path / "1.0" / name).read_bytes() == (tmp_path / "0.25" / name).read_bytes()
    with pytest.raises(InputError, match="--answer-strength must be > 0, got 0.0"):
        SynthSpec(answer_strength=0.0).check()


def test_answer_hops_2_puts_the_answer_one_link_away_from_the_type(tmp_path: Path) -> None:
    """With `answer_hops` 2 a type's boxes hold code(type) + a link, and as many other boxes hold
    that link + the answer's code shared by all types; the questions and answers are those of
    `answer_hops` 1 with the same seed, whose boxes show each slot's answer directly."""
    import h5py

    feats = {}
    for hops in (1, 2):
        spec = SynthSpec(
            questions=400, images=200, feature_dim=32, noise=0.0, answer_boxes=2, answer_hops=hops
        )
        generate(spec, tmp_path / str(hops))
        with h5py.File(tmp_path / str(hops) / "features.h5") as f:
            feats[hops] = f["features"][:20].astype(np.float64)  # (20, K, D)
    world = _World(spec, np.random.default_rng(spec.seed))
    direct = (world.type_code[:, None] + world.answer_code) / np.sqrt(2)  # (types, 6, D)
    dist = np.abs(feats[1][:, :, None, None, :] - direct[None, None]).max(-1)  # (20, K, 8, 6)
    for img in range(20):
        for t in range(len(QUESTION_TYPES)):
            (a,) = set(np.nonzero(dist[img, :, t].min(0) < 1e-5)[0])  # the slot's answer
            links = np.sqrt(2) * feats[2][img] - world.type_code[t]  # (K, D) if a type box
            answers = np.sqrt(2) * feats[2][img] - world.answer_code[0, a]  # (K, D) if linked
            match = np.abs(links[:, None] - answers[None]).max(-1) < 1e-4  # (K, K)
            type_boxes, answer_boxes = np.nonzero(match)
            assert len(set(type_boxes)) == 2 and len(set(answer_boxes)) == 2, (img, t)
            assert not set(type_boxes) & set(answer_boxes)
    # no box holds code(type) + code(type, answer): an answer box does not name its type
    hop2 = np.abs(feats[2][:, :, None, None, :] - direct[None, None]).max(-1)
    assert hop2.min() > 0.1
    for name in ("vqacp_v2_train_annotations.json", "vqacp_v2_test_questions.json"):
        assert (tmp_path / "1" / name).read_bytes() == (tmp_path / "2" / name).read_bytes()
    # With 8 link codes every image's 8 type boxes carry the 8 codes, each once.
    spec = SynthSpec(questions=400, images=200, feature_dim=32, noise=0.0, answer_boxes=2,
                     answer_hops=2, link_codes=8)  # fmt: skip
    generate(spec, tmp_path / "l8")
    with h5py.File(tmp_path / "l8" / "features.h5") as f:
        boxes = f["features"][:20].astype(np.float64)
    codes = np.random.default_rng([spec.seed, 2]).standard_normal((8, 32))
    typed = (world.type_code[:, None] + codes[None]) / np.sqrt(2)  # (types, links, D)
    hit = np.abs(boxes[:, :, None, None] - typed[None, None]).max(-1) < 1e-5  # (20, K, 8, 8)
    assert (hit.sum((1, 3)) == 2).all()  # two boxes per type
    assert (hit.any(1).sum(1) == 1).all() and (hit.any(1).sum(2) == 1).all()  # a permutation
    with pytest.raises(InputError, match="--link-codes must be 0 or at least 8, got 3"):
        SynthSpec(link_codes=3).check()
    with pytest.raises(InputError, match="--answer-hops must be 1 or 2, got 3"):
        SynthSpec(answer_hops=3).check()
    with pytest.raises(InputError, match="needs 50 boxes per image"):
        SynthSpec(answer_hops=2).check()


def test_answer_code_product_gives_the_answer_only_as_a_per_box_product(tmp_path: Path) -> None:
    """With `answer_code` "product" a type's boxes hold code(type) in the first third, and
    code(type, answer) * r, r in the others with a fresh sign vector r per box: the product of
    the last two thirds is the slot's answer code (the slot's answer as in "dense" with the same
    seed, whose questions and answers are the same), while the middle third alone varies per box."""
    import h5py

    feats = {}
    for code, clue in (("dense", 0.0), ("product", 0.0), ("product", 0.5)):
        spec = SynthSpec(questions=400, images=200, feature_dim=48, noise=0.0, answer_code=code,
                         answer_clue=clue)  # fmt: skip
        generate(spec, tmp_path / f"{code}{clue}")
        with h5py.File(tmp_path / f"{code}{clue}" / "features.h5") as f:
            feats[code if not clue else "clue"] = f["features"][:20].astype(np.float64)
    world = _World(spec, np.random.default_rng(spec.seed))
    signs = np.random.default_rng([spec.seed, 3]).choice([-1.0, 1.0], size=(8, 6, 16))
    direct = (world.type_code[:, None] + world.answer_code) / np.sqrt(2)  # (types, 6, D)
    dist = np.abs(feats["dense"][:, :, None, None, :] - direct[None, None]).max(-1)
    box = feats["product"]
    for img in range(20):
        for t in range(len(QUESTION_TYPES)):
            (a,) = set(np.nonzero(dist[img, :, t].min(0) < 1e-5)[0])  # the slot's answer
            typed = np.nonzero(np.abs(box[img, :, :16] - world.type_code[t, :16]).max(-1) < 1e-5)[0]
            assert len(typed) == 3, (img, t)
            middle, r = box[img, typed, 16:32], box[img, typed, 32:]
            assert set(np.unique(r)) == {-1.0, 1.0}
            assert np.array_equal(middle * r, np.broadcast_to(signs[t, a], (3, 16)))
            assert len({tuple(m) for m in middle}) > 1, (img, t)  # r is drawn per box
            # the clue adds 0.5 x the dense code(type, answer) to each of those boxes, nothing else
            clued = feats["clue"][img, typed] - 0.5 * world.answer_code[t, a]
            assert np.abs(clued - box[img, typed]).max() < 1e-5
    for name in ("vqacp_v2_train_annotations.json", "vqacp_v2_test_questions.json"):
        assert (tmp_path / "dense0.0" / name).read_bytes() == (
            tmp_path / "product0.5" / name
        ).read_bytes()
    with pytest.raises(
        InputError, match="--answer-code product needs --feature-dim divisible by 3"
    ):
        SynthSpec(answer_code="product", feature_dim=64).check()
    with pytest.raises(InputError, match="--answer-code product needs --answer-hops 1"):
        SynthSpec(answer_code="product", feature_dim=48, answer_hops=2, answer_boxes=2).check()
    with pytest.raises(InputError, match="--answer-clue needs --answer-code product"):
        SynthSpec(answer_clue=0.4).check()
    with pytest.raises(InputError, match="--answer-clue must be >= 0, got -0.1"):
        SynthSpec(answer_code="product", feature_dim=48, answer_clue=-0.1).check()
    with pytest.raises(InputError, match="--answer-code must be dense or product, got 'xor'"):
        SynthSpec(answer_code="xor").check()


def test_answer_variants_draw_one_of_several_codes_per_box_with_the_answers_class(
    tmp_path: Path,
) -> None:
    """With `answer_variants` v each answer box's product (middle third x last third) is one of
    its (type, answer)'s v sign codes, drawn per box; its object class is the answer's
    (1 + 6 t + a); questions and answers are those of one variant."""
    import h5py

    spec = SynthSpec(questions=400, images=200, feature_dim=96, noise=0.0, answer_code="product",
                     answer_variants=4)  # fmt: skip
    generate(spec, tmp_path / "v4")
    generate(SynthSpec(questions=400, images=200, feature_dim=96, answer_code="product"),
             tmp_path / "v1")  # fmt: skip
    with h5py.File(tmp_path / "v4" / "features.h5") as f:
        box = f["features"][:30].astype(np.float64)
        classes = f["object_ids"][:30]
    world = _World(spec, np.random.default_rng(spec.seed))
    signs = np.random.default_rng([spec.seed, 3]).choice([-1.0, 1.0], size=(8, 6, 4, 32))
    seen: set[int] = set()
    for img in range(30):
        for t in range(len(QUESTION_TYPES)):
            typed = np.nonzero(np.abs(box[img, :, :32] - world.type_code[t, :32]).max(-1) < 1e-5)[0]
            assert len(typed) == 3, (img, t)
            product = box[img, typed, 32:64] * box[img, typed, 64:]
            hit = (product[:, None, None, :] == signs[t][None]).all(-1)  # (boxes, answers, v)
            assert (hit.sum((1, 2)) == 1).all(), (img, t)
            answer = set(np.nonzero(hit.any(2))[1])
            assert len(answer) == 1, (img, t)  # every box of a slot shows the slot's answer
            (a,) = answer
            assert set(classes[img, typed]) == {1 + 6 * t + a}
            seen.update(np.nonzero(hit.any(1))[1])
    assert seen == {0, 1, 2, 3}
    for name in ("vqacp_v2_train_annotations.json", "vqacp_v2_test_questions.json"):
        assert (tmp_path / "v1" / name).read_bytes() == (tmp_path / "v4" / name).read_bytes()
    with pytest.raises(InputError, match="--answer-variants needs --answer-code product"):
        SynthSpec(answer_variants=2).check()
    with pytest.raises(InputError, match="--answer-variants must be at least 1, got 0"):
        SynthSpec(answer_code="product", feature_dim=48, answer_variants=0).check()


def test_nuisance_adds_one_shared_direction_with_a_gain_per_box(tmp_path: Path) -> None:
    """`nuisance` m adds m * g * o to every box: o one fixed direction, g drawn per box in
    [0, 2]; everything else (features, questions, answers) is the benchmark of nuisance 0."""
    import h5py

    feats = {}
    for m in (0.0, 3.0):
        spec = SynthSpec(questions=400, images=200, feature_dim=32, nuisance=m)
        generate(spec, tmp_path / f"n{m}")
        with h5py.File(tmp_path / f"n{m}" / "features.h5") as f:
            feats[m] = f["features"][:].astype(np.float64)
    extra = feats[3.0] - feats[0.0]  # (M, K, D)
    rng = np.random.default_rng([spec.seed, 4])
    direction = rng.standard_normal(32)
    gain = extra @ direction / (3.0 * direction @ direction)  # (M, K)
    assert np.abs(extra - 3.0 * gain[..., None] * direction).max() < 1e-4  # one direction only
    assert gain.min() >= 0.0 and gain.max() <= 2.0
    assert 0.9 < gain.mean() < 1.1 and gain.std() > 0.5  # uniform on [0, 2]: mean 1, std 0.58
    for name in ("vqacp_v2_train_annotations.json", "vqacp_v2_test_questions.json"):
        assert (tmp_path / "n0.0" / name).read_bytes() == (tmp_path / "n3.0" / name).read_bytes()
    with pytest.raises(InputError, match="--nuisance must be >= 0, got -1"):
        SynthSpec(nuisance=-1.0).check()


def test_synth_command_defaults_are_the_spec_defaults() -> None:
    """`tickets data synth` with no options writes the benchmark SynthSpec() describes."""
    import inspect

    from search.cli import synth

    spec = SynthSpec()
    for name, param in inspect.signature(synth).parameters.items():
        if name != "out":
            assert param.default == getattr(spec, name), name


def test_pretrain_types_half_asks_every_other_type_and_balances_them(tmp_path: Path) -> None:
    """`pretrain_types="half"`: the pretrain split asks only the even-indexed question types (one
    of each answer type among them), balanced; train and test still ask all eight."""
    spec = SynthSpec(questions=800, images=400, feature_dim=16, pretrain_types="half")
    generate(spec, tmp_path / "b")
    splits = read_vqacp_v2(tmp_path / "b")
    asked = {QUESTION_TYPES[i][0] for i in (0, 2, 4, 6)}
    assert set(splits["pretrain"]["question_type"]) == asked
    assert set(splits["pretrain"]["answer_type"]) == {"yes/no", "number", "other"}
    assert len(splits["pretrain"]) == 800
    for name in ("train", "test"):
        assert len(set(splits[name]["question_type"])) == 8
    with pytest.raises(InputError, match="--images 150 are too few: 2000 questions need 350 "):
        SynthSpec(questions=800, images=150, feature_dim=16, pretrain_types="half").check()


def test_feature_mixing_rotates_every_box_feature_by_one_fixed_rotation(tmp_path: Path) -> None:
    """`feature_mixing` w multiplies every box feature by one orthogonal matrix (the identity at
    0, a dense random rotation at 1, between them at 0.5); everything else is the benchmark of
    mixing 0."""
    import h5py

    from vqa.synth import feature_rotation

    feats = {}
    for w in (0.0, 0.5, 1.0):
        spec = SynthSpec(questions=400, images=200, feature_dim=24, feature_mixing=w)
        generate(spec, tmp_path / f"w{w}")
        with h5py.File(tmp_path / f"w{w}" / "features.h5") as f:
            feats[w] = f["features"][:].astype(np.float64)
    full = feature_rotation(SynthSpec(feature_dim=24, feature_mixing=1.0))
    half = feature_rotation(SynthSpec(feature_dim=24, feature_mixing=0.5))
    for r in (full, half):
        assert np.abs(r @ r.T - np.eye(24)).max() < 1e-9
    assert np.abs(feats[1.0] - feats[0.0] @ full).max() < 1e-4
    assert np.abs(feats[0.5] - feats[0.0] @ half).max() < 1e-4
    # dense: each coordinate spreads over most others at 1 (entries ~ N(0, 1/24): ~81% above
    # 0.05; the identity has 4%), over fewer at 0.5
    assert (np.abs(full) > 0.05).mean() > 0.7
    assert np.abs(np.diag(full)).mean() < np.abs(np.diag(half)).mean() < 1.0
    np.testing.assert_allclose(feature_rotation(SynthSpec(feature_dim=24)), np.eye(24), atol=1e-12)
    for name in ("vqacp_v2_train_annotations.json", "vqacp_v2_test_questions.json"):
        assert (tmp_path / "w0.0" / name).read_bytes() == (tmp_path / "w1.0" / name).read_bytes()
    with pytest.raises(InputError, match=r"--feature-mixing must be in \[0, 1\], got 1.5"):
        SynthSpec(feature_mixing=1.5).check()


def test_yesno_verify_shows_a_keyword_and_yes_means_it_is_the_asked_one(tmp_path: Path) -> None:
    """Under `yesno` "verify" every box of a yes/no slot shows code(type, keyword) for one of the
    type's six keywords (its class 1 + 6 t + keyword): the asked keyword exactly when the answer
    is yes (the answer "read" shows there). Every answer and question, and every other type's
    box, is that of "read"; a question's keyword says nothing of its answer."""
    import h5py

    feats, classes = {}, {}
    for mode in ("read", "verify"):
        spec = SynthSpec(questions=800, images=300, feature_dim=24, noise=0.0, yesno=mode)
        generate(spec, tmp_path / mode)
        with h5py.File(tmp_path / mode / "features.h5") as f:
            feats[mode] = f["features"][:].astype(np.float64)
            classes[mode] = f["object_ids"][:]
            ids = f["image_ids"][:]
    for name in ("vqacp_v2_train_annotations.json", "vqacp_v2_test_questions.json"):
        assert (tmp_path / "read" / name).read_bytes() == (tmp_path / "verify" / name).read_bytes()
    yesno = [t for t, q in enumerate(QUESTION_TYPES) if q[1] == "yes/no"]
    in_yesno = np.isin((classes["read"] - 1) // 6, yesno) & (classes["read"] > 0)
    in_yesno &= classes["read"] <= 6 * len(QUESTION_TYPES)
    assert (classes["read"][~in_yesno] == classes["verify"][~in_yesno]).all()
    assert np.abs(feats["read"][~in_yesno] - feats["verify"][~in_yesno]).max() < 1e-5
    world = _World(spec, np.random.default_rng(spec.seed))
    row = {int(i): n for n, i in enumerate(ids)}
    yes_by_match: Counter[tuple[bool, bool]] = Counter()
    yes_by_keyword: Counter[tuple[int, bool]] = Counter()
    for split in ("train", "test"):
        for q in read_vqacp_v2(tmp_path / "verify")[split].itertuples():
            t = q.question_id % 10  # the synthetic question id is image_id * 10 + type
            if t not in yesno:
                continue
            img = row[q.image_id]
            kw = next(i for i, w in enumerate(QUESTION_TYPES[t][3]) if f" {w} " in q.question)
            boxes = np.nonzero((classes["verify"][img] - 1) // 6 == t)[0]
            boxes = boxes[classes["verify"][img, boxes] <= 6 * len(QUESTION_TYPES)]
            assert len(boxes) == spec.answer_boxes
            (shown,) = set(classes["verify"][img, boxes] - 1 - 6 * t)
            code = (world.type_code[t] + world.answer_code[t, shown]) / np.sqrt(2)
            assert np.abs(feats["verify"][img, boxes] - code).max() < 1e-5
            # the true answer is what "read" shows there (the files' majority answer may differ)
            (true,) = set(classes["read"][img, boxes] - 1 - 6 * t)
            yes = QUESTION_TYPES[t][2][true] == "yes"
            yes_by_match[(shown == kw, yes)] += 1
            yes_by_keyword[(kw, yes)] += 1
    assert set(yes_by_match) == {(True, True), (False, False)}, yes_by_match
    assert sum(yes_by_match.values()) > 150
    # the keyword is drawn before the answer: each of the six takes a share of yes near the
    # type-pooled one (binomial, ~25 yes/no questions per keyword and split)
    share = yes_by_match[(True, True)] / sum(yes_by_match.values())
    for kw in range(6):
        n = yes_by_keyword[(kw, True)] + yes_by_keyword[(kw, False)]
        assert abs(yes_by_keyword[(kw, True)] / n - share) < 0.25, (kw, n, share)
    with pytest.raises(InputError, match="--yesno must be read or verify, got 'ask'"):
        SynthSpec(yesno="ask").check()
