"""How a masked value looks: full (`****`), partial (type-aware: `j***@example.com`, `************1234`),
hash (`hash:` + 12 hex of an HMAC-SHA256 under the gateway's key, so joins still correlate) or null.

Renderers take and return bytes and never decode, so any input, valid UTF-8 or not, is safe. Partial
output only keeps ASCII bytes of the original, so it never cuts a multi-byte character in half.
"""

from __future__ import annotations

import hmac

from hoopctl.gateway.masking.detectors import _EMAIL

STYLES = ("full", "partial", "hash", "null")
FULL = b"****"


class Hasher:
    """Keyed, stable pseudonyms: the same value gives the same output on the same gateway key."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        self._key = bytes(key)

    def __call__(self, data: bytes) -> bytes:
        return b"hash:" + hmac.digest(self._key, data, "sha256").hex()[:12].encode()


def _stars_keep_tail(n: int, tail: bytes) -> bytes:
    return b"*" * n + tail


def partial_email(raw: bytes) -> bytes:
    at = raw.rfind(b"@")
    return raw[:1] + b"***" + raw[at:]


def partial_card(digits: bytes) -> bytes:
    return _stars_keep_tail(len(digits) - 4, digits[-4:])


def partial_iban(compact: bytes) -> bytes:
    return compact[:2] + _stars_keep_tail(len(compact) - 6, compact[-4:])


def partial_phone(raw: bytes) -> bytes:
    """Every digit but the last two becomes '*', the layout (+, spaces, dashes) stays."""
    total = len(raw) - len(raw.translate(None, b"0123456789"))
    out = bytearray(raw)
    seen = 0
    for i, c in enumerate(out):
        if 48 <= c <= 57:
            seen += 1
            if seen <= total - 2:
                out[i] = 42
    return bytes(out)


def partial_ssn(raw: bytes) -> bytes:
    return b"***-**-" + raw[-4:]


def partial_generic(v: bytes) -> bytes:
    """Partial for a whole column value of unknown kind: an email or card keeps its usual part,
    anything else of 8+ bytes keeps its last 4 ASCII characters, shorter values keep nothing."""
    m = _EMAIL.fullmatch(v)
    if m is not None:
        return partial_email(v)
    digits = v.translate(None, b" -")
    if 13 <= len(digits) <= 19 and digits.isdigit():
        return partial_card(digits)
    tail = v[-4:]
    if len(v) >= 8 and _printable_ascii(tail):
        return FULL + tail
    return FULL


def _printable_ascii(b: bytes) -> bool:
    return all(32 < c < 127 for c in b)


def partial_for_hit(kind: str, raw: bytes, token: bytes) -> bytes:
    """The partial rendering of one content hit (`raw` as found, `token` normalised)."""
    if kind == "email":
        return partial_email(raw)
    if kind == "card":
        return partial_card(token)
    if kind == "iban":
        return partial_iban(token)
    if kind == "phone":
        return partial_phone(raw)
    if kind == "us_ssn":
        return partial_ssn(raw)
    # National ids without a customary partial form, and credentials, keep nothing.
    return b"*" * len(token) if kind in ("fr_nir", "nl_bsn") else FULL
