"""Crawler detection: the ``crawler-user-agents`` patterns compiled once into fast matchers.

Joining the data set's ~1,500 regular expressions with ``|`` (what the package itself does)
costs ~650 µs per search with Python's ``re``: every alternative is tried at every position.
Almost all of them are literals, so they are expanded (``[wW]get`` → ``wget``, ``Wget``;
``(Bot|SiteAudit)`` → both) and folded into ONE trie-shaped regex where alternatives share
prefixes; that searches a browser UA in ~15-20 µs. Patterns anchored at the start go into
a second trie used with ``match``; the handful that are real regular expressions (``\\d``,
``[\\s\\S]*``) are kept apart, each with a literal prefix ``re`` finds fast.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import re
from itertools import product
from pathlib import Path

log = logging.getLogger(__name__)

# Known crawlers and HTTP clients, added to the data set (some of which it spells as a
# pattern this module cannot expand, or misses): the names that matter most for an edge
# proxy deciding whom not to count or personalise.
KNOWN_CRAWLERS = (
    "Googlebot", "Google-InspectionTool", "GoogleOther", "Storebot-Google", "AdsBot-Google",
    "Mediapartners-Google", "APIs-Google", "FeedFetcher-Google", "Google-Read-Aloud",
    "bingbot", "BingPreview", "msnbot", "adidxbot", "DuckDuckBot", "DuckAssistBot",
    "YandexBot", "YandexMobileBot", "Baiduspider", "Applebot", "facebookexternalhit",
    "meta-externalagent", "Facebot", "Twitterbot", "LinkedInBot", "Slackbot",
    "Slack-ImgProxy", "Discordbot", "TelegramBot", "AhrefsBot", "AhrefsSiteAudit",
    "SemrushBot", "MJ12bot", "PetalBot", "GPTBot", "ChatGPT-User", "OAI-SearchBot",
    "ClaudeBot", "Claude-Web", "Claude-User", "Claude-SearchBot", "anthropic-ai",
    "PerplexityBot", "Perplexity-User", "CCBot", "Bytespider", "Amazonbot", "DotBot",
    "Pinterestbot", "HeadlessChrome", "PhantomJS", "Chrome-Lighthouse", "python-requests",
    "python-httpx", "Python-urllib", "aiohttp", "Go-http-client", "curl/", "Wget/", "okhttp",
    "axios/", "node-fetch", "Java/", "Apache-HttpClient", "libwww-perl", "Scrapy",
    "PostmanRuntime", "HTTPie",
)
_META = set(".^$*+?{}[]|()\\")
_MAX_EXPANSION = 64
_NAME = re.compile(r"[A-Za-z][\w.-]*?(?:[Bb]ot|[Ss]pider|[Cc]rawler|[Ff]etcher)\b")


def load_patterns() -> list[str]:
    """The data set's patterns, read from the installed ``crawler-user-agents`` package's
    JSON file (without importing the package, which would parse the file a second time)."""
    spec = importlib.util.find_spec("crawleruseragents")
    folders = list(spec.submodule_search_locations or []) if spec else []
    for folder in folders:
        path = Path(folder) / "crawler-user-agents.json"
        try:
            return [item["pattern"] for item in json.loads(path.read_text(encoding="utf-8"))]
        except (OSError, ValueError, KeyError, TypeError):
            continue
    log.warning("crawler-user-agents data not available; only %d known crawler names are "
                "recognised (pip install crawler-user-agents)", len(KNOWN_CRAWLERS))
    return []


class BotMatcher:
    """Decides whether a User-Agent is a crawler, and names it. Build once per process."""

    def __init__(self, patterns: list[str]) -> None:
        anywhere: set[str] = set(KNOWN_CRAWLERS)
        at_start: set[str] = set()
        at_end: set[str] = set()
        regexes: list[str] = []
        for pattern in patterns:
            for alternative in _alternatives(pattern):
                expanded = _expand(alternative)
                if expanded is None:
                    regexes.append(alternative)
                    continue
                start, end, literals = expanded
                if start and end:
                    regexes.append(alternative)
                elif start:
                    at_start.update(literals)
                elif end:
                    at_end.update(literals)
                else:
                    anywhere.update(literals)
        self._anywhere = re.compile(_trie_regex(anywhere))
        self._at_start = re.compile(_trie_regex(at_start)) if at_start else None
        self._at_end = tuple(sorted(at_end))
        self._regexes = tuple(re.compile(r) for r in regexes)
        self.size = len(anywhere) + len(at_start) + len(at_end) + len(regexes)

    def match(self, ua: str) -> str:
        """The crawler's name when ``ua`` is a crawler, else ""."""
        found = self._anywhere.search(ua)
        if found is None and self._at_start is not None:
            found = self._at_start.match(ua)
        if found is not None:
            return _name(ua, found.group(0))
        for suffix in self._at_end:
            if ua.endswith(suffix):
                return _name(ua, suffix)
        for regex in self._regexes:
            hit = regex.search(ua)
            if hit is not None:
                return _name(ua, hit.group(0))
        return ""


def _name(ua: str, matched: str) -> str:
    """A readable name: the first "...bot/spider/crawler" word, else the matched text."""
    word = _NAME.search(ua)
    name = word.group(0) if word else matched.strip(" /;()")
    return name[:40] or "bot"


def _alternatives(pattern: str) -> list[str]:
    """Top-level alternatives, with ``(^| )word`` (a word at the start or after a space)
    rewritten as ``^word`` and `` word``, which expand to literals."""
    out = []
    for part in _split_top(pattern):
        if part.startswith("(^| )"):
            out += ["^" + part[5:], " " + part[5:]]
        else:
            out.append(part)
    return out


def _split_top(pattern: str) -> list[str]:
    """Split at ``|`` outside groups and classes."""
    parts, depth, in_class, escaped, start = [], 0, False, False, 0
    for i, ch in enumerate(pattern):
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif in_class:
            in_class = ch != "]"
        elif ch == "[":
            in_class = True
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "|" and depth == 0:
            parts.append(pattern[start:i])
            start = i + 1
    parts.append(pattern[start:])
    return [p for p in parts if p]


def _expand(pattern: str) -> tuple[bool, bool, list[str]] | None:
    """``(anchored at start, anchored at end, literals)`` or None when not a finite set."""
    start = pattern.startswith("^")
    end = pattern.endswith("$") and not pattern.endswith("\\$")
    body = pattern[1 if start else 0:len(pattern) - 1 if end else len(pattern)]
    atoms: list[list[str]] = []
    i = 0
    while i < len(body):
        ch = body[i]
        if ch == "\\":
            if i + 1 >= len(body) or body[i + 1].isalnum():
                return None  # \d, \s, \b ...
            atoms.append([body[i + 1]])
            i += 2
        elif ch == "[":
            close = body.find("]", i + 1)
            chars = body[i + 1:close] if close > 0 else ""
            if not chars or any(c in _META or c in "-^" for c in chars):
                return None
            atoms.append(list(chars))
            i = close + 1
        elif ch == "(":
            close = body.find(")", i + 1)
            inner = body[i + 1:close] if close > 0 else ""
            inner = inner[2:] if inner.startswith("?:") else inner
            options = inner.split("|")
            if not inner or any(c in _META and c != "|" for c in inner):
                return None
            atoms.append(options)
            i = close + 1
        elif ch in _META:
            return None
        else:
            atoms.append([ch])
            i += 1
    count = 1
    for atom in atoms:
        count *= len(atom)
    if not atoms or count > _MAX_EXPANSION:
        return None
    return start, end, ["".join(parts) for parts in product(*atoms)]


def _trie_regex(words: set[str]) -> str:
    """One regex for a set of literals, with shared prefixes factored out.

    A word that is a prefix of another ends the branch: for "is it a crawler" the shorter
    match is enough.
    """
    trie: dict[str, dict] = {}
    for word in words:
        node = trie
        for ch in word:
            node = node.setdefault(ch, {})
        node[""] = {}

    def emit(node: dict[str, dict]) -> str:
        if "" in node:
            return ""
        branches = [re.escape(ch) + emit(child) for ch, child in sorted(node.items())]
        return branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"

    return emit(trie)
