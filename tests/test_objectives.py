"""Debiasing objectives against direct computations of the formulas (paper eqs. 4-8)."""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError

from models.objectives import (
    BCE,
    LMH,
    LPF,
    Objective,
    ObjectiveConfig,
    RUBi,
    build_objective,
    predict,
)

B, A, H = 5, 7, 6
ZERO_ROW = 2
LEVELS = torch.tensor([0.0, 0.3, 0.6, 0.9])


def make_inputs(seed: int = 0) -> dict[str, torch.Tensor]:
    """Soft targets with values in {0, .3, .6, .9, 1}: one all-zero row, the others a unique 1."""
    g = torch.Generator().manual_seed(seed)
    targets = LEVELS[torch.randint(0, len(LEVELS), (B, A), generator=g)]
    top = torch.randint(0, A, (B,), generator=g)
    targets[torch.arange(B), top] = 1.0
    targets[ZERO_ROW] = 0.0
    return {
        "logits": torch.randn(B, A, generator=g) * 2,
        "targets": targets,
        "prior": torch.rand(B, A, generator=g) * 0.98 + 0.01,
        "pooled": torch.randn(B, H, generator=g),
    }


def make_lmh(seed: int = 1, **kwargs: float) -> LMH:
    torch.manual_seed(seed)
    return LMH(H, **kwargs)


# --- reference computations, written out element by element in float64 -------------------------


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def top_answer(row: list[float]) -> int | None:
    if max(row) == 0:
        return None
    return max(range(len(row)), key=lambda a: row[a])


def log_softmax_at(z: list[float], k: int) -> float:
    return z[k] - math.log(sum(math.exp(v) for v in z))


def ref_bce(x: torch.Tensor, t: torch.Tensor) -> float:
    total = 0.0
    for b in range(x.shape[0]):
        for a in range(x.shape[1]):
            p, ta = sigmoid(x[b, a].item()), t[b, a].item()
            total -= ta * math.log(p) + (1 - ta) * math.log(1 - p)
    return total / x.shape[0]


def ref_lmh(
    x: torch.Tensor, t: torch.Tensor, prior: torch.Tensor, h: torch.Tensor, lmh: LMH
) -> float:
    w = lmh.bias_lin.weight.detach().double()[0]
    c = lmh.bias_lin.bias.item()
    s = sigmoid(lmh.smooth.item())
    ce, entropy = 0.0, 0.0
    for b in range(x.shape[0]):
        g = math.log(1 + math.exp(float(h[b].double() @ w) + c))  # softplus
        for a in range(x.shape[1]):
            p, ta, pb = sigmoid(x[b, a].item()), t[b, a].item(), prior[b, a].item()
            bias_yes, bias_no = g * math.log(pb + s), g * math.log(1 - pb + s)
            z_yes, z_no = math.log(p) + bias_yes, math.log(1 - p) + bias_no
            norm = math.log(math.exp(z_yes) + math.exp(z_no))
            ce -= ta * (z_yes - norm) + (1 - ta) * (z_no - norm)
            q_yes = math.exp(bias_yes) / (math.exp(bias_yes) + math.exp(bias_no))
            entropy -= q_yes * math.log(q_yes) + (1 - q_yes) * math.log(1 - q_yes)
    return ce / x.shape[0] + lmh.entropy_weight * entropy / (x.shape[0] * x.shape[1])


def ref_rubi(x: torch.Tensor, t: torch.Tensor, prior: torch.Tensor) -> float:
    losses = []
    for b in range(x.shape[0]):
        k = top_answer(t[b].tolist())
        if k is None:
            continue
        z = [x[b, a].item() * sigmoid(prior[b, a].item()) for a in range(x.shape[1])]
        losses.append(-log_softmax_at(z, k))
    return sum(losses) / len(losses)


def ref_lpf(x: torch.Tensor, t: torch.Tensor, prior: torch.Tensor, gamma: float) -> float:
    losses = []
    for b in range(x.shape[0]):
        k = top_answer(t[b].tolist())
        if k is None:
            continue
        alpha = prior[b, k].item()
        losses.append((1 - alpha) ** gamma * -log_softmax_at(x[b].tolist(), k))
    return sum(losses) / len(losses)


def close(value: torch.Tensor, expected: float) -> None:
    assert value.dim() == 0 and value.dtype == torch.float32
    torch.testing.assert_close(value, torch.tensor(expected, dtype=torch.float32))


# --- values ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
def test_bce_matches_formula(seed: int) -> None:
    d = make_inputs(seed)
    close(BCE()(**d), ref_bce(d["logits"], d["targets"]))


@pytest.mark.parametrize("seed", [0, 1])
def test_lmh_matches_formula(seed: int) -> None:
    d = make_inputs(seed)
    lmh = make_lmh(seed)
    expected = ref_lmh(d["logits"], d["targets"], d["prior"], d["pooled"], lmh)
    close(lmh(**d), expected)


@pytest.mark.parametrize("seed", [0, 1])
def test_rubi_matches_formula(seed: int) -> None:
    d = make_inputs(seed)
    close(RUBi()(**d), ref_rubi(d["logits"], d["targets"], d["prior"]))


@pytest.mark.parametrize("gamma", [0.0, 2.0, 5.0])
def test_lpf_matches_formula(gamma: float) -> None:
    d = make_inputs(0)
    close(LPF(gamma)(**d), ref_lpf(d["logits"], d["targets"], d["prior"], gamma))


def test_lpf_with_gamma_zero_is_cross_entropy_on_rows_with_an_answer() -> None:
    d = make_inputs(0)
    rows = [b for b in range(B) if b != ZERO_ROW]
    expected = torch.nn.functional.cross_entropy(d["logits"][rows], d["targets"][rows].argmax(1))
    torch.testing.assert_close(LPF(0.0)(**d), expected)


@pytest.mark.parametrize("seed", [0, 1])
def test_ce_is_lxmerts_pretraining_qa_loss(seed: int) -> None:
    d = make_inputs(seed)
    ce = build_objective(ObjectiveConfig(name="ce"), H)
    # The formula with gamma = 0 (no prior weighting), and the same value as LPF(0).
    close(ce(**d), ref_lpf(d["logits"], d["targets"], d["prior"], 0.0))
    torch.testing.assert_close(ce(**d), LPF(0.0)(**d))
    assert list(ce.parameters()) == []


def test_lmh_without_prior_scaling_is_bce_plus_uniform_entropy() -> None:
    # g(h) = softplus(-100) ~ 0: the prior term vanishes, the scaled prior is uniform (log 2).
    d = make_inputs(0)
    lmh = make_lmh()
    with torch.no_grad():
        lmh.bias_lin.weight.zero_()
        lmh.bias_lin.bias.fill_(-100.0)
    expected = BCE()(**d) + lmh.entropy_weight * math.log(2)
    torch.testing.assert_close(lmh(**d), expected)


@pytest.mark.parametrize("objective", [RUBi(), LPF(5.0)], ids=["rubi", "lpf"])
def test_batch_without_in_vocabulary_answer_gives_differentiable_zero(objective: Objective) -> None:
    d = make_inputs(0)
    d["targets"] = torch.zeros(B, A)
    logits = d.pop("logits").requires_grad_()
    loss = objective(logits, **d)
    assert loss.item() == 0.0
    loss.backward()
    assert logits.grad is not None
    assert torch.equal(logits.grad, torch.zeros(B, A))


# --- parameters and gradients ---------------------------------------------------------------------


@pytest.mark.parametrize("objective", [BCE(), RUBi(), LPF()], ids=["bce", "rubi", "lpf"])
def test_parameter_free_objectives(objective: Objective) -> None:
    assert list(objective.parameters()) == []


@pytest.mark.parametrize("optimiser", [torch.optim.SGD, torch.optim.AdamW])
def test_lmh_parameters_are_registered_and_trained(optimiser: type) -> None:
    d = make_inputs(0)
    lmh = make_lmh()
    names = {name for name, _ in lmh.named_parameters()}
    assert names == {"bias_lin.weight", "bias_lin.bias", "smooth"}
    before = {name: p.detach().clone() for name, p in lmh.named_parameters()}
    opt = optimiser(lmh.parameters(), lr=0.1)
    lmh(**d).backward()
    for name, p in lmh.named_parameters():
        assert p.grad is not None, name
        assert p.grad.abs().sum() > 0, name
    opt.step()
    for name, p in lmh.named_parameters():
        assert not torch.equal(p.detach(), before[name]), name


@pytest.mark.parametrize("name", ["bce", "lmh", "rubi", "lpf"])
def test_backward_reaches_the_logits(name: str) -> None:
    d = make_inputs(0)
    logits = d.pop("logits").requires_grad_()
    torch.manual_seed(0)
    objective = build_objective(ObjectiveConfig(name=name), H)
    objective(logits, **d).backward()
    assert logits.grad is not None
    assert torch.isfinite(logits.grad).all()
    assert logits.grad.abs().sum() > 0
    if name in ("rubi", "lpf"):
        # The question without an in-vocabulary answer contributes nothing.
        assert torch.equal(logits.grad[ZERO_ROW], torch.zeros(A))


# --- configuration --------------------------------------------------------------------------------


def test_build_objective_uses_the_config() -> None:
    assert type(build_objective(ObjectiveConfig(), H)) is BCE
    assert type(build_objective(ObjectiveConfig(name="rubi"), H)) is RUBi
    lmh = build_objective(
        ObjectiveConfig(name="lmh", lmh_entropy_weight=0.5, lmh_smooth_init=-2.0), H
    )
    assert isinstance(lmh, LMH)
    assert lmh.name == "lmh"
    assert lmh.entropy_weight == 0.5
    assert lmh.smooth.item() == -2.0
    assert lmh.bias_lin.in_features == H
    lpf2 = build_objective(ObjectiveConfig(name="lpf", lpf_gamma=2.0), H)
    lpf5 = build_objective(ObjectiveConfig(name="lpf"), H)
    assert isinstance(lpf2, LPF) and lpf2.gamma == 2.0 and lpf5.gamma == 5.0
    d = make_inputs(0)
    assert lpf2(**d).item() != pytest.approx(lpf5(**d).item())
    assert [cls.name for cls in (BCE, LMH, RUBi, LPF)] == ["bce", "lmh", "rubi", "lpf"]


def test_config_defaults() -> None:
    c = ObjectiveConfig()
    assert (c.name, c.lmh_entropy_weight, c.lmh_smooth_init, c.lpf_gamma) == (
        "bce",
        0.36,
        -1.0,
        5.0,
    )


def test_unknown_objective_fails_at_name() -> None:
    with pytest.raises(ValidationError) as info:
        ObjectiveConfig(name="focal")
    assert [e["loc"] for e in info.value.errors()] == [("name",)]


@pytest.mark.parametrize("bad", [{"lpf_gamma": -1.0}, {"lmh_entropy_weight": -0.1}, {"gamma": 2.0}])
def test_config_rejects_bad_values(bad: dict) -> None:
    with pytest.raises(ValidationError):
        ObjectiveConfig(**bad)


def test_shape_mismatch_is_rejected() -> None:
    d = make_inputs(0)
    d["prior"] = d["prior"][:, :-1]
    with pytest.raises(ValueError, match="shape"):
        BCE()(**d)


# --- precision and prediction ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["bce", "lmh", "rubi", "lpf"])
def test_bf16_inputs_give_float32_loss(name: str) -> None:
    d = make_inputs(0)
    torch.manual_seed(0)
    objective = build_objective(ObjectiveConfig(name=name), H)
    loss16 = objective(**{k: v.bfloat16() for k, v in d.items()})
    assert loss16.dtype == torch.float32
    # Same value as fp32 on the bf16-rounded inputs: nothing else is computed in bf16 ...
    rounded = objective(**{k: v.bfloat16().float() for k, v in d.items()})
    torch.testing.assert_close(loss16, rounded)
    # ... and close to fp32 on the original inputs.
    torch.testing.assert_close(loss16, objective(**d), rtol=2e-2, atol=2e-2)


def test_lmh_under_bf16_autocast_is_float32() -> None:
    d = make_inputs(0)
    lmh = make_lmh()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = lmh(**d)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, lmh(**d))


def test_predict_is_argmax_of_main_logits() -> None:
    d = make_inputs(0)
    logits = d["logits"]
    kept = logits.clone()
    torch.manual_seed(0)
    for name in ("bce", "lmh", "rubi", "lpf"):
        build_objective(ObjectiveConfig(name=name), H)(**d)
    assert torch.equal(logits, kept)
    assert torch.equal(predict(logits), logits.argmax(dim=1))
    assert predict(logits).shape == (B,)
