"""The one place that knows Redis key names (KEYSPACE.md, beside this file, lists them).

Every key is ``<prefix>:{<tag>}:<name>[:<more>...]``. The ``{<tag>}`` part is a Redis Cluster
hash tag: all keys of one tag live in one cluster slot, so a multi-key operation on them (the
flusher's atomic script, a later MGET of one experiment's results) works in cluster mode too.
Tags in use: ``{site}`` for site-wide counts, ``{exp:<experiment>}`` (planned) for everything
about one experiment.

``Keyspace.commands_for`` turns an event into the commands that count it. Only additive,
idempotent-when-deduplicated commands are allowed (:data:`OPS`), which is what lets the flusher
merge thousands of events into a few commands and replay a batch safely (see batch.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from proxy.store.events import Event, PageView

DEFAULT_PREFIX = "kairos"

# Day counters are kept 400 days after their last write: 13 months of history, the longest
# a visitor cookie lives, plus a margin. Change it here; KEYSPACE.md says the same.
COUNTER_TTL = 400 * 86_400

# How long a writer's "last applied batch" marker is kept. A batch that reached Redis but
# whose reply was lost is recognised when it is retried within this time (batch.py).
APPLIED_MARKER_TTL = 86_400

SITE_TAG = "site"

# Commands a Command may carry, with how many arguments follow the key.
OPS: dict[str, int] = {"INCRBY": 1, "HINCRBY": 2, "INCRBYFLOAT": 1, "HINCRBYFLOAT": 2,
                       "EXPIRE": 1}

_FORBIDDEN = set("{}: \t\r\n")


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
    if not isinstance(value, str) or not value or _FORBIDDEN & set(value):
        raise ValueError(f"{where} = {value!r} cannot be part of a Redis key: it must be "
                         "non-empty without '{', '}', ':' or blanks")
    return value


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

    def applied(self, tag: str, writer: str) -> str:
        """String: sequence number of the last batch ``writer`` applied to keys of ``tag``."""
        return self.key(tag, "applied", check_part(writer, "writer"))

    def experiment_tag(self, experiment: str) -> str:
        """Hash tag shared by all keys of one experiment (for the event types to come)."""
        return f"exp:{check_part(experiment, 'experiment')}"

    # -- events -> commands ---------------------------------------------------------------

    def commands_for(self, event: Event) -> tuple[Command, ...]:
        """The commands that count ``event``; ValueError for an event type not known here."""
        if isinstance(event, PageView):
            key = self.pageviews(event.day)
            return (Command("INCRBY", key, (1,)), Command("EXPIRE", key, (COUNTER_TTL,)))
        raise ValueError(f"store: no Redis commands defined for event {event!r}; add a branch "
                         "in proxy/store/keys.py Keyspace.commands_for")
