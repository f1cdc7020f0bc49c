"""A message that arrives in many reads is cut once it is whole, not re-read on every read."""

from __future__ import annotations

import asyncio

from hoopctl.gateway import pgwire as pw
from hoopctl.gateway import session as session_module
from hoopctl.gateway.policy import Policy
from hoopctl.gateway.session import Session, SessionContext


class _Transport:
    def __init__(self) -> None:
        self.sent = bytearray()
        self.reading = True

    def write(self, data: bytes) -> None:
        self.sent += data

    def set_protocol(self, protocol: object) -> None:
        pass

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def close(self) -> None:
        pass


class _Credential:
    expires_at = 2e9
    max_statements = None


class _Recording:
    def statement(self, *args: object) -> int:
        return 0

    def result(self, *args: object) -> None:
        pass

    def close(self, *args: object) -> None:
        pass


def _session(policy: Policy, max_message_size: int = 16 << 20) -> Session:
    ctx = SessionContext(
        resource="db",
        credential=_Credential(),
        recording=_Recording(),
        policy=lambda: policy.session("reader"),
        masking=lambda: None,
        plan_masking=lambda raw: None,
        catalog=None,
        max_message_size=max_message_size,
    )
    return Session(ctx, None, _Transport(), _Transport(), lambda s: None)


def test_back_pressure_is_not_lifted_while_a_statement_is_held_or_the_client_is_full():
    async def run() -> None:
        s = _session(Policy.from_roles({"reader": ["read"]}))
        s.start(b"", b"")
        client_side, up_side = session_module._ClientSide(s), session_module._UpstreamSide(s)
        s.held = True
        s.client.pause_reading()
        up_side.pause_writing()
        up_side.resume_writing()  # the database drained its buffer during the hold
        assert not s.client.reading, "a held session must not read more of the client's input"
        client_side.pause_writing()  # the client reads slowly
        s.stalled = True
        s.up.pause_reading()
        s.stalled = False
        client_side.resume_writing()
        assert s.up.reading
        client_side.pause_writing()
        assert not s.up.reading

    asyncio.run(run())


def test_a_large_query_in_many_reads_is_cut_once(monkeypatch):
    calls = []
    real_split = pw.split_frames

    def counting_split(buf, limit):
        calls.append(len(buf))
        return real_split(buf, limit)

    monkeypatch.setattr(session_module.pw, "split_frames", counting_split)
    policy = Policy.from_roles({"reader": ["read"]})

    async def run() -> bytes:
        session = _session(policy)
        up = session.up
        message = pw.Query("SELECT '" + "x" * 1_000_000 + "'").encode()
        for i in range(0, len(message), 4096):  # 245 reads
            session.from_client(message[i : i + 4096])
        return bytes(up.sent)

    assert asyncio.run(run()) == pw.Query("SELECT '" + "x" * 1_000_000 + "'").encode()
    assert len(calls) == 2  # the first read (header seen, message incomplete) and the last
