"""The agent's adopt action against the gateway's admin-socket contract, with a real relay process.

The gateway side (a listener taking over the freed address) is the lead's; here a small unix socket
server speaks the contract (`{"op": "adopt", listen_host, listen_port, target_host, target_port}` ->
`{"ok": true, "resource": NAME}`) and records when it was called, so the order is checked: the
tunnel is journaled, then stopped (its port closed), then the gateway is asked.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from hoopctl.act.quarantine import Vault
from hoopctl.agent.actions import Actor

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(shutil.which("socat") is None, reason="socat not installed"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FakeGatewayAdmin:
    """Answers one adopt request; notes whether the tunnel's port was already closed at that moment."""

    def __init__(self, path: Path, reply: dict, listen_port: int) -> None:
        self.requests: list[dict] = []
        self.port_was_free: bool | None = None
        self.reply = reply
        self.listen_port = listen_port
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen(1)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.server.accept()
        with conn:
            buf = b""
            while not buf.endswith(b"\n"):
                buf += conn.recv(4096)
            self.requests.append(json.loads(buf))
            with socket.socket() as probe:
                self.port_was_free = probe.connect_ex(("127.0.0.1", self.listen_port)) != 0
            conn.sendall(json.dumps(self.reply).encode() + b"\n")

    def close(self) -> None:
        self.server.close()


def relay(listen: int, target: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        ["socat", f"TCP-LISTEN:{listen},bind=127.0.0.1,reuseaddr,fork", f"TCP:127.0.0.1:{target}"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", listen)) == 0:
                return proc
        time.sleep(0.02)
    proc.kill()
    raise AssertionError("socat never listened")


@pytest.mark.parametrize("ok", [True, False])
def test_adopt_stops_the_tunnel_then_asks_the_gateway(tmp_path: Path, ok: bool):
    listen, target = free_port(), free_port()
    sock = tmp_path / "admin.sock"
    reply = {"ok": True, "resource": "appdb"} if ok else {"ok": False, "error": "no resource at that target"}
    gateway = FakeGatewayAdmin(sock, reply, listen)
    proc = relay(listen, target)
    try:
        actor = Actor(str(tmp_path / "vault"), str(sock), grace=2)
        out = actor.adopt(proc.pid, (f"127.0.0.1:{listen}",), listen, f"127.0.0.1:{target}")
        actor.close()
        gateway.thread.join(timeout=5)
        assert gateway.requests == [
            {
                "op": "adopt",
                "listen_host": "127.0.0.1",
                "listen_port": listen,
                "target_host": "127.0.0.1",
                "target_port": target,
            }
        ]
        assert gateway.port_was_free is True  # stopped before the gateway was asked to take the port
        assert proc.wait(timeout=5) is not None
        with Vault(tmp_path / "vault", create=False) as vault:
            states = [(r.action, r.state) for r in vault.journal.records()]
        assert states[0] == ("adopt", "started") and ("terminate", "done") in states
        if ok:
            assert out.result == "done" and "appdb" in out.detail and states[-1] == ("adopt", "done")
        else:
            assert out.result == "failed" and "no resource at that target" in out.detail
            assert states[-1] == ("adopt", "failed")
    finally:
        gateway.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_adopt_without_gateway_socket_stops_nothing(tmp_path: Path):
    listen, target = free_port(), free_port()
    proc = relay(listen, target)
    try:
        out = Actor(str(tmp_path / "vault"), None).adopt(
            proc.pid, (f"127.0.0.1:{listen}",), listen, f"127.0.0.1:{target}"
        )
        assert out.result == "skipped" and "gateway_admin_socket" in out.detail
        assert proc.poll() is None and not (tmp_path / "vault").exists()
    finally:
        proc.kill()
        proc.wait()
