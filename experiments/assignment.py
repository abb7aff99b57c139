"""Deterministic assignment of a visitor to an experiment arm. Pure: no clock, no I/O, no
``random``; the same inputs give the same answer on every node, in every language.

The hash (pinned by ``tests/data/assignment_vectors.json``)::

    bucket(namespace, visitor_id) =
        (first 8 bytes of SHA-256(UTF-8 of f"{namespace}:{visitor_id}"), big-endian) >> 11
        / 2**53

a float in [0, 1) with 53 random bits (keeping all 64 bits and dividing by 2**64 would round
the top values up to exactly 1.0). SHA-256 rather than GrowthBook's FNV-1a: it is in every
standard library, has no weak low bits (GrowthBook had to move to a double FNV for that in
its v2 hash), and at ~1 us per visitor its cost does not matter at one call per experiment.

Namespaces keep the decisions independent of each other; names cannot contain ``/`` or
``:`` (see :mod:`experiments.model`), so no two namespaces can produce the same input:

- ``holdout/<HOLDOUT_SALT>``  the global holdout, the same slice for every experiment;
- ``layer/<layer>``           which experiment of a layer the visitor may enter;
- ``traffic/<salt>``          whether the visitor enters an experiment outside a layer;
- ``arm/<salt>``              which arm. A separate hash from traffic, so raising traffic
  from 10% to 50% keeps every visitor already in on the same arm.

Layers: the experiments of a layer split the layer's [0, 1) by their traffic shares, laid
out one after another in order of (start, id) (:func:`plan_layers`), so an experiment that
starts later is appended and does not move the others. A visitor's layer bucket falls in at
most one slot, which makes the experiments mutually exclusive. Changing the traffic of an
earlier experiment in a layer moves the later slots: set a layer's shares before it starts.

Order of checks (the first that applies is the reason reported by /why):

1. ``not_started`` / ``ended``: the schedule; says nothing about the visitor.
2. ``opted_out``: the visitor's explicit no outranks every other reason.
3. ``no_consent``: nothing is decided on an id the visitor has not consented to.
4. ``bot``: bots never enter, so they never reach the counts.
5. ``holdout``: before the audience, so that the holdout is the same random slice of human,
   consenting visitors whatever an experiment targets.
6. ``not_in_audience``: the caller's targeting verdict.
7. ``other_experiment_in_layer`` / ``outside_traffic``: the layer slot or the traffic hash.
8. The arm: the stored arm if it was made under the current salt and the arm still exists
   (so weight changes never move a visitor), else the ``arm/<salt>`` hash against the weights
   in force. Stickiness pins the arm, not membership: steps 1-7 are re-checked every time.
"""

from __future__ import annotations

import hashlib
import math
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from experiments.model import WEIGHT_TOLERANCE, Experiment

HOLDOUT_SALT = "kairos-holdout-v1"
_FIRST_8_BYTES = struct.Struct(">Q")


class NotAssignedReason(StrEnum):
    NOT_IN_AUDIENCE = "not_in_audience"
    OUTSIDE_TRAFFIC = "outside_traffic"
    OTHER_EXPERIMENT_IN_LAYER = "other_experiment_in_layer"
    HOLDOUT = "holdout"
    BOT = "bot"
    OPTED_OUT = "opted_out"
    NOT_STARTED = "not_started"
    ENDED = "ended"
    NO_CONSENT = "no_consent"


@dataclass(frozen=True, slots=True)
class VisitorFacts:
    """What the caller has already decided about the visitor; all four are required."""

    in_audience: bool
    is_bot: bool
    opted_out: bool
    consented: bool


@dataclass(frozen=True, slots=True)
class StoredAssignment:
    """An assignment read back from the visitor's cookie: the arm, the salt it was made
    under and the probability it had then (kept for inverse-propensity weighting)."""

    arm: str
    salt: str
    probability: float


@dataclass(frozen=True, slots=True)
class Assignment:
    experiment: str
    arm: str
    probability: float  # P(this arm | visitor in the experiment) when it was first given
    salt: str
    sticky: bool        # True when the arm came from the stored assignment

    def stored(self) -> StoredAssignment:
        return StoredAssignment(self.arm, self.salt, self.probability)


@dataclass(frozen=True, slots=True)
class NotAssigned:
    experiment: str
    reason: NotAssignedReason


@dataclass(frozen=True, slots=True)
class LayerSlot:
    """The part [start, end) of a layer's hash range that belongs to one experiment;
    ``used`` is the end of the last slot (beyond it the layer is unused)."""

    layer: str
    start: float
    end: float
    used: float


def bucket(namespace: str, visitor_id: str) -> float:
    """The visitor's position in [0, 1) for ``namespace`` (see the module docstring)."""
    return _position(f"{namespace}:{visitor_id}")


def _position(hash_input: str) -> float:
    """bucket() of its whole input ``"<namespace>:<visitor id>"``, built by the caller in
    one f-string (two of these are taken per visitor and experiment)."""
    digest = hashlib.sha256(hash_input.encode()).digest()
    return (_FIRST_8_BYTES.unpack_from(digest)[0] >> 11) / 9007199254740992.0  # 2**53


def choose_arm(weights: Sequence[float], position: float) -> int:
    """Index of the arm whose cumulative-weight range [c_{i-1}, c_i) holds ``position``.
    Arms of weight 0 own an empty range; the last arm with a positive weight also takes the
    rounding remainder when the weights add up to 1 - 1e-9 rather than exactly 1."""
    cumulative = 0.0
    last = -1
    for i, weight in enumerate(weights):
        if weight > 0:
            last = i
        cumulative += weight
        if position < cumulative and weight > 0:
            return i
    if last < 0:
        raise ValueError("choose_arm: every weight is 0; at least one must be positive")
    return last


def plan_layers(experiments: Iterable[Experiment]) -> dict[str, LayerSlot]:
    """Slots for every experiment that has a layer, keyed by experiment id. Raises
    ValueError when a layer's traffic shares add up to more than 1."""
    by_layer: dict[str, list[Experiment]] = {}
    for experiment in experiments:
        if experiment.layer is not None:
            by_layer.setdefault(experiment.layer, []).append(experiment)
    slots: dict[str, LayerSlot] = {}
    for layer, members in by_layer.items():
        members.sort(key=lambda e: (e.start.timestamp() if e.start else -math.inf, e.id))
        used = math.fsum(e.traffic for e in members)
        if used > 1.0 + WEIGHT_TOLERANCE:
            listed = ", ".join(f"{e.id}={e.traffic:g}" for e in members)
            raise ValueError(f"layer {layer!r}: traffic shares add up to {used:.12g} "
                             f"({listed}); the experiments of a layer can share at most 1")
        start = 0.0
        for e in members:
            slots[e.id] = LayerSlot(layer, start, start + e.traffic, used)
            start += e.traffic
    return slots


def check_weights(experiment: Experiment, weights: Sequence[float]) -> tuple[float, ...]:
    """Validate weights in force (e.g. a bandit's) against the experiment's arms."""
    where = f"experiment {experiment.id!r}: weights in force"
    if len(weights) != len(experiment.arms):
        raise ValueError(f"{where}: {len(weights)} weights for {len(experiment.arms)} arms")
    if any(not (0.0 <= w <= 1.0) for w in weights):
        raise ValueError(f"{where}: {list(weights)} has a weight outside 0..1")
    total = math.fsum(weights)
    if abs(total - 1.0) > WEIGHT_TOLERANCE:
        raise ValueError(f"{where}: {list(weights)} sum to {total:.12g}, expected 1")
    return tuple(float(w) for w in weights)


def assign(
    experiment: Experiment,
    visitor_id: str,
    *,
    facts: VisitorFacts,
    now: datetime,
    stored: StoredAssignment | None = None,
    weights: Sequence[float] | None = None,
    slot: LayerSlot | None = None,
    holdout: float = 0.0,
) -> Assignment | NotAssigned:
    """Assign ``visitor_id`` to an arm of ``experiment`` or say why not.

    ``weights`` are the weights in force (a bandit's latest published ones); None means the
    experiment's planned weights. ``slot`` is required for an experiment with a layer (from
    :func:`plan_layers`). ``holdout`` is the global holdout share, 0..1.
    """
    reason = exclusion(experiment, visitor_id, facts, now, slot, holdout)
    if reason is not None:
        return NotAssigned(experiment.id, reason)
    if (stored is not None and stored.salt == experiment.salt
            and experiment.arm_index(stored.arm) is not None):
        return Assignment(experiment.id, stored.arm, stored.probability, experiment.salt, True)
    index, probability = drawn_arm(experiment, visitor_id, weights)
    return Assignment(experiment.id, experiment.arms[index].id, probability,
                      experiment.salt, False)   # positional: keywords cost more here


def drawn_arm(experiment: Experiment, visitor_id: str, weights: Sequence[float] | None
              ) -> tuple[int, float]:
    """Step 8 without a stored arm: the index of the arm the ``arm/<salt>`` hash falls in
    under the weights in force, and that arm's weight (its probability)."""
    in_force = experiment.weights if weights is None else check_weights(experiment, weights)
    index = choose_arm(in_force, _position(f"arm/{experiment.salt}:{visitor_id}"))
    return index, in_force[index]


def exclusion(
    experiment: Experiment, visitor_id: str, facts: VisitorFacts, now: datetime,
    slot: LayerSlot | None, holdout: float,
) -> NotAssignedReason | None:
    """Steps 1-7: why the visitor does not enter ``experiment``, or None when they do.
    :func:`assign` without the result objects, for :mod:`proxy.experiment_runtime`, which
    only wants the pieces (an Assignment per page view costs as much as a hash)."""
    if not visitor_id:
        raise ValueError(f"assign({experiment.id!r}): the visitor id is empty")
    if now.tzinfo is None:
        raise ValueError(f"assign({experiment.id!r}): now {now.isoformat()} has no UTC offset")
    if not 0.0 <= holdout <= 1.0:
        raise ValueError(f"assign({experiment.id!r}): holdout {holdout!r} is outside 0..1")
    if experiment.start is not None and now < experiment.start:
        return NotAssignedReason.NOT_STARTED
    if experiment.end is not None and now >= experiment.end:
        return NotAssignedReason.ENDED
    if facts.opted_out:
        return NotAssignedReason.OPTED_OUT
    if not facts.consented:
        return NotAssignedReason.NO_CONSENT
    if facts.is_bot:
        return NotAssignedReason.BOT
    if holdout > 0.0 and _position(f"holdout/{HOLDOUT_SALT}:{visitor_id}") < holdout:
        return NotAssignedReason.HOLDOUT
    if not facts.in_audience:
        return NotAssignedReason.NOT_IN_AUDIENCE
    if experiment.layer is None:
        # A position is below 1, so at full traffic (the usual case) no hash can exclude:
        # skipping it halves the hashing of a first visit.
        if (experiment.traffic < 1.0
                and _position(f"traffic/{experiment.salt}:{visitor_id}") >= experiment.traffic):
            return NotAssignedReason.OUTSIDE_TRAFFIC
        return None
    if slot is None or slot.layer != experiment.layer:
        raise ValueError(f"assign({experiment.id!r}): the experiment is in layer "
                         f"{experiment.layer!r}; pass its slot from plan_layers()")
    position = _position(f"layer/{experiment.layer}:{visitor_id}")
    if slot.start <= position < slot.end:
        return None
    if position < slot.used:
        return NotAssignedReason.OTHER_EXPERIMENT_IN_LAYER
    return NotAssignedReason.OUTSIDE_TRAFFIC
