"""The one place that knows Redis key names (KEYSPACE.md, beside this file, lists them).

Every key is ``<prefix>:{<tag>}:<name>[:<more>...]``. The ``{<tag>}`` part is a Redis Cluster
hash tag: all keys of one tag live in one cluster slot, so a multi-key operation on them (the
flusher's atomic script, a later MGET of one experiment's results) works in cluster mode too.
Tags in use: ``{site}`` for site-wide counts, ``{exp:<experiment>}`` for everything about one
experiment.

``Keyspace.commands_for`` turns an event into the commands that count it. Only the commands
in :data:`OPS` are allowed: additive ones, which the flusher merges (thousands of events
become a few commands), plus ``RPUSH``/``LTRIM`` for the capped weight log. Exactly-once is the
batch script's job (batch.py), so none of them needs to be idempotent.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from proxy.store.events import (
    Conversion,
    Event,
    Exposure,
    Guardrail,
    PageView,
    WeightChange,
    period_id,
)

DEFAULT_PREFIX = "kairos"

# Day counters are kept 400 days after their last write: 13 months of history, the longest
# a visitor cookie lives, plus a margin. Change it here; KEYSPACE.md says the same.
COUNTER_TTL = 400 * 86_400

# How long a writer's "last applied batch" marker is kept. A batch that reached Redis but
# whose reply was lost is recognised when it is retried within this time (batch.py).
APPLIED_MARKER_TTL = 86_400

# Entries kept in an experiment's weight log: 10,000 bandit updates, 104 days at the default
# cadence of 15 minutes, about 1 MB. Older changes fall off (KEYSPACE.md says what that does
# to the sample-ratio check).
WEIGHT_LOG_CAP = 10_000

SITE_TAG = "site"

# Commands a Command may carry, with how many arguments follow the key.
OPS: dict[str, int] = {"INCRBY": 1, "HINCRBY": 2, "INCRBYFLOAT": 1, "HINCRBYFLOAT": 2,
                       "EXPIRE": 1, "RPUSH": 1, "LTRIM": 2}

# Field name suffixes in the per-day hashes of an experiment: "<arm>:<suffix>" (arm ids never
# contain ":", so these cannot collide with the plain "<arm>" field of the units hash).
PERIOD_FIELD = "period:"   # units hash: "period:<period id>" -> units of all arms
INVERSE_P = "inv_p"        # units hash: "<arm>:inv_p" -> sum of 1 / probability
# CUPED's pre-exposure covariate x (Exposure.covariate, Conversion.covariate):
COVARIATE_UNITS = "xn"     # units hash: "<arm>:xn" -> units exposed with a known x
COVARIATE_SUM = "x"        # units hash: "<arm>:x" -> sum of x
COVARIATE_SQ = "xsq"       # units hash: "<arm>:xsq" -> sum of x^2
COVARIATE_XY = "xy"        # goal hash: "<arm>:xy" -> sum of x * value

# Braces, colons and blanks; a regex because the flusher checks every name of every event.
_FORBIDDEN = re.compile(r"[{}:\s]")


@dataclass(frozen=True, slots=True)
class Command:
    """One Redis command on one key: ``op key *args`` (``HINCRBY key field 3``)."""

    op: str
    key: str
    args: tuple[str | int | float, ...]

    def __post_init__(self) -> None:
        if OPS.get(self.op) != len(self.args):
            raise ValueError(f"Command {self.op} {self.key} {self.args!r}: expected one of "
                             f"{', '.join(OPS)} with its number of arguments")


def hash_tag(key: str) -> str:
    """The hash tag of ``key`` (``site`` for ``kairos:{site}:...``), as Redis Cluster reads it."""
    start = key.find("{")
    end = key.find("}", start + 1)
    if start < 0 or end <= start + 1:
        raise ValueError(f"Redis key {key!r} has no hash tag; every Kairos key needs one")
    return key[start + 1:end]


def check_part(value: str, where: str) -> str:
    """A key component: non-empty, and free of braces, colons and blanks.

    Braces would move the hash tag, colons would make two keys look alike
    (``a:b`` + ``c`` vs ``a`` + ``b:c``), blanks make keys hard to type in redis-cli.
    """
    if not isinstance(value, str) or not value or _FORBIDDEN.search(value):
        raise ValueError(f"{where} = {value!r} cannot be part of a Redis key: it must be "
                         "non-empty without '{', '}', ':' or blanks")
    return value


@dataclass(frozen=True, slots=True)
class GuardrailTally:
    """Sums over guardrail events of one arm and day (see Keyspace.guardrail_totals)."""

    requests: int
    latency_ms: float
    latency_ms_sq: float
    errors: int
    bytes: int


@dataclass(frozen=True, slots=True)
class Keyspace:
    """Key names under one ``prefix`` (several Kairos sites may share one Redis)."""

    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        if not self.prefix or set(self.prefix) & set("{} \t\r\n"):
            raise ValueError(f"store key prefix {self.prefix!r} is not valid: it must be "
                             "non-empty without '{', '}' or blanks")

    def key(self, tag: str, *parts: str) -> str:
        """``<prefix>:{<tag>}:<part>:<part>...``; ``tag`` may itself contain a colon."""
        return ":".join((f"{self.prefix}:{{{tag}}}", *parts))

    # -- keys -----------------------------------------------------------------------------

    def pageviews(self, day: str) -> str:
        """String counter: HTML pages served on UTC ``day``."""
        return self.key(SITE_TAG, "pageviews", check_part(day, "day"))

    def signals(self) -> str:
        """Hash: outside signals (``weather.berlin`` -> ``rain``) that external jobs write;
        read in the background into each worker's local copy, never on the request path."""
        return self.key(SITE_TAG, "signals")

    def purges(self) -> str:
        """Stream of edge-cache purges (``path``, ``host``) that every worker follows and
        applies (proxy/cache_purge.py); capped with ``MAXLEN ~``."""
        return self.key(SITE_TAG, "purges")

    def applied(self, tag: str, writer: str) -> str:
        """String: sequence number of the last batch ``writer`` applied to keys of ``tag``."""
        return self.key(tag, "applied", check_part(writer, "writer"))

    def experiment_tag(self, experiment: str) -> str:
        """Hash tag shared by all keys of one experiment: one cluster slot per experiment."""
        return f"exp:{check_part(experiment, 'experiment')}"

    def experiment_days(self, experiment: str) -> str:
        """Hash day -> units (all arms) exposed that day; every event of the experiment adds
        its day (conversions add 0), so it is the index of days the readers look at."""
        return self.key(self.experiment_tag(experiment), "days")

    def units(self, experiment: str, day: str) -> str:
        """Hash "<arm>" -> visitors first exposed on ``day``, "<arm>:inv_p" -> sum of their
        1 / probability, "period:<id>" -> visitors of all arms exposed in that weight period;
        "<arm>:xn", "<arm>:x", "<arm>:xsq" -> visitors with a known covariate x, sum of x and
        of x^2 (CUPED)."""
        return self.key(self.experiment_tag(experiment), "units", check_part(day, "day"))

    def goal(self, experiment: str, goal: str, day: str) -> str:
        """Hash "<arm>:n" conversions, "<arm>:sum" sum of values, "<arm>:sumsq" sum of the
        squared-total deltas, "<arm>:xy" sum of covariate x * value, of ``goal`` on ``day``."""
        return self.key(self.experiment_tag(experiment), "goal", check_part(goal, "goal"),
                        check_part(day, "day"))

    def guardrails(self, experiment: str, day: str) -> str:
        """Hash "<arm>:requests|latency_ms|latency_ms_sq|errors|bytes" on ``day``."""
        return self.key(self.experiment_tag(experiment), "guardrails", check_part(day, "day"))

    def segments(self, experiment: str) -> str:
        """Hash "<experiment>@<segment>" -> visitors exposed in that segment of an optimised
        rule (``proxy.rules.optimise``): the index of segments the bandit loop weighs."""
        return self.key(self.experiment_tag(experiment), "segments")

    def weights(self, experiment: str) -> str:
        """List of JSON weight changes, oldest first, capped at :data:`WEIGHT_LOG_CAP`."""
        return self.key(self.experiment_tag(experiment), "weights")

    def bandit_lock(self, experiment: str) -> str:
        """String: the token of the node that recomputes the experiment's bandit weights,
        set with ``SET NX PX`` for one cadence and never released (proxy/bandit_loop.py)."""
        return self.key(self.experiment_tag(experiment), "bandit-lock")

    # -- events -> commands ---------------------------------------------------------------

    def commands_for(self, event: Event) -> tuple[Command, ...]:
        """The commands that count ``event``; ValueError for an event type not known here."""
        if isinstance(event, PageView):
            key = self.pageviews(event.day)
            return (Command("INCRBY", key, (1,)), Command("EXPIRE", key, (COUNTER_TTL,)))
        if isinstance(event, Exposure):
            return self._exposure(event)
        if isinstance(event, Conversion):
            key = self.goal(event.experiment, event.goal, event.day)
            arm = check_part(event.arm, "arm")
            xy = () if event.covariate is None else (Command(
                "HINCRBYFLOAT", key, (f"{arm}:{COVARIATE_XY}",
                                      float(event.covariate) * float(event.value))),)
            return (Command("HINCRBY", key, (f"{arm}:n", 1)),
                    Command("HINCRBYFLOAT", key, (f"{arm}:sum", float(event.value))),
                    Command("HINCRBYFLOAT", key, (f"{arm}:sumsq", float(event.value_sq_delta))),
                    *xy, *self._day_seen(event.experiment, event.day, 0),
                    Command("EXPIRE", key, (COUNTER_TTL,)))
        if isinstance(event, Guardrail):
            return self._guardrail(event)
        if isinstance(event, WeightChange):
            return self._weight_change(event)
        raise ValueError(f"store: no Redis commands defined for event {event!r}; add a branch "
                         "in proxy/store/keys.py Keyspace.commands_for")

    def _day_seen(self, experiment: str, day: str, units: int) -> tuple[Command, ...]:
        key = self.experiment_days(experiment)
        return (Command("HINCRBY", key, (day, units)), Command("EXPIRE", key, (COUNTER_TTL,)))

    def _exposure(self, event: Exposure) -> tuple[Command, ...]:
        key = self.units(event.experiment, event.day)
        arm = check_part(event.arm, "arm")
        out = [Command("HINCRBY", key, (arm, 1)),
               Command("HINCRBYFLOAT", key, (f"{arm}:{INVERSE_P}", 1.0 / event.probability))]
        if event.period:
            out.append(Command("HINCRBY", key,
                               (PERIOD_FIELD + check_part(event.period, "period"), 1)))
        if event.covariate is not None:
            x = float(event.covariate)
            out += [Command("HINCRBY", key, (f"{arm}:{COVARIATE_UNITS}", 1)),
                    Command("HINCRBYFLOAT", key, (f"{arm}:{COVARIATE_SUM}", x)),
                    Command("HINCRBYFLOAT", key, (f"{arm}:{COVARIATE_SQ}", x * x))]
        if "@" in event.experiment:   # a segment of an optimised rule: index it
            index = self.segments(event.experiment.partition("@")[0])
            out += [Command("HINCRBY", index, (event.experiment, 1)),
                    Command("EXPIRE", index, (COUNTER_TTL,))]
        return (*out, *self._day_seen(event.experiment, event.day, 1),
                Command("EXPIRE", key, (COUNTER_TTL,)))

    def _guardrail(self, event: Guardrail) -> tuple[Command, ...]:
        latency = float(event.latency_ms)
        return self.guardrail_totals(event.experiment, event.arm, event.day, GuardrailTally(
            1, latency, latency * latency, int(event.error), event.bytes))

    def guardrail_totals(self, experiment: str, arm: str, day: str,
                         tally: GuardrailTally) -> tuple[Command, ...]:
        """The commands of many guardrails of one arm and day at once: every page view
        makes one, and nearly all differ (bytes, latency), so the flusher adds them up
        first (batch.build) instead of making and merging seven commands per view."""
        key = self.guardrails(experiment, day)
        arm = check_part(arm, "arm")
        return (Command("HINCRBY", key, (f"{arm}:requests", tally.requests)),
                Command("HINCRBYFLOAT", key, (f"{arm}:latency_ms", tally.latency_ms)),
                Command("HINCRBYFLOAT", key, (f"{arm}:latency_ms_sq", tally.latency_ms_sq)),
                Command("HINCRBY", key, (f"{arm}:errors", tally.errors)),
                Command("HINCRBY", key, (f"{arm}:bytes", tally.bytes)),
                *self._day_seen(experiment, day, 0),
                Command("EXPIRE", key, (COUNTER_TTL,)))

    def _weight_change(self, event: WeightChange) -> tuple[Command, ...]:
        key = self.weights(event.experiment)
        for arm, _ in event.weights:
            check_part(arm, "arm")
        entry = json.dumps({"at": int(period_id(event.at)), "weights": dict(event.weights)},
                           separators=(",", ":"))
        return (Command("RPUSH", key, (entry,)),
                Command("LTRIM", key, (-WEIGHT_LOG_CAP, -1)),
                Command("EXPIRE", key, (COUNTER_TTL,)))
