"""The VQA model: `transformers.LxmertModel` + LXMERT's answer head, and its checkpoint directory.

A model directory is an ordinary local `from_pretrained` directory of the backbone
(`config.json` + `model.safetensors`) with the question tokenizer beside it, plus
`answer_head.safetensors`, `answers.json` (the head's vocabulary) and `config.yaml` (the resolved
run config). `LxmertModel.from_pretrained(dir)` loads it with plain `transformers`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import LxmertConfig, LxmertModel
from transformers.utils import logging as hf_logging

from models.config import ArchitectureConfig
from vqa.atomic import recover_dir
from vqa.errors import InputError

HEAD_FILE = "answer_head.safetensors"
ANSWERS_FILE = "answers.json"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


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
        out = self.backbone(
            input_ids=input_ids,
            attention_mask=attention_mask,
            visual_feats=visual_feats,
            visual_pos=visual_pos,
        )
        return self.head(out.pooled_output), out.pooled_output


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


def check_model_dir(path: str | os.PathLike[str], field: str = "model.checkpoint") -> Path:
    """`path` if it is a complete local checkpoint directory, else an `InputError` naming it
    (and the config `field` it came from)."""
    path = Path(path)
    recover_dir(path)
    if not path.is_dir():
        raise InputError(f"{path}: checkpoint directory not found ({field})")
    if not (path / "config.json").is_file():
        raise InputError(f"{path}: incomplete checkpoint directory, no config.json")
    if not any((path / f).is_file() for f in WEIGHT_FILES):
        raise InputError(f"{path}: incomplete checkpoint directory, no {' or '.join(WEIGHT_FILES)}")
    return path


def load_backbone(path: str | os.PathLike[str], field: str = "model.checkpoint") -> LxmertModel:
    """The LXMERT backbone of a local directory; never a hub download."""
    path = check_model_dir(path, field)
    hf_logging.disable_progress_bar()
    try:
        return LxmertModel.from_pretrained(str(path), local_files_only=True)
    except Exception as e:  # safetensors and transformers raise many types for a bad file
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(f"{path}: cannot load the LXMERT checkpoint ({first})") from None


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
    model: VQAModel, answers: list[str], tokenizer, config_yaml: str, out: Path
) -> None:
    """Write the model directory into `out`, an existing empty directory (callers go atomic)."""
    hf_logging.disable_progress_bar()  # one bar per shard clutters the epoch log
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
