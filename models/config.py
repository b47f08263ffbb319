"""The `model:` block and the training blocks (`pretrain:`, `finetune:`) of a run config."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_serializer, model_validator


class ArchitectureConfig(BaseModel):
    """Sizes of a new, randomly initialised LXMERT (the small model `tickets pretrain` builds)."""

    model_config = ConfigDict(extra="forbid")

    hidden_size: int = Field(64, ge=8)
    num_attention_heads: int = Field(4, ge=1)
    intermediate_size: int = Field(256, ge=8)
    l_layers: int = Field(1, ge=1)
    x_layers: int = Field(1, ge=1)
    r_layers: int = Field(1, ge=1)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    # Std of the normal weight init (LXMERT's is 0.02).
    initializer_range: float = Field(0.02, gt=0.0)
    # Rows of the word-embedding matrix; None: one per token of the data cache's tokenizer. More
    # rows than tokens stand for lxmert-base's 30,522-token vocabulary, of which VQA questions
    # look up a few thousand: the extra rows are never looked up (still pruned with the
    # language group, as lxmert-base's unused rows are).
    vocab_size: int | None = Field(None, ge=16)

    @model_validator(mode="after")
    def _heads_divide_hidden(self) -> ArchitectureConfig:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not a multiple of "
                f"num_attention_heads {self.num_attention_heads}"
            )
        return self

    @model_serializer(mode="wrap")
    def _omit_tokenizer_rows(self, handler):
        # Runs recorded before the field existed saved no `vocab_size`: they still resume.
        dumped = handler(self)
        if dumped.get("vocab_size", 0) is None:
            del dumped["vocab_size"]
        return dumped


class ModelConfig(BaseModel):
    """The model stage 1 starts from: `checkpoint`, a local `from_pretrained` directory
    (lxmert-base-uncased, or the `model/` directory a `tickets pretrain` run writes)."""

    model_config = ConfigDict(extra="forbid")

    checkpoint: Path | None = None
    # Reuse the checkpoint's answer head when it was trained on the same answer vocabulary
    # (a `tickets pretrain` output); lxmert-base-uncased has none, so its head starts fresh.
    reuse_answer_head: bool = True
    device: Literal["auto", "cpu", "cuda"] = "auto"

    def resolved(self) -> ModelConfig:
        if self.checkpoint is None:
            return self
        return self.model_copy(update={"checkpoint": self.checkpoint.expanduser().resolve()})


class TrainConfig(BaseModel):
    """One training run (pre-training or stage 1): where it writes and how it optimises.

    AdamW with linear warm-up over `warmup_ratio` of the steps, then linear decay to zero;
    gradients clipped to `grad_clip` (global norm); evaluation after every epoch.
    """

    model_config = ConfigDict(extra="forbid")

    output_dir: Path
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(64, ge=1)
    eval_batch_size: int = Field(512, ge=1)
    lr: float = Field(5e-5, gt=0)
    warmup_ratio: float = Field(0.1, ge=0.0, lt=1.0)
    weight_decay: float = Field(0.0, ge=0.0)
    grad_clip: float = Field(1.0, gt=0)
    seed: int = 0
    # Also score the kept model on its own training split (the in-distribution accuracy of
    # the synthetic benchmark); off by default since on real data it costs a pass over train.
    eval_train: bool = False

    def resolved(self) -> TrainConfig:
        return self.model_copy(update={"output_dir": self.output_dir.expanduser().resolve()})


class MaskedObjectsConfig(BaseModel):
    """`pretrain.masked_objects`: masked object feature regression beside the QA loss
    (models/masked_objects.py)."""

    model_config = ConfigDict(extra="forbid")

    share: float = Field(0.15, gt=0.0, le=1.0)
    """Share of boxes masked per question (LXMERT's: 0.15)."""
    weight: float = Field(1.0, gt=0.0)
    """Weight of the regression loss against the QA loss."""
    read_from: Literal["output", "encoder"] = "output"
    """Where the head reads a box: `output`, the cross-modal layers' visual output (LXMERT's);
    `encoder`, the object-relationship encoder's last layer, before any cross-modal layer, so
    that only the visual module can rebuild the box."""

    @model_serializer(mode="wrap")
    def _omit_default_read(self, handler):
        # Runs recorded before the field existed saved no `read_from`: they still resume.
        dumped = handler(self)
        if dumped.get("read_from") == "output":
            del dumped["read_from"]
        return dumped


class ObjectLabelsConfig(BaseModel):
    """`pretrain.object_labels`: per-box object classification beside the QA loss
    (models/object_labels.py); needs the feature store's `object_ids`."""

    model_config = ConfigDict(extra="forbid")

    weight: float = Field(1.0, gt=0.0)
    """Weight of the classification loss against the QA loss."""


class PretrainConfig(TrainConfig):
    """`tickets pretrain`: question answering on the balanced `pretrain` split of a synthetic
    benchmark. `loss: ce` is LXMERT's own pre-training QA loss (softmax cross-entropy against the
    top answer); `bce` is offered, but from a random start it settles on question-only answers
    and never uses the image (docs/CALIBRATION.md)."""

    architecture: ArchitectureConfig = ArchitectureConfig()
    loss: Literal["ce", "bce"] = "ce"
    # LXMERT's visual pre-training task; None (the default) trains question answering alone.
    masked_objects: MaskedObjectsConfig | None = None
    # LXMERT's object label prediction, read from the object-relationship encoder; None (the
    # default) leaves it out.
    object_labels: ObjectLabelsConfig | None = None

    @model_serializer(mode="wrap")
    def _omit_unset_task(self, handler):
        # Without a task the saved config is what it was before its field existed, so a run
        # recorded then still resumes and is still found complete.
        dumped = handler(self)
        for task in ("masked_objects", "object_labels"):
            if dumped.get(task, 0) is None:
                del dumped[task]
        return dumped


ObjectiveName = Literal["bce", "lmh", "rubi", "lpf", "ce"]


class ObjectiveConfig(BaseModel):
    """The ``objective:`` block of a run config."""

    model_config = ConfigDict(extra="forbid")

    name: ObjectiveName = "bce"
    lmh_entropy_weight: float = Field(0.36, ge=0)
    """Weight w of the entropy penalty R on the scaled prior (LMH, Clark et al. 2019)."""
    lmh_smooth_init: float = -1.0
    """Initial value of LMH's learned smoothing scalar; the prior is smoothed by sigmoid(it)."""
    lpf_gamma: float = Field(5.0, ge=0)
    """Exponent gamma of LPF's (1 - p_b[a_k])^gamma weight (eq. 8)."""
