"""Access control through the real gateway and a real PostgreSQL (issue 4): nested agents'
narrower tokens, revocation, just-in-time grants and holds, OIDC logins, shared state."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import replace

import jwt
import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from hoopctl.access import admin
from hoopctl.access.admin import RoleAccess
from hoopctl.access.oidc import issuers_from_config
from hoopctl.access.tokens import TokenAuthority, TokenBody, attenuate, load_key, split_token
from hoopctl.audit.reader import Recordings
from hoopctl.gateway.config import AccessConfig, TLSConfig
from hoopctl.gateway.policy import Policy
from tests.gateway.conftest import DBNAME, _run_gateway, _stop, make_cert

TABLE = "jit_items"


def _count(pg) -> int:
    return int(pg.psql(f"SELECT count(*) FROM {TABLE}", DBNAME))


@pytest.fixture(scope="module")
def items(gw_db):
    gw_db.psql(
        f"DROP TABLE IF EXISTS {TABLE}; CREATE TABLE {TABLE} (id serial PRIMARY KEY, note text)", DBNAME
    )
    yield gw_db
    gw_db.psql(f"DROP TABLE IF EXISTS {TABLE}", DBNAME)


def access_config(tmp_path, state=None, **roles):
    roles = roles or {
        "writer": RoleAccess(mode="hold", hold_timeout_s=2.0, max_duration_s=600),
        "owner": RoleAccess(mode="request", max_duration_s=600),
    }
    return AccessConfig(
        state=state or f"sqlite://{tmp_path}/state.db",
        admin_socket=tmp_path / "admin.sock",
        approver_group="root",
        poll_interval_ms=100,
        roles=roles,
    )


@pytest.fixture
def gw(base_config, items, tmp_path):
    config = replace(
        base_config,
        policy=Policy.from_roles(
            {"reader": ["read"], "writer": ["read", "write"], "owner": ["read", "write", "ddl"]}
        ),
        access=access_config(tmp_path),
        recordings_dir=tmp_path / "recordings",
    )
    handle = _run_gateway(config, TokenAuthority(load_key(config.token_key_file)), items)
    yield handle
    _stop(handle)


def connect(handle, token, **kw):
    return psycopg.connect(handle.dsn(token), autocommit=True, **kw)


def insert(conn, note="x"):
    conn.execute(f"INSERT INTO {TABLE} (note) VALUES (%s)", (note,))


def token_id(handle, token):
    return handle.authority.authenticate("", token, resource=DBNAME, client_ip="127.0.0.1").token_id


def test_helper_with_a_narrowed_token_cannot_write_though_its_parent_can(gw, items):
    parent = gw.token(role="writer", identity="ci-job")
    child = attenuate(parent, identity="helper", role="reader", ttl_s=60)
    before = _count(items)
    with connect(gw, parent) as job:
        insert(job, "from the job")
    assert _count(items) == before + 1
    with connect(gw, child) as helper:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            insert(helper, "from the helper")
        assert helper.execute(f"SELECT count(*) FROM {TABLE}").fetchone() == (before + 1,)
    assert _count(items) == before + 1
    chains = [r.get("chain") for r in _records(gw) if r["kind"] == "start"]
    assert ["ci-job", "helper"] in chains


def _records(handle):
    recordings = Recordings(handle.config.recordings_dir)
    return [r for sid in recordings.session_ids() for r in recordings.read_session(sid).records]


def test_tampered_widened_or_expired_chains_are_refused(gw):
    parent = gw.token(role="reader", identity="ci-job")
    body, sig = split_token(attenuate(parent, identity="helper"))
    tampered = TokenBody.decode(body)
    tampered = TokenBody(tampered.identifier, tuple(c.replace("reader", "writer") for c in tampered.caveats))
    with pytest.raises(psycopg.OperationalError, match="authentication failed"):
        connect(gw, f"{tampered.encode()}.{sig}")
    with pytest.raises(psycopg.OperationalError, match="widens role"):
        connect(gw, attenuate(parent, role="writer"))
    short = gw.token(role="reader", ttl=1)
    time.sleep(1.2)
    with pytest.raises(psycopg.OperationalError, match="expired"):
        connect(gw, attenuate(short, identity="helper"))


def test_revoking_a_parent_ends_its_childrens_access(gw):
    parent = gw.token(role="reader", identity="ci-job")
    child = attenuate(parent, identity="helper")
    with connect(gw, child) as helper:
        assert helper.execute("SELECT 1").fetchone() == (1,)
        gw.gateway.broker.service.revoke_token(token_id(gw, parent), "root", "contractor left")
        deadline = time.monotonic() + 1.0
        while True:
            try:
                helper.execute("SELECT 1")
            except psycopg.errors.InsufficientPrivilege as exc:
                assert "revoked" in str(exc)
                break
            assert time.monotonic() < deadline, "revocation not effective within 1 s"
            time.sleep(0.05)
    with pytest.raises(psycopg.OperationalError, match="revoked"):
        connect(gw, child)


def decide_in_turn(handle, *decisions):
    """As an approver would: each decision(service, request) on the next held request."""

    def run() -> None:
        service = handle.gateway.broker.service
        seen: set[str] = set()
        for decide in decisions:
            for _ in range(300):
                pending = [r for r in service.list("pending") if r.id not in seen]
                if pending:
                    seen.add(pending[0].id)
                    decide(service, pending[0])
                    break
                time.sleep(0.02)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _decide_when_pending(handle, decide):
    """As an approver would: wait for the held request, then decide(request id) through the admin socket."""
    return decide_in_turn(handle, lambda service, request: decide(request.id))


def test_held_statement_runs_after_approval(gw, items):
    sock = gw.config.access.admin_socket
    before = _count(items)
    with connect(gw, gw.token(role="reader", identity="helper")) as helper:
        approver = _decide_when_pending(gw, lambda rid: admin.call(sock, "approve", id=rid, reason="ok"))
        insert(helper, "held then approved")
        approver.join()
        assert _count(items) == before + 1
        # The grant takes effect without reconnecting: the next write needs no new approval.
        insert(helper, "within the grant")
    assert _count(items) == before + 2
    kinds = {r["event"] for r in _records(gw) if r["kind"] == "event"}
    assert {"access-requested", "access-approved"} <= kinds, kinds


def test_held_statement_fails_after_denial_or_timeout(gw, items):
    sock = gw.config.access.admin_socket
    before = _count(items)
    with connect(gw, gw.token(role="reader", identity="helper")) as helper:
        _decide_when_pending(gw, lambda rid: admin.call(sock, "deny", id=rid, reason="not now"))
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="denied"):
            insert(helper, "denied")
        t0 = time.monotonic()
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="timeout"):
            insert(helper, "nobody answers")
        assert 1.5 < time.monotonic() - t0 < 6
        assert helper.execute("SELECT 1").fetchone() == (1,)
    assert _count(items) == before


def test_request_first_role_names_the_command_and_a_grant_expires_mid_session(gw, items):
    with connect(gw, gw.token(role="writer", identity="deployer")) as deployer:
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="hoopctl access request"):
            deployer.execute("CREATE TABLE jit_new (id int)")
        service = gw.gateway.broker.service
        req = service.request("deployer", DBNAME, "owner", 1.5, "schema change")
        with pytest.raises(ValueError, match="own request"):
            try:
                service.approve(req.id, "deployer")
            except Exception as exc:
                raise ValueError(str(exc)) from exc
        service.approve(req.id, "alice")
        time.sleep(0.3)
        deployer.execute("CREATE TABLE jit_new (id int)")
        deployer.execute("DROP TABLE jit_new")
        time.sleep(1.5)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            deployer.execute("CREATE TABLE jit_new (id int)")
    assert service.events(req.id)[-1]["kind"] in ("expired", "granted")


@pytest.fixture(scope="module")
def oidc_keys():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def test_ci_oidc_token_maps_to_its_role_and_a_wrong_one_is_refused(base_config, items, tmp_path, oidc_keys):
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(oidc_keys.public_key()))
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [{**jwk, "kid": "ci", "alg": "RS256"}]}))
    issuers = issuers_from_config(
        [
            {
                "issuer": "https://ci.test",
                "audience": "hoopctl",
                "jwks_file": str(tmp_path / "jwks.json"),
                "identity": "ci:{project_path}#{job_id}",
                "rules": [{"match": {"project_path": "infra/*"}, "role": "reader", "resource": DBNAME}],
            }
        ]
    )
    cert, key = make_cert(tmp_path)
    config = replace(
        base_config, oidc=issuers, tls=TLSConfig(cert, key, True), recordings_dir=tmp_path / "rec"
    )
    handle = _run_gateway(config, TokenAuthority(load_key(config.token_key_file)), items)
    try:
        now = int(time.time())
        claims = {"iss": "https://ci.test", "aud": "hoopctl", "iat": now, "exp": now + 300}
        good = jwt.encode(
            {**claims, "project_path": "infra/db", "job_id": "77"}, oidc_keys, "RS256", {"kid": "ci"}
        )
        dsn = f"host=127.0.0.1 port={handle.port} dbname={DBNAME} user=ci sslmode=require"
        with psycopg.connect(dsn, password=good, autocommit=True) as ci:
            assert ci.execute("SELECT 1").fetchone() == (1,)
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                insert(ci)
        wrong_aud = jwt.encode(
            {**claims, "aud": "other", "project_path": "infra/db", "job_id": "1"},
            oidc_keys,
            "RS256",
            {"kid": "ci"},
        )
        with pytest.raises(psycopg.OperationalError, match="authentication failed"):
            psycopg.connect(dsn, password=wrong_aud)
    finally:
        _stop(handle)


@pytest.mark.postgres
def test_two_gateways_sharing_postgres_state_see_each_others_approvals(base_config, items, tmp_path):
    items.psql("DROP DATABASE IF EXISTS hoop_shared_state")
    items.psql("CREATE DATABASE hoop_shared_state")
    url = f"postgresql://postgres:{items.password}@127.0.0.1:{items.port}/hoop_shared_state"
    policy = Policy.from_roles({"reader": ["read"], "writer": ["read", "write"]})
    handles = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        config = replace(
            base_config,
            policy=policy,
            access=access_config(tmp_path / name, state=url, writer=RoleAccess(mode="request")),
            recordings_dir=tmp_path / name / "rec",
        )
        handles.append(_run_gateway(config, TokenAuthority(load_key(config.token_key_file)), items))
    a, b = handles
    try:
        bot_token = a.token(role="reader", identity="ops-bot")
        with connect(a, bot_token) as bot:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                insert(bot)
            req = admin.call(
                b.config.access.admin_socket,
                "request",
                token=bot_token,
                resource=DBNAME,
                role="writer",
                duration_s=60,
                reason="fix",
            )
            assert req["ok"]
            b.gateway.broker.service.approve(req["request"]["id"], "alice")  # decided on gateway b
            t0 = time.monotonic()
            while True:
                try:
                    insert(bot, "after approval on the other gateway")
                    break
                except psycopg.errors.InsufficientPrivilege:
                    assert time.monotonic() - t0 < 1.0, "approval on b not seen by a within 1 s"
                    time.sleep(0.05)
    finally:
        for h in handles:
            _stop(h)
        items.psql("DROP DATABASE hoop_shared_state")


def test_grant_expiry_can_end_the_session(base_config, items, tmp_path):
    config = replace(
        base_config,
        policy=Policy.from_roles({"reader": ["read"], "writer": ["read", "write"]}),
        access=replace(access_config(tmp_path, writer=RoleAccess(mode="request")), on_expiry="end_session"),
        recordings_dir=tmp_path / "rec",
    )
    handle = _run_gateway(config, TokenAuthority(load_key(config.token_key_file)), items)
    try:
        with connect(handle, handle.token(role="reader", identity="oncall")) as oncall:
            service = handle.gateway.broker.service
            # Two seconds, not one: on a loaded CI machine the insert must still land inside it.
            service.approve(service.request("oncall", DBNAME, "writer", 2.0, "incident").id, "alice")
            handle.gateway.broker.state.refresh()
            insert(oncall, "during the grant")
            time.sleep(2.6)
            with pytest.raises(psycopg.OperationalError, match="grant this session used has ended"):
                oncall.execute("SELECT 1")
        kinds = [r["event"] for r in _records(handle) if r["kind"] == "event"]
        assert kinds[:2] == ["grant-applied", "grant-expired"]
    finally:
        _stop(handle)
