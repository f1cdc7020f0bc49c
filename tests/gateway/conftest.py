"""Fixtures for the gateway's server tests: a real PostgreSQL behind a real gateway.

The gateway runs on its own event loop in a thread, so tests can drive it with
blocking clients (psycopg, psql, pgbench).
"""

from __future__ import annotations

import asyncio
import datetime
import os
import threading
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from hoopctl.access.tokens import TokenAuthority, generate_key, load_key
from hoopctl.gateway.config import GatewayConfig, Resource, TLSConfig

DBNAME = "gwtest"


def _policy():
    from hoopctl.gateway.policy import Policy

    return Policy.from_roles(
        {
            "reader": ["read"],
            "writer": ["read", "write", "copy"],
            "owner": ["read", "write", "copy", "procedural"],
        }
    )


@dataclass
class GatewayHandle:
    gateway: object
    loop: asyncio.AbstractEventLoop
    port: int
    authority: TokenAuthority
    config: GatewayConfig
    pg: object

    def token(
        self, role: str = "reader", identity: str = "alice", resource: str = DBNAME, ttl: float = 600
    ) -> str:
        return self.authority.issue(identity, resource, role, ttl)

    def dsn(self, token: str, **extra: str) -> str:
        body, _, sig = token.rpartition(".")
        parts = {"host": "127.0.0.1", "port": str(self.port), "dbname": DBNAME, "user": body, "password": sig}
        parts.update(extra)
        return " ".join(f"{k}={v}" for k, v in parts.items())

    def call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)


def _run_gateway(config: GatewayConfig, authority: TokenAuthority, pg) -> GatewayHandle:
    from hoopctl.gateway.server import Gateway

    loop = asyncio.new_event_loop()
    ready = threading.Event()
    thread = threading.Thread(target=lambda: (asyncio.set_event_loop(loop), ready.set(), loop.run_forever()))
    thread.daemon = True
    thread.start()
    ready.wait()
    gw = Gateway(config, authority=authority)
    asyncio.run_coroutine_threadsafe(gw.start(), loop).result(30)
    handle = GatewayHandle(gw, loop, gw.port, authority, config, pg)
    handle.thread = thread
    return handle


def _stop(handle: GatewayHandle) -> None:
    handle.call(handle.gateway.drain(1.0))
    handle.loop.call_soon_threadsafe(handle.loop.stop)
    handle.thread.join(10)


@pytest.fixture(scope="session")
def gw_db(postgres):
    postgres.psql(f"DROP DATABASE IF EXISTS {DBNAME}")
    postgres.psql(f"CREATE DATABASE {DBNAME}")
    postgres.psql(
        "CREATE TABLE accounts (id int PRIMARY KEY, owner text, email text, balance int);"
        "INSERT INTO accounts SELECT g, 'owner' || g, 'user' || g || '@example.com', 100 FROM generate_series(1, 50) g;",
        DBNAME,
    )
    return postgres


@pytest.fixture(scope="session")
def base_config(gw_db, tmp_path_factory) -> GatewayConfig:
    d = tmp_path_factory.mktemp("gw")
    key = d / "token.key"
    generate_key(key)
    resource = Resource(
        name=DBNAME,
        host="127.0.0.1",
        port=gw_db.port,
        dbname=DBNAME,
        user="postgres",
        password=gw_db.password,
        sslmode="disable",
    )
    return GatewayConfig(
        listen_host="127.0.0.1",
        listen_port=0,
        resources={DBNAME: resource},
        policy=_policy(),
        masking=None,
        recordings_dir=d / "recordings",
        token_key_file=key,
        max_message_size=64 * 1024,
    )


@pytest.fixture(scope="session")
def gateway(base_config, gw_db):
    authority = TokenAuthority(load_key(base_config.token_key_file))
    handle = _run_gateway(base_config, authority, gw_db)
    yield handle
    _stop(handle)


def make_cert(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (cryptography)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hoopctl-test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "gw.crt", directory / "gw.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    os.chmod(key_file, 0o600)
    return cert_file, key_file


@pytest.fixture(scope="session")
def tls_gateway(base_config, gw_db, tmp_path_factory):
    cert, key = make_cert(tmp_path_factory.mktemp("tls"))
    config = replace(base_config, tls=TLSConfig(cert_file=cert, key_file=key, require=True))
    authority = TokenAuthority(load_key(base_config.token_key_file))
    handle = _run_gateway(config, authority, gw_db)
    yield handle
    _stop(handle)


@pytest.fixture(scope="session")
def masking_gateway(base_config, gw_db, tmp_path_factory):
    """A gateway with masking rules: emails by column name, owner by resource.table.column."""
    from hoopctl.gateway.masking import MaskingRules

    rules = MaskingRules.from_config(
        [
            {"name": "emails", "column": ["*email*"], "style": "partial"},
            {"name": "owners", "field": f"{DBNAME}.public.accounts.owner", "style": "full"},
        ]
    )
    config = replace(base_config, masking=rules, recordings_dir=tmp_path_factory.mktemp("rec-masking"))
    handle = _run_gateway(config, TokenAuthority(load_key(base_config.token_key_file)), gw_db)
    yield handle
    _stop(handle)


@pytest.fixture
def fresh_gateway(base_config, gw_db, tmp_path):
    """A gateway of its own, for tests that reload or drain it."""
    config = replace(base_config, recordings_dir=tmp_path / "recordings")
    handle = _run_gateway(config, TokenAuthority(load_key(base_config.token_key_file)), gw_db)
    yield handle
    if handle.thread.is_alive():
        _stop(handle)


def jit_gateway(config, gw_db, tmp_path, role: str, identity: str = "oncall"):
    """A gateway where `identity` (oncall) holds a just-in-time grant of `role`; handle.revoke() ends it."""
    from hoopctl.access.admin import RoleAccess
    from tests.gateway.test_access_e2e import access_config

    config = replace(
        config,
        access=access_config(tmp_path, **{role: RoleAccess(mode="request")}),
        recordings_dir=tmp_path / "rec",
    )
    handle = _run_gateway(config, TokenAuthority(load_key(config.token_key_file)), gw_db)
    service = handle.gateway.broker.service
    grant = service.approve(service.request(identity, DBNAME, role, 600, "incident").id, "alice")
    handle.gateway.broker.state.refresh()

    def revoke() -> None:
        service.revoke(grant.id, "alice")
        handle.gateway.broker.state.refresh()

    handle.revoke = revoke
    return handle


@pytest.fixture
def granted(base_config, gw_db, tmp_path):
    """A writer grant for `oncall`, a reader, over the two rows of pipeline_jit."""
    gw_db.psql(
        "DROP TABLE IF EXISTS pipeline_jit; CREATE TABLE pipeline_jit (a int); INSERT INTO pipeline_jit VALUES (1), (2)",
        DBNAME,
    )
    from hoopctl.gateway.policy import Policy

    policy = Policy.from_roles({"reader": ["read"], "writer": ["read", "write"]})
    handle = jit_gateway(replace(base_config, policy=policy), gw_db, tmp_path, "writer")
    yield handle
    _stop(handle)
