"""Masks on the prunable weights: exact counts, straight-through, eq. 3 init, modes, removal."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch.nn.utils import parametrize
from transformers import LxmertModel

from models.config import ArchitectureConfig
from models.structure import prunable_groups
from models.vqa_model import VQAModel, small_backbone
from pruning.export import load_masks, named_score_masks, save_masks
from pruning.masks import (
    ScoreMask,
    apply_masks,
    exact_mask,
    magnitude_init_scores,
    mask_parameters,
    recompute_masks,
    remove_masks,
    sparsity_report,
)
from vqa.errors import InputError

TRIPLE = {"language": 0.9, "visual": 0.3, "cross": 0.75}


def tiny_model(seed: int = 0) -> VQAModel:
    torch.manual_seed(seed)
    cfg = ArchitectureConfig(
        hidden_size=16, num_attention_heads=2, intermediate_size=32, dropout=0.0
    )
    model = VQAModel(small_backbone(cfg, vocab_size=50, feature_dim=8), num_answers=5)
    return model.eval()


def batch(seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "input_ids": torch.randint(0, 50, (3, 6), generator=g),
        "attention_mask": torch.ones(3, 6, dtype=torch.long),
        "visual_feats": torch.randn(3, 4, 8, generator=g),
        "visual_pos": torch.rand(3, 4, 4, generator=g),
    }


def masks_by_name(model: VQAModel) -> dict[str, torch.Tensor]:
    """Parameter name (as before masking) -> its mask."""
    out = {}
    for module_name, module in model.named_modules():
        if parametrize.is_parametrized(module, "weight"):
            (p,) = list(module.parametrizations.weight)
            assert isinstance(p, ScoreMask)
            out[f"{module_name}.weight"] = p.mask
    return out


def test_exact_mask_counts_random_sizes_and_sparsities() -> None:
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        shape = tuple(int(d) for d in torch.randint(1, 40, (2,), generator=g))
        s = float(torch.rand(1, generator=g))
        scores = torch.randn(shape, generator=g)
        m = exact_mask(scores, s)
        k = round(s * scores.numel())
        assert m.dtype == scores.dtype and m.shape == scores.shape
        assert set(m.unique().tolist()) <= {0.0, 1.0}
        assert int((m == 0).sum()) == k
        if 0 < k < scores.numel():  # the zeros are at the lowest scores
            assert scores[m == 0].max() <= scores[m == 1].min()


def test_exact_mask_with_all_equal_scores() -> None:
    m = exact_mask(torch.full((1000,), 0.02), 0.37)
    assert int((m == 0).sum()) == 370
    assert torch.equal(m, exact_mask(torch.full((1000,), 0.02), 0.37))  # deterministic
    assert int((exact_mask(torch.zeros(7, 3), 0.5) == 0).sum()) == 10  # round(10.5) = 10
    assert exact_mask(torch.ones(4), 0.0).sum() == 4
    assert exact_mask(torch.ones(4), 1.0).sum() == 0
    with pytest.raises(ValueError, match="outside"):
        exact_mask(torch.ones(4), 1.5)


def test_magnitude_init_scores_eq3() -> None:
    torch.manual_seed(0)
    w = torch.randn(20, 30)
    s, alpha, phi = 0.6, 2.0, 0.01
    scores = magnitude_init_scores(w, s, alpha, phi)
    ap = torch.tensor(alpha * phi)
    assert torch.equal(scores.unique(), torch.stack([torch.tensor(0.0), ap]))
    kept = scores == ap
    assert int(kept.sum()) == 600 - round(0.6 * 600)
    # Exactly the largest-|W| positions are kept.
    top = torch.topk(w.abs().flatten(), int(kept.sum())).indices
    expected = torch.zeros(600, dtype=torch.bool)
    expected[top] = True
    assert torch.equal(kept.flatten(), expected)
    assert magnitude_init_scores(w, s, alpha=3.0, phi=0.5).max() == 1.5


@pytest.fixture
def masked() -> tuple[VQAModel, VQAModel]:
    """(original, masked copy at TRIPLE in modality mode)."""
    original = tiny_model()
    model = copy.deepcopy(original)
    apply_masks(model, TRIPLE, mode="modality")
    return original, model


def test_modality_mode_exact_per_tensor_and_report(masked) -> None:
    original, model = masked
    groups = prunable_groups(original)
    masks = masks_by_name(model)
    assert set(masks) == {n for names in groups.values() for n in names}
    wanted = {**TRIPLE, "pooler": None}
    sizes = {g: sum(masks[n].numel() for n in names) for g, names in groups.items()}
    overall = sum(TRIPLE[g] * sizes[g] for g in TRIPLE) / sum(sizes[g] for g in TRIPLE)
    wanted["pooler"] = overall  # no "overall" key given: the eq. 10 budget s
    pruned = {}
    for group, names in groups.items():
        pruned[group] = 0
        for name in names:
            m = masks[name]
            k = int((m == 0).sum())
            assert k == round(wanted[group] * m.numel()), name
            pruned[group] += k
    report = sparsity_report(model)
    for group in groups:
        assert report[group]["pruned"] == pruned[group]
        assert report[group]["numel"] == sizes[group]
        assert report[group]["realised"] == pruned[group] / sizes[group]
        assert report[group]["requested"] == pytest.approx(wanted[group])
    budget = sum(sizes[g] for g in TRIPLE)
    assert report["overall"]["realised"] == sum(pruned[g] for g in TRIPLE) / budget
    assert report["overall"]["requested"] == pytest.approx(overall)
    # Initial masks are one-shot magnitude pruning of each tensor.
    params = dict(original.named_parameters())
    for group, names in groups.items():
        for name in names:
            expected = exact_mask(params[name].abs(), wanted[group])
            assert torch.equal(masks[name], expected), name


def test_masked_forward_equals_hand_masked_copy_and_deepcopy(masked) -> None:
    original, model = masked
    masks = masks_by_name(model)
    by_hand = copy.deepcopy(original)
    with torch.no_grad():
        for name, p in by_hand.named_parameters():
            if name in masks:
                p.mul_(masks[name])
    x = batch()
    logits, pooled = model(**x)
    ref_logits, ref_pooled = by_hand(**x)
    assert torch.equal(logits, ref_logits) and torch.equal(pooled, ref_pooled)
    orig_logits, _ = original(**x)
    assert not torch.allclose(logits, orig_logits)  # the masks do something

    twin = copy.deepcopy(model)
    assert torch.equal(twin(**x)[0], logits)
    assert len(mask_parameters(twin)) == len(masks)
    assert all(
        a is not b for a, b in zip(mask_parameters(twin), mask_parameters(model), strict=True)
    )


def test_gradients_reach_scores_and_head_not_backbone(masked) -> None:
    original, model = masked
    x = batch()
    model(**x)[0].square().sum().backward()
    # Reference: the hand-masked model, all weights trainable; the effective weights' gradients.
    masks = masks_by_name(model)
    by_hand = copy.deepcopy(original)
    with torch.no_grad():
        for name, p in by_hand.named_parameters():
            if name in masks:
                p.mul_(masks[name])
    by_hand(**x)[0].square().sum().backward()
    ref = dict(by_hand.named_parameters())
    orig = dict(original.named_parameters())
    seen = 0
    for module_name, module in model.named_modules():
        if not parametrize.is_parametrized(module, "weight"):
            continue
        name = f"{module_name}.weight"
        p = module.parametrizations.weight[0]
        assert p.scores.requires_grad
        if ref[name].grad is None:  # weights the loss does not reach (last cross layer's
            assert p.scores.grad is None, name  # visual branch)
            continue
        # Straight-through: dL/dS = dL/dm = dL/d(W ⊙ m) ⊙ W.
        torch.testing.assert_close(p.scores.grad, ref[name].grad * orig[name], msg=name)
        seen += 1
    assert seen >= len(masks) // 2
    score_ids = {id(s) for s in mask_parameters(model)}
    for name, p in model.backbone.named_parameters():
        if id(p) not in score_ids:
            assert not p.requires_grad and p.grad is None, name
    for name, p in model.head.named_parameters():
        assert p.requires_grad and p.grad is not None, name


def test_recompute_masks_follows_scores_with_exact_counts(masked) -> None:
    _, model = masked
    before = {n: m.clone() for n, m in masks_by_name(model).items()}
    torch.manual_seed(3)
    with torch.no_grad():
        for s in mask_parameters(model):
            s.copy_(torch.randn_like(s))
    assert all(torch.equal(m, before[n]) for n, m in masks_by_name(model).items())  # stored
    recompute_masks(model)
    after = masks_by_name(model)
    changed = 0
    for name, m in after.items():
        assert int((m == 0).sum()) == int((before[name] == 0).sum()), name
        changed += int(not torch.equal(m, before[name]))
    assert changed == len(after)
    for module in model.modules():
        if parametrize.is_parametrized(module, "weight"):
            p = module.parametrizations.weight[0]
            assert torch.equal(p.mask, exact_mask(p.scores, p.num_pruned / p.scores.numel()))


def test_remove_masks_bakes_and_restores_plain_state_dict(masked) -> None:
    original, model = masked
    masks = {n: m.clone() for n, m in masks_by_name(model).items()}
    x = batch()
    masked_logits = model(**x)[0]
    remove_masks(model)
    assert not masks_by_name(model) and not mask_parameters(model)
    state = model.state_dict()
    assert set(state) == set(original.state_dict())
    orig_state = original.state_dict()
    for name, value in state.items():
        expected = orig_state[name] * masks[name] if name in masks else orig_state[name]
        assert torch.equal(value, expected), name
    assert torch.equal(model(**x)[0], masked_logits)
    fresh = LxmertModel(original.backbone.config)
    fresh.load_state_dict(model.backbone.state_dict(), strict=True)
    for name, p in fresh.named_parameters():
        assert torch.equal(p, model.backbone.state_dict()[name])


def test_remove_masks_on_a_deep_copy_leaves_the_original_masked(masked) -> None:
    _, model = masked
    x = batch()
    logits = model(**x)[0]
    twin = copy.deepcopy(model)
    remove_masks(twin)
    assert not mask_parameters(twin) and torch.equal(twin(**x)[0], logits)
    # The original still reads W ⊙ m through its masks, and can itself be baked afterwards.
    assert len(mask_parameters(model)) == len(masks_by_name(model)) > 0
    assert torch.equal(model(**x)[0], logits)
    remove_masks(model)
    assert not mask_parameters(model) and torch.equal(model(**x)[0], logits)


def test_uniform_mode_every_tensor_at_overall() -> None:
    model = tiny_model()
    apply_masks(model, {"overall": 0.55}, mode="uniform")
    for name, m in masks_by_name(model).items():
        assert int((m == 0).sum()) == round(0.55 * m.numel()), name
    report = sparsity_report(model)
    assert set(report) == {"language", "visual", "cross", "pooler", "overall"}
    assert all(r["requested"] == pytest.approx(0.55) for r in report.values())


def test_global_mode_ranks_all_budget_weights_together(tmp_path: Path) -> None:
    model = tiny_model()
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    groups = prunable_groups(model)
    apply_masks(model, {"overall": 0.7}, mode="global")
    masks = masks_by_name(model)
    budget_names = [n for g in ("language", "visual", "cross") for n in groups[g]]
    total = sum(masks[n].numel() for n in budget_names)
    pruned = sum(int((masks[n] == 0).sum()) for n in budget_names)
    assert abs(pruned - 0.7 * total) <= len(budget_names)
    assert pruned == round(0.7 * total)
    report = sparsity_report(model)
    assert report["overall"]["realised"] == pruned / total
    # Per-tensor sparsities differ (the ranking is global), and the kept weights are the
    # globally largest |W|: every kept weight is at least every pruned one.
    per_tensor = {int((masks[n] == 0).sum()) / masks[n].numel() for n in budget_names}
    assert len(per_tensor) > 1
    kept = torch.cat([params[n].abs()[masks[n] == 1] for n in budget_names])
    gone = torch.cat([params[n].abs()[masks[n] == 0] for n in budget_names])
    assert gone.max() <= kept.min()
    (pooler,) = groups["pooler"]
    assert int((masks[pooler] == 0).sum()) == round(0.7 * masks[pooler].numel())
    # Recomputation ranks the scores of all budget tensors together again: the total stays,
    # the weights move between tensors with their scores.
    score = {n: p for n, p in named_score_masks(model)}
    low = groups["cross"][0]  # the one tensor whose scores all fall below every other score
    with torch.no_grad():
        for name, p in score.items():
            p.scores.copy_(torch.rand_like(p.scores) + (0.0 if name == low else 1.0))
    recompute_masks(model)
    after = masks_by_name(model)
    assert sum(int((after[n] == 0).sum()) for n in budget_names) == pruned
    assert not after[low].any() and after[low].numel() < pruned  # pruned as a whole now
    assert all(score[n].num_pruned == int((after[n] == 0).sum()) for n in score)
    kept = torch.cat([score[n].scores[after[n] == 1] for n in budget_names])
    gone = torch.cat([score[n].scores[after[n] == 0] for n in budget_names])
    assert gone.max() <= kept.min()
    assert int((after[pooler] == 0).sum()) == round(0.7 * after[pooler].numel())  # on its own
    # A saved global mask (counts moved) loads into a fresh global model; a wrong total does not.
    path = tmp_path / "masks.safetensors"
    save_masks(model, path)
    fresh = tiny_model()
    apply_masks(fresh, {"overall": 0.7}, mode="global")
    load_masks(fresh, path)
    assert all(torch.equal(m, after[n]) for n, m in masks_by_name(fresh).items())
    assert {n: p.num_pruned for n, p in named_score_masks(fresh)} == {
        n: p.num_pruned for n, p in score.items()
    }
    other = tiny_model()
    apply_masks(other, {"overall": 0.6, "pooler": 0.7}, mode="global")  # the pooler agrees
    with pytest.raises(InputError, match="the global masks have .* pruned weights in all"):
        load_masks(other, path)


def test_bad_requests_fail() -> None:
    model = tiny_model()
    with pytest.raises(ValueError, match="unknown allocation mode"):
        apply_masks(model, TRIPLE, mode="layerwise")
    with pytest.raises(ValueError, match="visual"):
        apply_masks(model, {"language": 0.5, "cross": 0.5}, mode="modality")
    with pytest.raises(ValueError, match="overall"):
        apply_masks(model, TRIPLE, mode="uniform")
    with pytest.raises(ValueError, match="outside"):
        apply_masks(model, {**TRIPLE, "cross": 1.2}, mode="modality")
    with pytest.raises(ValueError, match="positive"):
        apply_masks(model, TRIPLE, phi=0.0)
    assert not masks_by_name(model)
    apply_masks(model, TRIPLE)
    with pytest.raises(ValueError, match="already has masks"):
        apply_masks(model, TRIPLE)


def _effective_weights_match(model: VQAModel) -> int:
    """Assert every masked weight the model computes equals W ⊙ m built now; returns how many."""
    count = 0
    for module in model.modules():
        if parametrize.is_parametrized(module, "weight"):
            p = module.parametrizations.weight[0]
            original = module.parametrizations.weight.original
            assert torch.equal(module.weight, original * p.mask)
            count += 1
    return count


def test_the_cached_masked_weight_follows_every_change_of_weight_or_mask() -> None:
    """W ⊙ m is cached between forwards; every way the project (or a user) changes W or m must
    show in the next forward: an optimiser step on W (stage 3), a threshold recomputation, a
    loaded state dict, a dtype move, and `.data` writes followed by `invalidate()`."""
    model = tiny_model()
    apply_masks(model, TRIPLE, mode="modality")
    x = batch()
    assert _effective_weights_match(model) > 0
    # Stage 3: the weights train with the mask fixed.
    weights = [m.parametrizations.weight.original for m in model.modules()
               if parametrize.is_parametrized(m, "weight")]  # fmt: skip
    for w in weights:
        w.requires_grad_(True)
    optimizer = torch.optim.AdamW(weights, lr=0.1)
    model(**x)[0].square().sum().backward()
    optimizer.step()
    _effective_weights_match(model)
    # New scores, recomputed masks.
    with torch.no_grad():
        for s in mask_parameters(model):
            s.copy_(torch.randn_like(s))
    recompute_masks(model)
    _effective_weights_match(model)
    # A state dict from another model.
    other = tiny_model(seed=5)
    apply_masks(other, TRIPLE, mode="modality")
    model.load_state_dict(other.state_dict())
    _effective_weights_match(model)
    assert torch.equal(model(**x)[0], other(**x)[0])
    # A dtype move replaces every tensor's storage.
    model.double()
    _effective_weights_match(model)
    # `.data` writes escape the version counter: invalidate says so.
    for w in weights:
        w.data.mul_(2.0)
    for module in model.modules():
        if parametrize.is_parametrized(module, "weight"):
            module.parametrizations.weight[0].invalidate()
    _effective_weights_match(model)


def test_selection_binarisation_equals_a_stable_sort_with_ties() -> None:
    """The k-th-smallest selection prunes exactly the positions a stable argsort would: the
    `count` lowest scores, ties at the threshold by lower flat index first."""
    from pruning.masks import _lowest_positions, _mask_with_count

    g = torch.Generator().manual_seed(0)
    for trial in range(50):
        n = int(torch.randint(1, 400, (1,), generator=g))
        # Few distinct values: heavy ties, as magnitude init produces.
        scores = torch.randint(0, 1 + trial % 5, (n,), generator=g).float()
        if trial % 2:
            scores = torch.randn(n, generator=g)
        count = int(torch.randint(0, n + 1, (1,), generator=g))
        expected = torch.ones(n)
        expected[_lowest_positions(scores, count)] = 0
        assert torch.equal(_mask_with_count(scores, count), expected), (trial, n, count)


def _word_embedding_grads(
    original: VQAModel, masked: VQAModel, inputs: list[dict[str, torch.Tensor]]
) -> torch.Tensor:
    """dL/d(W ⊙ m) of the word embedding for the summed losses of ``inputs``: from a copy of the
    unmasked model with every W ⊙ m written into its plain weights, the word embedding's
    trainable (no mask code on the path)."""
    baked = copy.deepcopy(original)
    masks = masks_by_name(masked)
    with torch.no_grad():
        for name, param in baked.named_parameters():
            if name in masks:
                param.mul_(masks[name])
    weight = baked.backbone.embeddings.word_embeddings.weight
    weight.requires_grad_(True)
    sum(baked(**x)[0].square().sum() for x in inputs).backward()
    return weight.grad


@pytest.mark.parametrize("cached", [False, True], ids=["plain", "parametrize-cached"])
def test_the_word_embedding_gradients_touch_only_looked_up_rows_and_equal_the_dense_product(
    cached: bool,
) -> None:
    """The masked word embedding multiplies only the looked-up rows of its gradient. Its score
    gradient (stage 2) and weight gradient (stage 3) must equal the dense products, also when
    parametrize.cached() lets one W ⊙ m serve two lookups of different rows."""
    original_model = tiny_model()
    model = copy.deepcopy(original_model)
    apply_masks(model, TRIPLE, mode="modality")
    embedding = model.backbone.embeddings.word_embeddings
    p = embedding.parametrizations.weight[0]
    original = embedding.parametrizations.weight.original
    inputs = [batch(1), batch(2)]
    looked_up = torch.unique(torch.cat([x["input_ids"].flatten() for x in inputs]))
    assert 0 < looked_up.numel() < embedding.num_embeddings  # some rows are not touched
    reference = _word_embedding_grads(original_model, model, inputs)

    def run() -> None:
        if cached:
            with parametrize.cached():
                sum(model(**x)[0].square().sum() for x in inputs).backward()
        else:
            sum(model(**x)[0].square().sum() for x in inputs).backward()

    # Without the cache each lookup has its own W ⊙ m, so the score gradient is g1·W + g2·W
    # against the reference's (g1 + g2)·W: equal up to rounding.
    close = {"rtol": 1e-6, "atol": 1e-7}
    run()  # stage 2: scores train
    torch.testing.assert_close(p.scores.grad, reference * original.detach(), **close)
    untouched = torch.ones(embedding.num_embeddings, dtype=torch.bool)
    untouched[looked_up] = False
    assert not p.scores.grad[untouched].any()
    assert p._lookup is None  # nothing lingers after the forward
    # Stage 3: the weights train, the scores and the mask are fixed.
    p.scores.requires_grad_(False)
    p.scores.grad = None
    original.requires_grad_(True)
    run()
    torch.testing.assert_close(original.grad, reference * p.mask, **close)
    assert p.scores.grad is None
    # The lookup hooks leave with the masks.
    remove_masks(model)
    assert not embedding._forward_pre_hooks and not embedding._forward_hooks


def test_masks_that_rebuild_the_product_every_forward_compute_what_cached_ones_do(masked) -> None:
    _, cached = masked
    cached.train()
    fresh = copy.deepcopy(cached)
    for module in fresh.modules():
        if isinstance(module, ScoreMask):
            module.cache_product = False
    x = batch()
    outputs = []
    for model in (cached, fresh):
        logits, _ = model(**x)
        logits.square().sum().backward()
        outputs.append(logits.detach())
    torch.testing.assert_close(outputs[0], outputs[1], rtol=0, atol=0)
    grads = [{n: p.scores.grad for n, p in named_score_masks(m)} for m in (cached, fresh)]
    assert grads[0].keys() == grads[1].keys()
    for name, grad in grads[0].items():
        if grad is None:
            assert grads[1][name] is None, name
        else:
            torch.testing.assert_close(grad, grads[1][name], rtol=0, atol=0, msg=name)
    # The fresh masks hold no product between forwards: no weight-sized buffer per mask.
    assert all(p._masked is None for _, p in named_score_masks(fresh))
    assert all(p._masked is not None for _, p in named_score_masks(cached))
