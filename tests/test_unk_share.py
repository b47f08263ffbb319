"""The [UNK] share of the tokenised questions: reported by `tickets data prepare` and `tickets
data report`, recorded in splits.json, and a tokenizer that leaves most training tokens unknown
is refused. Both commands run as the installed `tickets` in a fresh process."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import yaml
from transformers import BertTokenizer

from tests.test_cli_errors import nothing_written, one_error_line, setup, tickets
from tests.tiny import QTYPES
from vqa.tokenize import SPECIAL_TOKENS


def pretrained_tokenizer(out: Path, words: list[str]) -> Path:
    """A local uncased WordPiece tokenizer directory knowing only `words` (and the specials)."""
    vocab = {w: i for i, w in enumerate(SPECIAL_TOKENS + words)}
    BertTokenizer(vocab=vocab, do_lower_case=True).save_pretrained(out)
    return out


def use_tokenizer(cfg: Path, path: Path) -> None:
    raw = yaml.safe_load(cfg.read_text())
    raw["data"]["tokenizer"] = {"kind": "pretrained", "path": str(path)}
    cfg.write_text(yaml.safe_dump(raw, sort_keys=False))


def question_words(i: int) -> int:
    """Tokens of tests.tiny's question i, "<type> thing number <i>?"."""
    return len(QTYPES[i % len(QTYPES)][0].split()) + 4


def expected_share(n: int) -> float:
    """[UNK] share of questions 0..n-1 when every word but the number is in the vocabulary."""
    return n / sum(question_words(i) for i in range(n))


def test_prepare_and_report_give_the_unk_share(tmp_path: Path) -> None:
    cfg = setup(tmp_path)
    words = sorted({w for qtype, _ in QTYPES for w in qtype.split()} | {"thing", "number", "?"})
    use_tokenizer(cfg, pretrained_tokenizer(tmp_path / "tok", words))

    run = tickets("data", "prepare", cfg)
    assert run.returncode == 0, run.stderr
    splits = json.loads((tmp_path / "cache" / "splits.json").read_text())
    # setup's 40 test questions (ids 2000.., same phrasing) split by image into dev and test.
    train = expected_share(40)
    assert abs(splits["unk_share"]["train"] - train) < 1e-12
    assert splits["question_tokens"]["train"] == round(40 / train)
    assert set(splits["unk_share"]) == {"train", "dev", "test"}
    for name in ("dev", "test"):
        ids = pd.read_parquet(tmp_path / "cache" / "questions" / f"{name}.parquet")["question_id"]
        expected = len(ids) / sum(question_words(qid - 2000) for qid in ids)
        assert abs(splits["unk_share"][name] - expected) < 1e-12, name
    assert f"[UNK] share of question tokens: train {train:.1%}, " in run.stdout

    again = tickets("data", "prepare", cfg)  # up to date: the recorded shares are shown
    assert "up to date" in again.stdout and f"train {train:.1%}" in again.stdout

    report = tickets("data", "report", cfg)
    assert report.returncode == 0, report.stderr
    lines = report.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("split "))
    assert lines[start].split()[-2:] == ["[UNK]", "%"]
    table = lines[start + 1 : lines.index("", start)]  # the sizes table, up to its blank line
    rows = {line.split()[0]: line.split() for line in table}
    assert rows["train"][5] == f"{100 * train:.1f}"
    # test_full is dev + test, weighed by tokens: the same phrasing gives test's 40 questions.
    assert rows["test_full"][5] == f"{100 * expected_share(40):.1f}"


def test_a_tokenizer_that_does_not_fit_the_questions_is_refused(tmp_path: Path) -> None:
    cfg = setup(tmp_path)
    tok = pretrained_tokenizer(tmp_path / "tok", ["?", "the"])  # 2 of 6 to 8 tokens known
    use_tokenizer(cfg, tok)
    run = tickets("data", "prepare", cfg)
    assert run.returncode == 2, run.stderr
    line = one_error_line(run.stderr, f"{tok} (data.tokenizer.path): ", "tokens are [UNK]")
    assert "at most 50% allowed" in line
    # Per question only "the" (if its type has it) and "?" are known.
    unknown = tokens = 0
    for i in range(40):
        words = QTYPES[i % len(QTYPES)][0].split() + ["thing", "number", str(i), "?"]
        unknown += sum(w not in ("the", "?") for w in words)
        tokens += len(words)
    assert f": {unknown / tokens:.1%} of the training questions' tokens are [UNK]" in line
    assert run.stdout == ""
    nothing_written(tmp_path)
