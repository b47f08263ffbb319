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
