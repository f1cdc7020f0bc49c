"""Short, time-ordered, random identifiers for sessions and recorders."""

from __future__ import annotations

import secrets
import time

# Crockford's base32, lower case: no i, l, o, u, so an id read aloud is unambiguous.
ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
TIME_CHARS = 9  # 45 bits of milliseconds: sortable until the year 3084
RANDOM_CHARS = 5  # 25 bits: collisions inside one millisecond are caught by O_EXCL anyway
LENGTH = TIME_CHARS + RANDOM_CHARS


def new_id(now: float | None = None) -> str:
    """A 14-character id whose lexical order is its creation order (to the millisecond)."""
    ms = int((time.time() if now is None else now) * 1000)
    chars = []
    for _ in range(TIME_CHARS):
        chars.append(ALPHABET[ms & 31])
        ms >>= 5
    rnd = secrets.randbits(5 * RANDOM_CHARS)
    tail = []
    for _ in range(RANDOM_CHARS):
        tail.append(ALPHABET[rnd & 31])
        rnd >>= 5
    return "".join(reversed(chars)) + "".join(tail)


def is_id(text: object) -> bool:
    """True when ``text`` is a string with the shape of an id (used to ignore stray files and
    ledger fields that could not have been written by a recorder)."""
    return isinstance(text, str) and len(text) == LENGTH and all(c in ALPHABET for c in text)
