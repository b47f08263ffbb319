"""`tickets doctor`: what a run would find here or on a Ray cluster, one line per check.

Each check is `ok`, `warn` (worth knowing, nothing a run needs) or `FAIL` (a run would stop or
never start). Nothing is written and no Ray runtime is started unless a cluster is joined.
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Literal

import torch

from search.config import RunConfig
from search.schema import SearchConfig
from vqa.errors import InputError

Status = Literal["ok", "warn", "FAIL"]
PROBE_TIMEOUT_S = 120.0  # a node's first worker imports torch: seconds on a slow shared disk


@dataclass(frozen=True)
class Check:
    """One line of the report: its status, what was checked and what was found."""

    status: Status
    what: str
    found: str

    def line(self) -> str:
        return f"{self.status:<4} {self.what}: {self.found}"


def run_doctor(
    cfg: RunConfig | None, address: str | None, echo: Callable[[str], None] = print
) -> int:
    """Echo every check and a summary line; return how many FAILed. `address` (else RAY_ADDRESS)
    is joined first: an unreachable cluster is an `InputError` before anything is printed."""
    import ray

    from search.tuner import join_cluster

    address = address or os.environ.get("RAY_ADDRESS") or None
    search = cfg.search if cfg is not None and cfg.search is not None else SearchConfig()
    if address:
        join_cluster(address, search.connect_timeout_s)
    checks: list[Check] = []
    try:
        for check in _checks(cfg.resolved() if cfg is not None else None, address):
            echo(check.line())
            checks.append(check)
    finally:
        if address:
            ray.shutdown()
    failed = [c.what for c in checks if c.status == "FAIL"]
    warned = sum(c.status == "warn" for c in checks)
    tail = f"{len(failed)} of {len(checks)} checks failed ({', '.join(failed)})" if failed else (
        f"no check failed ({len(checks)} checks)")  # fmt: skip
    echo(f"doctor: {tail}, {warned} warning{'s' * (warned != 1)}")
    return len(failed)


def _checks(cfg: RunConfig | None, address: str | None) -> Iterator[Check]:
    gpu_wanted = cfg.search.resources.gpu if cfg is not None and cfg.search is not None else 0.0
    local = _local_resources()
    yield Check("ok", "python", f"{platform.python_version()} ({sys.executable})")
    yield _torch_check()
    # Without a cluster, trials train with this torch: a GPU that Ray hands out but torch
    # cannot use would silently train on the CPU.
    yield from _cuda_checks(fail=not address and (gpu_wanted > 0 or local.get("GPU", 0) > 0),
                            cluster=bool(address))  # fmt: skip
    for package in ("transformers", "ray", "optuna"):
        yield Check("ok", package, _version(package) or "not installed")
    if address:
        nodes = yield from _cluster_checks(cfg, address)
    else:
        nodes = [local]
        cpu, gpu = _amount(local.get("CPU", 0)), _amount(local.get("GPU", 0))
        yield Check("ok", "resources", f"this machine as Ray sees it: CPU {cpu}, GPU {gpu} "
                    "(no Ray runtime started; --address checks a cluster)")  # fmt: skip
    if cfg is not None:
        yield from _config_checks(cfg, nodes, address)


def _torch_check() -> Check:
    cuda = torch.version.cuda
    build = f"CUDA {cuda} build" if cuda else "CPU-only build (no CUDA)"
    return Check("ok", "torch", f"{torch.__version__}, {build}")


def _cuda_checks(fail: bool, cluster: bool) -> Iterator[Check]:
    """`torch.cuda.is_available()` and each visible GPU; unavailable is a FAIL when `fail`."""
    if not torch.cuda.is_available():
        why = ("GPUs are wanted here" if fail else "on this driver; trials run on the nodes below"
               if cluster else "trials here would run on the CPU")  # fmt: skip
        yield Check("FAIL" if fail else "warn", "cuda",
                    f"torch.cuda.is_available() is False ({why})")  # fmt: skip
        return
    count = torch.cuda.device_count()
    yield Check("ok", "cuda", f"available, {count} visible GPU{'s' * (count != 1)}")
    for i in range(count):
        props = torch.cuda.get_device_properties(i)
        # Training autocasts to bf16 on every GPU; only compute capability 8.0 on has it natively.
        native = (props.major, props.minor) >= (8, 0)
        bf16 = "bf16 yes" if native else "bf16 not native (the bf16 autocast is slow here)"
        yield Check("ok" if native else "warn", f"gpu {i}", f"{props.name}, "
                    f"{props.total_memory / 2**30:.1f} GiB, compute {props.major}.{props.minor}, "
                    f"{bf16}")  # fmt: skip


def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def _amount(x: float) -> str:
    return f"{x:g}"


def _local_resources() -> dict[str, float]:
    """This machine's resources as a Ray node started here would have them, without starting
    one (Ray's own resolution; os.cpu_count and torch if that private API moved)."""
    try:
        from ray._private.resource_and_label_spec import ResourceAndLabelSpec

        return dict(ResourceAndLabelSpec().resolve(is_head=True).to_resource_dict())
    except Exception:  # a private API: any change of it falls back to the plain counts
        return {"CPU": float(os.cpu_count() or 1), "GPU": float(torch.cuda.device_count())}


def _cluster_checks(cfg: RunConfig | None, address: str) -> Iterator[Check]:
    """The joined cluster's resources and each alive node; returns the nodes' resources."""
    import ray

    total = ray.cluster_resources()
    alive = [n for n in ray.nodes() if n.get("Alive")]
    yield Check("ok", "cluster", f"{address}: {len(alive)} alive node{'s' * (len(alive) != 1)}; "
                f"CPU {_amount(total.get('CPU', 0))}, GPU {_amount(total.get('GPU', 0))}, "
                f"memory {total.get('memory', 0) / 2**30:.1f} GiB")  # fmt: skip
    probes = _probe_nodes(alive, cfg)
    for node in alive:
        yield _node_check(node, probes.get(node["NodeID"]))
    return [n["Resources"] for n in alive]


def _node_check(node: dict[str, Any], probe: dict[str, Any] | None) -> Check:
    res = node["Resources"]
    head = (f"{node['NodeManagerHostname']} ({node['NodeManagerAddress']}, "
            f"{node['NodeID'][:8]}): CPU {_amount(res.get('CPU', 0))}, "
            f"GPU {_amount(res.get('GPU', 0))}")  # fmt: skip
    if probe is None:
        return Check("warn", "node", f"{head}; did not answer within {PROBE_TIMEOUT_S:g} s, so its "
                     "versions and paths are unknown")  # fmt: skip
    if "error" in probe:
        return Check("FAIL", "node", f"{head}; a probe task failed there ({probe['error']})")
    here = {"ray": _version("ray"), "python": platform.python_version(),
            "tickets": _version("tickets")}  # fmt: skip
    problems = list(probe.get("problems", []))
    for key in ("ray", "python"):
        if probe[key] != here[key]:
            problems.append(f"{key} {probe[key]} differs from this driver's {here[key]}")
    if probe["tickets"] is None:
        problems.append("the tickets project is not installed there")
    elif here["tickets"] is not None and probe["tickets"] != here["tickets"]:
        problems.append(f"tickets {probe['tickets']} differs from this driver's {here['tickets']}")
    if res.get("GPU", 0) > 0 and not probe["cuda"]:
        problems.append(f"Ray offers GPUs but torch {probe['torch']} there cannot use CUDA")
    found = (f"{head}; Ray {probe['ray']}, Python {probe['python']}, torch {probe['torch']}, "
             f"CUDA {'yes' if probe['cuda'] else 'no'}")  # fmt: skip
    if problems:
        return Check("FAIL", "node", f"{found}; " + "; ".join(problems))
    return Check("ok", "node", found + "; same Ray and Python as this driver")


def _probe_nodes(alive: list[dict[str, Any]], cfg: RunConfig | None) -> dict[str, dict]:
    """Run one task on every alive node: its versions, and whether the config's data cache,
    checkpoint and storage path are usable there. Node id -> answer (or {'error': ...})."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    data = cfg.data.model_dump(mode="json") if cfg is not None else None
    ckpt, field = _checkpoint(cfg) if cfg is not None else (None, "")
    storage = (cfg.search.storage_path if cfg is not None and cfg.search is not None
               and "://" not in cfg.search.storage_path else None)  # fmt: skip

    # Defined here so that cloudpickle ships it by value: a node without this project
    # installed can still say so, instead of failing to import search.doctor.
    def probe(data: dict | None, ckpt: str | None, field: str, storage: str | None) -> dict:
        import importlib.metadata
        import os
        import platform

        import ray

        out: dict = {"python": platform.python_version(), "ray": ray.__version__,
                     "torch": None, "cuda": False, "tickets": None, "problems": []}  # fmt: skip
        try:
            import torch

            out["torch"], out["cuda"] = torch.__version__, torch.cuda.is_available()
        except ImportError:
            out["problems"].append("torch is not installed there")
        try:
            out["tickets"] = importlib.metadata.version("tickets")
        except importlib.metadata.PackageNotFoundError:
            return out
        from models.vqa_model import check_model_dir
        from vqa.config import DataConfig
        from vqa.errors import InputError
        from vqa.prepare import cache_is_current

        if data is not None and not cache_is_current(DataConfig.model_validate(data)):
            out["problems"].append(f"data cache {data['cache_dir']} missing or out of date there")
        if ckpt is not None:
            try:
                check_model_dir(ckpt, field)
            except InputError as e:
                out["problems"].append(str(e))
        if storage is not None:
            existing = storage
            while not os.path.exists(existing):
                existing = os.path.dirname(existing)
            if not os.access(existing, os.W_OK | os.X_OK):
                out["problems"].append(f"{existing}: not writable (search.storage_path)")
        return out

    task = ray.remote(num_cpus=0)(probe)  # no CPU: it runs even on a node busy with trials
    refs = {n["NodeID"]: task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
        n["NodeID"], soft=False)).remote(data, ckpt and str(ckpt), field, storage)
        for n in alive}  # fmt: skip
    ready, _ = ray.wait(list(refs.values()), num_returns=len(refs), timeout=PROBE_TIMEOUT_S)
    answers: dict[str, dict] = {}
    for node_id, ref in refs.items():
        if ref in ready:
            try:
                answers[node_id] = ray.get(ref)
            except Exception as e:  # the task's own failure, reported on that node's line
                answers[node_id] = {"error": str(e).strip().splitlines()[-1]}
    return answers


def _checkpoint(cfg: RunConfig) -> tuple[Path | None, str]:
    """The model directory a run of `cfg` starts from and the field that names it (`cfg`
    resolved: `pruning.checkpoint` already defaults to `<finetune.output_dir>/best`)."""
    if cfg.pruning is not None:
        return cfg.pruning.checkpoint, "pruning.checkpoint"
    return cfg.model.checkpoint, "model.checkpoint"


def _config_checks(cfg: RunConfig, nodes: list[dict[str, float]], address: str | None):
    from vqa.cache import load_cache
    from vqa.prepare import cache_is_current

    data = None
    cache_dir = cfg.data.cache_dir
    if not cache_is_current(cfg.data):
        yield Check("FAIL", "data cache", f"{cache_dir}: missing or out of date for this config's "
                    "data: block and inputs; run `tickets data prepare CONFIG`")  # fmt: skip
    else:
        try:
            data = load_cache(cache_dir)
            counts = {name: len(data.split(name)) for name in data.splits_info["counts"]}
            store = data.store
        except InputError as e:
            yield Check("FAIL", "data cache", str(e))
            data = None
        else:
            sizes = ", ".join(f"{k} {v}" for k, v in counts.items())
            yield Check("ok", "data cache", f"{cache_dir}: current; {cfg.data.dataset}, "
                        f"{sum(counts.values())} questions ({sizes}), {data.num_answers} answers, "
                        f"selection split {data.selection_split}")  # fmt: skip
            yield Check("ok", "features", f"{store.path}: {len(store)} images x "
                        f"{store.num_boxes} boxes x dimension {store.feature_dim} "
                        f"({store.features.dtype})")  # fmt: skip
    yield _checkpoint_check(cfg, data)
    if cfg.search is not None:
        yield _resources_check(cfg.search, nodes, address)
        yield _storage_check(cfg.search, address)


def _checkpoint_check(cfg: RunConfig, data: Any) -> Check:
    from models.train import load_checkpoint_model
    from models.vqa_model import load_backbone

    path, field = _checkpoint(cfg)
    if path is None:
        return Check("FAIL", "checkpoint", f"{field} is not set (nor a finetune: block to "
                     "default it to <finetune.output_dir>/best)")  # fmt: skip
    try:
        if data is None:  # no cache to check it against: the weights alone
            backbone = load_backbone(path, field, log=lambda _: None)
            fit = "not checked against the data cache"
        else:
            head = "required" if field == "pruning.checkpoint" else True
            model, _ = load_checkpoint_model(path, data, head=head, field=field)
            backbone = model.backbone
            fit = (f"fits the data cache (tokenizer, feature dimension "
                   f"{data.store.feature_dim}, {data.num_answers} answers)")  # fmt: skip
    except InputError as e:
        return Check("FAIL", "checkpoint", str(e) if field in str(e) else f"{e} ({field})")
    c = backbone.config
    params = sum(p.numel() for p in backbone.parameters())
    return Check("ok", "checkpoint", f"{path} ({field}): LXMERT hidden {c.hidden_size}, layers "
                 f"{c.l_layers}/{c.x_layers}/{c.r_layers} (language/cross/visual), "
                 f"{params / 1e6:.2f} M parameters; {fit}")  # fmt: skip


def _resources_check(search: SearchConfig, nodes: list[dict[str, float]], address: str | None):
    """Whether one trial's `search.resources` fit on some node (else Ray never starts it)."""
    cpu, gpu = search.resources.cpu, search.resources.gpu
    fits = sum(n.get("CPU", 0) >= cpu and n.get("GPU", 0) >= gpu for n in nodes)
    where = "this machine" if not address else f"{fits} of {len(nodes)} nodes"
    asked = f"a trial asks for CPU {_amount(cpu)}, GPU {_amount(gpu)}"
    if fits:
        return Check("ok", "search.resources", f"{asked}: fits on {where}")
    largest = max(nodes, key=lambda n: (n.get("GPU", 0), n.get("CPU", 0)), default={})
    return Check("FAIL", "search.resources", f"{asked}, but no node has that (largest: CPU "
                 f"{_amount(largest.get('CPU', 0))}, GPU {_amount(largest.get('GPU', 0))}); "
                 "Ray would never start a trial")  # fmt: skip


def _storage_check(search: SearchConfig, address: str | None) -> Check:
    storage = search.storage_path
    if "://" in storage:
        return Check("ok", "search.storage_path", f"{storage}: a URI, not checked here; it must be "
                     "reachable from every node")  # fmt: skip
    existing = Path(storage)
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        return Check("FAIL", "search.storage_path", f"{storage}: {existing} is not a writable "
                     "directory")  # fmt: skip
    state = "writable" if existing == Path(storage) else f"to be created in {existing} (writable)"
    shared = "; on a cluster it must be the same shared directory on every node" if address else ""
    return Check("ok", "search.storage_path", f"{storage}: {state}{shared}")
