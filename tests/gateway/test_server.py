"""The gateway against a real PostgreSQL: clients work unchanged; refusals hold."""

from __future__ import annotations

import os
import re
import socket
import struct
import subprocess
import threading
import time

import psycopg
import pytest
import scramp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hoopctl.gateway import pgwire as pw
from tests.gateway.conftest import DBNAME


def test_psycopg_reads_through_the_gateway(gateway):
    with psycopg.connect(gateway.dsn(gateway.token())) as conn:
        rows = conn.execute("SELECT id, owner FROM accounts WHERE id <= %s ORDER BY id", (3,)).fetchall()
        assert rows == [(1, "owner1"), (2, "owner2"), (3, "owner3")]
        assert conn.execute("SELECT 1").fetchone() == (1,)
        assert conn.info.backend_pid != 0


def test_psycopg_server_side_cursor_reads_and_cannot_lock_rows(gateway):
    # A named cursor is DECLARE then FETCH: the FETCH needs what the cursor runs.
    with psycopg.connect(gateway.dsn(gateway.token("reader"))) as conn:
        with conn.cursor(name="accounts_cursor") as cur:
            cur.itersize = 7
            cur.execute("SELECT id FROM accounts WHERE id <= %s ORDER BY id", (20,))
            assert [row[0] for row in cur] == list(range(1, 21))
        conn.rollback()
        with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.cursor(name="locking") as cur:
            cur.execute("SELECT id FROM accounts FOR UPDATE")
            cur.fetchall()


def test_reader_write_refused_and_table_unchanged(gateway):
    with psycopg.connect(gateway.dsn(gateway.token("reader")), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("UPDATE accounts SET balance = 0 WHERE id = 1")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM accounts", prepare=False)
        assert conn.execute("SELECT 2").fetchone() == (2,)
    assert gateway.pg.psql("SELECT balance FROM accounts WHERE id = 1", DBNAME) == "100"
    assert gateway.pg.psql("SELECT count(*) FROM accounts", DBNAME) == "50"


# ---------------------------------------------------------------- helpers


def raw_login(gateway, token: str) -> socket.socket:
    """Logs in with a bare socket (SCRAM via scramp), to send what no driver would."""
    body, _, sig = token.rpartition(".")
    s = socket.create_connection(("127.0.0.1", gateway.port), timeout=10)
    s.sendall(pw.StartupMessage({"user": body, "database": DBNAME}).encode())
    parser = pw.BackendParser()
    client = scramp.ScramClient(["SCRAM-SHA-256"], body, sig)
    while True:
        data = s.recv(65536)
        assert data, "gateway closed during login"
        parser.feed(data)
        for msg in parser:
            if isinstance(msg, pw.Authentication) and msg.code == pw.AuthCode.SASL:
                s.sendall(
                    pw.PasswordMessage.for_sasl_initial(
                        "SCRAM-SHA-256", client.get_client_first().encode()
                    ).encode()
                )
            elif isinstance(msg, pw.Authentication) and msg.code == pw.AuthCode.SASL_CONTINUE:
                client.set_server_first(msg.data.decode())
                s.sendall(pw.PasswordMessage(client.get_client_final().encode()).encode())
            elif isinstance(msg, pw.ErrorResponse):
                raise AssertionError(msg.message)
            elif isinstance(msg, pw.ReadyForQuery):
                return s


def read_until_closed(s: socket.socket) -> list:
    parser = pw.BackendParser()
    parser.phase = pw.Phase.READY
    while True:
        try:
            data = s.recv(65536)
        except ConnectionResetError:
            break
        if not data:
            break
        parser.feed(data)
    return list(parser)


# ---------------------------------------------------------------- clients work unchanged


def test_psql_works_unchanged(gateway):
    token = gateway.token()
    body, _, sig = token.rpartition(".")
    out = subprocess.run(
        [
            gateway.pg.bin("psql"),
            "-X",
            "-At",
            "-h",
            "127.0.0.1",
            "-p",
            str(gateway.port),
            "-U",
            body,
            "-d",
            DBNAME,
            "-c",
            "SELECT count(*) FROM accounts; SELECT owner FROM accounts WHERE id = 7",
        ],
        env={**os.environ, "PGPASSWORD": sig},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["50", "owner7"]


@pytest.mark.parametrize("mode", ["simple", "prepared"])
def test_pgbench_select_only_works_unchanged(gateway, pgbench_db, mode):
    token = gateway.token()
    body, _, sig = token.rpartition(".")
    out = subprocess.run(
        [
            gateway.pg.bin("pgbench"),
            "-n",
            "-S",
            "-M",
            mode,
            "-c",
            "4",
            "-j",
            "2",
            "-T",
            "2",
            "-h",
            "127.0.0.1",
            "-p",
            str(gateway.port),
            "-U",
            body,
            DBNAME,
        ],
        env={**os.environ, "PGPASSWORD": sig},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    tx = int(re.search(r"number of transactions actually processed: (\d+)", out.stdout).group(1))
    assert tx > 100
    assert "number of failed transactions: 0" in out.stdout


def test_extended_protocol_pipeline_with_a_refusal_in_the_middle(gateway):
    with psycopg.connect(gateway.dsn(gateway.token("reader")), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.pipeline():
            c1 = conn.execute("SELECT %s::int", (1,))
            conn.execute("UPDATE accounts SET balance = -1 WHERE id = %s", (2,))
            conn.execute("SELECT %s::int", (3,))
        assert c1.fetchone() == (1,)
        with conn.pipeline():
            a = conn.execute("SELECT %s::text", ("a",))
            b = conn.execute("SELECT id FROM accounts WHERE id = %s", (4,))
        assert a.fetchone() == ("a",) and b.fetchone() == (4,)
    assert gateway.pg.psql("SELECT balance FROM accounts WHERE id = 2", DBNAME) == "100"


def test_refusal_inside_a_transaction_fails_it_like_postgres_would(gateway):
    with psycopg.connect(gateway.dsn(gateway.token("reader"))) as conn:
        conn.execute("SELECT 1")
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM accounts WHERE id = 3")
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            conn.execute("SELECT 1")
        conn.rollback()
        assert conn.execute("SELECT count(*) FROM accounts").fetchone() == (50,)
    assert gateway.pg.psql("SELECT count(*) FROM accounts WHERE id = 3", DBNAME) == "1"


def test_simple_protocol_refusal_keeps_the_session_usable(gateway):
    with psycopg.connect(gateway.dsn(gateway.token("reader")), autocommit=True) as conn:
        cur = conn.cursor()
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="refused"):
            cur.execute("SELECT 1; DROP TABLE accounts", prepare=False)
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        cur.execute("SELECT 5")
        assert cur.fetchone() == (5,)
    assert gateway.pg.psql("SELECT count(*) FROM accounts", DBNAME) == "50"


def test_copy_out_and_in_for_a_writer(gateway):
    with psycopg.connect(gateway.dsn(gateway.token("writer")), autocommit=True) as conn:
        with conn.cursor().copy(
            "COPY (SELECT id, owner FROM accounts WHERE id <= 3 ORDER BY id) TO STDOUT"
        ) as cp:
            data = b"".join(bytes(chunk) for chunk in cp)
        assert data == b"1\towner1\n2\towner2\n3\towner3\n"
        gateway.pg.psql(
            "DROP TABLE IF EXISTS copy_target; CREATE TABLE copy_target (id int, note text)", DBNAME
        )
        with conn.cursor().copy("COPY copy_target FROM STDIN") as cp:
            for i in range(100):
                cp.write_row((i, f"n{i}"))
        assert conn.execute("SELECT count(*) FROM copy_target").fetchone() == (100,)
    gateway.pg.psql("DROP TABLE copy_target", DBNAME)


def test_cancel_reaches_the_right_backend(gateway):
    with psycopg.connect(gateway.dsn(gateway.token())) as conn:
        # cancel_safe: the blocking cancel() would hold the GIL the in-process gateway needs.
        timer = threading.Timer(0.5, lambda: conn.cancel_safe(timeout=5))
        timer.start()
        t0 = time.monotonic()
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute("SELECT pg_sleep(20)")
        assert time.monotonic() - t0 < 10
        conn.rollback()
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_notices_and_notifications_are_relayed(gateway):
    with psycopg.connect(gateway.dsn(gateway.token("owner")), autocommit=True) as conn:
        notices = []
        conn.add_notice_handler(lambda d: notices.append(d.message_primary))
        conn.execute("DO $$ BEGIN RAISE NOTICE 'hello from plpgsql'; END $$")
        conn.execute("LISTEN chan")
        conn.execute("NOTIFY chan, 'ping'")
        got = next(conn.notifies(timeout=5, stop_after=1))
        assert notices == ["hello from plpgsql"]
        assert (got.channel, got.payload) == ("chan", "ping")


# ---------------------------------------------------------------- authentication and TLS


def test_bad_signature_refused(gateway):
    token = gateway.token()
    bad = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    with pytest.raises(psycopg.OperationalError, match="authentication failed"):
        psycopg.connect(gateway.dsn(bad))


def test_token_for_another_resource_refused(gateway):
    with pytest.raises(psycopg.OperationalError, match="authentication failed"):
        psycopg.connect(gateway.dsn(gateway.token(resource="otherdb")))


def test_plaintext_password_refused_without_tls(gateway):
    token = gateway.token()
    with pytest.raises(psycopg.OperationalError, match="SCRAM"):
        psycopg.connect(gateway.dsn(token, user="alice", password=token))


def test_tls_required_plaintext_refused(tls_gateway):
    with pytest.raises(psycopg.OperationalError, match="requires TLS"):
        psycopg.connect(tls_gateway.dsn(tls_gateway.token(), sslmode="disable"))


def test_tls_with_scram_and_with_cleartext_token(tls_gateway):
    token = tls_gateway.token()
    with psycopg.connect(tls_gateway.dsn(token, sslmode="require")) as conn:
        assert conn.info.pgconn.ssl_in_use
        assert conn.execute("SELECT 1").fetchone() == (1,)
    with psycopg.connect(tls_gateway.dsn(token, sslmode="require", user="alice", password=token)) as conn:
        assert conn.execute("SELECT owner FROM accounts WHERE id = 9").fetchone() == ("owner9",)


# ---------------------------------------------------------------- one bad connection, one victim


def test_garbage_and_oversized_messages_end_only_that_connection(gateway):
    with psycopg.connect(gateway.dsn(gateway.token()), autocommit=True) as bystander:
        bystander.execute("SELECT 1")
        for payload in (
            b"Q" + struct.pack("!i", 10 * 1024 * 1024) + b"x" * 100,  # above max_message_size
            b"\x00\x01garbage",  # unknown message type
            pw.PasswordMessage.for_password("again").encode(),  # out of order
        ):
            s = raw_login(gateway, gateway.token())
            s.sendall(payload)
            msgs = read_until_closed(s)
            s.close()
            errors = [m for m in msgs if isinstance(m, pw.ErrorResponse)]
            assert errors and errors[-1].sqlstate == "08P01", msgs
            assert bystander.execute("SELECT count(*) FROM accounts").fetchone() == (50,)


def test_garbage_before_login_gets_an_error(gateway):
    s = socket.create_connection(("127.0.0.1", gateway.port), timeout=10)
    s.sendall(b"\x00\x00\x00\x09\x00\x00\x00\x00\x00")
    msgs = read_until_closed(s)
    s.close()
    assert isinstance(msgs[-1], pw.ErrorResponse) and msgs[-1].sqlstate == "08P01"


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.binary(min_size=1, max_size=200))
def test_fuzz_server_random_bytes_after_login_never_disturb_others(gateway, fuzz_bystander, data):
    s = raw_login(gateway, gateway.token())
    s.sendall(data + pw.Sync().encode())
    s.settimeout(2)
    try:
        s.recv(65536)
    except (TimeoutError, ConnectionResetError):
        pass
    s.close()
    assert fuzz_bystander.execute("SELECT 42").fetchone() == (42,)


@pytest.fixture(scope="module")
def fuzz_bystander(gateway):
    with psycopg.connect(gateway.dsn(gateway.token()), autocommit=True) as conn:
        yield conn


@pytest.fixture(scope="module")
def pgbench_db(gw_db):
    subprocess.run(
        [gw_db.bin("pgbench"), "-i", "-q", "-s", "1", "-d", gw_db.dsn(DBNAME)],
        check=True,
        capture_output=True,
    )
    yield
