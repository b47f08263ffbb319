"""The VQA model: `transformers.LxmertModel` + LXMERT's answer head, and its checkpoint directory.

A model directory is an ordinary local `from_pretrained` directory of the backbone
(`config.json` + `model.safetensors`) with the question tokenizer beside it, plus
`answer_head.safetensors`, `answers.json` (the head's vocabulary) and `config.yaml` (the resolved
run config). `LxmertModel.from_pretrained(dir)` loads it with plain `transformers`.

`VQAModel.head` is the architecture of transformers' `LxmertVisualAnswerHead.logit_fc` (Linear
h -> 2h, GeLU with erf, LayerNorm eps 1e-12, Linear 2h -> answers), so a VQAModel is, weight for
weight, a `LxmertForQuestionAnswering` (`lxmert.*` the backbone, `answer_head.logit_fc.*` the
head; `hf_name`). With `question_answering=True` (what `tickets export` writes) the directory's
`config.json` and `model.safetensors` are that model's: `num_qa_labels` and `id2label` /
`label2id` from the answer vocabulary, so `LxmertForQuestionAnswering.from_pretrained(dir)` loads
the trained head in one line; `LxmertModel.from_pretrained(dir)` still loads the backbone (it
drops the `lxmert.` prefix and reports the `answer_head.*` keys as unused).
"""

from __future__ import annotations

import copy
import json
import os
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import LxmertConfig, LxmertForQuestionAnswering, LxmertModel
from transformers.utils import logging as hf_logging

from models.config import ArchitectureConfig
from vqa.atomic import recover_dir
from vqa.errors import InputError

HEAD_FILE = "answer_head.safetensors"
ANSWERS_FILE = "answers.json"
# In the order transformers prefers them; an `*.index.json` names the shards of a large model.
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
# A VQAModel's state-dict prefixes and LxmertForQuestionAnswering's for the same weights.
HF_PREFIXES = (("backbone.", "lxmert."), ("head.", "answer_head.logit_fc."))
# Keys LxmertForPreTraining (and ForQuestionAnswering) keep beside the backbone, which
# `LxmertModel.from_pretrained` skips (it strips their `lxmert.` prefix from the backbone's).
PRETRAINING_HEADS = ("cls.", "obj_predict_head.", "answer_head.")


class VQAModel(nn.Module):
    """LXMERT backbone + answer head on the pooled output: logits (B, A) over the answers."""

    def __init__(self, backbone: LxmertModel, num_answers: int) -> None:
        super().__init__()
        self.backbone = backbone
        h = backbone.config.hidden_size
        # LXMERT's VQA head (LxmertVisualAnswerHead): h -> 2h, GeLU, LayerNorm, 2h -> A.
        self.head = nn.Sequential(
            nn.Linear(h, 2 * h),
            nn.GELU(),
            nn.LayerNorm(2 * h, eps=1e-12),
            nn.Linear(2 * h, num_answers),
        )
        std = backbone.config.initializer_range
        for module in self.head:
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=std)
                nn.init.zeros_(module.bias)

    @property
    def num_answers(self) -> int:
        return self.head[-1].out_features

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        visual_feats: torch.Tensor,
        visual_pos: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Answer logits (B, A) and the pooled cross-modal output (B, H)."""
        logits, pooled, _, _ = self.forward_with_states(
            input_ids, attention_mask, visual_feats, visual_pos, encoder=False
        )
        return logits, pooled

    def forward_with_states(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        visual_feats: torch.Tensor,
        visual_pos: torch.Tensor,
        encoder: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Answer logits (B, A), the pooled output (B, H), the cross-modal layers' visual output
        (B, K, H) and, with `encoder`, the last object-relationship layer's states (B, K, H)
        (else None)."""
        out = self.backbone(
            input_ids=input_ids,
            attention_mask=attention_mask,
            visual_feats=visual_feats,
            visual_pos=visual_pos,
            output_hidden_states=encoder,
        )
        # vision_hidden_states: one per r-layer, then one per cross-modal layer
        last_r = out.vision_hidden_states[self.backbone.config.r_layers - 1] if encoder else None
        return self.head(out.pooled_output), out.pooled_output, out.vision_output, last_r


def hf_name(name: str) -> str:
    """The `LxmertForQuestionAnswering` state-dict name of a VQAModel state-dict name:
    `backbone.encoder...` -> `lxmert.encoder...`, `head.3.bias` -> `answer_head.logit_fc.3.bias`."""
    for ours, theirs in HF_PREFIXES:
        if name.startswith(ours):
            return theirs + name.removeprefix(ours)
    raise ValueError(f"{name!r} is not the name of a VQAModel weight")


def vqa_name(name: str) -> str | None:
    """The VQAModel state-dict name of a `LxmertForQuestionAnswering` one (inverse of `hf_name`);
    None for a name outside its backbone and answer head."""
    for ours, theirs in HF_PREFIXES:
        if name.startswith(theirs):
            return ours + name.removeprefix(theirs)
    return None


@torch.no_grad()
def question_answering_model(model: VQAModel, answers: list[str]) -> LxmertForQuestionAnswering:
    """`model` as a `transformers.LxmertForQuestionAnswering` sharing its tensors (no copy):
    `config.num_qa_labels` = the number of answers, `id2label` / `label2id` the vocabulary.
    `model` must be plain (masks baked in: `pruning.export`)."""
    if len(answers) != model.num_answers or len(set(answers)) != len(answers):
        raise ValueError(f"{len(answers)} answers (distinct: {len(set(answers))}) for a head of "
                         f"{model.num_answers}")  # fmt: skip
    state = {hf_name(k): v for k, v in model.state_dict().items()}
    if any(".parametrizations." in k for k in state):
        raise ValueError("question_answering_model needs a model without masks (bake them in)")
    config = copy.deepcopy(model.backbone.config)
    config.num_qa_labels = len(answers)
    config.id2label = dict(enumerate(answers))
    config.label2id = {a: i for i, a in enumerate(answers)}
    with torch.device("meta"):  # no memory, no random init: every tensor is assigned below
        qa = LxmertForQuestionAnswering(config)
    qa.load_state_dict(state, strict=True, assign=True)
    return qa.eval()


def small_backbone(cfg: ArchitectureConfig, vocab_size: int, feature_dim: int) -> LxmertModel:
    """A new, randomly initialised LXMERT of the sizes in `cfg` (demo and test models)."""
    config = LxmertConfig(
        vocab_size=vocab_size,
        hidden_size=cfg.hidden_size,
        num_attention_heads=cfg.num_attention_heads,
        intermediate_size=cfg.intermediate_size,
        l_layers=cfg.l_layers,
        x_layers=cfg.x_layers,
        r_layers=cfg.r_layers,
        hidden_dropout_prob=cfg.dropout,
        attention_probs_dropout_prob=cfg.dropout,
        visual_feat_dim=feature_dim,
        visual_pos_dim=4,
        initializer_range=cfg.initializer_range,
    )
    return LxmertModel(config)


def weight_file(path: Path) -> Path | None:
    """The weights `from_pretrained` reads in `path` (first of `WEIGHT_FILES`), or None."""
    return next((path / f for f in WEIGHT_FILES if (path / f).is_file()), None)


def check_model_dir(path: str | os.PathLike[str], field: str = "model.checkpoint") -> Path:
    """`path` if it is a complete local checkpoint directory, else an `InputError` naming it
    (and the config `field` it came from). A sharded checkpoint needs every shard it lists."""
    path = Path(path)
    recover_dir(path)
    if not path.is_dir():
        raise InputError(f"{path}: checkpoint directory not found ({field})")
    if not (path / "config.json").is_file():
        raise InputError(f"{path}: incomplete checkpoint directory, no config.json")
    weights = weight_file(path)
    if weights is None:
        raise InputError(
            f"{path}: incomplete checkpoint directory, no model.safetensors or pytorch_model.bin "
            "(nor the *.index.json of a sharded one)"
        )
    if weights.name.endswith(".index.json"):
        for shard in _shards(weights):
            if not (path / shard).is_file():
                raise InputError(f"{weights}: shard {shard} not found in {path}")
    return path


def _shards(index: Path) -> list[str]:
    """The shard file names of a `*.index.json` (its `weight_map` values)."""
    try:
        weight_map = json.loads(index.read_text()).get("weight_map")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        raise InputError(f"{index}: not a JSON object with a 'weight_map'") from None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise InputError(f"{index}: field 'weight_map' must map weight names to shard files")
    return sorted(set(weight_map.values()))


def _keys(keys: list[str], shown: int = 3) -> str:
    return ", ".join(keys[:shown]) + (", ..." if len(keys) > shown else "")


def check_loading_info(weights: Path, info: dict, expected: int) -> str | None:
    """Refuse (`InputError` naming `weights`) a load that left any of the `expected` backbone
    weights missing or of another shape, or that met keys other than LXMERT's pre-training heads;
    return a one-line summary of the head keys it skipped (None if there were none)."""
    bad = f"{weights}: cannot load the LXMERT checkpoint"
    if info.get("error_msgs"):
        raise InputError(f"{bad} ({str(info['error_msgs'][0]).splitlines()[0]})")
    missing = sorted(info.get("missing_keys", ()))
    unexpected = sorted(info.get("unexpected_keys", ()))
    heads = [k for k in unexpected if k.startswith(PRETRAINING_HEADS)]
    others = [k for k in unexpected if not k.startswith(PRETRAINING_HEADS)]
    if missing:
        instead = (
            f"; the file has instead {len(others)} other keys such as {others[0]}" if others else ""
        )
        raise InputError(
            f"{bad}: {len(missing)} of {expected} backbone weights missing "
            f"({_keys(missing)}){instead}"
        )
    mismatched = sorted(info.get("mismatched_keys", ()))
    if mismatched:
        key, stored, wanted = mismatched[0]
        raise InputError(
            f"{bad}: {len(mismatched)} weights of another shape than config.json says, e.g. {key} "
            f"{tuple(stored)} in the file, {tuple(wanted)} by the config"
        )
    if others:
        raise InputError(f"{bad}: {len(others)} keys that are not LXMERT weights ({_keys(others)})")
    if not heads:
        return None
    counts = Counter(k.split(".")[0] for k in heads)
    parts = ", ".join(f"{name} {n}" for name, n in sorted(counts.items()))
    return (
        f"{weights}: LXMERT backbone loaded; {len(heads)} weights of its pre-training heads "
        f"left unused ({parts})"
    )


def load_backbone(
    path: str | os.PathLike[str],
    field: str = "model.checkpoint",
    log: Callable[[str], None] | None = None,
) -> LxmertModel:
    """The LXMERT backbone of a local directory (one file or shards); never a hub download.

    Weights that do not fit are refused (`check_loading_info`) rather than left at their random
    initialisation; the summary of skipped pre-training heads goes to `log` (default stderr)."""
    path = check_model_dir(path, field)
    weights = weight_file(path)
    assert weights is not None  # check_model_dir found it
    hf_logging.disable_progress_bar()
    verbosity = hf_logging.get_verbosity()
    # transformers' multi-line load report would say on stderr what the one line below says.
    hf_logging.set_verbosity_error()
    try:
        backbone, info = LxmertModel.from_pretrained(
            str(path), local_files_only=True, output_loading_info=True, ignore_mismatched_sizes=True
        )
    except Exception as e:  # safetensors and transformers raise many types for a bad file
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(f"{path}: cannot load the LXMERT checkpoint ({first})") from None
    finally:
        hf_logging.set_verbosity(verbosity)
    summary = check_loading_info(weights, info, len(backbone.state_dict()))
    if summary is not None:
        (log or (lambda m: print(m, file=sys.stderr)))(summary)
    return backbone


def load_head(model: VQAModel, path: Path, answers: list[str]) -> bool:
    """Load the directory's answer head into `model` if it was trained on `answers`."""
    head_file, answers_file = path / HEAD_FILE, path / ANSWERS_FILE
    if not (head_file.is_file() and answers_file.is_file()):
        return False
    if json.loads(answers_file.read_text()) != answers:
        return False
    try:
        state = load_file(str(head_file))
    except Exception as e:  # safetensors raises its own error types on a corrupt header
        raise InputError(f"{head_file}: unreadable answer head ({e})") from None
    try:
        model.head.load_state_dict(state)
    except RuntimeError:
        raise InputError(f"{head_file}: answer head does not fit this model's sizes") from None
    return True


def restore_model(model: VQAModel, path: Path, answers: list[str]) -> None:
    """Load backbone and head of a model directory this project wrote into `model`, in place."""
    model.backbone.load_state_dict(load_backbone(path).state_dict())
    if not load_head(model, path, answers):
        raise InputError(f"{path}: no answer head for this answer vocabulary ({HEAD_FILE})")


def save_model_dir(
    model: VQAModel,
    answers: list[str],
    tokenizer,
    config_yaml: str,
    out: Path,
    question_answering: bool = False,
) -> None:
    """Write the model directory into `out`, an existing empty directory (callers go atomic);
    with `question_answering`, its weights and `config.json` as `LxmertForQuestionAnswering`'s."""
    hf_logging.disable_progress_bar()  # one bar per shard clutters the epoch log
    if question_answering:
        question_answering_model(model, answers).save_pretrained(str(out))
    else:
        model.backbone.save_pretrained(str(out))
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.head.state_dict().items()}
    save_file(state, str(out / HEAD_FILE))
    (out / ANSWERS_FILE).write_text(json.dumps(answers, indent=1) + "\n")
    tokenizer.save_pretrained(str(out))
    (out / "config.yaml").write_text(config_yaml)


def pick_device(choice: str) -> torch.device:
    """CUDA when present (or asked for), else the CPU."""
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise InputError("model.device is 'cuda' but no CUDA device is available")
        return torch.device("cuda")
    return torch.device("cpu")


def describe_device(device: torch.device) -> str:
    """What a run trains on, for its results: ``cpu``, or ``cuda:<index> <name> <uuid>`` of the
    current CUDA device (the UUID names the physical GPU, whatever CUDA_VISIBLE_DEVICES says)."""
    if device.type != "cuda":
        return device.type
    index = torch.cuda.current_device() if device.index is None else device.index
    props = torch.cuda.get_device_properties(index)
    uuid = getattr(props, "uuid", None)
    return f"cuda:{index} {props.name}" + (f" GPU-{uuid}" if uuid is not None else "")
