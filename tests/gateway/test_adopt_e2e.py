"""A stray tunnel to the database, adopted: the agent stops it and the gateway takes its
address, so clients keep their address but now need a gateway credential (issue 5)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest

from hoopctl.access.tokens import TokenAuthority, load_key
from tests.agent.test_agent_daemon import Daemon, free_port
from tests.gateway.conftest import DBNAME, _run_gateway, _stop
from tests.gateway.test_access_e2e import access_config

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(shutil.which("socat") is None, reason="socat not installed"),
]


def _port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True
    return False


def test_adopted_tunnel_now_demands_a_gateway_credential(base_config, gw_db, tmp_path):
    config = replace(base_config, access=access_config(tmp_path), recordings_dir=tmp_path / "rec")
    gw = _run_gateway(config, TokenAuthority(load_key(config.token_key_file)), gw_db)
    work = Path(tempfile.mkdtemp(prefix="hoopctl-adopt-", dir="/tmp"))
    port = free_port()
    relay = subprocess.Popen(
        ["socat", f"TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork", f"TCP:127.0.0.1:{gw_db.port}"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    daemon = None
    try:
        (work / "watched").mkdir()
        stray = f"host=127.0.0.1 port={port} dbname={DBNAME} user=postgres password={gw_db.password}"
        for _ in range(50):
            if _port_open(port):
                break
            time.sleep(0.05)
        with psycopg.connect(stray) as direct:  # before: the stray tunnel hands out the database
            assert direct.execute("SELECT 1").fetchone() == (1,)
        target = f"127.0.0.1:{gw_db.port}"
        daemon = Daemon(
            work,
            {
                "mode": "enforce",
                "state_dir": str(work / "state"),
                "vault": str(work / "vault"),
                "gateway_admin_socket": str(config.access.admin_socket),
                "files": {"watch": [str(work / "watched")]},
                "processes": {"tunnel_interval": "200ms", "protected": [target], "grace": "1s"},
                "policy": {
                    "tunnel": {
                        "action": "report",
                        "long_lived": "1s",
                        "rules": [{"targets": [target], "action": "adopt"}],
                    },
                    "orphan": {"action": "report"},
                },
            },
            apply=True,
        )
        ev = daemon.wait_event(
            lambda e: e.get("event") == "action" and e.get("kind") == "tunnel" and e.get("pid") == relay.pid,
            timeout=20,
        )
        assert ev["action"] == "adopt" and ev["result"] == "done", ev
        assert relay.wait(timeout=5) is not None  # the relay is gone
        assert (("127.0.0.1", port)) in gw.gateway.adopted
        # Same address, but the database password no longer opens it...
        with pytest.raises(psycopg.OperationalError, match="authentication failed|SCRAM|password"):
            psycopg.connect(stray, connect_timeout=5)
        # ...a gateway credential does, under the gateway's policy.
        token = gw.token(role="reader", identity="app")
        user, _, sig = token.rpartition(".")
        with psycopg.connect(
            f"host=127.0.0.1 port={port} dbname=anything user={user} password={sig}", autocommit=True
        ) as via_gateway:
            assert via_gateway.execute("SELECT count(*) > 0 FROM accounts").fetchone() == (True,)
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                via_gateway.execute("DELETE FROM accounts")
    finally:
        if daemon is not None:
            daemon.terminate()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(relay.pid, signal.SIGKILL)
        relay.wait()
        _stop(gw)
        shutil.rmtree(work, ignore_errors=True)
