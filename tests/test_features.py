"""Tests for vqa.features: the memory-mapped HDF5 feature store, its validation and its writer."""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import pytest

from vqa.errors import InputError
from vqa.features import FeatureStoreWriter, load_feature_store, write_feature_store

IDS = np.array([30, 10, 20, 50], dtype=np.int64)  # deliberately unsorted
K = 5
D = 6


def arrays(dtype: str = "float32", n: int = len(IDS), k: int = K, d: int = D, seed: int = 0):
    rng = np.random.default_rng(seed)
    features = (rng.standard_normal((n, k, d)) * 4).astype(dtype)
    corners = rng.random((n, k, 2, 2))
    boxes = np.concatenate([corners.min(axis=2), corners.max(axis=2)], axis=-1)
    return features, boxes.astype(np.float32)


def store_file(path: Path, dtype: str = "float32", seed: int = 0) -> tuple[np.ndarray, ...]:
    features, boxes = arrays(dtype, seed=seed)
    write_feature_store(path, IDS, features, boxes)
    return features, boxes


def write_raw(path: Path, **datasets: np.ndarray) -> Path:
    """An HDF5 file with exactly the given datasets (no validation on the way in)."""
    with h5py.File(path, "w") as f:
        for name, value in datasets.items():
            f.create_dataset(name, data=value)
    return path


def valid_raw(**changes: np.ndarray | None) -> dict[str, np.ndarray]:
    features, boxes = arrays()
    out = {"image_ids": IDS, "features": features, "boxes": boxes}
    out.update(changes)
    return {k: v for k, v in out.items() if v is not None}


def error_of(path: Path, **kwargs: int) -> str:
    with pytest.raises(InputError) as info:
        load_feature_store(path, **kwargs)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


# ---------------------------------------------------------------- round trip


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_round_trip_keeps_values_and_dtype_memory_mapped(tmp_path: Path, dtype: str) -> None:
    path = tmp_path / "f.h5"
    features, boxes = store_file(path, dtype)
    store = load_feature_store(path)
    assert store.features.dtype == np.dtype(dtype)
    assert store.image_ids.dtype == np.int64
    assert store.boxes.dtype == np.float32
    np.testing.assert_array_equal(store.image_ids, IDS)
    np.testing.assert_array_equal(store.features, features)
    np.testing.assert_array_equal(store.boxes, boxes)
    assert (len(store), store.num_boxes, store.feature_dim) == (4, K, D)
    # Memory-mapped from the file itself, not read into memory.
    assert isinstance(store.features, np.memmap)
    assert isinstance(store.boxes, np.memmap)
    assert Path(store.features.filename) == path.resolve()
    assert not store.features.flags.writeable


def test_rows_maps_ids_to_rows(tmp_path: Path) -> None:
    store_file(tmp_path / "f.h5")
    store = load_feature_store(tmp_path / "f.h5")
    rows = store.rows([20, 30, 50, 10, 20])
    assert rows.dtype == np.int64
    assert rows.tolist() == [2, 0, 3, 1, 2]
    assert store.rows(np.array([], dtype=np.int64)).tolist() == []


@pytest.mark.parametrize(
    ("ids", "first_missing", "count"),
    [([10, 99], 99, 1), ([5, 20, 40, 60], 5, 3), ([51], 51, 1), ([0], 0, 1)],
)
def test_rows_names_the_first_missing_id(
    tmp_path: Path, ids: list[int], first_missing: int, count: int
) -> None:
    path = tmp_path / "f.h5"
    store_file(path)
    store = load_feature_store(path)
    with pytest.raises(InputError) as info:
        store.rows(ids, what="the train split")
    assert str(info.value) == (
        f"{path.resolve()}: image_id {first_missing} (used by the train split) is absent from the"
        f" feature store ({count} ids missing)"
    )


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_gather_returns_requested_rows_in_order_as_float32(tmp_path: Path, dtype: str) -> None:
    path = tmp_path / "f.h5"
    features, boxes = store_file(path, dtype)
    store = load_feature_store(path)
    rows = np.array([3, 0, 3, 1, 0, 2])
    feats, bxs = store.gather(rows)
    assert feats.dtype == np.float32 and bxs.dtype == np.float32
    assert feats.shape == (6, K, D) and bxs.shape == (6, K, 4)
    np.testing.assert_array_equal(feats, features[rows].astype(np.float32))
    np.testing.assert_array_equal(bxs, boxes[rows])
    f1, b1 = store.gather([2])
    np.testing.assert_array_equal(f1[0], features[2].astype(np.float32))
    np.testing.assert_array_equal(b1[0], boxes[2])


def test_rows_then_gather_by_image_id(tmp_path: Path) -> None:
    path = tmp_path / "f.h5"
    features, _ = store_file(path)
    store = load_feature_store(path)
    feats, _ = store.gather(store.rows([50, 10]))
    np.testing.assert_array_equal(feats, features[[3, 1]])


def test_store_is_opened_once_per_process(tmp_path: Path) -> None:
    path = tmp_path / "f.h5"
    store_file(path)
    first = load_feature_store(path)
    assert load_feature_store(path) is first
    assert load_feature_store(str(tmp_path / "." / "f.h5")) is first  # same file, other spelling
    mtime = path.stat().st_mtime_ns
    features, _ = store_file(path, seed=1)  # rewritten: same size, new content
    # A later write; pinned so a coarse file-system clock cannot give both writes one mtime.
    os.utime(path, ns=(mtime + 10**9, mtime + 10**9))
    second = load_feature_store(path)
    assert second is not first
    np.testing.assert_array_equal(second.features, features)
    assert load_feature_store(path) is second


def test_store_replaced_with_same_size_and_mtime_is_reopened(tmp_path: Path) -> None:
    path = tmp_path / "f.h5"
    store_file(path)
    first = load_feature_store(path)
    st = path.stat()
    features, _ = store_file(path, seed=1)  # a new file (new inode) at the same path
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # as `cp -p` or `rsync -a` leave it
    assert path.stat().st_ino != st.st_ino
    second = load_feature_store(path)
    assert second is not first
    np.testing.assert_array_equal(second.features, features)


# ---------------------------------------------------------------- validation


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.h5"
    assert error_of(path) == f"{path}: feature store not found"


def test_not_hdf5(tmp_path: Path) -> None:
    path = tmp_path / "features.h5"
    path.write_text("image_id\tfeatures\n1\tAAAA\n")
    msg = error_of(path)
    assert msg.startswith(f"{path}: not a readable HDF5 feature store ("), msg


@pytest.mark.parametrize("name", ["image_ids", "features", "boxes"])
def test_missing_dataset(tmp_path: Path, name: str) -> None:
    path = write_raw(tmp_path / "f.h5", **valid_raw(**{name: None}))
    assert error_of(path) == f"{path}: missing field '{name}'"


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        pytest.param(
            {"features": np.zeros((4, K * D), np.float32)},
            "field 'features' has shape (4, 30), expected (4, K, D)",
            id="features-2d",
        ),
        pytest.param(
            {"features": np.zeros((3, K, D), np.float32)},
            "field 'features' has shape (3, 5, 6), expected (4, K, D)",
            id="features-wrong-first-dim",
        ),
        pytest.param(
            {"features": np.zeros((4, K, D), np.float64)},
            "field 'features' has dtype float64, expected float16 or float32",
            id="features-float64",
        ),
        pytest.param(
            {"boxes": np.zeros((4, K, 5), np.float32)},
            "field 'boxes' has shape (4, 5, 5), expected (4, 5, 4)",
            id="boxes-5-coords",
        ),
        pytest.param(
            {"boxes": np.zeros((4, K - 1, 4), np.float32)},
            "field 'boxes' has shape (4, 4, 4), expected (4, 5, 4)",
            id="boxes-fewer-than-features",
        ),
        pytest.param(
            {"image_ids": IDS.reshape(2, 2)},
            "field 'image_ids' must be a 1-d integer array",
            id="ids-2d",
        ),
        pytest.param(
            {"image_ids": IDS.astype(np.float64)},
            "field 'image_ids' must be a 1-d integer array",
            id="ids-float",
        ),
        pytest.param(
            {"image_ids": np.array([30, 10, 20, 10])},
            "field 'image_ids' repeats id 10",
            id="repeated-id",
        ),
    ],
)
def test_malformed_store(tmp_path: Path, changes: dict, expected: str) -> None:
    path = write_raw(tmp_path / "f.h5", **valid_raw(**changes))
    assert error_of(path) == f"{path}: {expected}"


@pytest.mark.parametrize(
    ("value", "where"), [(1.5, (0, 0, 2)), (-0.01, (3, 4, 1)), (np.nan, (2, 1, 0))]
)
def test_boxes_outside_unit_square(tmp_path: Path, value: float, where: tuple) -> None:
    features, boxes = arrays()
    boxes[where] = value
    path = tmp_path / "f.h5"
    write_feature_store(path, IDS, features, boxes)  # the writer does not check
    assert error_of(path) == f"{path}: field 'boxes' has values outside [0, 1]"


def test_boxes_on_the_edges_are_accepted(tmp_path: Path) -> None:
    features, boxes = arrays()
    boxes[0, 0] = [0.0, 0.0, 1.0, 1.0]
    write_feature_store(tmp_path / "f.h5", IDS, features, boxes)
    np.testing.assert_array_equal(load_feature_store(tmp_path / "f.h5").boxes[0, 0], [0, 0, 1, 1])


def test_expected_num_boxes_and_feature_dim(tmp_path: Path) -> None:
    path = tmp_path / "f.h5"
    store_file(path)
    assert error_of(path, num_boxes=36) == (
        f"{path}: field 'features' has {K} boxes per image, expected 36"
    )
    assert error_of(path, feature_dim=2048) == (
        f"{path}: field 'features' has dimension {D}, expected 2048"
    )
    store = load_feature_store(path, num_boxes=K, feature_dim=D)
    assert (store.num_boxes, store.feature_dim) == (K, D)


def test_store_with_no_boxes_is_an_input_error(tmp_path: Path) -> None:
    path = tmp_path / "f.h5"
    write_feature_store(path, [1, 2], np.zeros((2, 0, D), np.float32), np.zeros((2, 0, 4)))
    assert str(path) in error_of(path, num_boxes=36)


# ---------------------------------------------------------------- writer


def test_writer_leaves_nothing_when_the_block_raises(tmp_path: Path) -> None:
    path = tmp_path / "out" / "f.h5"
    features, boxes = arrays()
    with pytest.raises(RuntimeError, match="boom"), FeatureStoreWriter(path, 4, K, D) as writer:
        writer.write(0, IDS[:2], features[:2], boxes[:2])
        raise RuntimeError("boom")
    assert not path.exists()
    assert list(path.parent.iterdir()) == []  # no temporary file either


def test_failed_rewrite_keeps_the_old_store(tmp_path: Path) -> None:
    path = tmp_path / "f.h5"
    store_file(path)
    before = path.read_bytes()
    features, boxes = arrays()
    with pytest.raises((ValueError, TypeError)):  # 4 ids but only 3 feature rows
        write_feature_store(path, IDS, features[:3], boxes[:3])
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.h5"]


def test_writer_rejects_other_dtypes_before_writing(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="feature dtype must be float16 or float32, got int8"):
        FeatureStoreWriter(tmp_path / "f.h5", 4, K, D, "int8")
    assert list(tmp_path.iterdir()) == []


def test_streamed_writes_in_blocks(tmp_path: Path) -> None:
    path = tmp_path / "f.h5"
    features, boxes = arrays("float16")
    with FeatureStoreWriter(path, 4, K, D, "float16") as writer:
        writer.write(2, IDS[2:], features[2:], boxes[2:])
        writer.write(0, IDS[:2], features[:2], boxes[:2])
    store = load_feature_store(path)
    np.testing.assert_array_equal(store.image_ids, IDS)
    np.testing.assert_array_equal(store.features, features)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.h5"]
