"""The prior-only baseline and the data report printed by `tickets data report` and the demo."""

from __future__ import annotations

from collections import Counter

from vqa.cache import PreparedData, SplitData
from vqa.metric import evaluate, normalize_answer


def prior_only_answers(data: PreparedData) -> tuple[dict[str, str], str]:
    """Most frequent training answer (normalised multiple-choice answer) of each question type,
    and the most frequent overall, which stands in for question types unseen in training."""
    import pyarrow.parquet as pq

    table = pq.read_table(
        data.dir / "questions" / "train.parquet",
        columns=["question_type", "multiple_choice_answer"],
    )
    by_type: dict[str, Counter] = {}
    overall: Counter = Counter()
    for qtype, mc in zip(
        table.column("question_type").to_pylist(),
        table.column("multiple_choice_answer").to_pylist(),
        strict=True,
    ):
        answer = normalize_answer(mc)
        by_type.setdefault(qtype, Counter())[answer] += 1
        overall[answer] += 1
    # Ties go to the alphabetically first answer, so the baseline is deterministic.
    best = {t: min(c.items(), key=lambda kv: (-kv[1], kv[0]))[0] for t, c in by_type.items()}
    return best, min(overall.items(), key=lambda kv: (-kv[1], kv[0]))[0]


def evaluate_predictions(data: PreparedData, split: SplitData, predictions: list[str]) -> dict:
    """Percent accuracy of `predictions` on `split` with the cache's scoring."""
    return evaluate(
        predictions,
        split.human_answers,
        split.answer_types,
        scoring=data.config.get("scoring", "vqa"),
        ood_sets=split.ood_sets,
    )


def prior_only_report(data: PreparedData) -> dict[str, dict[str, float]]:
    """Accuracy of the prior-only prediction on every split of the cache."""
    best, fallback = prior_only_answers(data)
    out = {}
    for name in data.split_names:
        split = data.split(name)
        preds = [best.get(t, fallback) for t in split.question_types]
        out[name] = evaluate_predictions(data, split, preds)
    return out


def unk_percent(info: dict, name: str) -> float:
    """Percent of split `name`'s question tokens that are [UNK], from splits.json (a union of
    splits weighs each part by its tokens); NaN for a cache that did not record it."""
    shares, tokens = info.get("unk_share", {}), info.get("question_tokens", {})
    parts = info.get("unions", {}).get(name, [name])
    total = sum(tokens.get(p, 0) for p in parts)
    if not total or any(p not in shares for p in parts):
        return float("nan")
    return 100.0 * sum(shares[p] * tokens[p] for p in parts) / total


def format_report(data: PreparedData) -> str:
    """A plain-text report of the cache: sizes, vocabulary, answer types, [UNK] share of the
    question tokens, prior-only accuracy."""
    info = data.splits_info
    lines = [
        f"cache            {data.dir}",
        f"dataset          {info['dataset']}",
        f"answers          {data.num_answers} (answers of >= {data.config['min_answer_count']} "
        "training questions)",
        f"question types   {len(data.question_types)}",
        f"features         {len(data.store)} images x {data.store.num_boxes} boxes x "
        f"{data.store.feature_dim}",
        f"selection split  {info['selection']}",
        "",
        f"{'split':<10} {'questions':>9} {'yes/no':>7} {'number':>7} {'other':>7} {'[UNK] %':>8}",
    ]
    for name in data.split_names:
        split = data.split(name)
        counts = Counter(split.answer_types)
        lines.append(
            f"{name:<10} {len(split):>9} {counts['yes/no']:>7} {counts['number']:>7} "
            f"{counts['other']:>7} {unk_percent(info, name):>8.1f}"
        )
    report = prior_only_report(data)
    keys = ["overall", "yes_no", "number", "other"]
    if info["dataset"] == "vqavs":
        keys += ["ood_mean", "ood_language", "ood_visual", "ood_cross"]
    lines += ["", "prior-only baseline (most frequent training answer of the question type), %"]
    lines.append(f"{'split':<10} " + " ".join(f"{k:>12}" for k in keys))
    for name, metrics in report.items():
        lines.append(
            f"{name:<10} " + " ".join(f"{metrics.get(k, float('nan')):>12.1f}" for k in keys)
        )
    return "\n".join(lines)


def anti_prior_accuracy(data: PreparedData, split_name: str = "test") -> float:
    """Percent accuracy of the best question-only guess that avoids the training prior: per
    question type, the one answer other than its training-dominant answer that scores highest on
    `split_name` (chosen with the answers in hand, so no fixed per-type guess does better).
    Question types are the synthetic benchmark's (`vqa.synth.QUESTION_TYPES`)."""
    from vqa.synth import QUESTION_TYPES

    split = data.split(split_name)
    dominant, _ = prior_only_answers(data)
    types = list(split.question_types)
    if not {q[0] for q in QUESTION_TYPES} & set(types):
        raise ValueError(f"split {split_name}: none of its question types is a synthetic one")
    total = 0.0
    for qtype, _, answers, _, _ in QUESTION_TYPES:
        if qtype not in types:
            continue
        total += max(  # each type's share of the overall accuracy
            evaluate_predictions(data, split, [a if t == qtype else "" for t in types])["overall"]
            for a in answers
            if a != dominant.get(qtype)
        )
    return total
