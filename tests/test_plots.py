"""The allocation map and the front plot, read back from their matplotlib Figures: where each
trial, the uniform allocation and the best one are drawn, the feasible region and the s_cross
contours against eq. 10, the staircase's vertices, the annotations and the reference lines."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.path import Path as MplPath

from pruning.budget import remaining_params, solve
from search.analysis.allocation import (
    GID_CROSS,
    LABEL_BEST,
    LABEL_FEASIBLE,
    LABEL_SURFACE,
    LABEL_TRIALS,
    LABEL_UNIFORM,
    allocation_figure,
    feasible_polygon,
    implied_cross,
)
from search.analysis.context import SweepContext, sweep_context
from search.analysis.front import (
    GID_STAGE1,
    GID_TRIAL_ID,
    GID_UNIFORM,
    LABEL_FRONT,
    front_figure,
    stage1_value,
    staircase,
)
from search.pareto import non_dominated

# 30% : 20% : 50% of the weights, in millions (so weights kept are shown in millions).
SIZES = {"language": 30_000_000, "visual": 20_000_000, "cross": 50_000_000}
BOUNDS = (0.05, 0.95)
# (s, s_language, s_visual) per trial: 7 distinct points at s = 0.5, 4 (one twice) at s = 0.8.
ALLOCATIONS = [
    (0.5, 0.5, 0.5), (0.5, 0.3, 0.6), (0.5, 0.7, 0.2), (0.5, 0.2, 0.9), (0.5, 0.8, 0.8),
    (0.5, 0.1, 0.3), (0.5, 0.6, 0.4),
    (0.8, 0.8, 0.8), (0.8, 0.9, 0.7), (0.8, 0.7, 0.9), (0.8, 0.95, 0.95), (0.8, 0.9, 0.7),
]  # fmt: skip


def sweep_trials(sizes: dict[str, int] = SIZES) -> pd.DataFrame:
    """Finished trials whose s_cross is solved from eq. 10 (pruning.budget.solve), as a sweep
    makes them, with a selection metric that is a known function of the allocation."""
    rows = []
    for i, (s, lang, vis) in enumerate(ALLOCATIONS):
        triple = solve(s, sizes, language=lang, visual=vis, bounds=BOUNDS)
        sel = 40 + 10 * lang - 5 * vis + 20 * (0.8 - s) + (0.5 if i == 11 else 0.0)
        rows.append({"trial_id": f"t{i:02d}", "status": "finished", "early_stopped": False,
                     "s_overall": s, **{f"s_{g}": triple[g] for g in ("language", "visual",
                     "cross")}, "remaining_params": remaining_params(sizes, triple),
                     "sel_overall": sel, "test_overall": sel - 1.0})  # fmt: skip
    return pd.DataFrame(rows)


def context(sizes: dict[str, int] | None = SIZES, stage1: dict | None = None) -> SweepContext:
    return SweepContext(sizes=sizes, sizes_source="test", bounds=BOUNDS, stage1=stage1)


def panels(fig) -> dict[float, object]:
    """The figure's panels by budget (colour bars have no "s = ..." title)."""
    out = {}
    for ax in fig.axes:
        title = ax.get_title()
        if title.startswith("s = "):
            out[float(title[4:].split(":")[0])] = ax
    return out


def labelled(ax, label: str) -> list:
    return [c for c in ax.collections if c.get_label() == label]


def test_trials_are_drawn_at_their_sparsities_and_uniforms_apart() -> None:
    df = sweep_trials()
    fig = allocation_figure(df, "sel_overall", context())
    by_budget = panels(fig)
    assert sorted(by_budget) == [0.5, 0.8]
    for s, ax in by_budget.items():
        rows = df[df["s_overall"] == s]
        (points,) = labelled(ax, LABEL_TRIALS)
        # The sparsities themselves (not divided by their sum, as the old ternary map did).
        np.testing.assert_array_equal(points.get_offsets(), rows[["s_language", "s_visual"]])
        np.testing.assert_array_equal(points.get_array(), rows["sel_overall"])
        (uniform,) = labelled(ax, LABEL_UNIFORM)
        np.testing.assert_array_equal(uniform.get_offsets(), [[s, s]])
        best = rows.loc[rows["sel_overall"].idxmax()]
        (star,) = labelled(ax, LABEL_BEST)
        np.testing.assert_array_equal(star.get_offsets(), [[best["s_language"], best["s_visual"]]])
        assert any(t.get_text().startswith(best["trial_id"]) for t in ax.texts)
    # The best at s = 0.5 is the trial with the most language and least visual sparsity.
    assert labelled(by_budget[0.5], LABEL_BEST)[0].get_offsets().tolist() == [[0.7, 0.2]]
    # min instead of max: the worst trial is marked.
    worst = allocation_figure(df, "sel_overall", context(), direction="min")
    star = labelled(panels(worst)[0.8], LABEL_BEST)[0].get_offsets().tolist()
    assert star == [[0.7, 0.9]]


def test_feasible_region_and_cross_contours_follow_eq_10() -> None:
    fig = allocation_figure(sweep_trials(), "sel_overall", context())
    total = sum(SIZES.values())
    for s, ax in panels(fig).items():
        (patch,) = [p for p in ax.patches if p.get_label() == LABEL_FEASIBLE]
        vertices = patch.get_xy()
        cross = (s * total - vertices[:, 0] * SIZES["language"]
                 - vertices[:, 1] * SIZES["visual"]) / SIZES["cross"]  # fmt: skip
        assert (cross >= BOUNDS[0] - 1e-9).all() and (cross <= BOUNDS[1] + 1e-9).all()
        assert (vertices >= BOUNDS[0] - 1e-12).all() and (vertices <= BOUNDS[1] + 1e-12).all()
        if s == 0.8:  # cut by s_cross = 0.95: corners such as (0.05, 0.05) are infeasible
            assert np.isclose(cross, BOUNDS[1]).sum() >= 2 and [0.05, 0.05] not in vertices.tolist()
        # Inside the shaded polygon exactly where eq. 10 has an s_cross within bounds.
        region = MplPath(vertices)
        grid = np.stack(np.meshgrid(np.linspace(0, 1, 41), np.linspace(0, 1, 41)), -1)
        grid = grid.reshape(-1, 2)
        implied = implied_cross(grid[:, 0], grid[:, 1], s, {g: n / total for g, n in
                                                             SIZES.items()})  # fmt: skip
        margin = np.minimum.reduce([implied - BOUNDS[0], BOUNDS[1] - implied,
                                    grid[:, 0] - BOUNDS[0], BOUNDS[1] - grid[:, 0],
                                    grid[:, 1] - BOUNDS[0], BOUNDS[1] - grid[:, 1]])  # fmt: skip
        clear = np.abs(margin) > 1e-6
        inside = region.contains_points(grid)
        assert (inside[clear] == (margin[clear] > 0)).all()
        # Each contour line is its level of the implied s_cross; the labels say which.
        (contours,) = [c for c in ax.collections if c.get_gid() == GID_CROSS]
        assert len(contours.levels) >= 3
        for level, segments in zip(contours.levels, contours.allsegs, strict=True):
            for seg in segments:
                got = implied_cross(seg[:, 0], seg[:, 1], s, {g: n / total for g, n in
                                                              SIZES.items()})  # fmt: skip
                np.testing.assert_allclose(got, level, atol=1e-9)
        texts = {t.get_text() for t in contours.labelTexts}
        assert texts and texts <= {f"s_cross {v:.2f}" for v in contours.levels}


def test_implied_cross_is_the_budgets_solution() -> None:
    fractions = {g: n / sum(SIZES.values()) for g, n in SIZES.items()}
    for s, lang, vis in [(0.5, 0.3, 0.6), (0.8, 0.95, 0.95), (0.7, 0.1, 0.9)]:
        expected = solve(s, SIZES, language=lang, visual=vis, bounds=(0.0, 0.99))["cross"]
        assert implied_cross(lang, vis, s, fractions) == pytest.approx(expected, abs=1e-12)
    assert implied_cross(0.5, 0.6, 0.5, fractions) == pytest.approx((0.5 - 0.15 - 0.12) / 0.5)
    # At s = 0.3 the corner (0.95, 0.95) needs s_cross < 0; at s = 0.8 (0.1, 0.1) needs > 1.
    polygon = feasible_polygon(0.3, fractions, BOUNDS)
    assert not MplPath(polygon).contains_point((0.95, 0.95))
    assert MplPath(polygon).contains_point((0.3, 0.3))
    polygon = feasible_polygon(0.8, fractions, BOUNDS)
    assert not MplPath(polygon).contains_point((0.1, 0.1))
    assert MplPath(polygon).contains_point((0.8, 0.8))
    assert feasible_polygon(0.99, fractions, (0.0, 0.5)).shape == (0, 2)  # nothing feasible


def test_surface_once_a_panel_has_six_distinct_points() -> None:
    fig = allocation_figure(sweep_trials(), "sel_overall", context())
    by_budget = panels(fig)

    def surfaces(ax) -> list:
        return [c for c in ax.collections if c.get_gid() == LABEL_SURFACE]

    assert surfaces(by_budget[0.5])  # 7 distinct points
    assert not surfaces(by_budget[0.8])  # 5 trials, 4 distinct points
    assert "no surface" in by_budget[0.8].get_title()
    assert "no surface" not in by_budget[0.5].get_title()


def test_without_sizes_the_map_has_points_but_no_implied_cross() -> None:
    df = sweep_trials()
    fig = allocation_figure(df, "sel_overall", context(sizes=None))
    ax = panels(fig)[0.5]
    assert not [p for p in ax.patches if p.get_label() == LABEL_FEASIBLE]
    assert not [c for c in ax.collections if c.get_gid() == GID_CROSS]
    rows = df[df["s_overall"] == 0.5]
    np.testing.assert_array_equal(labelled(ax, LABEL_TRIALS)[0].get_offsets(),
                                  rows[["s_language", "s_visual"]])  # fmt: skip
    assert "group sizes unknown" in fig.get_suptitle()


def test_staircase_vertices() -> None:
    # x minimised (weights kept), y maximised: each level holds to the right of its point.
    xs, ys = staircase(np.array([3.0, 1.0, 2.0]), np.array([5.0, 1.0, 3.0]), "min", x_end=4.0)
    assert list(zip(xs, ys, strict=True)) == [(1, 1), (2, 1), (2, 3), (3, 3), (3, 5), (4, 5)]
    # x maximised: each level holds to the left of its point, from x_end.
    xs, ys = staircase(np.array([1.0, 2.0, 3.0]), np.array([5.0, 3.0, 1.0]), "max", x_end=0.0)
    assert list(zip(xs, ys, strict=True)) == [(0, 5), (1, 5), (1, 3), (2, 3), (2, 1), (3, 1)]
    xs, ys = staircase(np.array([2.0]), np.array([7.0]), "min", x_end=2.0)
    assert list(zip(xs, ys, strict=True)) == [(2, 7)]


def front_trials() -> pd.DataFrame:
    """Five trials at two budgets: a, b, d on the front; c and e dominated by b."""
    return pd.DataFrame({
        "trial_id": ["a", "b", "c", "d", "e"],
        "s_overall": [0.8, 0.8, 0.5, 0.5, 0.5000000001],  # e: float noise, still budget 0.5
        "s_language": [0.8, 0.9, 0.4, 0.3, 0.5],
        "s_visual": [0.8, 0.7, 0.5, 0.6, 0.5],
        "s_cross": [0.8, 0.78, 0.56, 0.58, 0.5],
        "remaining_params": [20_000_000, 20_000_002, 50_000_000, 50_000_000, 49_999_000],
        "sel_overall": [40.0, 45.0, 44.0, 60.0, 30.0],
    })  # fmt: skip


def test_front_plot_staircase_annotations_budgets_and_references() -> None:
    df = front_trials()
    objectives = [("sel_overall", "max"), ("remaining_params", "min")]
    front = non_dominated(df, objectives)
    assert sorted(front["trial_id"]) == ["a", "b", "d"]
    stage1 = {"selection": {"overall": 58.0}, "test": {"overall": 57.0}}
    fig = front_figure(df, front, objectives, context(stage1=stage1))
    ax = fig.axes[0]
    assert "weights kept (millions)" in ax.get_xlabel() and "(min)" in ax.get_xlabel()
    assert "selection accuracy" in ax.get_ylabel() and "(%)" in ax.get_ylabel()
    (line,) = [ln for ln in ax.lines if ln.get_label() == LABEL_FRONT]
    expected = [(20, 40), (20.000002, 40), (20.000002, 45), (50, 45), (50, 60)]
    np.testing.assert_allclose(line.get_xydata(), expected, rtol=0, atol=1e-12)
    ids = sorted(t.get_text() for t in ax.texts if t.get_gid() == GID_TRIAL_ID)
    assert ids == ["a", "b", "d"]
    # One colour per budget; e (s_overall off by float noise) is drawn with budget 0.5.
    by_gid: dict[str, list] = {}
    for c in ax.collections:
        by_gid.setdefault(c.get_gid(), []).append(c)
    assert sorted(by_gid) == ["budget 0.5", "budget 0.8"]
    points = {gid: np.vstack([c.get_offsets() for c in cs]) for gid, cs in by_gid.items()}
    assert sorted(map(tuple, points["budget 0.5"])) == [(49.999, 30), (50, 44), (50, 60)]
    colours = {gid: tuple(cs[0].get_facecolor()[0]) for gid, cs in by_gid.items()}
    assert colours["budget 0.5"] != colours["budget 0.8"]
    # Uniform allocations: a at 0.8 (40), e at 0.5 (30), each over its own budget's weights.
    uniform = {ln.get_label().split(" (")[0]: ln for ln in ax.lines if ln.get_gid() == GID_UNIFORM}
    assert sorted(uniform) == ["uniform s = 0.5", "uniform s = 0.8"]
    assert list(uniform["uniform s = 0.8"].get_ydata()) == [40, 40]
    assert list(uniform["uniform s = 0.5"].get_ydata()) == [30, 30]
    assert (
        max(uniform["uniform s = 0.8"].get_xdata())
        < 35
        < min(uniform["uniform s = 0.5"].get_xdata())
    )
    (full,) = [ln for ln in ax.lines if ln.get_gid() == GID_STAGE1]
    assert list(full.get_ydata()) == [58.0, 58.0] and "58.00" in full.get_label()


def test_front_plot_of_three_objectives_and_an_off_scale_reference() -> None:
    df = front_trials().assign(test_overall=[1.0, 2.0, 3.0, 1.0, 9.0])
    objectives = [("sel_overall", "max"), ("remaining_params", "min"), ("test_overall", "max")]
    front = non_dominated(df, objectives)
    stage1 = {"selection": {"overall": 99.0}}
    ax = front_figure(df, front, objectives, context(stage1=stage1)).axes[0]
    assert not [ln for ln in ax.lines if ln.get_label() == LABEL_FRONT]  # no 2-D staircase
    ids = sorted(t.get_text() for t in ax.texts if t.get_gid() == GID_TRIAL_ID)
    assert ids == sorted(front["trial_id"])
    (full,) = [ln for ln in ax.lines if ln.get_gid() == GID_STAGE1]
    assert len(full.get_xdata()) == 0 and "off the scale, above" in full.get_label()
    assert ax.get_ylim()[1] < 99.0


def test_stage1_value_maps_columns_to_the_metrics_json_sections() -> None:
    ctx = context(stage1={"selection": {"overall": 1.0}, "test": {"overall": 2.0,
                  "ood_mean": 3.0}, "test_full": {"overall": 4.0}})  # fmt: skip
    assert stage1_value(ctx, "sel_overall") == 1.0
    assert stage1_value(ctx, "test_overall") == 2.0
    assert stage1_value(ctx, "test_ood_mean") == 3.0
    assert stage1_value(ctx, "test_full_overall") == 4.0
    assert stage1_value(ctx, "remaining_params") is None
    assert stage1_value(ctx, "sel_number") is None


def test_sizes_from_a_trials_kept_mask_then_from_an_earlier_report(tmp_path: Path) -> None:
    run = tmp_path / "copied"
    best = run / "trial_ab12" / "checkpoint_000003" / "best"
    best.mkdir(parents=True)
    report = {g: {"numel": n, "pruned": 0, "requested": 0.0, "realised": 0.0}
              for g, n in SIZES.items()}  # fmt: skip
    (best / "sparsity.json").write_text(json.dumps({**report, "pooler": report["cross"]}))
    ctx = sweep_context(run)
    assert ctx.sizes == SIZES and ctx.sizes_source == str(best / "sparsity.json")
    assert ctx.bounds == (0.0, 0.99)  # no tickets.yaml: pruning.bounds' default
    # Without trial checkpoints (remote storage), an earlier report's pareto.json has them.
    (best / "sparsity.json").unlink()
    (run / "pareto.json").write_text(json.dumps({"sizes": SIZES, "sizes_source": "x.json"}))
    ctx = sweep_context(run)
    assert ctx.sizes == SIZES and ctx.sizes_source.endswith("pareto.json (from x.json)")
    (run / "pareto.json").unlink()
    ctx = sweep_context(run)
    assert ctx.sizes is None and any("group sizes unknown" in n for n in ctx.notes)
