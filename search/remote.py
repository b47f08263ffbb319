"""A sweep on URI storage (`search.storage_path: s3://...`, `gs://...`, any pyarrow filesystem):
its own run files go with Ray's experiment, so losing the driver's disk loses nothing.

The driver keeps them in `./runs/<name>` while it runs and copies them to
`<storage_path>/<name>/tickets/` after every finished or failed trial and at the end:
`tickets.yaml`, a consistent copy of the Optuna study (`study.db`, taken with SQLite's backup
API so a copy is never torn), `driver.json`, `trials.parquet` and `epochs.parquet`. A command given
the URI of a sweep (`tickets resume s3://bucket/sweeps/NAME`) fetches them into `./runs/NAME`
first unless that directory already holds the sweep.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import sys
import tempfile
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
from ray import tune

from search.driver import current_run_dir, driver_record
from vqa.atomic import atomic_path
from vqa.errors import InputError

SUBDIR = "tickets"
PLAIN_FILES = ("tickets.yaml", "driver.json", "trials.parquet", "epochs.parquet",
               "warm_start.parquet")  # fmt: skip
STUDY = "study.db"


def is_uri(text: str) -> bool:
    return "://" in text


def _filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    try:
        return pafs.FileSystem.from_uri(uri)
    except Exception as e:  # pyarrow raises ArrowInvalid, OSError, ... for a bad or unknown URI
        raise InputError(f"{uri}: cannot open this storage ({e})") from None


def check_storage(storage_uri: str, name: str) -> None:
    """Refuse, in one line, URI storage that cannot be written (a bad bucket, no credentials)."""
    fs, base = _filesystem(f"{storage_uri.rstrip('/')}/{name}/{SUBDIR}")
    try:
        fs.create_dir(base, recursive=True)
        with fs.open_output_stream(f"{base}/.probe") as out:
            out.write(b"tickets\n")
        fs.delete_file(f"{base}/.probe")
    except Exception as e:  # pyarrow raises OSError and its own types for refused writes
        raise InputError(f"search.storage_path {storage_uri}: cannot write there ({e})") from None


def upload_run_files(storage_uri: str, name: str, run_dir: Path) -> None:
    """Copy the run files of `run_dir` to `<storage_uri>/<name>/tickets/`."""
    fs, base = _filesystem(f"{storage_uri.rstrip('/')}/{name}/{SUBDIR}")
    fs.create_dir(base, recursive=True)
    for file in PLAIN_FILES:
        if (run_dir / file).is_file():
            pafs.copy_files(str(run_dir / file), f"{base}/{file}",
                            source_filesystem=pafs.LocalFileSystem(),
                            destination_filesystem=fs)  # fmt: skip
    if (run_dir / STUDY).is_file():
        with tempfile.TemporaryDirectory() as tmp:
            snapshot = Path(tmp) / STUDY
            source, target = sqlite3.connect(run_dir / STUDY), sqlite3.connect(snapshot)
            try:
                source.backup(target)
            finally:
                source.close()
                target.close()
            pafs.copy_files(str(snapshot), f"{base}/{STUDY}",
                            source_filesystem=pafs.LocalFileSystem(),
                            destination_filesystem=fs)  # fmt: skip


def fetch_run(uri: str, local_root: Path = Path("runs")) -> Path:
    """The local run directory of the sweep at `uri` (`<storage_path>/<name>`): `./runs/<name>`,
    each run file refreshed from the storage's copy where that is newer, unless a driver on this
    host runs the sweep from there (its own files are the newest)."""
    name = uri.rstrip("/").rsplit("/", 1)[-1]
    run_dir = local_root.resolve() / name
    if (run_dir / "tickets.yaml").is_file() and driver_record(run_dir)["state"] == "running" \
            and driver_record(run_dir).get("host") == socket.gethostname():  # fmt: skip
        return run_dir
    fs, base = _filesystem(f"{uri.rstrip('/')}/{SUBDIR}")
    if fs.get_file_info(f"{base}/tickets.yaml").type != pafs.FileType.File:
        if (run_dir / "tickets.yaml").is_file():
            return run_dir
        raise InputError(f"{uri}: not a sweep on this storage (no {SUBDIR}/tickets.yaml)")
    run_dir.mkdir(parents=True, exist_ok=True)
    for file in (*PLAIN_FILES, STUDY):
        remote = fs.get_file_info(f"{base}/{file}")
        if remote.type != pafs.FileType.File:
            continue
        local = run_dir / file
        if (
            local.is_file()
            and remote.mtime is not None
            and (local.stat().st_mtime_ns >= remote.mtime_ns)
        ):
            continue
        with atomic_path(local) as tmp:
            pafs.copy_files(f"{base}/{file}", str(tmp), source_filesystem=fs,
                            destination_filesystem=pafs.LocalFileSystem())  # fmt: skip
        if remote.mtime_ns is not None:  # the next fetch compares against the storage's time
            os.utime(local, ns=(remote.mtime_ns, remote.mtime_ns))
    return run_dir


def local_run_dir(text: str) -> Path:
    """A command's RUN_DIR argument: a local directory, or the URI of a sweep (fetched)."""
    return fetch_run(text) if is_uri(text) else Path(text)


class RunFilesUpload(tune.Callback):
    """Uploads the run files after every finished or failed trial and at the experiment's end
    (after the results callback, which comes first in the callback list, has written them)."""

    def __init__(self, storage_uri: str, name: str, run_dir: Path) -> None:
        self.storage_uri, self.name, self.run_dir = storage_uri, name, Path(run_dir)

    def _upload(self) -> None:
        try:
            upload_run_files(self.storage_uri, self.name, current_run_dir(self.run_dir))
        except Exception as e:  # a storage hiccup must not end the sweep; the next one retries
            print(f"warning: could not upload the run files to {self.storage_uri}: {e}",
                  file=sys.stderr, flush=True)  # fmt: skip

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._upload()

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._upload()

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self._upload()
