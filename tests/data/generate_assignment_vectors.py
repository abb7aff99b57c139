"""Write tests/data/assignment_vectors.json (run once; the file is checked in).

    .venv/bin/python tests/data/generate_assignment_vectors.py

The vectors pin the hash, the arm choice and the whole assign() decision, like GrowthBook's
cases.json: any change to assignment that moves a visitor shows up as a failing vector.
Regenerate ONLY for a deliberate, versioned change of the assignment scheme (which moves
visitors in running experiments), never to make a failing test pass.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from experiments.assignment import (
    StoredAssignment,
    VisitorFacts,
    assign,
    bucket,
    choose_arm,
    plan_layers,
)
from experiments.model import parse_experiment

OUT = Path(__file__).with_name("assignment_vectors.json")
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
UNICODE_IDS = ["ñandú", "😀visitor", "访客-42", "Ελληνικά", "e\u0301", "é", "a b", "🇩🇪🇫🇷",
               "\u200b", "ı", "İ", "ß", "ﬁ", "🧪" * 20, "x" * 300, "tab\there", "0", "-"]


def visitor_ids(count: int) -> list[str]:
    ids = [f"v{i}" for i in range(count // 2)]
    ids += [hashlib.sha1(str(i).encode()).hexdigest()[:22] for i in range(count // 2)]
    return ids + UNICODE_IDS


def experiment_table(exp_id: str, weights: list[float], traffic: float = 1.0,
                     salt: str | None = None, layer: str | None = None,
                     start: datetime | None = None, end: datetime | None = None) -> dict:
    table: dict = {
        "id": exp_id, "traffic": traffic,
        "arms": [{"id": f"arm{k}", "weight": w} for k, w in enumerate(weights)],
        "goals": [{"id": "buy", "kind": "page", "url": "/thanks", "primary": True}],
    }
    for key, value in (("salt", salt), ("layer", layer)):
        if value is not None:
            table[key] = value
    for key, moment in (("start", start), ("end", end)):
        if moment is not None:
            table[key] = moment.isoformat()
    return table


def bucket_cases() -> list[dict]:
    namespaces = ["arm/hero", "traffic/hero", "layer/checkout", "holdout/kairos-holdout-v1",
                  "arm/hero.v2"]
    return [{"namespace": ns, "visitor": v, "bucket": bucket(ns, v)}
            for ns in namespaces for v in visitor_ids(40)]


def choose_cases() -> list[dict]:
    weight_sets = [[0.5, 0.5], [1.0, 0.0], [0.0, 1.0], [0.0, 0.5, 0.5], [0.5, 0.0, 0.5],
                   [0.2, 0.3, 0.5], [0.1, 0.1, 0.1, 0.7], [1 / 3, 1 / 3, 1 / 3],
                   [0.5, 0.5 - 1e-10]]
    positions = [0.0, 0.1, 0.2, 0.2 - 2**-53, 0.5, 0.5 - 2**-53, 0.7, 0.9999999999,
                 1 - 2**-53, 1 / 3, 2 / 3]
    return [{"weights": w, "position": p, "arm": choose_arm(w, p)}
            for w in weight_sets for p in positions]


FACTS = {
    "human": VisitorFacts(in_audience=True, is_bot=False, opted_out=False, consented=True),
    "bot": VisitorFacts(in_audience=True, is_bot=True, opted_out=False, consented=True),
    "outsider": VisitorFacts(in_audience=False, is_bot=False, opted_out=False, consented=True),
    "opted_out": VisitorFacts(in_audience=True, is_bot=True, opted_out=True, consented=False),
    "no_consent": VisitorFacts(in_audience=True, is_bot=True, opted_out=False, consented=False),
}


def scenarios() -> list[dict]:
    """(name, experiment table, layer peers, kwargs) for assign()."""
    plain = experiment_table("hero", [0.5, 0.5])
    out = [
        {"name": "equal", "table": plain},
        {"name": "three-arms", "table": experiment_table("trio", [0.2, 0.3, 0.5])},
        {"name": "weight-zero", "table": experiment_table("zero", [0.0, 1.0])},
        {"name": "weight-one-control", "table": experiment_table("one", [1.0, 0.0])},
        {"name": "traffic-0", "table": experiment_table("t0", [0.5, 0.5], traffic=0.0)},
        {"name": "traffic-1", "table": experiment_table("t1", [0.5, 0.5], traffic=1.0)},
        {"name": "traffic-30", "table": experiment_table("t30", [0.5, 0.5], traffic=0.3)},
        {"name": "salted", "table": experiment_table("hero", [0.5, 0.5], salt="hero.v2")},
        {"name": "holdout-10", "table": plain, "holdout": 0.1},
        {"name": "holdout-all", "table": plain, "holdout": 1.0},
        {"name": "not-started", "table": experiment_table(
            "later", [0.5, 0.5], start=T0 + timedelta(days=1))},
        {"name": "ended", "table": experiment_table(
            "over", [0.5, 0.5], start=T0 - timedelta(days=9), end=T0)},
        {"name": "bandit-weights", "table": plain, "weights": [0.1, 0.9]},
        {"name": "sticky", "table": plain,
         "stored": {"arm": "arm1", "salt": "hero", "probability": 0.5}},
        {"name": "sticky-other-salt", "table": plain,
         "stored": {"arm": "arm1", "salt": "hero.v0", "probability": 0.5}},
        {"name": "sticky-gone-arm", "table": plain,
         "stored": {"arm": "arm7", "salt": "hero", "probability": 0.2}},
    ]
    layer = [experiment_table("la", [0.5, 0.5], traffic=0.3, layer="checkout"),
             experiment_table("lb", [0.5, 0.5], traffic=0.5, layer="checkout",
                              start=T0 - timedelta(days=1))]
    out.append({"name": "layer-a", "table": layer[0], "layer_peers": layer})
    out.append({"name": "layer-b", "table": layer[1], "layer_peers": layer})
    for facts in ("bot", "outsider", "opted_out", "no_consent"):
        out.append({"name": f"facts-{facts}", "table": plain, "facts": facts})
    return out


def assign_cases(by_name: dict[str, dict]) -> list[dict]:
    cases = []
    for name, scenario in by_name.items():
        ids = visitor_ids(12) if name.startswith("facts") else visitor_ids(24)
        for v in ids:
            cases.append({"scenario": name, "visitor": v, "expected": run(scenario, v)})
    return cases


def run(scenario: dict, visitor: str) -> dict:
    """Turn a scenario and a visitor into an assign() call."""
    experiment = parse_experiment(scenario["table"], scenario["name"])
    peers = [parse_experiment(t, scenario["name"]) for t in scenario.get("layer_peers", [])]
    stored = scenario.get("stored")
    result = assign(
        experiment, visitor, facts=FACTS[scenario["facts"]],
        now=datetime.fromisoformat(scenario["now"]),
        stored=StoredAssignment(**stored) if stored else None,
        weights=scenario.get("weights"), slot=plan_layers(peers).get(experiment.id),
        holdout=scenario["holdout"],
    )
    if hasattr(result, "reason"):
        return {"reason": result.reason.value}
    return {"arm": result.arm, "probability": result.probability, "sticky": result.sticky}


def main() -> None:
    by_name = {s["name"]: {"now": T0.isoformat(), "facts": "human", "holdout": 0.0, **s}
               for s in scenarios()}
    vectors = {
        "about": "Kairos assignment test vectors; see experiments/assignment.py for the "
                 "scheme and tests/data/generate_assignment_vectors.py for how they were made.",
        "hash": "bucket = (int.from_bytes(sha256(f'{namespace}:{visitor}'.encode())[:8], "
                "'big') >> 11) / 2**53",
        "facts": {name: {"in_audience": f.in_audience, "is_bot": f.is_bot,
                         "opted_out": f.opted_out, "consented": f.consented}
                  for name, f in FACTS.items()},
        "bucket": bucket_cases(),
        "choose_arm": choose_cases(),
        "scenarios": by_name,
        "assign": assign_cases(by_name),
    }
    OUT.write_text(json.dumps(vectors, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {OUT}: {len(vectors['bucket'])} bucket, {len(vectors['choose_arm'])} "
          f"choose_arm, {len(vectors['assign'])} assign cases")


if __name__ == "__main__":
    main()
