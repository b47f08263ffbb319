"""The feature store: one HDF5 file of region features, held once per process.

Layout (DESIGN.md §3): `image_ids` (N,) int64, `features` (N, K, D) float16 or float32, `boxes`
(N, K, 4) float32 as (x1/w, y1/h, x2/w, y2/h) in [0, 1]; K is 36 for bottom-up features; optional
`object_ids` (N, K) int64, a class >= 0 per box (the detector's label, as in LXMERT's `objects_id`),
which only object label pre-training reads. The writer
stores the arrays contiguously and uncompressed, so a reader memory-maps them: every process on a
node then shares one copy in the page cache, and no batch copies more than its own rows.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from vqa.atomic import atomic_path
from vqa.errors import InputError

FEATURE_DTYPES = (np.dtype("float16"), np.dtype("float32"))


def write_feature_store(
    path: str | os.PathLike[str],
    image_ids: np.ndarray,
    features: np.ndarray,
    boxes: np.ndarray,
    object_ids: np.ndarray | None = None,
) -> None:
    """Write a complete store atomically. Shapes: (N,), (N, K, D), (N, K, 4), (N, K) or None."""
    image_ids = np.asarray(image_ids, dtype=np.int64)
    features = np.asarray(features)
    boxes = np.asarray(boxes, dtype=np.float32)
    with FeatureStoreWriter(
        path, len(image_ids), features.shape[1], features.shape[2], features.dtype,
        object_ids=object_ids is not None,
    ) as writer:  # fmt: skip
        writer.write(0, image_ids, features, boxes, object_ids)


class FeatureStoreWriter:
    """Streams rows into a new store of known size; the file appears only on a clean close."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        num_images: int,
        num_boxes: int,
        feature_dim: int,
        dtype: np.dtype | str = "float32",
        object_ids: bool = False,
    ) -> None:
        dtype = np.dtype(dtype)
        if dtype not in FEATURE_DTYPES:
            raise InputError(f"feature dtype must be float16 or float32, got {dtype}")
        self._path = Path(path)
        self._ctx = atomic_path(self._path)
        tmp = self._ctx.__enter__()
        self._file = h5py.File(tmp, "w")
        # Contiguous, uncompressed datasets (no chunks) are what lets readers memory-map them.
        self.image_ids = self._file.create_dataset("image_ids", (num_images,), dtype="int64")
        self.features = self._file.create_dataset(
            "features", (num_images, num_boxes, feature_dim), dtype=dtype
        )
        self.boxes = self._file.create_dataset("boxes", (num_images, num_boxes, 4), dtype="float32")
        self.object_ids = (
            self._file.create_dataset("object_ids", (num_images, num_boxes), dtype="int64")
            if object_ids
            else None
        )
        self._file.attrs["format"] = "tickets-features-v1"

    def write(
        self,
        start: int,
        image_ids: np.ndarray,
        features: np.ndarray,
        boxes: np.ndarray,
        object_ids: np.ndarray | None = None,
    ) -> None:
        """Write rows [start, start + len(image_ids)); `object_ids` exactly when the store has
        them."""
        if (object_ids is None) != (self.object_ids is None):
            raise ValueError("object_ids must be given exactly when the store was opened with them")
        stop = start + len(image_ids)
        self.image_ids[start:stop] = image_ids
        self.features[start:stop] = features
        self.boxes[start:stop] = boxes
        if self.object_ids is not None:
            self.object_ids[start:stop] = object_ids

    def __enter__(self) -> FeatureStoreWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._file.close()
        self._ctx.__exit__(exc_type, exc, tb)


def _memmap_or_read(path: Path, ds: h5py.Dataset) -> np.ndarray:
    """A read-only memory map of a contiguous dataset, else one in-memory copy."""
    offset = ds.id.get_offset()
    if ds.chunks is None and ds.compression is None and offset is not None and ds.size > 0:
        return np.memmap(path, mode="r", dtype=ds.dtype, shape=ds.shape, offset=offset)
    return ds[...]


@dataclass(frozen=True)
class FeatureStore:
    """Region features of N images, K boxes of dimension D, looked up by image id.

    `features` and `boxes` are memory maps (or in-memory arrays) that are never copied whole;
    `rows(ids)` maps image ids to row indices and `gather(rows)` copies just those rows.
    """

    path: str
    image_ids: np.ndarray  # (N,) int64
    features: np.ndarray  # (N, K, D) float16 or float32
    boxes: np.ndarray  # (N, K, 4) float32
    object_ids: np.ndarray | None = None  # (N, K) int64 >= 0, when the store has them

    @property
    def num_boxes(self) -> int:
        return int(self.features.shape[1])

    @property
    def feature_dim(self) -> int:
        return int(self.features.shape[2])

    def __len__(self) -> int:
        return int(self.image_ids.shape[0])

    def rows(self, image_ids: np.ndarray | list[int], what: str = "questions") -> np.ndarray:
        """Row index of each image id (int64); an id not in the store is an `InputError`."""
        ids = np.asarray(image_ids, dtype=np.int64)
        order = self._order
        pos = np.searchsorted(self.image_ids, ids, sorter=order)
        pos = np.clip(pos, 0, len(order) - 1) if len(order) else pos
        found = order[pos] if len(order) else np.zeros(0, dtype=np.int64)
        missing = np.ones(len(ids), dtype=bool) if not len(order) else self.image_ids[found] != ids
        if missing.any():
            bad = int(ids[np.argmax(missing)])
            raise InputError(
                f"{self.path}: image_id {bad} (used by {what}) is absent from the feature store"
                f" ({int(missing.sum())} ids missing)"
            )
        return found.astype(np.int64)

    @property
    def _order(self) -> np.ndarray:
        cached = self.__dict__.get("_order_cache")
        if cached is None:
            cached = np.argsort(self.image_ids, kind="stable")
            object.__setattr__(self, "_order_cache", cached)
        return cached

    def gather(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Features (B, K, D) float32 and boxes (B, K, 4) float32 of the given rows."""
        rows = np.asarray(rows, dtype=np.int64)
        # Sorted access keeps memory-mapped reads sequential; the inverse restores batch order.
        order = np.argsort(rows, kind="stable")
        inverse = np.empty_like(order)
        inverse[order] = np.arange(len(order))
        feats = np.asarray(self.features[rows[order]], dtype=np.float32)[inverse]
        boxes = np.asarray(self.boxes[rows[order]], dtype=np.float32)[inverse]
        return feats, boxes


def load_feature_store(
    path: str | os.PathLike[str], num_boxes: int | None = None, feature_dim: int | None = None
) -> FeatureStore:
    """Open and validate a store; the same file is opened once per process and then shared."""
    resolved = Path(path).resolve()
    try:
        stat = resolved.stat()
    except FileNotFoundError:
        raise InputError(f"{path}: feature store not found") from None
    # The inode tells a replaced file from the old one even with the same size and mtime.
    key = (str(resolved), stat.st_dev, stat.st_ino, stat.st_mtime_ns, stat.st_size)
    store = _OPEN_STORES.get(key)
    if store is None:
        store = _open(resolved)
        _OPEN_STORES.clear()  # one store per process is the use case; drop stale versions
        _OPEN_STORES[key] = store
    if num_boxes is not None and store.num_boxes != num_boxes:
        raise InputError(
            f"{path}: field 'features' has {store.num_boxes} boxes per image, expected {num_boxes}"
        )
    if feature_dim is not None and store.feature_dim != feature_dim:
        raise InputError(
            f"{path}: field 'features' has dimension {store.feature_dim}, expected {feature_dim}"
        )
    return store


_OPEN_STORES: dict[tuple[str, int, int, int, int], FeatureStore] = {}


def _open(path: Path) -> FeatureStore:
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise InputError(f"{path}: not a readable HDF5 feature store ({e})") from None
    with f:
        for name in ("image_ids", "features", "boxes"):
            if name not in f:
                raise InputError(f"{path}: missing field '{name}'")
        ids_ds, feat_ds, box_ds = f["image_ids"], f["features"], f["boxes"]
        if ids_ds.ndim != 1 or not np.issubdtype(ids_ds.dtype, np.integer):
            raise InputError(f"{path}: field 'image_ids' must be a 1-d integer array")
        n = ids_ds.shape[0]
        if feat_ds.ndim != 3 or feat_ds.shape[0] != n:
            raise InputError(
                f"{path}: field 'features' has shape {feat_ds.shape}, expected ({n}, K, D)"
            )
        if feat_ds.shape[1] < 1 or feat_ds.shape[2] < 1:
            raise InputError(
                f"{path}: field 'features' has shape {feat_ds.shape}: no boxes or no dimensions"
            )
        if feat_ds.dtype not in FEATURE_DTYPES:
            raise InputError(
                f"{path}: field 'features' has dtype {feat_ds.dtype}, expected float16 or float32"
            )
        if box_ds.shape != (n, feat_ds.shape[1], 4):
            raise InputError(
                f"{path}: field 'boxes' has shape {box_ds.shape}, "
                f"expected ({n}, {feat_ds.shape[1]}, 4)"
            )
        image_ids = ids_ds[...].astype(np.int64)
        features = _memmap_or_read(path, feat_ds)
        boxes = _memmap_or_read(path, box_ds)
        if box_ds.dtype != np.float32:
            boxes = np.asarray(boxes, dtype=np.float32)
        object_ids = _object_ids(path, f, feat_ds.shape[:2])
    if len(np.unique(image_ids)) != n:
        uniq, counts = np.unique(image_ids, return_counts=True)
        raise InputError(f"{path}: field 'image_ids' repeats id {int(uniq[counts > 1][0])}")
    if n and (np.nanmin(boxes) < 0.0 or np.nanmax(boxes) > 1.0 or np.isnan(boxes).any()):
        raise InputError(f"{path}: field 'boxes' has values outside [0, 1]")
    return FeatureStore(str(path), image_ids, features, boxes, object_ids)


def _object_ids(path: Path, f: h5py.File, shape: tuple[int, int]) -> np.ndarray | None:
    """The optional (N, K) class per box, checked; None when the store has none."""
    if "object_ids" not in f:
        return None
    ds = f["object_ids"]
    if ds.shape != shape or not np.issubdtype(ds.dtype, np.integer):
        raise InputError(
            f"{path}: field 'object_ids' has shape {ds.shape} and dtype {ds.dtype}, expected "
            f"integers of shape {shape}"
        )
    ids = _memmap_or_read(path, ds)  # shared by a node's processes, as the features are
    if ids.dtype != np.int64:
        ids = np.asarray(ids, dtype=np.int64)
    if ids.size and ids.min() < 0:
        raise InputError(f"{path}: field 'object_ids' has a negative class {int(ids.min())}")
    return ids
