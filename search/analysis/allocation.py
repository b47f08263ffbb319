"""The allocation map (the paper's figure 8, for any sweep): per budget s, the trials in the
(s_language, s_visual) plane, s_cross implied by eq. 10

    s_L·N_L + s_V·N_V + s_X·N_X = s·(N_L + N_V + N_X),

drawn as labelled contour lines; the region where the implied s_cross (and s_L, s_V) lie within
the sweep's bounds shaded; each trial coloured by a metric; the uniform allocation (s, s, s) and
the best trial marked; and, once a panel has enough distinct points, the metric interpolated
linearly between them (within their convex hull, hence within the feasible region).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from search.analysis.context import SweepContext
from search.analysis.labels import budgets, column_label
from vqa.atomic import atomic_path

MIN_SURFACE_POINTS = 6  # distinct finished trials in a panel before the surface is drawn
FEASIBLE_COLOUR = "#dde7f3"
LABEL_TRIALS, LABEL_FEASIBLE, LABEL_UNIFORM = "trials", "feasible (eq. 10 within bounds)", "uniform"
LABEL_BEST, LABEL_SURFACE, GID_CROSS = "best", "interpolated", "s_cross"


def implied_cross(s_language, s_visual, s: float, fractions: dict[str, float]):
    """s_cross solved from eq. 10 for the budget s; fractions are N_g / (N_L + N_V + N_X)."""
    rest = (
        s
        - fractions["language"] * np.asarray(s_language)
        - fractions["visual"] * np.asarray(s_visual)
    )
    return rest / fractions["cross"]


def _clip(polygon: list[tuple[float, float]], a: float, b: float, c: float):
    """The part of a convex polygon where a·x + b·y <= c (Sutherland-Hodgman, one edge)."""
    out: list[tuple[float, float]] = []
    for i, p in enumerate(polygon):
        q = polygon[(i + 1) % len(polygon)]
        fp, fq = a * p[0] + b * p[1] - c, a * q[0] + b * q[1] - c
        if fp <= 0:
            out.append(p)
        if (fp < 0 < fq) or (fq < 0 < fp):
            t = fp / (fp - fq)
            out.append((p[0] + t * (q[0] - p[0]), p[1] + t * (q[1] - p[1])))
    return out


def feasible_polygon(s: float, fractions: dict[str, float], bounds: tuple[float, float]):
    """Vertices (k, 2) of the allocations (s_L, s_V) in bounds whose implied s_cross is in
    bounds too: the bounds' square cut by two parallel lines. Empty (0, 2) when none is."""
    lo, hi = bounds
    f_l, f_v, f_x = fractions["language"], fractions["visual"], fractions["cross"]
    square = [(lo, lo), (hi, lo), (hi, hi), (lo, hi)]
    # implied s_cross <= hi  <=>  -(f_l·s_L + f_v·s_V) <= hi·f_x - s
    polygon = _clip(square, -f_l, -f_v, hi * f_x - s)
    if polygon:  # implied s_cross >= lo  <=>  f_l·s_L + f_v·s_V <= s - lo·f_x
        polygon = _clip(polygon, f_l, f_v, s - lo * f_x)
    return np.array(polygon, dtype=float).reshape(-1, 2)


def _limits(points: np.ndarray, polygon: np.ndarray, s: float) -> tuple[float, float, float, float]:
    """Square-ish axis limits around the feasible region, the trials and the uniform point."""
    every = np.vstack([points.reshape(-1, 2), polygon.reshape(-1, 2), [[s, s]]])
    x0, y0 = every.min(axis=0)
    x1, y1 = every.max(axis=0)
    pad = 0.04 * max(x1 - x0, y1 - y0, 0.05)
    return x0 - pad, x1 + pad, y0 - pad, y1 + pad


def _cross_contours(ax, s: float, ctx: SweepContext, limits) -> None:
    """Labelled contour lines of the implied s_cross over the feasible region."""
    from matplotlib.ticker import MaxNLocator

    fractions, (lo, hi) = ctx.fractions(), ctx.bounds
    xs = np.linspace(limits[0], limits[1], 241)
    ys = np.linspace(limits[2], limits[3], 241)
    gx, gy = np.meshgrid(xs, ys)
    cross = implied_cross(gx, gy, s, fractions)
    inside = (cross >= lo) & (cross <= hi) & (gx >= lo) & (gx <= hi) & (gy >= lo) & (gy <= hi)
    if not inside.any():
        return
    z = np.ma.masked_where(~inside, cross)
    levels = MaxNLocator(nbins=7, steps=[1, 2, 2.5, 5, 10]).tick_values(z.min(), z.max())
    levels = [v for v in levels if z.min() < v < z.max()]
    if not levels:
        return
    contours = ax.contour(gx, gy, z, levels=levels, colors="0.35", linewidths=0.7,
                          linestyles="--", zorder=2)  # fmt: skip
    contours.set_gid(GID_CROSS)
    ax.clabel(contours, fmt=lambda v: f"s_cross {v:.2f}", fontsize=7, inline_spacing=2)


def _surface(ax, points: np.ndarray, values: np.ndarray, cmap, norm) -> bool:
    """The metric interpolated linearly over the trials' triangulation; False if not drawn."""
    from matplotlib.tri import Triangulation

    frame = pd.DataFrame({"x": points[:, 0].round(9), "y": points[:, 1].round(9), "v": values})
    distinct = frame.groupby(["x", "y"], as_index=False)["v"].mean()  # duplicates averaged
    if len(distinct) < MIN_SURFACE_POINTS or np.ptp(distinct["v"]) == 0:
        return False
    try:
        tri = Triangulation(distinct["x"].to_numpy(), distinct["y"].to_numpy())
    except (RuntimeError, ValueError):  # all points on a line: no triangle to fill
        return False
    levels = np.linspace(norm.vmin, norm.vmax, 13)
    filled = ax.tricontourf(tri, distinct["v"].to_numpy(), levels=levels, cmap=cmap, norm=norm,
                            alpha=0.55, zorder=1, extend="both")  # fmt: skip
    filled.set_gid(LABEL_SURFACE)  # a gid: legends take no TriContourSet
    return True


def allocation_figure(df: pd.DataFrame, metric: str, ctx: SweepContext, direction: str = "max"):
    """The allocation map of the trials in `df` coloured by `metric`, a matplotlib Figure with
    one panel per budget (budgets ascending), each with its own colour scale: a panel answers
    which allocation is best at its budget. `direction` says which trial is the best."""
    from matplotlib.figure import Figure

    df = df[np.isfinite(df[metric].to_numpy(dtype=float, na_value=np.nan))]
    df = df.assign(_budget=budgets(df)).dropna(subset=["_budget", "s_language", "s_visual"])
    panels = sorted(df["_budget"].unique())
    ncols = min(len(panels), 3) or 1
    nrows = max(1, math.ceil(len(panels) / ncols))
    fig = Figure(figsize=(max(5.6 * ncols, 7.2), 4.7 * nrows + 1.0), layout="constrained")
    axes = [fig.add_subplot(nrows, ncols, i + 1) for i in range(max(len(panels), 1))]
    drawn_surface = False
    for ax, s in zip(axes, panels, strict=False):
        drawn_surface |= _panel(fig, ax, df[df["_budget"] == s], s, metric, ctx, direction)
    if not panels:
        axes[0].text(0.5, 0.5, f"no finished trial with {metric}", ha="center", va="center")
    fig.suptitle(_title(metric, ctx))
    if panels:
        _legend(fig, axes[0], ctx.fractions() is not None, drawn_surface, metric)
    return fig


def _panel(fig, ax, rows: pd.DataFrame, s: float, metric: str, ctx: SweepContext,
           direction: str) -> bool:  # fmt: skip
    """One budget's panel; True if its interpolated surface was drawn."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    cmap, fractions = "viridis", ctx.fractions()
    values = rows[metric].to_numpy(dtype=float)
    vmin, vmax = float(values.min()), float(values.max())
    if vmax <= vmin:  # one value: a scale around it, not a span of float noise
        vmin, vmax = vmin - 0.5, vmax + 0.5
    norm = Normalize(vmin, vmax)
    points = rows[["s_language", "s_visual"]].to_numpy(dtype=float)
    polygon = feasible_polygon(s, fractions, ctx.bounds) if fractions else np.empty((0, 2))
    limits = _limits(points, polygon, s)
    if len(polygon):
        ax.fill(polygon[:, 0], polygon[:, 1], color=FEASIBLE_COLOUR, edgecolor="0.55",
                linewidth=0.8, zorder=0, label=LABEL_FEASIBLE)  # fmt: skip
        _cross_contours(ax, s, ctx, limits)
    surface = _surface(ax, points, values, cmap, norm)
    ax.scatter(points[:, 0], points[:, 1], c=values, cmap=cmap, norm=norm, s=42,
               edgecolors="black", linewidths=0.5, zorder=4, label=LABEL_TRIALS)  # fmt: skip
    ax.scatter([s], [s], marker="s", s=130, facecolors="none", edgecolors="black",
               linewidths=1.4, zorder=5, label=LABEL_UNIFORM)  # fmt: skip
    best = rows[metric].idxmax() if direction == "max" else rows[metric].idxmin()
    bx, by = rows.loc[best, "s_language"], rows.loc[best, "s_visual"]
    ax.scatter([bx], [by], marker="*", s=320, facecolors="none", edgecolors="red",
               linewidths=1.3, zorder=6, label=LABEL_BEST)  # fmt: skip
    ax.annotate(f"{rows.loc[best, 'trial_id']}\n{rows.loc[best, metric]:.2f}", (bx, by),
                xytext=(7, -4), textcoords="offset points", fontsize=7, color="darkred",
                va="top", zorder=7)  # fmt: skip
    ax.set_xlim(limits[0], limits[1])
    ax.set_ylim(limits[2], limits[3])
    ax.set_aspect("equal", adjustable="box")
    ax.set_xlabel("s_language (fraction of language weights removed)")
    ax.set_ylabel("s_visual (fraction of visual weights removed)")
    note = "" if surface else f", no surface (< {MIN_SURFACE_POINTS} distinct)"
    ax.set_title(f"s = {s:g}: {len(rows)} trials{note}", fontsize=10)
    ax.grid(alpha=0.25, zorder=0)
    bar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, label=column_label(metric),
                       shrink=0.85)  # fmt: skip
    bar.formatter.set_useOffset(False)
    return surface


def _legend(fig, ax, contours: bool, surface: bool, metric: str) -> None:
    """One legend for all panels, below them: what the marks mean."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    names = {LABEL_FEASIBLE: LABEL_FEASIBLE, LABEL_TRIALS: f"trial (colour: {metric})",
             LABEL_UNIFORM: "uniform allocation (s, s, s)",
             LABEL_BEST: "best trial (id and value beside it)"}  # fmt: skip
    handles, labels = [], []
    for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
        if label in names and names[label] not in labels:
            handles.append(handle)
            labels.append(names[label])
    if contours:
        handles.append(Line2D([], [], color="0.35", linestyle="--", linewidth=0.7))
        labels.append("s_cross implied by eq. 10 (labelled)")
    if surface:
        handles.append(Patch(color="tab:green", alpha=0.4))
        labels.append(f"{metric} interpolated between trials")
    columns = 2 if len(fig.axes) <= 2 else 3  # a panel and its colour bar: two axes
    fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), columns),
               fontsize=8, frameon=False)  # fmt: skip


def _title(metric: str, ctx: SweepContext) -> str:
    fractions = ctx.fractions()
    if fractions is None:
        return f"{metric} over the allocation\n(group sizes unknown: s_cross not drawn)"
    shares = " : ".join(f"{100 * fractions[g]:.1f}%" for g in ("language", "visual", "cross"))
    lo, hi = ctx.bounds
    return (f"{metric} over the allocation, s_cross implied by eq. 10\n"
            f"N_L : N_V : N_X = {shares} of the weights; bounds [{lo:g}, {hi:g}]")  # fmt: skip


def plot_allocation(df: pd.DataFrame, metric: str, ctx: SweepContext, path: Path,
                    direction: str = "max") -> None:  # fmt: skip
    """Write the allocation map of :func:`allocation_figure` to `path` as a PNG, atomically."""
    fig = allocation_figure(df, metric, ctx, direction)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
