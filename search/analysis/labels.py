"""Axis labels with units for trials.parquet's columns, and the budgets and uniform trials."""

from __future__ import annotations

import numpy as np
import pandas as pd

BUDGET_DECIMALS = 6  # s_overall rounded to 1e-6 groups a sweep's trials by budget
UNIFORM_TOL = 1e-6  # |s_g - s| below this for every group: the uniform allocation
_SPLITS = (("stage3_test_", "stage-3 test"), ("test_full_", "full test"), ("test_", "test"),
           ("sel_", "selection"))  # fmt: skip


def is_accuracy(column: str) -> bool:
    """Whether `column` is an accuracy in % (a selection or test metric, not a count)."""
    return column.startswith(tuple(p for p, _ in _SPLITS)) and not column.endswith("_count")


def params_scale(values: pd.Series | np.ndarray) -> tuple[float, str]:
    """The divisor and unit that show weight counts readably: millions, else thousands."""
    top = float(np.nanmax(np.asarray(values, dtype=float))) if len(values) else 0.0
    if top >= 1e6:
        return 1e6, "millions"
    return (1e3, "thousands") if top >= 1e3 else (1.0, "")


def column_label(column: str, values: pd.Series | None = None) -> str:
    """`column` with what it measures and its unit, e.g. "sel_overall: selection accuracy (%)"."""
    for prefix, split in _SPLITS:
        if column.startswith(prefix) and is_accuracy(column):
            what = column[len(prefix) :].replace("_", " ")
            return f"{column}: {split} accuracy, {what} (%)"
    if column == "remaining_params":
        unit = params_scale(values)[1] if values is not None else ""
        return f"remaining_params: weights kept ({unit or 'count'})"
    if column.startswith(("s_", "realised_")):
        return f"{column}: fraction of weights removed"
    return column


def scale_of(column: str, values: pd.Series) -> float:
    """What a column's values are divided by on an axis (weights kept: by 1e6 or 1e3)."""
    return params_scale(values)[0] if column == "remaining_params" else 1.0


def budgets(df: pd.DataFrame) -> pd.Series:
    """Each trial's budget s_overall rounded to 1e-6, so that float noise makes no new panel."""
    return df["s_overall"].astype(float).round(BUDGET_DECIMALS)


def uniform_mask(df: pd.DataFrame) -> np.ndarray:
    """Rows whose three sparsities all equal their budget (the uniform allocation)."""
    s = df["s_overall"].to_numpy(dtype=float, na_value=np.nan)
    near = np.ones(len(df), dtype=bool)
    for column in ("s_language", "s_visual", "s_cross"):
        near &= np.abs(df[column].to_numpy(dtype=float, na_value=np.nan) - s) < UNIFORM_TOL
    return near
