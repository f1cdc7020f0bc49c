"""The gateway against a real PostgreSQL: clients work unchanged; refusals hold."""

from __future__ import annotations

import psycopg
import pytest

from tests.gateway.conftest import DBNAME


def test_psycopg_reads_through_the_gateway(gateway):
    with psycopg.connect(gateway.dsn(gateway.token())) as conn:
        rows = conn.execute("SELECT id, owner FROM accounts WHERE id <= %s ORDER BY id", (3,)).fetchall()
        assert rows == [(1, "owner1"), (2, "owner2"), (3, "owner3")]
        assert conn.execute("SELECT 1").fetchone() == (1,)
        assert conn.info.backend_pid != 0


def test_reader_write_refused_and_table_unchanged(gateway):
    with psycopg.connect(gateway.dsn(gateway.token("reader")), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("UPDATE accounts SET balance = 0 WHERE id = 1")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM accounts", prepare=False)
        assert conn.execute("SELECT 2").fetchone() == (2,)
    assert gateway.pg.psql("SELECT balance FROM accounts WHERE id = 1", DBNAME) == "100"
    assert gateway.pg.psql("SELECT count(*) FROM accounts", DBNAME) == "50"
