"""Masking seen by real clients through the real gateway: psql (simple protocol) and psycopg
(extended protocol, text and binary), against the suite's PostgreSQL."""

from __future__ import annotations

import os
import subprocess
from dataclasses import replace

import psycopg
import pytest

from hoopctl.access.tokens import TokenAuthority, load_key
from hoopctl.audit.reader import Recordings
from hoopctl.gateway.masking import MaskingRules
from tests.gateway.conftest import DBNAME, _run_gateway, _stop

TABLE = "masking_e2e"
MASKING = {
    "rules": [
        {"column": "*email*", "style": "partial"},
        {"field": f"{DBNAME}.{TABLE}.card", "style": "partial"},
        {"content": ["email", "card", "iban"], "style": "full"},
    ]
}


@pytest.fixture(scope="module")
def masked_gateway(base_config, gw_db):
    gw_db.psql(
        f"DROP TABLE IF EXISTS {TABLE};"
        f"CREATE TABLE {TABLE} (id int, email text, card text, note text, n bigint);"
        f"INSERT INTO {TABLE} VALUES (1, 'ann@example.com', '4111 1111 1111 1111',"
        " 'refund to GB82 WEST 1234 5698 7654 32', 4111111111111111);",
        DBNAME,
    )
    config = replace(base_config, masking=MaskingRules.from_config(MASKING, binary="null"))
    handle = _run_gateway(config, TokenAuthority(load_key(base_config.token_key_file)), gw_db)
    try:
        yield handle
    finally:
        _stop(handle)
        gw_db.psql(f"DROP TABLE IF EXISTS {TABLE}", DBNAME)


def psql(handle, sql: str) -> str:
    body, _, sig = handle.token("reader").rpartition(".")
    env = {**os.environ, "PGPASSWORD": sig}
    argv = [handle.pg.bin("psql"), "-h", "127.0.0.1", "-p", str(handle.port), "-U", body, "-d", DBNAME]
    out = subprocess.run([*argv, "-AtX", "-c", sql], env=env, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_psql_sees_masked_columns_and_content(masked_gateway):
    out = psql(masked_gateway, f"SELECT id, email, card, note, n FROM {TABLE}")
    assert out == "1|a***@example.com|************1111|refund to ****|4111111111111111"


def test_psql_alias_and_expression_are_still_masked(masked_gateway):
    # Under an alias the gateway still knows the source column (table oid and attnum from the
    # catalog), so the field rule keeps its partial style; an expression has no source column,
    # so the content rule catches it.
    assert psql(masked_gateway, f"SELECT card AS x, email || '' AS y FROM {TABLE}") == "************1111|****"


def test_an_alias_does_not_escape_a_column_name_rule(masked_gateway):
    # `*email*` names the column; the label the query gives it does not matter.
    assert psql(masked_gateway, f"SELECT email AS contact FROM {TABLE}") == "a***@example.com"


def test_extended_protocol_text_and_binary(masked_gateway):
    with psycopg.connect(masked_gateway.dsn(masked_gateway.token("reader"))) as conn:
        row = conn.execute(f"SELECT id, email, card, note FROM {TABLE} WHERE id = %s", (1,)).fetchone()
        assert row == (1, "a***@example.com", "************1111", "refund to ****")
        cur = conn.cursor(binary=True)
        row = cur.execute(f"SELECT id, email, note FROM {TABLE} WHERE id = %s", (1,)).fetchone()
        assert row == (
            1,
            None,
            "refund to ****",
        )  # covered column in binary: nulled; text in binary: rewritten


def test_literals_in_the_recorded_text_are_masked_by_content_rules(masked_gateway):

    identity = "literal-check"
    body, _, sig = masked_gateway.token("reader", identity=identity).rpartition(".")
    env = {**os.environ, "PGPASSWORD": sig}
    sql = f"SELECT count(*) FROM {TABLE} WHERE email = 'ann@example.com'"
    argv = [masked_gateway.pg.bin("psql"), "-h", "127.0.0.1", "-p", str(masked_gateway.port)]
    out = subprocess.run(
        [*argv, "-U", body, "-d", DBNAME, "-AtXc", sql], env=env, capture_output=True, text=True, timeout=30
    )
    assert out.stdout.strip() == "1", out.stderr  # the database got the literal as sent
    recordings = Recordings(masked_gateway.config.recordings_dir)
    sid = next(s.sid for s in recordings.summaries() if s.identity == identity)
    texts = [r["text"] for r in recordings.load(sid)["items"] if r.get("type") == "statement"]
    assert texts == [f"SELECT count(*) FROM {TABLE} WHERE email = '****'"]


@pytest.fixture(scope="module")
def refusing_gateway(base_config, gw_db, masked_gateway):
    config = replace(base_config, masking=MaskingRules.from_config({**MASKING, "binary": "refuse"}))
    handle = _run_gateway(config, TokenAuthority(load_key(base_config.token_key_file)), gw_db)
    try:
        yield handle
    finally:
        _stop(handle)


def test_binary_refuse_policy_refuses_the_statement(refusing_gateway):
    with psycopg.connect(refusing_gateway.dsn(refusing_gateway.token("reader"))) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as err:
            conn.cursor(binary=True).execute(f"SELECT email FROM {TABLE} WHERE id = %s", (1,)).fetchall()
        assert "email" in str(err.value)
        conn.rollback()
        # the same statement in text format is served, masked
        assert conn.execute(f"SELECT email FROM {TABLE} WHERE id = %s", (1,)).fetchone() == (
            "a***@example.com",
        )
        # in binary, columns no rule covers are served
        assert conn.cursor(binary=True).execute(f"SELECT id FROM {TABLE} WHERE id = %s", (1,)).fetchone() == (
            1,
        )


def test_binary_refuse_refuses_a_write_before_it_runs(refusing_gateway, gw_db):
    # A covered column asked for in binary is refused before the statement reaches the
    # database: the UPDATE ... RETURNING never writes. The recording says so.
    identity = "binary-write"
    token = refusing_gateway.token("writer", identity=identity)
    update = f"UPDATE {TABLE} SET n = n + 1 WHERE id = %s RETURNING email"
    with psycopg.connect(refusing_gateway.dsn(token), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="email"):
            conn.cursor(binary=True).execute(update, (1,))
        assert gw_db.psql(f"SELECT n FROM {TABLE} WHERE id = 1", DBNAME).strip() == "4111111111111111"
        # inside a transaction, the refusal fails it, as the client was told
        conn.execute("BEGIN")
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="email"):
            conn.cursor(binary=True).execute(update, (1,))
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            conn.execute("SELECT 1")
        conn.execute("ROLLBACK")
        # a binary write that returns no covered column runs
        cur = conn.cursor(binary=True)
        assert cur.execute(f"UPDATE {TABLE} SET n = n + 0 WHERE id = %s RETURNING id", (1,)).fetchone() == (
            1,
        )
        assert cur.execute(f"UPDATE {TABLE} SET n = n + 0 WHERE id = %s", (1,)).rowcount == 1
    assert gw_db.psql(f"SELECT n FROM {TABLE} WHERE id = 1", DBNAME).strip() == "4111111111111111"
    recordings = Recordings(refusing_gateway.config.recordings_dir)
    sid = next(s.sid for s in recordings.summaries() if s.identity == identity)
    refused = [r for r in recordings.load(sid)["items"] if r.get("type") == "statement" and not r["allowed"]]
    assert [(r["text"], r["rule"]) for r in refused] == [(update.replace("%s", "$1"), "masking-binary")] * 2


@pytest.mark.parametrize("protocol", ["simple", "extended"])
def test_copy_to_stdout_is_refused_before_it_runs_when_masking_applies(masked_gateway, gw_db, protocol):
    # Its data could not be masked column by column: the statement never reaches the
    # database, so a COPY of a DELETE ... RETURNING deletes nothing.
    identity = f"copy-out-{protocol}"
    token = masked_gateway.token("writer", identity=identity)
    query = f"COPY (DELETE FROM {TABLE} WHERE id = 1 RETURNING email, card) TO STDOUT"
    with psycopg.connect(masked_gateway.dsn(token), autocommit=True) as conn:
        if protocol == "simple":
            got: list[bytes] = []
            refused = pytest.raises(
                psycopg.errors.InsufficientPrivilege, match="COPY TO STDOUT cannot be masked"
            )
            with refused, conn.cursor().copy(query) as copy:
                got.extend(bytes(block) for block in copy)
            assert not got
        else:  # psycopg sends COPY by the simple protocol: Parse it by hand
            res = conn.pgconn.prepare(b"", query.encode())
            assert res.status == psycopg.pq.ExecStatus.FATAL_ERROR
            assert b"COPY TO STDOUT cannot be masked" in res.error_message
        assert conn.execute("SELECT 1").fetchone() == (1,)  # the session carries on
    assert gw_db.psql(f"SELECT count(*) FROM {TABLE} WHERE id = 1", DBNAME).strip() == "1"
    recordings = Recordings(masked_gateway.config.recordings_dir)
    sid = next(s.sid for s in recordings.summaries() if s.identity == identity)
    statements = [r for r in recordings.load(sid)["items"] if r.get("type") == "statement"]
    assert [(r["text"], r["allowed"], r["rule"]) for r in statements][0] == (query, False, "masking-copy-out")


def test_a_value_quoted_in_an_error_is_masked_by_content_rules(masked_gateway):
    with psycopg.connect(masked_gateway.dsn(masked_gateway.token("reader")), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InvalidTextRepresentation) as err:
            conn.execute(f"SELECT email::int FROM {TABLE}")
        assert "ann@example.com" not in str(err.value) and "****" in str(err.value)


def test_binary_bind_parameters_are_masked_before_they_are_recorded(masked_gateway):

    identity = "binary-params"
    with psycopg.connect(masked_gateway.dsn(masked_gateway.token("reader", identity=identity))) as conn:
        assert conn.execute("SELECT length(%b::text)", ("bob@example.com",)).fetchone() == (15,)
    recordings = Recordings(masked_gateway.config.recordings_dir)
    sid = next(s.sid for s in recordings.summaries() if s.identity == identity)
    params = [r["params"] for r in recordings.load(sid)["items"] if r.get("type") == "statement"]
    assert [p for p in params if p] == [["\\x" + b"****".hex()]]
