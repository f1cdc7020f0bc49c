"""Helpers shared by the structured parsers: line iteration with offsets, value spans, secret names."""

from __future__ import annotations

import re
from collections.abc import Iterator

from hoopctl.detect.filters import benign_name

Found = tuple[str, int, int]  # (rule id, start, end) of a secret in the text

# Names of variables that hold a secret: DB_PASSWORD, GITHUB_TOKEN, MYSQL_PWD, API_KEY, client_secret.
_SECRET_NAME = re.compile(
    r"""(?ix)
    pass(?:word|wd|phrase)? | pwd | secret | token | api[_-]?key | apikey | access[_-]?key
    | private[_-]?key | auth(?:[_-]?key)?$ | credentials? | signing[_-]?key | encryption[_-]?key
    | master[_-]?key | _pat$ | ^pat$ | dsn$
    """
)


def lines(text: str) -> Iterator[tuple[int, str]]:
    """(offset, line without its newline) for each line."""
    pos = 0
    n = len(text)
    while pos < n:
        end = text.find("\n", pos)
        if end < 0:
            end = n
        line = text[pos:end]
        yield pos, line[:-1] if line.endswith("\r") else line
        pos = end + 1


def is_secret_name(name: str) -> bool:
    """True for variable names that say they hold a secret (and are not `*_FILE`, `*_URL` ...)."""
    return bool(_SECRET_NAME.search(name)) and not benign_name(name)


def ini_value_span(line: str, start: int) -> tuple[int, int]:
    """Span of an INI/TOML value: the rest of the line, unquoted, without a trailing ` #`/` ;` comment."""
    n = len(line)
    while start < n and line[start] in " \t":
        start += 1
    if start < n and line[start] in "\"'":
        q = line[start]
        end = line.find(q, start + 1)
        return (start + 1, end if end > 0 else n)
    end = n
    for marker in (" #", "\t#", " ;", "\t;"):
        i = line.find(marker, start)
        if i >= 0:
            end = min(end, i)
    while end > start and line[end - 1] in " \t":
        end -= 1
    return (start, end)


def value_span(line: str, start: int, *, comments: bool = True) -> tuple[int, int]:
    """Span of a shell/INI style value beginning at `start`: quoted, or up to whitespace / ` #`."""
    n = len(line)
    while start < n and line[start] in " \t":
        start += 1
    if start < n and line[start] in "\"'":
        q = line[start]
        end = line.find(q, start + 1)
        return (start + 1, end if end > 0 else n)
    end = start
    while (
        end < n
        and line[end] not in " \t"
        and not (comments and line[end] == "#" and end > start and line[end - 1] in " \t")
    ):
        end += 1
    return (start, end)
