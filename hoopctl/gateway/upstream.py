"""The gateway's side toward a database: log in with the gateway's own credentials.

`open_upstream()` connects, negotiates TLS per the resource's sslmode, sends the
StartupMessage and answers SCRAM-SHA-256 (scramp), md5 or cleartext; trust needs
nothing. It returns once the server sent its first ReadyForQuery, with the
ParameterStatus values and BackendKeyData collected. The caller never sees the
resource's password, and the password never appears in any error.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass, field

import scramp

from hoopctl.gateway import pgwire as pw
from hoopctl.gateway.config import Resource
from hoopctl.gateway.tls import upstream_context

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0


class UpstreamError(Exception):
    """The database could not be reached or refused the gateway's login."""

    def __init__(self, message: str, sqlstate: str = "08001") -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


@dataclass
class Upstream:
    """A logged-in connection, ready for queries."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    parameters: list[pw.ParameterStatus] = field(default_factory=list)
    notices: list[bytes] = field(default_factory=list)
    key: pw.BackendKeyData | None = None
    status: str = "I"
    leftover: bytes = b""
    encrypted: bool = False


async def _connect(resource: Resource) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bool]:
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(resource.host, resource.port), CONNECT_TIMEOUT_S
        )
    except (TimeoutError, OSError) as exc:
        raise UpstreamError(f"cannot reach resource {resource.name!r}: {exc}") from None
    encrypted = False
    if resource.sslmode != "disable":
        writer.write(pw.SSLRequest().encode())
        answer = await reader.readexactly(1)
        if answer == b"S":
            await writer.start_tls(upstream_context())
            encrypted = True
        elif answer != b"N":
            writer.close()
            raise UpstreamError(f"resource {resource.name!r} answered the TLS request with {answer!r}")
        elif resource.sslmode == "require":
            writer.close()
            raise UpstreamError(f"resource {resource.name!r} does not offer TLS (sslmode require)")
    return reader, writer, encrypted


async def open_upstream(
    resource: Resource, params: dict[str, str], max_message_size: int = pw.DEFAULT_MAX_MESSAGE
) -> Upstream:
    """Connects and logs in as the resource's configured user; raises UpstreamError."""
    reader, writer, encrypted = await _connect(resource)
    try:
        return await asyncio.wait_for(
            _login(reader, writer, encrypted, resource, params, max_message_size), CONNECT_TIMEOUT_S
        )
    except TimeoutError:
        writer.close()
        raise UpstreamError(f"resource {resource.name!r}: login timed out") from None
    except (
        UpstreamError,
        pw.ProtocolError,
        OSError,
        asyncio.IncompleteReadError,
        scramp.ScramException,
    ) as exc:
        writer.close()
        if isinstance(exc, UpstreamError):
            raise
        raise UpstreamError(f"resource {resource.name!r}: login failed: {type(exc).__name__}") from None


async def _login(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    encrypted: bool,
    resource: Resource,
    params: dict[str, str],
    max_message_size: int,
) -> Upstream:
    startup = {**params, "user": resource.user, "database": resource.dbname}
    writer.write(pw.StartupMessage(startup).encode())
    parser = pw.BackendParser(max_message_size)
    up = Upstream(reader, writer, encrypted=encrypted)
    password = resource.password or ""
    scram: scramp.ScramClient | None = None
    while True:
        data = await reader.read(65536)
        if not data:
            raise UpstreamError(f"resource {resource.name!r} closed the connection during login")
        parser.feed(data)
        for msg in parser:
            if isinstance(msg, pw.Authentication):
                scram = _answer_auth(msg, writer, resource, password, scram)
            elif isinstance(msg, pw.ErrorResponse):
                raise UpstreamError(
                    f"resource {resource.name!r} refused the gateway: {msg.message}", msg.sqlstate
                )
            elif isinstance(msg, pw.ParameterStatus):
                up.parameters.append(msg)
            elif isinstance(msg, pw.BackendKeyData):
                up.key = msg
            elif isinstance(msg, pw.NoticeResponse):
                up.notices.append(msg.encode())
            elif isinstance(msg, pw.ReadyForQuery):
                up.status = msg.status
                up.leftover = parser.take_buffer()
                return up
            elif isinstance(msg, pw.NegotiateProtocolVersion):
                continue


def _answer_auth(
    msg: pw.Authentication,
    writer: asyncio.StreamWriter,
    resource: Resource,
    password: str,
    scram: scramp.ScramClient | None,
) -> scramp.ScramClient | None:
    code = msg.code
    if code == pw.AuthCode.OK:
        return scram
    if code == pw.AuthCode.CLEARTEXT:
        writer.write(pw.PasswordMessage.for_password(password).encode())
    elif code == pw.AuthCode.MD5:
        inner = hashlib.md5((password + resource.user).encode(), usedforsecurity=False).hexdigest()
        outer = hashlib.md5(inner.encode() + msg.data, usedforsecurity=False).hexdigest()
        writer.write(pw.PasswordMessage.for_password("md5" + outer).encode())
    elif code == pw.AuthCode.SASL:
        mechs = msg.mechanisms()
        if "SCRAM-SHA-256" not in mechs:
            raise UpstreamError(f"resource {resource.name!r} offers no supported SASL mechanism: {mechs}")
        scram = scramp.ScramClient(["SCRAM-SHA-256"], resource.user, password)
        first = scram.get_client_first().encode()
        writer.write(pw.PasswordMessage.for_sasl_initial("SCRAM-SHA-256", first).encode())
    elif code == pw.AuthCode.SASL_CONTINUE and scram is not None:
        scram.set_server_first(msg.data.decode())
        writer.write(pw.PasswordMessage(scram.get_client_final().encode()).encode())
    elif code == pw.AuthCode.SASL_FINAL and scram is not None:
        # Proves the server knew the password too: an impostor upstream is refused.
        scram.set_server_final(msg.data.decode())
    else:
        raise UpstreamError(f"resource {resource.name!r} asks for unsupported authentication (code {code})")
    return scram


async def send_cancel(resource: Resource, pid: int, key: int) -> None:
    """Forwards a cancel to the database (plaintext, as libpq does; the key is the secret)."""
    try:
        _reader, writer = await asyncio.wait_for(
            asyncio.open_connection(resource.host, resource.port), CONNECT_TIMEOUT_S
        )
    except (TimeoutError, OSError) as exc:
        log.warning("cancel for resource %s not delivered: %s", resource.name, exc)
        return
    writer.write(pw.CancelRequest(pid, key).encode())
    try:
        await writer.drain()
        await asyncio.wait_for(_reader.read(1), CONNECT_TIMEOUT_S)
    except (TimeoutError, OSError):
        pass
    finally:
        writer.close()
