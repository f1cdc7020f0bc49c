"""What a session expects back from the database, in order: the pending requests, the
Sync/Bind/Close markers, the prepared statement and portal definitions, and the small pure
helpers that read or build protocol bytes for them (refusals, row counts, error texts, recorded
Bind parameters).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, NamedTuple

from hoopctl.gateway import pgwire as pw

UNSET = object()
LOST = object()  # rows arrived where no statement expects them


class Kind:
    QUERY = "Q"  # simple Query: ends at ReadyForQuery
    EXECUTE = "E"  # Execute: ends at CommandComplete/EmptyQuery/PortalSuspended/Error
    SYNC = "S"  # ends at ReadyForQuery
    BIND = "B"  # ends at BindComplete
    PARSE = "P"  # ends at ParseComplete, which applies it
    CLOSE = "C"  # Close of a statement: ends at CloseComplete, which applies it
    CLOSE_PORTAL = "c"  # ends at CloseComplete
    DESCRIBE = "d"  # client's Describe: ends at RowDescription/NoData
    INJECTED_DESCRIBE = "D"  # ours, so masking knows a portal's columns; answer swallowed
    REFUSED_QUERY = "R"  # simple-protocol refusal: swap its error, end at ReadyForQuery
    REFUSED = "r"  # extended-protocol refusal: swap its error


class Pending:
    """A statement or Describe awaiting its answer."""

    __slots__ = (
        "kind",
        "handle",
        "t0",
        "rows",
        "error",
        "masked",
        "masker",
        "portal",
        "message",
        "withheld",
        "hint",
        "describe",
    )

    def __init__(
        self, kind: str, handle: int | None = None, portal: str | None = "", message: bytes = b""
    ) -> None:
        self.kind = kind
        self.handle = handle
        self.t0 = time.monotonic()
        self.rows = 0
        self.error: str | None = None
        self.masked = 0
        self.masker: Any = UNSET  # Describe, Query: the plan for the rows (None: nothing to mask)
        self.portal = portal
        self.message = message
        self.withheld = ""  # why rows were dropped (a covered binary column, COPY out under masking)
        self.hint = ""
        self.describe: Pending | None = None  # Execute: the Describe whose answer plans its rows


class Definition:
    """A Parse or a Close of a statement, applied when the database answers it."""

    __slots__ = ("kind", "name", "sql", "classes")

    def __init__(self, kind: str, name: str, sql: str | None, classes: frozenset[str]) -> None:
        self.kind = kind
        self.name = name
        self.sql = sql  # None for a Close
        self.classes = classes


class Portal(NamedTuple):
    """A portal the client bound, as its Bind left it."""

    sql: str  # what it runs, for the recording
    bind: pw.Bind
    epoch: int  # the session's grant epoch at the Bind: judged again at Execute once it moved
    classes: frozenset[str]  # what the Bind was allowed to run (a statement name may be re-parsed since)


class Marker:
    """An answer with nothing to carry: shared, and nothing can be written onto it."""

    __slots__ = ("kind",)

    def __init__(self, kind: str) -> None:
        self.kind = kind


SYNC = Marker(Kind.SYNC)
BIND = Marker(Kind.BIND)
CLOSE_PORTAL = Marker(Kind.CLOSE_PORTAL)


class Withhold:
    """The plan for rows whose columns the gateway does not know: none of them goes out."""

    __slots__ = ()
    refuse = True
    reason = "the gateway could not tell which columns these rows have"


WITHHOLD = Withhold()


@dataclass(frozen=True)
class Refused:
    message: str
    allowed: bool = False
    rule: str = "gateway-error"
    classes: frozenset = frozenset()


def refusal(message: str, hint: str = "") -> bytes:
    return pw.ErrorResponse.make("42501", message, hint=hint).encode()


def rows_of(tag: memoryview) -> int:
    """Row count at the end of a CommandComplete tag (without its NUL)."""
    raw = bytes(tag)
    last = raw.rpartition(b" ")[2]
    return int(last) if last.isdigit() else 0


def error_message(raw: bytes) -> str:
    try:
        err = pw.decode_backend(b"E", raw[5:])
    except pw.ProtocolError:
        return "error"
    return f"{err.sqlstate}: {err.message}"


def params_for_record(bind: pw.Bind, masking: Any, resource: str) -> list[str | None]:
    """Bind parameters for the recording, content rules applied: text as text, binary ones (and
    non-UTF-8) as \\x hex, masked before they become hex (a binary text parameter holds the
    same characters as a text one)."""
    values: list[str | bytes | None] = []
    binary = False
    for i, p in enumerate(bind.params):
        if p is None:
            values.append(None)
            continue
        if bind.param_format(i) == 0:
            try:
                values.append(p.decode())
                continue
            except UnicodeDecodeError:
                pass
        values.append(bytes(p))
        binary = True
    if masking is not None:
        values = masking.mask_params(resource, values)
    if binary:
        return ["\\x" + v.hex() if type(v) is bytes else v for v in values]
    return values  # type: ignore[return-value]
