"""Shared fixtures: the synthetic benchmarks, generated and prepared once per session."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from search.config import load_config  # noqa: E402
from vqa.cache import PreparedData, load_cache  # noqa: E402
from vqa.config import DataConfig  # noqa: E402
from vqa.prepare import prepare  # noqa: E402
from vqa.synth import SynthSpec, generate  # noqa: E402


@dataclass
class Bench:
    root: Path
    meta: dict
    config: DataConfig
    data: PreparedData


def make_bench(root: Path, **spec: object) -> Bench:
    """Generate a synthetic benchmark under `root` and prepare its cache."""
    meta = generate(SynthSpec(**spec), root)
    config = load_config(root / "prepare.yaml").data
    prepare(config)
    return Bench(root, meta, config, load_cache(config.resolved().cache_dir))


@pytest.fixture(scope="session")
def vqacp_bench(tmp_path_factory: pytest.TempPathFactory) -> Bench:
    return make_bench(tmp_path_factory.mktemp("vqacp") / "bench", dataset="vqacp_v2")


@pytest.fixture(scope="session")
def vqavs_bench(tmp_path_factory: pytest.TempPathFactory) -> Bench:
    return make_bench(tmp_path_factory.mktemp("vqavs") / "bench", dataset="vqavs")


TINY_ARCH = {"hidden_size": 16, "num_attention_heads": 2, "intermediate_size": 32}


def tiny_run_config(bench: Bench, out: Path, **blocks: dict) -> dict:
    """A plain-data run config over `bench` with a tiny pre-training block and `blocks` merged."""
    import yaml

    raw = yaml.safe_load((bench.root / "prepare.yaml").read_text())
    raw["pretrain"] = {"output_dir": str(out / "pre"), "epochs": 2, "batch_size": 32, "lr": 1e-3,
                       "architecture": TINY_ARCH}  # fmt: skip
    raw["model"] = {"checkpoint": str(out / "pre" / "model")}
    for name, block in blocks.items():
        raw[name] = {**raw.get(name, {}), **block}
    return raw


@pytest.fixture(scope="session")
def tiny_bench(tmp_path_factory: pytest.TempPathFactory) -> Bench:
    """A small VQA-CP v2 benchmark (600 training questions, features of dimension 16)."""
    return make_bench(tmp_path_factory.mktemp("tiny") / "bench", questions=600, images=300,
                      feature_dim=16)  # fmt: skip


@pytest.fixture(scope="session")
def tiny_pretrained(tiny_bench: Bench, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny LXMERT pre-trained for 2 epochs on `tiny_bench`; returns its `model/` directory."""
    from models.train import fit
    from search.config import validate_config

    out = tmp_path_factory.mktemp("tiny_run")
    cfg = validate_config(tiny_run_config(tiny_bench, out), "tiny")
    fit("pretrain", cfg.data, cfg.model, None, cfg.pretrain,
        cfg.blocks_yaml("data", "pretrain"))  # fmt: skip
    return out / "pre" / "model"
