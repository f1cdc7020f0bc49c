"""What a detection yields: a redacted, fingerprinted match that never holds the secret itself."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

SEVERITIES = ("critical", "high", "medium", "low")


@dataclass(frozen=True, slots=True)
class Match:
    """One credential found in a buffer. Deliberately holds no raw secret, so it cannot leak by printing."""

    rule_id: str
    type: str
    severity: str
    line: int
    fingerprint: str
    preview: str


def fingerprint(secret: str) -> str:
    """Stable identity of a secret: the same value gives the same fingerprint in any file."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def redact(secret: str, prefix: str = "") -> str:
    """A preview showing at most a known type prefix and a short tail, plus the length.

    The tail shrinks with the secret so short passwords do not give away a useful fraction.
    """
    n = len(secret)
    if prefix and not secret.startswith(prefix):
        prefix = ""
    rest = n - len(prefix)
    tail_len = 4 if rest >= 24 else 2 if rest >= 10 else 0
    tail = secret[n - tail_len :] if tail_len else ""
    tail = "".join(c if c.isprintable() and not c.isspace() else "?" for c in tail)
    return f"{prefix}…{tail} ({n} chars)"
