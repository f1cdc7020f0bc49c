"""The least an inspecting proxy must do, as columns for benchmarks/gateway.py (--floor).

  framing   cuts both directions into protocol messages, as any Layer-7 proxy must to know
            where a statement starts and ends, and forwards them; nothing else
  recorded  framing, plus what the issue asks of every statement whatever the policy: a
            hash-chained record of each Query or Execute (its text and Bind parameters)
            written with write(2) before it is forwarded, and of its result after it. No
            policy, no masking, no fsync: the cheapest honest recording

Both pass the startup and authentication through untouched, as the relay does. They use the
gateway's own frame cutter and record sealing, so they show the floor under the gateway's
cost on this machine, not a different design's.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from hoopctl.audit.chain import encode_str, seal
from hoopctl.gateway import pgwire as pw
from hoopctl.gateway.pipeline import params_for_record

_Q, _E, _P, _B, _C = (ord(c) for c in "QEPBC")
_MAX = 1 << 30
_SSL_REQUEST, _GSSENC_REQUEST = (80877103).to_bytes(4, "big"), (80877104).to_bytes(4, "big")


class _Recorder:
    """One session's chain: statements written before they go on, results with the next write."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self.prev = "0" * 64
        self.seq = 0
        self.t0 = time.monotonic()
        self.held = b""
        self.last = 0

    def _seal(self, fields: str) -> bytes:
        body = (
            f'{{"seq":{self.seq},"ts":{time.time():.6f},"t":{time.monotonic() - self.t0:.6f},'
            f'"prev":"{self.prev}",{fields}}}'
        ).encode()
        line, self.prev = seal(body)
        self.seq += 1
        return line

    def statement(self, text: str, params: list[str | None] | None) -> None:
        p = (
            "null"
            if params is None
            else "[" + ",".join("null" if v is None else encode_str(v) for v in params) + "]"
        )
        self.last = self.seq
        line = self._seal(f'"kind":"stmt","text":{encode_str(text)},"params":{p},"allowed":true')
        os.write(self.fd, self.held + line)
        self.held = b""

    def result(self, tag: bytes) -> None:
        rows = tag.rpartition(b" ")[2]
        self.held += self._seal(
            f'"kind":"result","stmt":{self.last},"rows":{int(rows) if rows.isdigit() else 0}'
        )


class _Side(asyncio.Protocol):
    def __init__(self, conn: _Conn, from_client: bool) -> None:
        self.conn, self.from_client = conn, from_client
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.started = not from_client  # the client's startup packet has no type byte
        self.raw = 0  # bytes to pass untyped: the database's one-byte answer to SSLRequest

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        out = b""
        if self.raw and buf:
            out, buf, self.raw = buf[:1], buf[1:], 0
        while not self.started:
            if len(buf) < 4 or len(buf) < int.from_bytes(buf[:4], "big"):
                self.buf = buf
                self.conn.forward(self.from_client, out)
                return
            n = int.from_bytes(buf[:4], "big")
            packet, buf = buf[:n], buf[n:]
            out += packet
            if n == 8 and packet[4:] in (_SSL_REQUEST, _GSSENC_REQUEST):
                self.conn.up.raw = 1  # answered by one byte; the real startup packet follows
            else:
                self.started = True
        frames, used = pw.split_frames(buf, _MAX)
        rec = self.conn.recorder
        if rec is not None:
            for tag, start, end in frames:
                if self.from_client:
                    self.conn.client_message(tag, buf, start, end)
                elif tag == _C:
                    rec.result(buf[start + 5 : end - 1])
        self.buf = buf[used:]
        self.conn.forward(self.from_client, out + buf[:used] if out else buf[:used])

    def connection_lost(self, exc: Exception | None) -> None:
        self.conn.close()


class _Conn:
    def __init__(self, recorder: _Recorder | None) -> None:
        self.recorder = recorder
        self.client = _Side(self, True)
        self.up = _Side(self, False)
        self.early: list[bytes] = []
        self.statements: dict[str, str] = {}
        self.portals: dict[str, tuple[str, list[str | None]]] = {}

    def client_message(self, tag: int, buf: bytes, start: int, end: int) -> None:
        rec = self.recorder
        if tag == _Q:
            rec.statement(buf[start + 5 : end - 1].decode(), None)
        elif tag == _P:
            msg = pw.decode_frontend(b"P", buf[start + 5 : end])
            self.statements[msg.name] = msg.sql
        elif tag == _B:
            bind = pw.read_bind(buf, start + 5, end)
            params = params_for_record(bind, None, "")  # the gateway's own: binary ones as \x hex
            self.portals[bind.portal] = (self.statements.get(bind.statement, ""), params)
        elif tag == _E:
            nul = buf.index(b"\0", start + 5)
            text, params = self.portals.get(buf[start + 5 : nul].decode(), ("", None))
            rec.statement(text, params)

    def forward(self, from_client: bool, data: bytes) -> None:
        if not data:
            return
        if not from_client:
            self.client.transport.write(data)
        elif self.up.transport is None or self.early:
            self.early.append(data)
        else:
            self.up.transport.write(data)

    def close(self) -> None:
        for side in (self.client, self.up):
            if side.transport is not None:
                side.transport.close()
        if self.recorder is not None and self.recorder.fd >= 0:
            os.close(self.recorder.fd)
            self.recorder.fd = -1


def run(listen_port: int, target_port: int, record_dir: Path | None) -> None:
    """Serve until killed (a benchmark child process)."""
    import uvloop

    async def main() -> None:
        loop = asyncio.get_running_loop()
        count = 0

        def client_factory() -> _Side:
            nonlocal count
            count += 1
            conn = _Conn(_Recorder(record_dir / f"{os.getpid()}-{count}.jsonl") if record_dir else None)

            async def connect() -> None:
                up_tr, _ = await loop.create_connection(lambda: conn.up, "127.0.0.1", target_port)
                for chunk in conn.early:
                    up_tr.write(chunk)
                conn.early.clear()

            loop.create_task(connect())
            return conn.client

        server = await loop.create_server(client_factory, "127.0.0.1", listen_port)
        await server.serve_forever()

    uvloop.install()
    asyncio.run(main())
