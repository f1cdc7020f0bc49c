"""The admin API over a real unix socket, with real users told apart by SO_PEERCRED."""

import asyncio
import json
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import pytest

from hoopctl.access.admin import AdminAPI, RoleAccess, call, serve_admin
from hoopctl.access.jit import AccessService
from hoopctl.store import open_store

GROUP = "hooptest-approvers"
USERS = {"hooptest-alice": [GROUP], "hooptest-bob": []}


@pytest.fixture(scope="module")
def users():
    subprocess.run(["groupadd", "-f", GROUP], check=True)
    for user, groups in USERS.items():
        subprocess.run(["userdel", "-r", user], capture_output=True)
        extra = ["-G", ",".join(groups)] if groups else []
        subprocess.run(["useradd", "-M", "-s", "/bin/sh", *extra, user], check=True)
    yield list(USERS)
    for user in USERS:
        subprocess.run(["userdel", user], capture_output=True)
    subprocess.run(["groupdel", GROUP], capture_output=True)


@pytest.fixture
def admin_socket(tmp_path):
    # Other users must reach the socket: pytest's own tmp dirs are private to root.
    sockdir = Path(tempfile.mkdtemp(prefix="hoopctl-admin-"))
    sockdir.chmod(0o755)
    service = AccessService(open_store(str(tmp_path / "state.db")))
    api = AdminAPI(
        service, approver_group=GROUP, roles={"writer": RoleAccess(approvals=1, max_duration_s=3600)}
    )
    path = sockdir / "admin.sock"
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    stop = asyncio.Event()

    async def main():
        server = await serve_admin(api, path)
        ready.set()
        async with server:
            await stop.wait()

    thread = threading.Thread(target=lambda: loop.run_until_complete(main()), daemon=True)
    thread.start()
    ready.wait(5)
    yield path, service
    loop.call_soon_threadsafe(stop.set)
    thread.join(5)
    shutil.rmtree(sockdir)


# The venv's interpreter lives under /root; other users run this stdlib-only client.
CLIENT = """
import json, socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.sendall(sys.argv[2].encode() + b"\\n")
print(s.makefile().readline())
"""


def as_user(user, path, op, **args):
    argv = [
        "runuser",
        "-u",
        user,
        "--",
        "/usr/bin/python3",
        "-c",
        CLIENT,
        str(path),
        json.dumps({"op": op, **args}),
    ]
    out = subprocess.run(argv, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.root
def test_only_approvers_decide_and_never_on_their_own_request(users, admin_socket):
    path, service = admin_socket
    bob_req = as_user(
        "hooptest-bob", path, "request", resource="appdb", role="writer", duration_s=600, reason="fix"
    )
    assert bob_req["ok"] and bob_req["request"]["requester"] == "hooptest-bob"
    req_id = bob_req["request"]["id"]

    refused = as_user("hooptest-bob", path, "approve", id=req_id)
    assert not refused["ok"] and "approver group" in refused["error"]
    assert service.get(req_id).status == "pending"

    alice_own = as_user(
        "hooptest-alice", path, "request", resource="appdb", role="writer", duration_s=60, reason="x"
    )
    own = as_user("hooptest-alice", path, "approve", id=alice_own["request"]["id"])
    assert not own["ok"] and "own request" in own["error"]

    approved = as_user("hooptest-alice", path, "approve", id=req_id, reason="ok")
    assert approved["ok"] and approved["request"]["status"] == "approved"
    assert [g.identity for g in service.active_grants()] == ["hooptest-bob"]
    assert [e["actor"] for e in service.events(req_id)] == [
        "hooptest-bob",
        "hooptest-alice",
        "hooptest-alice",
    ]


def test_bad_input_gets_a_clear_error_and_changes_nothing(admin_socket):
    path, service = admin_socket
    assert call(path, "request", resource="appdb", role="owner", duration_s=60, reason="x")[
        "error"
    ].startswith("role 'owner' cannot be requested")
    assert (
        "at most"
        in call(path, "request", resource="appdb", role="writer", duration_s=1e9, reason="x")["error"]
    )
    assert call(path, "frobnicate")["error"] == "unknown operation 'frobnicate'"
    assert (
        call(path, "request", resource="appdb", role="writer", duration_s="soon", reason="x")["ok"] is False
    )
    assert service.list() == []
