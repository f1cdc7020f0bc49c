"""Nothing a just-in-time grant allowed runs after it ends, however it is reached: a cursor runs
its query at each FETCH (functions the policy cannot classify included, and cursors a function
opened, or one an extended-protocol DECLARE put under a portal's name), PostgreSQL keeps only the
first 63 bytes of a statement or portal name, a hold's outcome belongs to the statement held, and
a reload that narrows or removes a role reaches what was bound before it.
(Portals and prepared statements bound under a grant: test_session_pipeline.py.)"""

from __future__ import annotations

from dataclasses import replace

import pytest

from hoopctl.access.admin import RoleAccess
from hoopctl.access.tokens import TokenAuthority, load_key
from hoopctl.gateway import pgwire as pw
from hoopctl.gateway.policy import Policy
from hoopctl.gateway.policy.classify import UNKNOWN_GRANT
from tests.gateway.conftest import DBNAME, _run_gateway, _stop, jit_gateway
from tests.gateway.test_access_e2e import access_config, decide_in_turn
from tests.gateway.test_session_pipeline import (
    SYNC,
    bind,
    close,
    describe_portal,
    errors,
    exchange,
    execute,
    extended,
    oncall,
    parse,
    query,
    raw_login,
    reload,
    rows,
    statements,
    two_rows,
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


# ---------------------------------------------------------------- holds, reloads, re-used names


def fresh_sequence(db, name: str) -> None:
    db.psql(f"DROP SEQUENCE IF EXISTS {name}; CREATE SEQUENCE {name}", DBNAME)


# ---------------------------------------------------------------- a portal name a cursor re-uses


def test_a_cursor_declared_under_a_protocol_portals_name_cannot_run_after_the_grant(granted, gw_db):
    # CLOSE and DECLARE sent by the extended protocol replace portal `p` in the database; the
    # gateway still judges `p` by the SELECT 1 it was bound to, and the cursor writes.
    fresh_sequence(gw_db, "grant_end_seq")
    s = oncall(granted)
    assert errors(exchange(s, extended("BEGIN"))) == []
    assert errors(exchange(s, parse("", "SELECT 1") + bind("p", "") + SYNC)) == []
    assert errors(exchange(s, extended("CLOSE p"))) == []
    declare = "DECLARE p CURSOR FOR SELECT nextval('grant_end_seq') FROM generate_series(1, 5)"
    assert errors(exchange(s, extended(declare))) == []
    granted.revoke()
    answers = exchange(s, execute("p") + SYNC)
    exchange(s, query("ROLLBACK"))
    assert errors(answers) == ["42501"]
    assert gw_db.psql("SELECT is_called FROM grant_end_seq", DBNAME) == "f", "nextval ran after the grant"


# ---------------------------------------------------------------- holds


@pytest.fixture
def holding(base_config, gw_db, tmp_path):
    """`writer` and `ddler` granted on hold; a reader's statement needing them waits for a decision."""
    two_rows(gw_db, "review5_hold")
    policy = Policy.from_roles({"reader": ["read"], "writer": ["read", "write"], "ddler": ["read", "ddl"]})
    on_hold = RoleAccess(mode="hold", hold_timeout_s=5.0, max_duration_s=600)
    config = replace(
        base_config,
        policy=policy,
        access=access_config(tmp_path, writer=on_hold, ddler=on_hold),
        recordings_dir=tmp_path / "rec",
    )
    handle = _run_gateway(config, TokenAuthority(load_key(config.token_key_file)), gw_db)
    yield handle
    _stop(handle)


def test_a_portal_bound_under_a_held_grant_cannot_run_once_revoked_during_a_later_hold(holding, gw_db):
    s = raw_login(holding, holding.token(role="reader", identity="held"))
    first: dict = {}

    def approve_the_delete(service, request) -> None:
        first["grant"] = service.approve(request.id, "alice")

    def revoke_it_and_approve_the_create(service, request) -> None:
        service.revoke(first["grant"].id, "alice")
        service.approve(request.id, "alice")

    approver = decide_in_turn(holding, approve_the_delete, revoke_it_and_approve_the_create)
    exchange(s, query("BEGIN"))
    pipeline = (
        parse("", "DELETE FROM review5_hold")
        + bind("p", "")
        + parse("q", "CREATE TABLE review5_hold_new (a int)")
        + execute("p")
        + SYNC
    )
    answers = exchange(s, pipeline)
    approver.join()
    exchange(s, query("ROLLBACK"))
    assert errors(answers) == ["42501"]
    assert gw_db.psql("SELECT count(*) FROM review5_hold", DBNAME) == "2", "the DELETE ran after the grant"
    refused = [r for r in statements(holding, "held") if not r["allowed"]]
    assert [(r["text"], r["rule"]) for r in refused] == [("DELETE FROM review5_hold", "write-not-granted")]


def test_a_hold_outcome_is_not_applied_to_a_later_statement_with_the_same_text(holding, gw_db):
    # The hold is denied, but another grant lets the statement run when it resumes: the denial
    # must not be kept for the next statement with that text (refused unheld, by an old request).
    s = raw_login(holding, holding.token(role="reader", identity="stale"))
    other: dict = {}

    def deny_but_grant_otherwise(service, request) -> None:
        other["grant"] = service.approve(service.request("stale", DBNAME, "writer", 600, "other").id, "bob")
        holding.gateway.broker.state.refresh()
        service.deny(request.id, "alice", "not this way")

    approver = decide_in_turn(holding, deny_but_grant_otherwise)
    insert = "INSERT INTO review5_hold VALUES (3)"
    assert errors(exchange(s, query(insert))) == []
    approver.join()
    holding.gateway.broker.service.revoke(other["grant"].id, "alice")
    holding.gateway.broker.state.refresh()
    approver = decide_in_turn(holding, lambda service, request: service.approve(request.id, "alice"))
    answers = exchange(s, query(insert))
    approver.join()
    assert errors(answers) == [], "refused by the first hold's denial instead of held again"
    assert gw_db.psql("SELECT count(*) FROM review5_hold", DBNAME) == "4"


# ---------------------------------------------------------------- reloads


def test_a_reload_narrowing_the_role_reaches_sql_prepared_names_and_parsed_executes(fresh_gateway, gw_db):
    gw = fresh_gateway
    two_rows(gw_db, "review5_prep")
    s = raw_login(gw, gw.token("writer", identity="narrowed"))
    assert errors(exchange(s, query("PREPARE x AS DELETE FROM review5_prep"))) == []
    assert errors(exchange(s, parse("ex", "EXECUTE x") + SYNC)) == []
    reload(gw, replace(gw.config, policy=Policy.from_roles({"reader": ["read"], "writer": ["read"]})))
    assert errors(exchange(s, query("EXECUTE x"))) == ["42501"]
    assert errors(exchange(s, bind("", "ex") + execute("") + SYNC)) == ["42501"]
    assert gw_db.psql("SELECT count(*) FROM review5_prep", DBNAME) == "2"
    refused = [(r["text"], r["rule"]) for r in statements(gw, "narrowed") if not r["allowed"]]
    assert refused == [("EXECUTE x", "write-not-granted"), ("-- bind 'ex'", "write-not-granted")]


def test_a_reload_removing_the_role_ends_its_sessions(fresh_gateway, gw_db):
    gw = fresh_gateway
    two_rows(gw_db, "grant_end_gone")
    s = raw_login(gw, gw.token("writer", identity="removed"))
    exchange(s, query("BEGIN"))
    assert errors(exchange(s, parse("d", "DELETE FROM grant_end_gone") + bind("p", "d") + SYNC)) == []
    reload(gw, replace(gw.config, policy=Policy.from_roles({"reader": ["read"]})))
    answers = exchange(s, b"")  # ended at the reload, not at its next statement
    assert [m.sqlstate for m in answers if isinstance(m, pw.ErrorResponse)] == ["57P01"]
    assert answers[-1] == "closed"
    assert gw_db.psql("SELECT count(*) FROM grant_end_gone", DBNAME) == "2"
    # A reader's session carries on.
    assert errors(exchange(raw_login(gw, gw.token("reader")), query("SELECT 1"))) == []


# ---------------------------------------------------------------- grants are for tokens as issued


def test_a_nested_agent_never_gets_a_grant_by_naming_its_identity_or_narrowing_its_role(granted, gw_db):
    from hoopctl.access.tokens import attenuate

    insert = "INSERT INTO pipeline_jit VALUES (3)"
    # Another caller's reader token, attenuated to call itself `oncall` (who holds the grant):
    # it is bob>oncall, not oncall.
    impostor = attenuate(granted.token(role="reader", identity="bob"), identity="oncall")
    # oncall's own token narrowed to a reader, with no name of its own, or as a helper.
    narrowed = attenuate(granted.token(role="reader", identity="oncall"), role="reader")
    helper = attenuate(granted.token(role="reader", identity="oncall"), identity="helper")
    for token in (impostor, narrowed, helper):
        assert errors(exchange(raw_login(granted, token), query(insert))) == ["42501"]
    assert gw_db.psql("SELECT count(*) FROM pipeline_jit", DBNAME) == "2"
    # The grant works for the token it was approved for.
    assert errors(exchange(oncall(granted), query(insert))) == []
    assert gw_db.psql("SELECT count(*) FROM pipeline_jit", DBNAME) == "3"


@pytest.fixture
def helper_granted(base_config, gw_db, tmp_path):
    """A writer grant for `ci-job>helper`, the job's helper; the job itself is a reader."""
    two_rows(gw_db, "grant_end_helper")
    policy = Policy.from_roles({"reader": ["read"], "writer": ["read", "write"]})
    handle = jit_gateway(
        replace(base_config, policy=policy), gw_db, tmp_path, "writer", identity="ci-job>helper"
    )
    yield handle
    _stop(handle)


HELPER_INSERT = "INSERT INTO grant_end_helper VALUES (3)"


def helper_rows(db) -> str:
    return db.psql("SELECT count(*) FROM grant_end_helper", DBNAME)


def inserts(handle, token: str) -> list[str]:
    return errors(exchange(raw_login(handle, token), query(HELPER_INSERT)))


def test_a_grant_approved_for_a_nested_agent_is_its_own(helper_granted, gw_db):
    from hoopctl.access.tokens import TokenError, attenuate

    job = helper_granted.token(role="reader", identity="ci-job")
    for token in (job, attenuate(job, identity="other")):
        assert inserts(helper_granted, token) == ["42501"]
    assert inserts(helper_granted, attenuate(job, identity="helper")) == []
    assert helper_rows(gw_db) == "3"
    with pytest.raises(TokenError, match="may not contain"):
        attenuate(job, identity="ci-job>helper")  # no name can pass for a chain


def test_a_token_narrowed_in_place_gets_no_grant_nor_names_itself_into_one(helper_granted, gw_db):
    from hoopctl.access.tokens import attenuate

    job = helper_granted.token(role="reader", identity="ci-job")
    # The helper narrows its own token for a sub-task, with no name of its own: not the helper.
    narrowed_helper = attenuate(attenuate(job, identity="helper"), role="reader")
    # The job hands a sub-agent a narrowed copy of itself, which then names itself `helper`.
    posing = attenuate(attenuate(job, role="reader"), identity="helper")
    for token in (narrowed_helper, posing):
        assert inserts(helper_granted, token) == ["42501"]
    assert helper_rows(gw_db) == "2"


def test_the_admin_api_files_nothing_for_a_token_narrowed_in_place(helper_granted):
    from hoopctl.access import admin
    from hoopctl.access.tokens import attenuate

    narrowed = attenuate(helper_granted.token(role="reader", identity="ci-job"), role="reader")
    resp = admin.call(
        helper_granted.config.access.admin_socket,
        "request",
        token=narrowed,
        resource=DBNAME,
        role="writer",
        duration_s=60,
        reason="asked in the job's name",
    )
    filed = [r for r in helper_granted.gateway.broker.service.list(None) if r.requester == "ci-job"]
    assert not resp["ok"] and not filed, f"filed as the job by its narrowed child: {resp}"
