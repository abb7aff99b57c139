"""The faster page-view path of the experiments decides exactly what the plain one did.

decide() no longer calls assign() per experiment (it takes assign()'s pieces, exclusion()
and drawn_arm(), and hands out shared Outcome, Membership and Exposure values), and the
traffic hash is skipped at full traffic. The reference below is decide() as it was, built
on assign(): for thousands of random experiments, visitors, weights, layers, schedules and
previews, both must give equal outcomes, states, events and cookies.
"""

from __future__ import annotations

import random
import struct
import zlib
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from experiments import assignment
from experiments.assignment import (
    NotAssigned,
    StoredAssignment,
    VisitorFacts,
    assign,
    plan_layers,
)
from experiments.model import Arm, Experiment, Goal, GoalKind
from proxy.context.build import build_context
from proxy.context.identity import (
    MAX_GOALS,
    Membership,
    VisitorState,
    encode,
    with_memberships,
)
from proxy.context.model import RequestFacts
from proxy.context.settings import ContextSettings
from proxy.experiment_runtime import (
    PREVIEW,
    Decisions,
    Outcome,
    Situation,
    decide,
    pre_exposure_covariate,
    salt_tag,
    visitor_facts,
    with_covariate,
)
from proxy.experimentation import Experimentation
from proxy.rules import RuleLibrary
from proxy.store.events import Conversion, Exposure

SECRET = "test-secret-0123456789abcdef"
NOW = datetime(2026, 11, 22, 23, 59, 59, 999_999, tzinfo=UTC)
UAS = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
       "Chrome/131.0.0.0 Safari/537.36",
       "Googlebot/2.1 (+http://www.google.com/bot.html)")


def reference_decide(experiments: Sequence[Experiment], context, situation: Situation,  # type: ignore[no-untyped-def]
                     *, in_audience: Callable[[Experiment], bool],
                     preview: Mapping[str, str] | None = None) -> Decisions:
    """decide() as it was before the page view was made cheaper: one assign() each."""
    state = context.cookie_state
    outcomes: list[Outcome] = []
    events: list[Exposure | Conversion] = []
    day = ""
    reason = context.privacy_reason
    is_bot = context.device.kind == "bot"
    opted_out = reason in ("opted_out", "gpc", "dnt")
    consented = reason != "no_consent"
    if state is None and consented and not opted_out and not is_bot:
        opted_out = True
    visitor_id = state.visitor_id if state is not None else "anonymous"
    joined: dict[str, Membership] = {}
    for experiment in experiments:
        forced = preview.get(experiment.id) if preview else None
        if forced is not None and experiment.arm_index(forced) is not None:
            outcomes.append(Outcome(experiment.id, forced, PREVIEW))
            continue
        member = joined.get(experiment.id) or (
            state.membership(experiment.id) if state is not None else None)
        facts = VisitorFacts(in_audience(experiment), is_bot, opted_out, consented)
        stored = None
        if member is not None and member.salt_tag == salt_tag(experiment.salt):
            stored = StoredAssignment(member.arm, experiment.salt, 1.0)
        result = assign(experiment, visitor_id, facts=facts, now=situation.now, stored=stored,
                        weights=situation.weights.get(experiment.id),
                        slot=situation.slots.get(experiment.id), holdout=situation.holdout)
        if isinstance(result, NotAssigned):
            outcomes.append(Outcome(experiment.id, None, str(result.reason)))
            continue
        counted = False
        if state is not None and (member is None or member.arm != result.arm
                                  or not member.exposed):
            goals = member.goals if member is not None and member.arm == result.arm else ()
            x = pre_exposure_covariate(state) if len(experiment.goals) < MAX_GOALS else None
            joined.pop(experiment.id, None)
            joined[experiment.id] = Membership(experiment.id, result.arm,
                                               salt_tag(result.salt), True,
                                               with_covariate(goals, x))
            day = day or situation.now.date().isoformat()
            events.append(Exposure(experiment.id, result.arm, day, result.probability,
                                   situation.periods.get(experiment.id, ""), x))
            counted = True
        outcomes.append(Outcome(experiment.id, result.arm, "", result.sticky, counted))
    if joined and state is not None:
        state = with_memberships(state, tuple(joined.values()))
    return Decisions(tuple(outcomes), state, tuple(events))


def random_experiment(rng: random.Random, number: int) -> Experiment:
    weights = rng.choice([(0.5, 0.5), (0.1, 0.9), (0.0, 1.0), (0.25, 0.25, 0.5)])
    goals = [Goal("done", GoalKind.PAGE, "/done", True)]
    if rng.random() < 0.15:   # as many goals as the cookie keeps: no covariate
        goals += [Goal(f"g{i}", GoalKind.CLICK, f"#g{i}", False) for i in range(MAX_GOALS)]
    return Experiment(
        f"e{number}", tuple(Arm(f"a{i}", w) for i, w in enumerate(weights)), tuple(goals),
        salt=rng.choice(["", "s1", "s2"]), layer=rng.choice([None, None, "L"]),
        traffic=rng.choice([1.0, 1.0, 0.5, 0.3, 0.0]),
        start=rng.choice([None, NOW, NOW + timedelta(microseconds=1)]),
        end=rng.choice([None, NOW + timedelta(microseconds=1), NOW]))


def random_state(rng: random.Random, names: Sequence[str]) -> VisitorState:
    members = tuple(
        Membership(name, rng.choice(["a0", "a1", "a2", "gone"]),
                   rng.choice([0, zlib.crc32(name.encode()), zlib.crc32(b"s1")]),
                   rng.random() < 0.7,
                   rng.choice([(), (("~x", 4.0),), (("~x", 4.0), ("done", 1.0)), (("r", 2.5),)]))
        for name in rng.sample(names, rng.randint(0, len(names))))
    t = 1_763_850_000 + rng.randint(0, 9000)
    return VisitorState(f"{rng.getrandbits(128):032x}", t - 500, t, t + 10,
                        visit_number=rng.randint(1, 300), experiments=members)


def test_decide_is_decide_built_on_assign() -> None:
    rng = random.Random(7)
    settings = ContextSettings()
    compared = {"assigned": 0, "excluded": 0, "preview": 0}
    for round_ in range(60):
        experiments = [random_experiment(rng, i) for i in range(rng.randint(1, 4))]
        layered = [e for e in experiments if e.layer is not None]
        if sum(e.traffic for e in layered) > 1.0:
            continue
        if rng.random() < 0.2:
            experiments.append(experiments[0])   # an experiment given twice
        weights = {e.id: tuple(1.0 / len(e.arms) for _ in e.arms)
                   for e in experiments if rng.random() < 0.3}
        situation = Situation(NOW, weights, {e: "p7" for e in weights}, plan_layers(layered),
                              rng.choice([0.0, 0.0, 0.3]))
        names = [e.id for e in experiments] + ["other"]
        for _ in range(40):
            state = None if rng.random() < 0.15 else random_state(rng, names)
            request = RequestFacts(client_ip="203.0.113.9", peer_trusted=False, method="GET",
                                   scheme="https", host="shop.test", path="/",
                                   user_agent=rng.choice(UAS), dnt=rng.choice(["", "", "1"]))
            context = build_context(request, state, settings, NOW.timestamp(), None)
            verdicts = {e.id: rng.random() < 0.8 for e in experiments}
            preview = ({experiments[0].id: rng.choice(["a1", "nope"])}
                       if rng.random() < 0.15 else None)
            kwargs = {"in_audience": lambda e, v=verdicts: v[e.id], "preview": preview}
            new = decide(experiments, context, situation, **kwargs)   # type: ignore[arg-type]
            old = reference_decide(experiments, context, situation, **kwargs)
            assert new == old, round_
            assert repr(new) == repr(old)   # equal values of the same types (1.0, not 1)
            if new.state is not None:
                assert encode(new.state, SECRET) == encode(old.state, SECRET)
            for o in new.outcomes:
                key = ("preview" if o.reason == PREVIEW else
                       "assigned" if o.arm is not None else "excluded")
                compared[key] += 1
    assert min(compared.values()) > 50, compared   # every branch was compared, often


def test_full_traffic_needs_no_traffic_hash(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # The largest position there can be is below 1, so a hash never excludes at traffic 1.
    top = (struct.unpack(">Q", b"\xff" * 8)[0] >> 11) / 9007199254740992.0
    assert top < 1.0
    hashed: list[str] = []
    original = assignment._position
    monkeypatch.setattr(assignment, "_position",
                        lambda text: hashed.append(text) or original(text))
    experiment = Experiment("full", (Arm("a", 0.5), Arm("b", 0.5)),
                            (Goal("done", GoalKind.PAGE, "/done", True),))
    facts = VisitorFacts(True, False, False, True)
    for visitor in ("1" * 32, "f" * 32, "0123456789abcdef" * 2):
        result = assign(experiment, visitor, facts=facts, now=NOW)
        assert not isinstance(result, NotAssigned)
    assert [h.split("/")[0] for h in hashed] == ["arm"] * 3   # no traffic/ hash taken
    half = Experiment("half", experiment.arms, experiment.goals, traffic=0.5)
    assign(half, "1" * 32, facts=facts, now=NOW)
    assert hashed[-2].startswith("traffic/half:")


def test_shared_outcomes_and_exposures_are_equal_to_fresh_ones() -> None:
    experiment = Experiment("hero", (Arm("a", 0.5), Arm("b", 0.5)),
                            (Goal("done", GoalKind.PAGE, "/done", True),))
    situation = Situation(NOW, {}, {}, {})
    seen = []
    for number in (1, 2, 150):
        state = VisitorState("ab" * 16, 1_763_850_000, 1_763_850_000, 1_763_850_000,
                             visit_number=number)
        request = RequestFacts(client_ip="203.0.113.9", peer_trusted=False, method="GET",
                               scheme="https", host="shop.test", path="/", user_agent=UAS[0])
        context = build_context(request, state, ContextSettings(), NOW.timestamp(), None)
        decided = decide([experiment], context, situation, in_audience=lambda e: True)
        [event] = decided.events
        visits = context.cookie_state.visit_number   # a new visit began: one more
        x = float(min(visits - 1, 100))   # the covariate is capped at 100
        assert event == Exposure("hero", decided.outcomes[0].arm, "2026-11-22", 0.5, "", x)
        assert type(event.covariate) is float and type(event.probability) is float
        seen.append(event)
    assert len({id(e) for e in seen}) == 3   # a shared value per covariate, never mixed up


def test_the_one_experiment_shortcut_shows_what_the_general_path_shows(tmp_path: Path) -> None:
    (tmp_path / "e.toml").write_text('''
[[experiment]]
id = "hero"
pages = ["/"]
goals = [{ id = "done", kind = "page", url = "/done", primary = true }]
[[experiment.arms]]
id = "a0"
weight = 0.5
[[experiment.arms]]
id = "a1"
weight = 0.5
slot = "#hero"
text = "b"

[[experiment]]
id = "split"
pages = ["/"]
goals = [{ id = "done", kind = "page", url = "/done", primary = true }]
[[experiment.arms]]
id = "a0"
weight = 0.5
[[experiment.arms]]
id = "a1"
weight = 0.5
redirect = "/elsewhere"
''')
    library = RuleLibrary.load(str(tmp_path), quiet=True)
    assert not library.errors, library.errors
    runtime = Experimentation(lambda: library.ruleset, (SECRET,))
    runtime.definitions   # noqa: B018 (plans the rule set)
    unassigned = Outcome("other", None, "bot")
    for outcome in (Outcome("hero", "a0", ""), Outcome("hero", "a1", "", True),
                    Outcome("split", "a0", ""), Outcome("split", "a1", "", False, True),
                    Outcome("hero", None, "holdout")):
        alone = runtime._shown((outcome,), None, (), None)
        # With an outcome that has no arm besides it, the general path runs and must agree.
        general = runtime._shown((outcome, unassigned), None, (), None)
        assert alone[0] == (outcome,) and general[0] == (outcome, unassigned)
        assert alone[1:] == general[1:]
    assert runtime._shown((Outcome("hero", "a1", ""),), None, (), None)[4]   # a rule shown
    assert runtime._shown((Outcome("split", "a1", ""),), None, (), None)[3] == "/elsewhere"


def test_visitor_facts_still_match_what_decide_uses() -> None:
    request = RequestFacts(client_ip="203.0.113.9", peer_trusted=False, method="GET",
                           scheme="https", host="shop.test", path="/", user_agent=UAS[1])
    context = build_context(request, None, ContextSettings(), NOW.timestamp(), None)
    assert visitor_facts(context, True) == VisitorFacts(True, True, False, True)
