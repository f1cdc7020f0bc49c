"""The function lists and the corpus checked against a real PostgreSQL catalog and server."""

from __future__ import annotations

import os

import psycopg
import pytest

from hoopctl.gateway.policy import functions
from tests.gateway.bypass_corpus import ALLOW, CASES, SCHEMA_SQL, STATE_SQL


def _names(postgres, where: str) -> set[str]:
    out = postgres.psql(
        f"SELECT DISTINCT proname FROM pg_catalog.pg_proc WHERE pronamespace = 'pg_catalog'::regnamespace AND {where}"
    )
    return set(out.split())


def test_every_allow_listed_builtin_exists(postgres) -> None:
    catalog = _names(postgres, "true")
    listed = functions.STABLE_BUILTINS | functions.VOLATILE_READ_ONLY
    assert sorted(listed - catalog) == []


def test_no_volatile_function_is_allowed_without_review(postgres) -> None:
    # A name with any VOLATILE overload is allowed only if it was reviewed by hand.
    volatile = _names(postgres, "provolatile = 'v'")
    assert sorted((volatile & functions.READ_ONLY) - functions.VOLATILE_READ_ONLY) == []


def test_denied_names_are_never_allowed() -> None:
    assert functions.READ_ONLY.isdisjoint(functions.DENIED)
    assert functions.function_classes(("pg_catalog", "pg_read_file")) == frozenset({"file"})
    assert functions.function_classes(("myschema", "dblink_exec")) == frozenset({"remote"})
    assert functions.function_classes(("public", "lower")) is None
    assert functions.function_classes(("PG_READ_FILE",)) is None
    assert functions.function_classes(("information_schema", "_pg_expandarray")) == frozenset({"read"})


@pytest.fixture
def corpus_db(postgres):
    name = f"policy_corpus_{os.getpid()}"
    postgres.psql(f"DROP DATABASE IF EXISTS {name}")
    postgres.psql(f"CREATE DATABASE {name}")
    postgres.psql(SCHEMA_SQL, dbname=name)
    try:
        yield name
    finally:
        postgres.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_allowed_corpus_entries_run_on_postgresql_and_change_nothing(postgres, corpus_db: str) -> None:
    # So that the end-to-end run through the gateway fails only for the gateway's reasons.
    before = postgres.psql(STATE_SQL, dbname=corpus_db)
    for case in CASES:
        if case.expected == ALLOW and case.sql.strip(" ;"):
            postgres.psql(case.sql, dbname=corpus_db)
    assert postgres.psql(STATE_SQL, dbname=corpus_db) == before
    assert "accounts|3:150:ada@example.com,bob@example.com,eve@example.com" in before


def test_allowed_corpus_entries_run_one_after_another_on_one_connection(postgres, corpus_db: str) -> None:
    # The end-to-end test may send the whole corpus down one session: no allowed entry may leave
    # the session unable to run the next (a search_path that hides the tables, an open transaction).
    with psycopg.connect(postgres.dsn(corpus_db), autocommit=True) as conn:
        for case in CASES:
            if case.expected == ALLOW and case.sql.strip(" ;"):
                conn.execute(case.sql, prepare=False)
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
