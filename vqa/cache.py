"""Reading a prepared cache and assembling batches from it.

`load_cache(dir)` gives a `PreparedData`; `PreparedData.split(name)` a `SplitData` whose arrays are
built once (padded token matrix, CSR targets, feature-store rows); `make_batch` gathers B questions
into torch tensors without touching anything but those B rows.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from vqa.answers import SoftTargets
from vqa.atomic import recover_dir
from vqa.errors import InputError
from vqa.features import FeatureStore, load_feature_store
from vqa.prepare import CACHE_FORMAT, QUESTION_COLUMNS


@dataclass
class Batch:
    """B questions: tokens (B, L), visual features (B, K, D) and boxes (B, K, 4), soft targets and
    prior (B, A), all torch tensors on the CPU; `rows` index the questions in their split."""

    input_ids: torch.Tensor  # (B, L) int64
    attention_mask: torch.Tensor  # (B, L) int64
    visual_feats: torch.Tensor  # (B, K, D) float32
    visual_pos: torch.Tensor  # (B, K, 4) float32
    targets: torch.Tensor  # (B, A) float32
    prior: torch.Tensor  # (B, A) float32
    rows: np.ndarray  # (B,) int64

    def to(self, device: torch.device | str) -> Batch:
        """The batch on `device`. To CUDA through pinned memory: a non-blocking copy from pageable
        memory is a synchronous staged copy, so without pinning the host waits on every batch."""
        cuda = torch.device(device).type == "cuda"
        move = {
            k: (v.pin_memory() if cuda else v).to(device, non_blocking=True)
            for k, v in self.__dict__.items()
            if isinstance(v, torch.Tensor)
        }
        return Batch(**move, rows=self.rows)


@dataclass
class SplitData:
    """One split of the cache as arrays: Q questions, token length L, CSR targets."""

    name: str
    question_ids: np.ndarray  # (Q,) int64
    image_ids: np.ndarray  # (Q,) int64
    type_ids: np.ndarray  # (Q,) int64, len(question_types) = unseen type
    answer_types: list[str]
    human_answers: list[list[str]]
    question_types: list[str]
    input_ids: np.ndarray  # (Q, L) int64, 0-padded
    lengths: np.ndarray  # (Q,) int64
    targets: SoftTargets
    ood_sets: list[list[str]] | None = None
    feature_rows: np.ndarray | None = field(default=None, repr=False)  # (Q,) rows in the store

    def __len__(self) -> int:
        return int(self.question_ids.shape[0])


class PreparedData:
    """The cache of `tickets data prepare`: vocabulary, prior, splits and the feature store."""

    def __init__(self, cache_dir: str | os.PathLike[str]) -> None:
        self.dir = Path(cache_dir)
        recover_dir(self.dir)
        manifest_path = self.dir / "manifest.json"
        if not manifest_path.is_file():
            raise InputError(f"{self.dir}: not a prepared data cache (no manifest.json)")
        self.manifest = json.loads(manifest_path.read_text())
        if self.manifest.get("format") != CACHE_FORMAT:
            raise InputError(
                f"{manifest_path}: cache format {self.manifest.get('format')}, expected "
                f"{CACHE_FORMAT}; run `tickets data prepare` again"
            )
        self.config = self.manifest["config"]
        self.answers: list[str] = json.loads((self.dir / "answers.json").read_text())
        self.question_types: list[str] = json.loads((self.dir / "question_types.json").read_text())
        self.splits_info = json.loads((self.dir / "splits.json").read_text())
        prior = pq.read_table(self.dir / "prior.parquet").column("prior").to_pylist()
        self.prior = np.asarray(prior, dtype=np.float32)  # (T + 1, A)
        self._splits: dict[str, SplitData] = {}

    @property
    def num_answers(self) -> int:
        return len(self.answers)

    @property
    def split_names(self) -> list[str]:
        return list(self.splits_info["counts"]) + list(self.splits_info.get("unions", {}))

    @property
    def selection_split(self) -> str:
        return self.splits_info["selection"]

    @cached_property
    def store(self) -> FeatureStore:
        return load_feature_store(self.config["features"])

    @property
    def tokenizer_dir(self) -> Path:
        return self.dir / "tokenizer"

    def split(self, name: str) -> SplitData:
        """The split `name` (train, dev, test, test_full, val, pretrain, ...), built once."""
        if name not in self._splits:
            parts = self.splits_info.get("unions", {}).get(name, [name])
            for part in parts:
                if part not in self.splits_info["counts"]:
                    raise InputError(
                        f"{self.dir}: no split '{name}' (have {', '.join(self.split_names)})"
                    )
            tables = [pq.read_table(self.dir / "questions" / f"{p}.parquet") for p in parts]
            self._splits[name] = self._to_arrays(name, tables)
        return self._splits[name]

    def _to_arrays(self, name: str, tables) -> SplitData:
        table = pa.concat_tables(tables)
        missing = [c for c in QUESTION_COLUMNS if c not in table.column_names]
        if missing:
            raise InputError(f"{self.dir}: split '{name}' lacks column '{missing[0]}'")
        tokens = table.column("input_ids").combine_chunks()
        lengths = np.diff(tokens.offsets.to_numpy()).astype(np.int64)
        width = int(lengths.max()) if len(lengths) else 1
        flat = tokens.values.to_numpy().astype(np.int64)
        input_ids = np.zeros((len(lengths), width), dtype=np.int64)
        input_ids[np.arange(width)[None, :] < lengths[:, None]] = flat
        tids = table.column("target_ids").combine_chunks()
        tscores = table.column("target_scores").combine_chunks()
        targets = SoftTargets(
            tids.offsets.to_numpy().astype(np.int64),
            tids.values.to_numpy().astype(np.int32),
            tscores.values.to_numpy().astype(np.float32),
        )
        split = SplitData(
            name=name,
            question_ids=table.column("question_id").to_numpy(),
            image_ids=table.column("image_id").to_numpy(),
            type_ids=table.column("type_id").to_numpy().astype(np.int64),
            answer_types=table.column("answer_type").to_pylist(),
            human_answers=table.column("answers").to_pylist(),
            question_types=table.column("question_type").to_pylist(),
            input_ids=input_ids,
            lengths=lengths,
            targets=targets,
            ood_sets=table.column("ood_sets").to_pylist()
            if "ood_sets" in table.column_names
            else None,
        )
        split.feature_rows = self.store.rows(split.image_ids, what=f"split '{name}'")
        return split

    def make_batch(self, split: SplitData, rows: np.ndarray) -> Batch:
        """The questions `rows` of `split` as a `Batch` (tokens trimmed to the longest one)."""
        rows = np.asarray(rows, dtype=np.int64)
        width = int(split.lengths[rows].max()) if len(rows) else 1
        ids = split.input_ids[rows, :width]
        feats, boxes = self.store.gather(split.feature_rows[rows])
        return Batch(
            input_ids=torch.from_numpy(ids),
            attention_mask=torch.from_numpy(
                (np.arange(width)[None, :] < split.lengths[rows][:, None]).astype(np.int64)
            ),
            visual_feats=torch.from_numpy(feats),
            visual_pos=torch.from_numpy(boxes),
            targets=torch.from_numpy(split.targets.dense(rows, self.num_answers)),
            prior=torch.from_numpy(self.prior[split.type_ids[rows]]),
            rows=rows,
        )


def load_cache(cache_dir: str | os.PathLike[str]) -> PreparedData:
    """Open a cache written by `tickets data prepare`."""
    return PreparedData(cache_dir)
