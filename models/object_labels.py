"""Object label prediction: LXMERT's second visual pre-training task, beside question answering.

Every box of every pre-training question is classified into its object class (the feature
store's `object_ids`: the detector's label in LXMERT's `*_obj36.tsv`, the planted content of a
synthetic box) from the object-relationship encoder's last layer, before any cross-modal layer.
Softmax cross-entropy, averaged over boxes. The classifier is one linear layer, where LXMERT's
has a GeLU transform before it: a hidden layer in the head could decode a box's class itself and
leave the encoder idle, whereas a linear read-out makes the visual encoder put each box's class
in a linearly readable form, the form the cross-modal attention then reads (docs/CALIBRATION.md,
"Object label prediction and a per-box product").

Like the masked-object head, this one is saved with the training state and never enters the
model directory.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.config import ObjectLabelsConfig


class ObjectLabels(nn.Module):
    """The linear classifier hidden -> `num_labels` and its weighted loss."""

    def __init__(self, hidden_size: int, num_labels: int, config: ObjectLabelsConfig) -> None:
        super().__init__()
        self.weight = config.weight
        self.head = nn.Linear(hidden_size, num_labels)

    def loss(self, encoder_vision: Tensor, labels: Tensor) -> Tensor:
        """Weighted mean cross-entropy over every box; encoder_vision (B, K, H) the last
        object-relationship layer's states, labels (B, K) int64 classes in [0, num_labels)."""
        logits = self.head(encoder_vision.float())
        return self.weight * F.cross_entropy(logits.flatten(0, 1), labels.flatten())

    @torch.no_grad()
    def accuracy(self, encoder_vision: Tensor, labels: Tensor) -> float:
        """Share of boxes classified right (for logs and tests)."""
        return float((self.head(encoder_vision.float()).argmax(-1) == labels).float().mean())
