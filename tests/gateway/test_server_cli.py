"""`hoopctl gateway serve --config FILE` as a real process: serves, reloads on SIGHUP, drains on SIGTERM."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time

import psycopg
import pytest

from hoopctl.access.tokens import TokenAuthority, generate_key, load_key
from hoopctl.localpg import free_port
from tests.gateway.conftest import DBNAME

CONFIG = """
listen: 127.0.0.1:{port}
token_key_file: token.key
recordings:
  dir: recordings
resources:
  {db}:
    host: 127.0.0.1
    port: {pgport}
    user: postgres
    password_file: {secret}
    sslmode: disable
roles:
  reader:
    grants: [{grants}]
"""


SERVE = [sys.executable, "-c", "from hoopctl.cli import main; main()", "gateway", "serve", "--config"]


def _prepare(d, pg):
    """The token key and the database password file a config in `d` points to."""
    generate_key(d / "token.key")
    secret = d / "pg.secret"
    secret.write_text(pg.password + "\n")
    os.chmod(secret, 0o600)


def _write_config(d, port, pg, grants, extra=""):
    (d / "gateway.yaml").write_text(
        CONFIG.format(port=port, db=DBNAME, pgport=pg.port, grants=grants, secret=d / "pg.secret") + extra
    )


@contextlib.contextmanager
def _taken_port():
    """A port something else listens on, for as long as the block runs."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        yield busy.getsockname()[1]


def _connect(port, token):
    body, _, sig = token.rpartition(".")
    return psycopg.connect(
        f"host=127.0.0.1 port={port} dbname={DBNAME} user={body} password={sig}",
        autocommit=True,
        connect_timeout=5,
    )


def test_serve_reload_and_drain_as_a_process(gw_db, tmp_path):
    _prepare(tmp_path, gw_db)
    port = free_port()
    _write_config(tmp_path, port, gw_db, "read")
    token = TokenAuthority(load_key(tmp_path / "token.key")).issue("cli", DBNAME, "reader", 600)
    proc = subprocess.Popen(
        [*SERVE, str(tmp_path / "gateway.yaml")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        conn = None
        for _ in range(100):
            try:
                conn = _connect(port, token)
                break
            except psycopg.OperationalError:
                time.sleep(0.1)
        if conn is None:
            proc.kill()
            raise AssertionError(f"gateway did not come up: {proc.communicate()[0][-2000:]}")
        assert conn.execute("SELECT count(*) FROM accounts").fetchone() == (50,)
        # SIGHUP: the role loses `read`; the open connection stays, its next statement is refused.
        _write_config(tmp_path, port, gw_db, "")
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while True:
            try:
                conn.execute("SELECT 1 FROM accounts LIMIT 1")
            except psycopg.errors.InsufficientPrivilege:
                break
            assert time.monotonic() < deadline, "reload not applied"
            time.sleep(0.1)
        assert conn.execute("SHOW client_encoding").fetchone() == ("UTF8",)  # same connection, still usable
        conn.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    with pytest.raises(psycopg.OperationalError):
        _connect(port, token)


@pytest.mark.parametrize("taken", ["listen", "metrics"])
def test_an_address_in_use_is_one_line_and_leaves_nothing_behind(gw_db, tmp_path, taken):
    _prepare(tmp_path, gw_db)
    with _taken_port() as used:
        port = used if taken == "listen" else free_port()
        metrics = used if taken == "metrics" else free_port()
        _write_config(tmp_path, port, gw_db, "read", f"metrics:\n  listen: 127.0.0.1:{metrics}\n")
        out = subprocess.run(
            [*SERVE, "gateway.yaml"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        f"Error: gateway.yaml: cannot {'listen' if taken == 'listen' else 'serve metrics'} "
        f"on 127.0.0.1:{used}: Address already in use"
    ]
    assert not list((tmp_path / "recordings" / "recorders").iterdir())  # no lock file, no journal


def test_with_workers_an_address_in_use_is_one_line_from_the_parent(gw_db, tmp_path):
    _prepare(tmp_path, gw_db)
    with _taken_port() as used:
        extra = f"limits:\n  workers: 2\nmetrics:\n  listen: 127.0.0.1:{used}\n"
        _write_config(tmp_path, free_port(), gw_db, "read", extra)
        proc = subprocess.Popen(
            [*SERVE, "gateway.yaml"],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            out, err = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.terminate()
            out, err = proc.communicate(timeout=30)
            pytest.fail(f"still running (one worker died, the other serves): stderr={err[-600:]!r}")
    assert proc.returncode == 1, f"rc={proc.returncode} stderr={err[-600:]!r}"
    assert err.strip().splitlines() == [
        f"Error: gateway.yaml: cannot serve metrics on 127.0.0.1:{used}: Address already in use"
    ]
