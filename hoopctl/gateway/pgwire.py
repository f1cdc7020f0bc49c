"""A sans-IO codec for the PostgreSQL frontend/backend protocol 3.0.

No sockets, no asyncio, no clock: feed bytes to a parser, get typed messages
(small frozen dataclasses) back; call `encode()` on a message for its bytes.

- `FrontendParser` reads what a client (frontend) sends: the untyped startup
  packets (StartupMessage, SSLRequest, GSSENCRequest, CancelRequest), then the
  authentication answers, then typed messages. It is a state machine that refuses
  what is out of order.
- `BackendParser` reads what a server (backend) sends, with the same checks for
  the start-up and authentication exchange.
- `split_frames` is the hot path for relaying server bytes: it cuts a buffer into
  messages by their length headers only, without building any object, so that
  DataRows nobody needs to look at are forwarded in bulk.

Anything malformed, oversized or out of order raises `ProtocolError`; the caller
answers that one connection with an ErrorResponse (SQLSTATE 08P01) and closes it.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

PROTOCOL_3_0 = 196608
SSL_REQUEST_CODE = 80877103
GSSENC_REQUEST_CODE = 80877104
CANCEL_REQUEST_CODE = 80877102
# PostgreSQL itself caps start-up packets at 10000 bytes (MAX_STARTUP_PACKET_LENGTH).
MAX_STARTUP_PACKET = 10000
DEFAULT_MAX_MESSAGE = 16 * 1024 * 1024

_I32 = struct.Struct("!i")
_I16 = struct.Struct("!h")
_HDR = struct.Struct("!ci")
_II = struct.Struct("!ii")


class ProtocolError(Exception):
    """A malformed, oversized or out-of-order message: the connection must end."""

    sqlstate = "08P01"


# ---------------------------------------------------------------- low-level helpers


def _frame(tag: bytes, payload: bytes) -> bytes:
    return tag + _I32.pack(len(payload) + 4) + payload


def _cstr(text: str) -> bytes:
    raw = text.encode()
    if b"\0" in raw:
        raise ProtocolError("string contains a NUL byte")
    return raw + b"\0"


class _Reader:
    """Reads fields from one message payload; any overrun is a ProtocolError."""

    __slots__ = ("buf", "pos", "_what")

    def __init__(self, buf: bytes | memoryview, what: str | tuple[bytes, bool]) -> None:
        self.buf = bytes(buf)
        self.pos = 0
        self._what = what  # a name, or (tag, from_frontend) formatted only for an error

    @property
    def what(self) -> str:
        what = self._what
        return what if isinstance(what, str) else _name(what[0], frontend=what[1])

    def _need(self, n: int) -> None:
        if n < 0 or self.pos + n > len(self.buf):
            raise ProtocolError(f"{self.what}: message too short")

    def int32(self) -> int:
        self._need(4)
        (v,) = _I32.unpack_from(self.buf, self.pos)
        self.pos += 4
        return v

    def int16(self) -> int:
        self._need(2)
        (v,) = _I16.unpack_from(self.buf, self.pos)
        self.pos += 2
        return v

    def byte(self) -> bytes:
        self._need(1)
        v = self.buf[self.pos : self.pos + 1]
        self.pos += 1
        return v

    def raw(self, n: int) -> bytes:
        self._need(n)
        v = self.buf[self.pos : self.pos + n]
        self.pos += n
        return v

    def rest(self) -> bytes:
        v = self.buf[self.pos :]
        self.pos = len(self.buf)
        return v

    def cstr(self) -> str:
        end = self.buf.find(b"\0", self.pos)
        if end < 0:
            raise ProtocolError(f"{self.what}: unterminated string")
        raw = self.buf[self.pos : end]
        self.pos = end + 1
        try:
            return raw.decode()
        except UnicodeDecodeError as exc:
            raise ProtocolError(f"{self.what}: string is not valid UTF-8") from exc

    def count(self) -> int:
        n = self.int16()
        if n < 0:
            raise ProtocolError(f"{self.what}: negative count")
        return n

    def done(self) -> None:
        if self.pos != len(self.buf):
            raise ProtocolError(f"{self.what}: trailing bytes")


# ---------------------------------------------------------------- frontend messages


@dataclass(frozen=True)
class StartupMessage:
    params: dict[str, str] = field(default_factory=dict)
    protocol: int = PROTOCOL_3_0

    def encode(self) -> bytes:
        body = _I32.pack(self.protocol)
        for k, v in self.params.items():
            body += _cstr(k) + _cstr(v)
        body += b"\0"
        return _I32.pack(len(body) + 4) + body


@dataclass(frozen=True)
class SSLRequest:
    def encode(self) -> bytes:
        return _II.pack(8, SSL_REQUEST_CODE)


@dataclass(frozen=True)
class GSSENCRequest:
    def encode(self) -> bytes:
        return _II.pack(8, GSSENC_REQUEST_CODE)


@dataclass(frozen=True)
class CancelRequest:
    pid: int
    key: int

    def encode(self) -> bytes:
        return _I32.pack(16) + _I32.pack(CANCEL_REQUEST_CODE) + _II.pack(self.pid, self.key)


@dataclass(frozen=True)
class PasswordMessage:
    """Any 'p' message: a password, a SASLInitialResponse or a SASLResponse.

    Which one it is depends on what the server asked for, so the payload stays
    raw here; `sasl_initial()` and `password()` read it as one or the other.
    """

    data: bytes

    def encode(self) -> bytes:
        return _frame(b"p", self.data)

    def password(self) -> str:
        r = _Reader(self.data, "PasswordMessage")
        text = r.cstr()
        r.done()
        return text

    def sasl_initial(self) -> tuple[str, bytes]:
        r = _Reader(self.data, "SASLInitialResponse")
        mech = r.cstr()
        n = r.int32()
        resp = b"" if n == -1 else r.raw(n)
        r.done()
        return mech, resp

    @classmethod
    def for_password(cls, password: str) -> PasswordMessage:
        return cls(_cstr(password))

    @classmethod
    def for_sasl_initial(cls, mechanism: str, response: bytes) -> PasswordMessage:
        return cls(_cstr(mechanism) + _I32.pack(len(response)) + response)


@dataclass(frozen=True)
class Query:
    sql: str

    def encode(self) -> bytes:
        return _frame(b"Q", _cstr(self.sql))


@dataclass(frozen=True)
class Parse:
    name: str
    sql: str
    param_types: tuple[int, ...] = ()

    def encode(self) -> bytes:
        body = _cstr(self.name) + _cstr(self.sql) + _I16.pack(len(self.param_types))
        body += b"".join(_I32.pack(t) for t in self.param_types)
        return _frame(b"P", body)


@dataclass(frozen=True)
class Bind:
    portal: str
    statement: str
    params: tuple[bytes | None, ...] = ()
    param_formats: tuple[int, ...] = ()
    result_formats: tuple[int, ...] = ()

    def encode(self) -> bytes:
        body = _cstr(self.portal) + _cstr(self.statement)
        body += _I16.pack(len(self.param_formats)) + b"".join(_I16.pack(f) for f in self.param_formats)
        body += _I16.pack(len(self.params))
        for p in self.params:
            body += _I32.pack(-1) if p is None else _I32.pack(len(p)) + p
        body += _I16.pack(len(self.result_formats)) + b"".join(_I16.pack(f) for f in self.result_formats)
        return _frame(b"B", body)

    def param_format(self, i: int) -> int:
        if not self.param_formats:
            return 0
        return self.param_formats[0] if len(self.param_formats) == 1 else self.param_formats[i]


@dataclass(frozen=True)
class Describe:
    kind: str  # "S" statement or "P" portal
    name: str

    def encode(self) -> bytes:
        return _frame(b"D", self.kind.encode() + _cstr(self.name))


@dataclass(frozen=True)
class Execute:
    portal: str
    max_rows: int = 0

    def encode(self) -> bytes:
        return _frame(b"E", _cstr(self.portal) + _I32.pack(self.max_rows))


@dataclass(frozen=True)
class Close:
    kind: str  # "S" statement or "P" portal
    name: str

    def encode(self) -> bytes:
        return _frame(b"C", self.kind.encode() + _cstr(self.name))


@dataclass(frozen=True)
class Sync:
    def encode(self) -> bytes:
        return b"S\0\0\0\4"


@dataclass(frozen=True)
class Flush:
    def encode(self) -> bytes:
        return b"H\0\0\0\4"


@dataclass(frozen=True)
class Terminate:
    def encode(self) -> bytes:
        return b"X\0\0\0\4"


@dataclass(frozen=True)
class FunctionCall:
    """The legacy fast-path call; kept raw: the gateway refuses it (it cannot be classified)."""

    data: bytes

    def encode(self) -> bytes:
        return _frame(b"F", self.data)


@dataclass(frozen=True)
class CopyData:
    data: bytes

    def encode(self) -> bytes:
        return _frame(b"d", self.data)


@dataclass(frozen=True)
class CopyDone:
    def encode(self) -> bytes:
        return b"c\0\0\0\4"


@dataclass(frozen=True)
class CopyFail:
    message: str

    def encode(self) -> bytes:
        return _frame(b"f", _cstr(self.message))


# ---------------------------------------------------------------- backend messages


class AuthCode(enum.IntEnum):
    OK = 0
    CLEARTEXT = 3
    MD5 = 5
    SASL = 10
    SASL_CONTINUE = 11
    SASL_FINAL = 12


@dataclass(frozen=True)
class Authentication:
    """AuthenticationOk/CleartextPassword/MD5Password/SASL/SASLContinue/SASLFinal (and others, raw)."""

    code: int
    data: bytes = b""  # md5 salt, SASL data; for SASL the mechanism list

    def encode(self) -> bytes:
        return _frame(b"R", _I32.pack(self.code) + self.data)

    @classmethod
    def ok(cls) -> Authentication:
        return cls(AuthCode.OK)

    @classmethod
    def sasl(cls, mechanisms: list[str]) -> Authentication:
        return cls(AuthCode.SASL, b"".join(_cstr(m) for m in mechanisms) + b"\0")

    def mechanisms(self) -> list[str]:
        r = _Reader(self.data, "AuthenticationSASL")
        out = []
        while True:
            m = r.cstr()
            if not m:
                break
            out.append(m)
        r.done()
        return out


@dataclass(frozen=True)
class ParameterStatus:
    name: str
    value: str

    def encode(self) -> bytes:
        return _frame(b"S", _cstr(self.name) + _cstr(self.value))


@dataclass(frozen=True)
class BackendKeyData:
    pid: int
    key: int

    def encode(self) -> bytes:
        return _frame(b"K", _II.pack(self.pid, self.key))


@dataclass(frozen=True)
class ReadyForQuery:
    status: str  # "I" idle, "T" in a transaction block, "E" in a failed transaction block

    def encode(self) -> bytes:
        return _frame(b"Z", self.status.encode())


@dataclass(frozen=True)
class Field:
    """One column of a RowDescription."""

    name: str
    table_oid: int
    column: int
    type_oid: int
    type_size: int
    type_mod: int
    format: int


@dataclass(frozen=True)
class RowDescription:
    fields: tuple[Field, ...]

    def encode(self) -> bytes:
        body = _I16.pack(len(self.fields))
        for f in self.fields:
            body += _cstr(f.name) + struct.pack(
                "!ihihih", f.table_oid, f.column, f.type_oid, f.type_size, f.type_mod, f.format
            )
        return _frame(b"T", body)


@dataclass(frozen=True)
class DataRow:
    values: tuple[bytes | None, ...]

    def encode(self) -> bytes:
        return encode_data_row(self.values)


@dataclass(frozen=True)
class CommandComplete:
    tag: str

    def encode(self) -> bytes:
        return _frame(b"C", _cstr(self.tag))

    def rows(self) -> int | None:
        """The row count in the tag (SELECT 3, INSERT 0 3, COPY 3, ...), if any."""
        last = self.tag.rpartition(" ")[2]
        return int(last) if last.isdigit() else None


@dataclass(frozen=True)
class ErrorResponse:
    fields: tuple[tuple[str, str], ...]

    def encode(self) -> bytes:
        return _frame(b"E", _notice_body(self.fields))

    def get(self, code: str, default: str = "") -> str:
        for k, v in self.fields:
            if k == code:
                return v
        return default

    @property
    def sqlstate(self) -> str:
        return self.get("C")

    @property
    def message(self) -> str:
        return self.get("M")

    @property
    def severity(self) -> str:
        return self.get("V") or self.get("S")

    @classmethod
    def make(cls, sqlstate: str, message: str, *, severity: str = "ERROR", hint: str = "") -> ErrorResponse:
        fields = [("S", severity), ("V", severity), ("C", sqlstate), ("M", message)]
        if hint:
            fields.append(("H", hint))
        return cls(tuple(fields))


@dataclass(frozen=True)
class NoticeResponse:
    fields: tuple[tuple[str, str], ...]

    def encode(self) -> bytes:
        return _frame(b"N", _notice_body(self.fields))


@dataclass(frozen=True)
class NotificationResponse:
    pid: int
    channel: str
    payload: str

    def encode(self) -> bytes:
        return _frame(b"A", _I32.pack(self.pid) + _cstr(self.channel) + _cstr(self.payload))


@dataclass(frozen=True)
class ParameterDescription:
    type_oids: tuple[int, ...]

    def encode(self) -> bytes:
        return _frame(b"t", _I16.pack(len(self.type_oids)) + b"".join(_I32.pack(t) for t in self.type_oids))


@dataclass(frozen=True)
class _Empty:
    TAG = b"?"

    def encode(self) -> bytes:
        return self.TAG + b"\0\0\0\4"


@dataclass(frozen=True)
class ParseComplete(_Empty):
    TAG = b"1"


@dataclass(frozen=True)
class BindComplete(_Empty):
    TAG = b"2"


@dataclass(frozen=True)
class CloseComplete(_Empty):
    TAG = b"3"


@dataclass(frozen=True)
class NoData(_Empty):
    TAG = b"n"


@dataclass(frozen=True)
class EmptyQueryResponse(_Empty):
    TAG = b"I"


@dataclass(frozen=True)
class PortalSuspended(_Empty):
    TAG = b"s"


@dataclass(frozen=True)
class CopyResponse:
    """CopyInResponse ('G'), CopyOutResponse ('H') or CopyBothResponse ('W')."""

    kind: str
    format: int
    column_formats: tuple[int, ...]

    def encode(self) -> bytes:
        body = bytes([self.format]) + _I16.pack(len(self.column_formats))
        body += b"".join(_I16.pack(f) for f in self.column_formats)
        return _frame(self.kind.encode(), body)


@dataclass(frozen=True)
class NegotiateProtocolVersion:
    minor: int
    options: tuple[str, ...]

    def encode(self) -> bytes:
        body = _I32.pack(self.minor) + _I32.pack(len(self.options)) + b"".join(_cstr(o) for o in self.options)
        return _frame(b"v", body)


@dataclass(frozen=True)
class FunctionCallResponse:
    data: bytes

    def encode(self) -> bytes:
        return _frame(b"V", self.data)


def _notice_body(fields: tuple[tuple[str, str], ...]) -> bytes:
    out = b""
    for k, v in fields:
        out += k.encode()[:1] + _cstr(v)
    return out + b"\0"


def encode_data_row(values: list[bytes | None] | tuple[bytes | None, ...]) -> bytes:
    parts = [_I16.pack(len(values))]
    for v in values:
        parts.append(b"\xff\xff\xff\xff" if v is None else _I32.pack(len(v)) + v)
    body = b"".join(parts)
    return b"D" + _I32.pack(len(body) + 4) + body


def decode_data_row(payload: bytes | memoryview) -> list[bytes | None]:
    """Values of one DataRow payload (after the 5-byte header)."""
    buf = bytes(payload)
    if len(buf) < 2:
        raise ProtocolError("DataRow: message too short")
    (n,) = _I16.unpack_from(buf, 0)
    if n < 0:
        raise ProtocolError("DataRow: negative count")
    pos = 2
    out: list[bytes | None] = []
    end = len(buf)
    for _ in range(n):
        if pos + 4 > end:
            raise ProtocolError("DataRow: message too short")
        (size,) = _I32.unpack_from(buf, pos)
        pos += 4
        if size == -1:
            out.append(None)
            continue
        if size < 0 or pos + size > end:
            raise ProtocolError("DataRow: bad value length")
        out.append(buf[pos : pos + size])
        pos += size
    if pos != end:
        raise ProtocolError("DataRow: trailing bytes")
    return out


# ---------------------------------------------------------------- decoding typed messages


def _fields(r: _Reader) -> tuple[tuple[str, str], ...]:
    out = []
    while True:
        code = r.byte()
        if code == b"\0":
            break
        out.append((code.decode("latin-1"), r.cstr()))
    r.done()
    return tuple(out)


def _formats(r: _Reader) -> tuple[int, ...]:
    return tuple(r.int16() for _ in range(r.count()))


def _d_query(r: _Reader) -> Query:
    q = Query(r.cstr())
    r.done()
    return q


def _d_parse(r: _Reader) -> Parse:
    name, sql = r.cstr(), r.cstr()
    types = tuple(r.int32() for _ in range(r.count()))
    r.done()
    return Parse(name, sql, types)


def _d_bind(r: _Reader) -> Bind:
    portal, stmt = r.cstr(), r.cstr()
    pformats = _formats(r)
    params: list[bytes | None] = []
    for _ in range(r.count()):
        n = r.int32()
        if n < -1:
            raise ProtocolError("Bind: bad parameter length")
        params.append(None if n == -1 else r.raw(n))
    if len(pformats) not in (0, 1, len(params)):
        raise ProtocolError("Bind: parameter format count does not match")
    rformats = _formats(r)
    r.done()
    return Bind(portal, stmt, tuple(params), pformats, rformats)


def read_bind(buf: bytes, pos: int, end: int) -> Bind:
    """A Bind read in place from buf[pos:end] (the hot path of prepared statements).

    Same checks as the general decoder, without its per-field calls.
    """
    unpack = _I16.unpack_from
    try:
        nul = buf.index(b"\0", pos, end)
        portal = buf[pos:nul].decode()
        pos = nul + 1
        nul = buf.index(b"\0", pos, end)
        stmt = buf[pos:nul].decode()
        pos = nul + 1
        if pos + 2 > end:
            raise ProtocolError("Bind: message too short")
        (nf,) = unpack(buf, pos)
        pos += 2
        if nf < 0 or pos + 2 * nf + 2 > end:
            raise ProtocolError("Bind: bad format count")
        pformats = struct.unpack_from(f"!{nf}h", buf, pos) if nf else ()
        pos += 2 * nf
        (np,) = unpack(buf, pos)
        pos += 2
        if np < 0 or len(pformats) not in (0, 1, np):
            raise ProtocolError("Bind: parameter format count does not match")
        params: list[bytes | None] = []
        for _ in range(np):
            if pos + 4 > end:
                raise ProtocolError("Bind: message too short")
            (n,) = _I32.unpack_from(buf, pos)
            pos += 4
            if n == -1:
                params.append(None)
                continue
            if n < 0 or pos + n > end:
                raise ProtocolError("Bind: bad parameter length")
            params.append(buf[pos : pos + n])
            pos += n
        if pos + 2 > end:
            raise ProtocolError("Bind: message too short")
        (nr,) = unpack(buf, pos)
        pos += 2
        if nr < 0 or pos + 2 * nr != end:
            raise ProtocolError("Bind: bad result format count or trailing bytes")
        rformats = struct.unpack_from(f"!{nr}h", buf, pos) if nr else ()
    except ValueError:  # no NUL, or a name that is not UTF-8
        raise ProtocolError("Bind: malformed name") from None
    return Bind(portal, stmt, tuple(params), tuple(pformats), tuple(rformats))


def _kind_name(r: _Reader, what: str) -> tuple[str, str]:
    kind = r.byte()
    if kind not in (b"S", b"P"):
        raise ProtocolError(f"{what}: kind must be S or P")
    name = r.cstr()
    r.done()
    return kind.decode(), name


def _d_describe(r: _Reader) -> Describe:
    return Describe(*_kind_name(r, "Describe"))


def _d_close(r: _Reader) -> Close:
    return Close(*_kind_name(r, "Close"))


def _d_execute(r: _Reader) -> Execute:
    portal = r.cstr()
    n = r.int32()
    r.done()
    return Execute(portal, n)


def _empty(cls):
    def decode(r: _Reader):
        r.done()
        return cls()

    return decode


def _d_copyfail(r: _Reader) -> CopyFail:
    m = CopyFail(r.cstr())
    r.done()
    return m


_FRONTEND_DECODERS = {
    b"Q": _d_query,
    b"P": _d_parse,
    b"B": _d_bind,
    b"D": _d_describe,
    b"E": _d_execute,
    b"C": _d_close,
    b"S": _empty(Sync),
    b"H": _empty(Flush),
    b"X": _empty(Terminate),
    b"d": lambda r: CopyData(r.rest()),
    b"c": _empty(CopyDone),
    b"f": _d_copyfail,
    b"F": lambda r: FunctionCall(r.rest()),
    b"p": lambda r: PasswordMessage(r.rest()),
}


def _d_auth(r: _Reader) -> Authentication:
    code = r.int32()
    data = r.rest()
    if code == AuthCode.MD5 and len(data) != 4:
        raise ProtocolError("AuthenticationMD5Password: salt must be 4 bytes")
    if code in (AuthCode.OK, AuthCode.CLEARTEXT) and data:
        raise ProtocolError("Authentication: trailing bytes")
    return Authentication(code, data)


def _d_param_status(r: _Reader) -> ParameterStatus:
    m = ParameterStatus(r.cstr(), r.cstr())
    r.done()
    return m


def _d_key(r: _Reader) -> BackendKeyData:
    m = BackendKeyData(r.int32(), r.int32())
    r.done()
    return m


def _d_ready(r: _Reader) -> ReadyForQuery:
    status = r.byte()
    r.done()
    if status not in (b"I", b"T", b"E"):
        raise ProtocolError("ReadyForQuery: bad transaction status")
    return ReadyForQuery(status.decode())


def _d_rowdesc(r: _Reader) -> RowDescription:
    fields = []
    for _ in range(r.count()):
        name = r.cstr()
        table, col, typ, size, mod, fmt = struct.unpack("!ihihih", r.raw(18))
        fields.append(Field(name, table & 0xFFFFFFFF, col, typ & 0xFFFFFFFF, size, mod, fmt))
    r.done()
    return RowDescription(tuple(fields))


def _d_command_complete(r: _Reader) -> CommandComplete:
    m = CommandComplete(r.cstr())
    r.done()
    return m


def _d_notification(r: _Reader) -> NotificationResponse:
    m = NotificationResponse(r.int32(), r.cstr(), r.cstr())
    r.done()
    return m


def _d_param_desc(r: _Reader) -> ParameterDescription:
    m = ParameterDescription(tuple(r.int32() & 0xFFFFFFFF for _ in range(r.count())))
    r.done()
    return m


def _copy_response(kind: str):
    def decode(r: _Reader) -> CopyResponse:
        fmt = r.byte()[0]
        cols = _formats(r)
        r.done()
        return CopyResponse(kind, fmt, cols)

    return decode


def _d_negotiate(r: _Reader) -> NegotiateProtocolVersion:
    minor = r.int32()
    n = r.int32()
    if n < 0 or n > 1000:
        raise ProtocolError("NegotiateProtocolVersion: bad option count")
    opts = tuple(r.cstr() for _ in range(n))
    r.done()
    return NegotiateProtocolVersion(minor, opts)


_BACKEND_DECODERS = {
    b"R": _d_auth,
    b"S": _d_param_status,
    b"K": _d_key,
    b"Z": _d_ready,
    b"T": _d_rowdesc,
    b"D": lambda r: DataRow(tuple(decode_data_row(r.rest()))),
    b"C": _d_command_complete,
    b"E": lambda r: ErrorResponse(_fields(r)),
    b"N": lambda r: NoticeResponse(_fields(r)),
    b"A": _d_notification,
    b"t": _d_param_desc,
    b"n": _empty(NoData),
    b"I": _empty(EmptyQueryResponse),
    b"s": _empty(PortalSuspended),
    b"1": _empty(ParseComplete),
    b"2": _empty(BindComplete),
    b"3": _empty(CloseComplete),
    b"G": _copy_response("G"),
    b"H": _copy_response("H"),
    b"W": _copy_response("W"),
    b"d": lambda r: CopyData(r.rest()),
    b"c": _empty(CopyDone),
    b"v": _d_negotiate,
    b"V": lambda r: FunctionCallResponse(r.rest()),
}

FRONTEND_TAGS = frozenset(_FRONTEND_DECODERS)
BACKEND_TAGS = frozenset(_BACKEND_DECODERS)


def decode_frontend(tag: bytes, payload: bytes | memoryview):
    """One typed frontend message from its tag and payload."""
    decoder = _FRONTEND_DECODERS.get(tag)
    if decoder is None:
        raise ProtocolError(f"unknown frontend message type {tag!r}")
    return decoder(_Reader(payload, (tag, True)))


def decode_backend(tag: bytes, payload: bytes | memoryview):
    """One typed backend message from its tag and payload."""
    decoder = _BACKEND_DECODERS.get(tag)
    if decoder is None:
        raise ProtocolError(f"unknown backend message type {tag!r}")
    return decoder(_Reader(payload, (tag, False)))


def _name(tag: bytes, *, frontend: bool) -> str:
    return f"message {tag.decode('latin-1')!r} from the {'client' if frontend else 'server'}"


# ---------------------------------------------------------------- framing (hot path)


def split_frames(
    buf: bytes | bytearray | memoryview, max_size: int
) -> tuple[list[tuple[int, int, int]], int]:
    """Cuts complete typed messages out of `buf` by their headers alone.

    Returns ([(tag byte, start, end), ...], consumed) where buf[start:end] is the
    whole message including its 5-byte header; bytes after `consumed` are an
    incomplete message to keep for later. Raises ProtocolError on a length that
    is impossible or above `max_size`.
    """
    out = []
    pos = 0
    n = len(buf)
    unpack = _I32.unpack_from
    while n - pos >= 5:
        (length,) = unpack(buf, pos + 1)
        if length < 4 or length > max_size:
            raise ProtocolError(f"message length {length} out of bounds (limit {max_size})")
        end = pos + 1 + length
        if end > n:
            break
        out.append((buf[pos], pos, end))
        pos = end
    return out, pos


# ---------------------------------------------------------------- state machines


class Phase(enum.Enum):
    STARTUP = "startup"  # untyped packets
    AUTH = "auth"  # authentication exchange
    READY = "ready"  # typed messages of a running session
    CLOSED = "closed"  # Terminate seen, or a cancel/encryption answer ended it


class _Parser:
    """Shared buffering: feed bytes, pull messages."""

    def __init__(self, max_message_size: int) -> None:
        self.max_message_size = max_message_size
        self._buf = bytearray()
        self.phase = Phase.STARTUP

    def feed(self, data: bytes) -> None:
        self._buf += data

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def take_buffer(self) -> bytes:
        """Hands over unparsed bytes (when the caller switches to bulk framing)."""
        data = bytes(self._buf)
        self._buf.clear()
        return data

    def _typed(self) -> tuple[bytes, bytes, bytes] | None:
        """(tag, payload, raw message) of the next complete typed message, if any."""
        buf = self._buf
        if len(buf) < 5:
            return None
        tag = bytes(buf[0:1])
        (length,) = _I32.unpack_from(buf, 1)
        if length < 4 or length > self.max_message_size:
            raise ProtocolError(f"message length {length} out of bounds (limit {self.max_message_size})")
        if len(buf) < 1 + length:
            return None
        raw = bytes(buf[: 1 + length])
        del buf[: 1 + length]
        return tag, raw[5:], raw

    def __iter__(self) -> Iterator:
        while True:
            msg = self.next_message()
            if msg is None:
                return
            yield msg

    def next_message(self):  # pragma: no cover - overridden
        raise NotImplementedError


class FrontendParser(_Parser):
    """Reads a client's bytes. `next_message()` returns a message or None (need more bytes).

    Start-up: SSLRequest/GSSENCRequest (any number, the server answers each),
    then StartupMessage (-> AUTH) or CancelRequest (-> CLOSED). In AUTH only 'p'
    messages; the server calls `authenticated()` to move to READY. Every message
    decoded in READY keeps its original bytes in `last_raw` so the gateway can
    forward them untouched.
    """

    def __init__(self, max_message_size: int = DEFAULT_MAX_MESSAGE) -> None:
        super().__init__(max_message_size)
        self.last_raw = b""

    def authenticated(self) -> None:
        if self.phase is not Phase.AUTH:
            raise ProtocolError(f"authentication completed in phase {self.phase.value}")
        self.phase = Phase.READY

    def next_message(self):
        if self.phase is Phase.CLOSED:
            if self._buf:
                raise ProtocolError("data after the connection's last message")
            return None
        if self.phase is Phase.STARTUP:
            return self._startup()
        got = self._typed()
        if got is None:
            return None
        tag, payload, raw = got
        if self.phase is Phase.AUTH and tag != b"p":
            raise ProtocolError(f"expected an authentication response, got message {tag!r}")
        if self.phase is Phase.READY and tag == b"p":
            raise ProtocolError("unexpected authentication response in a running session")
        msg = decode_frontend(tag, payload)
        self.last_raw = raw
        if tag == b"X":
            self.phase = Phase.CLOSED
        return msg

    def _startup(self):
        buf = self._buf
        if len(buf) < 4:
            return None
        (length,) = _I32.unpack_from(buf, 0)
        if length < 8 or length > MAX_STARTUP_PACKET:
            raise ProtocolError(f"invalid start-up packet length {length}")
        if len(buf) < length:
            return None
        raw = bytes(buf[:length])
        del buf[:length]
        (code,) = _I32.unpack_from(raw, 4)
        if code in (SSL_REQUEST_CODE, GSSENC_REQUEST_CODE):
            if length != 8:
                raise ProtocolError("encryption request with a body")
            if buf:
                # Bytes sent before the TLS handshake must never be read as if they came
                # through it (CVE-2021-23214).
                raise ProtocolError("unencrypted data after an encryption request")
            return SSLRequest() if code == SSL_REQUEST_CODE else GSSENCRequest()
        if code == CANCEL_REQUEST_CODE:
            if length != 16:
                raise ProtocolError("CancelRequest of the wrong length")
            self.phase = Phase.CLOSED
            pid, key = _II.unpack_from(raw, 8)
            return CancelRequest(pid, key)
        if code >> 16 != 3:
            raise ProtocolError(f"unsupported frontend protocol {code >> 16}.{code & 0xFFFF}")
        r = _Reader(raw[8:], "StartupMessage")
        params: dict[str, str] = {}
        while True:
            key = r.cstr()
            if not key:
                break
            params[key] = r.cstr()
        r.done()
        if "user" not in params:
            raise ProtocolError("no PostgreSQL user name specified in startup packet")
        self.phase = Phase.AUTH
        return StartupMessage(params, code)


class BackendParser(_Parser):
    """Reads a server's bytes (the gateway's upstream side).

    Before AuthenticationOk only Authentication, ErrorResponse, NoticeResponse
    and NegotiateProtocolVersion are valid; then ParameterStatus, BackendKeyData,
    NoticeResponse, ErrorResponse until the first ReadyForQuery (-> READY).
    """

    _AUTH_OK = frozenset(b"RENv")
    _STARTUP_OK = frozenset(b"SKZEN")

    def __init__(self, max_message_size: int = DEFAULT_MAX_MESSAGE) -> None:
        super().__init__(max_message_size)
        self.phase = Phase.AUTH

    def next_message(self):
        got = self._typed()
        if got is None:
            return None
        tag, payload, _raw = got
        if self.phase is Phase.AUTH and tag[0] not in self._AUTH_OK:
            raise ProtocolError(f"unexpected message {tag!r} during authentication")
        if self.phase is Phase.STARTUP and tag[0] not in self._STARTUP_OK:
            raise ProtocolError(f"unexpected message {tag!r} during start-up")
        msg = decode_backend(tag, payload)
        if isinstance(msg, Authentication) and msg.code == AuthCode.OK:
            self.phase = Phase.STARTUP
        elif isinstance(msg, Authentication) and self.phase is not Phase.AUTH:
            raise ProtocolError("authentication request after authentication")
        elif isinstance(msg, ReadyForQuery) and self.phase is Phase.STARTUP:
            self.phase = Phase.READY
        return msg
