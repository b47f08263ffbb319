"""Shared fixtures: the synthetic benchmarks, generated and prepared once per session."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # Two workers share CI's two cores: torch's default of a thread per core in each (and in
    # every `tickets` they start) would put four spinning threads on two cores.
    os.environ.setdefault("OMP_NUM_THREADS", "1")

from search.config import load_config  # noqa: E402
from vqa.cache import PreparedData, load_cache  # noqa: E402
from vqa.config import DataConfig  # noqa: E402
from vqa.prepare import prepare  # noqa: E402
from vqa.synth import SynthSpec, generate  # noqa: E402

# `scripts/test.sh` runs the suite in two pytest-xdist workers, `--dist loadfile`: each module
# stays in one worker, so its module fixtures are built once. The two effect-test modules count
# as one (their stage-1 runs are one session fixture) and go first, being the longest (test.sh
# keeps the collection order: --no-loadscope-reorder).
EFFECT_MODULES = ("test_effects_pruning.py", "test_effects_stage1.py")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.path.name not in EFFECT_MODULES)  # stable: keeps the rest


def pytest_xdist_make_scheduler(config: pytest.Config, log):  # noqa: ANN201 - xdist's type
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class EffectsTogether(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return "effects" if Path(path).name in EFFECT_MODULES else path

    return EffectsTogether(config, log)


# The installed command, run in a fresh process as its user runs it.
TICKETS = str(Path(sys.executable).parent / "tickets")


def tickets_env(**extra: str) -> dict[str, str]:
    """The environment a user's `tickets` gets: offline, no address of the test session's own
    Ray runtime (so a sweep starts its own), plus `extra`."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_CHDIR_TO_TRIAL_DIR": "0"}
    env.pop("RAY_ADDRESS", None)  # before `extra`, which may name one on purpose
    return {**env, **extra}


def run_tickets(*args: str | Path, timeout: float = 600, cwd: Path | None = None,
                **env: str) -> subprocess.CompletedProcess:  # fmt: skip
    """`tickets ARGS` in a fresh process; its output captured as text."""
    return subprocess.run([TICKETS, *map(str, args)], env=tickets_env(**env), cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip


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


@pytest.fixture(scope="session")
def tiny_stage1(
    tiny_bench: Bench, tiny_pretrained: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A tiny stage-1 (BCE) run; returns its output directory (the model is in `best/`)."""
    return train_tiny_stage1(tiny_bench, tiny_pretrained, tmp_path_factory.mktemp("stage1"), "bce")


def train_tiny_stage1(bench: Bench, pretrained: Path, out: Path, loss: str) -> Path:
    """One epoch of stage 1 with `loss` from the tiny pre-trained model; returns `out/ft`."""
    from models.train import fit
    from search.config import validate_config

    raw = tiny_run_config(
        bench, out, model={"checkpoint": str(pretrained)}, objective={"name": loss},
        finetune={"output_dir": str(out / "ft"), "epochs": 1, "batch_size": 32, "lr": 1e-3},
    )  # fmt: skip
    cfg = validate_config(raw, "stage1")
    fit("finetune", cfg.data, cfg.model, cfg.objective, cfg.finetune,
        cfg.blocks_yaml("data", "model", "objective", "finetune"))  # fmt: skip
    return out / "ft"


# --- The scientific effect tests' stage-1 runs (slow), shared by stage-1 and pruning effects -----

EFFECT_SEEDS = (0, 1, 2)
EFFECT_PRETRAIN = {"epochs": 8, "batch_size": 64, "lr": 1e-3}
EFFECT_FINETUNE = {"epochs": 6, "batch_size": 64, "lr": 5e-4, "eval_train": True}


@dataclass
class Stage1Run:
    """One seed of the effect tests: its benchmark, the plain run config and the stage-1 runs
    (`metrics[loss]`, `root / loss / "best"` the kept model) for `bce` and `lmh`."""

    seed: int
    root: Path
    bench: Bench
    raw: dict
    metrics: dict[str, dict]


@pytest.fixture(scope="session")
def effect_pool():
    """The workers the slow effect tests train in (tests/effects_work.py)."""
    from tests.effects_work import worker_pool

    with worker_pool() as pool:
        yield pool


@pytest.fixture(scope="session")
def stage1_runs(tmp_path_factory: pytest.TempPathFactory, effect_pool) -> list[Stage1Run]:
    """Per effect seed: pre-train (demo sizes), then stage 1 with `bce` and with `lmh`, each run
    in a worker as soon as what it starts from is there."""
    from concurrent.futures import as_completed

    import yaml

    from tests.effects_work import finetune, pretrain

    runs: dict[int, Stage1Run] = {}
    for seed in EFFECT_SEEDS:
        root = tmp_path_factory.mktemp(f"seed{seed}")
        bench = make_bench(root / "data", dataset="vqacp_v2", seed=seed)
        raw = yaml.safe_load((bench.root / "prepare.yaml").read_text())
        raw["pretrain"] = {"output_dir": str(root / "pre"), "seed": seed, **EFFECT_PRETRAIN}
        raw["model"] = {"checkpoint": str(root / "pre" / "model")}
        runs[seed] = Stage1Run(seed, root, bench, raw, {})
    pre = {effect_pool.submit(pretrain, run.raw): seed for seed, run in runs.items()}
    stage1 = {}
    for done in as_completed(pre):
        done.result()
        run = runs[pre[done]]
        for loss in ("bce", "lmh"):
            finetune_block = {"output_dir": str(run.root / loss), "seed": run.seed,
                              **EFFECT_FINETUNE}  # fmt: skip
            raw_ft = {**run.raw, "objective": {"name": loss}, "finetune": finetune_block}
            stage1[(run.seed, loss)] = effect_pool.submit(finetune, raw_ft)
    for (seed, loss), future in stage1.items():
        runs[seed].metrics[loss] = future.result()
    return [runs[seed] for seed in EFFECT_SEEDS]


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray runtime for the whole test session (DESIGN §8)."""
    import ray

    if not ray.is_initialized():
        os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                 object_store_memory=100 * 1024**2)  # fmt: skip
    yield ray
