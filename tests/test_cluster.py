"""A sweep against a two-node Ray cluster (`ray.cluster_utils.Cluster` on this machine), joined
through RAY_ADDRESS: trials run on both nodes, and the node of each is in trials.parquet."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import TICKETS, Bench, tickets_env
from tests.test_search import sweep_config

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_sweep_on_a_two_node_cluster_uses_both_nodes(
    tiny_bench: Bench, tiny_stage1: Path, tmp_path: Path
) -> None:
    from ray.cluster_utils import Cluster

    # One CPU per node and one per trial: two concurrent trials must sit on different nodes.
    # Eight epochs (about 4 s) a trial so that trials overlap: with one, a clone run once
    # finished each trial before the next was placed, and all four ran on the head node.
    cluster = Cluster(initialize_head=True, connect=False,
                      head_node_args={"num_cpus": 1, "include_dashboard": False})  # fmt: skip
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        config = sweep_config(tiny_bench, tiny_stage1, tmp_path, num_samples=4,
                              max_concurrent_trials=2)  # fmt: skip
        # The cluster named by RAY_ADDRESS, as under `ray job submit` (no --address): joining it
        # is the same code as --address (search.tuner.init_ray).
        env = tickets_env(RAY_ADDRESS=cluster.address)
        run = subprocess.run([TICKETS, "search", str(config), "pruning.epochs=8"], env=env,
                             capture_output=True, text=True, timeout=900)  # fmt: skip
        assert run.returncode == 0, run.stderr[-3000:]
        trials = pd.read_parquet(tmp_path / "runs" / "sweep" / "trials.parquet")
        assert (trials["status"] == "finished").all() and len(trials) == 4
        nodes = {n.node_id for n in cluster.list_all_nodes()}
        assert set(trials["node"]) == nodes and len(nodes) == 2
    finally:
        cluster.shutdown()
