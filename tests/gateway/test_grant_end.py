"""Nothing a just-in-time grant allowed runs after it ends, however it is reached: a cursor runs
its query at each FETCH (functions the policy cannot classify included, and cursors a function
opened), and PostgreSQL keeps only the first 63 bytes of a statement or portal name.
(Portals and prepared statements bound under a grant: test_session_pipeline.py.)"""

from __future__ import annotations

from dataclasses import replace

import pytest

from hoopctl.gateway import pgwire as pw
from hoopctl.gateway.policy import Policy
from hoopctl.gateway.policy.classify import UNKNOWN_GRANT
from tests.gateway.conftest import DBNAME, _stop, jit_gateway
from tests.gateway.test_session_pipeline import (
    SYNC,
    bind,
    close,
    describe_portal,
    errors,
    exchange,
    execute,
    oncall,
    parse,
    query,
    rows,
)

LONG = "n" * 63  # what PostgreSQL keeps of a longer name


# ---------------------------------------------------------------- policy level


def test_a_cursor_over_an_unknown_function_needs_the_unknown_grant_at_its_fetch():
    session = Policy.from_roles({"reader": ["read"]}).session("reader", frozenset({UNKNOWN_GRANT}))
    assert session.check_query("DECLARE c CURSOR FOR SELECT side_effect()").allowed
    session.set_extra_grants(frozenset())  # the just-in-time grant ended
    assert not session.check_query("FETCH ALL FROM c").allowed, "FETCH ran side_effect() without the grant"


def test_a_cursor_a_function_opened_needs_the_unknown_grant_at_its_fetch():
    # A PL/pgSQL function may OPEN a cursor (named by it) whose query runs at each FETCH: the
    # gateway never saw it declared, and only a session holding `unknown` could have called it.
    session = Policy.from_roles({"reader": ["read"]}).session("reader", frozenset({UNKNOWN_GRANT}))
    assert session.check_query("SELECT open_a_cursor('opened')").allowed
    session.set_extra_grants(frozenset())
    assert not session.check_query('FETCH ALL FROM "opened"').allowed


# ---------------------------------------------------------------- against the database


@pytest.fixture
def granted_unknown(base_config, gw_db, tmp_path):
    gw_db.psql(
        "DROP TABLE IF EXISTS review4_log; CREATE TABLE review4_log (a int);"
        "CREATE OR REPLACE FUNCTION review4_bump() RETURNS int LANGUAGE sql VOLATILE AS "
        "'INSERT INTO review4_log VALUES (1) RETURNING a'",
        DBNAME,
    )
    policy = Policy.from_roles({"reader": ["read"], "fixer": ["read", UNKNOWN_GRANT]})
    handle = jit_gateway(replace(base_config, policy=policy), gw_db, tmp_path, "fixer")
    yield handle
    _stop(handle)


def test_a_cursor_over_an_unknown_function_cannot_run_it_after_the_grant(granted_unknown, gw_db):
    s = oncall(granted_unknown)
    exchange(s, query("BEGIN"))
    assert errors(exchange(s, query("DECLARE c CURSOR FOR SELECT review4_bump()"))) == []
    granted_unknown.revoke()
    assert errors(exchange(s, query("FETCH ALL c"))) == ["42501"]
    exchange(s, query("COMMIT"))
    assert gw_db.psql("SELECT count(*) FROM review4_log", DBNAME) == "0", "the function ran after the grant"


# ---------------------------------------------------------------- names PostgreSQL truncates


@pytest.mark.parametrize(
    "message",
    [
        bind(LONG + "x", ""),
        parse(LONG + "x", "SELECT 1"),
        execute(LONG + "x"),
        describe_portal(LONG + "x"),
        close("S", LONG + "x"),
    ],
    ids=["bind", "parse", "execute", "describe", "close"],
)
def test_a_name_longer_than_postgresql_keeps_ends_the_connection(granted, gw_db, message):
    # PostgreSQL keeps a statement or portal name's first 63 bytes: two longer names would be
    # one to it and two to the gateway, which judges them apart. No client sends them.
    s = oncall(granted)
    exchange(s, query("BEGIN"))
    exchange(s, parse("", "DELETE FROM pipeline_jit") + bind(LONG, "") + SYNC)
    granted.revoke()
    answers = exchange(s, message + execute(LONG) + SYNC)
    assert [m.sqlstate for m in answers if isinstance(m, pw.ErrorResponse)] == ["08P01"]
    assert answers[-1] == "closed"
    assert gw_db.psql("SELECT count(*) FROM pipeline_jit", DBNAME) == "2", "the DELETE ran after the grant"
    assert rows(exchange(oncall(granted), query("SELECT count(*) FROM pipeline_jit"))) == [("2",)]
