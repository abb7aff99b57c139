"""Experiment definitions for ``kairos results``: the rules folder read by the same loader
the proxy runs (:class:`proxy.rules.RuleLibrary`), so the command and the running proxy can
never disagree about an experiment (its ``[[experiment]]`` tables and its rules with
``optimise = true``). The running proxy hands its own hot-reloaded library to the results
endpoints instead.

Problems in the folder do not stop the results: the experiments that load are returned, and
each problem is passed to ``warn`` (``kairos results`` prints them to stderr).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from experiments.model import Experiment
from proxy.rules import RuleLibrary


def load_definitions(folder: str | Path,
                     warn: Callable[[str], None] = lambda message: None
                     ) -> dict[str, Experiment]:
    """Experiment id -> definition, from every rules file in ``folder``."""
    root = Path(folder)
    if not root.is_dir():
        raise ValueError(f"rules folder {root} does not exist (set rules.folder in "
                         "config.toml or pass --rules FOLDER)")
    library = RuleLibrary.load(root, quiet=True)
    for error in library.errors:
        warn(str(error))
    return {d.id: d.experiment for d in library.ruleset.experiments}
