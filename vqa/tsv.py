"""Convert region-feature TSV files into one feature store (see `vqa.features`).

Two formats, tab-separated, no header, one image per line:

- ``bottomup`` (bottom-up-attention ``trainval_36``): ``image_id, image_w, image_h, num_boxes,
  boxes, features``; ``image_id`` an integer.
- ``lxmert`` (LXMERT ``*_obj36.tsv``): ``img_id, img_h, img_w, objects_id, objects_conf,
  attrs_id, attrs_conf, num_boxes, boxes, features`` (height before width); ``img_id`` like
  ``COCO_val2014_000000000042``, whose trailing number (42) is the image id.

``boxes`` is base64 of float32 (num_boxes, 4) pixel boxes (x1, y1, x2, y2); ``features`` base64 of
float32 (num_boxes, D). In ``lxmert``, ``objects_id``/``attrs_id`` are base64 int64 (num_boxes,)
and ``objects_conf``/``attrs_conf`` base64 float32 (num_boxes,); all are checked, and
``objects_id`` (the detector's class per box, which object label pre-training reads) is stored as
the store's ``object_ids``.
"""

from __future__ import annotations

import base64
import binascii
import math
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from tqdm import tqdm

from vqa.errors import InputError
from vqa.features import FeatureStoreWriter

# Rows decoded per write: 256 x 36 x 2048 float32 is 75 MB, small next to a 20 GB input.
BLOCK_ROWS = 256

# Detector boxes may overhang the image by a fraction of a pixel; anything further is corrupt.
BOX_TOLERANCE = 1e-3

_INT64_MAX = np.iinfo(np.int64).max
_FLOAT16_MAX = float(np.finfo(np.float16).max)
_TRAILING_INT = re.compile(rb"(\d+)$")


@dataclass(frozen=True)
class _Format:
    name: str
    fields: tuple[str, ...]
    id_field: str
    w_field: str
    h_field: str
    # Per-box fields that are validated but not stored: (field, little-endian numpy dtype).
    extra: tuple[tuple[str, str], ...] = ()

    def index(self, field: str) -> int:
        return self.fields.index(field)


_BOTTOMUP = _Format(
    "bottomup",
    ("image_id", "image_w", "image_h", "num_boxes", "boxes", "features"),
    id_field="image_id",
    w_field="image_w",
    h_field="image_h",
)
_LXMERT = _Format(
    "lxmert",
    (
        "img_id",
        "img_h",
        "img_w",
        "objects_id",
        "objects_conf",
        "attrs_id",
        "attrs_conf",
        "num_boxes",
        "boxes",
        "features",
    ),
    id_field="img_id",
    w_field="img_w",
    h_field="img_h",
    extra=(
        ("objects_id", "<i8"),
        ("objects_conf", "<f4"),
        ("attrs_id", "<i8"),
        ("attrs_conf", "<f4"),
    ),
)
FORMATS: dict[str, _Format] = {f.name: f for f in (_BOTTOMUP, _LXMERT)}
_BY_FIELD_COUNT = {len(f.fields): f for f in FORMATS.values()}


@dataclass(frozen=True)
class _Row:
    image_id: int
    boxes: np.ndarray  # (K, 4) float32, normalised and clipped to [0, 1]
    features: np.ndarray  # (K, D) float32
    object_ids: np.ndarray | None = None  # (K,) int64 >= 0, lxmert's objects_id


def convert_tsv(
    inputs: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    fmt: str = "auto",
    dtype: str = "float16",
    num_boxes: int | None = None,
    *,
    progress: bool = False,
) -> dict:
    """Convert TSV files into one feature store at `out`, rows in input order.

    `fmt` is "bottomup", "lxmert" or "auto" (from the first line's field count, 6 or 10).
    Features (N, K, D) are stored as `dtype` (float16 or float32); boxes (N, K, 4) float32 as
    (x1/w, y1/h, x2/w, y2/h) clipped to [0, 1]. K is `num_boxes`, else the first row's.
    Any bad input raises `InputError` naming file, line and field, and leaves `out` unwritten.
    Returns {"images": N, "num_boxes": K, "feature_dim": D, "format": name, "out": str(out)}.
    """
    paths = [Path(p) for p in inputs]
    if not paths:
        raise InputError("no input TSV files given")
    if fmt != "auto" and fmt not in FORMATS:
        raise InputError(f"unknown TSV format {fmt!r}; expected auto, {', '.join(FORMATS)}")
    try:
        out_dtype = np.dtype(dtype)
    except TypeError:
        out_dtype = None
    if out_dtype not in (np.dtype("float16"), np.dtype("float32")):
        raise InputError(f"feature dtype must be float16 or float32, got {dtype!r}")
    if num_boxes is not None and num_boxes <= 0:
        raise InputError(f"num_boxes must be positive, got {num_boxes}")

    # Pass 1: count rows and fix the format, K and D from the first row, before any output exists.
    counts: list[int] = []
    form: _Format | None = None if fmt == "auto" else FORMATS[fmt]
    first: tuple[str, int, list[bytes]] | None = None
    for path in paths:
        n, head = _scan(path)
        if head is None:
            raise InputError(f"{path} line 1: empty file, no TSV rows")
        lineno, fields = head
        if form is None:
            form = _BY_FIELD_COUNT.get(len(fields))
            if form is None:
                raise InputError(f"{path} line {lineno}: {_field_count_problem(len(fields))}")
        elif len(fields) != len(form.fields):
            other = _BY_FIELD_COUNT.get(len(fields))
            seems = f", as in {other.name} files" if other else ""
            why = (
                f"detected from {paths[0]}; all inputs must share one format"
                if fmt == "auto"
                else "as requested"
            )
            raise InputError(
                f"{path} line {lineno}: {len(fields)} tab-separated fields{seems}, expected"
                f" {len(form.fields)} for format {form.name} ({why})"
            )
        if first is None:
            first = (str(path), lineno, fields)
        counts.append(n)
    assert form is not None and first is not None

    first_where = f"{first[0]} line {first[1]}"
    k_source = "the num_boxes option" if num_boxes is not None else ""
    row0 = _decode_row(form, first[2], first_where, num_boxes, None, k_source, "")
    k, d = row0.features.shape
    if num_boxes is None:
        k_source = f"as in {first_where}"
    d_source = f"as in {first_where}"
    total = sum(counts)

    # Pass 2: decode every row and stream blocks into the writer; raising inside the `with`
    # removes the temporary file, so a bad row anywhere leaves nothing under `out`.
    seen: dict[int, str] = {}
    ids = np.empty(BLOCK_ROWS, dtype=np.int64)
    feats = np.empty((BLOCK_ROWS, k, d), dtype=out_dtype)
    boxes = np.empty((BLOCK_ROWS, k, 4), dtype=np.float32)
    with_ids = row0.object_ids is not None
    objects = np.empty((BLOCK_ROWS, k), dtype=np.int64) if with_ids else None
    with (
        FeatureStoreWriter(out, total, k, d, out_dtype, object_ids=with_ids) as writer,
        tqdm(total=total, disable=not progress, unit="img", desc="convert") as bar,
    ):
        written = 0
        fill = 0
        for path, expected in zip(paths, counts, strict=True):
            n = 0
            for lineno, fields in _rows(path):
                where = f"{path} line {lineno}"
                n += 1
                if n > expected:
                    raise InputError(f"{where}: file grew while being converted")
                if len(fields) != len(form.fields):
                    raise InputError(
                        f"{where}: {len(fields)} tab-separated fields, expected"
                        f" {len(form.fields)} ({form.name}: {', '.join(form.fields)})"
                    )
                row = _decode_row(form, fields, where, k, d, k_source, d_source)
                prev = seen.get(row.image_id)
                if prev is not None:
                    raise InputError(
                        f"{where}: field '{form.id_field}' repeats image id {row.image_id},"
                        f" first seen at {prev}"
                    )
                seen[row.image_id] = where
                ids[fill] = row.image_id
                feats[fill] = _cast_features(row.features, out_dtype, where)
                boxes[fill] = row.boxes
                if objects is not None:
                    objects[fill] = row.object_ids
                fill += 1
                if fill == BLOCK_ROWS:
                    writer.write(written, ids, feats, boxes, objects)
                    written += fill
                    fill = 0
                bar.update(1)
            if n != expected:
                raise InputError(
                    f"{path}: file shrank while being converted ({n} of {expected} rows)"
                )
        if fill:
            writer.write(written, ids[:fill], feats[:fill], boxes[:fill],
                         None if objects is None else objects[:fill])  # fmt: skip
            written += fill
        assert written == total
    return {"images": total, "num_boxes": k, "feature_dim": d, "format": form.name, "out": str(out)}


def _field_count_problem(n: int) -> str:
    known = "; ".join(
        f"{len(f.fields)} for {f.name} ({', '.join(f.fields)})" for f in FORMATS.values()
    )
    return f"found {n} tab-separated fields, expected {known}"


def _open(path: Path) -> BinaryIO:
    try:
        return open(path, "rb")  # noqa: SIM115 - the caller closes it
    except FileNotFoundError:
        raise InputError(f"{path}: input TSV file not found") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read input TSV file ({e.strerror or e})") from None


def _rows(path: Path) -> Iterator[tuple[int, list[bytes]]]:
    """(1-based line number, fields) of each non-blank line, read one line at a time."""
    with _open(path) as f:
        for lineno, line in enumerate(f, start=1):
            # Writers built on csv.DictWriter end lines with "\r\n"; base64 never contains either.
            line = line.rstrip(b"\r\n")
            if not line or line.isspace():
                continue
            yield lineno, line.split(b"\t")


def _scan(path: Path) -> tuple[int, tuple[int, list[bytes]] | None]:
    """Number of non-blank lines, and the first one's (line number, fields)."""
    n = 0
    head = None
    with _open(path) as f:
        for lineno, line in enumerate(f, start=1):
            if line.isspace() or not line:
                continue
            if head is None:
                head = (lineno, line.rstrip(b"\r\n").split(b"\t"))
            n += 1
    return n, head


def _text(raw: bytes, limit: int = 40) -> str:
    s = raw.decode("utf-8", errors="replace")
    return repr(s if len(s) <= limit else s[:limit] + "...")


def _decode_row(
    form: _Format,
    fields: list[bytes],
    where: str,
    k: int | None,
    d: int | None,
    k_source: str,
    d_source: str,
) -> _Row:
    """Parse and check one row; `k`/`d` are the required K and D (None: take them from this
    row), and `k_source`/`d_source` say where the requirement comes from."""

    def field(name: str) -> bytes:
        return fields[form.index(name)]

    image_id = _parse_image_id(form, field(form.id_field), where)
    w = _parse_size(form.w_field, field(form.w_field), where)
    h = _parse_size(form.h_field, field(form.h_field), where)

    raw_k = field("num_boxes")
    try:
        row_k = int(raw_k)
    except ValueError:
        raise InputError(f"{where}: field 'num_boxes' is not an integer: {_text(raw_k)}") from None
    if row_k <= 0:
        raise InputError(f"{where}: field 'num_boxes' is {row_k}, expected a positive count")
    if k is not None and row_k != k:
        raise InputError(f"{where}: field 'num_boxes' is {row_k}, expected {k} ({k_source})")

    object_ids = None
    for name, dt in form.extra:
        values = _decode_array(name, field(name), dt, where)
        if values.size != row_k:
            raise InputError(
                f"{where}: field '{name}' decodes to {values.size} values, expected {row_k}"
                f" (one per box)"
            )
        if name == "objects_id":
            if values.size and values.min() < 0:
                raise InputError(f"{where}: field 'objects_id' has a negative class {values.min()}")
            object_ids = values.astype(np.int64)

    px = _decode_array("boxes", field("boxes"), "<f4", where)
    if px.size != row_k * 4:
        raise InputError(
            f"{where}: field 'boxes' decodes to {px.size} floats, expected {row_k * 4}"
            f" (num_boxes {row_k} x 4)"
        )
    boxes = _normalise_boxes(px.reshape(row_k, 4), w, h, where)

    feats = _decode_array("features", field("features"), "<f4", where)
    if d is None:
        if feats.size == 0 or feats.size % row_k:
            raise InputError(
                f"{where}: field 'features' decodes to {feats.size} floats, not a positive"
                f" multiple of num_boxes {row_k}"
            )
        d = feats.size // row_k
    elif feats.size != row_k * d:
        raise InputError(
            f"{where}: field 'features' decodes to {feats.size} floats, expected {row_k * d}"
            f" (num_boxes {row_k} x feature_dim {d}, {d_source})"
        )
    feats = feats.reshape(row_k, d)
    if not np.isfinite(feats).all():
        raise InputError(f"{where}: field 'features' contains NaN or infinite values")
    return _Row(image_id, boxes, feats, object_ids)


def _parse_image_id(form: _Format, raw: bytes, where: str) -> int:
    name = form.id_field
    if form is _LXMERT:
        # COCO_val2014_000000000042 -> 42; the number is what VQA question files refer to.
        m = _TRAILING_INT.search(raw.strip())
        if m is None:
            raise InputError(
                f"{where}: field '{name}' {_text(raw)} does not end in an integer image id"
            )
        value = int(m.group(1))
    else:
        try:
            value = int(raw)
        except ValueError:
            raise InputError(f"{where}: field '{name}' is not an integer: {_text(raw)}") from None
    if not 0 <= value <= _INT64_MAX:
        raise InputError(f"{where}: field '{name}' {value} is outside the int64 range of ids")
    return value


def _parse_size(name: str, raw: bytes, where: str) -> float:
    """An image width or height in pixels; must be a finite positive number."""
    try:
        value = float(raw)
    except ValueError:
        raise InputError(f"{where}: field '{name}' is not a number: {_text(raw)}") from None
    if not math.isfinite(value) or value <= 0:
        raise InputError(f"{where}: field '{name}' is {_text(raw)}, expected a positive size")
    return value


def _decode_array(name: str, raw: bytes, dt: str, where: str) -> np.ndarray:
    try:
        data = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError) as e:
        raise InputError(f"{where}: field '{name}' is not valid base64 ({e})") from None
    itemsize = np.dtype(dt).itemsize
    if len(data) % itemsize:
        raise InputError(
            f"{where}: field '{name}' decodes to {len(data)} bytes, not a whole number of"
            f" {itemsize}-byte values"
        )
    return np.frombuffer(data, dtype=dt)


def _normalise_boxes(px: np.ndarray, w: float, h: float, where: str) -> np.ndarray:
    """(K, 4) pixel (x1, y1, x2, y2) -> (K, 4) float32 (x1/w, y1/h, x2/w, y2/h) in [0, 1]."""
    scale = np.array([w, h, w, h], dtype=np.float64)
    norm = px.astype(np.float64) / scale
    bad = ~np.isfinite(norm) | (norm < -BOX_TOLERANCE) | (norm > 1.0 + BOX_TOLERANCE)
    if bad.any():
        i = int(np.argmax(bad.any(axis=1)))
        coords = ", ".join(f"{v:g}" for v in px[i])
        raise InputError(
            f"{where}: field 'boxes' box {i} ({coords}) px lies outside the"
            f" {w:g} x {h:g} image (width x height) by more than {BOX_TOLERANCE:g} of its size"
        )
    return np.clip(norm, 0.0, 1.0).astype(np.float32)


def _cast_features(feats: np.ndarray, dtype: np.dtype, where: str) -> np.ndarray:
    if dtype == np.float16:
        peak = float(np.abs(feats).max())
        if peak > _FLOAT16_MAX:
            raise InputError(
                f"{where}: field 'features' has |value| {peak:g} beyond the float16 range"
                f" ({_FLOAT16_MAX:g}); convert with dtype float32"
            )
    return feats.astype(dtype)
