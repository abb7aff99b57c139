"""Rule files, audiences, schedules, placeholders and slot rewriting (issue 4).

Start-up and hot reload::

    library = RuleLibrary.load(config.rules.folder)   # parses every file once
    transform = RulesTransform(library)               # a proxy.page.PageTransform
    task = asyncio.create_task(library.watch(1.0))    # per worker; cancel at shutdown
    library.errors                                    # RuleError objects; str() for messages

Explaining one request (``/_kairos/why``, ``kairos explain``)::

    decided = plan(library.ruleset, context, page)    # Plan: applied / lost / out of ...
    rendered = render(library.ruleset, html, page)    # Rendered: plan, edit, per-slot results

``check_folder(path)`` is ``kairos rules check``. Only :mod:`proxy.rules.html` imports
selectolax; rules/README.md documents the file format.
"""

from proxy.rules.check import CheckReport, check_folder
from proxy.rules.engine import Rendered, RulesTransform, render
from proxy.rules.loader import RuleLibrary
from proxy.rules.model import Rule, RuleError, Segment
from proxy.rules.plan import (
    APPLIED,
    LOST,
    OUT_OF_AUDIENCE,
    OUT_OF_SCHEDULE,
    Decision,
    Plan,
    plan,
)
from proxy.rules.ruleset import EMPTY, RuleSet

__all__ = [
    "APPLIED",
    "EMPTY",
    "LOST",
    "OUT_OF_AUDIENCE",
    "OUT_OF_SCHEDULE",
    "CheckReport",
    "Decision",
    "Plan",
    "Rendered",
    "Rule",
    "RuleError",
    "RuleLibrary",
    "RuleSet",
    "RulesTransform",
    "Segment",
    "check_folder",
    "plan",
    "render",
]
