"""synth -> prepare round trips: the cache holds what DESIGN.md §3 says, recomputed here."""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from search.config import load_config
from tests.conftest import Bench, make_bench
from vqa.answers import soft_score
from vqa.cache import load_cache
from vqa.metric import normalize_answer
from vqa.prepare import cache_is_current, prepare
from vqa.readers import read_vqacp_v2, read_vqavs


def test_cache_holds_only_parquet_json_yaml(vqacp_bench: Bench) -> None:
    cache = vqacp_bench.config.resolved().cache_dir
    suffixes = {p.suffix for p in cache.rglob("*") if p.is_file()}
    assert suffixes <= {".parquet", ".json", ".yaml"}, suffixes
    manifest = json.loads((cache / "manifest.json").read_text())
    hashed = {Path(p).name for p in manifest["inputs"]}
    assert "features.h5" in hashed and "vqacp_v2_test_annotations.json" in hashed
    assert all(len(v["sha256"]) == 64 for v in manifest["inputs"].values())
    saved = load_config(cache / "config.yaml").data
    assert saved.cache_dir == cache and saved.root.is_absolute()


def test_vqacp_round_trip(vqacp_bench: Bench) -> None:
    data, raw = vqacp_bench.data, read_vqacp_v2(vqacp_bench.root)
    train, test = raw["train"], raw["test"]

    counts = Counter(train["multiple_choice_answer"].map(normalize_answer))
    assert set(data.answers) == {a for a, c in counts.items() if c >= 9}
    assert [counts[a] for a in data.answers] == sorted((counts[a] for a in data.answers),
                                                       reverse=True)  # fmt: skip

    # dev: a seeded 20% of the test images; dev + test = test_full = the original test split.
    images = np.sort(test["image_id"].unique())
    dev, rest, full = data.split("dev"), data.split("test"), data.split("test_full")
    dev_images = set(dev.image_ids.tolist())
    assert len(dev_images) == round(0.2 * len(images))
    assert dev_images.isdisjoint(rest.image_ids.tolist())
    assert sorted(full.question_ids.tolist()) == sorted(test["question_id"].tolist())
    assert len(dev) + len(rest) == len(test)
    assert data.selection_split == "dev"

    # Targets of every training question equal the soft scores of its normalised human answers.
    split = data.split("train")
    by_id = train.set_index("question_id")
    index = {a: i for i, a in enumerate(data.answers)}
    for row in range(0, len(split), 97):
        humans = by_id.loc[split.question_ids[row], "answers"]
        want = np.zeros(data.num_answers, dtype=np.float32)
        for answer, k in Counter(map(normalize_answer, humans)).items():
            if answer in index:
                want[index[answer]] = soft_score(k)
        np.testing.assert_allclose(split.targets.dense(np.array([row]), data.num_answers)[0], want)

    # Prior: per type the mean dense target over training questions of that type; last row global.
    dense = split.targets.dense(np.arange(len(split)), data.num_answers)
    for t, qtype in enumerate(data.question_types):
        mask = np.array([q == qtype for q in split.question_types])
        np.testing.assert_allclose(data.prior[t], dense[mask].mean(0), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(data.prior[-1], dense.mean(0), rtol=1e-5, atol=1e-7)


def test_selection_split_is_seeded(vqacp_bench: Bench, tmp_path: Path) -> None:
    base = vqacp_bench.config.model_copy(update={"cache_dir": tmp_path / "a"})
    prepare(base)
    prepare(base.model_copy(update={"cache_dir": tmp_path / "b", "selection_seed": 1}))
    dev = vqacp_bench.data.split("dev").image_ids
    again = load_cache(tmp_path / "a").split("dev").image_ids
    other = load_cache(tmp_path / "b").split("dev").image_ids
    assert np.array_equal(dev, again)
    assert set(other.tolist()) != set(dev.tolist())


def test_vqavs_round_trip(vqavs_bench: Bench) -> None:
    data, raw = vqavs_bench.data, read_vqavs(vqavs_bench.root)
    assert data.selection_split == "val"
    assert set(data.split_names) == {"train", "val", "test", "pretrain"}
    test = data.split("test")
    want = dict(zip(raw["test"]["question_id"], raw["test"]["ood_sets"], strict=True))
    for qid, sets in zip(test.question_ids.tolist(), test.ood_sets, strict=True):
        assert sets == want[qid]
    for qid_file in (vqavs_bench.root / "OOD-Test" / "KW+KO").glob("*Ques.json"):
        ids = {q["question_id"] for q in json.loads(qid_file.read_text())}
        assert ids == {q for q, s in want.items() if "KW+KO" in s}


def test_unseen_question_type_gets_the_global_prior(vqacp_bench: Bench, tmp_path: Path) -> None:
    root = tmp_path / "bench"
    shutil.copytree(vqacp_bench.root, root, ignore=shutil.ignore_patterns("cache"))
    path = root / "vqacp_v2_test_annotations.json"
    anns = json.loads(path.read_text())
    anns[0]["question_type"] = "why is the"
    path.write_text(json.dumps(anns))
    config = vqacp_bench.config.model_copy(
        update={"root": root, "features": root / "features.h5", "cache_dir": root / "cache"}
    )
    prepare(config)
    data = load_cache(root / "cache")
    split = data.split("test_full")
    row = int(np.flatnonzero(split.question_ids == anns[0]["question_id"])[0])
    assert split.type_ids[row] == len(data.question_types)
    batch = data.make_batch(split, np.array([row]))
    np.testing.assert_array_equal(batch.prior[0].numpy(), data.prior[-1])


def test_prepare_twice_does_nothing_and_changes_rebuild(tmp_path: Path) -> None:
    bench = make_bench(tmp_path / "bench", questions=400, images=200, feature_dim=8)
    config = bench.config.model_copy(update={"min_answer_count": 1})
    assert prepare(config).written
    manifest = bench.config.resolved().cache_dir / "manifest.json"
    stamp = manifest.stat().st_mtime_ns
    assert not prepare(config).written
    assert manifest.stat().st_mtime_ns == stamp
    # A new mtime with the same bytes is still up to date (hashes decide).
    ann = bench.root / "vqacp_v2_train_annotations.json"
    os.utime(ann, ns=(stamp + 10**9, stamp + 10**9))
    assert cache_is_current(config) and not prepare(config).written
    # Changed content or a changed config rebuilds.
    anns = json.loads(ann.read_text())
    anns[0]["answers"][0]["answer"] = "purple"
    ann.write_text(json.dumps(anns))
    assert not cache_is_current(config)
    assert prepare(config).written
    assert prepare(config.model_copy(update={"selection_seed": 5})).written


def test_batch_assembly(vqacp_bench: Bench) -> None:
    data = vqacp_bench.data
    split = data.split("train")
    rows = np.array([5, 0, 5, 17])
    batch = data.make_batch(split, rows)
    width = int(split.lengths[rows].max())
    assert batch.input_ids.shape == (4, width)
    assert batch.attention_mask.sum(1).tolist() == split.lengths[rows].tolist()
    assert batch.visual_feats.shape == (4, 36, data.store.feature_dim)
    assert batch.visual_pos.shape == (4, 36, 4)
    store_rows = data.store.rows(split.image_ids[rows])
    np.testing.assert_array_equal(batch.visual_feats.numpy(), data.store.features[store_rows])
    np.testing.assert_array_equal(batch.targets.numpy(),
                                  split.targets.dense(rows, data.num_answers))  # fmt: skip
    np.testing.assert_array_equal(batch.prior.numpy(), data.prior[split.type_ids[rows]])
    # The [CLS] ... [SEP] tokens decode back to the question.
    tokenizer_dir = data.tokenizer_dir
    from vqa.tokenize import load_tokenizer

    tok = load_tokenizer(tokenizer_dir)
    table = pq.read_table(data.dir / "questions" / "train.parquet", columns=["question"])
    text = tok.decode(batch.input_ids[1][: split.lengths[0]].tolist(), skip_special_tokens=True)
    assert text.replace(" ?", "?") == table.column("question")[0].as_py()


@pytest.mark.parametrize("name", ["nope"])
def test_unknown_split_is_an_input_error(vqacp_bench: Bench, name: str) -> None:
    from vqa.errors import InputError

    with pytest.raises(InputError, match="no split 'nope'"):
        vqacp_bench.data.split(name)


_BUILD = """
import json, sys
from vqa.tokenize import build_wordpiece
questions = [f"is the {c} {s} left of the {s2}?" for c in ("red", "blue", "green")
             for s in ("cube", "ball", "cone") for s2 in ("cube", "ball")] * 3
print(json.dumps(build_wordpiece(questions, int(sys.argv[1])).get_vocab(), sort_keys=True))
"""


def test_the_built_tokenizer_is_the_same_in_every_process() -> None:
    """Tokens and ids do not depend on the process (tokenizers' own WordPiece trainer broke ties
    by a per-process hash seed); words enter by frequency up to vocab_size, and no seen word is
    unknown."""
    import subprocess
    import sys

    runs = [subprocess.run([sys.executable, "-c", _BUILD, "100"], capture_output=True, text=True,
                           check=True).stdout for _ in range(3)]  # fmt: skip
    assert runs[0] == runs[1] == runs[2]
    vocab = json.loads(runs[0])
    assert [vocab[t] for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")] == [0, 1, 2, 3, 4]
    assert {"the", "cube", "red", "left", "##e"} <= set(vocab)
    capped = json.loads(subprocess.run([sys.executable, "-c", _BUILD, "40"], capture_output=True,
                                       text=True, check=True).stdout)  # fmt: skip
    assert len(capped) == 40 and "the" in capped and "green" not in capped, sorted(capped)
