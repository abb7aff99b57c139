"""Benchmark the experiments' share of a page view: ``Experimentation.on_page`` plus the
cookie they rewrite, for 0 to 20 experiments on the page.

    .venv/bin/python bench/bench_experiments.py [--requests 5000]

Each request is a page view of ``/`` by a returning visitor whose cookie already holds
their memberships (the common case) and, separately, by a first-time visitor (assignment,
exposure events, a new cookie). The baseline in the same run is building the visitor
context alone (what every page view already pays). No asserts: it measures.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from proxy.context.build import build_context
from proxy.context.identity import encode
from proxy.context.model import RequestFacts
from proxy.context.settings import parse_settings
from proxy.context.signals import NO_SIGNALS
from proxy.experimentation import Experimentation
from proxy.rules import RuleLibrary

SECRET = "bench-secret-0123456789abcdef"
UA = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
      "Chrome/131.0.0.0 Safari/537.36")


def experiments_toml(count: int) -> str:
    out = []
    for i in range(count):
        out.append(f'''
[[experiment]]
id = "exp-{i}"
pages = ["/"]
audience = {{ "device.kind" = {{ not = "bot" }} }}
goals = [{{ id = "done", kind = "page", url = "/checkout/complete", primary = true }},
         {{ id = "cta", kind = "click", selector = "#cta" }}]
[[experiment.arms]]
id = "control"
weight = 0.5
[[experiment.arms]]
id = "b"
weight = 0.5
slot = "#slot-{i}"
text = "variant {i}"
''')
    return "".join(out)


def timed(fn, requests: int) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    samples = []
    for _ in range(requests):
        t = time.perf_counter_ns()
        fn()
        samples.append((time.perf_counter_ns() - t) / 1000)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.99)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=5000)
    args = parser.parse_args()
    settings = parse_settings({}, "")
    facts = RequestFacts(method="GET", scheme="https", host="shop.example", path="/",
                         query_string="", user_agent=UA, client_ip="203.0.113.7",
                         peer_trusted=False)
    now = time.time()
    print(f"{'experiments':>11}  {'context µs':>14}  {'first visit µs':>16}  "
          f"{'returning µs':>14}  {'cookie encode µs':>16}")
    for count in (0, 1, 5, 20):
        with tempfile.TemporaryDirectory() as folder:
            (Path(folder) / "e.toml").write_text(experiments_toml(count))
            library = RuleLibrary.load(folder, quiet=True)
            assert not library.errors, library.errors
            runtime = Experimentation(lambda lib=library: lib.ruleset, (SECRET,))
            fresh = build_context(facts, None, settings, now, None, NO_SIGNALS)
            first = runtime.on_page(fresh, "shop.example", "/", "", now)
            returning = build_context(facts, first.state, settings, now + 60, None,
                                      NO_SIGNALS)
            state = first.state or fresh.cookie_state
            assert state is not None
            context = timed(lambda s=state: build_context(facts, s, settings, now + 60, None,
                                                          NO_SIGNALS), args.requests)
            new = timed(lambda r=runtime, c=fresh: r.on_page(c, "shop.example", "/", "", now),
                        args.requests)
            back = timed(lambda r=runtime, c=returning: r.on_page(c, "shop.example", "/", "",
                                                                  now + 60), args.requests)
            cookie = timed(lambda s=state: encode(s, SECRET), args.requests)
            print(f"{count:>11}  {context[0]:>7.1f} / {context[1]:<5.0f}  "
                  f"{new[0]:>8.1f} / {new[1]:<5.0f}  {back[0]:>7.1f} / {back[1]:<5.0f}  "
                  f"{cookie[0]:>8.1f} / {cookie[1]:<5.0f}")
    print("(median / p99, microseconds per request, one core)")


if __name__ == "__main__":
    main()
