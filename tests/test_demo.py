"""`make demo` end to end: `python -m hoopctl.demo` as a subprocess tells the whole story and cleans up."""

from __future__ import annotations

import os
import pwd
import re
import subprocess
import sys

import pytest

from hoopctl.localpg import PostgresUnavailable, find_bindir

pytestmark = pytest.mark.root


def _postgres_missing() -> str | None:
    try:
        find_bindir()
    except PostgresUnavailable as exc:
        return str(exc)
    return None


@pytest.mark.skipif(os.geteuid() != 0, reason="the demo's acts 2-4 need root (postgres user, agent, useradd)")
@pytest.mark.skipif(_postgres_missing() is not None, reason="no PostgreSQL binaries (scripts/system-deps.sh)")
def test_demo_tells_the_whole_story_and_cleans_up():
    users_before = {p.pw_name for p in pwd.getpwall()}
    out = subprocess.run(
        [sys.executable, "-m", "hoopctl.demo"],
        capture_output=True,
        text=True,
        timeout=240,
        env=dict(os.environ, NO_COLOR="1"),
    )
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-4000:]
    assert "CHECK FAILED" not in text
    for line in (
        "== Act 1",
        "== Act 2",
        "== Act 3",
        "== Act 4",
        "CHECK ok: no email or card number left the gateway in clear",
        "CHECK ok: the helper's DROP TABLE is refused (SQLSTATE 42501)",
        "CHECK ok: the customers table still exists",
        "CHECK ok: the helper's INSERT went through",
        "CHECK ok: verify: intact (exit 0)",
        "CHECK ok: verify fails (exit 1)",
        "CHECK ok: with the tunnel, the database password alone gets in: no gateway, no record",
        "CHECK ok: the tunnel was adopted by the gateway",
        "CHECK ok: the ssh tunnel process is gone",
        "CHECK ok: the file was quarantined",
        "demo complete",
    ):
        assert line in text, f"missing {line!r}"
    assert re.search(r"CHECK ok: the leftover \(pid \d+\) is gone", text)
    # Tokens are only ever shown shortened; the planted deploy token and passwords never in full.
    assert not re.search(r"hoop1\.[A-Za-z0-9_\-]{17,}", text)
    assert not re.search(r"glpat-[A-Za-z0-9]{20}", text)
    # Everything it started is gone: its users, its temp dir.
    added = {p.pw_name for p in pwd.getpwall()} - users_before
    assert not [u for u in added if u.startswith("hoopdemo")]
    workdirs = re.findall(r"/tmp/hoopctl-demo-\w+", text)
    assert all(not os.path.exists(d) for d in workdirs)
