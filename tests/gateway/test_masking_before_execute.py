"""Masking that must act before the database runs a statement: with `binary: refuse`, an Execute
waits for its portal's description whatever comes in between (a Query, a reload, a catalog lookup,
a hold, a client that leaves); under masking, COPY TO STDOUT never runs, even prepared before the
masking came. Raw protocol over a bare socket, a real gateway and PostgreSQL."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import pytest

from hoopctl.access.tokens import TokenAuthority, load_key
from hoopctl.gateway import pgwire as pw
from hoopctl.gateway.masking import MaskingRules
from hoopctl.gateway.session import Session
from tests.gateway.conftest import DBNAME, _run_gateway, _stop
from tests.gateway.test_server import raw_login
from tests.gateway.test_session_pipeline import (
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
UPDATE = f"UPDATE {TABLE} SET n = n + 1 WHERE id = 1 RETURNING email"


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


@pytest.fixture
def refusing(base_config, gw_db, tmp_path, table):
    config = replace(
        base_config, masking=MaskingRules.from_config(RULES), recordings_dir=tmp_path / "recordings"
    )
    handle = _run_gateway(config, TokenAuthority(load_key(base_config.token_key_file)), gw_db)
    yield handle
    if handle.thread.is_alive():
        _stop(handle)


# ---------------------------------------------------------------- a portal the gateway forgot


def test_a_binary_portal_executed_after_a_simple_query_is_refused_before_it_runs(refusing, gw_db):
    # In a transaction block a named portal outlives a simple Query, which makes the gateway
    # forget its Bind (_forget_portals): the Execute then skips the binary check and runs.
    s = raw_login(refusing, refusing.token("writer"))
    exchange(s, query("BEGIN"))
    assert errors(exchange(s, parse("", UPDATE) + bind_binary("p", "") + SYNC)) == []
    exchange(s, query("SELECT 1"))
    answers = exchange(s, execute("p") + SYNC)
    assert not any(isinstance(m, pw.DataRow) for m in answers)
    exchange(s, query("COMMIT"))
    assert counter(gw_db) == "0", "the UPDATE ran although its binary email column is refused"


# ---------------------------------------------------------------- awaiting a description: no hang


def slow_then(binary_pipeline: bytes, seconds: float = 0.8) -> bytes:
    """The database is busy first, so the gateway awaits the Describe answer that long."""
    return query(f"SELECT pg_sleep({seconds})") + binary_pipeline


def covered_update() -> bytes:
    return parse("", UPDATE) + bind_binary("", "") + execute("") + SYNC


def live_sessions(handle) -> int:
    async def count() -> int:
        return len(handle.gateway.sessions)

    return handle.call(count())


def test_a_client_gone_while_its_execute_awaits_a_description_ends_the_session(refusing, gw_db):
    s = raw_login(refusing, refusing.token("writer"))
    s.sendall(slow_then(covered_update()))
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
    s.sendall(slow_then(covered_update()))
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
        + parse("upd", UPDATE)
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
        + covered_update(),
        count=3,
    )
    assert rows_raw(answers) == [(b"\0\0\0\1",)] * 2 and errors(answers) == ["42501"], answers
    assert counter(gw_db) == "0"


def test_a_portal_closed_between_its_describe_and_its_execute(refusing, gw_db):
    s = raw_login(refusing, refusing.token("writer"))
    exchange(s, query("BEGIN"))
    answers = exchange(
        s,
        parse("", UPDATE)
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
    exchange(s, covered_update())
    exchange(
        s,
        parse("", f"SELECT id FROM {TABLE}") + bind_binary("", "") + describe_portal("") + execute("") + SYNC,
    )
    recorded = [(r["text"], r["allowed"], r["rule"]) for r in statements(refusing, identity)]
    assert recorded == [
        (UPDATE, False, "masking-binary"),
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
            s, parse("", select) + bind_binary("", "") + execute("") + SYNC + covered_update(), count=2
        )
        approver.join()
        assert rows_raw(answers) == [(b"\0\0\0\1",)] and errors(answers) == ["42501"], answers
        assert counter(gw_db) == "0"
        recorded = [(r["text"], r["allowed"], r["rule"]) for r in statements(handle, identity)]
        assert recorded == [(select, True, None), (UPDATE, False, "masking-binary")], recorded
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
