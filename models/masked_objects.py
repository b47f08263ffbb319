"""Masked object feature regression: LXMERT's visual pre-training task, beside question answering.

Every pre-training step masks `share` of the boxes (chosen afresh per question). A masked box
keeps its position and a random half of its feature dimensions; the other half is zeroed. A head
on the visual encoder's output at that box regresses the box's whole original feature vector
(mean squared error, averaged over masked boxes and dimensions). Zeroing only half keeps enough
of the box to say what it is, so the missing half is recovered from related boxes: a relational
job with direct supervision for the visual encoder, which question answering alone never trains
(docs/CALIBRATION.md, "Where pruning costs"). LXMERT zeroes the whole region and also predicts
its detector label; a synthetic box's position says nothing about it, so a wholly masked box
could not be told apart from any other.

The head lives beside the answer objective (`PretrainObjective`), so it is saved with the
training state for a resume and never enters the model directory: a pre-trained checkpoint
stays an ordinary `from_pretrained` directory.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from models.config import MaskedObjectsConfig
from models.objectives import Objective


class MaskedObjects(nn.Module):
    """The regression head, h -> h, GeLU, LayerNorm, h -> feature_dim (the shape of LXMERT's
    `obj_predict_head` feature decoder), and the masking rule."""

    def __init__(self, hidden_size: int, feature_dim: int, config: MaskedObjectsConfig) -> None:
        super().__init__()
        self.share = config.share
        self.weight = config.weight
        self.read_from = config.read_from
        self.head = nn.Sequential(
            nn.Linear(hidden_size, hidden_size),
            nn.GELU(),
            nn.LayerNorm(hidden_size, eps=1e-12),
            nn.Linear(hidden_size, feature_dim),
        )

    def draw(self, shape: tuple[int, int, int], rng: np.random.Generator) -> tuple[Tensor, Tensor]:
        """(chosen (B, K) bool: the masked boxes, kept (B, K, D) float: 1 where a feature stays)
        for features of `shape` = (B, K, D); every masked box loses exactly D // 2 dimensions."""
        b, k, d = shape
        chosen = rng.random((b, k)) < self.share
        dropped = np.argsort(rng.random((b, k, d)), axis=-1) < d // 2
        kept = ~(dropped & chosen[..., None])
        return torch.from_numpy(chosen), torch.from_numpy(kept.astype(np.float32))

    def loss(self, vision_output: Tensor, feats: Tensor, chosen: Tensor) -> Tensor:
        """Weighted mean squared error of the head's reconstruction of the masked boxes; shapes
        vision_output (B, K, H), feats (B, K, D) the unmasked features, chosen (B, K)."""
        if not bool(chosen.any()):
            return vision_output.sum() * 0.0  # keeps the graph, adds nothing
        predicted = self.head(vision_output[chosen].float())
        return self.weight * torch.mean((predicted - feats[chosen].float()) ** 2)


class PretrainObjective(nn.Module):
    """The QA objective `qa` and the visual pre-training tasks beside it (`objects`: masked
    object regression, `labels`: object label prediction; either may be None), one module so
    that all are saved and restored with the training state."""

    def __init__(
        self, qa: Objective, objects: MaskedObjects | None = None, labels: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.qa = qa
        self.objects = objects
        self.labels = labels

    def forward(self, logits: Tensor, targets: Tensor, prior: Tensor, pooled: Tensor) -> Tensor:
        return self.qa(logits, targets, prior, pooled)
