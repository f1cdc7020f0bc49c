"""The benchmark's ablation stand-ins (`benchmarks/gateway.py --ablate`) still fit the session:
a policy that allows everything and a recorder that writes nothing must let every message
through unchanged, or the ablation silently measures refusals."""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path

from hoopctl.gateway import pgwire as pw
from hoopctl.gateway.session import Session, SessionContext
from tests.gateway.test_session_buffering import _Credential, _Transport

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "gateway.py"


def _bench_module():
    spec = importlib.util.spec_from_file_location("bench_gateway", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_allow_all_policy_and_no_recording_pass_every_message_unchanged():
    bench = _bench_module()
    client_bytes = b"".join(
        [
            pw.Query("SELECT 1").encode(),
            pw.Parse("P_0", "SELECT abalance FROM pgbench_accounts WHERE aid = $1").encode(),
            pw.Bind("", "P_0", (b"7",)).encode(),
            pw.Describe("P", "").encode(),
            pw.Execute("").encode(),
            pw.Sync().encode(),
        ]
    )

    async def run() -> bytes:
        ctx = SessionContext(
            resource="bench",
            credential=_Credential(),
            recording=bench._NoRecording(),
            policy=lambda: bench._AllowAll(),
            masking=lambda: None,
            plan_masking=lambda raw: None,
            catalog=None,
            max_message_size=1 << 20,
        )
        session = Session(ctx, None, _Transport(), _Transport(), lambda s: None)
        session.start(b"", b"")
        session.from_client(client_bytes)
        return bytes(session.up.sent)

    assert asyncio.run(run()) == client_bytes
