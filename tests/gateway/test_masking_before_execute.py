"""Masking that must act before the database runs a statement: with `binary: refuse`, an Execute
waits for its portal's description whatever comes in between (a Query, a reload, a catalog lookup,
a hold, a drain, a revocation, a client that leaves), and a pipeline of such waits costs linear
work; under masking, COPY TO STDOUT never runs, even prepared before the masking came. Raw protocol
over a bare socket, a real gateway and PostgreSQL."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import pytest

from hoopctl.access.admin import RoleAccess
from hoopctl.access.tokens import TokenAuthority, load_key
from hoopctl.gateway import pgwire as pw
from hoopctl.gateway.masking import MaskingRules
from hoopctl.gateway.policy import Policy
from hoopctl.gateway.session import Session
from hoopctl.localpg import free_port
from tests.gateway.conftest import DBNAME, _run_gateway, _stop
from tests.gateway.test_access_e2e import access_config, token_id
from tests.gateway.test_metrics import _scrape
from tests.gateway.test_server import raw_login
from tests.gateway.test_session_pipeline import (
    FLUSH,
    SYNC,
    bind_binary,
    describe_portal,
    errors,
    exchange,
    execute,
    parse,
    query,
    reload,
    rows,
    statements,
)

TABLE = "rb_review"
RULES = {"rules": [{"column": "*email*", "style": "partial"}], "binary": "refuse"}
COVERED = f"UPDATE {TABLE} SET n = n + 1 WHERE id = 1 RETURNING email"
UNCOVERED = f"UPDATE {TABLE} SET n = n + 1 WHERE id = 1 RETURNING id"
NO_DATA = f"UPDATE {TABLE} SET n = n + 1 WHERE id = 1"


def counter(db) -> str:
    return db.psql(f"SELECT n FROM {TABLE} WHERE id = 1", DBNAME).strip()


@pytest.fixture
def table(gw_db):
    gw_db.psql(
        f"DROP TABLE IF EXISTS {TABLE}; CREATE TABLE {TABLE} (id int, email text, n int);"
        f"INSERT INTO {TABLE} VALUES (1, 'ann@example.com', 0)",
        DBNAME,
    )
    return TABLE


def start(base_config, gw_db, tmp_path, **changes):
    config = replace(
        base_config,
        masking=MaskingRules.from_config(RULES),
        recordings_dir=tmp_path / "recordings",
        **changes,
    )
    return _run_gateway(config, TokenAuthority(load_key(base_config.token_key_file)), gw_db)


@pytest.fixture
def refusing(base_config, gw_db, tmp_path, table):
    handle = start(base_config, gw_db, tmp_path)
    yield handle
    if handle.thread.is_alive():
        _stop(handle)


def kinds(messages: list) -> list[str]:
    return [m if isinstance(m, str) else type(m).__name__ for m in messages]


# ---------------------------------------------------------------- a portal the gateway forgot


def test_a_binary_portal_executed_after_a_simple_query_is_refused_before_it_runs(refusing, gw_db):
    # In a transaction block a named portal outlives a simple Query, which makes the gateway
    # forget its Bind (_forget_portals): the Execute then skips the binary check and runs.
    s = raw_login(refusing, refusing.token("writer"))
    exchange(s, query("BEGIN"))
    assert errors(exchange(s, parse("", COVERED) + bind_binary("p", "") + SYNC)) == []
    exchange(s, query("SELECT 1"))
    answers = exchange(s, execute("p") + SYNC)
    assert not any(isinstance(m, pw.DataRow) for m in answers)
    exchange(s, query("COMMIT"))
    assert counter(gw_db) == "0", "the UPDATE ran although its binary email column is refused"


# ---------------------------------------------------------------- awaiting a description: no hang


def slow_then(binary_pipeline: bytes, seconds: float = 0.8) -> bytes:
    """The database is busy first, so the gateway awaits the Describe answer that long."""
    return query(f"SELECT pg_sleep({seconds})") + binary_pipeline


def one_update(sql: str) -> bytes:
    return parse("", sql) + bind_binary("", "") + execute("") + SYNC


def live_sessions(handle) -> int:
    async def count() -> int:
        return len(handle.gateway.sessions)

    return handle.call(count())


def test_a_client_gone_while_its_execute_awaits_a_description_ends_the_session(refusing, gw_db):
    s = raw_login(refusing, refusing.token("writer"))
    s.sendall(slow_then(one_update(COVERED)))
    time.sleep(0.2)
    s.close()
    deadline = time.monotonic() + 5
    while live_sessions(refusing) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert live_sessions(refusing) == 0
    time.sleep(1.0)
    assert counter(gw_db) == "0"


@pytest.mark.parametrize("binary", ["null", "refuse"])
def test_a_reload_while_an_execute_awaits_its_description(refusing, base_config, gw_db, binary):
    s = raw_login(refusing, refusing.token("writer"))
    s.sendall(slow_then(one_update(COVERED)))
    time.sleep(0.2)
    new = replace(refusing.config, masking=MaskingRules.from_config({**RULES, "binary": binary}))
    reload(refusing, new)
    answers = exchange(s, b"", count=2)
    assert answers[-1].__class__ is pw.ReadyForQuery, answers
    if binary == "refuse":
        assert errors(answers) == ["42501"] and counter(gw_db) == "0"
    else:  # now nulled, and run
        assert rows_raw(answers) == [(b"",), (None,)] and counter(gw_db) == "1"  # pg_sleep, then email
    assert rows(exchange(s, query("SELECT 1"))) == [("1",)]


def rows_raw(messages: list) -> list[tuple]:
    return [
        tuple(None if v is None else bytes(v) for v in m.values)
        for m in messages
        if isinstance(m, pw.DataRow)
    ]


def test_an_awaited_description_that_needs_the_catalog_first(
    base_config, gw_db, tmp_path, table, monkeypatch
):
    # A field rule needs the table's name: the Describe answer stalls on a catalog lookup
    # while the Execute awaits it.
    stalls: list[bool] = []
    stall = Session._stall

    def counted(self, coro):
        stalls.append(self.awaiting is not None)
        stall(self, coro)

    monkeypatch.setattr(Session, "_stall", counted)
    masking = MaskingRules.from_config(
        {"rules": [{"field": f"{DBNAME}.public.{TABLE}.n", "style": "full"}], "binary": "refuse"}
    )
    config = replace(base_config, masking=masking, recordings_dir=tmp_path / "rec")
    handle = _run_gateway(config, TokenAuthority(load_key(base_config.token_key_file)), gw_db)
    try:
        s = raw_login(handle, handle.token("writer"))
        update = f"UPDATE {TABLE} SET n = n + 1 WHERE id = 1 RETURNING n"
        answers = exchange(s, parse("", update) + bind_binary("", "") + execute("") + SYNC)
        assert errors(answers) == ["42501"] and counter(gw_db) == "0"
        answers = exchange(s, parse("", f"SELECT id FROM {TABLE}") + bind_binary("", "") + execute("") + SYNC)
        assert rows_raw(answers) == [(b"\0\0\0\1",)]
        assert stalls and stalls[0], "the awaited answer did not stall on the catalog"
    finally:
        _stop(handle)


# ---------------------------------------------------------------- pipelines


def test_several_binary_portals_in_one_pipeline(refusing, gw_db):
    s = raw_login(refusing, refusing.token("writer"))
    exchange(s, query("BEGIN"))
    answers = exchange(
        s,
        parse("sel", f"SELECT id FROM {TABLE}")
        + parse("upd", COVERED)
        + bind_binary("p1", "sel")
        + bind_binary("p2", "upd")
        + bind_binary("p3", "sel")
        + describe_portal("p3")
        + execute("p1")
        + execute("p3")
        + execute("p2")
        + execute("p1")
        + SYNC,
    )
    assert rows_raw(answers) == [(b"\0\0\0\1",)] * 2 and errors(answers) == ["42501"], answers
    exchange(s, query("ROLLBACK"))
    assert counter(gw_db) == "0"


def test_max_rows_then_the_rest_of_a_binary_portal(refusing):
    s = raw_login(refusing, refusing.token("reader"))
    exchange(s, query("BEGIN"))
    answers = exchange(
        s,
        parse("", "SELECT g FROM generate_series(1, 3) g")
        + bind_binary("p", "")
        + pw.Execute("p", 1).encode()
        + pw.Execute("p", 0).encode()
        + SYNC,
    )
    assert len(rows_raw(answers)) == 3 and any(isinstance(m, pw.PortalSuspended) for m in answers), answers
    exchange(s, query("COMMIT"))


def test_an_execute_after_a_sync_in_the_same_batch(refusing, gw_db):
    s = raw_login(refusing, refusing.token("writer"))
    answers = exchange(
        s,
        parse("", f"SELECT id FROM {TABLE}")
        + bind_binary("", "")
        + execute("")
        + SYNC
        + bind_binary("", "")
        + execute("")
        + SYNC
        + one_update(COVERED),
        count=3,
    )
    assert rows_raw(answers) == [(b"\0\0\0\1",)] * 2 and errors(answers) == ["42501"], answers
    assert counter(gw_db) == "0"


def test_a_portal_closed_between_its_describe_and_its_execute(refusing, gw_db):
    s = raw_login(refusing, refusing.token("writer"))
    exchange(s, query("BEGIN"))
    answers = exchange(
        s,
        parse("", COVERED)
        + bind_binary("p", "")
        + describe_portal("p")
        + pw.Close("P", "p").encode()
        + execute("p")
        + SYNC,
    )
    assert errors(answers) == ["34000"] and not rows_raw(answers), answers
    exchange(s, query("ROLLBACK"))
    assert counter(gw_db) == "0"


def test_many_pipelined_binary_executes_each_awaiting(refusing):
    s = raw_login(refusing, refusing.token("reader"))
    batch = parse("sel", f"SELECT id FROM {TABLE}") + (bind_binary("", "sel") + execute("") + SYNC) * 2000
    done = threading.Event()
    threading.Thread(target=lambda: (s.sendall(batch), done.set()), daemon=True).start()
    answers = exchange(s, b"", count=2000)
    assert len(rows_raw(answers)) == 2000 and done.is_set()


def test_each_statement_is_recorded_once(refusing):
    identity = "rb-recorded-once"
    s = raw_login(refusing, refusing.token("writer", identity=identity))
    exchange(s, one_update(COVERED))
    exchange(
        s,
        parse("", f"SELECT id FROM {TABLE}") + bind_binary("", "") + describe_portal("") + execute("") + SYNC,
    )
    recorded = [(r["text"], r["allowed"], r["rule"]) for r in statements(refusing, identity)]
    assert recorded == [
        (COVERED, False, "masking-binary"),
        (f"SELECT id FROM {TABLE}", True, None),
    ], recorded


# ---------------------------------------------------------------- approval holds


def test_an_approval_hold_between_two_awaited_descriptions(base_config, gw_db, tmp_path, table):
    from hoopctl.access import admin
    from tests.gateway.test_access_e2e import _decide_when_pending, access_config

    config = replace(
        base_config,
        masking=MaskingRules.from_config(RULES),
        access=access_config(tmp_path),
        recordings_dir=tmp_path / "rec",
    )
    handle = _run_gateway(config, TokenAuthority(load_key(base_config.token_key_file)), gw_db)
    try:
        identity = "rb-hold"
        s = raw_login(handle, handle.token("reader", identity=identity))
        sock = config.access.admin_socket
        approver = _decide_when_pending(handle, lambda rid: admin.call(sock, "approve", id=rid, reason="ok"))
        select = f"SELECT id FROM {TABLE}"
        answers = exchange(
            s, parse("", select) + bind_binary("", "") + execute("") + SYNC + one_update(COVERED), count=2
        )
        approver.join()
        assert rows_raw(answers) == [(b"\0\0\0\1",)] and errors(answers) == ["42501"], answers
        assert counter(gw_db) == "0"
        recorded = [(r["text"], r["allowed"], r["rule"]) for r in statements(handle, identity)]
        assert recorded == [(select, True, None), (COVERED, False, "masking-binary")], recorded
    finally:
        _stop(handle)


# ---------------------------------------------------------------- COPY TO STDOUT


def test_a_copy_out_prepared_before_masking_came_with_a_reload_is_not_run(
    base_config, gw_db, tmp_path, table
):
    # Parsed while no masking applied; a SIGHUP turns masking on; its Bind and Execute then
    # run the COPY, whose DELETE ... RETURNING deletes before the data is withheld.
    config = replace(base_config, recordings_dir=tmp_path / "rec")
    handle = _run_gateway(config, TokenAuthority(load_key(base_config.token_key_file)), gw_db)
    try:
        s = raw_login(handle, handle.token("writer"))
        copy = f"COPY (DELETE FROM {TABLE} WHERE id = 1 RETURNING email) TO STDOUT"
        assert errors(exchange(s, parse("cp", copy) + SYNC)) == []
        reload(handle, replace(config, masking=MaskingRules.from_config(RULES)))
        answers = exchange(s, pw.Bind("", "cp", (), (), ()).encode() + execute("") + SYNC)
        assert errors(answers) == ["42501"]
        assert gw_db.psql(f"SELECT count(*) FROM {TABLE}", DBNAME).strip() == "1", "the COPY's DELETE ran"
    finally:
        _stop(handle)


# ---------------------------------------------------------------- drain


def test_a_drain_while_an_execute_awaits_its_description(refusing, gw_db):
    s = raw_login(refusing, refusing.token("writer"))
    s.sendall(slow_then(one_update(COVERED)))
    time.sleep(0.2)
    drained = threading.Event()
    threading.Thread(
        target=lambda: (refusing.call(refusing.gateway.drain(3.0)), drained.set()), daemon=True
    ).start()
    answers = exchange(s, b"", count=2)
    assert errors(answers) == ["42501"] and kinds(answers)[-1] == "ReadyForQuery", answers
    s.sendall(pw.Terminate().encode())
    assert drained.wait(2.0), "the drain did not finish once the client left"
    assert live_sessions(refusing) == 0 and counter(gw_db) == "0"


def test_a_drain_that_times_out_ends_a_session_awaiting_a_description(refusing, gw_db):
    s = raw_login(refusing, refusing.token("writer"))
    s.sendall(slow_then(one_update(COVERED), seconds=3))
    time.sleep(0.2)
    t0 = time.monotonic()
    refusing.call(refusing.gateway.drain(0.5))
    assert time.monotonic() - t0 < 2.0
    answers = exchange(s, b"", until=pw.ErrorResponse)
    assert "closed" in answers or any(getattr(m, "sqlstate", "") == "57P01" for m in answers), answers
    assert live_sessions(refusing) == 0
    time.sleep(3.2)
    assert counter(gw_db) == "0"


# ---------------------------------------------------------------- revocation and grants


def test_a_token_revoked_while_its_execute_awaits_is_refused(base_config, gw_db, tmp_path, table):
    handle = start(base_config, gw_db, tmp_path, access=access_config(tmp_path))
    try:
        identity = "rb2-revoked"
        token = handle.token("writer", identity=identity)
        s = raw_login(handle, token)
        s.sendall(slow_then(one_update(UNCOVERED), seconds=1.0))
        time.sleep(0.2)
        handle.gateway.broker.service.revoke_token(token_id(handle, token), "root", "left")
        handle.gateway.broker.state.refresh()
        answers = exchange(s, b"", count=2)
        assert errors(answers) == ["42501"] and "revoked" in answers[-2].message, answers
        assert counter(gw_db) == "0", "the Execute ran after its token was revoked"
        recorded = [(r["text"], r["allowed"], r["rule"]) for r in statements(handle, identity)]
        assert recorded[-1] == (UNCOVERED, False, "credential"), recorded
    finally:
        _stop(handle)


def test_a_grant_that_expires_while_an_execute_awaits_ends_the_session(base_config, gw_db, tmp_path, table):
    access = replace(access_config(tmp_path, writer=RoleAccess(mode="request")), on_expiry="end_session")
    policy = Policy.from_roles({"reader": ["read"], "writer": ["read", "write"]})
    handle = start(base_config, gw_db, tmp_path, access=access, policy=policy)
    try:
        s = raw_login(handle, handle.token("reader", identity="rb2-oncall"))
        service = handle.gateway.broker.service
        service.approve(service.request("rb2-oncall", DBNAME, "writer", 1.0, "incident").id, "alice")
        handle.gateway.broker.state.refresh()
        # The Bind is judged under the grant; the Execute resumes after it ended.
        answers = exchange(s, slow_then(one_update(UNCOVERED), seconds=1.6), count=2)
        assert any(getattr(m, "sqlstate", "") == "57P01" for m in answers), answers
        assert counter(gw_db) == "0"
    finally:
        _stop(handle)


# ---------------------------------------------------------------- what the client sees


def test_a_client_flush_a_second_describe_and_a_statement_describe_while_awaiting(refusing, gw_db):
    identity = "rb2-describes"
    s = raw_login(refusing, refusing.token("writer", identity=identity))
    exchange(s, query("BEGIN"))
    answers = exchange(
        s,
        parse("", NO_DATA)
        + pw.Describe("S", "").encode()
        + bind_binary("p", "")
        + describe_portal("p")
        + describe_portal("p")
        + execute("p")
        + FLUSH
        + SYNC,
    )
    assert kinds(answers) == [
        "ParseComplete",
        "ParameterDescription",
        "NoData",
        "BindComplete",
        "NoData",
        "NoData",
        "CommandComplete",
        "ReadyForQuery",
    ], answers
    exchange(s, query("COMMIT"))
    assert counter(gw_db) == "1"
    recorded = [
        (r["text"], r["allowed"], (r["result"] or {}).get("rows")) for r in statements(refusing, identity)
    ]
    assert (NO_DATA, True, 1) in recorded, recorded


def test_a_write_without_returning_described_as_no_data_runs_once(refusing, gw_db):
    identity = "rb2-nodata"
    s = raw_login(refusing, refusing.token("writer", identity=identity))
    answers = exchange(s, one_update(NO_DATA) + one_update(COVERED), count=2)
    assert kinds(answers)[:4] == ["ParseComplete", "BindComplete", "CommandComplete", "ReadyForQuery"]
    assert errors(answers) == ["42501"], answers
    assert counter(gw_db) == "1"
    recorded = [
        (r["text"], r["allowed"], (r["result"] or {}).get("rows")) for r in statements(refusing, identity)
    ]
    assert recorded[0] == (NO_DATA, True, 1), recorded


# ---------------------------------------------------------------- metrics


def test_a_session_awaiting_a_description_is_not_counted_as_held(base_config, gw_db, tmp_path, table):
    port = free_port()
    handle = start(base_config, gw_db, tmp_path, metrics_listen=("127.0.0.1", port))
    try:
        s = raw_login(handle, handle.token("writer"))
        s.sendall(slow_then(one_update(COVERED), seconds=1.0))
        time.sleep(0.3)
        assert handle.gateway.sessions and next(iter(handle.gateway.sessions)).awaiting is not None
        metrics = _scrape(port)
        assert metrics[("hoopctl_gateway_sessions_held", (("resource", DBNAME),))] == 0
        assert metrics[("hoopctl_gateway_sessions", (("resource", DBNAME),))] == 1
        exchange(s, b"", count=2)
    finally:
        _stop(handle)


# ---------------------------------------------------------------- a hostile pipeline


def awaited_executes(count: int) -> bytes:
    """Binary Executes of a portal the gateway never saw bound: each one awaits a Describe."""
    return (execute("nope") + SYNC) * count


def counting_frames(monkeypatch) -> list[int]:
    """Counts the frames the gateway cuts (both directions): the work its relay does."""
    cut = [0]
    split = pw.split_frames

    def counted(buf, max_size):
        frames, used = split(buf, max_size)
        cut[0] += len(frames)
        return frames, used

    monkeypatch.setattr(pw, "split_frames", counted)
    return cut


def read_until(s, count: int, limit: float = 60.0) -> int:
    """ReadyForQuery messages read until `count` of them, EOF, or `limit` seconds."""
    parser = pw.BackendParser()
    parser.phase = pw.Phase.READY
    seen = 0
    deadline = time.monotonic() + limit
    s.settimeout(limit)
    while seen < count and time.monotonic() < deadline:
        data = s.recv(262144)
        if not data:
            break
        parser.feed(data)
        seen += sum(isinstance(m, pw.ReadyForQuery) for m in parser)
    return seen


def test_many_awaited_executes_cost_linear_work(refusing, monkeypatch):
    # Each awaited Execute resumes by cutting every frame still held from the client, so a
    # pipeline of N awaiting Executes costs O(N^2) on the event loop every session shares.
    count = 3000
    cut = counting_frames(monkeypatch)
    s = raw_login(refusing, refusing.token("reader"))
    threading.Thread(target=lambda: s.sendall(awaited_executes(count)), daemon=True).start()
    assert read_until(s, count) == count
    sent, answered = 2 * count, 2 * count  # Execute + Sync; ErrorResponse + ReadyForQuery
    assert cut[0] < 4 * (sent + answered), f"{cut[0]} frames cut for {sent + answered} messages"


def test_a_client_leaving_in_a_pipeline_of_awaited_executes(refusing):
    s = raw_login(refusing, refusing.token("reader"))
    other = raw_login(refusing, refusing.token("reader"))
    threading.Thread(target=lambda: s.sendall(awaited_executes(20000)), daemon=True).start()
    assert read_until(s, 50) >= 50
    s.close()
    deadline = time.monotonic() + 5
    while live_sessions(refusing) > 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert live_sessions(refusing) == 1
    assert kinds(exchange(other, query("SELECT 1")))[-1] == "ReadyForQuery"
