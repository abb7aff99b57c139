"""Counters and a latency histogram, rendered in the Prometheus text format.

Per worker process: each uvicorn worker keeps its own numbers and labels them with its pid,
so a scrape through the load-balanced port sees one worker at a time. Sum by the metric
name across ``worker`` labels in Prometheus; documented in the README.
"""

from __future__ import annotations

import os
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from functools import partial

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Histogram:
    def __init__(self, buckets: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.buckets, value)] += 1
        self.total += value
        self.count += 1


class Metrics:
    def __init__(self) -> None:
        self.requests: Counter[str] = Counter()        # by status class: "2xx", "5xx", ...
        self.errors: Counter[str] = Counter()          # by ProxyError.kind and pipeline faults
        self.upstream_latency = Histogram()            # time to upstream response headers
        self.in_flight = 0
        # Gauges owned by other parts (store buffer, rules), read at scrape time.
        self.gauges: dict[str, Callable[[], float]] = {}

    def gauge_stats(self, prefix: str, stats: Callable[[], Mapping[str, float]],
                    names: Iterable[str]) -> None:
        """Gauges ``<prefix>_<name>`` for each name, read from ``stats()`` at scrape time."""
        for name in names:
            self.gauges[f"{prefix}_{name}"] = partial(_stat, stats, name)

    def count_response(self, status: int) -> None:
        self.requests[f"{status // 100}xx"] += 1

    def render(self) -> str:
        worker = f'worker="{os.getpid()}"'
        lines: list[str] = []
        lines += _family("kairos_requests_total", "counter", "Responses sent, by status class.",
                         ((f'{worker},status="{k}"', v) for k, v in sorted(self.requests.items())))
        lines += _family("kairos_errors_total", "counter", "Failures, by kind.",
                         ((f'{worker},kind="{k}"', v) for k, v in sorted(self.errors.items())))
        lines += _family("kairos_requests_in_flight", "gauge", "Requests being handled.",
                         [(worker, self.in_flight)])
        lines += self._histogram(worker)
        for name, read in sorted(self.gauges.items()):
            lines += _family(f"kairos_{name}", "gauge", name.replace("_", " ") + ".",
                             [(worker, read())])
        return "\n".join(lines) + "\n"

    def _histogram(self, worker: str) -> list[str]:
        name = "kairos_upstream_latency_seconds"
        h = self.upstream_latency
        lines = [f"# HELP {name} Time from sending a request upstream to its response headers.",
                 f"# TYPE {name} histogram"]
        running = 0
        for bound, count in zip((*h.buckets, float("inf")), h.counts, strict=True):
            running += count
            le = "+Inf" if bound == float("inf") else repr(bound)
            lines.append(f'{name}_bucket{{{worker},le="{le}"}} {running}')
        lines.append(f"{name}_sum{{{worker}}} {h.total:.6f}")
        lines.append(f"{name}_count{{{worker}}} {h.count}")
        return lines


def _stat(stats: Callable[[], Mapping[str, float]], name: str) -> float:
    return stats()[name]


def _family(name: str, kind: str, help_text: str,
            samples: Iterable[tuple[str, float]]) -> list[str]:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    lines += [f"{name}{{{labels}}} {_number(value)}" for labels, value in samples]
    return lines


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.6f}"
