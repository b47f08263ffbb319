"""Packed masks (1 bit per weight) and the pruned-model export (DESIGN.md §5).

A mask file is one safetensors file: a flat uint8 tensor per masked weight (``numpy.packbits`` of
the flattened 0/1 mask, ``bitorder="little"``) and two header metadata strings: ``format`` and
``masks``, the JSON of ``{name: {"shape", "num_pruned", "requested", "group"}}``. Nothing is ever
unpickled. The names are the weights' state-dict names in the model the export writes:

- ``tickets-packed-masks/2`` (:data:`FORMAT`, written): a VQAModel's masks under the names of
  ``transformers.LxmertForQuestionAnswering`` (``lxmert.encoder.layer.0...weight``;
  :func:`models.vqa_model.hf_name`), so the keys of an exported directory's
  ``masks.safetensors`` are keys of the state dict its ``model.safetensors`` loads into; any other
  module's masks under its own names.
- ``tickets-packed-masks/1`` (:data:`FORMAT_V1`, read only, as in the checkpoints of earlier
  sweeps): every mask under the masked module's own names (``backbone.encoder...weight``).

:func:`load_masks` reads both into the project's masked VQAModel and copies only the binary
``mask`` buffers; the scores are left as they are, so a later
:func:`pruning.masks.recompute_masks` re-binarises from the model's own scores.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn
from torch.nn.utils import parametrize
from transformers import LxmertModel

from models.vqa_model import VQAModel, hf_name, save_model_dir
from pruning.masks import ScoreMask, has_masks, sparsity_report
from vqa.atomic import atomic_dir, atomic_path, write_json
from vqa.errors import InputError

FORMAT = "tickets-packed-masks/2"
FORMAT_V1 = "tickets-packed-masks/1"
MASKS_FILE = "masks.safetensors"
SPARSITY_FILE = "sparsity.json"


def named_score_masks(model: nn.Module) -> list[tuple[str, ScoreMask]]:
    """(plain weight name, its ScoreMask) for every masked weight, in ``named_modules()`` order."""
    found = []
    for module_name, module in model.named_modules():
        if parametrize.is_parametrized(module, "weight"):
            name = f"{module_name}.weight" if module_name else "weight"
            found += [(name, p) for p in module.parametrizations.weight if isinstance(p, ScoreMask)]
    return found


def pack_masks(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, dict]]:
    """Packed bits (uint8, 1 bit per weight, little bit order) and metadata of every mask."""
    bits, meta = {}, {}
    for name, p in named_score_masks(model):
        flat = (p.mask.detach() != 0).flatten().to(device="cpu", dtype=torch.uint8).numpy()
        bits[name] = torch.from_numpy(np.packbits(flat, bitorder="little"))
        meta[name] = {
            "shape": list(p.mask.shape),
            "num_pruned": int((p.mask == 0).sum()),
            "requested": p.requested,
            "group": p.group,
        }
    return bits, meta


def unpack_mask(bits: torch.Tensor, shape: list[int]) -> torch.Tensor:
    """The float32 0/1 mask of ``shape`` packed in ``bits`` (inverse of :func:`pack_masks`)."""
    numel = int(np.prod(shape, dtype=np.int64))
    if bits.dtype != torch.uint8 or bits.dim() != 1 or bits.numel() != (numel + 7) // 8:
        raise ValueError(
            f"{bits.numel()} {bits.dtype} bytes cannot hold a mask of shape {list(shape)}"
        )
    flat = np.unpackbits(bits.cpu().numpy(), count=numel, bitorder="little")
    return torch.from_numpy(flat.astype(np.float32)).reshape(shape)


def file_name(model: nn.Module, name: str, fmt: str = FORMAT) -> str:
    """The name a mask file of format ``fmt`` gives the mask of ``model``'s weight ``name``."""
    return hf_name(name) if fmt == FORMAT and isinstance(model, VQAModel) else name


def save_masks(model: nn.Module, path: str | os.PathLike[str]) -> None:
    """Write the model's masks, packed, to one safetensors file at ``path``, atomically (format
    :data:`FORMAT`: a VQAModel's masks under LxmertForQuestionAnswering's names)."""
    bits, meta = pack_masks(model)
    bits = {file_name(model, n): b for n, b in bits.items()}
    meta = {file_name(model, n): m for n, m in meta.items()}
    with atomic_path(path) as tmp:
        save_file(bits, str(tmp), metadata={"format": FORMAT, "masks": json.dumps(meta)})


def _read_mask_file(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, dict], str]:
    if not path.is_file():
        raise InputError(f"{path}: mask file not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            bits = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
    except Exception as e:  # safetensors raises its own error types on a bad header
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(f"{path}: not a safetensors file ({first})") from None
    fmt = header.get("format")
    if fmt not in (FORMAT, FORMAT_V1):
        raise InputError(f"{path}: not a packed mask file (format {fmt!r}, expected {FORMAT!r} "
                         f"or {FORMAT_V1!r})")  # fmt: skip
    try:
        meta = json.loads(header["masks"])
        ok = isinstance(meta, dict) and set(meta) == set(bits)
        ok = ok and all(isinstance(v, dict) for v in meta.values())
    except (KeyError, ValueError):
        ok = False
    if not ok:
        raise InputError(f"{path}: corrupt mask file (metadata does not list its tensors)")
    return bits, meta, fmt


@torch.no_grad()
def load_masks(model: nn.Module, path: str | os.PathLike[str]) -> None:
    """Copy the masks of a :func:`save_masks` file (either format) into the model's ScoreMask
    buffers; the model must carry the same masks (same names, shapes and zero counts; for masks of
    a ``global`` pool, the same total count, each mask then taking the count it loads). All or
    nothing. Errors name the masks as the file does."""
    path = Path(path)
    bits, meta, fmt = _read_mask_file(path)
    targets = {file_name(model, n, fmt): p for n, p in named_score_masks(model)}
    if extra := [n for n in bits if n not in targets]:
        raise InputError(f"{path}: mask for {extra[0]}, which the model has no mask for")
    if missing := [n for n in targets if n not in bits]:
        raise InputError(f"{path}: no mask for {missing[0]} (the model has one)")
    masks, zeros = {}, {}
    for name, p in targets.items():
        shape = meta[name].get("shape")
        if shape != list(p.mask.shape):
            raise InputError(f"{path}: {name} has shape {shape}, the model {list(p.mask.shape)}")
        try:
            masks[name] = unpack_mask(bits[name], shape)
        except ValueError as e:
            raise InputError(f"{path}: corrupt mask for {name} ({e})") from None
        zeros[name] = int((masks[name] == 0).sum())
        if zeros[name] != p.num_pruned and p.pool is None:
            raise InputError(
                f"{path}: {name} has {zeros[name]} pruned weights, the model's mask {p.num_pruned}"
            )
    for pool in {p.pool for p in targets.values()} - {None}:
        names = [n for n, p in targets.items() if p.pool == pool]
        total = sum(zeros[n] for n in names)
        if total != (expected := sum(targets[n].num_pruned for n in names)):
            raise InputError(f"{path}: the {pool} masks have {total} pruned weights in all, "
                             f"the model's {expected}")  # fmt: skip
    for name, p in targets.items():
        p.mask.copy_(masks[name].to(dtype=p.mask.dtype, device=p.mask.device))
        p.num_pruned = zeros[name]
        p.invalidate()


@torch.no_grad()
def _baked_copy(model: VQAModel) -> VQAModel:
    """A plain VQAModel with W ⊙ m baked in, sharing every other tensor with ``model`` (cheaper
    than ``deepcopy`` + :func:`remove_masks`, which would copy the whole model)."""
    state = {k: v for k, v in model.state_dict().items() if ".parametrizations." not in k}
    for name, _ in named_score_masks(model):
        module_name, attr = name.rsplit(".", 1)
        state[name] = getattr(model.get_submodule(module_name), attr).detach()  # W ⊙ m
    with torch.device("meta"):  # no memory, no random init: every tensor is assigned below
        baked = VQAModel(LxmertModel(copy.deepcopy(model.backbone.config)), model.num_answers)
    baked.load_state_dict(state, strict=True, assign=True)
    return baked.eval()


@torch.no_grad()
def export_pruned(
    model: VQAModel,
    answers: list[str],
    tokenizer,
    config_yaml: str,
    out_dir: str | os.PathLike[str],
) -> dict:
    """Write ``out_dir`` atomically: the model directory with W ⊙ m baked in, as
    ``LxmertForQuestionAnswering`` (:func:`models.vqa_model.save_model_dir` with
    ``question_answering``: ``LxmertForQuestionAnswering.from_pretrained(out_dir)`` predicts what
    ``model`` predicts, ``LxmertModel.from_pretrained(out_dir)`` gives its backbone),
    ``masks.safetensors`` (keyed by that model's state-dict names) and ``sparsity.json`` (the
    sparsity report plus ``tensors``: the same names -> group, numel, pruned, realised, and zeros,
    the exact zeros of the exported weight). Returns the sparsity report. ``model`` (masked) is
    left unchanged."""
    if not has_masks(model):
        raise ValueError("export_pruned needs a masked model (pruning.masks.apply_masks)")
    report = sparsity_report(model)
    baked = _baked_copy(model)
    weights = dict(baked.named_parameters())
    tensors = {}
    for name, p in named_score_masks(model):
        pruned, numel = int((p.mask == 0).sum()), p.mask.numel()
        tensors[hf_name(name)] = {
            "group": p.group,
            "numel": numel,
            "pruned": pruned,
            "realised": pruned / numel,
            "zeros": int((weights[name] == 0).sum()),
        }
    with atomic_dir(out_dir) as tmp:
        save_model_dir(baked, answers, tokenizer, config_yaml, tmp, question_answering=True)
        save_masks(model, tmp / MASKS_FILE)
        write_json(tmp / SPARSITY_FILE, {**report, "tensors": tensors})
    return report
