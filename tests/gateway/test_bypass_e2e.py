"""The bypass corpus end to end: each attempt sent by a reader through the real gateway
to a real PostgreSQL, asserting the refusal AND that the database did not change."""

from __future__ import annotations

from dataclasses import replace

import psycopg
import pytest
from psycopg.pq import ExecStatus

from hoopctl.access.tokens import TokenAuthority, load_key
from hoopctl.gateway.config import Resource
from tests.gateway.bypass_corpus import ALLOW, CASES, REFUSE, SCHEMA_SQL, STATE_SQL
from tests.gateway.conftest import _run_gateway, _stop

CORPUS_DB = "corpus"


@pytest.fixture(scope="module")
def corpus_gateway(base_config, gw_db, tmp_path_factory):
    gw_db.psql(f"DROP DATABASE IF EXISTS {CORPUS_DB}")
    gw_db.psql(f"CREATE DATABASE {CORPUS_DB}")
    gw_db.psql(SCHEMA_SQL, CORPUS_DB)
    resource = Resource(
        name=CORPUS_DB,
        host="127.0.0.1",
        port=gw_db.port,
        dbname=CORPUS_DB,
        user="postgres",
        password=gw_db.password,
        sslmode="disable",
    )
    config = replace(
        base_config, resources={CORPUS_DB: resource}, recordings_dir=tmp_path_factory.mktemp("rec-corpus")
    )
    handle = _run_gateway(config, TokenAuthority(load_key(config.token_key_file)), gw_db)
    yield handle
    _stop(handle)
    gw_db.psql(f"DROP DATABASE {CORPUS_DB}")


def _connect(handle):
    token = handle.token(role="reader", identity="corpus-reader", resource=CORPUS_DB)
    return psycopg.connect(handle.dsn(token, dbname=CORPUS_DB), autocommit=True)


def _simple(conn, sql: str):
    """One simple-protocol Query with the whole string, as psql -c sends it (PQexec: the
    last result, which is the error when any statement failed)."""
    return [conn.pgconn.exec_(sql.encode())]


def _sqlstate(results) -> str | None:
    for res in results:
        if res.status == ExecStatus.FATAL_ERROR:
            return (res.error_field(psycopg.pq.DiagnosticField.SQLSTATE) or b"").decode()
    return None


def test_every_bypass_is_refused_and_changes_nothing(corpus_gateway, gw_db):
    before = gw_db.psql(STATE_SQL, CORPUS_DB)
    wrong = []
    for case in CASES:
        with _connect(corpus_gateway) as conn:
            state = _sqlstate(_simple(conn, case.sql))
            if case.expected == REFUSE and state != "42501":
                wrong.append(f"not refused (got {state}): {case.note}: {case.sql!r}")
            if case.expected == ALLOW and state is not None:
                wrong.append(f"legitimate read failed ({state}): {case.note}: {case.sql!r}")
            # The session stays usable after a refusal.
            assert conn.execute("SELECT 1").fetchone() == (1,)
    assert not wrong, "\n".join(wrong)
    assert gw_db.psql(STATE_SQL, CORPUS_DB) == before
    refused = sum(c.expected == REFUSE for c in CASES)
    assert refused >= 60


def test_single_statement_bypasses_are_refused_through_the_extended_protocol(corpus_gateway, gw_db):
    before = gw_db.psql(STATE_SQL, CORPUS_DB)
    singles = [c for c in CASES if c.expected == REFUSE and ";" not in c.sql.rstrip().rstrip(";")]
    assert len(singles) >= 40
    with _connect(corpus_gateway) as conn:
        for case in singles:
            res = conn.pgconn.prepare(b"", case.sql.encode())
            assert res.status == ExecStatus.FATAL_ERROR, case.note
            assert res.error_field(psycopg.pq.DiagnosticField.SQLSTATE) == b"42501", case.note
        assert conn.execute("SELECT count(*) FROM accounts").fetchone() == (3,)
    assert gw_db.psql(STATE_SQL, CORPUS_DB) == before
