"""Masking, recording, reload and drain, end to end through a real PostgreSQL."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import time

import psycopg
import pytest

from tests.gateway.conftest import DBNAME


def _records(directory) -> list[dict]:
    out = []
    for path in sorted(directory.rglob("*.jsonl")):
        for line in path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


def test_masking_by_column_name_and_by_table_field_in_both_protocols(masking_gateway):
    gw = masking_gateway
    with psycopg.connect(gw.dsn(gw.token())) as conn:
        row = conn.execute("SELECT id, email, owner, balance FROM accounts WHERE id = %s", (1,)).fetchone()
        assert row[0] == 1 and row[3] == 100
        assert row[1] != "user1@example.com" and row[1].endswith("@example.com")
        assert row[2] != "owner1" and "owner1" not in row[2]
        # An alias does not escape the table-field rule (the catalog names the column's table).
        assert conn.execute("SELECT owner AS o FROM accounts WHERE id = 2").fetchone()[0] != "owner2"
        # Binary format: a covered column cannot be rewritten in place; it is nulled.
        cur = conn.cursor(binary=True)
        assert cur.execute("SELECT email FROM accounts WHERE id = 3").fetchone() == (None,)
    token = gw.token()
    body, _, sig = token.rpartition(".")
    out = subprocess.run(
        [
            gw.pg.bin("psql"),
            "-X",
            "-At",
            "-h",
            "127.0.0.1",
            "-p",
            str(gw.port),
            "-U",
            body,
            "-d",
            DBNAME,
            "-c",
            "SELECT email FROM accounts WHERE id = 4",
        ],
        env={**os.environ, "PGPASSWORD": sig},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    assert "user4@example.com" not in out.stdout and out.stdout.strip().endswith("@example.com")
    # The database itself is untouched.
    assert gw.pg.psql("SELECT email FROM accounts WHERE id = 4", DBNAME) == "user4@example.com"


def test_statements_recorded_with_verdicts_and_masked_counts(masking_gateway):
    gw = masking_gateway
    with psycopg.connect(gw.dsn(gw.token(identity="rec-check")), autocommit=True) as conn:
        conn.execute("SELECT email FROM accounts WHERE id <= %s", (5,)).fetchall()
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM accounts WHERE id = 5")
    time.sleep(0.2)
    records = _records(gw.config.recordings_dir)
    stmts = [r for r in records if r.get("kind") == "stmt"]
    allowed = [r for r in stmts if r["text"].startswith("SELECT email") and r["allowed"]]
    refused = [r for r in stmts if r["text"].startswith("DELETE") and not r["allowed"]]
    assert allowed and allowed[-1]["params"] == ["\\x0005"]  # psycopg sends an int2, binary
    assert refused
    results = [r for r in records if r.get("kind") == "result"]
    assert any(r.get("rows") == 5 and r.get("masked") == 5 for r in results), results[-3:]


def test_reload_applies_to_the_next_statement_without_dropping_the_connection(fresh_gateway):
    from hoopctl.gateway.policy import Policy

    gw = fresh_gateway
    with psycopg.connect(gw.dsn(gw.token()), autocommit=True) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        strict = dataclasses.replace(gw.config, policy=Policy.from_roles({"reader": [], "writer": ["read"]}))
        gw.loop.call_soon_threadsafe(gw.gateway.reload, strict)
        time.sleep(0.2)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT count(*) FROM accounts")
        gw.loop.call_soon_threadsafe(gw.gateway.reload, gw.config)
        time.sleep(0.2)
        assert conn.execute("SELECT count(*) FROM accounts").fetchone() == (50,)


def test_names_prepared_before_a_reload_run_on_as_the_new_grants_allow(fresh_gateway):
    from hoopctl.gateway.policy import Policy

    gw = fresh_gateway
    with psycopg.connect(gw.dsn(gw.token()), autocommit=True) as conn:
        conn.execute("PREPARE counted AS SELECT count(*) FROM accounts")
        query = "SELECT count(*) FROM accounts WHERE id > %s"
        assert conn.execute(query, (0,), prepare=True).fetchone() == (50,)  # a protocol-level name
        gw.loop.call_soon_threadsafe(gw.gateway.reload, dataclasses.replace(gw.config))
        time.sleep(0.2)
        assert conn.execute("EXECUTE counted").fetchone() == (50,)
        assert conn.execute(query, (0,), prepare=True).fetchone() == (50,)
        strict = dataclasses.replace(gw.config, policy=Policy.from_roles({"reader": [], "writer": ["read"]}))
        gw.loop.call_soon_threadsafe(gw.gateway.reload, strict)
        time.sleep(0.2)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("EXECUTE counted")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(query, (0,), prepare=True)
        gw.loop.call_soon_threadsafe(gw.gateway.reload, gw.config)
        time.sleep(0.2)
        assert conn.execute("EXECUTE counted").fetchone() == (50,)


def test_drain_stops_accepting_and_ends_sessions_after_the_timeout(fresh_gateway):
    gw = fresh_gateway
    conn = psycopg.connect(gw.dsn(gw.token()), autocommit=True)
    try:
        done = gw.loop.call_soon_threadsafe
        import asyncio

        fut = asyncio.run_coroutine_threadsafe(gw.gateway.drain(1.0), gw.loop)
        time.sleep(0.3)
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(gw.dsn(gw.token()), connect_timeout=3)
        assert conn.execute("SELECT 7").fetchone() == (7,)  # still served while draining
        fut.result(10)
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 8")
        del done
    finally:
        conn.close()


def test_binary_covered_column_refused_when_configured(base_config, gw_db, tmp_path):
    from hoopctl.access.tokens import TokenAuthority, load_key
    from hoopctl.gateway.masking import MaskingRules
    from tests.gateway.conftest import _run_gateway, _stop

    rules = MaskingRules.from_config(
        {"binary": "refuse", "rules": [{"column": ["*email*"], "style": "partial"}]}
    )
    config = dataclasses.replace(base_config, masking=rules, recordings_dir=tmp_path / "rec")
    gw = _run_gateway(config, TokenAuthority(load_key(base_config.token_key_file)), gw_db)
    try:
        with psycopg.connect(gw.dsn(gw.token()), autocommit=True) as conn:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.cursor(binary=True).execute("SELECT email FROM accounts WHERE id = 1").fetchall()
            # Text format is masked, not refused; the session goes on.
            assert (
                conn.execute("SELECT email FROM accounts WHERE id = 1").fetchone()[0] != "user1@example.com"
            )
    finally:
        _stop(gw)


def test_expired_credential_refuses_the_next_statement(gateway):
    with psycopg.connect(gateway.dsn(gateway.token(ttl=2)), autocommit=True) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        time.sleep(2.2)
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="expired"):
            conn.execute("SELECT 1")


def test_recordings_ledger_is_sealed_with_the_configured_key(base_config, gw_db, tmp_path):
    from hoopctl.access.tokens import TokenAuthority, load_key
    from hoopctl.audit.reader import Recordings
    from tests.gateway.conftest import _run_gateway, _stop

    key = b"a ledger key of 32 bytes, maybe."
    config = dataclasses.replace(base_config, recordings_key=key, recordings_dir=tmp_path / "rec")
    handle = _run_gateway(config, TokenAuthority(load_key(base_config.token_key_file)), gw_db)
    try:
        with psycopg.connect(handle.dsn(handle.token()), autocommit=True) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        _stop(handle)
    assert Recordings(tmp_path / "rec", key=key).verify().ok
    assert not Recordings(tmp_path / "rec", key=b"another key, 16+ bytes long").verify().ok


def test_a_large_statement_arriving_in_many_reads_is_gathered_once(base_config, gw_db, tmp_path):
    from hoopctl.access.tokens import TokenAuthority, load_key
    from tests.gateway.conftest import _run_gateway, _stop

    config = dataclasses.replace(base_config, max_message_size=16 << 20, recordings_dir=tmp_path / "rec")
    handle = _run_gateway(config, TokenAuthority(load_key(base_config.token_key_file)), gw_db)
    big = "x" * 8_000_000  # about 120 reads of 64 KiB on loopback
    try:
        with psycopg.connect(handle.dsn(handle.token()), autocommit=True) as conn:
            started = time.monotonic()
            assert conn.execute("SELECT length(%s)", (big,)).fetchone() == (len(big),)
            assert conn.execute(f"SELECT length('{big}')").fetchone() == (len(big),)  # simple protocol
            assert time.monotonic() - started < 10
    finally:
        _stop(handle)
