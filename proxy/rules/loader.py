"""The rules folder on disk -> the current :class:`RuleSet`, reloaded when files change.

``reload()`` is cheap when nothing changed: one ``scandir`` and a ``stat`` per file, no
reading or parsing. A changed file is parsed alone; a file that does not parse (a syntax
error, or an editor half-way through saving it) keeps its last good version in force and
reports the error (F3), and the next reload picks up the completed file. Atomic renames
and deletions are just changes of the folder listing. A file modified within the last two
seconds is re-read (and compared by hash) on the next reload too, because a second write
within the file system's timestamp granularity would not change its mtime.

Each worker runs ``watch()`` as a background task: polling every second keeps every worker
within two seconds of the folder, with no inotify and nothing shared between processes.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from proxy.rules.model import RuleError
from proxy.rules.parse import MAX_FILE_BYTES, FileError, FileRules, parse_file
from proxy.rules.ruleset import EMPTY, RuleSet, build

log = logging.getLogger("kairos.rules")
RACY_NS = 2_000_000_000

_Stat = tuple[int, int, int]  # mtime_ns, size, inode


@dataclass(frozen=True, slots=True)
class _FileState:
    stat: _Stat
    digest: bytes
    parsed: FileRules | None  # the last good version (None: never parsed)
    error: RuleError | None  # why the current bytes could not be used
    racy: bool  # modified so recently that a same-size rewrite could hide in the mtime


class RuleLibrary:
    """The rules of one folder; ``ruleset`` and ``errors`` always describe the last load."""

    def __init__(self, folder: str | os.PathLike[str], *, quiet: bool = False) -> None:
        self.folder = Path(folder)
        self.quiet = quiet  # no logging (``kairos rules check`` prints its own report)
        self.version = 0  # incremented on every change of the folder's files
        self.loaded_at = 0.0  # Unix time of the last rebuild
        self._files: dict[str, _FileState] = {}
        self._folder_error: RuleError | None = None
        self._ruleset = EMPTY
        self._errors: tuple[RuleError, ...] = ()

    @classmethod
    def load(cls, folder: str | os.PathLike[str], *, quiet: bool = False) -> RuleLibrary:
        library = cls(folder, quiet=quiet)
        library.reload()
        return library

    @property
    def ruleset(self) -> RuleSet:
        return self._ruleset

    @property
    def errors(self) -> tuple[RuleError, ...]:
        return self._errors

    def reload(self) -> bool:
        """Look at the folder; rebuild the rule set if anything changed. True if it did."""
        before = self._folder_error
        listing = self._listing()
        if listing is None:  # folder gone or unreadable: keep the rules, report it
            return self._rebuild() if self._folder_error != before else False
        changed = self._folder_error != before
        for name in set(self._files) - set(listing):
            del self._files[name]
            changed = True
        now = time.time_ns()
        for name, stat in listing.items():
            old = self._files.get(name)
            if old is not None and old.stat == stat and not old.racy:
                continue
            new = self._read(name, stat, old, now)
            self._files[name] = new
            changed = changed or old is None or new.digest != old.digest \
                or new.error != old.error
        return self._rebuild() if changed else False

    def _listing(self) -> dict[str, _Stat] | None:
        try:
            entries = list(os.scandir(self.folder))
        except OSError as err:
            error = RuleError(str(self.folder), None, f"rules folder cannot be read: "
                              f"{err.strerror or err}; keeping the rules loaded before")
            self._folder_error = error
            return None
        self._folder_error = None
        out = {}
        for entry in entries:
            if entry.name.endswith(".toml") and not entry.name.startswith(("_", ".")):
                try:
                    st = entry.stat()
                except OSError:
                    continue  # deleted between listing and stat
                if entry.is_file():
                    out[entry.name] = (st.st_mtime_ns, st.st_size, st.st_ino)
        return out

    def _read(self, name: str, stat: _Stat, old: _FileState | None, now: int) -> _FileState:
        display = str(self.folder / name)
        racy = now - stat[0] < RACY_NS
        last_good = old.parsed if old is not None else None
        try:
            with open(self.folder / name, "rb") as handle:
                data = handle.read(MAX_FILE_BYTES + 1)
        except OSError as err:
            error = RuleError(display, None, f"cannot be read: {err.strerror or err}")
            return _FileState(stat, b"", last_good, error, True)
        digest = hashlib.blake2b(data, digest_size=16).digest()
        if old is not None and digest == old.digest:
            return _FileState(stat, digest, old.parsed, old.error, racy)
        try:
            return _FileState(stat, digest, parse_file(data, name, display), None, racy)
        except FileError as err:
            kept = "; keeping its last good version" if last_good else ""
            error = RuleError(err.error.file, err.error.line, err.error.message + kept)
            return _FileState(stat, digest, last_good, error, racy)

    def _rebuild(self) -> bool:
        files = self._files
        parsed = [s.parsed for s in files.values() if s.parsed is not None]
        ruleset, cross = build(parsed)
        errors: list[RuleError] = [self._folder_error] if self._folder_error else []
        for name in sorted(files):
            state = files[name]
            if state.error is not None:
                errors.append(state.error)
            if state.parsed is not None:
                errors.extend(state.parsed.errors)
        errors.extend(cross)
        self._ruleset, self._errors = ruleset, tuple(errors)
        self.version += 1
        self.loaded_at = time.time()
        if not self.quiet:
            log.info("rules: %d rules from %d files in %s, %d errors", len(ruleset.rules),
                     len(files), self.folder, len(errors))
            for error in errors:
                log.warning("%s", error)
        return True

    async def watch(self, interval: float = 1.0) -> None:
        """Reload every ``interval`` seconds until cancelled; never raises otherwise."""
        while True:
            await asyncio.sleep(interval)
            try:
                self.reload()
            except Exception:  # a bug here must not stop hot reloading for good
                log.exception("rules: reload of %s failed", self.folder)

    def status(self) -> dict[str, Any]:
        """For a status endpoint: what is loaded and what is wrong."""
        return {"folder": str(self.folder), "version": self.version,
                "loaded_at": self.loaded_at, "rules": len(self._ruleset.rules),
                "segments": len(self._ruleset.segments),
                "experiments": len(self._ruleset.experiments), "files": sorted(self._files),
                "errors": [str(e) for e in self._errors]}
