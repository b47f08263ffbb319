"""`tickets pareto`: a sweep's non-dominated trials, a table, a front plot and a ternary map."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from vqa.atomic import atomic_path
from vqa.errors import InputError

Objectives = list[tuple[str, str]]

ALLOCATION = ("s_language", "s_visual", "s_cross")
DIRECTIONS = ("max", "min")
# Columns shown in the report's table next to the objectives, when present and not objectives.
REPORT_EXTRA = ("remaining_params", "test_overall")
# Short names for --objectives and --color: "ood" is the OOD test accuracy (VQA-VS: the mean over
# its OOD sets; VQA-CP v2: the test split, which is out of distribution), "params" the weights kept.
ALIASES: dict[str, tuple[str, ...]] = {
    "ood": ("test_ood_mean", "test_overall"),
    "params": ("remaining_params",),
}
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
    """The finished (and, if asked, early-stopped) trials of `run_dir/trials.parquet`."""
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


def plot_front(df: pd.DataFrame, front: pd.DataFrame, objectives: Objectives, path: Path) -> None:
    """Write a PNG of all trials (grey) and the front (in colour) on the first two objectives."""
    from matplotlib.figure import Figure  # no pyplot: renders with Agg, needs no display

    (x, dx), (y, dy) = objectives[:2]
    fig = Figure(figsize=(6.4, 4.8), layout="constrained")
    ax = fig.add_subplot()
    ax.scatter(df[x], df[y], s=14, color="0.7", label="trials")
    if len(objectives) == 2:
        ax.plot(front[x], front[y], "-o", color="tab:red", ms=6, label="Pareto front")
    else:
        z, dz = objectives[2]
        points = ax.scatter(front[x], front[y], c=front[z], s=40, cmap="viridis",
                            edgecolors="black", label="Pareto front")  # fmt: skip
        fig.colorbar(points, ax=ax, label=_label(z, dz))
    ax.set_xlabel(_label(x, dx))
    ax.set_ylabel(_label(y, dy))
    ax.set_title(f"Pareto front: {len(front)} of {len(df)} trials")
    ax.legend(loc="best")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)


def plot_ternary(df: pd.DataFrame, metric: str, path: Path) -> None:
    """Write a PNG ternary map of (s_language, s_visual, s_cross) per trial, coloured by metric."""
    import mpltern  # noqa: F401  (registers the "ternary" projection)
    from matplotlib.figure import Figure

    _require_numeric(df, [*ALLOCATION, metric])
    parts = df[list(ALLOCATION)].to_numpy(dtype=float, na_value=np.nan)
    colour = df[metric].to_numpy(dtype=float, na_value=np.nan)
    # mpltern divides by the row sum, so a trial that prunes nothing has no place on the simplex.
    usable = ~np.isnan(parts).any(axis=1) & (parts.sum(axis=1) > 0) & ~np.isnan(colour)
    if not usable.any():
        raise InputError(f"no trial has both {metric!r} and a non-zero allocation to plot")
    parts, colour = parts[usable], colour[usable]
    fig = Figure(figsize=(7.0, 5.6))
    fig.subplots_adjust(left=0.1, right=0.82, bottom=0.15, top=0.84)  # room for the labels
    ax = fig.add_subplot(projection="ternary")
    points = ax.scatter(parts[:, 0], parts[:, 1], parts[:, 2], c=colour, s=36, cmap="viridis",
                        edgecolors="black", linewidths=0.4)  # fmt: skip
    ax.set_tlabel(ALLOCATION[0])
    ax.set_llabel(ALLOCATION[1])
    ax.set_rlabel(ALLOCATION[2])
    ax.grid(alpha=0.3)
    # A suptitle, because mpltern lifts an axes title above the top corner's labels, off the figure.
    fig.suptitle(f"{metric} over the sparsity allocation ({int(usable.sum())} trials, normalised)")
    cax = ax.inset_axes((1.05, 0.1, 0.04, 0.8), transform=ax.transAxes)
    fig.colorbar(points, cax=cax, label=metric)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)


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


def pareto_report(
    run_dir: Path,
    objectives: Objectives,
    color: str | None = None,
    include_early_stopped: bool = False,
) -> tuple[pd.DataFrame, str, list[Path]]:
    """The front of run_dir's trials, its table, and the files written (parquet and two PNGs)."""
    run_dir = Path(run_dir)
    df = load_trials(run_dir, include_early_stopped)
    objectives = [(resolve_alias(df, c), d) for c, d in objectives]
    check_columns(df, objectives)
    color = resolve_alias(df, color) if color else objectives[0][0]
    _require_numeric(df, [color], what="colour column")
    _require_numeric(df, ALLOCATION, what="allocation column")
    which = "finished or early-stopped" if include_early_stopped else "finished"
    if df.empty:
        raise InputError(f"{run_dir}: no {which} trials yet")
    front = non_dominated(df, objectives)
    if front.empty:
        names = ", ".join(c for c, _ in objectives)
        raise InputError(f"{run_dir}: no {which} trial has values for all of {names}")

    parquet, front_png = run_dir / "pareto.parquet", run_dir / "pareto.png"
    ternary_png = run_dir / f"ternary_{re.sub(r'[^A-Za-z0-9_.-]', '_', color)}.png"
    with atomic_path(parquet) as tmp:
        front.to_parquet(tmp, index=False)
    plot_front(df, front, objectives, front_png)
    plot_ternary(df, color, ternary_png)

    extra = [color, *REPORT_EXTRA] + (["status"] if include_early_stopped else [])
    header = ", ".join(_label(c, d) for c, d in objectives)
    text = f"Pareto front over {header}: {len(front)} of {len(df)} {which} trials\n"
    text += format_table(front, objectives, extra)
    return front, text, [parquet, front_png, ternary_png]
