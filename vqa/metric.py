"""VQA accuracy, reproducing the official VQA evaluation tool (vqaEval.py, Antol et al. 2015).

Answer processing and the 10-choose-9 score follow the master branch of GT-Vision-Lab/VQA,
``PythonEvaluationTools/vqaEvaluation/vqaEval.py``: answers are whitespace-cleaned, and only when
the human answers of a question are not all identical are the human answers and the prediction
put through punctuation and digit/article processing. ``vqavs_accuracy`` is the score of VQA-VS's
own evaluation script (min(1, k/3), exact string matching, no leave-one-out; facts and sources in
its docstring), and ``evaluate`` aggregates per-question scores into percent accuracies, including
the nine VQA-VS OOD test sets and their groups.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence

__all__ = [
    "OOD_GROUPS",
    "OOD_SETS",
    "answer_score",
    "evaluate",
    "normalize_answer",
    "vqa_accuracy",
    "vqavs_accuracy",
]

# --- Tables of the official tool, kept verbatim as data (including its oddities, e.g. the
# capitalised keys that can never match after lower-casing, or "somebody'd" -> "somebodyd"),
# because any deviation changes scores. ---

_CONTRACTIONS: dict[str, str] = {
    "aint": "ain't",
    "arent": "aren't",
    "cant": "can't",
    "couldve": "could've",
    "couldnt": "couldn't",
    "couldn'tve": "couldn't've",
    "couldnt've": "couldn't've",
    "didnt": "didn't",
    "doesnt": "doesn't",
    "dont": "don't",
    "hadnt": "hadn't",
    "hadnt've": "hadn't've",
    "hadn'tve": "hadn't've",
    "hasnt": "hasn't",
    "havent": "haven't",
    "hed": "he'd",
    "hed've": "he'd've",
    "he'dve": "he'd've",
    "hes": "he's",
    "howd": "how'd",
    "howll": "how'll",
    "hows": "how's",
    "Id've": "I'd've",
    "I'dve": "I'd've",
    "Im": "I'm",
    "Ive": "I've",
    "isnt": "isn't",
    "itd": "it'd",
    "itd've": "it'd've",
    "it'dve": "it'd've",
    "itll": "it'll",
    "let's": "let's",
    "maam": "ma'am",
    "mightnt": "mightn't",
    "mightnt've": "mightn't've",
    "mightn'tve": "mightn't've",
    "mightve": "might've",
    "mustnt": "mustn't",
    "mustve": "must've",
    "neednt": "needn't",
    "notve": "not've",
    "oclock": "o'clock",
    "oughtnt": "oughtn't",
    "ow's'at": "'ow's'at",
    "'ows'at": "'ow's'at",
    "'ow'sat": "'ow's'at",
    "shant": "shan't",
    "shed've": "she'd've",
    "she'dve": "she'd've",
    "she's": "she's",
    "shouldve": "should've",
    "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've",
    "shouldn'tve": "shouldn't've",
    "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've",
    "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll",
    "somebodys": "somebody's",
    "someoned": "someone'd",
    "someoned've": "someone'd've",
    "someone'dve": "someone'd've",
    "someonell": "someone'll",
    "someones": "someone's",
    "somethingd": "something'd",
    "somethingd've": "something'd've",
    "something'dve": "something'd've",
    "somethingll": "something'll",
    "thats": "that's",
    "thered": "there'd",
    "thered've": "there'd've",
    "there'dve": "there'd've",
    "therere": "there're",
    "theres": "there's",
    "theyd": "they'd",
    "theyd've": "they'd've",
    "they'dve": "they'd've",
    "theyll": "they'll",
    "theyre": "they're",
    "theyve": "they've",
    "twas": "'twas",
    "wasnt": "wasn't",
    "wed've": "we'd've",
    "we'dve": "we'd've",
    "weve": "we've",
    "werent": "weren't",
    "whatll": "what'll",
    "whatre": "what're",
    "whats": "what's",
    "whatve": "what've",
    "whens": "when's",
    "whered": "where'd",
    "wheres": "where's",
    "whereve": "where've",
    "whod": "who'd",
    "whod've": "who'd've",
    "who'dve": "who'd've",
    "wholl": "who'll",
    "whos": "who's",
    "whove": "who've",
    "whyll": "why'll",
    "whyre": "why're",
    "whys": "why's",
    "wont": "won't",
    "wouldve": "would've",
    "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've",
    "wouldn'tve": "wouldn't've",
    "yall": "y'all",
    "yall'll": "y'all'll",
    "y'allll": "y'all'll",
    "yall'd've": "y'all'd've",
    "y'alld've": "y'all'd've",
    "y'all'dve": "y'all'd've",
    "youd": "you'd",
    "youd've": "you'd've",
    "you'dve": "you'd've",
    "youll": "you'll",
    "youre": "you're",
    "youve": "you've",
}

# The official manualMap also maps "none" to "0".
_NUMBER_WORDS: dict[str, str] = {
    "none": "0",
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
}

_ARTICLES: frozenset[str] = frozenset({"a", "an", "the"})

# The period is handled separately (below); ':' and "'" are deliberately absent, as in the
# official list, so "10:30" and "won't" survive.
_PUNCTUATION: tuple[str, ...] = (
    ";",
    "/",
    "[",
    "]",
    '"',
    "{",
    "}",
    "(",
    ")",
    "=",
    "+",
    "\\",
    "_",
    "-",
    ">",
    "<",
    "@",
    "`",
    ",",
    "?",
    "!",
)

# A comma between two digits anywhere in the answer makes every punctuation mark vanish
# instead of becoming a space (official rule), which turns "1,000" into "1000".
_DIGIT_COMMA_DIGIT = re.compile(r"\d,\d")

# The official pattern "(?!<=\d)(\.)(?!\d)" has a mistyped look-behind that is really a look-ahead
# which always succeeds, so it removes every period not followed by a digit; written plainly here.
_PERIOD_NOT_BEFORE_DIGIT = re.compile(r"\.(?!\d)")

# The official call is periodStrip.sub("", text, re.UNICODE): re.UNICODE (32) lands in the
# `count` slot, so at most 32 periods are removed. Kept for bit-for-bit agreement.
_OFFICIAL_PERIOD_COUNT = 32

_CACHE_SIZE = 1 << 20

OOD_SETS: tuple[str, ...] = ("QT", "KW", "KWP", "QT+KW", "KO", "KOP", "QT+KO", "KW+KO", "QT+KW+KO")
OOD_GROUPS: dict[str, tuple[str, ...]] = {
    "language": ("QT", "KW", "KWP", "QT+KW"),
    "visual": ("KO", "KOP"),
    "cross": ("QT+KO", "KW+KO", "QT+KW+KO"),
}

_ANSWER_TYPE_KEYS: dict[str, str] = {"yes/no": "yes_no", "number": "number", "other": "other"}


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _clean_whitespace(text: str) -> str:
    """Replace newlines and tabs by spaces and strip (the only step applied to every answer)."""
    return text.replace("\n", " ").replace("\t", " ").strip()


def _process_punctuation(text: str) -> str:
    """Official processPunctuation."""
    out = text
    # Both conditions look at the input, not at the partly processed output, as officially.
    has_digit_comma = _DIGIT_COMMA_DIGIT.search(text) is not None
    for mark in _PUNCTUATION:
        if has_digit_comma or mark + " " in text or " " + mark in text:
            out = out.replace(mark, "")
        else:
            out = out.replace(mark, " ")
    return _PERIOD_NOT_BEFORE_DIGIT.sub("", out, count=_OFFICIAL_PERIOD_COUNT)


def _process_digit_article(text: str) -> str:
    """Official processDigitArticle: lower-case, number words to digits, drop articles, fix
    contractions; also collapses runs of spaces since it splits on whitespace."""
    words: list[str] = []
    for word in text.lower().split():
        word = _NUMBER_WORDS.get(word, word)
        if word not in _ARTICLES:
            words.append(_CONTRACTIONS.get(word, word))
    return " ".join(words)


@functools.lru_cache(maxsize=_CACHE_SIZE)
def normalize_answer(text: str) -> str:
    """Return ``text`` after the official answer processing.

    Newlines/tabs become spaces and the ends are stripped, then punctuation processing, then
    digit/article processing (lower-casing, number words zero..ten and "none" to digits, articles
    a/an/the dropped, contractions such as "dont" -> "don't").
    """
    return _process_digit_article(_process_punctuation(_clean_whitespace(text)))


def _prepare(prediction: str, answers: Sequence[str]) -> tuple[str, list[str]]:
    """Apply the official rule on what gets normalised; return (prediction, human answers)."""
    if len(answers) == 0:
        raise ValueError("answers must contain at least one human answer")
    humans = [_clean_whitespace(a) for a in answers]
    # Officially, unanimous annotators make the comparison exact (after whitespace cleaning only),
    # so "2" does not match ten humans who all wrote "Two".
    if len(set(humans)) > 1:
        return normalize_answer(prediction), [normalize_answer(a) for a in humans]
    return _clean_whitespace(prediction), humans


def vqa_accuracy(prediction: str, answers: list[str]) -> float:
    """Official VQA accuracy in [0, 1] of ``prediction`` against the human ``answers``.

    For each human answer, the prediction scores min(1, m/3) where m is the number of matching
    answers among the others; the result is the mean over all leave-one-out subsets (the
    10-choose-9 average for 10 answers). With fewer than 4 answers the maximum is below 1, and with
    a single answer the score is always 0. Raises ValueError if ``answers`` is empty.
    """
    pred, humans = _prepare(prediction, answers)
    matches = sum(1 for a in humans if a == pred)
    # Summed per left-out answer, in order, so the float result equals the official tool's.
    total = 0.0
    for a in humans:
        total += min(1.0, (matches - (a == pred)) / 3)
    return total / len(humans)


def vqavs_accuracy(prediction: str, answers: list[str]) -> float:
    """VQA-VS accuracy in [0, 1]: min(1, k/3), k the number of ``answers`` equal to ``prediction``.

    As VQA-VS's own evaluation script scores, read in the authors' public code: ``get_scores`` in
    ``new_comput_score.py`` (and the older ``comput_score.py``) of github.com/PhoebusSi/VQA-VS, the
    same function as ``comput_vqavs_score.py`` of github.com/PhoebusSi/Compress-Robust-VQA (the
    code of the paper this project follows, which scores its VQA-VS test predictions with it):

    - k is the question's ``answer_count`` entry for the predicted answer string, i.e. how many
      of its human answers are that string (``compute_target_for_testing`` in
      ``Baseline_code/preprocess_text.py`` counts the raw ``answer`` fields of the annotation,
      all ten of them); a prediction no human gave scores 0.
    - the score is min(1, k/3): 1/3, 2/3, 1 for k = 1, 2, >= 3. No leave-one-out (the official
      VQA tool's 10-choose-9 average gives 0.3, 0.6, 0.9, 1 for k = 1, 2, 3, >= 4).
    - matching is exact string equality (case, whitespace and punctuation included): the script
      normalises neither the prediction nor the human answers (the VQA-style normalisation in
      ``preprocess_text.py`` is applied only to the training multiple-choice answers that make
      the answer vocabulary, which the prediction is drawn from).
    - the script also counts only human answers that are in its answer vocabulary
      (``answers_word``); a prediction of a model over that vocabulary always is, so this function,
      which does not know the vocabulary, does not check it.
    - a split's score is the mean over its questions (the script rounds each split's percentage to
      two decimals and takes OOD-mean over the rounded per-set values; :func:`evaluate` does not
      round).

    Raises ValueError if ``answers`` is empty.
    """
    if len(answers) == 0:
        raise ValueError("answers must contain at least one human answer")
    matches = sum(1 for a in answers if a == prediction)
    return min(1.0, matches / 3)


_SCORERS: dict[str, Callable[[str, list[str]], float]] = {
    "vqa": vqa_accuracy,
    "vqavs": vqavs_accuracy,
}


def _scorer(scoring: str) -> Callable[[str, list[str]], float]:
    try:
        return _SCORERS[scoring]
    except KeyError:
        raise ValueError(
            f"unknown scoring {scoring!r}; expected one of {sorted(_SCORERS)}"
        ) from None


def answer_score(prediction: str, answers: list[str], scoring: str = "vqa") -> float:
    """Score in [0, 1] with ``scoring`` "vqa" (:func:`vqa_accuracy`) or "vqavs"
    (:func:`vqavs_accuracy`); any other value raises ValueError."""
    return _scorer(scoring)(prediction, answers)


def _percent(values: list[float]) -> float:
    return 100.0 * sum(values) / len(values)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def evaluate(
    predictions: Sequence[str],
    answers: Sequence[Sequence[str]],
    answer_types: Sequence[str],
    scoring: str = "vqa",
    ood_sets: Sequence[Sequence[str]] | None = None,
) -> dict[str, float]:
    """Percent accuracies (0..100, unrounded) of ``predictions`` over a list of questions.

    Keys: ``overall``; ``yes_no``, ``number``, ``other`` for the answer types "yes/no", "number",
    "other" that occur; ``count`` (number of questions). With ``ood_sets`` (for each question the
    VQA-VS OOD set names it belongs to, possibly none) also ``ood_<S>`` for each set S of
    :data:`OOD_SETS` that has questions, ``ood_language``/``ood_visual``/``ood_cross`` (unweighted
    mean of the accuracies of the group's sets) and ``ood_mean`` (unweighted mean over the sets).
    A set without questions gets no key and is left out of the group and overall means; a group
    (or ``ood_mean``) with no set present gets no key.

    Raises ValueError for mismatched lengths, no questions, an unknown scoring, answer type or OOD
    set name, or a question without human answers.
    """
    score = _scorer(scoring)
    n = len(predictions)
    if n == 0:
        raise ValueError("no questions to evaluate")
    lengths = {"answers": len(answers), "answer_types": len(answer_types)}
    if ood_sets is not None:
        lengths["ood_sets"] = len(ood_sets)
    for name, length in lengths.items():
        if length != n:
            raise ValueError(f"{name} has {length} entries but predictions has {n}")

    scores = [score(p, list(a)) for p, a in zip(predictions, answers, strict=True)]

    by_type: dict[str, list[float]] = {}
    for answer_type, s in zip(answer_types, scores, strict=True):
        key = _ANSWER_TYPE_KEYS.get(answer_type)
        if key is None:
            raise ValueError(
                f"unknown answer type {answer_type!r}; expected one of {sorted(_ANSWER_TYPE_KEYS)}"
            )
        by_type.setdefault(key, []).append(s)

    result: dict[str, float] = {"overall": _percent(scores)}
    for key in ("yes_no", "number", "other"):
        if key in by_type:
            result[key] = _percent(by_type[key])
    result["count"] = float(n)

    if ood_sets is None:
        return result

    by_set: dict[str, list[float]] = {name: [] for name in OOD_SETS}
    for names, s in zip(ood_sets, scores, strict=True):
        # A name listed twice for one question must not count that question twice.
        for name in dict.fromkeys(names):
            if name not in by_set:
                raise ValueError(f"unknown OOD set {name!r}; expected one of {list(OOD_SETS)}")
            by_set[name].append(s)

    set_acc = {name: _percent(vals) for name, vals in by_set.items() if vals}
    for name in OOD_SETS:
        if name in set_acc:
            result[f"ood_{name}"] = set_acc[name]
    for group, members in OOD_GROUPS.items():
        present = [set_acc[m] for m in members if m in set_acc]
        if present:
            result[f"ood_{group}"] = _mean(present)
    if set_acc:
        result["ood_mean"] = _mean([set_acc[name] for name in OOD_SETS if name in set_acc])
    return result
