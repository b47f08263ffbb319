"""`tickets pareto`: a sweep's non-dominated trials, a table, the front plot and the allocation map
(the plots themselves are in :mod:`search.analysis`)."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from search.analysis.context import MANIFEST, read_manifest, sweep_context
from search.analysis.front import rounding_only
from search.analysis.labels import budgets
from vqa.atomic import atomic_path, write_json
from vqa.errors import InputError

Objectives = list[tuple[str, str]]

ALLOCATION = ("s_language", "s_visual", "s_cross")
DIRECTIONS = ("max", "min")
# Columns shown in the report's table next to the objectives, when present and not objectives.
REPORT_EXTRA = ("remaining_params", "test_overall", "test_ood_mean")
# Short names for --objectives and --color: "ood" is the OOD test accuracy (VQA-VS: the mean over
# its OOD sets; VQA-CP v2: the test split, which is out of distribution), "params" the weights kept.
ALIASES: dict[str, tuple[str, ...]] = {
    "ood": ("test_ood_mean", "test_overall"),
    "params": ("remaining_params",),
}
SWEEP_REPORT = "tickets search"
"""`written_by` of the sweep's own end-of-sweep report: a later `tickets pareto` may replace it."""
# Rows compared at once in `non_dominated`: bounds memory at BLOCK * n * k booleans.
BLOCK = 512


def parse_objectives(text: str) -> Objectives:
    """Parse "COL:max|min,..." into [(column, direction), ...]; 2 or 3 distinct columns."""
    parts = [p.strip() for p in text.split(",")] if text.strip() else []
    objectives: Objectives = []
    for part in parts:
        column, sep, direction = part.rpartition(":")
        column, direction = column.strip(), direction.strip().lower()
        if not sep or not column:
            raise InputError(f"objective {part!r}: expected COLUMN:max or COLUMN:min")
        if direction not in DIRECTIONS:
            raise InputError(f"objective {part!r}: direction must be max or min, not {direction!r}")
        if column in (c for c, _ in objectives):
            raise InputError(f"objective {column!r} given twice")
        objectives.append((column, direction))
    if not 2 <= len(objectives) <= 3:
        raise InputError(
            f"--objectives {text!r}: expected 2 or 3 objectives, got {len(objectives)}"
        )
    return objectives


def _numeric_columns(df: pd.DataFrame) -> list[str]:
    """Columns usable as objectives or colours: numeric and not boolean."""
    return [
        str(c)
        for c in df.columns
        if pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c])
    ]


def _require_numeric(df: pd.DataFrame, columns: Sequence[str], what: str = "column") -> None:
    """Raise InputError naming the first of `columns` that is not a numeric column of `df`."""
    numeric = _numeric_columns(df)
    for column in columns:
        if column not in numeric:
            state = "is not numeric" if column in df.columns else "not in trials.parquet"
            raise InputError(f"{what} {column!r} {state}; numeric columns: {', '.join(numeric)}")


def check_columns(df: pd.DataFrame, objectives: Objectives) -> None:
    """Raise InputError if an objective is not a numeric column, listing the ones available."""
    _require_numeric(df, [c for c, _ in objectives], what="objective column")


def load_trials(run_dir: Path, include_early_stopped: bool = False) -> pd.DataFrame:
    """The finished (and, if asked, early-stopped) trials of `run_dir/trials.parquet`, without
    confirmation runs (`search.confirm`)."""
    path = Path(run_dir) / "trials.parquet"
    if not path.is_file():
        raise InputError(
            f"{run_dir}: no trials.parquet yet (no trial has finished, or not a run directory)"
        )
    try:
        df = pd.read_parquet(path)
    except (OSError, ValueError) as exc:  # ArrowInvalid is a ValueError, ArrowIOError an OSError
        raise InputError(f"{path}: not a readable Parquet file ({exc})") from exc
    if "status" not in df.columns:
        raise InputError(f"{path}: no 'status' column")
    status = df["status"].astype("string")
    if include_early_stopped:
        keep = status.isin(["finished", "early_stopped"])
    else:
        keep = status == "finished"
        if "early_stopped" in df.columns:
            # A trial the scheduler stopped never saw its last epochs, whatever its status says.
            keep &= ~df["early_stopped"].fillna(False).astype(bool)
    if "confirm_of" in df.columns:  # re-runs of a winner at fresh seeds: not a point of its own
        keep &= df["confirm_of"].isna()
    return df[keep.fillna(False).to_numpy(dtype=bool)].reset_index(drop=True)


def _oriented(df: pd.DataFrame, objectives: Objectives) -> np.ndarray:
    """The objective values as floats, negated for min, so that larger is better everywhere."""
    values = df[[c for c, _ in objectives]].to_numpy(dtype=float, na_value=np.nan)
    signs = np.array([1.0 if d == "max" else -1.0 for _, d in objectives])
    return values * signs


def non_dominated(df: pd.DataFrame, objectives: Objectives) -> pd.DataFrame:
    """Rows of `df` no other row dominates (NaN rows dropped), best first by the first objective."""
    values = _oriented(df, objectives)
    complete = ~np.isnan(values).any(axis=1)
    rows, values = df[complete], values[complete]
    dominated = np.zeros(len(values), dtype=bool)
    for start in range(0, len(values), BLOCK):
        block = values[start : start + BLOCK, None, :]  # (b, 1, k) against all rows (1, n, k)
        at_least = (values[None, :, :] >= block).all(axis=2)
        better = (values[None, :, :] > block).any(axis=2)
        dominated[start : start + BLOCK] = (at_least & better).any(axis=1)
    front = rows[~dominated]
    # Later objectives break ties, so a 2-D front is ordered along its curve; stable otherwise.
    columns = [c for c, _ in objectives]
    ascending = [d == "min" for _, d in objectives]
    return front.sort_values(columns, ascending=ascending, kind="stable").reset_index(drop=True)


def _label(column: str, direction: str) -> str:
    return f"{column} ({direction})"


def _formatter(series: pd.Series) -> Callable[[object], str]:
    """A cell formatter for one column, chosen from the magnitudes of its values."""
    if pd.api.types.is_bool_dtype(series) or not pd.api.types.is_numeric_dtype(series):
        return lambda v: "-" if pd.isna(v) else str(v)
    if pd.api.types.is_integer_dtype(series):
        return lambda v: "-" if pd.isna(v) else f"{int(v):d}"
    magnitude = series.abs().replace(0, np.nan).dropna()
    if not magnitude.empty and magnitude.min() < 1e-3:  # learning rates and the like
        spec = ".2e"
    else:  # sparsities and losses to 3 places, percentages and counts to 2
        spec = ".3f" if magnitude.empty or magnitude.max() <= 1 else ".2f"
    return lambda v: "-" if pd.isna(v) else f"{v:{spec}}"


def format_table(front: pd.DataFrame, objectives: Objectives, extra: Sequence[str] = ()) -> str:
    """The front as plain text: trial_id, objectives, allocation, then the `extra` that exist."""
    wanted = ["trial_id", *(c for c, _ in objectives), *ALLOCATION, *extra]
    columns = [c for c in dict.fromkeys(wanted) if c in front.columns]
    if front.empty:
        return "(no trial on the front)"
    table = front[columns]
    formatters = {c: _formatter(table[c]) for c in columns}
    return table.to_string(index=False, formatters=formatters)


def resolve_alias(df: pd.DataFrame, column: str) -> str:
    """`column`, or for a name of :data:`ALIASES` the first of its columns that `df` has."""
    if column in df.columns or column not in ALIASES:
        return column
    return next((c for c in ALIASES[column] if c in df.columns), ALIASES[column][-1])


def _check_overwrite(out: Path, targets: Sequence[Path], overwrite: bool) -> None:
    """Raise InputError naming the first of `targets` that exists, unless `overwrite` or that
    file is from the sweep's own end-of-sweep report (which every resume rewrites anyway)."""
    if overwrite:
        return
    manifest = read_manifest(out) or {}
    by_sweep = manifest.get("written_by") == SWEEP_REPORT
    replaceable = {str(name) for name in manifest.get("files", [])} if by_sweep else set()
    for path in [*targets, out / MANIFEST]:
        if path.exists() and not (by_sweep and (path.name in replaceable or path.name == MANIFEST)):
            by = manifest.get("written_by") or "an earlier report"
            raise InputError(f"{path} exists (written by {by}); pass --overwrite to replace it, "
                             "or --out DIR to write elsewhere")  # fmt: skip


def pareto_report(
    run_dir: Path,
    objectives: Objectives,
    color: str | None = None,
    include_early_stopped: bool = False,
    *,
    out: Path | None = None,
    overwrite: bool = False,
    written_by: str = "tickets pareto",
) -> tuple[pd.DataFrame, str, list[Path]]:
    """The front of run_dir's trials, its table, and the files written in `out` (default
    run_dir): pareto.parquet, pareto.png, allocation_<color>.png and pareto.json (the record of
    this report: objectives, files, the group sizes and their source). Refuses (InputError) to
    replace a file of an earlier report unless `overwrite`; the sweep's own end-of-sweep report
    (`written_by=SWEEP_REPORT`) may be replaced."""
    from search.analysis.allocation import plot_allocation
    from search.analysis.front import plot_front

    run_dir = Path(run_dir)
    out = run_dir if out is None else Path(out)
    df = load_trials(run_dir, include_early_stopped)
    objectives = [(resolve_alias(df, c), d) for c, d in objectives]
    check_columns(df, objectives)
    color = resolve_alias(df, color) if color else objectives[0][0]
    _require_numeric(df, [color], what="colour column")
    _require_numeric(df, [*ALLOCATION, "s_overall"], what="allocation column")
    which = "finished or early-stopped" if include_early_stopped else "finished"
    if df.empty:
        raise InputError(f"{run_dir}: no {which} trials yet")
    front = non_dominated(df, objectives)
    if front.empty:
        names = ", ".join(c for c, _ in objectives)
        raise InputError(f"{run_dir}: no {which} trial has values for all of {names}")
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: not a directory")

    parquet, front_png = out / "pareto.parquet", out / "pareto.png"
    allocation_png = out / f"allocation_{re.sub(r'[^A-Za-z0-9_.-]', '_', color)}.png"
    paths = [parquet, front_png, allocation_png]
    _check_overwrite(out, paths, overwrite)
    ctx = sweep_context(run_dir)
    direction = dict(objectives).get(color, "min" if color == "remaining_params" else "max")
    with atomic_path(parquet) as tmp:
        front.to_parquet(tmp, index=False)
    plot_front(df, front, objectives, ctx, front_png)
    plot_allocation(df, color, ctx, allocation_png, direction)
    write_json(out / MANIFEST, {
        "written_by": written_by, "run_dir": str(run_dir.resolve()),
        "objectives": [list(o) for o in objectives], "color": color,
        "include_early_stopped": include_early_stopped, "files": [p.name for p in paths],
        "trials": len(df), "front": [str(t) for t in front["trial_id"]],
        "sizes": ctx.sizes, "sizes_source": ctx.sizes_source, "bounds": list(ctx.bounds),
    })  # fmt: skip

    multi = "s_overall" in df and budgets(df).nunique() > 1
    extra = [*(["s_overall"] if multi else []), color, *REPORT_EXTRA]
    extra += ["status"] if include_early_stopped else []
    header = ", ".join(_label(c, d) for c, d in objectives)
    text = f"Pareto front over {header}: {len(front)} of {len(df)} {which} trials\n"
    text += format_table(front, objectives, extra)
    chosen_on_test = [c for c, _ in objectives if c.startswith(("test_", "stage3_test_"))]
    if chosen_on_test:
        text += (
            f"\nnote: the front is chosen on {', '.join(chosen_on_test)}, a test metric: "
            "picking a model from it is selection on test (sel_overall:max is the default)"
        )
    if any(rounding_only(df, c) for c, _ in objectives):
        text += (
            "\nnote: one budget: remaining_params differs only by per-tensor rounding, so "
            "its objective sorts near-ties (several budgets make it a real trade-off)"
        )
    for note in ctx.notes:
        text += f"\nnote: {note}"
    return front, text, [*paths, out / MANIFEST]
