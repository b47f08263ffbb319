"""Question tokenisation: LXMERT's WordPiece tokenizer from a local directory, or one built from
the training questions for the small demo/test models. Never downloaded."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from vqa.errors import InputError

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def build_wordpiece(questions: Iterable[str], vocab_size: int, lowercase: bool = True):
    """A BERT-style WordPiece tokenizer (`transformers` fast tokenizer) trained on `questions`."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from tokenizers.trainers import WordPieceTrainer
    from transformers import BertTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(
        questions,
        WordPieceTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False),
    )
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
