"""Bandit weights for ``allocation = "bandit"`` experiments: one node computes them on a
cadence, every worker follows.

Every worker of every machine runs a :class:`BanditLoop`. Each interval it does two things:

- ``step()``: for each bandit experiment whose newest published weights are at least
  ``bandit.cadence_seconds`` old (or that has none), try to become the one node that
  recomputes them, and if it does, read the counts, compute Thompson-sampling weights on the
  primary goal (:func:`experiments.bandit.compute_weights`) and publish them;
- ``refresh()``: read the newest entry of each bandit experiment's weight log into
  ``weights``, a plain dict that the request path reads without ever awaiting Redis.

Why a lock. A weight change must happen once per cadence, not once per worker: each
published entry starts a weight period, and the sample-ratio check and the period-weighted
estimates count units per period. ``SET <prefix>:{exp:<id>}:bandit-lock <token> NX PX
<cadence>`` is atomic on one Redis and on a Redis Cluster (the key carries the experiment's
hash tag, so it lives in the slot of the weight log), so of all the nodes that try at the
same moment exactly one wins.

Why the lock is never released. Its expiry *is* the cadence: while it is held nobody
recomputes, so during burn-in (nothing published, every node finds the experiment due) the
counts are still read once per cadence, not once per worker and interval. A node that dies
half way blocks the others for at most one cadence.

Why the winner reads the log again. A node decides that an experiment is due from its last
read, which can be an interval old (or missing, just after it started), and the lock expires
by Redis's clock while "due" is judged by each node's own clock, and the clocks disagree. So
after winning, the node reads the newest entry again and publishes only if it is still at
least a cadence old by its own clock: an entry just published elsewhere is never followed by
a second one within the cadence.

Why not through the event buffer. The buffer belongs to one worker and is flushed on that
worker's schedule, merged with other events and retried; a weight change sent that way would
reach Redis late, after this node had already started using it, or be lost with the worker.
The leader's publish has to be in Redis when the leader says it is: it runs
``Keyspace.commands_for(WeightChange)`` on the client itself (``RPUSH``, ``LTRIM``, ``EXPIRE``
in one pipeline; were the connection to drop after the ``RPUSH``, the next publish trims and
renews). Only then does it adopt the weights itself.

Redis down or frozen: both calls log at debug level and keep the last weights, so visitors
keep the weights they had. Weights are published only in the Thompson phase; during burn-in
nothing is published and visitors get the planned weights. An entry whose arms differ from
the definition (the definition changed) is ignored: planned weights until the next
computation, which is due at once.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import math
import os
import secrets
import socket
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from experiments.bandit import BanditPhase, BanditWeights, compute_weights, segment_weights
from experiments.model import WEIGHT_TOLERANCE, Allocation, Experiment
from proxy.background import being_cancelled, every
from proxy.store.client import StoreUnavailable, translated
from proxy.store.events import WeightChange, period_id
from proxy.store.experiment_counts import CountsReader, ExperimentCounts

log = logging.getLogger("kairos.bandit")


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _stop_if_cancelled() -> None:
    """redis-py may turn a cancellation into its own error (then StoreUnavailable); when the
    task is being cancelled, end it as cancelled instead of carrying on."""
    if being_cancelled():
        raise asyncio.CancelledError


@dataclass(frozen=True, slots=True)
class _Entry:
    """The newest entry of one experiment's weight log, as this loop last read it."""

    at: datetime | None                 # None: unreadable
    weights: tuple[float, ...] | None   # in definition order; None: does not fit it
    note: str = ""                      # why it does not fit


class BanditLoop:
    """Recomputes (one node) and follows (every worker) the weights of bandit experiments.

    ``experiments`` returns the current definitions by id (it is called on every step and
    refresh, so rule reloads are followed); ``clock`` returns an aware datetime.
    """

    def __init__(self, store: Any, experiments: Callable[[], Mapping[str, Experiment]], *,
                 clock: Callable[[], datetime] = _utc_now, interval: float = 5.0) -> None:
        self._store = store
        self._experiments = experiments
        self._clock = clock
        self._interval = interval
        # Who holds a lock, for whoever looks with redis-cli; random, so every loop differs.
        self._token = f"{socket.gethostname()}/{os.getpid()}/{secrets.token_hex(8)}"
        self._definitions: dict[str, Experiment] = {}    # bandit experiments last seen
        self._latest: dict[str, _Entry | None] = {}      # None: the log is empty
        self._computed: dict[str, BanditWeights] = {}    # this loop's last computation
        self._segments: dict[str, tuple[str, ...]] = {}  # optimised rules' segment ids
        # Replaced as a whole, never mutated: the request path reads them as they are.
        self.weights: Mapping[str, tuple[float, ...]] = {}
        self.periods: Mapping[str, str] = {}

    # -- the two steps --------------------------------------------------------------------

    async def refresh(self) -> None:
        """Adopt the newest published weights of every bandit experiment. Redis failing is
        logged at debug level and changes nothing."""
        reader = CountsReader.of(self._store)
        try:
            await self._read_segments(reader)
            bandits = self._bandits()
            raws = await self._read_newest(reader, bandits)
        except StoreUnavailable as exc:
            _stop_if_cancelled()
            log.debug("bandit weights not refreshed, keeping the last ones: %s", exc)
            return
        latest = {}
        for exp, raw in zip(bandits, raws, strict=True):
            entry = _parse(raw, exp)
            if entry is not None and entry.note and entry != self._latest.get(exp.id):
                log.warning("bandit %r: %s", exp.id, entry.note)
            latest[exp.id] = entry
        self._latest = latest
        self._adopt(bandits)

    async def step(self) -> tuple[str, ...]:
        """Recompute and publish the weights of the bandit experiments that are due and whose
        lock this loop wins; the ids published. Redis failing ends the step quietly (debug
        log); another failure is logged for its experiment and the others go on."""
        now = self._clock()
        at = now.replace(microsecond=0)
        bandits = self._bandits()
        reader = CountsReader.of(self._store)
        published = []
        for exp in bandits:
            if (exp.start is not None and now < exp.start) or (
                    exp.end is not None and now >= exp.end):
                continue  # not running: no visitors to weigh
            if not _due(exp, at, self._latest.get(exp.id)):
                continue
            try:
                if await self._step_one(reader, exp, at, bandits):
                    published.append(exp.id)
            except StoreUnavailable as exc:
                _stop_if_cancelled()
                log.debug("bandit step stopped, keeping the last weights: %s", exc)
                break  # Redis is down for the other experiments too
            except Exception:
                _stop_if_cancelled()
                log.exception("bandit %r: weights not recomputed; keeping the last ones",
                              exp.id)
        return tuple(published)

    async def run(self) -> None:
        """``step()`` then ``refresh()`` every ``interval`` seconds, until cancelled."""
        async def both() -> None:
            await self.step()
            await self.refresh()

        await every(self._interval, both, "bandit loop", log)

    def describe(self, experiment_id: str) -> dict[str, Any]:
        """Where ``experiment_id``'s weights come from, as of this loop's last step or
        refresh: ``phase`` "thompson" (published weights in force), "burn_in" (this loop
        computed and found too little data) or "planned"; ``weights`` is the published list,
        None when visitors get the planned weights."""
        exp = self._definitions.get(experiment_id)
        if exp is None:
            return {"phase": "planned", "published_at": None, "weights": None,
                    "detail": "not a bandit experiment (or not loaded yet): planned weights"}
        entry = self._latest.get(experiment_id)
        weights = self.weights.get(experiment_id)
        if weights is not None and entry is not None and entry.at is not None:
            rule = "top-two Thompson sampling" if exp.bandit.top_two else "Thompson sampling"
            return {"phase": BanditPhase.THOMPSON.value,
                    "published_at": entry.at.isoformat(), "weights": list(weights),
                    "detail": f"{rule} on goal {exp.primary_goal.id!r}, floor "
                              f"{exp.bandit.floor:g}; published {entry.at.isoformat()} by one "
                              f"node, recomputed every {exp.bandit.cadence_seconds} s"}
        computed = self._computed.get(experiment_id)
        if computed is not None and computed.phase is BanditPhase.BURN_IN:
            return {"phase": BanditPhase.BURN_IN.value, "published_at": None,
                    "weights": None, "detail": f"{computed.detail}; planned weights meanwhile"}
        detail = entry.note if entry is not None and entry.note else (
            "no weights published yet: planned weights until a node computes them "
            f"(every {exp.bandit.cadence_seconds} s)")
        return {"phase": "planned", "published_at": None, "weights": None, "detail": detail}

    # -- internals ------------------------------------------------------------------------

    def _bandits(self) -> list[Experiment]:
        """The bandit experiments, then the segments of optimised rules (as experiments
        named ``<id>@<segment>``), so a rule's global counts are read before its segments'."""
        bandits = [exp for exp in self._experiments().values()
                   if exp.allocation is Allocation.BANDIT]
        segments = [replace(exp, id=segment) for exp in bandits
                    for segment in self._segments.get(exp.id, ())]
        self._definitions = {exp.id: exp for exp in (*bandits, *segments)}
        return [*bandits, *segments]

    async def _read_segments(self, reader: CountsReader) -> None:
        """The segments seen so far of each bandit experiment (only optimised rules have)."""
        bandits = [exp for exp in self._experiments().values()
                   if exp.allocation is Allocation.BANDIT]
        if not bandits:
            return
        with translated(f"reading the segments of bandit experiments from {reader.where}"):
            async with reader.client.pipeline(transaction=False) as pipe:
                for exp in bandits:
                    pipe.hkeys(reader.keyspace.segments(exp.id))
                replies = await pipe.execute()
        self._segments = {exp.id: tuple(sorted(
            (s.decode() if isinstance(s, bytes) else str(s)) for s in reply))
            for exp, reply in zip(bandits, replies, strict=True) if reply}

    async def _step_one(self, reader: CountsReader, exp: Experiment, at: datetime,
                        bandits: Sequence[Experiment]) -> bool:
        cadence = exp.bandit.cadence_seconds
        with translated(f"taking the bandit lock of {exp.id!r} at {reader.where}"):
            won = await reader.client.set(reader.keyspace.bandit_lock(exp.id), self._token,
                                          nx=True, px=cadence * 1000)
        if not won:
            log.debug("bandit %r: another node recomputes the weights", exp.id)
            return False
        (raw,) = await self._read_newest(reader, [exp])
        entry = self._latest[exp.id] = _parse(raw, exp)
        self._adopt(bandits)
        if not _due(exp, at, entry):
            log.debug("bandit %r: weights published elsewhere within the cadence", exp.id)
            return False
        if "experiments.stats.best" not in sys.modules:
            # scipy loads in ~1 s: in a thread, not on the event loop serving pages.
            await asyncio.to_thread(importlib.import_module, "experiments.stats.best")
        if "@" in exp.id:   # a segment: shrunk toward the rule's global counts
            base = replace(exp, id=exp.id.partition("@")[0])
            result = _compute_segment(exp, await reader.read(exp), await reader.read(base))
        else:
            result = _compute(exp, await reader.read(exp))
        self._computed[exp.id] = result
        if result.phase is not BanditPhase.THOMPSON:
            log.info("bandit %r: %s; visitors keep the planned weights", exp.id, result.detail)
            return False
        event = WeightChange(exp.id, at, tuple(
            (arm.id, w) for arm, w in zip(exp.arms, result.weights, strict=True)))
        with translated(f"publishing the bandit weights of {exp.id!r} to {reader.where}"):
            async with reader.client.pipeline(transaction=False) as pipe:
                for command in reader.keyspace.commands_for(event):
                    pipe.execute_command(command.op, command.key, *command.args)
                await pipe.execute()
        self._latest[exp.id] = _Entry(at, result.weights)
        self._adopt(bandits)
        log.info("bandit %r: published weights %s for period %s (%s)", exp.id,
                 ", ".join(f"{arm}={w:.4f}" for arm, w in event.weights), period_id(at),
                 result.detail)
        return True

    async def _read_newest(self, reader: CountsReader,
                           bandits: Sequence[Experiment]) -> list[Any]:
        """The newest raw weight log entry of each experiment (None for an empty log)."""
        if not bandits:
            return []
        with translated(f"reading bandit weights from {reader.where}"):
            async with reader.client.pipeline(transaction=False) as pipe:
                for exp in bandits:
                    pipe.lrange(reader.keyspace.weights(exp.id), -1, -1)
                replies = await pipe.execute()
        return [reply[0] if reply else None for reply in replies]

    def _adopt(self, bandits: Sequence[Experiment]) -> None:
        """Rebuild ``weights`` and ``periods`` from the entries read, for ``bandits`` only."""
        weights, periods = {}, {}
        for exp in bandits:
            entry = self._latest.get(exp.id)
            if entry is not None and entry.at is not None and entry.weights is not None:
                weights[exp.id] = entry.weights
                periods[exp.id] = period_id(entry.at)
        self.weights, self.periods = weights, periods


def _due(exp: Experiment, at: datetime, entry: _Entry | None) -> bool:
    """Whether weights published at ``at`` (whole seconds) would be on time: none yet, or the
    newest entry is a cadence old, or it no longer fits the definition (and is older)."""
    if entry is None or entry.at is None:
        return True
    if entry.weights is None:
        return at > entry.at
    return at - entry.at >= timedelta(seconds=exp.bandit.cadence_seconds)


def _compute(exp: Experiment, counts: ExperimentCounts) -> BanditWeights:
    """Weights from the cumulative counts of the primary goal; for a revenue goal the
    conversion events of each arm stand for its purchasers."""
    goal = exp.primary_goal
    cumulative = counts.cumulative()
    stats = [cumulative[arm.id][goal.id] for arm in exp.arms]
    conversions = None
    if not goal.binary:
        totals = counts.goal_totals(goal.id)
        conversions = [totals[arm.id].conversions for arm in exp.arms]
    return compute_weights(stats, planned=exp.weights, settings=exp.bandit,
                           binary=goal.binary, conversions=conversions)


def _compute_segment(exp: Experiment, segment: ExperimentCounts,
                     overall: ExperimentCounts) -> BanditWeights:
    """A segment's weights: its own counts with a prior centred on the whole rule's."""
    goal = exp.primary_goal
    own, everyone = segment.cumulative(), overall.cumulative()
    conversions = None
    if not goal.binary:
        totals = overall.goal_totals(goal.id)
        conversions = [totals[arm.id].conversions for arm in exp.arms]
    return segment_weights([own[arm.id][goal.id] for arm in exp.arms],
                           [everyone[arm.id][goal.id] for arm in exp.arms],
                           planned=exp.weights, settings=exp.bandit, binary=goal.binary,
                           conversions=conversions)


def _parse(raw: Any, exp: Experiment) -> _Entry | None:
    """One weight log entry, ``{"at": <Unix s>, "weights": {arm: w}}``, checked against
    ``exp``; an entry that does not fit keeps its time (for the cadence) and says why."""
    if raw is None:
        return None
    try:
        entry = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
        at = datetime.fromtimestamp(int(entry["at"]), UTC)
        published = entry["weights"]
        if not isinstance(published, dict):
            raise TypeError(f"weights {published!r} are not an object")
    except (ValueError, KeyError, TypeError, OverflowError, OSError) as exc:
        return _Entry(None, None, f"newest weight log entry unreadable ({exc}): ignored")
    arms = [arm.id for arm in exp.arms]
    if set(published) != set(arms):
        return _Entry(at, None, f"weights published {at.isoformat()} are for arms "
                      f"{sorted(published)}, the definition has {sorted(arms)}: ignored, "
                      "planned weights until the next computation")
    try:
        weights = tuple(float(published[arm]) for arm in arms)
    except (ValueError, TypeError) as exc:
        return _Entry(at, None, f"weights published {at.isoformat()} unreadable ({exc})")
    if any(not (math.isfinite(w) and 0.0 <= w <= 1.0) for w in weights) or abs(
            math.fsum(weights) - 1.0) > WEIGHT_TOLERANCE:
        return _Entry(at, None, f"weights published {at.isoformat()} {list(weights)} are not "
                      "shares adding up to 1: ignored")
    return _Entry(at, weights)
