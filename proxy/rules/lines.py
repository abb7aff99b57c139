"""Line numbers for load-time messages: tomllib gives none for a valid file, so the lines
of a rule (its ``id = "..."``), a segment (its ``[segment.name]`` header) and an offending
key are found in the text."""

from __future__ import annotations

import re


class FileLines:
    """Line numbers for messages: where a rule or segment starts, where a key is."""

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()
        self.headers = [i + 1 for i, line in enumerate(self.lines)
                        if re.match(r"\s*\[\[\s*rule\s*\]\]", line)]
        self.experiment_headers = [i + 1 for i, line in enumerate(self.lines)
                                   if re.match(r"\s*\[\[\s*experiment\s*\]\]", line)]
        # Where one rule, experiment or segment ends and the next begins: a key is looked
        # for only in the block of the item it belongs to.
        segments = (i + 1 for i, line in enumerate(self.lines)
                    if re.match(r"\s*\[\s*segment\s*\.", line))
        self.blocks = sorted({*self.headers, *self.experiment_headers, *segments})

    def rule_line(self, position: int, rid: str | None) -> int:
        """The line of the rule's ``id = "..."``, else of its ``[[rule]]`` header."""
        return self._id_line(self.headers, position, rid)

    def experiment_line(self, position: int, eid: str | None) -> int:
        """The line of the experiment's ``id = "..."``, else of its ``[[experiment]]``."""
        return self._id_line(self.experiment_headers, position, eid)

    def _id_line(self, headers: list[int], position: int, rid: str | None) -> int:
        header = headers[position] if position < len(headers) else 1
        if rid is not None:
            pattern = re.compile(r"\s*id\s*=\s*[\"']" + re.escape(rid) + r"[\"']")
            for i in range(header - 1, len(self.lines)):
                if pattern.match(self.lines[i]):
                    return i + 1
        return header

    def segment_line(self, name: str) -> int:
        pattern = re.compile(r"\s*\[\s*segment\s*\.\s*[\"']?" + re.escape(name) + r"[\"']?\s*\]")
        return next((i + 1 for i, line in enumerate(self.lines) if pattern.match(line)), 1)

    def find_in_arm(self, start: int, arm: str, needle: str | None) -> int:
        """The line of ``needle`` in the arm ``id = "<arm>"`` of the experiment whose id is
        at ``start`` (the arm's id line when the needle is not after it), else
        :meth:`find`'s answer: a key of the third arm is not reported at the first's line."""
        end = min((h for h in self.blocks if h > start), default=len(self.lines) + 1)
        pattern = re.compile(r"(?:^|[\s{,])id\s*=\s*[\"']" + re.escape(arm) + r"[\"']")
        for number in range(start + 1, end):
            if pattern.search(self.lines[number - 1]):
                return next((at for at in range(number, end)
                             if needle and needle in self.lines[at - 1]), number)
        return self.find(start, needle)

    def find(self, start: int, needle: str | None) -> int:
        """The first line from the block around ``start`` that mentions ``needle``."""
        if not needle:
            return start or 1
        begin = max((h for h in self.blocks if h <= start), default=max(start, 1))
        end = min((h for h in self.blocks if h > begin), default=len(self.lines) + 1)
        for number in range(begin, end):
            if needle in self.lines[number - 1]:
                return number
        return start or 1
