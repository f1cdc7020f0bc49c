"""The gateway's configuration: YAML in, a typed `GatewayConfig` out.

The commented reference is `hoopctl/gateway/example.yaml`; every key is checked
and a mistake names the file and the key (see hoopctl.config).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hoopctl.config import ConfigError, Section, credential_path, load_yaml, read_secret_file

EXAMPLE = Path(__file__).with_name("example.yaml")
FSYNC_POLICIES = ("always", "batch", "os")
SSLMODES = ("disable", "prefer", "require")


@dataclass(frozen=True)
class TLSConfig:
    cert_file: Path
    key_file: Path
    require: bool = True


@dataclass(frozen=True)
class Resource:
    """A protected database and the gateway's own credentials for it."""

    name: str
    host: str
    port: int
    dbname: str
    user: str
    password: str | None = field(default=None, repr=False)
    sslmode: str = "prefer"
    content_masking: bool = True


@dataclass(frozen=True)
class GatewayConfig:
    listen_host: str
    listen_port: int
    resources: dict[str, Resource]
    policy: Any
    masking: Any
    recordings_dir: Path
    token_key_file: Path
    tls: TLSConfig | None = None
    fsync: str = "batch"
    fsync_interval_ms: int = 5
    # HMAC key for the recordings ledger (recordings.key_file); auditors verify with the same file.
    recordings_key: bytes | None = field(default=None, repr=False)
    max_message_size: int = 16 * 1024 * 1024
    binary_masked_columns: str = "null"
    workers: int = 1
    access: AccessConfig | None = None  # None: no shared state (no revocations, no just-in-time grants)
    metrics_listen: tuple[str, int] | None = None  # Prometheus endpoint (metrics.listen); None: off
    oidc: list = field(default_factory=list)
    source: Path | None = None


@dataclass(frozen=True)
class AccessConfig:
    """Shared state and just-in-time settings (see `access:` in example.yaml)."""

    state: str = "sqlite:///var/lib/hoopctl/state.db"
    admin_socket: Path = Path("/run/hoopctl/admin.sock")
    approver_group: str = "hoopctl-approvers"
    on_expiry: str = "refuse"
    poll_interval_ms: int = 250
    roles: dict = field(default_factory=dict)


def load_config(path: Path | str) -> GatewayConfig:
    """Parses and checks the whole file; raises ConfigError (one line) on any mistake."""
    path = Path(path)
    root = load_yaml(path)
    root.check_keys(
        {
            "listen",
            "tls",
            "token_key_file",
            "recordings",
            "limits",
            "resources",
            "roles",
            "masking",
            "access",
            "oidc",
            "metrics",
        }
    )
    listen_host, listen_port = _listen(root)
    metrics = root.section("metrics")
    metrics.check_keys({"listen"})
    metrics_listen = _listen(metrics) if metrics.data else None
    recordings = root.section("recordings")
    recordings.check_keys({"dir", "fsync", "fsync_interval_ms", "key_file"})
    limits = root.section("limits")
    limits.check_keys({"max_message_size", "workers"})
    masking = root.section("masking")
    masking.check_keys({"binary", "hash_key_file", "rules"})
    binary = masking.choice("binary", ("null", "refuse"), "null")
    resources = _resources(root.section("resources", required=True), base=path.parent)
    if not resources:
        root.fail("at least one resource is needed", "resources")
    return GatewayConfig(
        listen_host=listen_host,
        listen_port=listen_port,
        tls=_tls(root.section("tls"), base=path.parent),
        token_key_file=_relative(root.path("token_key_file"), path.parent),
        recordings_dir=_relative(recordings.path("dir", "/var/lib/hoopctl/recordings"), path.parent),
        fsync=recordings.choice("fsync", FSYNC_POLICIES, "batch"),
        fsync_interval_ms=recordings.int("fsync_interval_ms", 5, lo=1, hi=10_000),
        recordings_key=_recordings_key(recordings, path.parent),
        max_message_size=limits.int("max_message_size", 16 * 1024 * 1024, lo=1024, hi=1 << 30),
        workers=_workers(limits, metrics, metrics_listen),
        resources=resources,
        policy=_policy(root),
        masking=_masking(
            masking,
            binary,
            base=path.parent,
            no_content=[r for r in resources.values() if not r.content_masking],
        ),
        binary_masked_columns=binary,
        access=_access(root.section("access"), base=path.parent),
        oidc=_oidc(root),
        metrics_listen=metrics_listen,
        source=path,
    )


def _workers(limits: Section, metrics: Section, metrics_listen: tuple[str, int] | None) -> int:
    workers = limits.int("workers", 1, lo=1, hi=64)
    if metrics_listen is not None and metrics_listen[1] + workers - 1 > 65535:
        metrics.fail(f"worker {workers - 1} would serve on port {metrics_listen[1] + workers - 1}", "listen")
    return workers


def _relative(value: Path | None, base: Path) -> Path:
    assert value is not None
    return value if value.is_absolute() else base / value


def _listen(section: Section) -> tuple[str, int]:
    text = section.str("listen", "127.0.0.1:6432")
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        section.fail(f"expected HOST:PORT, got {text!r}", "listen")
    return host.strip("[]") or "0.0.0.0", int(port)


def _tls(section: Section, base: Path) -> TLSConfig | None:
    if not section.data:
        return None
    section.check_keys({"cert", "key", "require"})
    return TLSConfig(
        cert_file=_relative(section.path("cert"), base),
        key_file=_relative(section.path("key"), base),
        require=section.bool("require", True),
    )


def _resources(section: Section, base: Path) -> dict[str, Resource]:
    out = {}
    for name in section.data:
        res = section.section(name, required=True)
        res.check_keys(
            {
                "host",
                "port",
                "dbname",
                "user",
                "password_file",
                "password_credential",
                "sslmode",
                "content_masking",
            }
        )
        out[name] = Resource(
            name=name,
            host=res.str("host"),
            port=res.int("port", 5432, lo=1, hi=65535),
            dbname=res.str("dbname", name),
            user=res.str("user"),
            password=_password(res, base),
            sslmode=res.choice("sslmode", SSLMODES, "prefer"),
            content_masking=res.bool("content_masking", True),
        )
    return out


def _password(res: Section, base: Path) -> str | None:
    """The upstream password comes from a root-only file or a systemd credential, never inline."""
    where = f"{res.where}"
    cred_name = res.str("password_credential", None)
    if cred_name:
        cred = credential_path(cred_name)
        if cred is None:
            res.fail(
                "CREDENTIALS_DIRECTORY is not set (is LoadCredential= in the unit?)", "password_credential"
            )
        return read_secret_file(cred, file=res.file, key=f"{where}.password_credential")
    pw_file = res.path("password_file", None)
    if pw_file:
        return read_secret_file(_relative(pw_file, base), file=res.file, key=f"{where}.password_file")
    return None


def _access(section: Section, base: Path) -> AccessConfig:
    from hoopctl.access.admin import RoleAccess

    section.check_keys({"state", "admin_socket", "approver_group", "on_expiry", "poll_interval_ms", "roles"})
    state = section.str("state", AccessConfig.state)
    if not state.startswith(("postgresql://", "postgres://", "sqlite://")):
        state = "sqlite://" + str(_relative(Path(state), base))
    roles = {}
    role_section = section.section("roles")
    for name in role_section.data:
        r = role_section.section(name, required=True)
        r.check_keys({"mode", "approvals", "hold_timeout", "max_duration"})
        roles[name] = RoleAccess(
            mode=r.choice("mode", ("request", "hold"), "request"),
            approvals=r.int("approvals", 1, lo=1, hi=10),
            hold_timeout_s=r.duration("hold_timeout", "60s"),
            max_duration_s=r.duration("max_duration", "8h"),
        )
    return AccessConfig(
        state=state,
        admin_socket=_relative(section.path("admin_socket", str(AccessConfig.admin_socket)), base),
        approver_group=section.str("approver_group", AccessConfig.approver_group),
        on_expiry=section.choice("on_expiry", ("refuse", "end_session"), "refuse"),
        poll_interval_ms=section.int("poll_interval_ms", 250, lo=10, hi=60_000),
        roles=roles,
    )


def _oidc(root: Section) -> list:
    from hoopctl.access.oidc import issuers_from_config

    entries = root.list("oidc", [])
    try:
        return issuers_from_config(entries)
    except ValueError as exc:
        root.fail(str(exc).removeprefix("oidc"), "oidc")


def _policy(root: Section) -> Any:
    from hoopctl.gateway.policy import Policy

    roles = root.section("roles", required=True)
    try:
        return Policy.from_config(roles.data)
    except ValueError as exc:
        roles.fail(str(exc))


def _masking(section: Section, binary: str, base: Path, no_content: list[Resource]) -> Any:
    from hoopctl.gateway.masking import MaskingRules

    hash_key_file = section.path("hash_key_file", None)
    kwargs: dict[str, Any] = {"no_content": [r.name for r in no_content]}
    if hash_key_file:
        path = _relative(hash_key_file, base)
        kwargs["hash_key"] = read_secret_file(path, file=section.file, key="masking.hash_key_file").encode()
    try:
        return MaskingRules.from_config(section.data.get("rules") or [], binary=binary, **kwargs)
    except ValueError as exc:
        section.fail(str(exc), "rules")


def _recordings_key(section: Any, base: Path) -> bytes | None:
    key_file = section.path("key_file", None)
    if not key_file:
        return None
    path = _relative(key_file, base)
    key = read_secret_file(path, file=section.file, key="recordings.key_file").rstrip().encode()
    if len(key) < 16:
        section.fail(f"{path} holds fewer than 16 bytes", "key_file")
    return key


__all__ = ["ConfigError", "GatewayConfig", "Resource", "TLSConfig", "load_config", "EXAMPLE"]
