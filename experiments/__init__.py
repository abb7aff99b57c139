"""Pure experiment logic, no I/O: models, assignment, bandits, statistics, results.

Never imports :mod:`proxy`. The request path needs only :mod:`experiments.model` and
:mod:`experiments.assignment` (standard library only); :mod:`experiments.bandit`,
:mod:`experiments.stats` and :mod:`experiments.results` need numpy and scipy and are
imported by name where they are used, so importing this package stays cheap.
"""

from experiments.assignment import (
    Assignment,
    LayerSlot,
    NotAssigned,
    NotAssignedReason,
    StoredAssignment,
    VisitorFacts,
    assign,
    bucket,
    plan_layers,
)
from experiments.model import Allocation, Arm, Experiment, Goal, GoalKind, parse_experiment

__all__ = [
    "Allocation", "Arm", "Assignment", "Experiment", "Goal", "GoalKind", "LayerSlot",
    "NotAssigned", "NotAssignedReason", "StoredAssignment", "VisitorFacts", "assign", "bucket",
    "parse_experiment", "plan_layers",
]
