"""The gateway keeps matching the database's answers to the right requests, whatever the pipeline.

Each test sends, with a bare socket, what a client may legally (or slyly) send: a Describe that
fails, a portal closed and re-declared by SQL, a Query in a pipeline the database is skipping, COPY
through the extended protocol, a Parse skipped after an error. Masking, refusals, revocation and
the recording must all still apply to the statement that really runs.
"""

from __future__ import annotations

import socket
import time
from dataclasses import replace

import psycopg
import pytest

from hoopctl.access.tokens import TokenAuthority, load_key
from hoopctl.audit.reader import Recordings
from hoopctl.gateway import pgwire as pw
from hoopctl.gateway.policy import Policy
from tests.gateway.conftest import DBNAME, _run_gateway, _stop
from tests.gateway.test_access_e2e import access_config, token_id
from tests.gateway.test_server import raw_login

SYNC = pw.Sync().encode()
FLUSH = pw.Flush().encode()
CURSOR = "CURSOR WITH HOLD FOR SELECT id, email FROM accounts WHERE id = 1"
MASKED_ROW = ("1", "u***@example.com")
CLEAR_ROW = ("1", "user1@example.com")


def parse(name: str, sql: str) -> bytes:
    return pw.Parse(name, sql).encode()


def bind(portal: str, statement: str) -> bytes:
    return pw.Bind(portal, statement, (), (), ()).encode()


def describe_portal(name: str) -> bytes:
    return pw.Describe("P", name).encode()


def execute(portal: str) -> bytes:
    return pw.Execute(portal, 0).encode()


def close(kind: str, name: str) -> bytes:
    return pw.Close(kind, name).encode()


def query(sql: str) -> bytes:
    return pw.Query(sql).encode()


def exchange(s: socket.socket, data: bytes, until: type = pw.ReadyForQuery, count: int = 1) -> list:
    """Sends `data`, then reads answers until `count` messages of type `until` (or 5 s, or EOF)."""
    s.sendall(data)
    parser = pw.BackendParser()
    parser.phase = pw.Phase.READY
    out: list = []
    s.settimeout(5.0)
    deadline = time.monotonic() + 5.0
    while count and time.monotonic() < deadline:
        try:
            data = s.recv(65536)
        except TimeoutError:
            break
        if not data:
            out.append("closed")
            break
        parser.feed(data)
        for msg in parser:
            out.append(msg)
            count -= isinstance(msg, until)
    return out


def rows(messages: list) -> list[tuple]:
    return [tuple(bytes(v).decode() for v in m.values) for m in messages if isinstance(m, pw.DataRow)]


def errors(messages: list) -> list[str]:
    return [m.sqlstate for m in messages if isinstance(m, pw.ErrorResponse)]


def statements(handle, identity: str) -> list[dict]:
    time.sleep(0.2)  # results are written after the answer went out
    recordings = Recordings(handle.config.recordings_dir)
    sid = next(s.sid for s in recordings.summaries() if s.identity == identity)
    return [r for r in recordings.load(sid)["items"] if r.get("type") == "statement"]


def two_rows(db, table: str) -> None:
    """A fresh table `table (a int)` holding 1 and 2."""
    db.psql(
        f"DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (a int); INSERT INTO {table} VALUES (1), (2)",
        DBNAME,
    )


def reload(handle, config) -> None:
    async def apply() -> None:
        handle.gateway.reload(config)

    handle.call(apply())


# ---------------------------------------------------------------- masking a portal's rows


def test_a_cursor_named_like_a_portal_whose_describe_failed_is_masked(masking_gateway):
    s = raw_login(masking_gateway, masking_gateway.token("reader"))
    assert errors(exchange(s, describe_portal("c1") + SYNC)) == ["34000"]
    exchange(s, query(f"DECLARE c1 {CURSOR}"))
    assert rows(exchange(s, execute("c1") + SYNC)) == [MASKED_ROW]


def test_a_cursor_named_like_a_closed_portal_is_masked(masking_gateway):
    s = raw_login(masking_gateway, masking_gateway.token("reader"))
    answers = exchange(
        s,
        parse("s2", "SELECT 1 AS x")
        + bind("c2", "s2")
        + describe_portal("c2")
        + execute("c2")
        + close("P", "c2")
        + SYNC,
    )
    assert rows(answers) == [("1",)]
    exchange(s, query(f"DECLARE c2 {CURSOR}"))
    assert rows(exchange(s, execute("c2") + SYNC)) == [MASKED_ROW]


def test_a_portal_re_declared_by_another_portal_is_described_again(masking_gateway):
    s = raw_login(masking_gateway, masking_gateway.token("reader"))
    exchange(s, query("BEGIN"))
    answers = exchange(
        s,
        parse("one", "SELECT 1 AS x")
        + bind("c3", "one")
        + describe_portal("c3")
        + execute("c3")
        # SQL CLOSE and DECLARE, run by other portals, replace c3 under the same name.
        + parse("", "CLOSE c3")
        + bind("", "")
        + execute("")
        + parse("", "DECLARE c3 CURSOR FOR SELECT id, email FROM accounts WHERE id = 1")
        + bind("", "")
        + execute("")
        + execute("c3")
        + SYNC,
    )
    assert errors(answers) == []
    assert rows(answers) == [("1",), MASKED_ROW]


# ---------------------------------------------------------------- binary: refuse, before Execute


@pytest.fixture(scope="module")
def refusing_binary_gateway(base_config, gw_db, tmp_path_factory):
    from hoopctl.gateway.masking import MaskingRules

    gw_db.psql(
        "DROP TABLE IF EXISTS bin_refuse; CREATE TABLE bin_refuse (id int, email text);"
        "INSERT INTO bin_refuse VALUES (1, 'ann@example.com')",
        DBNAME,
    )
    rules = MaskingRules.from_config(
        {"rules": [{"column": "*email*", "style": "partial"}], "binary": "refuse"}
    )
    config = replace(base_config, masking=rules, recordings_dir=tmp_path_factory.mktemp("rec-binary"))
    handle = _run_gateway(config, TokenAuthority(load_key(base_config.token_key_file)), gw_db)
    yield handle
    _stop(handle)


def bind_binary(portal: str, statement: str, params: tuple = ()) -> bytes:
    return pw.Bind(portal, statement, params, (), (1,)).encode()


def test_an_execute_with_no_describe_is_described_before_a_covered_binary_column_runs(
    refusing_binary_gateway, gw_db
):
    gw = refusing_binary_gateway
    s = raw_login(gw, gw.token("writer"))
    update = "UPDATE bin_refuse SET email = 'x' || email WHERE id = 1 RETURNING email"
    answers = exchange(s, parse("", update) + bind_binary("", "") + execute("") + SYNC)
    assert errors(answers) == ["42501"] and not any(isinstance(m, pw.DataRow) for m in answers)
    assert not any(isinstance(m, pw.RowDescription) for m in answers)  # the gateway's own Describe
    assert gw_db.psql("SELECT email FROM bin_refuse", DBNAME) == "ann@example.com"
    # No covered column: the rows come, and the client still sees only what it asked for.
    answers = exchange(s, parse("", "SELECT id FROM bin_refuse") + bind_binary("", "") + execute("") + SYNC)
    assert errors(answers) == [] and [bytes(m.values[0]) for m in answers if isinstance(m, pw.DataRow)] == [
        b"\0\0\0\1"
    ]
    assert not any(isinstance(m, pw.RowDescription) for m in answers)
    assert rows(exchange(s, query("SELECT id, email FROM bin_refuse"))) == [("1", "a***@example.com")]


def test_a_binary_execute_whose_bind_fails_lets_the_session_carry_on(refusing_binary_gateway):
    gw = refusing_binary_gateway
    s = raw_login(gw, gw.token("reader"))
    # The Bind lacks its parameter: the database fails it and skips the Describe the gateway
    # asked for, and the Execute waiting on it, up to the Sync.
    answers = exchange(
        s, parse("", "SELECT email FROM bin_refuse WHERE id = $1") + bind_binary("", "") + execute("") + SYNC
    )
    assert errors(answers) == ["08P01"] and isinstance(answers[-1], pw.ReadyForQuery)
    answers = exchange(
        s,
        parse("", "SELECT email FROM bin_refuse WHERE id = $1")
        + bind_binary("", "", (b"1",))
        + describe_portal("")
        + execute("")
        + SYNC,
    )
    assert errors(answers) == ["42501"] and not any(isinstance(m, pw.DataRow) for m in answers)
    assert rows(exchange(s, query("SELECT id, email FROM bin_refuse"))) == [("1", "a***@example.com")]


# ---------------------------------------------------------------- skip until Sync, COPY


def test_a_query_the_database_skips_after_a_pipeline_error_expects_no_answer(masking_gateway):
    s = raw_login(masking_gateway, masking_gateway.token("reader"))
    answers = exchange(s, parse("", "SELECT * FROM no_such_table") + query("SELECT 1") + SYNC)
    assert errors(answers) == ["42P01"] and rows(answers) == []
    exchange(s, query("BEGIN"))
    exchange(s, parse("h", "SELECT 1 AS x") + bind("h", "h") + describe_portal("h") + execute("h") + SYNC)
    exchange(s, execute("h") + SYNC)
    assert rows(exchange(s, query("SELECT id, email FROM accounts WHERE id = 1"))) == [MASKED_ROW]


def test_messages_sent_after_a_pipeline_error_until_sync_expect_no_answer(masking_gateway):
    s = raw_login(masking_gateway, masking_gateway.token("reader"))
    # The error comes back before the client sends more: the database skips those until Sync.
    answers = exchange(s, parse("", "SELECT * FROM no_such_table") + FLUSH, until=pw.ErrorResponse)
    answers += exchange(s, query("SELECT 1") + query("DELETE FROM accounts") + SYNC)
    assert errors(answers) == ["42P01"] and rows(answers) == []
    assert errors(exchange(s, query("SELECT * FROM no_such_table"))) == ["42P01"]
    assert errors(exchange(s, query("DELETE FROM accounts"))) == ["42501"]
    assert rows(exchange(s, query("SELECT id, email FROM accounts WHERE id = 1"))) == [MASKED_ROW]


def test_copy_from_stdin_through_the_extended_protocol_keeps_answers_matched(gateway, gw_db):
    gw_db.psql("DROP TABLE IF EXISTS pipeline_copy; CREATE TABLE pipeline_copy (a int)", DBNAME)
    s = raw_login(gateway, gateway.token("writer"))
    # What libpq sends for PQexecParams("COPY ... FROM STDIN"), then PQputCopyEnd: two Syncs.
    answers = exchange(
        s,
        parse("", "COPY pipeline_copy FROM STDIN") + bind("", "") + describe_portal("") + execute("") + SYNC,
        until=pw.CopyResponse,
    )
    assert isinstance(answers[-1], pw.CopyResponse)
    answers = exchange(s, pw.CopyData(b"1\n").encode() + pw.CopyDone().encode() + SYNC)
    assert [m.tag for m in answers if isinstance(m, pw.CommandComplete)] == ["COPY 1"]
    assert errors(exchange(s, query("DROP TABLE pipeline_copy"))) == ["42501"]
    assert errors(exchange(s, query("SELECT * FROM no_such_table"))) == ["42P01"]
    assert gw_db.psql("SELECT count(*) FROM pipeline_copy", DBNAME) == "1"


def test_a_sync_sent_during_copy_from_stdin_expects_no_answer(gateway, gw_db):
    gw_db.psql("DROP TABLE IF EXISTS pipeline_copy2; CREATE TABLE pipeline_copy2 (a int)", DBNAME)
    s = raw_login(gateway, gateway.token("writer"))
    answers = exchange(s, query("COPY pipeline_copy2 FROM STDIN"), until=pw.CopyResponse)
    assert isinstance(answers[-1], pw.CopyResponse)
    answers = exchange(s, pw.CopyData(b"1\n").encode() + SYNC + pw.CopyDone().encode())
    assert errors(answers) == []
    assert errors(exchange(s, query("DROP TABLE pipeline_copy2"))) == ["42501"]
    assert errors(exchange(s, query("SELECT * FROM no_such_table"))) == ["42P01"]


def test_syncs_share_no_state_across_sessions():
    from hoopctl.gateway.pipeline import SYNC

    with pytest.raises(AttributeError):
        SYNC.withheld = "a masked column is in binary format"
    with pytest.raises(AttributeError):
        SYNC.masker = object()


# ---------------------------------------------------------------- revocation


@pytest.fixture
def access_gateway(base_config, gw_db, tmp_path):
    config = replace(base_config, access=access_config(tmp_path), recordings_dir=tmp_path / "recordings")
    handle = _run_gateway(config, TokenAuthority(load_key(config.token_key_file)), gw_db)
    yield handle
    _stop(handle)


def test_a_revoked_token_cannot_run_a_statement_prepared_before(access_gateway):
    gw = access_gateway
    token = gw.token(role="reader", identity="revoked-job")
    counted = "SELECT count(*) FROM accounts WHERE id > %s"
    with psycopg.connect(gw.dsn(token), autocommit=True) as conn:
        assert conn.execute(counted, (0,), prepare=True).fetchone() == (50,)
        gw.gateway.broker.service.revoke_token(token_id(gw, token), "root", "left")
        time.sleep(0.5)  # more than the broker's poll interval
        for _ in range(2):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="revoked"):
                conn.execute(counted, (0,), prepare=True)
    refused = [r for r in statements(gw, "revoked-job") if not r["allowed"]]
    assert refused and {r["rule"] for r in refused} == {"credential"}


# ---------------------------------------------------------------- Parse and Close take effect when answered


def test_a_skipped_parse_does_not_replace_the_unnamed_statement(fresh_gateway, gw_db):
    gw = fresh_gateway
    two_rows(gw_db, "pipeline_un")
    s = raw_login(gw, gw.token("writer"))
    exchange(s, parse("", "DELETE FROM pipeline_un WHERE a = 1") + SYNC)
    reload(gw, replace(gw.config, policy=Policy.from_roles({"reader": ["read"], "writer": ["read"]})))
    # The refused Parse fails the pipeline: the database skips the Parse of "" after it.
    exchange(s, parse("x", "DROP TABLE pipeline_un") + parse("", "SELECT 1") + SYNC)
    assert errors(exchange(s, bind("", "") + execute("") + SYNC)) == ["42501"]
    assert gw_db.psql("SELECT string_agg(a::text, ',' ORDER BY a) FROM pipeline_un", DBNAME) == "1,2"


def test_a_bind_pipelined_after_a_parse_that_may_be_skipped_is_judged_by_both(fresh_gateway, gw_db):
    gw = fresh_gateway
    two_rows(gw_db, "pipeline_un3")
    s = raw_login(gw, gw.token("writer"))
    exchange(s, parse("", "DELETE FROM pipeline_un3 WHERE a = 1") + SYNC)
    reload(gw, replace(gw.config, policy=Policy.from_roles({"reader": ["read"], "writer": ["read"]})))
    answers = exchange(
        s,
        parse("x", "DROP TABLE pipeline_un3")
        + parse("", "SELECT 1")
        + SYNC
        + bind("", "")
        + execute("")
        + SYNC,
        count=2,
    )
    assert errors(answers) == ["42501", "42501"]
    assert gw_db.psql("SELECT string_agg(a::text, ',' ORDER BY a) FROM pipeline_un3", DBNAME) == "1,2"


def test_the_recording_names_the_statement_the_database_ran(fresh_gateway, gw_db):
    gw = fresh_gateway
    two_rows(gw_db, "pipeline_un2")
    s = raw_login(gw, gw.token("writer", identity="skipped-close"))
    exchange(s, parse("s", "DELETE FROM pipeline_un2") + SYNC)
    # The error fails the pipeline: the database skips the Close and the Parse after it.
    answers = exchange(
        s, parse("e", "SELECT * FROM no_such_table") + close("S", "s") + parse("s", "SELECT 1") + SYNC
    )
    assert errors(answers) == ["42P01"]
    assert errors(exchange(s, bind("", "s") + execute("") + SYNC)) == []
    assert gw_db.psql("SELECT count(*) FROM pipeline_un2", DBNAME) == "0"
    assert [r["text"] for r in statements(gw, "skipped-close")] == ["DELETE FROM pipeline_un2"]


def test_the_recording_of_a_bind_pipelined_after_a_parse_that_may_be_skipped_names_both(fresh_gateway, gw_db):
    gw = fresh_gateway
    two_rows(gw_db, "pipeline_un4")
    s = raw_login(gw, gw.token("writer", identity="skipped-parse"))
    exchange(s, parse("", "DELETE FROM pipeline_un4 WHERE a = 1") + SYNC)
    answers = exchange(
        s,
        parse("e", "SELECT * FROM no_such_table")
        + parse("", "SELECT 1")
        + SYNC
        + bind("", "")
        + execute("")
        + SYNC,
        count=2,
    )
    assert errors(answers) == ["42P01"]
    assert gw_db.psql("SELECT count(*) FROM pipeline_un4", DBNAME) == "1"
    [recorded] = statements(gw, "skipped-parse")
    assert "DELETE FROM pipeline_un4 WHERE a = 1" in recorded["text"]


# ---------------------------------------------------------------- portals bound under a grant


def assert_delete_in_p_refused(s, gw_db) -> None:
    """Portal `p`, a DELETE bound under the grant, is refused now; COMMIT; nothing was deleted."""
    assert errors(exchange(s, execute("p") + SYNC)) == ["42501"]
    exchange(s, query("COMMIT"))
    assert gw_db.psql("SELECT count(*) FROM pipeline_jit", DBNAME) == "2", "the DELETE ran after the grant"


@pytest.mark.parametrize("forgotten", [False, True], ids=["known-portal", "portal-after-a-query"])
def test_a_portal_bound_under_a_grant_cannot_run_after_the_grant_ends(granted, gw_db, forgotten):
    s = raw_login(granted, granted.token(role="reader", identity="oncall"))
    exchange(s, query("BEGIN"))
    assert errors(exchange(s, parse("", "DELETE FROM pipeline_jit") + bind("p", "") + SYNC)) == []
    if forgotten:  # a simple Query makes the gateway forget the portal's Bind
        exchange(s, query("SELECT 1"))
    granted.revoke()
    assert_delete_in_p_refused(s, gw_db)
    # Reads still run: only what the grant gave is gone.
    assert errors(exchange(s, parse("r", "SELECT 1") + bind("", "r") + execute("") + SYNC)) == []
    refused = [r for r in statements(granted, "oncall") if not r["allowed"]]
    assert [r["rule"] for r in refused] == ["access-changed" if forgotten else "write-not-granted"]


def extended(sql: str) -> bytes:
    return parse("", sql) + bind("", "") + execute("") + SYNC


def oncall(handle):
    return raw_login(handle, handle.token(role="reader", identity="oncall"))


def bind_delete_in_a_transaction(s) -> None:
    # BEGIN by the extended protocol: a simple Query would make the gateway forget the portals.
    assert errors(exchange(s, extended("BEGIN"))) == []
    assert errors(exchange(s, parse("", "DELETE FROM pipeline_jit") + bind("p", "") + SYNC)) == []


def test_a_portal_of_the_unnamed_statement_is_judged_by_what_it_ran_not_what_it_runs_now(granted, gw_db):
    s = oncall(granted)
    bind_delete_in_a_transaction(s)
    # The unnamed statement is replaced by a read; the portal still runs the DELETE.
    assert errors(exchange(s, parse("", "SELECT 1") + SYNC)) == []
    granted.revoke()
    assert_delete_in_p_refused(s, gw_db)


def test_a_portal_the_gateway_dropped_but_the_database_kept_is_judged_again(granted, gw_db):
    s = oncall(granted)
    bind_delete_in_a_transaction(s)
    assert errors(exchange(s, extended("SAVEPOINT s"))) == []
    granted.revoke()
    # A refused re-Bind of `p` never reaches the database: its `p` (the DELETE) stays, and a
    # ROLLBACK TO SAVEPOINT clears the error the refusal caused.
    assert errors(exchange(s, bind("p", "nosuch") + SYNC)) == ["42501"]
    assert errors(exchange(s, extended("ROLLBACK TO SAVEPOINT s"))) == []
    assert_delete_in_p_refused(s, gw_db)


def test_a_close_the_database_skipped_does_not_free_a_portal_from_its_judgment(granted, gw_db):
    s = oncall(granted)
    bind_delete_in_a_transaction(s)
    assert errors(exchange(s, extended("SAVEPOINT s"))) == []
    # The division fails: the database skips the Close that follows; the gateway forgets `p`.
    failing = parse("", "SELECT 1/0") + bind("", "") + execute("") + close("P", "p") + SYNC
    assert errors(exchange(s, failing)) == ["22012"]
    assert errors(exchange(s, extended("ROLLBACK TO SAVEPOINT s"))) == []
    granted.revoke()
    assert_delete_in_p_refused(s, gw_db)


def test_an_idle_ready_for_query_answering_an_earlier_sync_does_not_reset_a_later_forget(granted, gw_db):
    s = oncall(granted)
    # The first Sync's ReadyForQuery ('I') comes back after the gateway forgot `p` at the Query.
    batch = (
        SYNC
        + query("BEGIN")
        + parse("", "DELETE FROM pipeline_jit")
        + bind("p", "")
        + SYNC
        + query("SELECT 1")
    )
    assert errors(exchange(s, batch, count=4)) == []
    granted.revoke()
    assert_delete_in_p_refused(s, gw_db)


def test_a_cursor_declared_under_a_grant_cannot_write_at_its_fetch_after_the_grant(granted, gw_db):
    gw_db.psql("DROP SEQUENCE IF EXISTS pipeline_seq; CREATE SEQUENCE pipeline_seq", DBNAME)
    s = oncall(granted)
    exchange(s, query("BEGIN"))
    declare = "DECLARE c CURSOR FOR SELECT nextval('pipeline_seq') FROM generate_series(1, 5)"
    assert errors(exchange(s, query(declare))) == []
    granted.revoke()
    assert errors(exchange(s, query("FETCH ALL c"))) == ["42501"]
    exchange(s, query("ROLLBACK"))
    called = gw_db.psql("SELECT is_called FROM pipeline_seq", DBNAME)
    assert called == "f", "nextval (write) ran after the grant"


def test_a_readers_own_portal_runs_after_a_grant_it_never_used_ends(granted, gw_db):
    s = oncall(granted)
    exchange(s, query("BEGIN"))
    assert (
        errors(exchange(s, parse("r", "SELECT a FROM pipeline_jit ORDER BY a") + bind("p", "r") + SYNC)) == []
    )
    granted.revoke()
    answers = exchange(s, execute("p") + SYNC)
    assert errors(answers) == []
    assert len([m for m in answers if isinstance(m, pw.DataRow)]) == 2
    exchange(s, query("COMMIT"))


def test_a_portal_bound_under_a_grant_cannot_run_by_sql_fetch_after_it(granted, gw_db):
    # SQL FETCH runs a protocol portal by name: bound to a DELETE ... RETURNING, it deletes.
    s = oncall(granted)
    exchange(s, query("BEGIN"))
    delete = "DELETE FROM pipeline_jit RETURNING a"
    assert errors(exchange(s, parse("", delete) + bind("p", "") + SYNC)) == []
    granted.revoke()
    assert errors(exchange(s, query("FETCH ALL FROM p"))) == ["42501"]
    exchange(s, query("COMMIT"))
    assert gw_db.psql("SELECT count(*) FROM pipeline_jit", DBNAME) == "2", "the DELETE ran after the grant"


def test_a_statement_executing_a_sql_prepared_name_is_judged_at_each_bind(granted, gw_db):
    # "EXECUTE x" parsed under the grant: what x runs is looked up at each Bind, not at the Parse.
    s = oncall(granted)
    assert errors(exchange(s, query("PREPARE x AS DELETE FROM pipeline_jit"))) == []
    assert errors(exchange(s, parse("s", "EXECUTE x") + SYNC)) == []
    granted.revoke()
    assert errors(exchange(s, bind("", "s") + execute("") + SYNC)) == ["42501"]
    assert gw_db.psql("SELECT count(*) FROM pipeline_jit", DBNAME) == "2", "the DELETE ran after the grant"


def test_a_portal_bound_before_a_reload_is_judged_by_the_new_policy(fresh_gateway, gw_db):
    gw = fresh_gateway
    two_rows(gw_db, "pipeline_reload")
    s = raw_login(gw, gw.token("writer"))
    exchange(s, query("BEGIN"))
    assert errors(exchange(s, parse("", "DELETE FROM pipeline_reload") + bind("p", "") + SYNC)) == []
    reload(gw, replace(gw.config, policy=Policy.from_roles({"reader": ["read"], "writer": ["read"]})))
    assert errors(exchange(s, execute("p") + SYNC)) == ["42501"]
    exchange(s, query("COMMIT"))
    assert gw_db.psql("SELECT count(*) FROM pipeline_reload", DBNAME) == "2"
