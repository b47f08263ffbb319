"""The synthetic benchmark: VQA-CP v2 or VQA-VS files with a planted, measurable bias.

Generative story. There are 8 question types (all three answer types), each with its own answers,
keywords and a location phrase ("what color is the car on the left?"). Every image has one slot
per question type holding an answer; a slot's answer is written into `answer_boxes` of the image's
boxes as code(type) + code(type, answer) + noise, so answers are recoverable only by finding the
box of the asked type. Each image also shows two key objects (their own boxes); the other boxes are
background. A question asks about one slot of one image (a slot is asked at most once), so its
answer can be drawn from whatever distribution the split needs:

* VQA-CP v2: train puts `bias` of each type's answers on one dominant answer; test spreads that
  share evenly over the type's other answers (`test_answers="spread"`, the default: a model that
  merely avoids the training prior is at chance there) or puts it on one other answer ("one",
  VQA-CP's inverted prior in its plainest form, which rewards guessing against the prior). With
  `train_prior="longtail"` train splits `bias` over every answer of the type with shares halving
  down a random order and test splits it down the reverse order (long-tailed priors that change
  between the splits, as VQA-CP's do). The balanced `pretrain` split draws answers uniformly.
* VQA-VS: five shortcut families (question type QT, keyword KW, keyword pair KWP = keyword +
  location, key object KO, key-object pair KOP) each map their value to a dominant answer. With
  probability `bias` an answer follows one family's dominant answer (QT chosen with weight
  `QT_WEIGHT`), else it is uniform. Train, val and the IID test share that distribution; an OOD
  set S holds the IID test questions whose answer differs from the dominant answer of every
  shortcut named in S ("QT+KW": both broken).

Ten human answers per question: each annotator gives the true answer with the question's agreement
probability (uniform in [`agreement`, 1]), sometimes in another surface form ("two", "Yes", "the
red"), else another answer of the same type. Difficulty knobs: `answer_boxes`, `noise`,
`answer_strength`, `nuisance`, `feature_mixing`, `yesno`, `bias`; docs/CALIBRATION.md records
how the defaults were chosen.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import yaml

from vqa.atomic import atomic_dir
from vqa.errors import InputError
from vqa.features import write_feature_store
from vqa.readers import VQAVS_OOD_SETS, vqacp_files, vqavs_files, vqavs_ood_files

# (question type, answer type, answers, keywords, template); {kw} and {loc} are filled per question.
QUESTION_TYPES: tuple[tuple[str, str, tuple[str, ...], tuple[str, ...], str], ...] = (
    (
        "what color is the",
        "other",
        ("red", "blue", "green", "yellow", "white", "black"),
        ("car", "shirt", "bus", "kite", "umbrella", "wall"),
        "what color is the {kw} {loc}?",
    ),
    (
        "what animal is",
        "other",
        ("dog", "cat", "horse", "cow", "sheep", "bird"),
        ("field", "picture", "grass", "water", "street", "yard"),
        "what animal is in the {kw} {loc}?",
    ),
    (
        "what is the man holding",
        "other",
        ("frisbee", "phone", "kite string", "bat", "racket", "cup"),
        ("park", "photo", "snow", "beach", "court", "crowd"),
        "what is the man holding in the {kw} {loc}?",
    ),
    (
        "what room is",
        "other",
        ("kitchen", "bathroom", "bedroom", "living room", "office", "garage"),
        ("photo", "image", "house", "apartment", "hotel", "scene"),
        "what room is shown in the {kw} {loc}?",
    ),
    (
        "how many",
        "number",
        ("1", "2", "3", "4", "5", "6"),
        ("people", "dogs", "cars", "birds", "chairs", "windows"),
        "how many {kw} are there {loc}?",
    ),
    (
        "what number is",
        "number",
        ("7", "8", "9", "10", "11", "12"),
        ("bus", "train", "shirt", "clock", "sign", "jersey"),
        "what number is on the {kw} {loc}?",
    ),
    (
        "is the",
        "yes/no",
        ("yes", "no"),
        ("light", "tv", "door", "window", "oven", "laptop"),
        "is the {kw} {loc} on?",
    ),
    (
        "are there",
        "yes/no",
        ("yes", "no"),
        ("clouds", "trees", "people", "cars", "signs", "boats"),
        "are there {kw} {loc}?",
    ),
)
LOCATIONS = ("on the left", "on the right", "in the front", "in the back")
KEY_OBJECTS = ("person", "car", "tree", "table", "dog", "sky", "building", "plate")
NUMBER_WORDS = {
    "1": "one",
    "2": "two",
    "3": "three",
    "4": "four",
    "5": "five",
    "6": "six",
    "7": "seven",
    "8": "eight",
    "9": "nine",
    "10": "ten",
}
SHORTCUTS = ("QT", "KW", "KWP", "KO", "KOP")
QT_WEIGHT = 0.5  # share of biased VQA-VS answers driven by the question type; the rest split evenly
NUM_BACKGROUND_CODES = 16


@dataclass(frozen=True)
class SynthSpec:
    """Size, seed and difficulty of a synthetic benchmark."""

    dataset: str = "vqacp_v2"
    questions: int = 3000  # training questions; other splits are sized relative to this
    images: int = 1200
    feature_dim: int = 64
    num_boxes: int = 36
    seed: int = 0
    answer_boxes: int = 3  # boxes per question type carrying its answer: fewer = harder grounding
    noise: float = 0.5  # std of the Gaussian noise added to every box feature (codes have std 1)
    bias: float = 0.8  # share of a split's answers that follow its shortcut (0 = no bias)
    test_fraction: float = 0.5  # test (and VQA-VS val) questions per training question
    pretrain_fraction: float = 1.0  # balanced pre-training questions per training question
    agreement: float = 0.6  # lowest per-question probability that an annotator gives the answer
    # VQA-CP test: "spread" puts the bias share evenly on every answer but the training-dominant
    # one (a question-only model that avoids the training prior is at chance there); "one" puts
    # it on a single other answer, which rewards guessing against the prior.
    test_answers: str = "spread"
    # VQA-CP training prior per question type. "dominant": `bias` on one answer, the rest
    # uniform, so a question-only prior says only "dominant or not". "longtail": `bias` split
    # over the type's answers in a random order with shares halving down it (VQA-CP's long-tailed
    # per-type priors), and the test split splits it in the reverse order (the answers rarest in
    # training are the commonest in test); needs `test_answers` "spread".
    train_prior: str = "dominant"
    # Question types the balanced `pretrain` split asks: "all", or "half" (every other type, one
    # of each answer type among them), so pre-training teaches grounding without already being
    # the downstream task and stage 1 must learn the other types (LXMERT is pre-trained on
    # other tasks, then fine-tuned).
    pretrain_types: str = "all"
    # Scale of the answer code against the type code (both std 1 per dimension before it): below
    # 1 a box's answer is a faint signal spread over every feature dimension, which only a dense
    # visual projection integrates above the noise (docs/CALIBRATION.md).
    answer_strength: float = 1.0
    # 1: a type's answer boxes hold code(type) + code(answer). 2: they hold code(type) + a link
    # code drawn per image and type, and as many other boxes hold that link + code(answer), the
    # answer codes shared by every type; a question's answer is then found only by relating two
    # boxes, which the visual encoder's self-attention must do before the cross-modal layers can
    # read it (lxmert's object-relationship encoder; docs/CALIBRATION.md).
    answer_hops: int = 1
    # With answer_hops 2: 0 draws a fresh random link code per image and type; n >= 8 draws each
    # image's links from n fixed codes (distinct within the image), fewer directions to learn.
    link_codes: int = 0
    # "dense": a type's answer boxes hold code(type) + code(type, answer) over every dimension.
    # "product": the feature's thirds hold code(type), code(type, answer) * r and r, where the
    # answer code and r are sign vectors and r is drawn afresh per box; either of the last two
    # thirds alone says nothing of the answer, their elementwise product says it exactly, so the
    # visual encoder's feed-forward layer must multiply per box before attention averages boxes
    # (a capacity-hungry job of the visual module's own; docs/CALIBRATION.md).
    answer_code: str = "dense"
    # With answer_code "product": scale of a dense code(type, answer) added over the whole box,
    # readable without the product (0: none). The product alone is not learned by pre-training
    # (docs/CALIBRATION.md); the clue lets attention find the type's boxes first.
    answer_clue: float = 0.0
    # With answer_code "product": appearances per answer. Each answer box shows one of
    # `answer_variants` sign codes of its (type, answer), drawn per box, and its object class is
    # still the answer's: the visual encoder must map 48 x variants appearances onto 48 answers,
    # a many-to-one decoding whose size grows with the variants (region features of a red car,
    # shirt or bus differ; lxmert's detector has 1,600 classes for far fewer answer concepts).
    answer_variants: int = 1
    # Scale of a nuisance shared by every box: each box gets nuisance * g * o, where o is one
    # fixed direction (std 1 per dimension) and the gain g is drawn per box uniformly in [0, 2],
    # as region features share a large, varying activation energy that says nothing of the
    # answer. The idea: a dense visual projection learns to null o and pruning it breaks the
    # cancellation; measured, at 3 pre-training never learns around it (docs/CALIBRATION.md).
    nuisance: float = 0.0
    # Basis of the box features: 0 keeps every code on the coordinate axes (the product code's
    # thirds are coordinates, so a visual projection with a few weights per unit reads them);
    # w > 0 multiplies every feature vector by the orthogonal polar factor of (1 - w) I + w Q,
    # Q one fixed random rotation (1: Q itself), so each coordinate the visual encoder needs is
    # a dense mix of all of them, as in a detector's region features, and a projection that keeps
    # a fraction of its weights reads it with interference from the others. Norms, distances and
    # isotropic noise are unchanged.
    feature_mixing: float = 0.0
    # How a yes/no type's answer boxes give the answer. "read": they show code(type, yes) or
    # code(type, no), a two-way read-out. "verify": they show which of the type's six keywords
    # is there (code(type, keyword)), and the answer is yes exactly when that is the asked
    # keyword, so the model must match the question's keyword against the image, as VQA's
    # yes/no questions check the question against the picture. Questions, answers and every
    # other draw are those of "read".
    yesno: str = "read"

    def asked_type_ids(self, split: str) -> list[int]:
        """Indices into QUESTION_TYPES of the types `split` asks (`pretrain` may ask half)."""
        every = 2 if split == "pretrain" and self.pretrain_types == "half" else 1
        return list(range(0, len(QUESTION_TYPES), every))

    def image_shares(self) -> dict[str, int]:
        """Images each split takes, in split order: in proportion to the slots it needs (a
        pre-training image may hold fewer questions), at least enough for its questions; the
        last split takes the rest. They may add up to more than `images` (check refuses it)."""
        sizes = self.split_sizes()
        n_types = len(QUESTION_TYPES)
        asked = {split: len(self.asked_type_ids(split)) for split in sizes}
        need = {split: n_q * n_types / asked[split] for split, n_q in sizes.items()}
        total = sum(need.values())
        shares: dict[str, int] = {}
        start = 0
        for i, (split, n_q) in enumerate(sizes.items()):
            n_img = (
                self.images - start
                if i == len(sizes) - 1
                else max(1, int(np.ceil(self.images * need[split] / total)))
            )
            shares[split] = max(n_img, int(np.ceil(n_q / asked[split])))
            start += shares[split]
        return shares

    def check(self) -> None:
        """Raise `InputError` naming the first impossible setting."""
        if self.dataset not in ("vqacp_v2", "vqavs"):
            raise InputError(f"--dataset must be vqacp_v2 or vqavs, got '{self.dataset}'")
        for name in ("questions", "images", "feature_dim", "num_boxes", "answer_boxes"):
            if getattr(self, name) < 1:
                raise InputError(f"--{name.replace('_', '-')} must be at least 1")
        if not 0.0 <= self.bias <= 1.0:
            raise InputError(f"--bias must be in [0, 1], got {self.bias}")
        if self.noise < 0:
            raise InputError(f"--noise must be >= 0, got {self.noise}")
        if self.test_answers not in ("spread", "one"):
            raise InputError(f"--test-answers must be spread or one, got '{self.test_answers}'")
        if self.train_prior not in ("dominant", "longtail"):
            raise InputError(
                f"--train-prior must be dominant or longtail, got '{self.train_prior}'"
            )
        if self.yesno not in ("read", "verify"):
            raise InputError(f"--yesno must be read or verify, got '{self.yesno}'")
        if self.train_prior == "longtail" and self.dataset != "vqacp_v2":
            raise InputError("--train-prior longtail is for --dataset vqacp_v2 only")
        if self.train_prior == "longtail" and self.test_answers != "spread":
            raise InputError("--train-prior longtail needs --test-answers spread")
        if self.test_fraction <= 0:
            raise InputError(f"--test-fraction must be > 0, got {self.test_fraction}")
        if self.answer_strength <= 0:
            raise InputError(f"--answer-strength must be > 0, got {self.answer_strength}")
        if self.answer_hops not in (1, 2):
            raise InputError(f"--answer-hops must be 1 or 2, got {self.answer_hops}")
        if self.answer_code not in ("dense", "product"):
            raise InputError(f"--answer-code must be dense or product, got '{self.answer_code}'")
        if self.answer_code == "product" and self.feature_dim % 3:
            raise InputError(
                f"--answer-code product needs --feature-dim divisible by 3, got {self.feature_dim}"
            )
        if self.answer_code == "product" and self.answer_hops != 1:
            raise InputError("--answer-code product needs --answer-hops 1")
        if self.answer_clue < 0:
            raise InputError(f"--answer-clue must be >= 0, got {self.answer_clue}")
        if self.nuisance < 0:
            raise InputError(f"--nuisance must be >= 0, got {self.nuisance}")
        if not 0.0 <= self.feature_mixing <= 1.0:
            raise InputError(f"--feature-mixing must be in [0, 1], got {self.feature_mixing}")
        if self.answer_variants < 1:
            raise InputError(f"--answer-variants must be at least 1, got {self.answer_variants}")
        if self.answer_variants > 1 and self.answer_code != "product":
            raise InputError("--answer-variants needs --answer-code product")
        if self.answer_clue and self.answer_code != "product":
            raise InputError("--answer-clue needs --answer-code product")
        if self.link_codes != 0 and self.link_codes < len(QUESTION_TYPES):
            raise InputError(f"--link-codes must be 0 or at least 8, got {self.link_codes}")
        if self.pretrain_types not in ("all", "half"):
            raise InputError(f"--pretrain-types must be all or half, got '{self.pretrain_types}'")
        if not 0.0 <= self.agreement <= 1.0:
            raise InputError(f"--agreement must be in [0, 1], got {self.agreement}")
        needed = len(QUESTION_TYPES) * self.answer_boxes * self.answer_hops + 2
        if needed > self.num_boxes:
            hops = f" x {self.answer_hops} hops" if self.answer_hops > 1 else ""
            raise InputError(
                f"--answer-boxes {self.answer_boxes} needs {needed} boxes per image "
                f"(8 question types x {self.answer_boxes}{hops} + 2 key objects), "
                f"have {self.num_boxes}"
            )
        sizes = self.split_sizes()
        asked = len(self.asked_type_ids("pretrain"))
        needed_images = sum(n for k, n in sizes.items() if k != "pretrain") / len(QUESTION_TYPES)
        needed_images += sizes.get("pretrain", 0) / asked
        if needed_images > self.images:
            raise InputError(
                f"--images {self.images} are too few: {self.total_questions()} questions need "
                f"{int(np.ceil(needed_images))} (8 per image, {asked} per pre-training image); "
                "raise --images"
            )
        if sum(self.image_shares().values()) > self.images:
            raise InputError(
                f"--images {self.images} are too few for the split sizes {sizes} once each "
                "split has its share of whole images; raise --images"
            )
        if self.questions < 8 * 9:
            raise InputError("--questions must be at least 72 (each answer needs 9 training uses)")

    def split_sizes(self) -> dict[str, int]:
        n_test = max(1, round(self.questions * self.test_fraction))
        sizes = {"train": self.questions, "test": n_test}
        if self.dataset == "vqavs":
            sizes["val"] = n_test
        sizes["pretrain"] = round(self.questions * self.pretrain_fraction)
        return {k: v for k, v in sizes.items() if v > 0}

    def total_questions(self) -> int:
        return sum(self.split_sizes().values())


def _surface(answer: str, rng: np.random.Generator) -> str:
    """Another way an annotator may write `answer` (normalisation maps it back)."""
    r = rng.random()
    if answer in NUMBER_WORDS and r < 0.5:
        return NUMBER_WORDS[answer]
    if answer in ("yes", "no"):
        return ("Yes" if answer == "yes" else "No") if r < 0.5 else answer + "."
    return ("the " + answer) if r < 0.5 else answer.capitalize()


class _World:
    """Random codes and shortcut tables shared by every split of one benchmark."""

    def __init__(self, spec: SynthSpec, rng: np.random.Generator) -> None:
        d = spec.feature_dim
        n_types = len(QUESTION_TYPES)
        self.type_code = rng.standard_normal((n_types, d))
        self.answer_code = rng.standard_normal((n_types, 6, d))
        self.object_code = rng.standard_normal((len(KEY_OBJECTS), d))
        self.background_code = rng.standard_normal((NUM_BACKGROUND_CODES, d))
        self.n_answers = [len(a) for _, _, a, _, _ in QUESTION_TYPES]
        # Dominant answer index per shortcut value (VQA-CP: QT only; test gets a different one).
        self.dom_qt = np.array([rng.integers(n) for n in self.n_answers])
        self.dom_qt_test = np.array(
            [
                (dq + 1 + rng.integers(n - 1)) % n
                for dq, n in zip(self.dom_qt, self.n_answers, strict=True)
            ]
        )
        self.dom_kw = np.array([[rng.integers(n) for _ in range(6)] for n in self.n_answers])
        self.dom_kwp = np.array(
            [[[rng.integers(n) for _ in LOCATIONS] for _ in range(6)] for n in self.n_answers]
        )
        n_obj = len(KEY_OBJECTS)
        self.dom_ko = np.array([[rng.integers(n) for _ in range(n_obj)] for n in self.n_answers])
        self.dom_kop = np.array(
            [
                [[rng.integers(n) for _ in range(n_obj)] for _ in range(n_obj)]
                for n in self.n_answers
            ]
        )
        # longtail: each type's answers in training-prior order, the dominant first (drawn last,
        # so the default benchmark's draws are unchanged)
        self.order_qt = (
            [
                np.concatenate(([d], (d + 1 + rng.permutation(n - 1)) % n))
                for d, n in zip(self.dom_qt, self.n_answers, strict=True)
            ]
            if spec.train_prior == "longtail"
            else None
        )

    def answer_shares(self, spec: SynthSpec, split: str, t: int) -> np.ndarray:
        """Expected answer shares of type `t` in `split` (sums to 1): any `pretrain` split,
        or a VQA-CP one."""
        n = self.n_answers[t]
        share = np.full(n, 1.0 / n)
        if split == "pretrain":
            return share
        share *= 1.0 - spec.bias
        if self.order_qt is not None:
            halving = 0.5 ** np.arange(n)
            order = self.order_qt[t] if split != "test" else self.order_qt[t][::-1]
            share[order] += spec.bias * halving / halving.sum()
        elif split != "test":
            share[self.dom_qt[t]] += spec.bias
        elif spec.test_answers == "one":
            share[self.dom_qt_test[t]] += spec.bias
        else:
            others = np.arange(n) != self.dom_qt[t]
            share[others] += spec.bias / others.sum()
        return share

    def dominant(self, family: str, t: int, kw: int, loc: int, ko: tuple[int, int]) -> int:
        if family == "QT":
            return int(self.dom_qt[t])
        if family == "KW":
            return int(self.dom_kw[t, kw])
        if family == "KWP":
            return int(self.dom_kwp[t, kw, loc])
        if family == "KO":
            return int(self.dom_ko[t, ko[0]])
        return int(self.dom_kop[t, ko[0], ko[1]])


def _draw_answer(
    world: _World,
    spec: SynthSpec,
    split: str,
    t: int,
    kw: int,
    loc: int,
    ko: tuple[int, int],
    rng: np.random.Generator,
) -> int:
    n = world.n_answers[t]
    if split == "pretrain" or rng.random() >= spec.bias:
        return int(rng.integers(n))
    if spec.dataset == "vqacp_v2":
        # `_stratify` reassigns every VQA-CP answer; these draws stay because the random numbers
        # they consume fix the rest of each recorded benchmark
        if spec.train_prior == "longtail":  # only the bias share: renormalise it
            share = world.answer_shares(spec, split, t) - (1.0 - spec.bias) / n
            return int(rng.choice(n, p=share / share.sum()))
        if split != "test":
            return int(world.dom_qt[t])
        if spec.test_answers == "one":
            return int(world.dom_qt_test[t])
        return int((world.dom_qt[t] + 1 + rng.integers(n - 1)) % n)
    weights = [QT_WEIGHT] + [(1 - QT_WEIGHT) / (len(SHORTCUTS) - 1)] * (len(SHORTCUTS) - 1)
    family = SHORTCUTS[rng.choice(len(SHORTCUTS), p=weights)]
    return world.dominant(family, t, kw, loc, ko)


def _stratify(
    world: _World, spec: SynthSpec, split: str, recs: list[dict], rng: np.random.Generator
) -> None:
    """Give each question type exactly its expected answer counts (largest remainder), so even a
    small benchmark has every answer often enough in train to enter the vocabulary."""
    for t, n_ans in enumerate(world.n_answers):
        mine = [r for r in recs if r["t"] == t]
        if not mine:
            continue
        share = world.answer_shares(spec, split, t)
        exact = share * len(mine)
        counts = np.floor(exact).astype(int)
        counts[np.argsort(counts - exact)[: len(mine) - counts.sum()]] += 1
        answers = rng.permutation(np.repeat(np.arange(n_ans), counts))
        for r, a in zip(mine, answers, strict=True):
            r["a"] = int(a)


def _human_answers(
    answer: str, alternatives: tuple[str, ...], agreement: float, rng: np.random.Generator
) -> list[str]:
    out = []
    for _ in range(10):
        if rng.random() < agreement:
            out.append(_surface(answer, rng) if rng.random() < 0.15 else answer)
        else:
            out.append(alternatives[rng.integers(len(alternatives))])
    return out


def generate(spec: SynthSpec, out: str | Path) -> dict:
    """Write the benchmark under `out` (replacing an earlier synthetic benchmark there)."""
    spec.check()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a directory")
    if out.exists() and any(out.iterdir()) and not (out / "synth.json").is_file():
        raise InputError(
            f"{out}: exists and is not a synthetic benchmark directory; not replacing it"
        )
    rng = np.random.default_rng(spec.seed)
    world = _World(spec, rng)
    sizes = spec.split_sizes()

    # Images go to splits in proportion to their questions; a slot (image, type) is asked once.
    image_ids = np.sort(rng.choice(np.arange(1, 50 * spec.images + 1), spec.images, replace=False))
    key_objects = np.array(
        [np.sort(rng.choice(len(KEY_OBJECTS), 2, replace=False)) for _ in range(spec.images)]
    )
    slot_answer = np.array([[rng.integers(n) for n in world.n_answers] for _ in range(spec.images)])
    order = rng.permutation(spec.images)
    records: dict[str, list[dict]] = {}
    start = 0
    for (split, n_q), n_img in zip(sizes.items(), spec.image_shares().values(), strict=True):
        asked = spec.asked_type_ids(split)
        imgs = order[start : start + n_img]
        start += n_img
        slots = rng.choice(len(imgs) * len(asked), n_q, replace=False)
        records[split] = []
        for s in np.sort(slots):
            img, t = int(imgs[s // len(asked)]), asked[int(s % len(asked))]
            kw, loc = int(rng.integers(6)), int(rng.integers(len(LOCATIONS)))
            ko = (int(key_objects[img, 0]), int(key_objects[img, 1]))
            a = _draw_answer(world, spec, split, t, kw, loc, ko, rng)
            records[split].append({"img": img, "t": t, "kw": kw, "loc": loc, "ko": ko, "a": a})
        if split == "pretrain" or spec.dataset == "vqacp_v2":
            _stratify(world, spec, split, records[split], rng)
        for r in records[split]:
            slot_answer[r["img"], r["t"]] = r["a"]

    shown = (
        _verified_keywords(spec, records, slot_answer) if spec.yesno == "verify" else slot_answer
    )
    features, boxes, object_ids = _render(spec, world, key_objects, shown, rng)
    with atomic_dir(out) as tmp:
        write_feature_store(
            tmp / "features.h5", image_ids, features.astype(np.float32), boxes, object_ids
        )
        counts = {}
        for split, recs in records.items():
            ques, anns, ood = _to_json(spec, world, recs, image_ids, rng)
            counts[split] = len(ques)
            _write_split(spec, tmp, split, ques, anns, ood)
        meta = {
            "spec": asdict(spec),
            "splits": counts,
            "question_types": [q[0] for q in QUESTION_TYPES],
            "dominant_train": {q[0]: q[2][world.dom_qt[t]] for t, q in enumerate(QUESTION_TYPES)},
        }
        if world.order_qt is not None:
            meta["train_order"] = {
                q[0]: [q[2][a] for a in world.order_qt[t]] for t, q in enumerate(QUESTION_TYPES)
            }
        if spec.dataset == "vqacp_v2" and spec.test_answers == "one":
            meta["dominant_test"] = {
                q[0]: q[2][world.dom_qt_test[t]] for t, q in enumerate(QUESTION_TYPES)
            }
        (tmp / "synth.json").write_text(json.dumps(meta, indent=1) + "\n")
        (tmp / "prepare.yaml").write_text(_prepare_yaml(spec, out.resolve()))
    return meta


def _verified_keywords(
    spec: SynthSpec, records: dict[str, list[dict]], slot_answer: np.ndarray
) -> np.ndarray:
    """What each slot shows (M, T) under `yesno` "verify": a yes/no slot shows one of its type's
    six keywords, the asked one when the answer is yes and one of the other five when it is no
    (an unasked slot any one); other slots show their answer. Its own generator, so the rest of
    the benchmark is that of "read"."""
    rng = np.random.default_rng([spec.seed, 6])
    shown = slot_answer.copy()
    n_kw = {t: len(q[3]) for t, q in enumerate(QUESTION_TYPES) if q[1] == "yes/no"}
    yesno = list(n_kw)
    shown[:, yesno] = rng.integers(list(n_kw.values()), size=(len(shown), len(yesno)))
    for recs in records.values():
        for r in recs:
            if r["t"] in n_kw:
                yes = QUESTION_TYPES[r["t"]][2][r["a"]] == "yes"
                other = (r["kw"] + 1 + rng.integers(n_kw[r["t"]] - 1)) % n_kw[r["t"]]
                shown[r["img"], r["t"]] = r["kw"] if yes else other
    return shown


def feature_rotation(spec: SynthSpec) -> np.ndarray:
    """The (D, D) orthogonal matrix that `feature_mixing` applies to every box feature (row
    vectors: features @ R); the identity at 0. Its own generator, so the rest of the benchmark
    is that of mixing 0."""
    d, w = spec.feature_dim, spec.feature_mixing
    q, _ = np.linalg.qr(np.random.default_rng([spec.seed, 5]).standard_normal((d, d)))
    u, _, vt = np.linalg.svd((1.0 - w) * np.eye(d) + w * q)
    return u @ vt


def _render(
    spec: SynthSpec,
    world: _World,
    key_objects: np.ndarray,
    slot_shown: np.ndarray,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features (M, K, D), boxes (M, K, 4) and object classes (M, K) of every image;
    `slot_shown` (M, T) is the code index each slot shows (its answer, or under `yesno` "verify"
    a yes/no slot's keyword).

    A box's class (`object_ids`, for object label pre-training) names what it was drawn from:
    1 + 6 t + a for a box that shows code a of type t (with answer_hops 2 the link + answer
    box), 1 + 6 T + o for key object o, 1 + 6 T + len(KEY_OBJECTS) + t for a type + link box of
    answer_hops 2, 0 for background (T types, at most 6 codes each)."""
    m, k, d = spec.images, spec.num_boxes, spec.feature_dim
    n_types = len(QUESTION_TYPES)
    objects_from = 1 + 6 * n_types
    object_ids = np.zeros((m, k), dtype=np.int64)
    feats = world.background_code[rng.integers(NUM_BACKGROUND_CODES, size=(m, k))]
    # links come from a generator of their own, so the questions and answers stay those of hops 1
    link_rng = np.random.default_rng([spec.seed, 2])
    link_code = link_rng.standard_normal((spec.link_codes, d))
    # product codes, like links, come from a generator of their own
    sign_rng = np.random.default_rng([spec.seed, 3])
    third = d // 3
    n_var = spec.answer_variants
    # (types, 6, variants, third): with one variant the same draws as before the knob existed
    sign_code = sign_rng.choice([-1.0, 1.0], size=(n_types, 6, n_var, third))
    one_variant = np.zeros(spec.answer_boxes, dtype=np.int64)
    for img in range(m):
        pos = rng.permutation(k)
        if spec.link_codes:
            links = link_code[link_rng.choice(spec.link_codes, n_types, replace=False)]
        j = 0
        for t in range(n_types):
            answer_class = 1 + 6 * t + slot_shown[img, t]
            box_classes = [answer_class] * spec.answer_boxes
            if spec.answer_code == "product":
                # no variant draw with one variant, so the sign stream stays that of no knob
                variant = (
                    sign_rng.integers(n_var, size=spec.answer_boxes) if n_var > 1 else one_variant
                )
                answers = spec.answer_strength * sign_code[t, slot_shown[img, t], variant]
                r = sign_rng.choice([-1.0, 1.0], size=(spec.answer_boxes, third))
                type_third = world.type_code[t, :third]
                clue = spec.answer_clue * world.answer_code[t, slot_shown[img, t]]
                box_codes = [
                    np.concatenate([type_third, a * rb, rb]) + clue
                    for a, rb in zip(answers, r, strict=True)
                ]
            elif spec.answer_hops == 1:
                answer = spec.answer_strength * world.answer_code[t, slot_shown[img, t]]
                box_codes = [(world.type_code[t] + answer) / np.sqrt(2)] * spec.answer_boxes
            else:
                # type 0's answer codes stand for every type's, so an answer box does not tell
                # which type it answers: only its link to a type box does
                answer = spec.answer_strength * world.answer_code[0, slot_shown[img, t]]
                link = links[t] if spec.link_codes else link_rng.standard_normal(d)
                codes = [(world.type_code[t] + link) / np.sqrt(2), (link + answer) / np.sqrt(2)]
                box_codes = [c for c in codes for _ in range(spec.answer_boxes)]
                type_class = objects_from + len(KEY_OBJECTS) + t
                box_classes = [type_class] * spec.answer_boxes + box_classes
            for code, box_class in zip(box_codes, box_classes, strict=True):
                feats[img, pos[j]] = code
                object_ids[img, pos[j]] = box_class
                j += 1
        for o in key_objects[img]:
            feats[img, pos[j]] = world.object_code[o]
            object_ids[img, pos[j]] = objects_from + o
            j += 1
    feats = feats + spec.noise * rng.standard_normal((m, k, d))
    if spec.nuisance:
        # its own generator, so the rest of the benchmark is that of nuisance 0
        nuisance_rng = np.random.default_rng([spec.seed, 4])
        direction = nuisance_rng.standard_normal(d)
        gain = nuisance_rng.uniform(0.0, 2.0, size=(m, k, 1))
        feats = feats + spec.nuisance * gain * direction
    if spec.feature_mixing:
        feats = feats @ feature_rotation(spec)
    corners = rng.random((m, k, 2, 2))
    boxes = np.concatenate([corners.min(axis=2), corners.max(axis=2)], axis=-1)  # x1 y1 x2 y2
    return feats, boxes.astype(np.float32), object_ids


def _to_json(
    spec: SynthSpec,
    world: _World,
    recs: list[dict],
    image_ids: np.ndarray,
    rng: np.random.Generator,
) -> tuple[list[dict], list[dict], dict[str, list[int]]]:
    ques, anns = [], []
    ood: dict[str, list[int]] = {s: [] for s in VQAVS_OOD_SETS}
    for r in recs:
        qtype, atype, answers, keywords, template = QUESTION_TYPES[r["t"]]
        image_id = int(image_ids[r["img"]])
        qid = image_id * 10 + r["t"]
        answer = answers[r["a"]]
        # Yes/no questions are the least ambiguous in VQA: half the room for disagreement.
        floor = spec.agreement if atype != "yes/no" else (1 + spec.agreement) / 2
        agreement = floor + (1 - floor) * rng.random()
        others = tuple(a for a in answers if a != answer)
        humans = _human_answers(answer, others, agreement, rng)
        normal = Counter(_canonical(h, answers) for h in humans)
        mc = max(normal.items(), key=lambda kv: (kv[1], kv[0] == answer))[0]
        text = template.format(kw=keywords[r["kw"]], loc=LOCATIONS[r["loc"]])
        ques.append(
            {
                "question_id": qid,
                "image_id": image_id,
                "question": text,
                "coco_split": "train2014" if image_id % 3 else "val2014",
            }
        )
        anns.append(
            {
                "question_id": qid,
                "image_id": image_id,
                "question_type": qtype,
                "answer_type": atype,
                "multiple_choice_answer": mc,
                "answers": [
                    {"answer": h, "answer_confidence": "yes", "answer_id": i + 1}
                    for i, h in enumerate(humans)
                ],
            }
        )
        broken = {
            f: r["a"] != world.dominant(f, r["t"], r["kw"], r["loc"], r["ko"]) for f in SHORTCUTS
        }
        for s in VQAVS_OOD_SETS:
            if all(broken[f] for f in s.split("+")):
                ood[s].append(len(ques) - 1)
    return ques, anns, ood


def _canonical(human: str, answers: tuple[str, ...]) -> str:
    """The answer a surface form stands for (the vocabulary's spelling)."""
    h = human.lower().rstrip(".")
    h = h[4:] if h.startswith("the ") else h
    words = {v: k for k, v in NUMBER_WORDS.items()}
    h = words.get(h, h)
    return h if h in answers else human


def _write_split(
    spec: SynthSpec,
    root: Path,
    split: str,
    ques: list[dict],
    anns: list[dict],
    ood: dict[str, list[int]],
) -> None:
    if spec.dataset == "vqacp_v2":
        files = [(vqacp_files(root, split), ques, anns)]
    else:
        files = [(vqavs_files(root, split), ques, anns)]
        if split == "test":
            for s in VQAVS_OOD_SETS:
                idx = ood[s]
                files.append(
                    (vqavs_ood_files(root, s), [ques[i] for i in idx], [anns[i] for i in idx])
                )
    for (q_path, a_path), q, a in files:
        q_path.parent.mkdir(parents=True, exist_ok=True)
        q_path.write_text(json.dumps(q))
        a_path.write_text(json.dumps(a))


def _prepare_yaml(spec: SynthSpec, root: Path) -> str:
    config = {
        "data": {
            "dataset": spec.dataset,
            "root": str(root),
            "features": str(root / "features.h5"),
            "cache_dir": str(root / "cache"),
            "num_boxes": spec.num_boxes,
            "feature_dim": spec.feature_dim,
            "scoring": "vqa",
            "tokenizer": {"kind": "wordpiece", "vocab_size": 200},
        }
    }
    head = f"# tickets data prepare {root / 'prepare.yaml'}\n"
    return head + yaml.safe_dump(config, sort_keys=False)


__all__ = ["SynthSpec", "generate", "QUESTION_TYPES"]
