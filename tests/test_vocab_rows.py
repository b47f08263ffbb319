"""`pretrain.architecture.vocab_size`: word-embedding rows beyond the tokenizer's tokens (as
lxmert-base's 30,522-token vocabulary against the few thousand VQA questions read)."""

from __future__ import annotations

from pathlib import Path

import torch
import yaml

from models.config import ArchitectureConfig
from models.structure import group_sizes
from models.vqa_model import small_backbone
from search.config import validate_config
from tests.conftest import TINY_ARCH, Bench, run_tickets, tiny_run_config
from vqa.tokenize import load_tokenizer


def tokens(raw: dict) -> int:
    return len(load_tokenizer(Path(raw["data"]["cache_dir"]) / "tokenizer"))


def test_extra_rows_are_built_saved_never_read_and_fine_tuned_from(
    tiny_bench: Bench, tmp_path: Path
) -> None:
    from transformers import LxmertModel

    from models.train import fit

    raw = tiny_run_config(tiny_bench, tmp_path)
    n = tokens(raw)
    plain = yaml.safe_load(validate_config(raw, "run").blocks_yaml("pretrain"))
    assert "vocab_size" not in plain["pretrain"]["architecture"]  # old runs still resume
    raw["pretrain"].update(epochs=1, weight_decay=0.0)
    raw["pretrain"]["architecture"] = {**TINY_ARCH, "vocab_size": n + 40}
    cfg = validate_config(raw, "run")
    saved = cfg.blocks_yaml("data", "pretrain")
    assert yaml.safe_load(saved)["pretrain"]["architecture"]["vocab_size"] == n + 40

    fit("pretrain", cfg.data, cfg.model, None, cfg.pretrain, saved)
    backbone = LxmertModel.from_pretrained(tmp_path / "pre" / "model")
    assert backbone.config.vocab_size == n + 40
    rows = backbone.embeddings.word_embeddings.weight.detach()
    assert rows.shape == (n + 40, TINY_ARCH["hidden_size"])
    sizes = group_sizes(backbone)
    layers = sum(m.weight.numel() for m in backbone.encoder.layer.modules()
                 if isinstance(m, torch.nn.Linear))  # fmt: skip
    assert sizes["language"] == (n + 40) * TINY_ARCH["hidden_size"] + layers
    # No token looks the extra rows up, so (no weight decay) training leaves them as initialised
    # (fit seeds, then builds the backbone first), while the rows of the questions' words moved
    # (single characters stay unread: every word of the questions is a whole token).
    torch.manual_seed(0)
    arch = ArchitectureConfig(**TINY_ARCH, vocab_size=n + 40)
    init = small_backbone(arch, n + 40, backbone.config.visual_feat_dim)
    init_rows = init.embeddings.word_embeddings.weight.detach()
    assert torch.equal(rows[n:], init_rows[n:])
    moved = (rows[:n] != init_rows[:n]).any(dim=1)
    assert moved.sum() >= 20

    # Stage 1 loads it against the same data cache.
    raw["finetune"] = {"output_dir": str(tmp_path / "ft"), "epochs": 1, "batch_size": 32}
    cfg = validate_config(raw, "run")
    metrics = fit("finetune", cfg.data, cfg.model, cfg.objective, cfg.finetune,
                  cfg.blocks_yaml("data", "model", "objective", "finetune"))  # fmt: skip
    assert metrics["complete"]


def test_fewer_rows_than_tokens_is_one_line_exit_2_nothing_written(
    tiny_bench: Bench, tmp_path: Path
) -> None:
    raw = tiny_run_config(tiny_bench, tmp_path)
    n = tokens(raw)
    raw["pretrain"]["architecture"] = {**TINY_ARCH, "vocab_size": n - 1}
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(raw, sort_keys=False))
    done = run_tickets("pretrain", config, timeout=300)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert f"pretrain.architecture.vocab_size: {n - 1} is below the tokenizer's {n}" in lines[0]
    assert not (tmp_path / "pre").exists()
