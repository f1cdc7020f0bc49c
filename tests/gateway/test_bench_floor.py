"""The benchmark's floor proxies (`benchmarks/gateway.py --floor`) must be real proxies: psql and
psycopg work through them unchanged, and `recorded` writes a sound chain naming each statement
and its parameters before it runs. Otherwise the floor they print would be a floor of nothing."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from hoopctl.audit.chain import parse_line
from hoopctl.localpg import free_port
from hoopctl.testing.sshd import wait_for_port
from tests.gateway.conftest import DBNAME

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import proxy_floor  # noqa: E402


@pytest.fixture
def floor(gw_db, tmp_path):
    port = free_port()
    proc = multiprocessing.get_context("fork").Process(
        target=proxy_floor.run, args=(port, gw_db.port, tmp_path), daemon=True
    )
    proc.start()
    try:
        wait_for_port(port)
        yield port, tmp_path
    finally:
        proc.terminate()
        proc.join(10)


def test_clients_work_through_the_recorded_floor_and_its_chain_holds(floor, gw_db):
    port, records = floor
    env = {**os.environ, "PGPASSWORD": gw_db.password}  # sslmode=prefer: an SSLRequest first
    argv = [gw_db.bin("psql"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-d", DBNAME, "-AtXc"]
    out = subprocess.run([*argv, "SELECT count(*) FROM accounts"], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "50", out.stderr
    dsn = f"host=127.0.0.1 port={port} dbname={DBNAME} user=postgres password={gw_db.password}"
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT email FROM accounts WHERE id = %s", (7,)).fetchone() == (
            "user7@example.com",
        )

    # One file per connection; the readiness probe's is empty.
    chains = [lines for f in sorted(records.glob("*.jsonl")) if (lines := f.read_bytes().splitlines())]
    assert len(chains) == 2
    recorded = []
    for lines in chains:
        prev = "0" * 64
        for line in lines:
            parsed = parse_line(line)
            assert parsed.record["prev"] == prev
            prev = parsed.hash
            if parsed.record["kind"] == "stmt":
                recorded.append((parsed.record["text"], parsed.record["params"]))
    assert ("SELECT count(*) FROM accounts", None) in recorded
    assert ("SELECT email FROM accounts WHERE id = $1", ["\\x0007"]) in recorded  # psycopg: a binary int2
