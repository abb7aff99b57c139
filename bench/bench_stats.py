"""Benchmark the experiment logic: assignment per request, P(best) per bandit update,
summarise per report.

    .venv/bin/python bench/bench_stats.py [--repeat 200]

Prints the median and p99 cost of each in µs or ms. No asserts: it measures.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from experiments.assignment import VisitorFacts, assign, bucket
from experiments.bandit import compute_weights
from experiments.history import WeightHistory
from experiments.model import BanditSettings, parse_experiment
from experiments.results import summarise
from experiments.stats import ArmStats, prob_best_beta


def timed(fn: Callable[[], object], repeat: int) -> tuple[float, float]:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    samples.sort()
    return statistics.median(samples), samples[int(0.99 * (len(samples) - 1))]


def report(name: str, fn: Callable[[], object], repeat: int, unit: str = "ms") -> None:
    scale = 1e3 if unit == "ms" else 1e6
    median, p99 = timed(fn, repeat)
    print(f"{name:<52} median {median * scale:9.2f} {unit}   p99 {p99 * scale:9.2f} {unit}")


def experiment(arms: int, goals: int):
    kinds = [("page", "url", "/thanks"), ("click", "selector", "#buy"),
             ("custom", "event", "signup"), ("revenue", "event", "purchase")]
    return parse_experiment({
        "id": "bench", "arms": [{"id": f"a{k}", "weight": 1 / arms} for k in range(arms)],
        "goals": [{"id": f"g{g}", "kind": kinds[g % 4][0], kinds[g % 4][1]: kinds[g % 4][2],
                   "primary": g == 0} for g in range(goals)]}, "bench")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=200)
    repeat = parser.parse_args().repeat

    exp = experiment(3, 4)
    facts = VisitorFacts(in_audience=True, is_bot=False, opted_out=False, consented=True)
    now = datetime(2025, 3, 1, tzinfo=UTC)
    report("bucket() (one SHA-256)", lambda: bucket("arm/bench", "c0ffee-visitor"),
           repeat * 50, "µs")
    report("assign() 3 arms, fresh visitor", lambda: assign(exp, "c0ffee-visitor", facts=facts,
                                                            now=now), repeat * 50, "µs")
    for k in (2, 5, 10):
        alphas = [1 + 400 + 10 * i for i in range(k)]
        betas = [1 + 10_000 - 400 - 10 * i for i in range(k)]
        report(f"prob_best_beta, {k} arms", lambda a=alphas, b=betas: prob_best_beta(a, b),
               repeat)
        report(f"prob_best_beta + second best, {k} arms",
               lambda a=alphas, b=betas: prob_best_beta(a, b, second=True), repeat)
    huge = ([1 + 5 * 10**7, 1 + 50_010_000], [1 + 95 * 10**7, 1 + 949_990_000])
    report("prob_best_beta, 2 arms of 1e9 units", lambda: prob_best_beta(*huge), repeat)
    arms = [ArmStats.binary(10_000, 400 + 10 * i) for i in range(3)]
    report("compute_weights, 3 arms", lambda: compute_weights(
        arms, planned=(1 / 3,) * 3, settings=BanditSettings(), binary=True), repeat)
    counts = {arm.id: {g.id: (ArmStats.binary(10_000, 500 + 7 * i) if g.binary
                              else ArmStats(10_000, 25_000.0 + 90 * i, 2_500_000.0))
                       for g in exp.goals} for i, arm in enumerate(exp.arms)}
    report("summarise, 3 arms x 4 goals", lambda: summarise(exp, counts, WeightHistory()),
           repeat)


if __name__ == "__main__":
    main()
