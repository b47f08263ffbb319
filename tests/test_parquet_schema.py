"""trials.parquet and epochs.parquet are written with an explicit schema: a documented column has
one type whatever the values of one sweep are (the real sweeps: tests/test_run_dir_commands.py)."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from search.results import EPOCH_COLUMNS, TRIAL_COLUMNS, write_tables

UTC = pa.timestamp("us", tz="UTC")


def _rows(**changes: object) -> pd.DataFrame:
    """Two trial rows as `trial_tables` builds them before typing (plain Python values)."""
    row = {"trial_id": "a_00000", "sweep": "s", "number": None, "status": "running",
           "early_stopped": False, "error": None, "retries": 0, "node": None, "device": None,
           "started_at": pd.Timestamp(1.7e9, unit="s", tz="UTC"), "ended_at": None,
           "wall_s": math.nan, "epochs": 0, "s_overall": 0.5, "s_language": 0.5,
           "hp_lr": 0.01, "hp_epochs": 3, "sel_ood_mean": 40.0}  # fmt: skip
    other = {**row, "trial_id": "a_00001", "kept_epoch": 2.0, "remaining_params": 1234,
             "started_at": None}  # fmt: skip
    return pd.DataFrame([{**row, **changes}, other])


def test_every_documented_column_has_its_type_whatever_the_values(tmp_path: Path) -> None:
    write_tables(tmp_path, _rows(), pd.DataFrame())  # no error, no epochs, no test metrics
    trials = pq.read_schema(tmp_path / "trials.parquet")
    for name, dtype in TRIAL_COLUMNS.items():
        assert trials.field(name).type == dtype, name
    assert trials.field("error").type == pa.string()  # no trial failed: still a string
    assert trials.field("kept_epoch").type == pa.int64()  # 2.0 and a missing value
    assert trials.field("started_at").type == UTC
    assert trials.field("sel_ood_mean").type == pa.float64()  # a dataset's own metric
    assert (
        trials.field("hp_lr").type == pa.float64() and trials.field("hp_epochs").type == pa.int64()
    )
    assert trials.names[:3] == ["trial_id", "sweep", "number"]
    epochs = pq.read_schema(tmp_path / "epochs.parquet")
    assert [(f.name, f.type) for f in epochs] == list(EPOCH_COLUMNS.items())


def test_pandas_reads_counts_back_as_nullable_integers(tmp_path: Path) -> None:
    write_tables(tmp_path, _rows(), pd.DataFrame())
    trials = pd.read_parquet(tmp_path / "trials.parquet")
    assert str(trials["kept_epoch"].dtype) == "Int64"
    assert trials["kept_epoch"].tolist()[1] == 2 and pd.isna(trials["kept_epoch"].tolist()[0])
    assert str(trials["retries"].dtype) == "Int64" and trials["retries"].tolist() == [0, 0]
    assert trials["error"].isna().all() and trials["s_cross"].isna().all()  # added, empty
    assert str(trials["started_at"].dtype) == "datetime64[us, UTC]"
    assert trials["started_at"].iloc[0] == pd.Timestamp("2023-11-14 22:13:20", tz="UTC")
    # Written again from what was read (as `tickets results` merges old rows): the same file.
    write_tables(tmp_path / "again", trials, pd.read_parquet(tmp_path / "epochs.parquet"))
    again = pq.read_table(tmp_path / "again" / "trials.parquet")
    assert again.equals(pq.read_table(tmp_path / "trials.parquet"))


def test_a_count_that_is_not_an_integer_is_refused(tmp_path: Path) -> None:
    with pytest.raises((TypeError, ValueError)):
        write_tables(tmp_path, _rows(epochs=1.5), pd.DataFrame())
    assert not (tmp_path / "trials.parquet").exists()
