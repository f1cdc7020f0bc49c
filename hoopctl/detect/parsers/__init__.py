"""Structured parsers: files whose format says which value is the secret, chosen by path.

A parser is a pure function `parse(text) -> Iterable[(rule_id, start, end)]` over the latin-1
decoded file; the engine looks the rule up in rules.yaml for its name and severity.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

Parser = Callable[[str], Iterable[tuple[str, int, int]]]

PARSERS: dict[str, Parser] = {}


def select(path: str) -> list[Parser]:
    """The parsers that apply to a file at `path` (by basename, suffix or parent directory)."""
    return []
