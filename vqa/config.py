"""The `data:` block of a run config: where the inputs are and how the cache is built."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class TokenizerConfig(BaseModel):
    """`wordpiece`: build a WordPiece vocabulary from the training questions (small models);
    `pretrained`: load the tokenizer of a local checkpoint directory (e.g. lxmert-base-uncased)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["wordpiece", "pretrained"] = "wordpiece"
    path: Path | None = None
    vocab_size: int = Field(1000, ge=16, le=1_000_000)
    lowercase: bool = True

    @model_validator(mode="after")
    def _path_for_pretrained(self) -> TokenizerConfig:
        if self.kind == "pretrained" and self.path is None:
            raise ValueError("kind 'pretrained' needs 'path', a local checkpoint directory")
        return self


class DataConfig(BaseModel):
    """Inputs (question/annotation JSON under `root`, the HDF5 `features`) and the cache recipe."""

    model_config = ConfigDict(extra="forbid")

    dataset: Literal["vqacp_v2", "vqavs"]
    root: Path
    features: Path
    cache_dir: Path
    min_answer_count: int = Field(9, ge=1)
    selection_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    selection_seed: int = 0
    scoring: Literal["vqa", "vqavs"] = "vqa"
    max_question_tokens: int = Field(20, ge=3, le=512)
    num_boxes: int = Field(36, ge=1)
    feature_dim: int | None = Field(None, ge=1)
    tokenizer: TokenizerConfig = TokenizerConfig()

    def resolved(self) -> DataConfig:
        """A copy with every path absolute (relative paths are taken from the working directory)."""
        tok = self.tokenizer
        if tok.path is not None:
            tok = tok.model_copy(update={"path": tok.path.expanduser().resolve()})
        return self.model_copy(
            update={
                "root": self.root.expanduser().resolve(),
                "features": self.features.expanduser().resolve(),
                "cache_dir": self.cache_dir.expanduser().resolve(),
                "tokenizer": tok,
            }
        )

    @property
    def selection_split(self) -> str:
        """The split a sweep optimises: `dev` (20% of VQA-CP test images) or VQA-VS `val`."""
        return "dev" if self.dataset == "vqacp_v2" else "val"
