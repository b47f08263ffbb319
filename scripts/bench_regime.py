"""Does the synthetic benchmark behave like lxmert-base on VQA-CP? Properties P0-P8 of the
benchmark issue, measured over seeds (data, pre-training, stage 1 and stage 2 seeded together).

    .venv/bin/python scripts/bench_regime.py --work /tmp/regime --regime demo [--seeds 0 1 2]
        [--properties P0 P3 ...] [--json OUT.json]

A regime is the demo's run config (configs/demo.yaml) and `tickets data synth`'s defaults with
the overrides of `REGIMES` below. Every run is an ordinary `fit` / `prune` under
WORK/<regime>/seed<N>/, so an interrupted measurement resumes where it stopped (a finished run is
read back, not re-run), and each figure is written to the JSON (default WORK/regime.json) as
soon as it is measured. A regime in `STAGE1_FROM` differs from another only in `pruning` and
takes that one's stage-1 models from WORK/<other>/seed<N>/; one in `PRETRAIN_FROM` differs
only in `finetune` and `pruning` and takes that one's data and pre-training (every regime in
`STAGE1_FROM` is in `PRETRAIN_FROM` too). Several regimes may be measured at once into one
JSON (each save replaces its own regime's record); one regime runs in one process at a time,
and not beside the one it takes models from. The table printed at the end has the seed mean,
then each seed.

Definitions, fixed on 2026-12-02 before any figure of a new regime was seen (OOD = overall
accuracy on the VQA-CP style `test` split, the kept epoch chosen on `dev`; "mask s" = LMH mask
training of the named stage-1 model at overall sparsity s with the uniform triple, the regime's
stage-2 settings otherwise):

P0  LMH stage-1 OOD minus the pre-trained model's OOD (same head, no stage 1); target >= 10.
P1  mask 0.5 of the LPF model minus the full LPF model; target >= -2.
P2  the grid's best at s = 0.7 on the LPF model (the lattice below, best by `dev`, its OOD)
    minus the full LPF model; target >= -2.
P3  mask 0.3, 0.5 and 0.7 of the BCE model minus the full BCE model; target >= 8 at each s.
P4  mask 0.5 of the BCE model minus the head-only control (`pruning.sparsity: 0`, mode uniform:
    every weight kept, so only the answer head and the LMH parameters train, same epochs, lr and
    loss); target >= 3.
P5  P3's model at s = 0.5: share of test predictions that change when the features are noise
    (target >= 20%), and its OOD minus the best question-only anti-prior guess (target >= 3).
P6  the BCE model with one group at 0.7 and the others at 0 (LMH mask training): visual alone
    minus language alone is the cost difference; target: language-alone OOD minus visual-alone
    OOD >= 5 (cross alone is reported beside).
P7  over the lattice at s = 0.7 (LPF model): the best by `dev` minus uniform (OOD) >= 3, and the
    best's s_visual < 0.7.
P8  `dev` questions >= 2,000 and the std over 3 training seeds (stage 2 only, data seed 0) of
    uniform mask 0.7's kept `dev` accuracy <= 1.5.

The lattice: (s_language, s_visual) in {0.3, 0.5, 0.7, 0.9}^2 with s_cross solved by eq. 10,
kept where s_cross is in [0.3, 0.95], plus the uniform point (0.7, 0.7, 0.7).
"""

from __future__ import annotations

import argparse
import copy
import fcntl
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml

from models.evaluate import image_dependence
from models.structure import group_sizes
from models.train import fit, load_checkpoint_model
from pruning.budget import solve
from pruning.train import load_pruned, prune
from search.config import validate_config
from vqa.atomic import write_json
from vqa.baseline import anti_prior_accuracy
from vqa.cache import load_cache
from vqa.prepare import prepare
from vqa.synth import SynthSpec, generate

ROOT = Path(__file__).resolve().parent.parent

# Overrides of the demo's config (and of SynthSpec's defaults) that make each regime.
# Candidates for lxmert-base's regime (issue 12): lxmert-base's module shares (a second language
# layer), wide noisy region features (a dense visual projection is needed to average the noise
# out), pre-training on half the question types, a `dev` split of ~2,100 questions, and stage 2
# at lr 1e-4. The variants change the noise and the pre-training.
_PAPER: dict[str, dict[str, Any]] = {
    "synth": {"images": 2600, "test_fraction": 3.5, "feature_dim": 192, "noise": 2.0,
              "pretrain_types": "half"},
    "pretrain": {"architecture": {"l_layers": 2}},
    "pruning": {"lr": 1.0e-4},
}  # fmt: skip


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


_DEEP = _merge(_PAPER, {
    "synth": {"noise": 1.0, "answer_code": "product", "feature_dim": 96, "images": 3800,
              "pretrain_fraction": 2.5},
    "pretrain": {"object_labels": {"weight": 1.0}, "epochs": 32,
                 "architecture": {"l_layers": 3, "r_layers": 2, "x_layers": 2}}})  # fmt: skip
# the same twice as wide (hidden 128, feed-forward 512)
_H128 = _merge(
    _DEEP, {"pretrain": {"architecture": {"hidden_size": 128, "intermediate_size": 512}}}
)
# the same with four times the training questions (`deep-h128-q12k-hs` below gives the reason)
_Q12K = _merge(_H128, {"synth": {"questions": 12000, "images": 5000, "test_fraction": 0.875,
                                 "pretrain_fraction": 0.625}})  # fmt: skip
# V=4 at bias 0.9 with four times the pre-training questions on 3.8 times the images
# (`deep-h128-q12k-b90-b32-hs-v4-p4x` below gives the reason); its variants change one thing
_V4_P4X = _merge(_Q12K, {
    "synth": {"bias": 0.9, "answer_variants": 4, "images": 10500, "pretrain_fraction": 2.5},
    "pretrain": {"epochs": 20}, "pruning": {"batch_size": 32, "head_shift": True}})  # fmt: skip

# bias 0.9, a 12-epoch stage 1 and stage 2 at batch 16 (`deep-h128-q12k-b90-b16-hs-f12` below
# gives the reason); its variants change stage 2 only
_F12_B16 = _merge(_Q12K, {
    "synth": {"bias": 0.9}, "finetune": {"epochs": 12},
    "pruning": {"batch_size": 16, "head_shift": True}})  # fmt: skip
# the same on VQA-CP-like long-tailed priors (`deep-h128-q12k-b90-b16-hs-f12-lt` below gives the
# reason); its variants change stage 2 or the width
_F12_B16_LT = _merge(_F12_B16, {"synth": {"train_prior": "longtail"}})
# a fourth language layer, for lxmert-base's module shares
# (`deep-h128-l4-q12k-b90-b16-hs-f12-lt` below gives the reason)
_L4: dict[str, Any] = {"pretrain": {"architecture": {"l_layers": 4}}}
# the long-tailed regime with it; its variants change the data
_F12_B16_LT_L4 = _merge(_F12_B16_LT, _L4)
# that with box features in a dense basis (`deep-h128-l4-q12k-b90-b16-hs-f12-lt-mix` below
# gives the reason); its variants change the pre-training
_LT_MIX = _merge(_F12_B16_LT_L4, {"synth": {"feature_mixing": 1.0}})
# that pre-trained at half the peak lr (`deep-h128-l4-q12k-b90-b16-hs-f12-lt-mix-p5` below gives
# the reason); its variants change stage 1
_LT_MIX_P5 = _merge(_LT_MIX, {"pretrain": {"lr": 5.0e-4}})

REGIMES: dict[str, dict[str, dict[str, Any]]] = {
    "demo": {},
    "paper-n3": _merge(_PAPER, {"synth": {"noise": 3.0}}),
    "paper-n2": _PAPER,
    "paper-n1": _merge(_PAPER, {"synth": {"noise": 1.0}}),
    "paper-n15-p16": _merge(_PAPER, {"synth": {"noise": 1.5}, "pretrain": {"epochs": 16}}),
    "paper-n2-p16x2": _merge(_PAPER, {"synth": {"images": 3400, "pretrain_fraction": 2.0},
                                      "pretrain": {"epochs": 16}}),
    # two cross-modal layers (as lxmert-base's five, more than one does the grounding) and three
    # language layers; 384-d features keep the visual share at lxmert-base's
    "paper-n1-deep": _merge(_PAPER, {"synth": {"noise": 1.0, "feature_dim": 384},
                                     "pretrain": {"architecture": {"l_layers": 3, "x_layers": 2}}}),
    # a faint answer code (a box's answer spread thinly over every feature dimension): only a
    # dense visual projection integrates it above the noise, so the visual module is the one
    # whose weights the answer needs (lxmert's visual encoder keeps everything a question may ask)
    "paper-faint25": _merge(_PAPER, {"synth": {"noise": 1.0, "answer_strength": 0.25}}),
    "paper-faint40": _merge(_PAPER, {"synth": {"noise": 1.0, "answer_strength": 0.4}}),
    # the same with four times the pre-training (twice the questions, twice the epochs): is
    # the faint code's read-out, once learned better, the thing pruning the visual module costs?
    "paper-faint40-p16x2": _merge(_PAPER, {"synth": {"noise": 1.0, "answer_strength": 0.4,
                                                     "images": 3400, "pretrain_fraction": 2.0},
                                           "pretrain": {"epochs": 16}}),
    # the answer two hops away (`answer_hops` 2): a type's boxes hold a link code, the answer sits
    # in other boxes with the same link, so the visual encoder's self-attention must relate
    # boxes before the single cross-modal layer can read the answer (lxmert's visual encoder
    # relates objects); two boxes per hop keep 8 x 2 x 2 + 2 = 34 of the 36 boxes
    "paper-hop2": _merge(_PAPER, {"synth": {"noise": 1.0, "answer_hops": 2, "answer_boxes": 2}}),
    # the same with links drawn from 8 fixed codes (one per type, permuted per image): the
    # visual encoder's attention must learn to match 8 directions, not any random vector
    "paper-hop2-l8": _merge(_PAPER, {"synth": {"noise": 1.0, "answer_hops": 2, "answer_boxes": 2,
                                               "link_codes": 8}}),
    # the answer as a per-box product (`answer_code` product): a type's boxes hold code(type),
    # code(answer) * r and r for a fresh sign vector r per box, so neither third alone says the
    # answer and attention's average over boxes blurs their product; the visual encoder's
    # feed-forward layer must multiply 64 sign pairs per box, a job that needs its width
    "paper-prod": _merge(_PAPER, {"synth": {"noise": 1.0, "answer_code": "product"}}),
    # the product alone is not learned by pre-training (chicken and egg: attention to the type's
    # boxes pays only once the product is computed); a faint dense answer code beside it, as
    # paper-faint40's, lets attention find the boxes first, the product then adds what the
    # clue's noise hides, so pruning the visual module falls back to the clue alone
    "paper-prod-c40": _merge(_PAPER, {"synth": {"noise": 1.0, "answer_code": "product",
                                                "answer_clue": 0.4}}),
    # paper-prod-c40's pre-training learns the clue, not the product (its loss still falls at
    # epoch 8): three times the epochs
    "paper-prod-c40-p24": _merge(_PAPER, {"synth": {"noise": 1.0, "answer_code": "product",
                                                    "answer_clue": 0.4},
                                          "pretrain": {"epochs": 24}}),
    # less noise (each sign pair's product is then clean enough to learn from) and a fainter clue
    "paper-prod-n05-c20": _merge(_PAPER, {"synth": {"noise": 0.5, "answer_code": "product",
                                                    "answer_clue": 0.2}}),
    # paper-n1 with four times stage 1's push (twice the epochs at twice the lr): fine-tuning the
    # BCE model harder should write the training prior into the backbone (the language side, where
    # the question type is read), not only into the answer head, so retraining the head cannot undo
    # it (P4) while masks on the language module can and masks on the visual module cannot (P6),
    # the paper's reading of its fig. 6 ("the language and cross-modality modules capture more
    # training set bias than the visual module")
    "paper-n1-s1x4": _merge(_PAPER, {"synth": {"noise": 1.0},
                                     "finetune": {"epochs": 12, "lr": 1.0e-3}}),
    # paper-n1 with a nuisance shared by every box (`nuisance` 3: a fixed direction, std 1 per
    # dimension, times 3 and a gain drawn per box in [0, 2]): the dense visual projection learns
    # to null it out, and pruning the visual module breaks that cancellation, so the residue
    # (growing with the energy of the removed weights, small at 0.5, large at 0.7 and above)
    # adds noise to every region the cross-modal layer reads (P6, P7), while the language and
    # cross-modal modules never see it
    "paper-n1-nu3": _merge(_PAPER, {"synth": {"noise": 1.0, "nuisance": 3.0}}),
    # paper-n1's visual encoder carries no load (plain magnitude pruning of the whole visual
    # group at 0.9 costs its LPF model 0.6 points, docs/CALIBRATION.md): a region's code is read
    # from any tenth of its 192 dimensions and from any of its type's three boxes. Less of that
    # redundancy: one answer box per type, or 64-d features (the hidden size)
    "paper-n1-b1": _merge(_PAPER, {"synth": {"noise": 1.0, "answer_boxes": 1}}),
    "paper-n1-d64": _merge(_PAPER, {"synth": {"noise": 1.0, "feature_dim": 64}}),
    # paper-n1 with LXMERT's masked object feature regression beside pre-training's QA loss
    # (`pretrain.masked_objects`): a masked box keeps half its dimensions and the visual encoder
    # must rebuild the other half from its type's sibling boxes, a relational job with direct
    # supervision that question answering alone never gives it. The visual encoder then does
    # work (relating and denoising a type's boxes) that the cross-modal layer comes to read, so
    # pruning it costs (P6, P7); at 0.15 of the boxes (LXMERT's share) and at half of them.
    # Measured on seed 0 (docs/CALIBRATION.md): the r-layer still costs nothing at 0.9, P6 +0.9
    "paper-n1-mo15": _merge(_PAPER, {"synth": {"noise": 1.0},
                                     "pretrain": {"masked_objects": {"share": 0.15}}}),
    "paper-n1-mo50": _merge(_PAPER, {"synth": {"noise": 1.0},
                                     "pretrain": {"masked_objects": {"share": 0.5}}}),
    # the same task read from the object-relationship encoder's last layer, before the
    # cross-modal layer: there the cross-modal layer cannot do the rebuilding for it
    # (measured on seed 0: the r-layer still costs 0.2 at 0.9 after stage 1, P6 -4.6, P7 0.0)
    "paper-n1-mo15-enc": _merge(_PAPER, {"synth": {"noise": 1.0}, "pretrain": {
        "masked_objects": {"share": 0.15, "read_from": "encoder"}}}),
    # paper-prod with LXMERT's object label prediction beside pre-training's QA loss
    # (`pretrain.object_labels`): every box is classified into what it was drawn from (type t's
    # answer a, a key object, background) by a linear read-out of the object-relationship
    # encoder's last layer. paper-prod's product was never learned because nothing rewarded
    # computing it before attention found the boxes; this task rewards it per box, directly, and
    # only the r-layer's feed-forward layer can compute it (a linear read-out cannot, and the
    # cross-modal layer's visual half never reaches the pooled output with one cross-modal
    # layer). The decoded answer is then what cross-attention reads, so pruning the visual
    # module breaks the decoding (P6, P7). 192-d features as paper-prod, and 96-d: with hidden
    # 64 the projection cannot pass 64 sign pairs and the type code, 32 pairs it can
    "paper-prod-ol": _merge(_PAPER, {"synth": {"noise": 1.0, "answer_code": "product"},
                                     "pretrain": {"object_labels": {"weight": 1.0}}}),
    "paper-prod96-ol": _merge(_PAPER, {"synth": {"noise": 1.0, "answer_code": "product",
                                                 "feature_dim": 96},
                                       "pretrain": {"object_labels": {"weight": 1.0}}}),
    # measured on seed 0: 8 pre-training epochs (375 steps) leave the label read-out of the
    # answer boxes at chance on test images (25-27%); the same projection, feed-forward layer and
    # read-out trained alone on the boxes need 800-1,200 steps to read 60-80%. Four times the
    # pre-training epochs
    "paper-prod96-ol-p32": _merge(_PAPER, {"synth": {"noise": 1.0, "answer_code": "product",
                                                     "feature_dim": 96},
                                           "pretrain": {"object_labels": {"weight": 1.0},
                                                        "epochs": 32}}),
    "paper-prod-ol-p32": _merge(_PAPER, {"synth": {"noise": 1.0, "answer_code": "product"},
                                         "pretrain": {"object_labels": {"weight": 1.0},
                                                      "epochs": 32}}),
    # measured on seed 0: 32 epochs read 52% of the pre-training images' answer boxes and 33% of
    # the test images' (25% with the product scrambled): the read-out memorises the 800
    # pre-training images. 2.5x the pre-training questions (2,000 images) for 16 epochs (1,900
    # steps, where the read-out trained alone on 2,080 images generalises)
    "paper-prod96-ol-p16x25": _merge(_PAPER, {"synth": {"noise": 1.0, "answer_code": "product",
                                                        "feature_dim": 96, "images": 3800,
                                                        "pretrain_fraction": 2.5},
                                              "pretrain": {"object_labels": {"weight": 1.0},
                                                           "epochs": 16}}),
    # measured on seed 0: the read-out now generalises (test images' answer boxes 51.7%, 25.4%
    # scrambled) and pre-training's loss still falls at epoch 16 (1.98): twice the epochs
    "paper-prod96-ol-p32x25": _merge(_PAPER, {"synth": {"noise": 1.0, "answer_code": "product",
                                                        "feature_dim": 96, "images": 3800,
                                                        "pretrain_fraction": 2.5},
                                              "pretrain": {"object_labels": {"weight": 1.0},
                                                           "epochs": 32}}),
    # measured on seed 0: the r-layer now carries load (magnitude pruning it to 0.7 costs the
    # LPF model 5.8 points, the language module 2.6, the cross-modal 3.6), but at s = 0.7 the
    # model has no capacity to spare anywhere (uniform 47.1 against the full 55.2) and uniform is
    # the lattice's best. lxmert-base's modules are 9 / 5 / 5 layers deep: more layers where it
    # has them, language 3, visual 2, cross-modal 2 (shares 0.32 / 0.21 / 0.47), so that the
    # language and cross-modal modules have depth to spare while the visual one must decode
    "paper-prod96-ol-p32x25-deep": _DEEP,
    # Stage 2 with its own score rate (`pruning.score_lr`), on paper-prod96-ol-p32x25-deep's
    # stage-1 models (STAGE1_FROM). Measured on that regime's seed 0 (2026-12-06): at lr 1e-4 no
    # mask bit ever flips (mask_change 0.000 in every epoch of every stage-2 run), so what every
    # regime above called mask training was one-shot magnitude pruning plus a retrained head,
    # and P4's control, the same head on every weight, had to win. Scores start alpha * phi =
    # 0.02 apart and move at most score_lr x steps / 2 under the linear decay: 0.014 in 282 steps
    # at 1e-4. The paper's 5e-5 over ~34k steps moves them ~42x the gap; the stand-in's 282 steps
    # need ~120x the paper's rate for that, so the scores get their own rate and the head keeps 1e-4
    # (the control trains the same head at the same rate). 1e-3, 3e-3 and 1e-2 (movement
    # pruning's score rate) move the scores up to 7x, 21x and 70x the gap
    "deep-m1e3": _merge(_DEEP, {"pruning": {"score_lr": 1.0e-3}}),
    "deep-m3e3": _merge(_DEEP, {"pruning": {"score_lr": 3.0e-3}}),
    "deep-m1e2": _merge(_DEEP, {"pruning": {"score_lr": 1.0e-2}}),
    # measured on seed 0: at 1e-3 22% of the mask bits flip in stage 2's first epoch and the
    # BCE model's mask 0.5 falls to 20.1 OOD (head-only control 46.3): Adam moves every score
    # whose gradient keeps its sign by the rate per step, whatever its size, so a rate that
    # crosses the gap in ~20 steps flips at once every weight the first-order gradient dislikes
    # (3e-3 and 1e-2 were stopped unrun). Rates that cross it in ~130, ~70 and ~40 steps of
    # the 282, so that the flips spread over the run as the paper's spread over its 34k steps
    "deep-m1.5e4": _merge(_DEEP, {"pruning": {"score_lr": 1.5e-4}}),
    "deep-m3e4": _merge(_DEEP, {"pruning": {"score_lr": 3.0e-4}}),
    "deep-m5e4": _merge(_DEEP, {"pruning": {"score_lr": 5.0e-4}}),
    # measured on seed 0 (BCE model's mask 0.5 / head-only control 46.3): 1.5e-4 45.2, 3e-4
    # 46.4 (bits flipped 0.4-0.8% an epoch; lr 1e-4's magnitude mask scored 43.2), 5e-4 collapses
    # as 1e-3 did (5% flipped in epoch 1, 27.3 then 20.8). So the masks learn, and gain 3.2 over
    # the magnitude mask, but no more than the head does alone. The paper trains 20 epochs: three
    # times the stage-2 epochs (18, 846 steps; the control trains as long), with the score rate
    # at 2e-4 and at the head's 1e-4 (no score_lr: only more steps)
    "deep-m2e4-e18": _merge(_DEEP, {"pruning": {"score_lr": 2.0e-4, "epochs": 18}}),
    "deep-e18": _merge(_DEEP, {"pruning": {"epochs": 18}}),
    # measured on seed 0: 18 epochs at 2e-4 keep 47.3 (its dev accuracy flat from epoch 5 on),
    # no more than the control. The masks learn now, but selecting a subnetwork of this model
    # does no more than a new head on all of it. lxmert-base's masks recover the whole gain of
    # LMH fine-tuning (fig. 2) because a 200M-weight model holds good subnetworks of nearly any
    # function; a mask over a hidden-64 model has far fewer to choose from, and at s = 0.7 it
    # has no capacity to spare (P2). The same model twice as wide (hidden 128, feed-forward
    # 512; shares 0.32 / 0.21 / 0.47 as before), stage 2 at the score rate that worked, 3e-4
    "deep-h128": _H128,
    "deep-h128-m3e4": _merge(_H128, {"pruning": {"score_lr": 3.0e-4}}),
    # measured on seed 0: the BCE model's stage 2 learns (mask 0.5 58.2, control 57.3), but the
    # LPF model's collapses at the same rate (7.9% of the bits flip in epoch 1, dev 11.2, kept
    # 36.1 against the full 57.5): Adam steps every score whose gradient keeps its sign by the
    # full rate from the first step, and LMH's gradients on an LPF model keep theirs for many.
    # A linear warm-up over the first 30% of stage 2 (both rates) lets the most consistent
    # scores cross first, so the flips spread out
    "deep-h128-m3e4-w30": _merge(_H128, {"pruning": {"score_lr": 3.0e-4, "warmup_ratio": 0.3}}),
    # measured on seed 0: the warm-up only delays the collapse (11.6% of the bits flip in epoch 2,
    # dev 10.9; P1's +0.4 is epoch 1's magnitude mask, kept before any flip). LMH's first loss on
    # the LPF model is 9.3 against 2.1 on the BCE model: LPF's softmax loss leaves the logits'
    # level free, and read as sigmoids the head says "yes" to most answers, the problem `ce`
    # pre-training had (models.train.calibrate_head_for_sigmoid). `pruning.head_shift` applies
    # the same shift before stage 2; with it on, the same two regimes (h128 and hidden 64)
    "deep-h128-m3e4-hs": _merge(_H128, {"pruning": {"score_lr": 3.0e-4, "head_shift": True}}),
    "deep-m3e4-hs": _merge(_DEEP, {"pruning": {"score_lr": 3.0e-4, "head_shift": True}}),
    # measured on seed 0: with the shift LMH's first loss on the LPF model falls from 9.3 to 5.9
    # (BCE model: 2.1), and stage 2 still collapses (6.6% of the bits flip in epoch 1; kept 45.5
    # against the full 57.5; hidden 64: 33.5). The head needs epochs to adapt (the collapsed
    # run's loss: 5.9, 3.3, 2.4 in epochs 1-3) while at 3e-4 the first scores cross in ~70
    # steps. Half the score rate puts the first crossing at ~130 steps, in epoch 3; and the same
    # over twice the epochs (12), so that the masks still move ~2x the gap in all
    "deep-h128-m1.5e4-hs": _merge(_H128, {"pruning": {"score_lr": 1.5e-4, "head_shift": True}}),
    "deep-h128-m1.5e4-e12-hs": _merge(_H128, {"pruning": {"score_lr": 1.5e-4, "head_shift": True,
                                                          "epochs": 12}}),
    # measured on seed 0: half the rate only delays the collapse (dev falls 26-31 points at the
    # first flips, epoch 3 or 4) and 12 epochs never recover epoch 1's magnitude mask. What the
    # stand-in lacks is steps: the paper's 5e-5 over ~34k steps needs >= 200 steps for the first
    # crossing of the gap (a kept score falling and a pruned one rising meet halfway), and each
    # flip is then one of thousands of small ones between which the head and the other scores
    # follow; here a crossing comes within 35-70 of 282. A quarter of the batch (16) quadruples
    # the steps (1128) over the same questions and epochs, at the paper's single rate 1e-4 (no
    # score_lr): the first crossing needs >= 100 steps (written as 200 before the run, the gap
    # closing from one side only), the head adapts in ~150 (the shift on), the scores move up to
    # ~2.8x the gap in all, and each step's gradient is noisier, so fewer scores keep one sign
    # for long
    "deep-h128-b16-hs": _merge(_H128, {"pruning": {"batch_size": 16, "head_shift": True}}),
    # measured on seed 0: no collapse (0.8% of the bits flip in epoch 1, dev 50.7, then 57.9 at
    # epoch 6 with the masks still moving): P1 -0.1 at the kept epoch 6; P4 +2.4 (mask 0.5
    # 59.9, control 57.5). P0 is this model's miss (+1.0: pre-training for 32 epochs solves the
    # task; the hidden-64 model's P0 is +15.6 with pre-training at 40.6). The same stage 2 on the
    # hidden-64 model (its P0 met); and the hidden-128 model pre-trained for 12 epochs instead of
    # 32 (its loss at 32 is 0.10), so that stage 1 has the task left to learn
    "deep-b16-hs": _merge(_DEEP, {"pruning": {"batch_size": 16, "head_shift": True}}),
    "deep-h128-p12-b16-hs": _merge(_H128, {"pretrain": {"epochs": 12},
                                           "pruning": {"batch_size": 16, "head_shift": True}}),
    # measured on seed 0: P0 is met (+14.6: pre-trained 38.0, LMH stage 1 52.6), but the less
    # trained backbone has no capacity to spare: P1 -9.4 (LPF mask 0.5 48.9 against 58.3; no
    # collapse, dev 41.2 after epoch 1's flips, 50.0 at best), P4 -0.1 (44.8 against 44.9).
    # Pre-training's length trades P0 against P1 and P4. The other way to leave stage 1 a task:
    # four times the training questions (12,000; lxmert-base's VQA-CP training set is ~440k) with
    # the 32-epoch pre-training of `deep-h128` on the same number of pre-training questions
    # (7,500) and test questions (10,500, `dev` ~2,100), images grown with the questions (5,000:
    # 1,600 for training, the other splits' shares as before); stage 2 at batch 64 then has the
    # 1,128 steps `deep-h128-b16-hs` had, on four times the questions
    "deep-h128-q12k-hs": _merge(_Q12K, {"pruning": {"head_shift": True}}),
    # measured on seed 0: P0 +12.3 (pre-trained 45.4, LMH stage 1 57.7), P1 -2.3 (LPF mask 0.5
    # 62.9 against 65.2, its dev still rising at epoch 6), P4 +3.2 (63.1 against 59.9), P5
    # 55% / +17.2: the first regime with P0 and P4 both met; P3 +6.1 / +5.5 / +5.1, P6 +2.1
    # (language 62.3, visual 60.2, cross 63.5), P8 2,091 / 0.53. P1 misses by 0.3 with the mask
    # run's dev still rising at its last epoch (6): the same stage 2 at half the batch (32) takes
    # twice the steps (2,250) over the same questions and epochs, each noisier; the stage-1
    # models are q12k's (STAGE1_FROM), the head-only control of P4 gets the same batch
    "deep-h128-q12k-b32-hs": _merge(_Q12K, {"pruning": {"batch_size": 32, "head_shift": True}}),
    # measured on seed 0: P1 -0.7 (64.5 against 65.2: met), P3 +5.3 / +7.0 / +6.2, P4 +2.8
    # (64.6 against 61.8: the control gains 1.9 from the steps, the masks 1.5), P5 58% /
    # +18.7, P6 +0.2 (language 63.4, visual 63.1, cross 63.9: more steps let every module alone
    # recover); P2 -0.1 (the lattice's best by dev, language 0.9 / visual 0.3 / cross 0.75, 65.1:
    # met), P7 +1.8 over uniform (63.4) with s_visual 0.3: the paper's direction, 1.2 short; every
    # lattice point with the visual module at 0.9 scores 50-54, 9-13 under uniform; P8 2,091 / 0.18
    # P3 is limited by a BCE model that is no more biased than the LMH one (full BCE 57.6, full
    # LMH 57.7; the paper's table 1: 48.0 against 63.6): with 20% of the training answers off the
    # dominant one, BCE fine-tuning learns to ground as well as LMH does. The same regime with a
    # training split of 0.9 on each type's dominant answer (half the counter-examples; the test
    # split spreads 0.9 over the other answers), so that BCE leans on the prior where LMH cannot;
    # data, pre-training and stage 1 are its own (the questions' answers change)
    "deep-h128-q12k-b90-b32-hs": _merge(_Q12K, {"synth": {"bias": 0.9},
                                                "pruning": {"batch_size": 32, "head_shift": True}}),
    # measured on seed 0: the BCE model is now the biased one (full BCE 51.6, LMH 56.7, LPF
    # 63.5), P3 +6.9 / +9.3 / +9.5 (0.3 misses by 1.1), P4 +5.1 (60.9 against 55.8), P5 49% /
    # +14.0, P0 +10.8 (pre-trained 45.9): met but for P3 at 0.3. P1 -4.9 (LPF mask 0.5 58.6:
    # its first epoch flips 1.5% of the bits, dev 50.4, best 57.9) and P6 +1.4 (language 58.0,
    # visual 56.6, cross 60.6) miss: half the counter-examples help the BCE side and seem to cost
    # the LPF side's mask training (0.85 below puts stage 1's own noise in doubt). Between the
    # two, 0.85 on the dominant answer: does a bias exist that meets P1 (0.8 did, 0.9 did not)
    # and P3 (0.9 did at 0.5 and 0.7, 0.8 did not) at once?
    "deep-h128-q12k-b85-b32-hs": _merge(_Q12K, {"synth": {"bias": 0.85},
                                                "pruning": {"batch_size": 32, "head_shift": True}}),
    # measured on seed 0 (partial): P0 +12.1 (LMH 58.6), P1 +3.8 (LPF mask 0.5 63.1 against a
    # full LPF of 59.3, still rising at stage 1's last epoch), P3 +5.4 / +7.6 / +7.2 (masks
    # 62.2 / 64.4 / 63.9 against full BCE 56.8: misses at every s), P4 +4.9 (64.4 against 59.5),
    # P5 55% / +18.2; P6, P2 and P7 not run
    # bias 0.9 with twice stage 1's epochs (12; lr 5e-4 still decays linearly to 0 over them):
    # every LPF and LMH stage-1 run above was still rising at its sixth and last epoch, so P1
    # and P3 compared stage 2 against full models that had not converged. Does a converged
    # stage 1 keep 0.9's P3 / P4 / P5 and move P1? Data and pre-training: 0.9's (PRETRAIN_FROM)
    "deep-h128-q12k-b90-b32-hs-f12": _merge(_Q12K, {
        "synth": {"bias": 0.9}, "finetune": {"epochs": 12},
        "pruning": {"batch_size": 32, "head_shift": True}}),
    # measured on seed 0: only LPF was short of convergence (LPF 63.5 -> 66.7, LMH 56.7 -> 56.1,
    # BCE 51.6 -> 51.6); P1 -3.1 (LPF mask 0.5 63.6: misses by 1.1, 1.8 closer), P3 +4.9 / +7.6
    # / +8.4 (masks 2.0 / 1.7 / 1.1 lower on the longer-fitted BCE model: met at 0.7 only), P4
    # +5.4, P5 64% / +12.4, P0 +10.3 (met), P6 +0.1 (language 55.6, visual 55.5, cross 59.7)
    # bias 0.9 (6-epoch stage 1) with eight appearances per answer (`answer_variants` 8): every
    # visual module above recovered from 0.7 alone under mask training (P6 +0.1 to +2.1) though
    # magnitude pruning it cost 5.3 (f12's screen), so its job, one product and a read-out of 48
    # codes, fits in 30% of its weights. Now each answer box shows one of 8 sign codes of its
    # answer, its object class still the answer's: the visual encoder must map 384 codes onto
    # 48 answers, a many-to-one decoding. 384 templates sit between the 1,024 feed-forward units
    # of the two r-layers and the ~300 units' worth of weights left at 0.7, so the full model
    # has room and the visual module alone at 0.7 should not (lxmert-base's visual module is the
    # one without capacity to spare). Own data, pre-training and stage 1; P0 and P6 first
    "deep-h128-q12k-b90-b32-hs-v8": _merge(_Q12K, {"synth": {"bias": 0.9, "answer_variants": 8},
                                                   "pruning": {"batch_size": 32,
                                                               "head_shift": True}}),
    # measured on seed 0 (stopped after P0): not learned. Pre-training's loss fell from 2.5 to
    # 0.64 over epochs 12-32 (the object labels) while its `dev` stayed at 13-23 (V=1's broke
    # through at epoch 9: 32.4, then 44.7); P0 +24.5 (pre-trained 18.2, LMH 42.8) is met only
    # because neither model grounds: LMH's "other" 22.0 and "number" 29.7 are the spread test's
    # anti-prior chance (1/5), below the question-only anti-prior guess (46.8 at bias 0.9).
    # Half the appearances: 4 per answer, 192 codes, between V=1 (learned, P6 +1.4) and V=8
    # (not learned in 32 epochs)
    "deep-h128-q12k-b90-b32-hs-v4": _merge(_Q12K, {"synth": {"bias": 0.9, "answer_variants": 4},
                                                   "pruning": {"batch_size": 32,
                                                               "head_shift": True}}),
    # measured on seed 0 (stopped after pre-training): not learned either. `dev` 13-20 through
    # epoch 32 (loss 2.5 -> 1.3, not monotone); the object label read-out memorises the
    # pre-training images (docs/calibration/2026-12-06-variants-labels.txt), as v8's did: at
    # 1,875 pre-training images 192 codes have ~230 boxes each, where V=1's 48 had ~940. Two
    # appearances per answer (96 codes, ~470 boxes each): is any many-to-one decoding learned
    # at this pre-training size, and does it move P6 from V=1's +1.4?
    "deep-h128-q12k-b90-b32-hs-v2": _merge(_Q12K, {"synth": {"bias": 0.9, "answer_variants": 2},
                                                   "pruning": {"batch_size": 32,
                                                               "head_shift": True}}),
    # measured on seed 0 (stopped after P6): learned in part. Pre-training breaks through at
    # epoch 12-15 (V=1: 9) and ends at `dev` 35.1 (V=1: 44.7); the read-out of the answer boxes
    # of test images is 60.6% (V=1: 88.8%, V=4: 34.7%, V=8: 26.6%, chance ~25%). P0 +14.1
    # (pre-trained 34.2, LMH 48.4), full BCE 22.7 (its `dev` still rising), P6 +0.7 (language
    # alone 43.3, visual alone 42.6, cross alone 45.5): a visual task that pre-training cannot
    # learn well leaves every model weaker and the visual module no more fragile
    # bias 0.9's 12-epoch stage 1 (f12) with stage 2 at batch 16 (4,500 steps): f12's LPF mask
    # run at batch 32 flips 1.6% of the bits in its first epoch and drops `dev` 14 points under
    # the full model, then wins back 10.8 (P1 -3.1); halving the batch took q12k's P1 from -2.3
    # to -0.7 before. Stage-1 models are f12's (STAGE1_FROM); P1 first, then P4
    "deep-h128-q12k-b90-b16-hs-f12": _F12_B16,
    # measured on seed 0 (P4's first run stopped for the suite, then resumed): P1 -2.8 (LPF
    # mask 0.5 63.9, kept epoch 4, against 66.7; misses by 0.8, 0.3 closer than batch 32,
    # within stage 2's noise).
    # Epoch 1 flips 1.8% of the bits (`dev` 54.8), epoch 2 1.4% (63.3), then 63.4-63.6: more
    # steps make the first epoch's drop smaller (12 points under the full model, not 14) but
    # the masks settle 3 points under it all the same. P4 +7.0 (BCE mask 0.5 62.3 against the
    # control's 55.3; batch 32: 59.2 against 53.8), so P3 at 0.5 would be +10.7 (full BCE 51.6).
    # P3 +7.8 / +10.7 / +10.7 (BCE mask 0.3 59.4, its `dev` still rising at epoch 6: misses
    # by 0.2), P5 62.9% / +15.5 (met). P6 +0.8 (2026-12-07: language alone 57.7, visual alone
    # 56.9, cross alone 61.8; batch 32: +0.1): missed by 4.2
    # The same with 8 stage-2 epochs (6,000 steps at batch 16): BCE mask 0.3 missed P3 by 0.2
    # with its `dev` still rising at the 6th and last epoch (and the 0.5 run's too). Do two
    # more epochs carry P3 at 0.3 over +8, and keep 0.5 / 0.7? P3 first (0.3 first), then P1
    "deep-h128-q12k-b90-b16-hs-f12-e8": _merge(_F12_B16, {"pruning": {"epochs": 8}}),
    # measured on seed 0 (2026-12-07, partial: stopped after 0.3 for the session's end): BCE
    # mask 0.3 61.9, kept epoch 8 (`dev` 53.4, 55.3, 58.3, 59.8, 61.9, 62.2, 62.8, 62.8), so
    # P3 at 0.3 is +10.4 (6 epochs: +7.8). Then (2026-12-07, ninth session) BCE mask 0.5 63.1
    # and 0.7 62.7, both kept at epoch 6 of 8 (`dev` 62.9 / 62.7, then flat or falling): P3
    # +10.4 / +11.5 / +11.1, met at each s (6 epochs: +7.8 / +10.7 / +10.7). Stopped there
    # for the longtail regime below; P1, P4, P5 and P6 not run at 8 epochs. Then (2026-12-07,
    # tenth session): P4 +7.5 (63.1 against the control's 55.5; 6 epochs +7.0), P5 53.4% /
    # +16.3 (met), P1 -4.1 (LPF mask 0.5 62.7, kept epoch 2 at `dev` 63.4, then 61.4-63.1;
    # 6 epochs -2.8): two more epochs help P3 and cost P1 under this prior. P6 not run at 8
    # f12's stage 2 at batch 16 with the answer head and LMH's parameters nearly still (`lr`
    # 1e-5, a tenth of before) while the scores keep their rate (`score_lr` 1e-4, as before):
    # retraining only the LPF model's head with LMH (every weight kept) costs 18.8 points
    # (66.7 -> 47.9, docs/calibration/2026-12-06-f12-lpf-head-only.yaml) and the masks win back
    # 15.7 of them, so P1's miss may be the head's loss, not the masks'. Does keeping the LPF
    # head keep the mask run at the full model (P1)? Then P4 (its control's head at 1e-5 too)
    # and P3. Stage-1 models are f12's (STAGE1_FROM); this session's machine is new, so they
    # are trained again from the same seeds
    "deep-h128-q12k-b90-b16-hs-f12-h1e5": _merge(
        _F12_B16, {"pruning": {"lr": 1.0e-5, "score_lr": 1.0e-4}}
    ),
    # measured on seed 0 (2026-12-07): P1 -2.9 (LPF mask 0.5 63.8, kept epoch 5, against 66.7,
    # which the new machine reproduced): the head's rate does not move P1 (at 1e-4: -2.8). With
    # the head still the masks move more (epoch 1 flips 3.8% of the bits, at 1e-4 1.8%; `dev`
    # 56.9, 61.3, 62.5, 63.2, 63.6, 63.3) and settle where they did, so the 18.8 points the
    # head-only probe lost are not what P1 misses.
    # P4 +2.5 (BCE mask 0.5 55.2 against the control's 52.7; full BCE 51.6): missed by 0.5, and
    # P3 at 0.5 would be +3.6 (at 1e-4: +10.7). Most of the BCE model's gain needs the head
    # (and LMH's gate g(h), which trains at `lr` too and so stays near its start) to learn with
    # LMH; with the head nearly still the mask run wins 3.6. Stopped there (P3 at 0.3 / 0.7,
    # P5, P6 not run): the head at 1e-5 leaves P1 where it was and costs P3 and P4.
    # f12 at batch 16 on VQA-CP-like long-tailed priors (`synth.train_prior` longtail): per
    # type, training puts the bias share on the answers in a random order with shares halving
    # down it (47, 24, 13, 7, 5, 3% at bias 0.9; yes/no 65 / 35) and test puts it down the
    # reverse order. P1's miss points at LMH: its full stage-1 model is 10.6 below LPF's here
    # (lxmert-base on VQA-CP: 0.9 above), and LPF's prior-as-loss-stage-2 run keeps the full
    # model (docs/calibration/2026-12-07-f12-lpf-mask-lpf.yaml). With the "dominant" prior the
    # log-prior LMH adds says only "dominant or not"; on VQA-CP it ranks every answer of a type.
    # Does the graded prior lift full LMH to full LPF (checked first, at stage 1: LMH >= LPF - 1)
    # and with it P1, while the BCE model stays biased (P3)? Own data, pre-training and stage
    # 1; P0, P1, then P3, P4, P5
    "deep-h128-q12k-b90-b16-hs-f12-lt": _F12_B16_LT,
    # measured on seed 0 (2026-12-07, ninth session): the stage-1 check missed, P1 is met all
    # the same. Pre-trained 46.9, LMH 63.0 (P0 +16.1), LPF 75.1: LMH 12.1 below LPF (check: by
    # 11.1; "dominant" prior: 10.6 below). LPF mask 0.5 74.7 (kept epoch 6 of 6, `dev` 70.1,
    # 72.1, 74.6, 72.8, 74.3, 74.8): P1 -0.4 ("dominant" prior: -2.8). The question-only
    # anti-prior guess is 59.0 here (46.8 before; P5's margin is against it).
    # BCE 59.6 (98.7 / 48.2 / 45.7; "dominant" prior: 51.6); BCE mask 0.3 68.4, 0.5 69.0, 0.7
    # 69.2: P3 +8.8 / +9.4 / +9.6 (met). Head-only control 67.4: P4 +1.6 (missed by 1.4;
    # "dominant" prior: +7.0): retraining the head with LMH wins most of what the masks win.
    # P5 65.9% / +10.0 (met). So on seed 0 it meets P0, P1, P3, P5 and misses P4. P6 +0.2
    # (language alone 67.7, visual alone 67.5, cross alone 68.7): missed by 4.8
    # The same with 8 stage-2 epochs: under the `dominant` prior two more epochs lifted P3's
    # masks by 0.4-2.6 points (f12-e8); here both the masks' `dev` and the head-only control's
    # (67.3, 68.2 at epochs 5-6) were still rising at the end. Does P4 (missed by 1.4) move,
    # and do P1 and P3 hold? Stage-1 models are lt's (STAGE1_FROM); P4 first, then P1, P3
    "deep-h128-q12k-b90-b16-hs-f12-lt-e8": _merge(_F12_B16_LT, {"pruning": {"epochs": 8}}),
    # measured on seed 0 (2026-12-07, tenth session): P4 +1.6 (BCE mask 0.5 71.4 against the
    # control's 69.8; at 6 epochs 69.0 against 67.4): both gain 2.4 from two more epochs, so P4
    # still misses by 1.4. P1 +3.1 (LPF mask 0.5 78.2 against 75.1; kept epoch 8), P3 +11.3 /
    # +11.8 / +11.6 (masks 70.9 / 71.4 / 71.2 against 59.6): met, inside the paper's +11 to +14
    # f12-lt at the width of the one regime that ever met P6 (`paper-prod96-ol-p32x25-deep`,
    # hidden 64, feed-forward 256, the same 3 / 2 / 2 layers: +6.9 over 3 seeds, before stage 2
    # trained its masks): every P6 since ran on hidden 128, whose visual module recovers from
    # 0.7 alone (+0.1 to +2.1). The stage-1 and stage-2 settings that brought P0, P1, P3-P5 on
    # hidden 128 (12,000 questions, bias 0.9, long-tailed priors, a 12-epoch stage 1, batch 16)
    # were never tried at 64. Does a visual module at capacity for the per-box product keep P6
    # with them, and do P0, P1, P3-P5 survive half the width (shares 0.317 / 0.214 / 0.469;
    # at 128 0.314 / 0.211 / 0.476)? Own data (the same as lt's), pre-training and stage 1;
    # P6 first, then P0, P1, P4, P3, P5
    "deep-h64-q12k-b90-b16-hs-f12-lt": _merge(
        _F12_B16_LT, {"pretrain": {"architecture": {"hidden_size": 64, "intermediate_size": 256}}}
    ),
    # measured on seed 0 (2026-12-07, tenth session): P6 +2.3 (language alone 52.0, visual alone
    # 49.7, cross alone 52.5): nearer than at 128 (+0.2), missed by 2.7. Pre-trained 39.4, LMH
    # 67.7 (P0 +28.2), LPF 63.0 (LMH 4.7 above LPF here; at 128 12.1 below), BCE 47.0. P1 -2.8
    # (LPF mask 0.5 60.2: missed by 0.8), P4 +2.6 (52.9 against the control's 50.4: missed by
    # 0.4), P3 +6.0 / +5.9 / +6.6 (missed), P5 68.4% / -6.1 (the margin missed: 52.9 against
    # the anti-prior guess's 59.0). Half the width buys 2.1 points of P6 and costs P1, P3, P5
    # f12-lt with a fourth language layer: at hidden 128 the three-layer language module is
    # 0.314 of the budget weights, 0.001 under the bound (0.42 x 0.75); with four layers
    # the shares are 0.377 / 0.191 / 0.432 (lxmert-base 0.42 / 0.18 / 0.40, a 9-layer language
    # encoder against 5 visual and 5 cross-modal layers), so any regime that meets the issue
    # needs it. Do P0, P1, P3-P5 (met but P4 on seed 0 with three layers) hold with it, and
    # does a language module with more weights to spare at 0.7 open P6 (+0.2 with three)?
    # The visual module is unchanged, so a P6 gain would come from the language side alone.
    # Own pre-training and stage 1 (lt's data); 6 stage-2 epochs as lt; P6 first, then P4,
    # P1, P3, P0, P5
    "deep-h128-l4-q12k-b90-b16-hs-f12-lt": _F12_B16_LT_L4,
    # measured on seed 0 (2026-12-07, eleventh session; stopped after P6 for -mix below): P6
    # -0.1 (language alone 68.6, visual alone 68.7, cross alone 68.4; three layers: +0.2),
    # missed by 5.1. Pre-trained 44.6 (three layers 46.9), BCE 56.8 (59.6): the fourth layer
    # spares the language side no more than the third did; every module recovers from 0.7 alone
    # l4 with every box feature rotated by one fixed random rotation (`feature_mixing` 1). Why
    # the visual module recovers from 0.7 alone: the product code's thirds are coordinates, so
    # a visual projection unit needs two input weights to pass a product's two factors, and
    # 30% of its weights pass all of them; one-shot magnitude pruning did cost the visual module
    # most (-5.3 at 0.7, language -0.3; f12 b32), mask training chose the few weights that
    # matter. Region features from a detector are dense codes: in a rotated basis each
    # coordinate the encoder needs is a mix of all 96, and a unit that keeps 30% of its input
    # weights reads it at about a third of its signal with as much interference (a random 30%
    # of a dense row; no subset is much better), so the visual projection cannot be pruned
    # hard, where the language side's learned token embeddings can. Norms and noise are
    # unchanged, so the full models should learn as before. Fixed before the run: mixing 1
    # (real features are fully distributed), not a value tuned to P6. Own data, pre-training
    # and stage 1; P6 first, then P4, P1, P3, P0, P5
    "deep-h128-l4-q12k-b90-b16-hs-f12-lt-mix": _LT_MIX,
    # measured on seed 0 (2026-12-07, eleventh session): P6 +2.4 (language alone 67.2, visual
    # alone 64.8, cross alone 68.2; unmixed l4: -0.1), missed by 2.6; the visual run's `dev` was
    # still rising at its last epoch (65.0, 65.3). Pre-trained 49.5 (unmixed 44.6), BCE 59.7
    # (56.8): the dense basis costs the full models nothing and the visual module 3.9 points.
    # P4 +0.3 (BCE mask 0.5 67.1, the head-only control 66.8), missed by 2.7; P3 at 0.5 +7.4:
    # a uniform mask prunes the dense visual projection too, the control keeps it. P1 +0.9
    # (LPF mask 0.5 65.1 against the full LPF's 64.1; three layers unmixed: 75.1), met.
    # Then (twelfth session): P0 +15.0 (LMH 64.5), P5 73.1% / +8.1 (met), P3 +7.9 / +7.3 /
    # +6.7 (masks 67.7 / 67.1 / 66.5; missed by 0.1 / 0.7 / 1.3). Misses P3, P4, P6 on seed 0.
    # Seed 1 (thirteenth session, P6 and P4 only), before any regime meets P0-P7: every
    # comparison of regimes so far is on seed 0, with single runs ~1 point apart by chance;
    # how far do P6 (+2.4) and P4 (+0.3) move with a new seed of data, pre-training and stages?
    # Measured: seed 1's pre-training collapsed where seed 0's broke through (epoch 8-9, lr
    # 8e-4: loss 2.22, 2.28, then 3.09; `dev` 9.3, 8.5, then 7.7-14.0 to epoch 29, one answer
    # for most questions; seed 0: loss 2.02 at epoch 8 and `dev` 49-51 from epoch 18); stopped
    # there, no stage 1. -p5 below
    # -mix pre-trained at half the peak lr (5e-4): its seed 1 collapsed at the breakthrough with
    # the lr near its 1e-3 peak, as V=4's pre-training did (`-v4-p4x`, epoch 4-5), which 5e-4
    # cured (`-v4-p4x-lr5`: QA broke through at epoch 7). The value is that precedent's, not
    # tuned. Does pre-training break through on seeds 1 and 0, and does seed 0 keep its
    # pre-trained (49.5) and LMH (64.5) models? Own pre-training and stage 1; P0, seed 1 first
    "deep-h128-l4-q12k-b90-b16-hs-f12-lt-mix-p5": _LT_MIX_P5,
    # measured (2026-12-07, thirteenth session): pre-training broke through on both seeds
    # (`dev` 42.9 and 44.5 at the end; loss ~0.3, -mix's seed 0: 0.07). P0 seed 1 +35.3 (LMH
    # 79.3, pre-trained 44.1), seed 0 +21.4 (LMH 63.9, pre-trained 42.4): the LMH models differ
    # by 15.4 points between seeds. Seed 2: +31.0 (LMH 71.2, pre-trained 40.2); P0 over seeds
    # 0-2 +29.2, met on each. Next: P1-P7 here over seeds 0, 1, 2
    # Then (fourteenth session), seeds 0 / 1 / 2: P6 +6.2 / +5.7 / +3.9, mean +5.3 (met; seed 2
    # missed), P4 +2.3 / +2.2 / +4.7, mean +3.07 (met by 0.07; seeds 0, 1 missed); P3 at 0.5
    # +7.7 / +7.9 / +7.4 (0.1-0.6 short). BCE models 62.8 / 65.0 / 54.6, still rising at 12
    # epochs
    # -p5 with twice the stage-1 epochs (24): on -p5 the full models had not converged. Seed 0's
    # BCE model kept epoch 10 of 12 (`dev` 62.6, 62.0, 62.4 at the end, rising from 42.2),
    # seed 1's epoch 12 (65.1, still rising), the LMH models of seeds 1 and 2 epochs 12 and 11,
    # and those span 63.9-79.3 OOD between seeds; lxmert-base's stage 1 fine-tunes to a plateau.
    # Do the full models plateau, and do the seeds' models (and P0, P3, P4) draw closer? The
    # value is twice, fixed before the run; it is judged by the `dev` curves reaching a plateau
    # on every seed, not by a P-figure. Data and pre-training are -p5's (PRETRAIN_FROM); its
    # own stage 1 (~22 minutes a model on 2 cores); P0, then P4 and P6
    "deep-h128-l4-q12k-b90-b16-hs-f12-lt-mix-p5-f24": _merge(
        _LT_MIX_P5, {"finetune": {"epochs": 24}}
    ),
    # measured on seed 0 (2026-12-08, fifteenth session; stopped after the LMH model): pre-trained
    # 42.4 (-p5's, reproduced on a new VM), LMH 71.6 (12 epochs: 63.9), P0 +29.1; no plateau by
    # the fixed criterion (`dev` best of epochs 19-24 73.5, of 1-18 70.4). BCE 72.2 (12 epochs:
    # 62.8; kept epoch 23, no plateau either), above the LMH model; mask 0.5 77.3, so P3 at 0.5
    # +5.0 (-p5 +7.7). P4-P6 not run
    # -p5 with yes/no questions that check the question against the image (`yesno` "verify"):
    # under -p5 the BCE models answer 98.8-99.0% of the yes/no quarter of the test split, whose
    # test prior is the training one reversed (0.35 / 0.65; a question-only model gets 35%),
    # because a yes/no box says yes or no outright. lxmert's BCE model gets 48.24 on
    # VQA-CP v2's yes/no questions and LMH 81.84 (the main paper's table 1): there the image
    # overrides the prior far less. Under "verify" a yes/no box shows one of six keywords and the
    # answer is whether it is the asked one, a match of a question word against a box, as VQA's
    # "is the light on?" is. A mechanism, not a value: nothing is tuned, and the first check is
    # the BCE stage-1 model's yes/no accuracy beside the paper's 48 (no prediction of where it
    # lands). Own data, pre-training and stage 1; P4, P0, P5, then P6
    "deep-h128-l4-q12k-b90-b16-hs-f12-lt-mix-p5-yv": _merge(
        _LT_MIX_P5, {"synth": {"yesno": "verify"}}
    ),
    # measured on seed 0 (2026-12-08, fifteenth session): the match is not learned. BCE 56.7
    # with yes/no 54.0, the score of answering "yes" to all (-p5: 62.8, 99.0); LMH stage 1, mask
    # 0.5 and head-only control all 74.7 on yes/no, the score of "no" to all. P0 +28.1 (LMH 67.5,
    # pre-trained 39.4), P3 at 0.5 +13.4 (mask 70.1; 5.2 of it the yes/no flip), P4 +2.8
    # (control 67.3), missed by 0.2; P5 62.4% / +11.1 (met). Not a candidate as it stands
    # -mix with lxmert-base's word-embedding share: 2,262 embedding rows (`architecture.vocab_size`)
    # where the tokenizer has 116 tokens. lxmert-base's 30,522 x 768 word embeddings are 0.269
    # of its language group (23.4M of 87.1M) and VQA questions look up a few thousand of those
    # rows; here the 116 rows are 0.019 of it, so every language tensor is a layer's and P6's
    # "language alone" prunes 70% of the rows every question reads. 2,262 = 0.269 / 0.731 of the
    # four layers' 786,432 weights / 128 (derived, not tuned); shares 0.448 / 0.169 / 0.382
    # (lxmert-base 0.42 / 0.18 / 0.40; l4: 0.377 / 0.191 / 0.432). Probe first (seed 0,
    # docs/calibration/2026-12-07-diag-module-split.py.txt on -mix's BCE model): the visual
    # module's cost at 0.7 is in both its 12,800-weight projection and its R-layers: either
    # part alone costs about what the module does (OOD: projection alone 65.9, R-layers alone
    # 66.1, both 64.8; `dev` 64.7, 65.8, 65.3, ~1 point between runs; head-only control 66.8,
    # cross alone 68.2). Expected: language alone gains at most the 1.0 it trails cross alone
    # by, so P6 (+2.4 on -mix) stays short of 5 unless the visual side moves too; P4's uniform
    # mask gains whatever the embedding cost it (control unchanged). Own pre-training and stage
    # 1 (same data as -mix); P6, then P4, P1.
    # NOT RUN (thirteenth session): the same probe with only the language layers masked (the
    # 116-row embedding whole) found the embedding costs nothing at 0.7 on either prior: lt-mix
    # 67.4 against language alone's 67.2 (`dev` 67.2, 66.9), f12-e8-mix 60.0 against 58.9
    # (`dev` 58.9, 59.1). Free rows cannot lift language alone, so this predicts P6 and P4
    # unchanged; the knob stays for the module shares (lxmert-base's language share)
    "deep-h128-l4-q12k-b90-b16-hs-f12-lt-mix-v2262": _merge(
        _LT_MIX, {"pretrain": {"architecture": {"vocab_size": 2262}}}
    ),
    # -mix under the `dominant` prior with 8 stage-2 epochs (f12-e8's stage 2): under long-tailed
    # priors the head-only control is within 0.3-1.6 of mask 0.5 on every regime (P4 missed on
    # each), while under `dominant` f12-e8's masks beat it by 7.5 and met P3 at every s and P5.
    # The dense basis made the visual module the dear one (P6 +2.4 under long tails; dominant
    # unmixed three layers: +0.8 at 6 epochs, long tails +0.2), so does it carry P6 under the
    # prior where masks beat the control, and do P4 and P1 (f12-e8: -4.1) hold? Nothing is
    # tuned: mixing 1 and 8 epochs as before. Own data, pre-training and stage 1; P6, P4, P1
    "deep-h128-l4-q12k-b90-b16-hs-f12-e8-mix": _merge(
        _merge(_F12_B16, _L4), {"synth": {"feature_mixing": 1.0}, "pruning": {"epochs": 8}}
    ),
    # measured on seed 0 (2026-12-07, twelfth session): P6 +2.8 (language alone 58.9, visual
    # alone 56.1, cross alone 61.8; -mix under long tails +2.4), missed by 2.2. Pre-trained 51.7,
    # BCE 38.3 (unmixed three layers: 51.6): the BCE model leans on the prior harder here.
    # P4 +2.2 (BCE mask 0.5 61.1 against the control's 58.9; unmixed f12-e8 +7.5, -mix under
    # long tails +0.3), missed by 0.8; P3 at 0.5 would be +22.8 (the paper: +11 to +14).
    # P5 43.3% / +14.2 (met). P1 -1.5 (LPF mask 0.5 48.9 against 50.4) is met on a broken
    # full model: LPF's stage 1 kept its first epoch (`dev` 49.9, then 16-36), below the
    # pre-trained model (51.7); unmixed f12's LPF 66.7. P0 +1.8 (LMH 53.5; f12 +10.3), missed
    # by 8.2: under this prior the dense basis leaves stage 1 little to add. Not a candidate
    # V=4 with four times the pre-training questions on 3.8 times the pre-training images (7,635
    # images, ~900 answer boxes per code, V=1's count at 2,000 images) and 20 epochs (2.5 times
    # V=4's pre-training steps): V=4's object label read-out memorised its 2,000 pre-training
    # images (99% there, 34.7% on test images), so is the 192-code decoding learned from enough
    # images, and does a visual encoder that carries it make the visual module the costly one to
    # prune (P6)? Checked first: the read-out on test images (>= 80%, V=1: 88.8%); then P0, P6
    "deep-h128-q12k-b90-b32-hs-v4-p4x": _V4_P4X,
    # measured on seed 0 (stopped at pre-training's epoch 14 of 20): the decoding is learned,
    # the QA collapses. After epoch 8 the read-out of test images' answer boxes is 74.1% (V=4 at
    # 2,000 images: 34.7% after 32 epochs), but at epoch 4-5, after ~1,200 steps at an lr above
    # 8.7e-4 (V=1's whole pre-training had ~490 there), the loss jumped from 2.56 to 3.41
    # and `dev` has since alternated between 24.2 and 8.1 (one answer for every question).
    # The same at half the peak lr (5e-4), nothing else changed: does QA break through once the
    # longer pre-training is stable?
    "deep-h128-q12k-b90-b32-hs-v4-p4x-lr5": _merge(_V4_P4X, {"pretrain": {"lr": 5.0e-4}}),
    # measured on seed 0 (P0, P6): QA breaks through at epoch 7 (`dev` peak 44.9, pre-trained
    # OOD 39.7), read-out of test images' answer boxes 64.3% (the 80% check missed), P0 +15.4
    # (LMH 55.1), BCE at the prior (22.4), P6 +2.1 (language 41.6, visual 39.6, cross 47.4)
    # a smoke test of this script, not a regime: minutes, not hours
    "smoke": {"synth": {"questions": 600, "images": 300, "feature_dim": 16},
              "pretrain": {"epochs": 1}, "finetune": {"epochs": 1}, "pruning": {"epochs": 1}},
    # smoke's data and pre-training with a longer stage 1 (PRETRAIN_FROM): the test of that sharing
    "smoke-f2": {"synth": {"questions": 600, "images": 300, "feature_dim": 16},
                 "pretrain": {"epochs": 1}, "finetune": {"epochs": 2}, "pruning": {"epochs": 1}},
    # smoke-f2's stage 1, smoke's data and pre-training (both maps at once): the test of that
    "smoke-f2-s2": {"synth": {"questions": 600, "images": 300, "feature_dim": 16},
                    "pretrain": {"epochs": 1}, "finetune": {"epochs": 2},
                    "pruning": {"epochs": 1, "score_lr": 1.0e-2}},
    # smoke's stage 1 with stage 2 at its own score rate (STAGE1_FROM): the test of that sharing
    "smoke-s2": {"synth": {"questions": 600, "images": 300, "feature_dim": 16},
                 "pretrain": {"epochs": 1}, "finetune": {"epochs": 1},
                 "pruning": {"epochs": 1, "score_lr": 1.0e-2}},
}  # fmt: skip


def _outside(regime: str, blocks: tuple[str, ...]) -> dict:
    return {k: v for k, v in REGIMES[regime].items() if k not in blocks}


def _sharing(blocks: tuple[str, ...]) -> dict[str, str]:
    """Each regime that differs from an earlier one only in `blocks` -> the first such one."""
    origin_of: dict[str, str] = {}
    for name in REGIMES:
        origin = next((o for o in REGIMES if o not in origin_of
                       and _outside(o, blocks) == _outside(name, blocks)), name)  # fmt: skip
        if origin != name:
            origin_of[name] = origin
    return origin_of


# Regimes that differ from an earlier one only in `pruning` take its stage-1 models, and those
# that differ only in `finetune` and `pruning` its data and pre-training (under
# WORK/<that regime>/seed<N>/), instead of training the same ones again. Both maps point at
# the first such regime, so a `pruning` variant of a `finetune` variant finds the data and
# pre-training where its stage-1 origin found them.
STAGE1_FROM: dict[str, str] = _sharing(("pruning",))
PRETRAIN_FROM: dict[str, str] = _sharing(("finetune", "pruning"))

LATTICE = (0.3, 0.5, 0.7, 0.9)
TARGETS = {"P0": ">= 10", "P1": ">= -2", "P2": ">= -2", "P3": ">= 8 each", "P4": ">= 3",
           "P5": ">= 20% and >= 3", "P6": ">= 5", "P7": ">= 3, s_v < 0.7",
           "P8": ">= 2000, <= 1.5"}  # fmt: skip


class Seed:
    """One seed of one regime: its runs under `root`, each figure recorded in `record`."""

    def __init__(self, regime: str, seed: int, root: Path, record: dict, save: Callable) -> None:
        self.regime, self.seed, self.root = regime, seed, root
        self.over = REGIMES[regime]

        # stage 1 lives under `base`, data and pre-training under `pre_base`: the regime's own
        # root, or that of the regime it takes them from (STAGE1_FROM, PRETRAIN_FROM), so
        # variants of stage 1 or stage 2 train no model twice
        def home(origin: str | None) -> Path:
            return root if origin is None else root.parent.parent / origin / root.name

        self.base = home(STAGE1_FROM.get(regime))
        self.pre_base = home(PRETRAIN_FROM.get(regime))
        self.record, self.save = record, save
        self._data = None
        self._lattice: dict[str, dict] | None = None
        demo = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())
        self.demo = _merge(demo, {k: v for k, v in self.over.items() if k != "synth"})

    def figure(self, key: str, compute: Callable[[], Any]) -> Any:
        if key not in self.record:
            t0 = time.perf_counter()
            self.record[key] = compute()
            self.record.setdefault("seconds", {})[key] = round(time.perf_counter() - t0, 1)
            self.save()
        return self.record[key]

    @property
    def data(self):
        if self._data is None:
            root = self.pre_base / "data"
            spec = SynthSpec(seed=self.seed, **self.over.get("synth", {}))
            if not (root / "synth.json").is_file():
                generate(spec, root)
            # a knob added to SynthSpec since the data was made reads as its default, which
            # leaves the benchmark byte for byte as it was
            elif {**asdict(SynthSpec()), **json.loads((root / "synth.json").read_text())["spec"]
                  } != asdict(spec):  # fmt: skip
                sys.exit(f"{root}: made with another synth spec than regime {self.regime}'s; "
                         "use another --work")  # fmt: skip
            self._prepare_raw = yaml.safe_load((root / "prepare.yaml").read_text())
            cfg = validate_config(self._prepare_raw, "regime").data
            prepare(cfg)
            self._data = load_cache(cfg.resolved().cache_dir)
        return self._data

    def raw(self) -> dict:
        self.data  # noqa: B018 - generates the benchmark on first use
        raw = copy.deepcopy(self._prepare_raw)
        raw["pretrain"] = {**self.demo["pretrain"], "output_dir": str(self.pre_base / "pre"),
                           "seed": self.seed}  # fmt: skip
        raw["model"] = {"checkpoint": str(self.pre_base / "pre" / "model")}
        return raw

    def pretrained(self) -> dict:
        def run() -> dict:
            cfg = validate_config(self.raw(), "regime")
            m = fit("pretrain", cfg.data, cfg.model, None, cfg.pretrain,
                    cfg.blocks_yaml("data", "pretrain"))  # fmt: skip
            model, _ = load_checkpoint_model(self.pre_base / "pre" / "model", self.data, "required")
            return {"ood": m["test"]["overall"], "sel": m["selection"]["overall"],
                    "image_dependent": image_dependence(model, self.data),
                    "test": m["test"]}  # fmt: skip

        return self.figure("pretrained", run)

    def stage1(self, loss: str) -> dict:
        def run() -> dict:
            self.pretrained()
            ft = {**self.demo["finetune"], "output_dir": str(self.base / loss), "seed": self.seed}
            raw = {**self.raw(), "objective": {"name": loss}, "finetune": ft}
            c = validate_config(raw, "regime")
            m = fit("finetune", c.data, c.model, c.objective, c.finetune,
                    c.blocks_yaml("data", "model", "objective", "finetune"))  # fmt: skip
            model, _ = load_checkpoint_model(self.base / loss / "best", self.data, "required")
            return {"ood": m["test"]["overall"], "sel": m["selection"]["overall"],
                    "id": m.get("train", {}).get("overall"), "test": m["test"],
                    "image_dependent": image_dependence(model, self.data)}  # fmt: skip

        return self.figure(f"stage1_{loss}", run)

    def pruning_cfg(self, name: str, model: str, seed: int | None = None, **alloc: float):
        pruning = {k: v for k, v in self.demo["pruning"].items() if k not in ("sparsity",)}
        pruning.update(output_dir=str(self.root / f"prune_{name}"),
                       checkpoint=str(self.base / model / "best"),
                       seed=self.seed if seed is None else seed, **alloc)  # fmt: skip
        return validate_config({**self.raw(), "pruning": pruning}, "regime").resolved()

    def mask(self, name: str, model: str, seed: int | None = None, **alloc: float) -> dict:
        def run() -> dict:
            self.stage1(model)
            cfg = self.pruning_cfg(name, model, seed, **alloc)
            m = prune(cfg.data, cfg.pruning, None, cfg.blocks_yaml("data", "pruning"))
            realised = {g: m["sparsity"][g]["realised"] for g in ("language", "visual", "cross")}
            return {"ood": m["test"]["overall"], "sel": m["selection"]["overall"],
                    "kept_epoch": m["kept_epoch"], "realised": realised,
                    "overall": m["sparsity"]["overall"]["realised"]}  # fmt: skip

        return self.figure(f"mask_{name}", run)

    @staticmethod
    def _uniform_name(model: str, s: float, seed: int | None = None) -> str:
        return f"{model}_u{round(s * 100)}" + ("" if seed is None else f"_seed{seed}")

    def uniform(self, model: str, s: float, seed: int | None = None) -> dict:
        name = self._uniform_name(model, s, seed)
        return self.mask(name, model, seed, language=s, visual=s, cross=s)

    def lattice(self) -> dict[str, dict]:
        if self._lattice is None:
            self._lattice = self._train_lattice()
        return self._lattice

    def _train_lattice(self) -> dict[str, dict]:
        self.stage1("lpf")
        model, _ = load_checkpoint_model(self.base / "lpf" / "best", self.data, "required")
        sizes = group_sizes(model)
        points = {"uniform": (0.7, 0.7, 0.7)}
        for lang in LATTICE:
            for vis in LATTICE:
                try:
                    t = solve(0.7, sizes, language=lang, visual=vis, bounds=(0.3, 0.95))
                except ValueError:
                    continue
                if max(abs(x - 0.7) for x in (lang, vis, t["cross"])) < 1e-9:
                    continue  # the uniform point itself
                points[f"l{round(lang * 100)}_v{round(vis * 100)}"] = (lang, vis, t["cross"])
        out = {}
        for name, (lang, vis, cross) in points.items():
            if name == "uniform":
                out[name] = self.uniform("lpf", 0.7)
            else:
                out[name] = self.mask(f"lpf_{name}", "lpf", language=lang, visual=vis, cross=cross)
        return out

    # --- the properties -----------------------------------------------------------------------

    def P0(self) -> dict:
        lmh, pre = self.stage1("lmh")["ood"], self.pretrained()["ood"]
        return {"value": lmh - pre, "lmh": lmh, "pretrained": pre}

    def P1(self) -> dict:
        full, pruned = self.stage1("lpf")["ood"], self.uniform("lpf", 0.5)["ood"]
        return {"value": pruned - full, "full_lpf": full, "mask_0.5": pruned}

    def _best(self) -> tuple[str, dict]:
        grid = self.lattice()
        name = max(grid, key=lambda n: grid[n]["sel"])
        return name, grid[name]

    def P2(self) -> dict:
        name, best = self._best()
        full = self.stage1("lpf")["ood"]
        return {"value": best["ood"] - full, "best": name, "best_ood": best["ood"],
                "full_lpf": full}  # fmt: skip

    def P3(self) -> dict:
        full = self.stage1("bce")["ood"]
        gains = {f"s{s}": self.uniform("bce", s)["ood"] - full for s in (0.3, 0.5, 0.7)}
        return {"value": min(gains.values()), **gains, "full_bce": full}

    def P4(self) -> dict:
        masked = self.uniform("bce", 0.5)["ood"]
        control = self.mask("bce_head_only", "bce", mode="uniform", sparsity=0.0)["ood"]
        return {"value": masked - control, "mask_0.5": masked, "head_only": control}

    def P5(self) -> dict:
        def run() -> dict:
            self.uniform("bce", 0.5)
            name = self._uniform_name("bce", 0.5)
            cfg = self.pruning_cfg(name, "bce", language=0.5, visual=0.5, cross=0.5)
            model, _, _ = load_pruned(cfg.pruning, None)
            return {"image_dependent": image_dependence(model, self.data),
                    "anti_prior": anti_prior_accuracy(self.data)}  # fmt: skip

        g = self.figure("grounding_bce_u50", run)
        ood = self.uniform("bce", 0.5)["ood"]
        return {"value": g["image_dependent"], "margin": ood - g["anti_prior"], **g, "ood": ood}

    def P6(self) -> dict:
        alone = {}
        for group in ("language", "visual", "cross"):
            alloc = {g: (0.7 if g == group else 0.0) for g in ("language", "visual", "cross")}
            alone[group] = self.mask(f"bce_{group}_alone", "bce", **alloc)["ood"]
        return {"value": alone["language"] - alone["visual"], **alone}

    def P7(self) -> dict:
        name, best = self._best()
        uniform = self.lattice()["uniform"]
        return {"value": best["ood"] - uniform["ood"], "best": name,
                # requested 0.7 is realised within one weight per tensor, just below 0.7
                "spares_visual": best["realised"]["visual"] < 0.7 - 1e-3,
                "s_visual": best["realised"]["visual"], "uniform": uniform["ood"],
                "best_ood": best["ood"]}  # fmt: skip

    def P8(self) -> dict:
        dev = len(self.data.split("dev"))
        if self.seed != SEEDS_FOR_P8:
            return {"value": None, "dev_questions": dev}
        sels = [self.uniform("lpf", 0.7)["sel"]] + [
            self.uniform("lpf", 0.7, seed=self.seed + k)["sel"] for k in (100, 200)
        ]
        return {"value": statistics.stdev(sels), "dev_questions": dev, "sel": sels}


SEEDS_FOR_P8 = 0
PROPERTIES = tuple(f"P{i}" for i in range(9))


def table(results: dict, regime: str, seeds: list[int], props: tuple[str, ...]) -> str:
    lines = [f"regime {regime}", "| property | target | mean | " + " | ".join(
        f"seed {s}" for s in seeds) + " |", "|---" * (3 + len(seeds)) + "|"]  # fmt: skip
    for p in props:
        vals = [results.get(str(s), {}).get("properties", {}).get(p, {}) for s in seeds]
        mean = _means(vals)
        cells = [_cell(v) for v in vals]
        lines.append(f"| {p} | {TARGETS[p]} | {mean} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _means(vals: list[dict]) -> str:
    """Seed mean of the value and of every numeric part the seeds have in common."""
    keys = [k for k, x in vals[0].items() if isinstance(x, (int, float)) and x is not True
            and x is not False] if vals and vals[0] else []  # fmt: skip
    parts = []
    for k in keys:
        nums = [v[k] for v in vals if isinstance(v.get(k), (int, float))]
        if len(nums) == len(vals):
            parts.append(f"{statistics.fmean(nums):.1f}" if k == "value"
                         else f"{k} {statistics.fmean(nums):.1f}")  # fmt: skip
    return ", ".join(parts) if parts else "-"


def _cell(v: dict) -> str:
    if not v or v.get("value") is None:
        return f"dev {v['dev_questions']}" if v.get("dev_questions") else "-"
    extra = {k: x for k, x in v.items() if k != "value"}
    shown = ", ".join(f"{k} {x:.1f}" if isinstance(x, float) else f"{k} {x}"
                      for k, x in extra.items() if not isinstance(x, (dict, list)))  # fmt: skip
    return f"{v['value']:.1f} ({shown})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--regime", choices=sorted(REGIMES), default="demo")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--properties", nargs="+", choices=PROPERTIES, default=list(PROPERTIES))
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    out = args.json or args.work / "regime.json"
    results_all = json.loads(out.read_text()) if out.is_file() else {}
    results = results_all.setdefault(args.regime, {})
    config = {"overrides": REGIMES[args.regime],
              "demo": yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())}  # fmt: skip
    if results.get("config", config) != config:
        sys.exit(f"{out}: its {args.regime} figures were measured with another regime or demo "
                 "config; use another --json and --work")  # fmt: skip
    results["config"] = config
    results.pop("overrides", None)
    if SEEDS_FOR_P8 not in args.seeds and "P8" in args.properties:
        print(f"P8's seed spread is measured on seed {SEEDS_FOR_P8} only, not among --seeds")

    def save() -> None:
        # Re-read under a lock and replace only this regime's record: two regimes measured at
        # once into one JSON (each process holding the file as it started) lost each other's
        # figures before.
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out.with_name(out.name + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            current = json.loads(out.read_text()) if out.is_file() else {}
            write_json(out, {**current, args.regime: results})

    for seed in args.seeds:
        rec = results.setdefault(str(seed), {})
        s = Seed(args.regime, seed, args.work / args.regime / f"seed{seed}", rec, save)
        for p in args.properties:
            rec.setdefault("properties", {})[p] = getattr(s, p)()
            save()
            print(f"[{args.regime} seed {seed}] {p}: {rec['properties'][p]}", flush=True)
    print(table(results, args.regime, args.seeds, tuple(args.properties)))


if __name__ == "__main__":
    main()
