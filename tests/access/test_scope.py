import asyncio
import threading
import time
from dataclasses import dataclass

import pytest

from hoopctl.access.admin import RoleAccess
from hoopctl.access.jit import AccessService
from hoopctl.access.scope import CallerScope
from hoopctl.access.state import AccessState
from hoopctl.access.tokens import Credential
from hoopctl.store import open_store

GRANTS = {
    "reader": frozenset({"read"}),
    "writer": frozenset({"read", "write"}),
    "owner": frozenset({"read", "write", "ddl"}),
}


@dataclass(frozen=True)
class V:
    allowed: bool
    classes: frozenset
    rule: str = "write-not-granted"
    message: str = "refused"


WRITE = V(False, frozenset({"write"}))
READ = V(True, frozenset({"read"}))


def cred(**kw):
    base = dict(
        identity="ci-job",
        resource="appdb",
        role="reader",
        token_id="t2",
        chain=("ci-job",),
        token_ids=("t1", "t2"),
        roles=("reader",),
        expires_at=time.time() + 600,
    )
    return Credential(**{**base, **kw})


@pytest.fixture
def env(tmp_path):
    now = [time.time()]
    service = AccessService(open_store(str(tmp_path / "s.db")), clock=lambda: now[0])
    state = AccessState(service, interval_s=0.05)
    state.refresh()
    return service, state, now


def scope_for(env, c=None, mode="request", **kw):
    service, state, now = env
    roles = {"writer": RoleAccess(mode=mode, hold_timeout_s=1.0), "owner": RoleAccess(mode=mode)}
    return CallerScope(
        c or cred(),
        role_grants=lambda r: GRANTS.get(r, frozenset()),
        requestable=roles,
        state=state,
        service=service,
        clock=lambda: now[0],
        **kw,
    )


def test_refusal_names_the_narrowest_role_and_the_command(env):
    verdict = scope_for(env).decide(WRITE)
    assert not verdict.allowed
    assert "hoopctl access request --resource appdb --role writer" in verdict.message


def test_grant_takes_effect_without_reconnecting_and_expires_mid_session(env):
    service, state, now = env
    scope = scope_for(env)
    assert not scope.decide(WRITE).allowed
    req = service.request("ci-job", "appdb", "writer", 60, "deploy")
    service.approve(req.id, "alice")
    state.refresh()
    allowed = scope.decide(WRITE)
    assert allowed.allowed and allowed.rule == f"grant:{req.id}"
    now[0] += 61
    state.refresh()
    assert not scope.decide(WRITE).allowed
    assert scope.decide(READ).allowed


def test_expiry_can_end_the_session(env):
    service, state, now = env
    scope = scope_for(env, on_expiry="end_session")
    service.approve(service.request("ci-job", "appdb", "writer", 60, "x").id, "alice")
    state.refresh()
    assert scope.decide(WRITE).allowed
    now[0] += 61
    state.refresh()
    assert scope.decide(READ).end_session


def test_grant_for_the_parent_does_not_reach_the_child(env):
    service, state, _ = env
    service.approve(service.request("ci-job", "appdb", "writer", 60, "x").id, "alice")
    state.refresh()
    child = scope_for(env, cred(identity="helper", chain=("ci-job", "helper")))
    assert not child.decide(WRITE).allowed


def test_revoked_parent_and_statement_budget(env):
    service, state, _ = env
    scope = scope_for(env, cred(max_statements=2))
    assert scope.decide(READ).allowed and scope.decide(READ).allowed
    assert scope.decide(READ).rule == "statement-budget"
    service.revoke_token("t1", "alice")
    state.refresh()
    assert scope_for(env).decide(READ).rule == "credential-revoked"


def _decide_later(service, action, delay=0.2):
    def run():
        time.sleep(delay)
        for req in service.list("pending"):
            action(req.id)

    threading.Thread(target=run, daemon=True).start()


def test_held_statement_runs_after_approval(env):
    service, _, _ = env
    scope = scope_for(env, mode="hold")
    refused = scope.decide(WRITE)
    assert scope.hold_role(WRITE) == "writer"
    _decide_later(service, lambda i: service.approve(i, "alice"))
    verdict = asyncio.run(scope.hold(refused, "writer", "UPDATE t SET x = 1"))
    assert verdict.allowed and verdict.grant


def test_held_statement_fails_after_denial_or_timeout(env):
    service, _, _ = env
    scope = scope_for(env, mode="hold")
    _decide_later(service, lambda i: service.deny(i, "alice", "no"))
    assert asyncio.run(scope.hold(WRITE, "writer", "DELETE FROM t")).rule == "hold-denied"
    t0 = time.monotonic()
    assert asyncio.run(scope.hold(WRITE, "writer", "DELETE FROM t")).rule == "hold-timeout"
    assert 0.9 < time.monotonic() - t0 < 3
    assert [r.status for r in service.list()] == ["denied", "revoked"]
