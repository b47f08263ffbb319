"""Training objectives for the VQA answer head: BCE and the LMH, RUBi and LPF debiasing losses.

Every objective takes the same four tensors (DESIGN.md §4, paper §2.3 eqs. 4-8):

- ``logits``  (B, A): the main model's answer logits;
- ``targets`` (B, A): soft answer scores in [0, 1] (an all-zero row: answer out of vocabulary);
- ``prior``   (B, A): the question-type answer prior p_b, one row per question, values in [0, 1],
  not normalised;
- ``pooled``  (B, H): the backbone's pooled output h;

and returns a scalar float32 loss (a mean over the batch). The debiasing terms only shape the
training loss: at test time every objective predicts with :func:`predict` on the main logits.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# The `objective:` block lives in models.config, which imports no torch, so that a run config
# loads without it; it is re-exported here beside the losses it names.
from models.config import ObjectiveConfig, ObjectiveName  # noqa: F401


def predict(logits: Tensor) -> Tensor:
    """Predicted answer index per question, (B,) int64, from the main logits (B, A).

    No objective changes the logits used at test time: the bias branch of LMH and the prior
    reweighting of RUBi and LPF act on the training loss only.
    """
    return logits.argmax(dim=-1)


# Softmax losses leave the logits' level free; the others read every logit as a sigmoid.
SOFTMAX_LOSSES = frozenset({"rubi", "lpf", "ce"})


class Objective(nn.Module):
    """A loss on (logits, targets, prior, pooled) -> scalar float32 tensor.

    Subclasses implement :meth:`compute`, which receives float32 tensors with autocast disabled,
    so the loss is computed in float32 even under bf16 autocast or with bf16 inputs.
    """

    name: ClassVar[str] = ""

    def forward(self, logits: Tensor, targets: Tensor, prior: Tensor, pooled: Tensor) -> Tensor:
        """Scalar float32 loss; shapes logits/targets/prior (B, A), pooled (B, H)."""
        if logits.dim() != 2 or targets.shape != logits.shape or prior.shape != logits.shape:
            raise ValueError(
                f"{type(self).__name__}: logits, targets and prior must share one (B, A) shape, "
                f"got {tuple(logits.shape)}, {tuple(targets.shape)}, {tuple(prior.shape)}"
            )
        if pooled.dim() != 2 or pooled.shape[0] != logits.shape[0]:
            raise ValueError(
                f"{type(self).__name__}: pooled must be (B, H) with B={logits.shape[0]}, "
                f"got {tuple(pooled.shape)}"
            )
        # bf16 log-probabilities lose too much precision in the sums over ~3k answers.
        with torch.autocast(device_type=logits.device.type, enabled=False):
            return self.compute(logits.float(), targets.float(), prior.float(), pooled.float())

    def compute(self, logits: Tensor, targets: Tensor, prior: Tensor, pooled: Tensor) -> Tensor:
        raise NotImplementedError


def _top_answers(targets: Tensor) -> tuple[Tensor, Tensor]:
    """Rows (N,) whose target row is not all zero, and their top-scoring answer a_k (N,).

    An all-zero row is a question whose answer is outside the vocabulary: it has no a_k.
    """
    rows = (targets.amax(dim=1) > 0).nonzero(as_tuple=True)[0]
    return rows, targets[rows].argmax(dim=1)


def _empty_batch_loss(logits: Tensor) -> Tensor:
    """A zero loss that is still a function of ``logits`` (an empty sum: no NaN from inf logits),
    so that ``.backward()`` works on a batch without any a_k."""
    return logits[:0].sum()


class BCE(Objective):
    """Eq. 4: binary cross-entropy of sigmoid(logits) with the soft targets, summed over the
    answers and averaged over the batch."""

    name = "bce"

    def compute(self, logits: Tensor, targets: Tensor, prior: Tensor, pooled: Tensor) -> Tensor:
        return F.binary_cross_entropy_with_logits(logits, targets, reduction="none").sum(1).mean()


class LMH(Objective):
    """Learned-Mixin +H (Clark et al. 2019, as in their VQA code; paper eqs. 5-6).

    Per answer, the binary log-probabilities (log p, log 1-p) of the main model are added to
    g(h) * log([p_b, 1 - p_b] + sigmoid(smooth)) and renormalised; the loss is the binary
    cross-entropy of the result plus ``entropy_weight`` times the mean entropy of the scaled,
    renormalised prior. g(h) = softplus(Linear(H, 1)(h)) and ``smooth`` are trained: they are
    registered parameters of this module, so hand ``objective.parameters()`` to the optimiser.
    """

    name = "lmh"

    def __init__(self, hidden_size: int, entropy_weight: float = 0.36, smooth_init: float = -1.0):
        super().__init__()
        self.entropy_weight = float(entropy_weight)
        self.bias_lin = nn.Linear(hidden_size, 1)
        self.smooth = nn.Parameter(torch.full((1,), float(smooth_init)))

    def compute(self, logits: Tensor, targets: Tensor, prior: Tensor, pooled: Tensor) -> Tensor:
        # The parameters may have been cast to bf16 along with the model; keep the loss in fp32.
        factor = F.softplus(
            F.linear(pooled, self.bias_lin.weight.float(), self.bias_lin.bias.float())
        )  # (B, 1)
        # Smoothing keeps log finite where p_b is exactly 0 or 1.
        bias = torch.stack([prior, 1 - prior], dim=2) + torch.sigmoid(self.smooth.float())
        bias = torch.log(bias) * factor[:, :, None]  # (B, A, 2)
        log_probs = torch.stack([F.logsigmoid(logits), F.logsigmoid(-logits)], dim=2)
        combined = bias + log_probs
        combined = combined - torch.logsumexp(combined, dim=2, keepdim=True)
        log_p, log_not_p = combined[:, :, 0], combined[:, :, 1]
        loss = -(targets * log_p + (1 - targets) * log_not_p).sum(1).mean(0)
        # The entropy penalty stops g(h) from shrinking to zero, i.e. the prior being ignored.
        bias_logprob = bias - torch.logsumexp(bias, dim=2, keepdim=True)
        entropy = -(torch.exp(bias_logprob) * bias_logprob).sum(2).mean()
        return loss + self.entropy_weight * entropy


class RUBi(Objective):
    """Eq. 7: cross-entropy of softmax(logits * sigmoid(p_b)) against the top-scoring answer a_k,
    averaged over the questions that have one."""

    name = "rubi"

    def compute(self, logits: Tensor, targets: Tensor, prior: Tensor, pooled: Tensor) -> Tensor:
        rows, answers = _top_answers(targets)
        if rows.numel() == 0:
            return _empty_batch_loss(logits)
        masked = logits[rows] * torch.sigmoid(prior[rows])
        return F.cross_entropy(masked, answers)


class LPF(Objective):
    """Eq. 8: (1 - p_b[a_k])^gamma times the cross-entropy of softmax(logits) against the
    top-scoring answer a_k, averaged over the questions that have one."""

    name = "lpf"

    def __init__(self, gamma: float = 5.0):
        super().__init__()
        self.gamma = float(gamma)

    def compute(self, logits: Tensor, targets: Tensor, prior: Tensor, pooled: Tensor) -> Tensor:
        rows, answers = _top_answers(targets)
        if rows.numel() == 0:
            return _empty_batch_loss(logits)
        alpha = prior[rows, answers]
        ce = F.cross_entropy(logits[rows], answers, reduction="none")
        return ((1 - alpha) ** self.gamma * ce).mean()


class CE(Objective):
    """LXMERT's own pre-training QA loss: cross-entropy of softmax(logits) against the
    top-scoring answer, averaged over the questions that have one (LPF with gamma = 0)."""

    name = "ce"

    def compute(self, logits: Tensor, targets: Tensor, prior: Tensor, pooled: Tensor) -> Tensor:
        rows, answers = _top_answers(targets)
        if rows.numel() == 0:
            return _empty_batch_loss(logits)
        return F.cross_entropy(logits[rows], answers)


def build_objective(config: ObjectiveConfig, hidden_size: int) -> Objective:
    """The objective named by ``config``; ``hidden_size`` is H of the pooled output (LMH's g)."""
    if config.name == "bce":
        return BCE()
    if config.name == "lmh":
        return LMH(hidden_size, config.lmh_entropy_weight, config.lmh_smooth_init)
    if config.name == "rubi":
        return RUBi()
    if config.name == "lpf":
        return LPF(config.lpf_gamma)
    if config.name == "ce":
        return CE()
    raise ValueError(f"unknown objective {config.name!r}")
