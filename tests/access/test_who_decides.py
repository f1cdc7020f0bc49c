"""Who may decide on a just-in-time request, and what a request may ask for: not whoever filed
it, nor anyone along the requesting token's chain; no NaN durations, no revoked tokens, and a
one-line error for an oversized request.

The admin API is driven through `AdminAPI.handle` with `Peer`s as SO_PEERCRED would
report them, and tokens checked by a real `TokenAuthority` or a real `Gateway`.
"""

from __future__ import annotations

import asyncio
import socket
import tempfile
import threading
from pathlib import Path

import pytest

from hoopctl.access.admin import AdminAPI, Peer, RoleAccess, serve_admin
from hoopctl.access.broker import AccessBroker
from hoopctl.access.jit import PENDING, AccessError, AccessService
from hoopctl.access.state import AccessState
from hoopctl.access.tokens import AuthError, TokenAuthority, attenuate, generate_key, load_key
from hoopctl.gateway.config import GatewayConfig
from hoopctl.gateway.policy import Policy
from hoopctl.store import open_store

GROUP = "approvers"
ALICE = Peer(1001, 1001, 1001, "alice", frozenset({"alice", GROUP}))
BOB = Peer(1002, 1002, 1002, "bob", frozenset({"bob", GROUP}))
ROLES = {"writer": RoleAccess(approvals=1, max_duration_s=3600), "owner": RoleAccess(approvals=2)}


@pytest.fixture
def authority(tmp_path):
    key = tmp_path / "token.key"
    generate_key(key)
    return TokenAuthority(load_key(key))


@pytest.fixture
def service(tmp_path):
    store = open_store(str(tmp_path / "state.db"))
    yield AccessService(store)
    store.close()


@pytest.fixture
def api(service, authority):
    def identify(token: str, resource: str) -> str:
        return authority.authenticate("", token, resource=resource, client_ip="127.0.0.1").principal

    return AdminAPI(service, approver_group=GROUP, roles=ROLES, identify_token=identify)


def file_request(api, peer, token, role="writer"):
    resp = api.handle(
        peer,
        {"op": "request", "token": token, "resource": "appdb", "role": role, "duration_s": 60, "reason": "x"},
    )
    assert resp["ok"], resp
    return resp["request"]["id"]


def test_an_approver_who_filed_a_request_with_a_token_cannot_approve_it(api, service, authority):
    # Bob holds a token issued to carol; the kernel says bob filed the request, so bob may not
    # decide on it (he holds the token the grant will widen).
    request_id = file_request(api, BOB, authority.issue("carol", "appdb", "reader", 600))
    resp = api.handle(BOB, {"op": "approve", "id": request_id})
    assert not resp["ok"] and "own request" in resp["error"]
    assert service.get(request_id).status == PENDING


def test_the_person_a_token_chain_starts_at_cannot_approve_their_agents_request(api, service, authority):
    agent = attenuate(authority.issue("alice", "appdb", "reader", 600), identity="helper", role="reader")
    request_id = file_request(api, BOB, agent, role="owner")
    assert service.get(request_id).requester == "alice>helper"
    # Alice's own agent: her approval must neither grant nor count as one of the two.
    resp = api.handle(ALICE, {"op": "approve", "id": request_id})
    assert not resp["ok"] and "own request" in resp["error"]
    assert service.get(request_id).approvers == ()


def test_a_nan_duration_is_refused_with_a_clear_error(api, service):
    # JSON allows NaN; it slips past `> max` and `<= 0`. SQLite then fails on NOT NULL, while
    # PostgreSQL stores it and its NaN sorts above every time: a grant `expire_due` never ends.
    resp = api.handle(
        ALICE, {"op": "request", "resource": "appdb", "role": "writer", "duration_s": "NaN", "reason": "x"}
    )
    assert not resp["ok"] and "duration" in resp["error"]
    with pytest.raises(AccessError, match="duration"):
        service.request("ci", "appdb", "writer", float("nan"), "x")
    assert service.list() == []


def test_a_revoked_token_cannot_file_requests_on_the_admin_api(tmp_path, authority, service):
    from hoopctl.gateway.server import Gateway

    config = GatewayConfig(
        listen_host="127.0.0.1",
        listen_port=0,
        resources={},
        policy=Policy.from_roles({"reader": ["read"], "writer": ["read", "write"]}),
        masking=None,
        recordings_dir=tmp_path / "recordings",
        token_key_file=tmp_path / "token.key",
    )
    gateway = Gateway(config, authority=authority)
    gateway.broker = AccessBroker(
        service, AccessState(service), role_grants=gateway.role_grants, requestable=ROLES
    )
    token = authority.issue("ci-job", "appdb", "reader", 600)
    token_id = authority.authenticate("", token, resource="appdb", client_ip="127.0.0.1").token_id
    service.revoke_token(token_id, "root", "leaked")
    gateway.broker.state.refresh()
    with pytest.raises(AuthError, match="revoked"):
        gateway._identify(token, "appdb")
    # Nor may a chain that widens its parent's role speak for anyone.
    with pytest.raises(AuthError, match="widens"):
        gateway._identify(attenuate(authority.issue("ci", "appdb", "reader", 600), role="writer"), "appdb")


def test_an_oversized_line_gets_a_one_line_error(api):
    sockdir = Path(tempfile.mkdtemp(prefix="hoopctl-r7-"))
    path = sockdir / "admin.sock"
    loop = asyncio.new_event_loop()
    ready, stop = threading.Event(), asyncio.Event()

    async def main():
        async with await serve_admin(api, path):
            ready.set()
            await stop.wait()

    thread = threading.Thread(target=lambda: loop.run_until_complete(main()), daemon=True)
    thread.start()
    assert ready.wait(5)
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(str(path))
            sock.sendall(b'{"op": "list", "pad": "' + b"x" * 100_000 + b'"}\n')
            reply = sock.makefile("rb").readline()
        assert b'"ok": false' in reply and b"longer than" in reply
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(5)
        path.unlink(missing_ok=True)
        sockdir.rmdir()


def test_root_may_approve_a_request_it_filed_with_someone_elses_token(api, service, authority):
    # Root holds every key on the host: the four-eyes rule binds the token's chain, not root.
    root = Peer(0, 0, 0, "root", frozenset({"root"}))
    request_id = file_request(api, root, authority.issue("carol", "appdb", "reader", 600))
    assert api.handle(root, {"op": "approve", "id": request_id})["ok"]


def test_only_approvers_see_every_request(api, service, authority):
    # A held statement's text goes into its request: others may see only their own requests.
    mallory = Peer(1003, 1003, 1003, "mallory", frozenset({"mallory"}))
    carols = file_request(api, BOB, authority.issue("carol", "appdb", "reader", 600))
    mine = api.handle(mallory, {"op": "request", "role": "writer", "duration_s": 60, "reason": "mine"})
    assert mine["ok"], mine
    listed = api.handle(mallory, {"op": "list"})["requests"]
    assert [r["id"] for r in listed] == [mine["request"]["id"]]
    assert not api.handle(mallory, {"op": "show", "id": carols})["ok"]
    # Bob filed carol's request, and is an approver: he sees both.
    assert {r["id"] for r in api.handle(BOB, {"op": "list"})["requests"]} == {carols, mine["request"]["id"]}
