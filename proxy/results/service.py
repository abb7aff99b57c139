"""Reading what the reports need: the only part of proxy/results that awaits the store.

Background and admin use only. Experiments are read one after the other (one pipelined round
trip each); a store failure raises StoreUnavailable for the caller to turn into a message.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from experiments.model import Experiment
from experiments.results import SummaryOptions
from proxy.results.summary import DEFAULT_OPTIONS, ExperimentReport, build_report
from proxy.store.experiment_counts import CountsReader


class UnknownExperiment(ValueError):
    """An experiment id that no definition has; the message lists the ones that exist."""


def pick(definitions: Mapping[str, Experiment], only: str | None) -> list[Experiment]:
    """All definitions (sorted by id), or the one named ``only``."""
    if only is None:
        return [definitions[k] for k in sorted(definitions)]
    if only not in definitions:
        known = ", ".join(sorted(definitions)) or "none (no [[experiment]] tables found)"
        raise UnknownExperiment(f"no experiment {only!r} is defined; defined: {known}")
    return [definitions[only]]


async def read_reports(reader: CountsReader, definitions: Mapping[str, Experiment],
                       now: datetime, *, only: str | None = None, since: str | None = None,
                       until: str | None = None,
                       options: SummaryOptions = DEFAULT_OPTIONS) -> list[ExperimentReport]:
    reports = []
    for experiment in pick(definitions, only):
        counts = await reader.read(experiment, since=since, until=until)
        reports.append(build_report(experiment, counts, now, since=since, until=until,
                                    options=options))
    return reports
