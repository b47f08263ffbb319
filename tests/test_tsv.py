"""Tests for vqa.tsv: bottom-up and LXMERT TSV files -> feature store, value by value."""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest

from vqa import tsv
from vqa.errors import InputError
from vqa.features import load_feature_store
from vqa.tsv import convert_tsv

K = 3
D = 5


@dataclass(frozen=True)
class Image:
    image_id: int
    w: int
    h: int
    boxes: np.ndarray  # (K, 4) float32 pixels x1, y1, x2, y2
    feats: np.ndarray  # (K, D) float32


def make_images(n: int, seed: int = 0, first_id: int = 42, k: int = K, d: int = D) -> list[Image]:
    """Images of differing sizes, all wider than tall, boxes inside the shorter side."""
    rng = np.random.default_rng(seed)
    images = []
    for i in range(n):
        w, h = 640 + 32 * i, 480 - 16 * i
        x1y1 = rng.uniform(0, 200, size=(k, 2))
        x2y2 = x1y1 + rng.uniform(10, 200, size=(k, 2))
        boxes = np.concatenate([x1y1, x2y2], axis=1).astype(np.float32)
        feats = (rng.standard_normal((k, d)) * 3).astype(np.float32)
        images.append(Image(first_id + 7 * i, w, h, boxes, feats))
    # One box computed by hand below: (64, 48, 320, 240) on 640 x 480 is (0.1, 0.1, 0.5, 0.5).
    images[0].boxes[0] = [64, 48, 320, 240]
    return images


def b64(a: np.ndarray, dtype: str) -> str:
    return base64.b64encode(np.ascontiguousarray(a, dtype=dtype).tobytes()).decode("ascii")


def bottomup_fields(img: Image) -> list[str]:
    k = len(img.boxes)
    return [
        str(img.image_id),
        str(img.w),
        str(img.h),
        str(k),
        b64(img.boxes, "<f4"),
        b64(img.feats, "<f4"),
    ]


def object_classes(img: Image) -> np.ndarray:
    """The detector classes (objects_id) of an image's boxes: differ from image to image."""
    return (np.arange(len(img.boxes)) * 3 + img.image_id) % 1600


def lxmert_fields(img: Image) -> list[str]:
    k = len(img.boxes)
    return [
        f"COCO_val2014_{img.image_id:012d}",
        str(img.h),  # height before width, as in LXMERT's FIELDNAMES
        str(img.w),
        b64(object_classes(img), "<i8"),
        b64(np.linspace(0.9, 0.5, k), "<f4"),
        b64(np.arange(k) + 100, "<i8"),
        b64(np.linspace(0.8, 0.4, k), "<f4"),
        str(k),
        b64(img.boxes, "<f4"),
        b64(img.feats, "<f4"),
    ]


FIELDS = {"bottomup": bottomup_fields, "lxmert": lxmert_fields}


def write_tsv(path: Path, rows: list[list[str]], newline: str = "\r\n") -> Path:
    # "\r\n" by default: the original generators wrote through csv.DictWriter, whose default it is.
    path.write_bytes("".join("\t".join(r) + newline for r in rows).encode("ascii"))
    return path


def write_images(path: Path, fmt: str, images: list[Image], newline: str = "\r\n") -> Path:
    return write_tsv(path, [FIELDS[fmt](img) for img in images], newline)


def expected_boxes(images: list[Image]) -> np.ndarray:
    return np.stack([img.boxes / np.array([img.w, img.h, img.w, img.h]) for img in images])


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if not p.name.endswith(".tsv"))


# --- successful conversions -------------------------------------------------------------------


def test_bottomup_float32_values(tmp_path: Path) -> None:
    images = make_images(4)
    src = write_images(tmp_path / "trainval_36.tsv", "bottomup", images)
    out = tmp_path / "feats.h5"

    summary = convert_tsv([src], out, fmt="bottomup", dtype="float32")

    assert summary == {
        "images": 4,
        "num_boxes": K,
        "feature_dim": D,
        "format": "bottomup",
        "out": str(out),
    }
    store = load_feature_store(out)
    assert store.image_ids.dtype == np.int64
    assert store.image_ids.tolist() == [42, 49, 56, 63]
    assert store.features.dtype == np.float32
    assert store.features.shape == (4, K, D)
    np.testing.assert_array_equal(store.features, np.stack([img.feats for img in images]))
    assert store.object_ids is None  # bottom-up TSVs carry no detector classes
    assert store.boxes.dtype == np.float32
    np.testing.assert_array_equal(store.boxes[0, 0], np.float32([0.1, 0.1, 0.5, 0.5]))
    np.testing.assert_allclose(store.boxes, expected_boxes(images), rtol=1e-6, atol=0)


def test_lxmert_float16_values_and_id_parse(tmp_path: Path) -> None:
    images = make_images(3, seed=1)
    src = write_images(tmp_path / "val2014_obj36.tsv", "lxmert", images, newline="\n")
    out = tmp_path / "feats.h5"

    summary = convert_tsv([src], out, fmt="lxmert")

    assert summary["format"] == "lxmert"
    store = load_feature_store(out)
    # COCO_val2014_000000000042 -> 42, etc.
    assert store.image_ids.tolist() == [42, 49, 56]
    assert store.features.dtype == np.float16
    expected = np.stack([img.feats for img in images])
    np.testing.assert_array_equal(store.features, expected.astype(np.float16))
    # float16 keeps ~3 significant digits; the rounding really happened.
    assert not np.array_equal(np.asarray(store.features, np.float32), expected)
    np.testing.assert_allclose(np.asarray(store.features, np.float32), expected, rtol=1e-3)
    # w != h in every image: reading img_h as the width would give 64/480 here, not 0.1.
    np.testing.assert_array_equal(store.boxes[0, 0], np.float32([0.1, 0.1, 0.5, 0.5]))
    np.testing.assert_allclose(store.boxes, expected_boxes(images), rtol=1e-6, atol=0)
    # objects_id is kept, row by row, for object label pre-training
    np.testing.assert_array_equal(store.object_ids, np.stack([object_classes(i) for i in images]))


@pytest.mark.parametrize("fmt", ["bottomup", "lxmert"])
def test_auto_detects_format(tmp_path: Path, fmt: str) -> None:
    images = make_images(2)
    src = write_images(tmp_path / "in.tsv", fmt, images)
    summary = convert_tsv([src], tmp_path / "out.h5")
    assert summary["format"] == fmt
    store = load_feature_store(tmp_path / "out.h5")
    np.testing.assert_allclose(store.boxes, expected_boxes(images), rtol=1e-6, atol=0)


def test_two_files_merged_in_order(tmp_path: Path) -> None:
    a_imgs = make_images(2, seed=2, first_id=1000)
    b_imgs = make_images(3, seed=3, first_id=5)
    a = write_images(tmp_path / "a.tsv", "lxmert", a_imgs)
    b = write_images(tmp_path / "b.tsv", "lxmert", b_imgs)
    out = tmp_path / "out.h5"

    summary = convert_tsv([a, b], out, dtype="float32")

    assert summary["images"] == 5
    store = load_feature_store(out)
    assert store.image_ids.tolist() == [1000, 1007, 5, 12, 19]
    all_imgs = a_imgs + b_imgs
    np.testing.assert_array_equal(store.features, np.stack([i.feats for i in all_imgs]))
    np.testing.assert_allclose(store.boxes, expected_boxes(all_imgs), rtol=1e-6, atol=0)


@pytest.mark.parametrize("fmt", ["bottomup", "lxmert"])
def test_rows_span_several_write_blocks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    monkeypatch.setattr(tsv, "BLOCK_ROWS", 2)
    images = make_images(5, seed=4)
    src = write_images(tmp_path / "in.tsv", fmt, images)

    convert_tsv([src], tmp_path / "out.h5", dtype="float32")

    store = load_feature_store(tmp_path / "out.h5")
    assert store.image_ids.tolist() == [img.image_id for img in images]
    if fmt == "lxmert":
        classes = np.stack([object_classes(img) for img in images])
        np.testing.assert_array_equal(store.object_ids, classes)
    np.testing.assert_array_equal(store.features, np.stack([i.feats for i in images]))
    np.testing.assert_allclose(store.boxes, expected_boxes(images), rtol=1e-6, atol=0)


def test_boxes_overhanging_by_a_fraction_of_a_pixel_are_clipped(tmp_path: Path) -> None:
    images = make_images(1)
    img = images[0]
    img.boxes[1] = [-0.3, -0.2, img.w + 0.4, img.h + 0.1]
    src = write_images(tmp_path / "in.tsv", "bottomup", images)

    convert_tsv([src], tmp_path / "out.h5")

    store = load_feature_store(tmp_path / "out.h5")
    np.testing.assert_array_equal(store.boxes[0, 1], np.float32([0, 0, 1, 1]))
    np.testing.assert_array_equal(store.boxes[0, 0], np.float32([0.1, 0.1, 0.5, 0.5]))


def test_num_boxes_option_matching_and_blank_lines(tmp_path: Path) -> None:
    images = make_images(2)
    rows = [bottomup_fields(img) for img in images]
    src = tmp_path / "in.tsv"
    src.write_text("\t".join(rows[0]) + "\n\n" + "\t".join(rows[1]) + "\n\n")

    summary = convert_tsv([src], tmp_path / "out.h5", num_boxes=K)

    assert summary["images"] == 2
    assert load_feature_store(tmp_path / "out.h5").image_ids.tolist() == [42, 49]


def test_progress_bar_only_when_asked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = write_images(tmp_path / "in.tsv", "bottomup", make_images(3))
    convert_tsv([src], tmp_path / "quiet.h5")
    assert capsys.readouterr().err == ""
    convert_tsv([src], tmp_path / "loud.h5", progress=True)
    assert "3/3" in capsys.readouterr().err


# --- bad input: InputError naming file, line and field; nothing written ------------------------


def set_field(img_fields: list[str], index: int, value: str) -> list[str]:
    fields = list(img_fields)
    fields[index] = value
    return fields


Case = Callable[[Path], tuple[list[Path], dict]]


def bad_row(fmt: str, line: int, edit: Callable[[list[str]], list[str]], n: int = 3) -> Case:
    """A file of `n` good rows, with row `line` (1-based) edited."""

    def build(d: Path) -> tuple[list[Path], dict]:
        rows = [FIELDS[fmt](img) for img in make_images(n)]
        rows[line - 1] = edit(rows[line - 1])
        return [write_tsv(d / "feats.tsv", rows)], {}

    return build


def short_image(img: Image, k: int = K, d: int = D) -> Image:
    return replace(img, boxes=img.boxes[:k].copy(), feats=np.zeros((k, d), np.float32))


def _images_with(i: int, change: Callable[[Image], Image], n: int = 3) -> list[Image]:
    images = make_images(n)
    images[i] = change(images[i])
    return images


def rows_of(fmt: str, images: list[Image]) -> Case:
    return lambda d: ([write_images(d / "feats.tsv", fmt, images)], {})


def _out_of_range(img: Image) -> Image:
    boxes = img.boxes.copy()
    boxes[2, 2] = img.w * 1.01
    return replace(img, boxes=boxes)


def _nan_feature(img: Image) -> Image:
    feats = img.feats.copy()
    feats[1, 3] = np.nan
    return replace(img, feats=feats)


def _huge_feature(img: Image) -> Image:
    feats = img.feats.copy()
    feats[0, 0] = 1e6
    return replace(img, feats=feats)


def _missing(d: Path) -> tuple[list[Path], dict]:
    return [d / "nope.tsv"], {}


def _empty(d: Path) -> tuple[list[Path], dict]:
    (d / "feats.tsv").write_text("")
    return [d / "feats.tsv"], {}


def _blank_only(d: Path) -> tuple[list[Path], dict]:
    (d / "feats.tsv").write_text("\n\r\n")
    return [d / "feats.tsv"], {}


def _second_file_empty(d: Path) -> tuple[list[Path], dict]:
    a = write_images(d / "a.tsv", "bottomup", make_images(2))
    (d / "feats.tsv").write_text("")
    return [a, d / "feats.tsv"], {}


def _dup_across_files(d: Path) -> tuple[list[Path], dict]:
    a = write_images(d / "a.tsv", "bottomup", make_images(2, first_id=10))  # ids 10, 17
    b = write_images(d / "feats.tsv", "bottomup", make_images(2, first_id=17))  # ids 17, 24
    return [a, b], {}


def _dup_in_file(d: Path) -> tuple[list[Path], dict]:
    images = make_images(3)
    images[2] = replace(images[2], image_id=images[0].image_id)
    return [write_images(d / "feats.tsv", "bottomup", images)], {}


def _mixed_formats(d: Path) -> tuple[list[Path], dict]:
    a = write_images(d / "a.tsv", "bottomup", make_images(1, first_id=1))
    b = write_images(d / "feats.tsv", "lxmert", make_images(1, first_id=2))
    return [a, b], {}


def _explicit_format_mismatch(d: Path) -> tuple[list[Path], dict]:
    return [write_images(d / "feats.tsv", "bottomup", make_images(2))], {"fmt": "lxmert"}


def _num_boxes_option(d: Path) -> tuple[list[Path], dict]:
    return [write_images(d / "feats.tsv", "bottomup", make_images(2))], {"num_boxes": 36}


def _blank_line_counts(d: Path) -> tuple[list[Path], dict]:
    rows = [bottomup_fields(img) for img in make_images(2)]
    rows[1][1] = "wide"
    text = "\t".join(rows[0]) + "\n\n" + "\t".join(rows[1]) + "\n"
    (d / "feats.tsv").write_text(text)
    return [d / "feats.tsv"], {}


BU, LX = "bottomup", "lxmert"
BAD_INPUTS = {
    "missing file": (_missing, ["nope.tsv", "not found"]),
    "empty file": (_empty, ["feats.tsv line 1", "empty"]),
    "blank lines only": (_blank_only, ["feats.tsv line 1", "empty"]),
    "second file empty": (_second_file_empty, ["feats.tsv line 1", "empty"]),
    "too few fields": (
        bad_row(BU, 2, lambda f: f[:-1]),
        ["feats.tsv line 2", "5 tab-separated fields", "expected 6"],
    ),
    "too many fields lxmert": (
        bad_row(LX, 3, lambda f: [*f, "x"]),
        ["feats.tsv line 3", "11 tab-separated fields", "expected 10"],
    ),
    "unknown field count": (
        bad_row(BU, 1, lambda f: [*f, "x"]),
        ["feats.tsv line 1", "found 7 tab-separated fields"],
    ),
    "undecodable base64": (
        bad_row(BU, 2, lambda f: set_field(f, 5, "@@not*base64@@")),
        ["feats.tsv line 2", "field 'features'", "base64"],
    ),
    "python-2 repr of bytes": (
        bad_row(LX, 2, lambda f: set_field(f, 8, f"b'{f[8]}'")),
        ["feats.tsv line 2", "field 'boxes'", "base64"],
    ),
    "base64 of a partial float": (
        bad_row(BU, 2, lambda f: set_field(f, 4, "QUJD")),
        ["feats.tsv line 2", "field 'boxes'", "3 bytes"],
    ),
    "non-numeric width": (
        bad_row(BU, 2, lambda f: set_field(f, 1, "wide")),
        ["feats.tsv line 2", "field 'image_w'", "not a number"],
    ),
    "zero width": (
        bad_row(BU, 3, lambda f: set_field(f, 1, "0")),
        ["feats.tsv line 3", "field 'image_w'", "positive"],
    ),
    "negative height lxmert": (
        bad_row(LX, 2, lambda f: set_field(f, 1, "-480")),
        ["feats.tsv line 2", "field 'img_h'", "positive"],
    ),
    "non-numeric width lxmert": (
        bad_row(LX, 1, lambda f: set_field(f, 2, "nan")),
        ["feats.tsv line 1", "field 'img_w'"],
    ),
    "non-integer image id": (
        bad_row(BU, 2, lambda f: set_field(f, 0, "12a")),
        ["feats.tsv line 2", "field 'image_id'", "12a"],
    ),
    "img_id without a number": (
        bad_row(LX, 2, lambda f: set_field(f, 0, "COCO_val2014_x")),
        ["feats.tsv line 2", "field 'img_id'", "COCO_val2014_x"],
    ),
    "non-integer num_boxes": (
        bad_row(BU, 2, lambda f: set_field(f, 3, "three")),
        ["feats.tsv line 2", "field 'num_boxes'"],
    ),
    "boxes too short": (
        bad_row(BU, 2, lambda f: set_field(f, 4, b64(np.zeros(8), "<f4"))),
        ["feats.tsv line 2", "field 'boxes' decodes to 8 floats, expected 12 (num_boxes 3 x 4)"],
    ),
    "negative objects_id": (
        bad_row(LX, 2, lambda f: set_field(f, 3, b64(np.arange(K) - 1, "<i8"))),
        ["feats.tsv line 2", "field 'objects_id' has a negative class -1"],
    ),
    "objects_id count": (
        bad_row(LX, 2, lambda f: set_field(f, 3, b64(np.arange(K + 1), "<i8"))),
        ["feats.tsv line 2", "field 'objects_id' decodes to 4 values, expected 3"],
    ),
    "num_boxes differs from first row": (
        rows_of(BU, _images_with(1, lambda img: short_image(img, k=2))),
        ["feats.tsv line 2", "field 'num_boxes' is 2, expected 3", "feats.tsv line 1"],
    ),
    "num_boxes option": (
        _num_boxes_option,
        ["feats.tsv line 1", "field 'num_boxes' is 3, expected 36", "num_boxes option"],
    ),
    "feature dim differs": (
        rows_of(LX, _images_with(2, lambda img: short_image(img, d=4))),
        [
            "feats.tsv line 3",
            "field 'features' decodes to 12 floats, expected 15",
            "feats.tsv line 1",
        ],
    ),
    "box beyond the image": (
        rows_of(BU, _images_with(1, _out_of_range)),
        ["feats.tsv line 2", "field 'boxes'", "box 2"],
    ),
    "nan feature": (
        rows_of(LX, _images_with(2, _nan_feature)),
        ["feats.tsv line 3", "field 'features'", "NaN"],
    ),
    "float16 overflow": (
        rows_of(BU, _images_with(1, _huge_feature)),
        ["feats.tsv line 2", "field 'features'", "float16"],
    ),
    "duplicate id in a file": (
        _dup_in_file,
        ["feats.tsv line 3", "field 'image_id'", "image id 42", "feats.tsv line 1"],
    ),
    "duplicate id across files": (
        _dup_across_files,
        ["feats.tsv line 1", "image id 17", "a.tsv line 2"],
    ),
    "mixed formats under auto": (
        _mixed_formats,
        ["feats.tsv line 1", "10 tab-separated fields", "bottomup", "a.tsv"],
    ),
    "explicit format mismatch": (
        _explicit_format_mismatch,
        ["feats.tsv line 1", "6 tab-separated fields", "lxmert"],
    ),
    "line numbers count blank lines": (_blank_line_counts, ["feats.tsv line 3", "'image_w'"]),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS), ids=list(BAD_INPUTS))
def test_bad_input_names_file_line_and_field(tmp_path: Path, case: str) -> None:
    build, parts = BAD_INPUTS[case]
    inputs, kwargs = build(tmp_path)
    out = tmp_path / "out.h5"
    with pytest.raises(InputError) as err:
        convert_tsv(inputs, out, **kwargs)
    message = str(err.value)
    assert "\n" not in message
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"
    assert not out.exists()
    assert leftovers(tmp_path) == []


def test_float16_overflow_is_fine_as_float32(tmp_path: Path) -> None:
    src = write_images(tmp_path / "in.tsv", "bottomup", _images_with(1, _huge_feature))
    convert_tsv([src], tmp_path / "out.h5", dtype="float32")
    assert load_feature_store(tmp_path / "out.h5").features[1, 0, 0] == np.float32(1e6)


def test_error_after_blocks_written_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tsv, "BLOCK_ROWS", 2)
    images = make_images(5)
    rows = [bottomup_fields(img) for img in images]
    rows[4][5] = "!!"
    src = write_tsv(tmp_path / "feats.tsv", rows)
    out = tmp_path / "out.h5"
    out.write_bytes(b"previous store")

    with pytest.raises(InputError, match=r"feats\.tsv line 5: field 'features'"):
        convert_tsv([src], out)

    # The earlier store under the same name is untouched, and no temporary file remains.
    assert out.read_bytes() == b"previous store"
    assert leftovers(tmp_path) == ["out.h5"]


@pytest.mark.parametrize(
    ("kwargs", "part"),
    [
        ({"dtype": "int8"}, "float16 or float32"),
        ({"dtype": "nonsense"}, "float16 or float32"),
        ({"fmt": "csv"}, "unknown TSV format 'csv'"),
        ({"num_boxes": 0}, "num_boxes must be positive"),
    ],
)
def test_bad_options(tmp_path: Path, kwargs: dict, part: str) -> None:
    src = write_images(tmp_path / "in.tsv", "bottomup", make_images(1))
    with pytest.raises(InputError, match=part):
        convert_tsv([src], tmp_path / "out.h5", **kwargs)
    assert not (tmp_path / "out.h5").exists()


def test_no_inputs(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no input"):
        convert_tsv([], tmp_path / "out.h5")
