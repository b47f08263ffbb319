"""The front plot: every trial coloured by its budget, the Pareto front as a staircase with its
trial ids, and reference lines for the full stage-1 model and the uniform allocation of each
budget. The first objective is on the y axis, the second on the x axis; units on both."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from search.analysis.context import GROUPS, SweepContext
from search.analysis.labels import budgets, column_label, is_accuracy, scale_of, uniform_mask
from vqa.atomic import atomic_path

Objectives = list[tuple[str, str]]
LABEL_FRONT, GID_TRIAL_ID, GID_UNIFORM, GID_STAGE1 = "Pareto front", "trial_id", "uniform", "stage1"
# A reference value further than this many data spans outside the data is written, not drawn.
OFF_SCALE_SPANS = 1.0


def staircase(x: np.ndarray, y: np.ndarray, x_direction: str, x_end: float | None = None):
    """Vertices of the front's attainment staircase through the non-dominated points (x, y).

    Along x the best y attainable with x no worse than a given value: when x is minimised the
    level of a point holds to its right until the next point ("post" steps) and the last one
    runs on to `x_end`; when maximised it holds to its left ("pre" steps), from `x_end`. The
    dominated trials lie on the far side of it. Returns the vertex arrays (xs, ys)."""
    order = np.argsort(x, kind="stable")
    x, y = np.asarray(x, dtype=float)[order], np.asarray(y, dtype=float)[order]
    xs, ys = [], []
    if x_direction == "min":
        for i in range(len(x)):
            xs += [x[i]]
            ys += [y[i]]
            if i + 1 < len(x):
                xs += [x[i + 1]]
                ys += [y[i]]
        if x_end is not None and len(x) and x_end > x[-1]:
            xs += [x_end]
            ys += [y[-1]]
    else:
        if x_end is not None and len(x) and x_end < x[0]:
            xs += [x_end]
            ys += [y[0]]
        for i in range(len(x)):
            xs += [x[i]]
            ys += [y[i]]
            if i + 1 < len(x):
                xs += [x[i]]
                ys += [y[i + 1]]
    return np.array(xs), np.array(ys)


def rounding_only(df: pd.DataFrame, column: str) -> bool:
    """Whether `column` is remaining_params in a one-budget sweep, where it varies only by the
    rounding of each tensor's pruned count (a relative spread below 0.1%)."""
    if column != "remaining_params" or "s_overall" not in df or budgets(df).nunique() != 1:
        return False
    values = df[column].to_numpy(dtype=float, na_value=np.nan)
    top = np.nanmax(np.abs(values)) if np.isfinite(values).any() else 0.0
    return bool(top > 0 and (np.nanmax(values) - np.nanmin(values)) / top < 1e-3)


def stage1_value(ctx: SweepContext, column: str) -> float | None:
    """The full stage-1 model's value of an accuracy column (sel_overall: its selection split's
    overall accuracy, test_ood_mean: test's ood_mean, ...), or None."""
    if ctx.stage1 is None or not is_accuracy(column):
        return None
    if column.startswith("sel_"):
        split, key = "selection", column[len("sel_") :]
    else:
        splits = sorted((k for k in ctx.stage1 if column.startswith(f"{k}_")), key=len)
        if not splits:
            return None
        split = splits[-1]
        key = column[len(split) + 1 :]
    section = ctx.stage1.get(split)
    value = section.get(key) if isinstance(section, dict) else None
    return float(value) if isinstance(value, int | float) else None


def _budget_colours(values: list[float]) -> dict[float, object]:
    from matplotlib import colormaps

    if len(values) <= 10:
        palette = colormaps["tab10"]
        return {b: palette(i) for i, b in enumerate(values)}
    ramp = colormaps["viridis"]
    return {b: ramp(i / (len(values) - 1)) for i, b in enumerate(values)}


def _reference(ax, value: float, horizontal: bool, data: np.ndarray, label: str, **style) -> bool:
    """A reference line at `value`; when it lies off the scale of the data (more than a data
    span away) only its legend entry, saying so. True if drawn as a line."""
    lo, hi = float(np.nanmin(data)), float(np.nanmax(data))
    span = max(hi - lo, 1e-9)
    if lo - OFF_SCALE_SPANS * span <= value <= hi + OFF_SCALE_SPANS * span:
        line = (ax.axhline if horizontal else ax.axvline)(value, label=label, **style)
        line.set_gid(GID_STAGE1)
        return True
    above = value > hi
    where = ("above" if above else "below") if horizontal else ("right" if above else "left")
    (line,) = ax.plot([], [], label=f"{label} (off the scale, {where})", **style)
    line.set_gid(GID_STAGE1)
    return False


def plot_axes(objectives: Objectives):
    """(y, x, rest): the first objective on y; on x the weights kept or a sparsity when another
    objective is one (the paper's axes), else the second objective."""
    sizes = [o for o in objectives[1:] if o[0] == "remaining_params" or o[0].startswith(("s_",
             "realised_"))]  # fmt: skip
    x = sizes[0] if sizes else objectives[1]
    return objectives[0], x, [o for o in objectives[1:] if o != x]


def front_figure(df: pd.DataFrame, front: pd.DataFrame, objectives: Objectives,
                 ctx: SweepContext):  # fmt: skip
    """The front plot of `df`'s trials (a matplotlib Figure): y the first objective, x the
    second (or the weights kept, see :func:`plot_axes`). For three objectives the front's
    members are ringed and no staircase is drawn (the front is not a curve in two of its
    dimensions)."""
    from matplotlib.figure import Figure

    (y, dy), (x, dx), rest = plot_axes(objectives)
    sx, sy = scale_of(x, df[x]), scale_of(y, df[y])
    fig = Figure(figsize=(8.6, 5.6), layout="constrained")
    ax = fig.add_subplot()
    trial_budgets = budgets(df) if "s_overall" in df else pd.Series(np.nan, index=df.index)
    levels = sorted(b for b in trial_budgets.unique() if np.isfinite(b))
    colours = _budget_colours(levels)
    on_front = df["trial_id"].isin(front["trial_id"]).to_numpy()
    for b in levels:
        mine, label = (trial_budgets == b).to_numpy(), f"s = {b:g}"
        for member, size, edge in ((False, 26, "none"), (True, 58, "black")):
            rows = df[mine & (on_front == member)]
            if len(rows):
                ax.scatter(rows[x] / sx, rows[y] / sy, s=size, color=colours[b], alpha=0.85,
                           edgecolors=edge, linewidths=0.9, zorder=3, label=label,
                           gid=f"budget {b:g}")  # fmt: skip
                label = None  # one legend entry per budget
    if len(objectives) == 2:
        span = df[x].to_numpy(dtype=float) / sx
        end = np.nanmax(span) if dx == "min" else np.nanmin(span)
        vx, vy = staircase(front[x].to_numpy(dtype=float) / sx,
                           front[y].to_numpy(dtype=float) / sy, dx, end)  # fmt: skip
        ax.plot(vx, vy, color="black", linewidth=1.3, zorder=2, label=LABEL_FRONT)
    else:
        z, dz = rest[0]
        ax.scatter(front[x] / sx, front[y] / sy, s=150, facecolors="none", edgecolors="red",
                   linewidths=1.2, zorder=4, label=f"{LABEL_FRONT} (with {z} {dz})")  # fmt: skip
    for _, row in front.iterrows():
        ax.annotate(str(row["trial_id"]), (row[x] / sx, row[y] / sy), xytext=(4, 4),
                    textcoords="offset points", fontsize=7, zorder=5, gid=GID_TRIAL_ID)  # fmt: skip
    _references(ax, df, trial_budgets, levels, colours, x, y, sx, sy, ctx)
    ax.set_xlabel(f"{column_label(x, df[x])} ({dx})")
    ax.set_ylabel(f"{column_label(y, df[y])} ({dy})")
    ax.ticklabel_format(useOffset=False, style="plain")
    if x == "remaining_params" and ctx.sizes is not None:
        total = sum(ctx.sizes[g] for g in GROUPS)
        top = ax.secondary_xaxis("top", functions=(lambda v: 100 * v * sx / total,
                                                   lambda p: p * total / (100 * sx)))  # fmt: skip
        top.xaxis.get_major_formatter().set_useOffset(False)
        top.set_xlabel("% of the language, visual and cross-modal weights kept")
    title = f"Pareto front: {len(front)} of {len(df)} trials"
    title += f" (and {rest[0][0]} {rest[0][1]})" if rest else ""
    if rounding_only(df, x):
        title += "\n(one budget: the weights kept differ only by per-tensor rounding)"
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.25)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    return fig


def _references(ax, df, trial_budgets, levels, colours, x, y, sx, sy, ctx) -> None:
    """Lines for the full stage-1 model and each budget's uniform trial, on the accuracy axis
    (y when it is one, else x)."""
    if is_accuracy(y):
        column, scale, horizontal, data = y, sy, True, df[y].to_numpy(dtype=float) / sy
    elif is_accuracy(x):
        column, scale, horizontal, data = x, sx, False, df[x].to_numpy(dtype=float) / sx
    else:
        return
    full = stage1_value(ctx, column)
    if full is not None:
        _reference(ax, full / scale, horizontal, data, f"full stage-1 model: {full:.2f}",
                   color="0.3", linestyle=":", linewidth=1.4, zorder=1)  # fmt: skip
    other, other_scale = (x, sx) if horizontal else (y, sy)
    uniform = uniform_mask(df) if {"s_overall", *(f"s_{g}" for g in GROUPS)} <= set(df) else None
    if uniform is None:
        return
    for b in levels:
        rows = df[uniform & (trial_budgets == b).to_numpy()]
        if rows.empty or not np.isfinite(float(rows.iloc[0][column])):
            continue
        row = rows.iloc[0]
        mine = df[(trial_budgets == b).to_numpy()][other].to_numpy(dtype=float) / other_scale
        every = df[other].to_numpy(dtype=float) / other_scale
        lo, hi = np.nanmin(mine), np.nanmax(mine)
        pad = max(0.06 * (hi - lo), 0.04 * (np.nanmax(every) - np.nanmin(every)), 1e-9)
        value = float(row[column]) / scale
        ends = (lo - pad, hi + pad)
        line = (ax.plot(ends, (value, value)) if horizontal else ax.plot((value, value), ends))[0]
        line.set(
            color=colours[b],
            linestyle="--",
            linewidth=1.1,
            zorder=1,
            gid=GID_UNIFORM,
            label=f"uniform s = {b:g} ({row['trial_id']}): {float(row[column]):.2f}",
        )


def plot_front(df: pd.DataFrame, front: pd.DataFrame, objectives: Objectives, ctx: SweepContext,
               path: Path) -> None:  # fmt: skip
    """Write the front plot of :func:`front_figure` to `path` as a PNG, atomically."""
    fig = front_figure(df, front, objectives, ctx)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
