"""Files a team can share: what the project writes through `vqa.atomic` gets the modes the umask
allows (0o666 and 0o777 less the umask), not mkstemp's 0600 and mkdtemp's 0700."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from vqa.atomic import atomic_dir, atomic_path, umask, write_json

TICKETS = str(Path(sys.executable).parent / "tickets")
UMASKS = (0o022, 0o002)


def modes_under(root: Path) -> dict[str, int]:
    """Permission bits of `root` and of every file and directory under it, by relative path."""
    paths = [root, *root.rglob("*")]
    return {str(p.relative_to(root)): stat.S_IMODE(p.lstat().st_mode) for p in paths}


def assert_shared(root: Path, mask: int) -> None:
    """Every directory under `root` (itself included) is 0o777 less `mask`, every file 0o666."""
    wrong = {}
    for name, mode in modes_under(root).items():
        expected = (0o777 if (root / name).is_dir() else 0o666) & ~mask
        if mode != expected:
            wrong[name] = f"{mode:o} (expected {expected:o})"
    assert not wrong, wrong


@pytest.fixture(params=(*UMASKS, 0o077))
def process_umask(request: pytest.FixtureRequest) -> Iterator[int]:
    """This process's umask set to the parameter for the test, then put back."""
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def test_umask_is_read_without_changing_it(process_umask: int) -> None:
    assert umask() == process_umask
    assert umask() == process_umask  # still set: reading did not replace it


def test_atomic_writers_follow_the_umask(process_umask: int, tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    with atomic_path(tmp_path / "table.parquet") as tmp:
        tmp.write_bytes(b"x")
    write_json(tmp_path / "metrics.json", {"a": 1})
    with atomic_path(tmp_path / "masks.safetensors") as tmp:
        save_file({"m": torch.zeros(2)}, str(tmp))  # safetensors writes its files 0600
    with atomic_dir(tmp_path / "model") as tmp:
        (tmp / "config.json").write_text("{}")
        save_file({"w": torch.zeros(2)}, str(tmp / "model.safetensors"))
        (tmp / "nested").mkdir()
        with atomic_path(tmp / "nested" / "weights.bin") as inner:
            inner.write_bytes(b"w")
    with atomic_dir(tmp_path / "model") as tmp:  # replacing an existing directory
        (tmp / "config.json").write_text("{}")
    assert stat.S_IMODE((tmp_path / "table.parquet").stat().st_mode) == 0o666 & ~process_umask
    assert stat.S_IMODE((tmp_path / "metrics.json").stat().st_mode) == 0o666 & ~process_umask
    assert stat.S_IMODE((tmp_path / "masks.safetensors").stat().st_mode) == 0o666 & ~process_umask
    assert_shared(tmp_path / "model", process_umask)


def test_executables_stay_executable_and_links_are_left_alone(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        with atomic_dir(tmp_path / "tools") as tmp:
            (tmp / "run.sh").write_text("#!/bin/sh\n")
            (tmp / "run.sh").chmod(0o700)
            (tmp / "link").symlink_to(tmp_path / "elsewhere")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "tools" / "run.sh").stat().st_mode) == 0o755
    assert (tmp_path / "tools" / "link").is_symlink()
    assert not (tmp_path / "elsewhere").exists()


@pytest.mark.parametrize("mask", UMASKS)
def test_a_prepared_cache_follows_the_umask_of_tickets_data_prepare(
    tmp_path: Path, mask: int
) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    bench = tmp_path / "bench"
    for args in (["data", "synth", str(bench), "--questions", "80", "--images", "40",
                  "--feature-dim", "8"],
                 ["data", "prepare", str(bench / "prepare.yaml")]):  # fmt: skip
        done = subprocess.run([TICKETS, *args], env=env, capture_output=True, text=True,
                              timeout=300, umask=mask)  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
    cache = Path(yaml.safe_load((bench / "prepare.yaml").read_text())["data"]["cache_dir"])
    cache = cache if cache.is_absolute() else bench / cache
    assert (cache / "manifest.json").is_file() and (cache / "questions").is_dir()
    assert_shared(cache, mask)
    assert_shared(bench, mask)  # the synthetic benchmark too (the cache may lie inside it)
