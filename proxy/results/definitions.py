"""Experiment definitions for the results, read from the rules folder's ``[[experiment]]``
tables: a stand-in until the rules loader (proxy/rules) provides them with hot reloading.

Same conventions as the rules folder: ``*.toml`` files, names starting with ``_`` or ``.``
ignored, files read in name order. Each table goes through
:func:`experiments.model.parse_experiment`; the first problem raises ValueError naming the
file and the table (``rules/hero.toml: experiment[0]: arms[1]: ...``).
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from experiments.model import Experiment, parse_experiment


def load_definitions(folder: str | Path) -> dict[str, Experiment]:
    """Experiment id -> definition, from every rules file in ``folder``."""
    root = Path(folder)
    if not root.is_dir():
        raise ValueError(f"rules folder {root} does not exist (set rules.folder in "
                         "config.toml or pass --rules FOLDER)")
    found: dict[str, Experiment] = {}
    where_of: dict[str, str] = {}
    for path in sorted(root.glob("*.toml")):
        if path.name.startswith(("_", ".")):
            continue
        for where, experiment in _from_file(path):
            if experiment.id in found:
                raise ValueError(f"{where}: experiment id {experiment.id!r} is already "
                                 f"defined at {where_of[experiment.id]}; ids must be unique")
            found[experiment.id] = experiment
            where_of[experiment.id] = where
    return found


def _from_file(path: Path) -> list[tuple[str, Experiment]]:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ValueError(f"{path}: cannot be read: {exc}") from None
    tables = data.get("experiment", [])
    if not isinstance(tables, list):
        raise ValueError(f"{path}: 'experiment' must be an array of tables, written "
                         "[[experiment]], got a single table or value")
    out = []
    for i, table in enumerate(tables):
        where = f"{path}: experiment[{i}]"
        out.append((where, parse_experiment(table, where)))
    return out
