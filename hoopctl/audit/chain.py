"""Hash-chained JSON lines: how one record is sealed, and how a line is checked.

A record is one line of ASCII JSON, an object whose LAST member is
``"hash":"<64 hex>"`` (optionally followed by ``"mac":"<64 hex>"``). The hash is
SHA-256 over the exact bytes of the line with that trailing member (and the mac)
removed, i.e. ``{...members...}``. Hashing the bytes as written, rather than a
re-serialisation, leaves no room for two encodings of one record: flipping any
byte, even whitespace, changes the hash. Every record also carries ``seq`` (0, 1,
2, ... within its file) and ``prev`` (the hash of the record before it, or
``GENESIS`` for the first), so inserting, deleting or reordering records breaks
the chain at the first place touched.

A chain alone does not stop someone who can write the file from rewriting all of
it with fresh hashes. The optional ``mac`` (HMAC-SHA256 of the hash under a key
the writer holds) closes that for whoever holds the key; the recorder puts it on
the ledger, whose records pin every session file's first and last hash.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

GENESIS = "0" * 64
# Keys every record may carry that callers' own fields must not shadow.
RESERVED = frozenset({"seq", "ts", "t", "prev", "kind", "hash", "mac"})

_HASH_OPEN = b',"hash":"'
_MAC_OPEN = b'","mac":"'
_HEX = frozenset(b"0123456789abcdef")
# ,"hash":"<64>"}  and  ,"hash":"<64>","mac":"<64>"}
_PLAIN_TAIL = len(_HASH_OPEN) + 64 + 2
_MAC_TAIL = len(_HASH_OPEN) + 64 + len(_MAC_OPEN) + 64 + 2

try:  # the C encoder; the pure-Python one is the same function, only slower
    from json.encoder import c_encode_basestring_ascii as _c_encode
except ImportError:  # pragma: no cover
    _c_encode = None
encode_str = _c_encode or json.encoder.encode_basestring_ascii


class ChainError(ValueError):
    """A line that is not a well-formed, correctly hashed record."""


def json_default(obj: Any) -> Any:
    """Bytes (binary bind parameters) become ``{"$b64": ...}``; the rest their str()."""
    if isinstance(obj, bytes | bytearray | memoryview):
        return {"$b64": base64.b64encode(bytes(obj)).decode("ascii")}
    if isinstance(obj, set | frozenset | tuple):
        return list(obj)
    return str(obj)


def encode_fields(fields: dict[str, Any]) -> bytes:
    """The record body for ``fields``: compact ASCII JSON, keys in the given order."""
    return json.dumps(
        fields, separators=(",", ":"), ensure_ascii=True, allow_nan=False, default=json_default
    ).encode("ascii")


def seal(body: bytes, key: bytes | None = None) -> tuple[bytes, str]:
    """Return (line with trailing newline, hash) for a body ``{...}`` without a hash."""
    digest = hashlib.sha256(body).hexdigest()
    if key is None:
        return b"".join((body[:-1], _HASH_OPEN, digest.encode("ascii"), b'"}\n')), digest
    mac = hmac.new(key, digest.encode("ascii"), hashlib.sha256).hexdigest()
    line = b"".join((body[:-1], _HASH_OPEN, digest.encode("ascii"), _MAC_OPEN, mac.encode("ascii"), b'"}\n'))
    return line, digest


@dataclass(frozen=True)
class Parsed:
    """One checked line: its fields (without hash and mac), its hash, its mac if any."""

    record: dict[str, Any]
    hash: str
    mac: str | None


def _is_hex64(b: bytes) -> bool:
    return len(b) == 64 and all(c in _HEX for c in b)


def parse_line(line: bytes) -> Parsed:
    """Check one line (without its newline): shape, hash over the body; no chain context."""
    if not line.endswith(b'"}'):
        raise ChainError("record does not end with its hash")
    mac: str | None = None
    start = len(line) - _MAC_TAIL
    if (
        start > 0
        and line[start : start + len(_HASH_OPEN)] == _HASH_OPEN
        and line[start + len(_HASH_OPEN) + 64 : start + len(_HASH_OPEN) + 64 + len(_MAC_OPEN)] == _MAC_OPEN
    ):
        digest = line[start + len(_HASH_OPEN) : start + len(_HASH_OPEN) + 64]
        mac_b = line[len(line) - 66 : len(line) - 2]
        if not _is_hex64(mac_b):
            raise ChainError("malformed mac")
        mac = mac_b.decode("ascii")
    else:
        start = len(line) - _PLAIN_TAIL
        if start <= 0 or line[start : start + len(_HASH_OPEN)] != _HASH_OPEN:
            raise ChainError("record does not end with its hash")
        digest = line[start + len(_HASH_OPEN) : len(line) - 2]
    if not _is_hex64(digest):
        raise ChainError("malformed hash")
    body = line[:start] + b"}"
    if hashlib.sha256(body).hexdigest().encode("ascii") != digest:
        raise ChainError("hash mismatch: the record was altered")
    try:
        record = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ChainError(f"not valid JSON ({exc})") from None
    if not isinstance(record, dict):
        raise ChainError("not a JSON object")
    if "hash" in record or "mac" in record:
        raise ChainError("hash or mac field repeated inside the record")
    return Parsed(record, digest.decode("ascii"), mac)


class ChainChecker:
    """Walks one file's lines in order and says what is wrong with the first bad one.

    ``key``: when given, every record must carry a mac that matches it.
    """

    def __init__(self, key: bytes | None = None) -> None:
        self.key = key
        self.prev = GENESIS
        self.seq = 0

    def check(self, line: bytes) -> Parsed:
        """Return the parsed record, or raise ChainError naming what is wrong."""
        parsed = parse_line(line)
        rec = parsed.record
        seq = rec.get("seq")
        if seq != self.seq:
            if isinstance(seq, int) and seq < self.seq:
                raise ChainError(f"seq {seq} where {self.seq} was expected: record repeated or reordered")
            raise ChainError(f"seq {seq} where {self.seq} was expected: record missing or reordered")
        if rec.get("prev") != self.prev:
            raise ChainError("prev does not match the hash of the record before: chain broken")
        if self.key is not None:
            if parsed.mac is None:
                raise ChainError("record has no mac but a key was given")
            want = hmac.new(self.key, parsed.hash.encode("ascii"), hashlib.sha256).hexdigest()
            if not hmac.compare_digest(want, parsed.mac):
                raise ChainError("mac does not match the key: record forged or key wrong")
        self.prev = parsed.hash
        self.seq += 1
        return parsed


def is_torn_marker(record: dict[str, Any], covered: int, prev: str, seq: int) -> bool:
    """Whether ``record`` is the ``torn`` record that a recorder, restarting after a
    crash, writes right after the damaged lines it closed: it continues the chain
    from (``prev``, ``seq``), the last whole record, and counts those ``covered``
    bytes (the lines joined by their newlines)."""
    return (
        record.get("kind") == "torn"
        and record.get("bytes") == covered
        and record.get("seq") == seq
        and record.get("prev") == prev
    )
