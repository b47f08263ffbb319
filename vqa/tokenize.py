"""Question tokenisation: LXMERT's WordPiece tokenizer from a local directory, or one built from
the training questions for the small demo/test models. Never downloaded."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from vqa.errors import InputError

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def build_wordpiece(questions: Iterable[str], vocab_size: int, lowercase: bool = True):
    """A BERT-style WordPiece tokenizer (`transformers` fast tokenizer) over `questions`: the
    special tokens, every character seen (alone and as a ``##`` continuation, so any word of
    seen characters can be spelled; these always go in), then whole words by falling frequency
    (ties by spelling) while the vocabulary is under `vocab_size`.

    Built here, not by `tokenizers`' WordPieceTrainer: the trainer breaks ties between equally
    frequent merges by hash order, which Rust seeds per process, so the same questions gave a
    different vocabulary (tokens and ids) in every process, and so a different model."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import BertTokenizerFast

    normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    counts: Counter[str] = Counter()
    for question in questions:
        words = pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(question))
        counts.update(word for word, _ in words)
    chars = sorted({c for word in counts for c in word})
    vocab = SPECIAL_TOKENS + chars + [f"##{c}" for c in chars]
    by_frequency = sorted((w for w in counts if len(w) > 1), key=lambda w: (-counts[w], w))
    vocab += by_frequency[: max(vocab_size - len(vocab), 0)]
    tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))],
    )
    tok.decoder = decoders.WordPiece()
    return BertTokenizerFast(tokenizer_object=tok, do_lower_case=lowercase)


def load_tokenizer(path: str | os.PathLike[str]):
    """The tokenizer saved in a local directory (a checkpoint or a data cache); no hub access."""
    from transformers import AutoTokenizer

    path = Path(path)
    if not path.is_dir():
        raise InputError(f"{path}: tokenizer directory not found")
    if not any((path / f).is_file() for f in ("tokenizer.json", "vocab.txt")):
        raise InputError(f"{path}: no tokenizer.json or vocab.txt in the tokenizer directory")
    try:
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: cannot load tokenizer ({str(e).splitlines()[0]})") from None


def encode(tokenizer, questions: Sequence[str], max_length: int) -> list[np.ndarray]:
    """Token ids ([CLS] ... [SEP], truncated to `max_length`) of each question, int32, unpadded."""
    ids = tokenizer(list(questions), truncation=True, max_length=max_length)["input_ids"]
    return [np.asarray(x, dtype=np.int32) for x in ids]


def unknown_tokens(tokenizer, ids: Sequence[np.ndarray]) -> tuple[int, int]:
    """([UNK] tokens, question tokens) over the encoded questions `ids`; the other special
    tokens ([CLS], [SEP], [PAD]) are not question tokens and are not counted."""
    unk = tokenizer.unk_token_id
    special = np.array(sorted(set(tokenizer.all_special_ids) - {unk}), dtype=np.int64)
    flat = np.concatenate(ids) if len(ids) else np.zeros(0, dtype=np.int32)
    words = flat[~np.isin(flat, special)]
    return (int((words == unk).sum()) if unk is not None else 0), int(words.size)
