"""Fixtures for the recording tests: a recordings directory with known sessions."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from hoopctl.audit.recorder import Recorder


@dataclass(frozen=True)
class Written:
    dir: Path
    sids: list[str]

    def session_path(self, i: int = 0) -> Path:
        return self.dir / "sessions" / f"{self.sids[i]}.jsonl"

    @property
    def ledger(self) -> Path:
        return self.dir / "ledger.jsonl"


def write_session(recorder: Recorder, identity: str = "alice", statements: int = 4) -> str:
    """One closed session: statements alternately allowed and refused, each with a result."""
    rec = recorder.open_session(
        identity, ("job:ci-42", f"helper:{identity}"), "127.0.0.1:40000", "appdb", "read", token="tok-1"
    )
    for i in range(statements):
        allowed = i % 2 == 0
        h = rec.statement(
            f"SELECT {i} FROM accounts" if allowed else f"DELETE FROM accounts WHERE id = {i}",
            [str(i)] if allowed else None,
            allowed,
            "read" if allowed else "write-not-granted",
            "extended" if allowed else "simple",
        )
        rec.result(h, 0.25 * i, i if allowed else None, None if allowed else "refused: 42501", i % 3)
    rec.event("access-request", request="req-1", reason="migration")
    rec.close()
    return rec.sid


@pytest.fixture
def written(tmp_path: Path) -> Written:
    """Three closed sessions by three identities."""
    d = tmp_path / "recs"
    sids = []
    with Recorder(d) as recorder:
        for name in ("alice", "bob", "carol"):
            sids.append(write_session(recorder, name))
            time.sleep(0.002)  # ids sort by millisecond only: keep creation order visible
    return Written(d, sids)


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)
