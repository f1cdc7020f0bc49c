"""Second-stage checks run on a regex candidate: confirm its structure, or drop or downgrade it.

Each validator takes the candidate secret and returns a `Verdict`. Validators are named in
rules.yaml by the keys of `VALIDATORS`.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
import string
import zlib
from collections.abc import Callable

BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase


class Verdict(enum.Enum):
    OK = "ok"  # structure confirmed: keep at the rule's severity
    WEAK = "weak"  # plausible but unconfirmed (bad checksum, encrypted key): keep, lower severity
    REJECT = "reject"  # not this credential type at all: drop


def base62(n: int, width: int = 6) -> str:
    digits = []
    while n:
        n, r = divmod(n, 62)
        digits.append(BASE62[r])
    return "".join(reversed(digits)).rjust(width, "0")


def github_checksum(token: str) -> str:
    """The 6-character base62 CRC32 GitHub appends to the random part of its tokens."""
    return base62(zlib.crc32(token.encode("ascii", "replace")))


def check_github(secret: str) -> Verdict:
    """ghp_/gho_/ghu_/ghs_/ghr_ tokens end with the CRC32 of the 30 random characters before it."""
    body = secret.rsplit("_", 1)[-1]
    if len(body) < 7:
        return Verdict.WEAK
    return Verdict.OK if github_checksum(body[:-6]) == body[-6:] else Verdict.WEAK


def _b64url_json(part: str) -> object | None:
    try:
        raw = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
        return json.loads(raw)
    except (ValueError, binascii.Error, UnicodeDecodeError, RecursionError):
        return None


def check_jwt(secret: str) -> Verdict:
    """A JWT: a JSON header naming an algorithm, and a JSON payload. Unsigned (alg none) counts as weak."""
    parts = secret.split(".")
    if len(parts) < 2:
        return Verdict.REJECT
    header = _b64url_json(parts[0])
    if not isinstance(header, dict) or not isinstance(header.get("alg"), str):
        return Verdict.REJECT
    if len(parts) == 3 and not isinstance(_b64url_json(parts[1]), dict):
        return Verdict.REJECT
    if header["alg"].lower() == "none" or len(parts) < 3 or not parts[2]:
        return Verdict.WEAK
    return Verdict.OK


def check_private_key(secret: str) -> Verdict:
    """A PEM/OpenSSH private key block that `cryptography` can load; encrypted keys are weaker findings."""
    from cryptography.hazmat.primitives import serialization

    data = secret.encode("latin-1", "replace")
    # Proc-Type: 4,DEK-Info (legacy OpenSSL) and ENCRYPTED PRIVATE KEY (PKCS#8) say so in the armour.
    if b"ENCRYPTED" in data:
        return Verdict.WEAK
    try:
        if b"OPENSSH PRIVATE KEY" in data:
            serialization.load_ssh_private_key(data, password=None)
        else:
            # Skipping RSA's consistency check: we only ask "is this a key", and the check costs ~50 ms.
            serialization.load_pem_private_key(data, password=None, unsafe_skip_rsa_key_validation=True)
    except TypeError:
        # cryptography raises TypeError when the key is encrypted and no password was given.
        return Verdict.WEAK
    except (ValueError, NotImplementedError, Exception):  # noqa: BLE001 - any parse failure means "not a usable key"
        return Verdict.WEAK if _looks_like_truncated_key(data) else Verdict.REJECT
    return Verdict.OK


def _looks_like_truncated_key(data: bytes) -> bool:
    # A key body of real base64 but unparseable (truncated copy, unusual curve) still deserves a finding.
    body = b"".join(line for line in data.splitlines()[1:-1] if b":" not in line)
    if len(body) < 64:
        return False
    try:
        base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


def check_putty_key(secret: str) -> Verdict:
    """PuTTY .ppk: an unencrypted key says `Encryption: none`."""
    return Verdict.OK if "Encryption: none" in secret else Verdict.WEAK


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if d < 0 or d > 9:
            return False
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def check_luhn(secret: str) -> Verdict:
    digits = "".join(c for c in secret if c.isdigit())
    return Verdict.OK if digits and luhn_ok(digits) else Verdict.REJECT


def check_base64_key(secret: str) -> Verdict:
    """Keys documented as base64 of N random bytes (Azure storage: 64 bytes) must decode."""
    try:
        base64.b64decode(secret, validate=True)
    except (binascii.Error, ValueError):
        return Verdict.REJECT
    return Verdict.OK


def check_basic_auth(secret: str) -> Verdict:
    """HTTP Basic credentials: base64 of `user:password` with a non-empty password."""
    try:
        raw = base64.b64decode(secret, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return Verdict.REJECT
    user, sep, password = raw.partition(":")
    if not sep or not password or not raw.isprintable():
        return Verdict.REJECT
    return Verdict.OK


VALIDATORS: dict[str, Callable[[str], Verdict]] = {
    "github-checksum": check_github,
    "jwt": check_jwt,
    "private-key": check_private_key,
    "putty-key": check_putty_key,
    "luhn": check_luhn,
    "base64": check_base64_key,
    "basic-auth": check_basic_auth,
}
