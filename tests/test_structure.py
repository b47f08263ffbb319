"""Modality groups of LXMERT's prunable weights (DESIGN.md §4)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils.parametrize import is_parametrized
from transformers import LxmertConfig, LxmertModel

from models.structure import group_sizes, prunable_groups

KEYS = ["language", "visual", "cross", "pooler"]
TINY = {
    "vocab_size": 50,
    "hidden_size": 16,
    "num_attention_heads": 2,
    "intermediate_size": 24,
    "l_layers": 1,
    "x_layers": 1,
    "r_layers": 1,
    "visual_feat_dim": 10,
    "visual_pos_dim": 4,
}


def tiny_lxmert(**overrides: int) -> LxmertModel:
    torch.manual_seed(0)
    return LxmertModel(LxmertConfig(**{**TINY, **overrides}))


class Wrapper(nn.Module):
    def __init__(self, backbone: nn.Module, num_answers: int = 7) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(TINY["hidden_size"], num_answers)


@pytest.fixture(scope="module")
def base() -> LxmertModel:
    # Constructed from the default (base) config with random weights: no download.
    torch.manual_seed(0)
    return LxmertModel(LxmertConfig())


def test_base_group_sizes_match_the_paper(base: LxmertModel) -> None:
    sizes = group_sizes(base)
    assert list(sizes) == KEYS
    assert sizes == {
        "language": 87_141_888,
        "visual": 36_965_376,
        "cross": 82_575_360,
        "pooler": 589_824,
    }


def test_base_groups_are_disjoint_weights_only(base: LxmertModel) -> None:
    groups = prunable_groups(base)
    assert list(groups) == KEYS
    params = dict(base.named_parameters())
    names = [name for group in groups.values() for name in group]
    assert len(names) == len(set(names))
    for name in names:
        assert name in params
        assert params[name].dim() == 2, name
        assert name.endswith(".weight"), name
        lowered = name.lower()
        for banned in ("bias", "layernorm", "layer_norm", "position", "token_type"):
            assert banned not in lowered, name
    assert groups["language"][0] == "embeddings.word_embeddings.weight"
    assert groups["visual"][:2] == [
        "encoder.visn_fc.visn_fc.weight",
        "encoder.visn_fc.box_fc.weight",
    ]
    assert groups["pooler"] == ["pooler.dense.weight"]
    assert all(n.startswith("encoder.layer.") for n in groups["language"][1:])
    assert all(n.startswith("encoder.r_layers.") for n in groups["visual"][2:])
    assert all(n.startswith("encoder.x_layers.") for n in groups["cross"])
    # Order within a group follows named_parameters().
    order = {name: i for i, name in enumerate(params)}
    for group in groups.values():
        assert group == sorted(group, key=order.__getitem__)


def test_tiny_sizes_from_config_numbers() -> None:
    model = tiny_lxmert(l_layers=2, r_layers=1, x_layers=1)
    c = model.config
    h, i = c.hidden_size, c.intermediate_size
    # A BERT layer: query, key, value, attention output (h x h each), intermediate and output.
    bert_layer = 4 * h * h + 2 * h * i
    # A cross layer: shared cross-attention + two self-attentions (4 h^2 each), two FFNs.
    cross_layer = 3 * 4 * h * h + 2 * 2 * h * i
    assert group_sizes(model) == {
        "language": c.vocab_size * h + c.l_layers * bert_layer,
        "visual": c.visual_feat_dim * h + c.visual_pos_dim * h + c.r_layers * bert_layer,
        "cross": c.x_layers * cross_layer,
        "pooler": h * h,
    }
    groups = prunable_groups(model)
    assert [len(g) for g in groups.values()] == [1 + 6 * 2, 2 + 6, 12 + 4, 1]


def test_wrapper_names_are_prefixed_and_exclude_the_head() -> None:
    backbone = tiny_lxmert()
    wrapper = Wrapper(backbone)
    groups = prunable_groups(wrapper)
    params = dict(wrapper.named_parameters())
    names = [name for group in groups.values() for name in group]
    assert names
    assert all(name.startswith("backbone.") and name in params for name in names)
    assert not any(name.startswith("head.") for name in names)
    plain = prunable_groups(backbone)
    assert groups == {k: ["backbone." + n for n in v] for k, v in plain.items()}
    assert group_sizes(wrapper) == group_sizes(backbone)


def test_a_masked_model_has_the_same_groups_names_and_sizes() -> None:
    from pruning.masks import apply_masks

    wrapper = Wrapper(tiny_lxmert())
    groups, sizes = prunable_groups(wrapper), group_sizes(wrapper)
    apply_masks(wrapper, {"language": 0.5, "visual": 0.3, "cross": 0.7}, "modality")
    assert prunable_groups(wrapper) == groups and group_sizes(wrapper) == sizes
    for name in (n for names in groups.values() for n in names):
        module, attr = name.rsplit(".", 1)  # each name resolves, to a masked weight
        assert attr == "weight" and is_parametrized(wrapper.get_submodule(module), "weight")


def test_nested_deeper() -> None:
    outer = nn.ModuleDict({"model": Wrapper(tiny_lxmert())})
    groups = prunable_groups(outer)
    params = dict(outer.named_parameters())
    assert groups["pooler"] == ["model.backbone.pooler.dense.weight"]
    assert all(name in params for group in groups.values() for name in group)


def test_no_lxmert_raises_naming_the_class() -> None:
    with pytest.raises(ValueError, match="Sequential"):
        prunable_groups(nn.Sequential(nn.Linear(3, 3)))
    with pytest.raises(ValueError, match="Linear"):
        group_sizes(nn.Linear(3, 3))


def test_two_lxmerts_are_ambiguous() -> None:
    with pytest.raises(ValueError, match="expected one"):
        prunable_groups(nn.ModuleList([tiny_lxmert(), tiny_lxmert()]))
