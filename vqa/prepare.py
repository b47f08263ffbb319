"""`tickets data prepare`: JSON + features -> a cache directory that later stages read.

Cache layout (Parquet and JSON only, no pickle):
  manifest.json            format, resolved data config, size/mtime/sha256 of every input file
  config.yaml              the resolved `data:` block
  answers.json             the answer vocabulary (index = answer id)
  question_types.json      training question types (index = type id; id len(types) = unseen)
  prior.parquet            one row per type id: `question_type`, `prior` list<float32> (A,)
  splits.json              split sizes, the selection split, the `dev` image ids (VQA-CP v2),
                           question tokens and the share of them that are [UNK], per split
  questions/<split>.parquet one row per question (columns in `QUESTION_COLUMNS`)
  tokenizer/               the question tokenizer (transformers format)
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from tqdm.auto import tqdm

from vqa.answers import build_vocabulary, question_type_prior, soft_targets
from vqa.atomic import atomic_dir
from vqa.config import DataConfig
from vqa.errors import InputError
from vqa.features import load_feature_store
from vqa.readers import input_files, read_dataset
from vqa.tokenize import build_wordpiece, encode, load_tokenizer, unknown_tokens

CACHE_FORMAT = 1
GLOBAL_TYPE = "<global>"
# More unknown training tokens than this means the tokenizer does not fit the questions (a
# pretrained vocabulary of another language or casing): the model would see mostly [UNK].
MAX_UNK_SHARE = 0.5
QUESTION_COLUMNS = (
    "question_id",
    "image_id",
    "question",
    "question_type",
    "type_id",
    "answer_type",
    "multiple_choice_answer",
    "answers",
    "input_ids",
    "target_ids",
    "target_scores",
)


@dataclass(frozen=True)
class PrepareResult:
    cache_dir: Path
    written: bool  # False when the cache was already up to date
    splits: dict[str, int]
    unk_share: dict[str, float] = field(default_factory=dict)  # [UNK] / question tokens


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(8 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fingerprint(files: list[Path], previous: dict[str, dict]) -> dict[str, dict]:
    """size, mtime and sha256 per file; a hash is reused when size and mtime are unchanged."""
    out = {}
    for path in files:
        if not path.is_file():
            raise InputError(f"{path}: file not found")
        st = path.stat()
        old = previous.get(str(path), {})
        if old.get("size") == st.st_size and old.get("mtime_ns") == st.st_mtime_ns:
            digest = old["sha256"]
        else:
            digest = _sha256(path)
        out[str(path)] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}
    return out


def _tokenizer_files(cfg: DataConfig) -> list[Path]:
    if cfg.tokenizer.kind != "pretrained":
        return []
    d = cfg.tokenizer.path
    if d is None or not d.is_dir():
        raise InputError(f"{d}: tokenizer directory not found (data.tokenizer.path)")
    return sorted(
        p for p in d.iterdir() if p.is_file() and ("token" in p.name or p.name == "vocab.txt")
    )


def _same_inputs(old: dict[str, dict], new: dict[str, dict]) -> bool:
    return old.keys() == new.keys() and all(old[k]["sha256"] == new[k]["sha256"] for k in new)


def _manifest_config(cfg: DataConfig) -> dict:
    return json.loads(cfg.model_dump_json())


def prepare(config: DataConfig, progress: bool = False) -> PrepareResult:
    """Build (or confirm) the cache of `config`; unchanged inputs and config do nothing."""
    cfg = config.resolved()
    old, manifest = _manifests(cfg)
    if _up_to_date(old, manifest):
        return PrepareResult(cfg.cache_dir, False, old.get("splits", {}), _recorded_unk(cfg))

    steps = tqdm(total=5, desc="prepare", disable=not progress, unit="step")
    splits = read_dataset(cfg.dataset, cfg.root)
    steps.update()
    store = load_feature_store(cfg.features, num_boxes=cfg.num_boxes, feature_dim=cfg.feature_dim)
    for name, frame in splits.items():
        store.rows(frame["image_id"].to_numpy(), what=f"the {name} split of {cfg.root}")
    if cfg.dataset == "vqacp_v2":
        splits, dev_images = _select_dev(splits, cfg.selection_fraction, cfg.selection_seed)
    else:
        dev_images = []
    steps.update()

    train = splits["train"]
    vocab = build_vocabulary(train["multiple_choice_answer"], cfg.min_answer_count)
    if not vocab:
        raise InputError(
            f"{cfg.root}: no training answer occurs {cfg.min_answer_count} times "
            "(data.min_answer_count)"
        )
    qtypes = sorted(train["question_type"].unique())
    type_index = {t: i for i, t in enumerate(qtypes)}
    if cfg.tokenizer.kind == "pretrained":
        tokenizer = load_tokenizer(cfg.tokenizer.path)
    else:
        corpus = pd.concat([f["question"] for n, f in splits.items() if n in ("train", "pretrain")])
        tokenizer = build_wordpiece(
            corpus.tolist(), cfg.tokenizer.vocab_size, cfg.tokenizer.lowercase
        )
    steps.update()

    tables: dict[str, pa.Table] = {}
    unknown: dict[str, tuple[int, int]] = {}
    train_targets = None
    for name, frame in splits.items():
        targets = soft_targets(frame["answers"].tolist(), vocab)
        if name == "train":
            train_targets = targets
        type_ids = np.array(
            [type_index.get(t, len(qtypes)) for t in frame["question_type"]], dtype=np.int32
        )
        tokens = encode(tokenizer, frame["question"].tolist(), cfg.max_question_tokens)
        unknown[name] = unknown_tokens(tokenizer, tokens)
        tables[name] = _question_table(frame, type_ids, tokens, targets)
    unk_share = {name: k / n if n else 0.0 for name, (k, n) in unknown.items()}
    _check_unknown(cfg, unk_share["train"])
    steps.update()
    prior = question_type_prior(
        tables["train"].column("type_id").to_numpy(), len(qtypes), train_targets, len(vocab)
    )

    counts = {name: t.num_rows for name, t in tables.items()}
    manifest["splits"] = counts
    with atomic_dir(cfg.cache_dir) as tmp:
        (tmp / "questions").mkdir()
        for name, table in tables.items():
            pq.write_table(table, tmp / "questions" / f"{name}.parquet")
        _write_json(tmp / "answers.json", vocab)
        _write_json(tmp / "question_types.json", qtypes)
        pq.write_table(
            pa.table(
                {
                    "question_type": qtypes + [GLOBAL_TYPE],
                    "prior": pa.array(list(prior), type=pa.list_(pa.float32())),
                }
            ),
            tmp / "prior.parquet",
        )
        _write_json(
            tmp / "splits.json",
            {
                "dataset": cfg.dataset,
                "selection": cfg.selection_split,
                "test": "test",
                "unions": {"test_full": ["dev", "test"]} if cfg.dataset == "vqacp_v2" else {},
                "counts": counts,
                "dev_images": dev_images,
                "question_tokens": {name: n for name, (_, n) in unknown.items()},
                "unk_share": unk_share,
            },
        )
        tokenizer.save_pretrained(str(tmp / "tokenizer"))
        (tmp / "config.yaml").write_text(
            yaml.safe_dump({"data": _manifest_config(cfg)}, sort_keys=False)
        )
        _write_json(tmp / "manifest.json", manifest)
    steps.update()
    steps.close()
    return PrepareResult(cfg.cache_dir, True, counts, unk_share)


def _check_unknown(cfg: DataConfig, share: float) -> None:
    """Refuse a tokenizer that turns most of the training questions' tokens into [UNK]."""
    if share > MAX_UNK_SHARE:
        where = (
            f"{cfg.tokenizer.path} (data.tokenizer.path)"
            if cfg.tokenizer.path
            else "data.tokenizer"
        )
        raise InputError(
            f"{where}: {share:.1%} of the training questions' tokens are [UNK] (at most "
            f"{MAX_UNK_SHARE:.0%} allowed); its vocabulary does not fit these questions"
        )


def _recorded_unk(cfg: DataConfig) -> dict[str, float]:
    """The [UNK] shares an existing cache recorded in splits.json (none in older caches)."""
    try:
        return json.loads((cfg.cache_dir / "splits.json").read_text()).get("unk_share", {})
    except (OSError, json.JSONDecodeError):
        return {}


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=1) + "\n")


def _select_dev(
    splits: dict[str, pd.DataFrame], fraction: float, seed: int
) -> tuple[dict[str, pd.DataFrame], list[int]]:
    """Split VQA-CP v2 test by image: a seeded `fraction` of its images becomes `dev`."""
    test = splits["test"]
    images = np.sort(test["image_id"].unique())
    n_dev = int(round(fraction * len(images)))
    if n_dev == 0 or n_dev == len(images):
        raise InputError(
            f"data.selection_fraction {fraction} of {len(images)} test images leaves an empty split"
        )
    rng = np.random.default_rng(seed)
    dev_images = np.sort(rng.choice(images, size=n_dev, replace=False))
    in_dev = test["image_id"].isin(dev_images).to_numpy()
    out = {k: v for k, v in splits.items() if k != "test"}
    out["dev"] = test[in_dev].reset_index(drop=True)
    out["test"] = test[~in_dev].reset_index(drop=True)
    return out, [int(i) for i in dev_images]


def _question_table(frame: pd.DataFrame, type_ids, tokens, targets) -> pa.Table:
    columns = {
        "question_id": pa.array(frame["question_id"].to_numpy(), pa.int64()),
        "image_id": pa.array(frame["image_id"].to_numpy(), pa.int64()),
        "question": pa.array(frame["question"].tolist(), pa.string()),
        "question_type": pa.array(frame["question_type"].tolist(), pa.string()),
        "type_id": pa.array(type_ids, pa.int32()),
        "answer_type": pa.array(frame["answer_type"].tolist(), pa.string()),
        "multiple_choice_answer": pa.array(frame["multiple_choice_answer"].tolist(), pa.string()),
        "answers": pa.array(frame["answers"].tolist(), pa.list_(pa.string())),
        "input_ids": _list_array(tokens, pa.int32()),
        "target_ids": pa.ListArray.from_arrays(
            pa.array(targets.indptr.astype(np.int32)), pa.array(targets.indices, pa.int32())
        ),
        "target_scores": pa.ListArray.from_arrays(
            pa.array(targets.indptr.astype(np.int32)), pa.array(targets.scores, pa.float32())
        ),
    }
    if "ood_sets" in frame.columns:
        columns["ood_sets"] = pa.array(frame["ood_sets"].tolist(), pa.list_(pa.string()))
    return pa.table(columns)


def _list_array(arrays: list[np.ndarray], value_type: pa.DataType) -> pa.ListArray:
    offsets = np.zeros(len(arrays) + 1, dtype=np.int32)
    np.cumsum([len(a) for a in arrays], out=offsets[1:])
    values = np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, value_type))


def _manifests(cfg: DataConfig) -> tuple[dict, dict]:
    """The cache's current manifest (empty if none) and the one the inputs call for now."""
    path = cfg.cache_dir / "manifest.json"
    old: dict = {}
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except json.JSONDecodeError:
            old = {}
    files = input_files(cfg.dataset, cfg.root) + [cfg.features] + _tokenizer_files(cfg)
    inputs = _fingerprint(files, old.get("inputs", {}))
    return old, {"format": CACHE_FORMAT, "config": _manifest_config(cfg), "inputs": inputs}


def _up_to_date(old: dict, new: dict) -> bool:
    return (
        old.get("format") == new["format"]
        and old.get("config") == new["config"]
        and _same_inputs(old.get("inputs", {}), new["inputs"])
    )


def cache_is_current(config: DataConfig) -> bool:
    """True when `prepare(config)` would do nothing (later stages check this before they start)."""
    try:
        old, new = _manifests(config.resolved())
    except InputError:
        return False
    return _up_to_date(old, new)
