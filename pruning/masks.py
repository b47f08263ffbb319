"""Binary masks on LXMERT's prunable weights, trained through real-valued scores (DESIGN.md §5).

Each prunable weight (:func:`models.structure.prunable_groups`) gets a
``torch.nn.utils.parametrize`` parametrization, :class:`ScoreMask`, holding

- ``scores``: a trainable Parameter Ŝ of the weight's shape;
- ``mask``: a binary buffer m (same dtype as the weight) with exactly ``num_pruned`` zeros.

The module's ``weight`` then reads ``W ⊙ m``; the original weight lives at
``<module>.parametrizations.weight.original``. ``copy.deepcopy(model)`` works, and
:func:`remove_masks` bakes ``W ⊙ m`` into a plain weight so ``state_dict()`` has the original
Hugging Face names again (loadable into a fresh ``LxmertModel`` with ``strict=True``); on a deep
copy it leaves the original masked.

**When the mask is binarised.** The forward uses the *stored* ``mask`` buffer; it is recomputed from
the current scores only by :func:`recompute_masks` (each tensor at its own exact count), which a
training loop calls every t_m steps (the paper's threshold recomputation). Between recomputations
the straight-through estimator still sends ∂L/∂m to the scores unchanged (∂L/∂Ŝ = ∂L/∂m), so the
scores move every step and the mask follows at the next recomputation.

**Freezing.** :func:`apply_masks` calls :func:`freeze_backbone_weights`: every parameter of the
LxmertModel (original weights, biases, LayerNorms, embeddings) gets ``requires_grad=False``, except
the mask scores. Parameters outside the LxmertModel (the answer head) are not touched.

**Allocation modes** (``sparsities`` maps names to fractions in [0, 1]):

- ``uniform``: every prunable tensor (pooler included) at ``sparsities["overall"]``;
- ``modality``: each tensor at its group's ``sparsities["language" | "visual" | "cross"]``; the
  pooler at ``sparsities["pooler"]`` if given, else ``sparsities["overall"]``, else the
  size-weighted mean of the triple (the budget s of eq. 10);
- ``global`` (the paper's "matrix-specific" sparsity): all language+visual+cross weights ranked
  together; exactly ``round(overall · N)`` of them (N = their total count) are pruned. The first
  mask ranks |W|; every :func:`recompute_masks` ranks these tensors' scores together again (one
  threshold for all of them), so weights move between tensors while the total stays exact. The
  pooler is pruned on its own at ``sparsities.get("pooler", overall)``.

Ties in scores or |W| are broken by flattened index (stable sort: lower index pruned first), so
every count is exact even when all values are equal.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from models.structure import GROUPS, find_lxmert, prunable_groups

MODES: tuple[str, ...] = ("uniform", "modality", "global")
# Groups whose tensors make up the "overall" sparsity (eq. 10); the pooler is reported apart.
BUDGET_GROUPS: tuple[str, ...] = ("language", "visual", "cross")


def _num_pruned(numel: int, sparsity: float) -> int:
    if not 0.0 <= sparsity <= 1.0:
        raise ValueError(f"sparsity {sparsity} is outside [0, 1]")
    return int(round(sparsity * numel))


def _lowest_positions(values: Tensor, count: int) -> Tensor:
    """Flat indices of the ``count`` lowest entries of ``values``; ties by lower index first."""
    order = torch.argsort(values.detach().flatten(), stable=True)
    return order[:count]


def _kth_smallest(flat: Tensor, k: int) -> Tensor:
    """The k-th smallest entry (1-based) of a 1-d tensor, as a 0-d tensor on its device."""
    if flat.device.type == "cpu" and flat.dtype in (torch.float32, torch.float64):
        # numpy's introselect is ~10x torch.kthvalue on CPU for tensors of 10^7 entries.
        value = np.partition(flat.numpy(), k - 1)[k - 1]
        return torch.tensor(value, dtype=flat.dtype)
    return flat.kthvalue(k).values


def _mask_with_count(scores: Tensor, count: int) -> Tensor:
    """Ones, with zeros at the ``count`` lowest scores (ties: lower flat index first).

    Selection, not a sort: O(n). Same result as zeroing ``_lowest_positions(scores, count)``."""
    flat = scores.detach().flatten()
    n = flat.numel()
    if count <= 0:
        return torch.ones_like(scores)
    if count >= n:
        return torch.zeros_like(scores)
    threshold = _kth_smallest(flat, count)
    prune = flat <= threshold
    excess = int(prune.sum()) - count
    if excess:  # ties at the threshold: keep the highest-index ones
        tied = (flat == threshold).nonzero().squeeze(1)
        prune[tied[tied.numel() - excess :]] = False
    return (~prune).to(scores.dtype).view_as(scores)


def exact_mask(scores: Tensor, sparsity: float) -> Tensor:
    """Binary mask (dtype of ``scores``, values 0/1) with exactly ``round(sparsity · numel)``
    zeros at the lowest scores; ties broken by flattened index (lower index pruned first)."""
    return _mask_with_count(scores, _num_pruned(scores.numel(), sparsity))


class _MaskedWeight(torch.autograd.Function):
    """Forward: ``masked`` (= W ⊙ m, cached); backward: ∂L/∂Ŝ = ∂L/∂m = ∂L/∂(W⊙m) ⊙ W, and
    ∂L/∂W = ∂L/∂(W⊙m) ⊙ m should W train.

    ``rows`` (1-d indices, or None) says the output feeds one embedding lookup of exactly those
    rows, so ∂L/∂(W⊙m) is zero elsewhere and only those rows are multiplied."""

    @staticmethod
    def forward(
        ctx, scores: Tensor, weight: Tensor, mask: Tensor, masked: Tensor, rows: Tensor | None
    ) -> Tensor:
        ctx.save_for_backward(weight, mask, rows)
        return masked.view_as(masked)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None, None, None]:
        weight, mask, rows = ctx.saved_tensors
        want_scores, want_weight = ctx.needs_input_grad[:2]
        if rows is not None and want_scores != want_weight and grad.is_contiguous():
            # The embedding's backward made this dense gradient for this node alone, so it can
            # be rescaled in place: a few hundred rows instead of the whole vocabulary (the word
            # embedding is half of a small LXMERT's prunable weights).
            factor = weight if want_scores else mask
            grad.index_copy_(0, rows, grad.index_select(0, rows) * factor.index_select(0, rows))
            return (grad, None, None, None, None) if want_scores else (None, grad, None, None, None)
        # The saved tensor first: a Linear's weight gradient arrives transposed (non-contiguous),
        # and the result takes the first operand's layout. grad * weight was 7x slower here and
        # non-contiguous, so autograd copied it again to match the scores' layout.
        grad_scores = weight * grad if want_scores else None
        grad_weight = mask * grad if want_weight else None
        return grad_scores, grad_weight, None, None, None


def magnitude_init_scores(
    weight: Tensor, sparsity: float, alpha: float = 2.0, phi: float = 0.01
) -> Tensor:
    """Eq. 3: Ŝ = α·φ where one-shot magnitude pruning (|W|, exact count) keeps the weight,
    0 elsewhere."""
    return exact_mask(weight.detach().abs(), sparsity) * (alpha * phi)


class ScoreMask(nn.Module):
    """Parametrization ``W -> W ⊙ m``, m the stored mask with a straight-through path to the
    scores. ``num_pruned`` (the exact zero count), ``requested`` (the sparsity asked for this
    tensor), ``group`` and ``pool`` (``"global"`` when the count is shared with the other
    tensors of that pool and moves between them at each recomputation; else None) are plain
    attributes."""

    def __init__(
        self, scores: Tensor, num_pruned: int, requested: float, group: str, pool: str | None = None
    ) -> None:
        super().__init__()
        if not 0 <= num_pruned <= scores.numel():
            raise ValueError(f"num_pruned {num_pruned} outside [0, {scores.numel()}]")
        self.scores = nn.Parameter(scores.detach().clone())
        self.register_buffer("mask", _mask_with_count(self.scores, num_pruned))
        self.num_pruned = int(num_pruned)
        self.requested = float(requested)
        self.group = group
        self.pool = pool
        # W ⊙ m, rebuilt only when W or m change: between threshold recomputations it is
        # constant, so the forward needs no product and no copy (see _cache_key).
        self._masked: Tensor | None = None
        self._masked_key: tuple = ()
        # Indices the owning nn.Embedding is about to look up, set by _record_lookup just before
        # its forward reads the weight and taken by that read (see _MaskedWeight).
        self._lookup: Tensor | None = None

    def _cache_key(self, weight: Tensor) -> tuple:
        """What W ⊙ m was built from. The tensors themselves are held, so a replaced one cannot
        be freed and its address reused by its successor; versions count in-place writes
        (optimiser steps, ``copy_``, ``load_state_dict``); data pointers catch ``.to()`` and
        ``param.data = ...``. Writes through ``.data`` bypass the version counter: call
        :meth:`invalidate` after them."""
        mask = self.mask
        return (weight, weight._version, weight.data_ptr(), mask, mask._version, mask.data_ptr())

    def invalidate(self) -> None:
        """Drop the cached W ⊙ m; the next forward rebuilds it."""
        self._masked, self._masked_key = None, ()

    cache_product: bool = True
    """Keep W ⊙ m between recomputations (one weight-sized buffer per mask) instead of building
    it every forward. Class-wide; ``scripts/bench_gpu.py`` times and sizes both settings."""

    def forward(self, weight: Tensor) -> Tensor:
        rows, self._lookup = self._lookup, None
        if getattr(parametrize, "_cache_enabled", 1):
            # Under parametrize.cached() this output may serve several lookups (or none).
            rows = None
        return _MaskedWeight.apply(self.scores, weight, self.mask, self._product(weight), rows)

    @torch.no_grad()
    def _product(self, weight: Tensor) -> Tensor:
        """W ⊙ m: the cached one while W and m are unchanged (see _cache_key), or a fresh one."""
        if not self.cache_product:
            self.invalidate()
            return weight * self.mask
        key = self._cache_key(weight)
        old = self._masked_key
        if (
            self._masked is None
            or len(old) != len(key)
            or any(
                a is not b if isinstance(a, Tensor) else a != b
                for a, b in zip(old, key, strict=True)
            )
        ):
            self._masked = weight * self.mask
            self._masked_key = key
        return self._masked

    @torch.no_grad()
    def recompute(self) -> None:
        """Re-binarise the mask from the current scores at this tensor's exact count."""
        self.mask.copy_(_mask_with_count(self.scores, self.num_pruned))
        self.invalidate()  # the version counter already tells; this says it plainly

    def extra_repr(self) -> str:
        return (
            f"group={self.group}, shape={tuple(self.scores.shape)}, "
            f"num_pruned={self.num_pruned}, requested={self.requested:g}"
            + (f", pool={self.pool}" if self.pool else "")
        )


def _record_lookup(module: nn.Module, args: tuple) -> None:
    """Forward pre-hook of a masked ``nn.Embedding``: hand the looked-up rows to its mask.

    A module-level function rather than a closure, so ``copy.deepcopy`` gives the copy a hook
    that finds the copy's own mask."""
    if not torch.is_grad_enabled() or not parametrize.is_parametrized(module, "weight") or not args:
        return  # without autograd there is no backward to spare (evaluation)
    ids = args[0]
    if not isinstance(ids, Tensor) or ids.dtype not in (torch.int32, torch.int64):
        return
    for p in module.parametrizations.weight:
        if isinstance(p, ScoreMask):
            p._lookup = torch.unique(ids.detach()).to(torch.int64)


def _forget_lookup(module: nn.Module, args: tuple, output: Tensor) -> None:
    """Forward hook of a masked ``nn.Embedding``: rows its forward did not take never linger."""
    if parametrize.is_parametrized(module, "weight"):
        for p in module.parametrizations.weight:
            if isinstance(p, ScoreMask):
                p._lookup = None


def _score_masks(model: nn.Module) -> list[tuple[nn.Module, ScoreMask]]:
    """(owning module, parametrization) for every masked weight, in ``modules()`` order."""
    found = []
    for module in model.modules():
        if not parametrize.is_parametrized(module, "weight"):
            continue
        for p in module.parametrizations.weight:
            if isinstance(p, ScoreMask):
                found.append((module, p))
    return found


def has_masks(model: nn.Module) -> bool:
    return bool(_score_masks(model))


def freeze_backbone_weights(model: nn.Module) -> None:
    """``requires_grad=False`` on every parameter of the LxmertModel inside ``model`` except mask
    scores; parameters outside it (the answer head) are left as they are."""
    lxmert = find_lxmert(model)
    scores = {id(p.scores) for _, p in _score_masks(lxmert)}
    for param in lxmert.parameters():
        if id(param) not in scores:
            param.requires_grad_(False)


def _tensor_sparsities(
    sparsities: dict[str, float], mode: str, sizes: dict[str, int]
) -> dict[str, float]:
    """Requested sparsity per group for ``uniform``/``modality`` (and ``overall`` for global)."""
    if mode not in MODES:
        raise ValueError(f"unknown allocation mode {mode!r}; expected one of {', '.join(MODES)}")
    if mode in ("uniform", "global"):
        if "overall" not in sparsities:
            raise ValueError(f"mode {mode!r} needs sparsities['overall']")
        s = float(sparsities["overall"])
        if mode == "uniform":
            return {group: s for group in GROUPS}
        return {**{g: s for g in BUDGET_GROUPS}, "pooler": float(sparsities.get("pooler", s))}
    missing = [g for g in BUDGET_GROUPS if g not in sparsities]
    if missing:
        raise ValueError(f"mode 'modality' needs sparsities for {', '.join(missing)}")
    out = {g: float(sparsities[g]) for g in BUDGET_GROUPS}
    if "pooler" in sparsities:
        out["pooler"] = float(sparsities["pooler"])
    elif "overall" in sparsities:
        out["pooler"] = float(sparsities["overall"])
    else:
        total = sum(sizes[g] for g in BUDGET_GROUPS)
        out["pooler"] = sum(out[g] * sizes[g] for g in BUDGET_GROUPS) / total
    return out


def apply_masks(
    model: nn.Module,
    sparsities: dict[str, float],
    mode: str = "modality",
    alpha: float = 2.0,
    phi: float = 0.01,
) -> None:
    """Register a :class:`ScoreMask` on every prunable weight of ``model`` (see the module doc
    for the modes), scores initialised by eq. 3 so the first mask is one-shot magnitude pruning;
    then freeze the backbone (:func:`freeze_backbone_weights`). In place."""
    if has_masks(model):
        raise ValueError("model already has masks; call remove_masks first")
    if not alpha * phi > 0:
        raise ValueError(f"alpha * phi must be positive, got {alpha} * {phi}")
    groups = prunable_groups(model)
    params = dict(model.named_parameters())
    sizes = {g: sum(params[n].numel() for n in names) for g, names in groups.items()}
    requested = _tensor_sparsities(sparsities, mode, sizes)
    for s in requested.values():
        _num_pruned(1, s)  # range check

    # Exact zero count per tensor.
    counts: dict[str, int] = {}
    if mode == "global":
        names = [n for g in BUDGET_GROUPS for n in groups[g]]
        flat = torch.cat([params[n].detach().abs().flatten() for n in names])
        pruned = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
        pruned[_lowest_positions(flat, _num_pruned(flat.numel(), requested["language"]))] = True
        for name, chunk in zip(
            names, torch.split(pruned, [params[n].numel() for n in names]), strict=True
        ):
            counts[name] = int(chunk.sum())
        del flat, pruned
        for name in groups["pooler"]:
            counts[name] = _num_pruned(params[name].numel(), requested["pooler"])
    else:
        for group, group_names in groups.items():
            for name in group_names:
                counts[name] = _num_pruned(params[name].numel(), requested[group])

    for group, group_names in groups.items():
        for name in group_names:
            weight = params[name]
            scores = _mask_with_count(weight.detach().abs(), counts[name]) * (alpha * phi)
            module_name, attr = name.rsplit(".", 1)
            module = model.get_submodule(module_name)
            pool = "global" if mode == "global" and group in BUDGET_GROUPS else None
            mask = ScoreMask(scores, counts[name], requested[group], group, pool)
            parametrize.register_parametrization(module, attr, mask)
            if isinstance(module, nn.Embedding) and attr == "weight":
                module.register_forward_pre_hook(_record_lookup)
                module.register_forward_hook(_forget_lookup)
    freeze_backbone_weights(model)


def mask_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The trainable scores of every mask, in ``modules()`` order."""
    return [p.scores for _, p in _score_masks(model)]


@torch.no_grad()
def recompute_masks(model: nn.Module) -> None:
    """Re-binarise every mask from its current scores: each at its own exact zero count, except
    masks of a pool (``global`` mode), which are ranked together at their total count."""
    pools: dict[str, list[ScoreMask]] = {}
    for _, p in _score_masks(model):
        if p.pool is None:
            p.recompute()
        else:
            pools.setdefault(p.pool, []).append(p)
    for masks in pools.values():
        _recompute_together(masks)


def _recompute_together(masks: list[ScoreMask]) -> None:
    """One exact count over the scores of all `masks` (ties by position in that order)."""
    flat = torch.cat([p.scores.detach().flatten() for p in masks])
    keep = _mask_with_count(flat, sum(p.num_pruned for p in masks))
    del flat
    for p, chunk in zip(masks, torch.split(keep, [p.scores.numel() for p in masks]), strict=True):
        p.mask.copy_(chunk.view_as(p.mask))
        p.num_pruned = int((chunk == 0).sum())
        p.invalidate()


@torch.no_grad()
def remove_masks(model: nn.Module) -> None:
    """Bake ``W ⊙ m`` into each plain weight and drop the parametrizations, so the state dict
    has the original names. The weight keeps its ``requires_grad`` flag (False after
    :func:`apply_masks`)."""
    for module, p in _score_masks(model):
        original = module.parametrizations.weight.original
        baked = original * p.mask
        # parametrize gives a module a generated class that a deep copy shares; removing the
        # parametrization deletes `weight` from the class, so first give this module its own.
        cls = type(module)
        module.__class__ = type(cls.__name__, cls.__bases__, dict(vars(cls)))
        parametrize.remove_parametrizations(module, "weight", leave_parametrized=False)
        module.weight.copy_(baked)
        for hooks in (module._forward_pre_hooks, module._forward_hooks):
            for key in [k for k, h in hooks.items() if h in (_record_lookup, _forget_lookup)]:
                del hooks[key]


@torch.no_grad()
def sparsity_report(model: nn.Module) -> dict[str, dict[str, float | int]]:
    """Per group (language, visual, cross, pooler) and ``overall`` (language+visual+cross):
    ``numel``, ``pruned`` (zeros in the masks), ``requested`` (numel-weighted mean of the
    sparsities asked per tensor) and ``realised`` (pruned / numel). Groups without masks are
    left out; ``overall`` only if a budget group has masks."""
    acc: dict[str, list[float]] = {}  # group -> [numel, pruned, requested * numel]
    for _, p in _score_masks(model):
        n = p.mask.numel()
        zeros = int((p.mask == 0).sum())
        row = acc.setdefault(p.group, [0, 0, 0.0])
        row[0] += n
        row[1] += zeros
        row[2] += p.requested * n

    def summary(row: list[float]) -> dict[str, float | int]:
        numel, pruned, req = row
        return {
            "numel": int(numel),
            "pruned": int(pruned),
            "requested": req / numel if numel else 0.0,
            "realised": pruned / numel if numel else 0.0,
        }

    report = {g: summary(acc[g]) for g in GROUPS if g in acc}
    budget = [acc[g] for g in BUDGET_GROUPS if g in acc]
    if budget:
        report["overall"] = summary([sum(col) for col in zip(*budget, strict=True)])
    return report
