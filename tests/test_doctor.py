"""`tickets doctor`, the installed command in subprocesses: on the prepared tiny benchmark and
stage-1 checkpoint, with a stale cache and a missing checkpoint, on a two-node Ray cluster, and
against an unreachable one."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Bench
from tests.test_search import sweep_config

TICKETS = str(Path(sys.executable).parent / "tickets")


def doctor(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return subprocess.run([TICKETS, "doctor", *args], env={**environ, "HF_HUB_OFFLINE": "1", **env},
                          capture_output=True, text=True, timeout=300)  # fmt: skip


def lines(run: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """The report as {what: "<status> <found>"} (node lines keep only the last node's)."""
    out = {}
    for line in run.stdout.splitlines():
        status, _, rest = line.partition(" ")
        what, _, found = rest.strip().partition(": ")
        out[what] = f"{status} {found}"
    return out


def test_doctor_reports_the_prepared_cache_and_checkpoint(
    tiny_bench: Bench, tiny_stage1: Path, tmp_path: Path
) -> None:
    from ray._private.utils import get_num_cpus

    from models.vqa_model import load_backbone

    run = doctor(str(sweep_config(tiny_bench, tiny_stage1, tmp_path)))
    assert run.returncode == 0, run.stdout + run.stderr
    report = lines(run)
    data, store = tiny_bench.data, tiny_bench.data.store
    counts = data.splits_info["counts"]
    cache_dir = tiny_bench.config.resolved().cache_dir
    assert report["data cache"].startswith(f"ok {cache_dir}: current; vqacp_v2, "
                                           f"{sum(counts.values())} questions (train "
                                           f"{counts['train']}, ")  # fmt: skip
    assert f"{data.num_answers} answers, selection split dev" in report["data cache"]
    assert report["features"] == (f"ok {store.path}: {len(store)} images x 36 boxes x dimension "
                                  f"16 ({store.features.dtype})")  # fmt: skip
    backbone = load_backbone(tiny_stage1 / "best")
    params = sum(p.numel() for p in backbone.parameters())
    assert report["checkpoint"] == (
        f"ok {tiny_stage1 / 'best'} (pruning.checkpoint): LXMERT hidden 16, layers "
        f"{backbone.config.l_layers}/{backbone.config.x_layers}/{backbone.config.r_layers} "
        f"(language/cross/visual), {params / 1e6:.2f} M parameters; fits the data cache "
        f"(tokenizer, feature dimension 16, {data.num_answers} answers)"
    )
    # This machine has no CUDA: said, but not a failure for a CPU config.
    assert report["torch"].endswith("CPU-only build (no CUDA)")
    assert report["cuda"] == "warn torch.cuda.is_available() is False (trials here would run on "\
        "the CPU)"  # fmt: skip
    assert report["resources"].startswith(f"ok this machine as Ray sees it: CPU {get_num_cpus()}, "
                                          "GPU 0 (no Ray runtime started")  # fmt: skip
    assert report["search.resources"] == "ok a trial asks for CPU 1, GPU 0: fits on this machine"
    assert report["search.storage_path"] == (f"ok {tmp_path / 'runs'}: to be created in "
                                             f"{tmp_path} (writable)")  # fmt: skip
    assert not any(line.startswith("FAIL") for line in run.stdout.splitlines())
    assert run.stdout.splitlines()[-1] == f"doctor: no check failed ({len(report) - 1} checks), "\
        "1 warning"  # fmt: skip
    assert not (tmp_path / "runs").exists()  # a check writes nothing


def test_doctor_fails_a_stale_cache_a_missing_checkpoint_and_wanted_gpus(
    tiny_bench: Bench, tiny_stage1: Path, tmp_path: Path
) -> None:
    config = str(sweep_config(tiny_bench, tiny_stage1, tmp_path))
    missing = tmp_path / "no-such-model"
    # Another selection seed: the cache was prepared for a different data: block.
    run = doctor(config, "data.selection_seed=5", f"pruning.checkpoint={missing}")
    assert run.returncode == 1, run.stdout + run.stderr
    report = lines(run)
    cache_dir = tiny_bench.config.resolved().cache_dir
    assert report["data cache"] == (f"FAIL {cache_dir}: missing or out of date for this "
                                    "config's data: block and inputs; run `tickets data "
                                    "prepare CONFIG`")  # fmt: skip
    assert "features" not in report
    assert report["checkpoint"] == (f"FAIL {missing}: checkpoint directory not found "
                                    "(pruning.checkpoint)")  # fmt: skip
    assert run.stdout.splitlines()[-1].startswith(
        f"doctor: 2 of {len(report) - 1} checks failed (data cache, checkpoint), 1 warning"
    )
    # A config that wants GPUs on this CPU machine: CUDA's absence is now a failure.
    run = doctor(config, "search.resources.gpu=1")
    assert run.returncode == 1, run.stdout + run.stderr
    report = lines(run)
    assert report["cuda"] == "FAIL torch.cuda.is_available() is False (GPUs are wanted here)"
    assert report["search.resources"].startswith("FAIL a trial asks for CPU 1, GPU 1, but no node "
                                                 "has that (largest: CPU ")  # fmt: skip
    assert report["data cache"].startswith("ok ") and report["checkpoint"].startswith("ok ")
    assert "2 of" in run.stdout.splitlines()[-1] and "(cuda, search.resources)" in run.stdout


def test_doctor_bad_input_exits_2_with_one_line(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run = doctor("--address", f"127.0.0.1:{port}")
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr.startswith(f"error: --address 127.0.0.1:{port}: no Ray cluster reachable "
                                 "within 10 s")  # fmt: skip
    assert len(run.stderr.strip().splitlines()) == 1
    run = doctor(str(tmp_path / "absent.yaml"))
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr.strip() == f"error: {tmp_path / 'absent.yaml'}: config file not found"


@pytest.mark.ray
def test_doctor_on_a_two_node_cluster(tiny_bench: Bench, tiny_stage1: Path, tmp_path: Path) -> None:
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, connect=False,
                      head_node_args={"num_cpus": 1, "include_dashboard": False})  # fmt: skip
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        config = str(sweep_config(tiny_bench, tiny_stage1, tmp_path))
        run = doctor(config, "--address", cluster.address)
        assert run.returncode == 0, run.stdout + run.stderr
        report = lines(run)
        assert report["cluster"].startswith(f"ok {cluster.address}: 2 alive nodes; CPU 2, GPU 0, ")
        nodes = [line for line in run.stdout.splitlines() if line[5:].startswith("node: ")]
        ids = sorted(n.node_id[:8] for n in cluster.list_all_nodes())
        assert sorted(line.split(", ")[1][:8] for line in nodes) == ids
        for line in nodes:
            assert line.startswith("ok   node: ") and ": CPU 1, GPU 0; Ray " in line
            assert line.endswith("CUDA no; same Ray and Python as this driver")
        assert (
            report["search.resources"] == "ok a trial asks for CPU 1, GPU 0: fits on 2 of 2 nodes"
        )
        assert report["search.storage_path"].endswith(
            "(writable); on a cluster it must be the same shared directory on every node"
        )
        assert report["cuda"] == ("warn torch.cuda.is_available() is False (on this driver; "
                                  "trials run on the nodes below)")  # fmt: skip
        # Each node checks the config's paths itself: a checkpoint missing there fails its line.
        missing = tmp_path / "no-such-model"
        run = doctor(config, f"pruning.checkpoint={missing}", "--address", cluster.address)
        assert run.returncode == 1, run.stdout + run.stderr
        nodes = [line for line in run.stdout.splitlines() if line[5:].startswith("node: ")]
        assert len(nodes) == 2
        for line in nodes:
            assert line.startswith("FAIL node: ") and line.endswith(
                f"CUDA no; {missing}: checkpoint directory not found (pruning.checkpoint)"
            )
        assert "checks failed (node, node, checkpoint)" in run.stdout.splitlines()[-1]
        # RAY_ADDRESS names the cluster as --address does (as for tickets search).
        run = doctor(RAY_ADDRESS=cluster.address)
        assert run.returncode == 0, run.stdout + run.stderr
        assert lines(run)["cluster"].startswith(f"ok {cluster.address}: 2 alive nodes; CPU 2, ")
    finally:
        cluster.shutdown()
