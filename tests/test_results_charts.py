"""SVG charts: well-formed XML, one group per series with its band and line, names escaped,
round ticks; and the report figures built from counts (bandit share chart, goal bands)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime

import pytest

from experiments.history import WeightHistory
from experiments.model import parse_experiment
from proxy.results.charts import Point, Series, colour, line_chart, nice_ticks
from proxy.results.figures import calendar, goal_chart, share_chart
from proxy.results.summary import build_report
from proxy.store.experiment_counts import DayCounts, ExperimentCounts, GoalTotals

SVG = "{http://www.w3.org/2000/svg}"
NOW = datetime(2026, 11, 22, 12, tzinfo=UTC)


def groups(svg: str) -> list[ET.Element]:
    root = ET.fromstring(svg)  # raises on anything that is not well-formed XML
    assert root.tag == f"{SVG}svg" and root.get("viewBox") == "0 0 560 280"
    return [g for g in root.iter(f"{SVG}g") if g.get("class") == "series"]


def test_one_group_per_series_with_band_and_line() -> None:
    series = [Series(f"arm{k}", tuple(Point(x, 0.1 + k / 100, 0.05, 0.15) for x in range(4)),
                     colour(k)) for k in range(3)]
    svg = line_chart("rates", ["11-20", "11-21", "11-22", "11-23"], series)
    found = groups(svg)
    assert [g.get("data-series") for g in found] == ["arm0", "arm1", "arm2"]
    for g in found:
        classes = [child.get("class") for child in g if child.tag == f"{SVG}path"]
        assert classes == ["band", "line"]
        assert g.find(f"{SVG}title") is not None
    assert ET.fromstring(svg).find(f"{SVG}title").text == "rates"  # type: ignore[union-attr]


def test_names_are_escaped_everywhere() -> None:
    nasty = '<b>&"\'</b><script>alert(1)</script>'
    svg = line_chart(f"title {nasty}", [nasty, "x"], [Series(nasty, (Point(0, 1), Point(1, 2)),
                                                             colour(1))], chart_id=nasty)
    assert "<script>" not in svg and "<b>" not in svg
    (g,) = groups(svg)
    assert g.get("data-series") == nasty  # round-trips through the XML escaping unchanged
    texts = [t.text for t in ET.fromstring(svg).iter(f"{SVG}text")]
    assert nasty in texts


def test_single_points_steps_and_empty_charts_still_draw() -> None:
    (single,) = groups(line_chart("one day", ["11-22"], [Series("a", (Point(0, 0.5),), "#000")]))
    assert single.find(f"{SVG}circle") is not None
    step = Series("w", (Point(0, 0.2), Point(1.5, 0.8)), "#000", dashed=True, step=True)
    (drawn,) = groups(line_chart("steps", ["a", "b", "c"], [step]))
    line = drawn.find(f"{SVG}path")
    assert line is not None and line.get("stroke-dasharray") == "6 4"
    assert line.get("d", "").count("L") == 2  # up to the change, then the new level
    empty = line_chart("nothing", [], [])
    assert groups(empty) == [] and "no data yet" in empty


@pytest.mark.parametrize("lo, hi, want", [
    (0.0, 1.0, [0.0, 0.5, 1.0]),
    (0.0, 0.057, [0.0, 0.02, 0.04, 0.06]),
    (3.0, 3.0, [3.0, 4.0]),
    (-5.0, 12.0, [-5.0, 0.0, 5.0, 10.0, 15.0]),
])
def test_ticks_are_round_and_cover_the_range(lo: float, hi: float, want: list[float]) -> None:
    assert nice_ticks(lo, hi) == pytest.approx(want)


def counts(arms: tuple[str, ...], days: list[DayCounts],
           history: WeightHistory) -> ExperimentCounts:
    return ExperimentCounts("banner", arms, ("click",), tuple(days), history,
                            tuple(str(int(p.start.timestamp())) for p in history.periods))


def test_bandit_report_draws_rates_with_bands_and_share_with_weights() -> None:
    exp = parse_experiment({"id": "banner", "allocation": "bandit",
                            "arms": [{"id": "control", "weight": 0.5},
                                     {"id": "green", "weight": 0.5}],
                            "goals": [{"id": "click", "kind": "click", "selector": "a",
                                       "primary": True}]}, "test")
    history = WeightHistory().record(datetime(2026, 11, 20, tzinfo=UTC), [0.5, 0.5]) \
        .record(datetime(2026, 11, 22, tzinfo=UTC), [0.2, 0.8])
    days = [DayCounts(day, {"control": c, "green": g}, {}, {},
                      {"click": {"control": GoalTotals(c // 20, c // 20, c // 20),
                                 "green": GoalTotals(g // 10, g // 10, g // 10)}}, {})
            for day, c, g in [("2026-11-20", 100, 100), ("2026-11-22", 40, 160)]]
    report = build_report(exp, counts(("control", "green"), days, history), NOW)
    assert calendar(report.days) == ["2026-11-20", "2026-11-21", "2026-11-22"]
    rates = groups(goal_chart(report, exp.goals[0]))
    assert [g.get("data-series") for g in rates] == ["control", "green"]
    assert all(g.find(f"{SVG}path[@class='band']") is not None for g in rates)
    share = groups(share_chart(report))
    assert [g.get("data-series") for g in share] == ["control", "green", "control weight",
                                                     "green weight"]


def test_fixed_allocations_get_no_share_chart() -> None:
    exp = parse_experiment({"id": "hero", "arms": [{"id": "a", "weight": 0.5},
                                                   {"id": "b", "weight": 0.5}],
                            "goals": [{"id": "g", "kind": "page", "url": "/", "primary": True}]},
                           "test")
    days = [DayCounts("2026-11-22", {"a": 5, "b": 5}, {}, {}, {}, {})]
    report = build_report(exp, ExperimentCounts("hero", ("a", "b"), ("g",), tuple(days),
                                                WeightHistory()), NOW)
    assert share_chart(report) == ""
    assert len(groups(goal_chart(report, exp.goals[0]))) == 2
