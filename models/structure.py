"""Modality structure of LXMERT: which weights the pruning acts on, grouped by modality.

Groups (DESIGN.md §4, checked against the paper's appendix B.4), relative to the LxmertModel:

- ``language``: ``embeddings.word_embeddings.weight`` and every ``nn.Linear`` weight in
  ``encoder.layer.*``;
- ``visual``: ``encoder.visn_fc.visn_fc.weight``, ``encoder.visn_fc.box_fc.weight`` and every
  ``nn.Linear`` weight in ``encoder.r_layers.*``;
- ``cross``: every ``nn.Linear`` weight in ``encoder.x_layers.*``;
- ``pooler``: ``pooler.dense.weight``.

Never in a group: biases, LayerNorms, position and token-type embeddings, and anything outside
the LxmertModel (answer head, objective parameters). For lxmert-base the group sizes are
87,141,888 / 36,965,376 / 82,575,360 / 589,824 weights.
"""

from __future__ import annotations

from torch import nn
from transformers import LxmertModel

GROUPS: tuple[str, ...] = ("language", "visual", "cross", "pooler")

# Module-path prefixes (relative to the LxmertModel) whose nn.Linear weights form a group.
_LINEAR_PREFIXES: dict[str, str] = {
    "encoder.layer.": "language",
    "encoder.r_layers.": "visual",
    "encoder.x_layers.": "cross",
}
# Single weights, relative to the LxmertModel.
_SINGLE_WEIGHTS: dict[str, str] = {
    "embeddings.word_embeddings.weight": "language",
    "encoder.visn_fc.visn_fc.weight": "visual",
    "encoder.visn_fc.box_fc.weight": "visual",
    "pooler.dense.weight": "pooler",
}


def find_lxmert(model: nn.Module) -> LxmertModel:
    found = [module for _, module in model.named_modules() if isinstance(module, LxmertModel)]
    if not found:
        raise ValueError(f"no transformers.LxmertModel inside {type(model).__name__}")
    if len(found) > 1:
        raise ValueError(
            f"{len(found)} LxmertModel submodules inside {type(model).__name__}; expected one"
        )
    return found[0]


def prunable_groups(model: nn.Module) -> dict[str, list[str]]:
    """Names of the prunable weights of each modality group, keys ``language``, ``visual``,
    ``cross``, ``pooler`` in that order.

    ``model`` is a ``transformers.LxmertModel`` or any module containing exactly one, masked or
    not. The names are ``<module path>.weight`` as ``model.named_parameters()`` lists them for an
    unmasked model (e.g. ``backbone.``-prefixed for a wrapper), in that order; on a masked model
    (``torch.nn.utils.parametrize``) they are the same names, and ``model.get_submodule(path)``
    resolves each. Raises ``ValueError`` if there is no LxmertModel.
    """
    lxmert = find_lxmert(model)
    group_of: dict[int, str] = {}  # id(parameter) -> group
    params = named_weights(lxmert)
    for local_name, group in _SINGLE_WEIGHTS.items():
        group_of[id(params[local_name])] = group
    for module_name, module in lxmert.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        for prefix, group in _LINEAR_PREFIXES.items():
            if module_name.startswith(prefix):
                group_of[id(params[f"{module_name}.weight"])] = group

    # Names are taken from `model` itself, so they resolve there even when a weight is shared.
    groups: dict[str, list[str]] = {group: [] for group in GROUPS}
    for name, param in named_weights(model).items():
        group = group_of.get(id(param))
        if group is not None:
            groups[group].append(name)
    return groups


def group_sizes(model: nn.Module) -> dict[str, int]:
    """Number of weights (elements) in each group of :func:`prunable_groups`, same keys."""
    params = named_weights(model)
    return {
        group: sum(params[name].numel() for name in names)
        for group, names in prunable_groups(model).items()
    }


_ORIGINAL = ".parametrizations.weight.original"


def named_weights(model: nn.Module) -> dict[str, nn.Parameter]:
    """``dict(model.named_parameters())``, except that a parametrized (masked) weight appears
    under its own name ``<module>.weight`` (its original, which parametrize keeps at
    ``<module>.parametrizations.weight.original``) and the parametrizations' own parameters
    (mask scores) are left out."""
    out: dict[str, nn.Parameter] = {}
    for name, param in model.named_parameters():
        if name.endswith(_ORIGINAL):
            out[name.removesuffix(_ORIGINAL) + ".weight"] = param
        elif ".parametrizations." not in name:
            out[name] = param
    return out
