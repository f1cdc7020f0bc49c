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

    def write(self, data: bytes) -> None:
        self.sent += data

    def set_protocol(self, protocol: object) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

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


def test_a_large_query_in_many_reads_is_cut_once(monkeypatch):
    calls = []
    real_split = pw.split_frames

    def counting_split(buf, limit):
        calls.append(len(buf))
        return real_split(buf, limit)

    monkeypatch.setattr(session_module.pw, "split_frames", counting_split)
    policy = Policy.from_roles({"reader": ["read"]})

    async def run() -> bytes:
        ctx = SessionContext(
            resource="db",
            credential=_Credential(),
            recording=_Recording(),
            policy=lambda: policy.session("reader"),
            masking=lambda: None,
            plan_masking=lambda raw: None,
            catalog=None,
            max_message_size=16 << 20,
        )
        up = _Transport()
        session = Session(ctx, None, _Transport(), up, lambda s: None)
        message = pw.Query("SELECT '" + "x" * 1_000_000 + "'").encode()
        for i in range(0, len(message), 4096):  # 245 reads
            session.from_client(message[i : i + 4096])
        return bytes(up.sent)

    assert asyncio.run(run()) == pw.Query("SELECT '" + "x" * 1_000_000 + "'").encode()
    assert len(calls) == 2  # the first read (header seen, message incomplete) and the last
