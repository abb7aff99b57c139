"""Turning buffered events into one batch, and applying a batch to Redis exactly once.

Why not a plain pipeline: a pipeline with ``transaction=False`` can be half applied when the
connection drops in the middle, and a retry then counts the first half twice.

Why not only MULTI/EXEC: it makes a batch all-or-nothing inside Redis, but when the reply is
lost (a frozen or slow Redis, a timeout after the request was written) the client cannot tell
whether EXEC ran. Redis does run it: a server resumed after SIGSTOP reads the buffered request
and executes it although the client has given up. Retrying then double counts.

So each batch gets a sequence number, per writer (one ``Store``, i.e. one process), and is
applied by one Lua script per hash tag. The script is atomic like MULTI/EXEC, and it first
reads ``<prefix>:{<tag>}:applied:<writer>``: when that already holds this sequence number (or
a later one) the batch was applied before and is skipped; otherwise it applies the commands
and stores the number, in the same atomic step. A failed batch is retried unchanged, before
any newer batch, until it is applied, which is what makes "already applied" decidable.

Grouping by hash tag keeps every script on one cluster slot; on a single node the groups go in
one round trip. The ``#!lua`` shebang makes Redis refuse the whole script up front when it is
out of memory (rather than failing at the first write), so OOM is a clean, retryable failure.
Needs Redis >= 7 or Valkey.

Events are merged before sending (5,000 page views of one day are one ``INCRBY key 5000``),
so a batch costs a few commands whatever the traffic, and a kept batch costs memory per
distinct counter, not per event.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from proxy.store.events import Guardrail
from proxy.store.keys import (
    APPLIED_MARKER_TTL,
    OPS,
    Command,
    GuardrailTally,
    Keyspace,
    hash_tag,
)

log = logging.getLogger("kairos.store")

# KEYS[1] applied marker, KEYS[2..] one key per command.
# ARGV: seq, marker ttl, then per command: op, number of args, args...
APPLY_SCRIPT = """#!lua
local last = redis.call('GET', KEYS[1])
if last and tonumber(last) >= tonumber(ARGV[1]) then return -1 end
local failed = 0
local a = 3
for i = 2, #KEYS do
  local n = tonumber(ARGV[a + 1])
  local r = redis.pcall(ARGV[a], KEYS[i], unpack(ARGV, a + 2, a + 1 + n))
  if type(r) == 'table' and r.err then failed = failed + 1 end
  a = a + 2 + n
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return failed
"""

_SUMMED = {"INCRBY", "HINCRBY", "INCRBYFLOAT", "HINCRBYFLOAT"}


@dataclass(frozen=True, slots=True)
class Batch:
    """Merged commands of ``events`` events, grouped by hash tag, numbered ``seq``."""

    seq: int
    events: int
    groups: Mapping[str, tuple[Command, ...]]


@dataclass(frozen=True, slots=True)
class Applied:
    """What applying a batch did: tags skipped as already applied, commands Redis refused."""

    replayed_groups: int
    failed_commands: int


def merge(commands: Iterable[tuple[Command, int]]) -> list[Command]:
    """Sum increments of the same counter (each weighted by how many events asked for it),
    keep list pushes in order, one trim per list, the longest EXPIRE per key; expiries last.

    Expiries go last because EXPIRE on a key that does not exist yet does nothing. A push is
    a fact, not a count: equal events pushing the same entry (two nodes publishing the same
    weights at the same second) push it once.
    """
    sums: dict[tuple[str, str, Any], int | float] = {}
    pushes: list[Command] = []
    trims: dict[str, Command] = {}
    expires: dict[str, int] = {}
    for c, times in commands:
        if c.op == "EXPIRE":
            expires[c.key] = max(expires.get(c.key, 0), int(c.args[0]))
        elif c.op in _SUMMED:
            field = c.args[0] if OPS[c.op] == 2 else None
            k = (c.op, c.key, field)
            sums[k] = sums.get(k, 0) + c.args[-1] * times  # type: ignore[operator]
        elif c.op == "RPUSH":
            pushes.append(c)
        elif c.op == "LTRIM":
            trims[c.key] = c
        else:  # pragma: no cover - OPS and this function change together
            raise ValueError(f"merge: command {c.op} is not mergeable")
    out = [Command(op, key, (amount,) if field is None else (field, amount))
           for (op, key, field), amount in sums.items()]
    out.extend(pushes)
    out.extend(trims.values())
    out.extend(Command("EXPIRE", key, (ttl,)) for key, ttl in expires.items())
    return out


def build(events: Sequence[object], keyspace: Keyspace, seq: int) -> tuple[Batch, int]:
    """The batch for ``events`` and the number of events that could not be turned into
    commands (an unknown type, a bad name): those are dropped, logged, and counted.

    Equal events are counted first (events are frozen, hence hashable), so the work is per
    distinct event: a batch of 5,000 page views costs about a millisecond of the loop.
    """
    commands: list[tuple[Command, int]] = []
    count = invalid = 0
    distinct: Counter[Any] = Counter()
    try:
        distinct.update(events)
    except TypeError:  # an unhashable event somewhere: not an Event; sort them out one by one
        distinct.clear()
        for event in events:
            try:
                distinct[event] += 1
            except TypeError:
                invalid += 1
        log.error("store: dropping %d unhashable events (events must be frozen dataclasses)",
                  invalid)
    tallies: dict[tuple[str, str, str], list[Any]] = {}
    for event, times in distinct.items():
        if type(event) is Guardrail:   # nearly all differ: added up first, commands once
            tally = tallies.setdefault((event.experiment, event.arm, event.day),
                                       [0, 0.0, 0.0, 0, 0])
            latency = float(event.latency_ms)
            tally[0] += times
            tally[1] += latency * times
            tally[2] += latency * latency * times
            tally[3] += int(event.error) * times
            tally[4] += event.bytes * times
            continue
        try:
            for c in keyspace.commands_for(event):
                commands.append((c, times))
            count += times
        except Exception as exc:
            invalid += times
            log.error("store: dropping %d events that cannot be counted: %s", times, exc)
    for (experiment, arm, day), sums in tallies.items():
        try:
            for c in keyspace.guardrail_totals(experiment, arm, day, GuardrailTally(*sums)):
                commands.append((c, 1))
            count += sums[0]
        except Exception as exc:
            invalid += sums[0]
            log.error("store: dropping %d events that cannot be counted: %s", sums[0], exc)
    groups: dict[str, list[Command]] = {}
    for c in merge(commands):
        groups.setdefault(hash_tag(c.key), []).append(c)
    return Batch(seq, count, {t: tuple(cs) for t, cs in groups.items()}), invalid


def script_call(batch: Batch, tag: str, keyspace: Keyspace, writer: str) -> tuple[Any, ...]:
    """Arguments of the EVAL that applies the ``tag`` group of ``batch``."""
    commands = batch.groups[tag]
    keys = [keyspace.applied(tag, writer), *(c.key for c in commands)]
    argv: list[Any] = [batch.seq, APPLIED_MARKER_TTL]
    for c in commands:
        argv.extend((c.op, len(c.args), *c.args))
    return (APPLY_SCRIPT, len(keys), *keys, *argv)


async def apply(client: Any, batch: Batch, keyspace: Keyspace, writer: str) -> Applied:
    """Apply ``batch``: every group in one pipeline round trip, each group atomically.

    Raises the first error of any group (nothing is lost: applied groups are recorded in
    their markers and skipped when the batch is retried).
    """
    if not batch.groups:
        return Applied(0, 0)
    async with client.pipeline(transaction=False) as pipe:
        for tag in batch.groups:
            pipe.eval(*script_call(batch, tag, keyspace, writer))
        results = await pipe.execute(raise_on_error=False)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    replayed = sum(1 for r in results if r == -1)
    failed = sum(int(r) for r in results if r > 0)
    return Applied(replayed, failed)
