"""Which rules could apply to a page: parsing ``pages``/``pages_regex``/``hosts`` and an
index that answers "any rule for this host and path?" before every upstream GET.

The index is keyed by host, then by exact path or by the literal prefix of a glob (the
text before its first ``*``): a lookup costs a few dict probes per distinct prefix length,
however many rules there are. Only ``pages_regex`` rules are tried one by one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from proxy.rules.model import Pages, Problem, Rule
from proxy.rules.regexes import MAX_REGEX, compile_regex

_HOST = re.compile(r"[a-z0-9.-]+(?::\d{1,5})?|\[[0-9a-f:.]+\](?::\d{1,5})?")


def parse_pages(raw: Mapping[str, Any]) -> Pages:
    """The page keys of one rule; raises :class:`Problem`."""
    globs = _strings(raw.get("pages"), "pages")
    regexes = _strings(raw.get("pages_regex"), "pages_regex")
    hosts = tuple(h.lower() for h in _strings(raw.get("hosts"), "hosts"))
    if not globs and not regexes:
        raise Problem("pages", 'is missing: say where the rule applies, e.g. pages = ["/"] or '
                      'pages = ["/products/*"] (* matches anything, / included; "*" is every '
                      "page), or pages_regex = [\"^/products/[a-z-]+$\"]", "id")
    for glob in globs:
        if not glob.startswith(("/", "*")):
            raise Problem("pages", f'"{glob}" is not a path: paths start with "/" (the host '
                          "goes in hosts = [...])", glob)
    for pattern in regexes:
        if len(pattern) > MAX_REGEX:
            raise Problem("pages_regex", f"is longer than {MAX_REGEX} characters", pattern)
        compile_regex(pattern, "pages_regex")
    for host in hosts:
        if not _HOST.fullmatch(host):
            raise Problem("hosts", f'"{host}" is not a host name such as "shop.example.com" '
                          '(no scheme, no path)', host)
    return Pages(globs, regexes, hosts)


def _strings(value: Any, key: str) -> tuple[str, ...]:
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(i, str) and i for i in items):
        raise Problem(key, "must be text or a list of texts", key)
    return tuple(items)


def glob_regex(glob: str) -> re.Pattern[str]:
    """``*`` matches any characters, ``/`` included; everything else is literal."""
    return re.compile(".*".join(map(re.escape, glob.split("*"))), re.DOTALL)


@dataclass
class _Bucket:
    exact: dict[str, list[int]] = field(default_factory=dict)
    prefixed: dict[str, list[tuple[int, re.Pattern[str]]]] = field(default_factory=dict)
    lengths: tuple[int, ...] = ()
    regexes: list[tuple[int, re.Pattern[str]]] = field(default_factory=list)

    def add(self, index: int, pages: Pages) -> None:
        for glob in pages.globs:
            if "*" not in glob:
                self.exact.setdefault(glob, []).append(index)
            else:
                prefix = glob.split("*", 1)[0]
                self.prefixed.setdefault(prefix, []).append((index, glob_regex(glob)))
        self.regexes.extend((index, re.compile(p)) for p in pages.regexes)
        self.lengths = tuple(sorted({len(p) for p in self.prefixed}))

    def any(self, path: str) -> bool:
        if path in self.exact:
            return True
        for length in self.lengths:
            if length > len(path):
                break
            if any(regex.fullmatch(path) for _, regex in self.prefixed.get(path[:length], ())):
                return True
        return any(regex.search(path) for _, regex in self.regexes)

    def matches(self, path: str, found: set[int]) -> None:
        found.update(self.exact.get(path, ()))
        for length in self.lengths:
            if length > len(path):
                break
            for index, regex in self.prefixed.get(path[:length], ()):
                if index not in found and regex.fullmatch(path):
                    found.add(index)
        for index, regex in self.regexes:
            if index not in found and regex.search(path):
                found.add(index)


RECENT_PAGES = 4096


class PageIndex:
    """Rules by host and path; built once per rule set, read-only afterwards."""

    def __init__(self, rules: Sequence[Rule]) -> None:
        self._rules = tuple(rules)
        self._buckets: dict[str, _Bucket] = {}
        # Answers of candidates() for recent pages: a site has few hot pages, and every view
        # asks twice (rules, experiments). Emptied when full (any visitor can invent paths).
        self._recent: dict[tuple[str, str], tuple[Rule, ...]] = {}
        for index, rule in enumerate(self._rules):
            for host in rule.pages.hosts or ("",):
                self._buckets.setdefault(host, _Bucket()).add(index, rule.pages)

    def any(self, host: str, path: str) -> bool:
        """Could any rule apply? (``wants``: stops at the first match.)"""
        for key in _host_keys(host.lower()):
            bucket = self._buckets.get(key)
            if bucket is not None and bucket.any(path):
                return True
        return False

    def candidates(self, host: str, path: str) -> tuple[Rule, ...]:
        """The rules whose pages match, in file order."""
        recent = self._recent.get((host, path))
        if recent is not None:
            return recent
        found: set[int] = set()
        for key in _host_keys(host.lower()):
            bucket = self._buckets.get(key)
            if bucket is not None:
                bucket.matches(path, found)
        matched = tuple(self._rules[i] for i in sorted(found))
        if len(self._recent) >= RECENT_PAGES:
            self._recent.clear()
        self._recent[host, path] = matched
        return matched


def _host_keys(host: str) -> tuple[str, ...]:
    """Any-host rules, rules for the host as sent, and for the host without its port."""
    bare = host.split("]", 1)[0] + "]" if host.startswith("[") else host.split(":", 1)[0]
    return ("", host) if bare == host else ("", host, bare)
