import time

import pytest

from hoopctl.access.jit import APPROVED, DENIED, EXPIRED, AccessError, AccessService
from hoopctl.access.state import AccessState
from hoopctl.store import open_store


@pytest.fixture
def service(tmp_path):
    store = open_store(str(tmp_path / "state.db"))
    yield AccessService(store)
    store.close()


def test_request_approve_grants_for_the_duration(service):
    req = service.request("ci-job", "appdb", "writer", 1800, "hotfix #12")
    assert service.active_grants() == []
    req = service.approve(req.id, "alice")
    assert req.status == APPROVED and req.expires_at - req.starts_at == 1800
    assert [g.identity for g in service.active_grants()] == ["ci-job"]
    kinds = [e["kind"] for e in service.events(req.id)]
    assert kinds == ["requested", "approval", "granted"]


def test_self_approval_is_refused_and_changes_nothing(service):
    req = service.request("alice", "appdb", "writer", 60, "debug")
    with pytest.raises(AccessError, match="own request"):
        service.approve(req.id, "alice")
    assert service.get(req.id).status == "pending"


def test_role_can_require_two_approvers(service):
    req = service.request("ci-job", "appdb", "owner", 60, "migration", approvals_required=2)
    assert service.approve(req.id, "alice").status == "pending"
    with pytest.raises(AccessError, match="already decided"):
        service.approve(req.id, "alice")
    assert service.approve(req.id, "bob").status == APPROVED


def test_deny_needs_a_reason_and_closes_the_request(service):
    req = service.request("ci-job", "appdb", "writer", 60, "x")
    with pytest.raises(AccessError):
        service.deny(req.id, "alice", "")
    assert service.deny(req.id, "alice", "not during freeze").status == DENIED
    with pytest.raises(AccessError, match="denied, not pending"):
        service.approve(req.id, "bob")


def test_expiry_is_recorded(tmp_path):
    now = [1000.0]
    store = open_store(str(tmp_path / "s.db"))
    service = AccessService(store, clock=lambda: now[0])
    req = service.approve(service.request("ci", "appdb", "writer", 30, "x").id, "alice")
    now[0] += 31
    assert service.expire_due() == [req.id]
    assert service.get(req.id).status == EXPIRED
    assert service.events(req.id)[-1]["kind"] == "expired"


def test_state_fails_closed_when_the_store_is_unreadable(service):
    state = AccessState(service, max_staleness_s=0.2)
    state.refresh()
    assert not state.is_revoked(["t1"])
    service.store.close()
    time.sleep(0.3)
    state.refresh()
    assert state.is_revoked(["t1"])
    assert state.grants_for("ci", "appdb") == []


@pytest.mark.postgres
def test_two_gateways_sharing_postgres_see_changes_within_a_second(postgres):
    postgres.psql("DROP DATABASE IF EXISTS hoop_state_test")
    postgres.psql("CREATE DATABASE hoop_state_test")
    url = f"postgresql://postgres:{postgres.password}@127.0.0.1:{postgres.port}/hoop_state_test"
    a, b = AccessService(open_store(url)), AccessService(open_store(url))
    seen_by_b = AccessState(b, interval_s=0.1).start()
    try:
        req = a.request("ci-job", "appdb", "writer", 600, "deploy")
        t0 = time.monotonic()
        a.approve(req.id, "alice")
        while not seen_by_b.grants_for("ci-job", "appdb"):
            assert time.monotonic() - t0 < 1.0, "approval not seen by the other gateway within 1 s"
            time.sleep(0.01)
        t0 = time.monotonic()
        a.revoke_token("tok-parent", "alice", "contractor left")
        while not seen_by_b.is_revoked(["tok-child", "tok-parent"]):
            assert time.monotonic() - t0 < 1.0, "revocation not seen by the other gateway within 1 s"
            time.sleep(0.01)
    finally:
        seen_by_b.stop()
        a.store.close()
        b.store.close()
        postgres.psql("DROP DATABASE hoop_state_test")
