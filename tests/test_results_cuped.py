"""CUPED end to end: simulated visitors go through the proxy's own decide() and convert()
(their cookie encoded and decoded between page views), the events into a real Valkey, the
counts back into a report; the adjusted effects must agree with an independent computation
on the per-visitor data, and the table, the page, the JSON and the CSV must show them."""

from __future__ import annotations

import asyncio
import csv
import fnmatch
import io
import json
from datetime import UTC, datetime

import numpy as np
import pytest

from experiments.model import GoalKind, parse_experiment
from experiments.stats import Estimate
from proxy.config import StoreConfig
from proxy.context.build import build_context
from proxy.context.identity import VisitorState, decode, encode
from proxy.context.model import RequestFacts
from proxy.context.settings import ContextSettings
from proxy.experiment_runtime import GoalHit, Situation, convert, decide
from proxy.results.export import CSV_COVARIATE_HEADER, CSV_HEADER, daily_csv, document
from proxy.results.page import render_detail
from proxy.results.summary import build_report
from proxy.results.text import experiment_text
from proxy.store import Store
from proxy.store.experiment_counts import CountsReader
from tests.store_fixtures import embedded_valkey, store_url
from tests.test_experiments_results import delta_relative, ols_theta

__all__ = ["embedded_valkey", "store_url"]  # fixtures, imported to be found by pytest

pytestmark = pytest.mark.timeout(60)
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
DAY = "2026-11-22"
SECRET = "cuped-secret"
HERO = parse_experiment({
    "id": "hero", "arms": [{"id": "control", "weight": 0.5}, {"id": "B", "weight": 0.5}],
    "goals": [{"id": "checkout", "kind": "page", "url": "/checkout/done", "primary": True},
              {"id": "revenue", "kind": "revenue", "event": "purchase"}]}, "test")
SITUATION = Situation(now=NOW, weights={}, periods={}, slots={})
CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/131.0.0.0 Safari/537.36")


def page_view(state: VisitorState, path: str = "/") -> VisitorState:
    """The visitor's state as the cookie brings it back on the next request."""
    cookie = decode(encode(state, SECRET), (SECRET,), NOW.timestamp())
    assert cookie == state
    request = RequestFacts(client_ip="203.0.113.9", peer_trusted=False, method="GET",
                           scheme="https", host="shop.test", path=path, user_agent=CHROME)
    context = build_context(request, cookie, ContextSettings(), NOW.timestamp(), None)
    assert context.cookie_state is not None
    return context.cookie_state


def matches(pattern: str, target: str) -> bool:
    return fnmatch.fnmatchcase(target, pattern)


def simulate(n: int, seed: int = 5) -> tuple[list[object], dict[str, list[tuple[float, ...]]]]:
    """Events of ``n`` visitors and, per arm, (x, converted, revenue) of each visitor."""
    rng = np.random.default_rng(seed)
    t = int(NOW.timestamp())
    events: list[object] = []
    units: dict[str, list[tuple[float, ...]]] = {"control": [], "B": []}
    for i in range(n):
        visits = 1 + (int(rng.geometric(0.3)) if rng.random() < 0.45 else 0)
        state = VisitorState(visitor_id=f"{i:032x}", first_seen=t - 86_400 * 30,
                             visit_start=t - 30, last_seen=t - 30,
                             previous_visit_end=t - 86_400 if visits > 1 else 0,
                             visit_number=visits)
        request = RequestFacts(client_ip="203.0.113.9", peer_trusted=False, method="GET",
                               scheme="https", host="shop.test", path="/", user_agent=CHROME)
        context = build_context(request, state, ContextSettings(), NOW.timestamp(), None)
        decided = decide([HERO], context, SITUATION, in_audience=lambda e: True)
        arm = decided.arm_of("hero")
        assert arm is not None and decided.state is not None
        events += decided.events
        state, x = decided.state, float(visits - 1)
        lift = 1.3 if arm == "B" else 1.0
        converted = rng.random() < min(1.0, 0.04 * (0.25 + min(x, 6.0)) * lift)
        total = 0.0
        if converted:
            state = page_view(state, "/checkout/done")
            state, done = convert(state, {"hero": HERO},
                                  [GoalHit(GoalKind.PAGE, "/checkout/done")], DAY, matches)
            events += done
            for _ in range(1 + int(rng.random() < 0.3)):
                value = round(float(rng.lognormal(3.5, 0.5)) * (1 + 0.1 * x), 2)
                state = page_view(state)
                state, bought = convert(state, {"hero": HERO},
                                        [GoalHit(GoalKind.CUSTOM, "purchase", value)], DAY,
                                        matches)
                events += bought
                total += value
        units[arm].append((x, float(converted), total))
    return events, units


def test_cuped_from_the_proxy_to_the_report(store_url: str) -> None:
    events, per_unit = simulate(3000)
    data = {arm: tuple(np.array(column) for column in zip(*rows, strict=True))
            for arm, rows in per_unit.items()}

    async def record() -> CountsReader:
        store = await Store.open(StoreConfig(flush_interval=60), store_url)
        for event in events:
            store.record(event)  # type: ignore[arg-type]
        assert await store.flush()
        counts = await CountsReader.of(store).read(HERO)
        await store.close()
        return counts  # type: ignore[return-value]

    counts = asyncio.run(record())
    report = build_report(HERO, counts, NOW)  # type: ignore[arg-type]
    assert report.result is not None, report.problem
    for c in report.result.comparisons:
        goal = 1 if c.goal == "checkout" else 2
        theta = ols_theta(data, goal)
        (x_a, *ys_a), (x_b, *ys_b) = data["control"], data["B"]
        y_a, y_b = ys_a[goal - 1], ys_b[goal - 1]
        point, se = delta_relative(y_b - theta * x_b, y_a - theta * x_a, y_a)
        plain, _ = delta_relative(y_b, y_a, y_a)
        assert c.cuped is not None and c.cuped.theta == pytest.approx(theta, rel=1e-6)
        assert isinstance(c.outcome, Estimate)
        assert c.outcome.point == pytest.approx(point, rel=1e-6)
        assert c.outcome.se == pytest.approx(se, rel=1e-6)
        assert c.cuped.unadjusted.point == pytest.approx(plain, rel=1e-9)
        assert c.cuped.coverage == 1.0 and c.cuped.variance_reduction > 0.02

    text = experiment_text(report)
    assert "vs control (CUPED)" in text and "unadjusted" in text
    assert "effects adjusted with CUPED for previous visits" in text
    assert "; CUPED: variance -" in report.decision_text
    page = render_detail(report, "/_kairos/", NOW)
    assert "<th>vs control (CUPED)</th>" in page and "class=\"meta cuped\"" in page

    doc = json.loads(json.dumps(document([report], NOW), allow_nan=False))
    (hero,) = doc["experiments"]
    (day,) = hero["daily"]
    for arm, (x, _, revenue) in data.items():
        assert day["covariate"][arm] == {"units": len(x), "sum": x.sum(),
                                         "sum_squares": (x * x).sum()}
        assert day["goals"]["revenue"][arm]["sum_xy"] == pytest.approx((x * revenue).sum())
    assert hero["summary"]["comparisons"][0]["cuped"]["coverage"] == 1.0

    rows = list(csv.DictReader(io.StringIO(daily_csv([report]))))
    assert list(rows[0]) == [*CSV_HEADER, *CSV_COVARIATE_HEADER]
    b = next(r for r in rows if r["arm"] == "B" and r["goal"] == "checkout")
    x_b, converted_b, _ = data["B"]
    assert (int(b["x_units"]), float(b["x_sum"]), float(b["sum_xy"])) == (
        len(x_b), x_b.sum(), (x_b * converted_b).sum())
