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

    def find(self, start: int, needle: str | None) -> int:
        """The first line from the block around ``start`` that mentions ``needle``."""
        if not needle:
            return start or 1
        begin = max((h for h in self.headers if h <= start), default=max(start, 1))
        end = min((h for h in self.headers if h > begin), default=len(self.lines) + 1)
        for number in range(begin, end):
            if needle in self.lines[number - 1]:
                return number
        return start or 1
