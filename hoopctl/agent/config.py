"""The agent's YAML config: typed, defaults for every knob, one-line errors naming the file and the key.

See ``hoopctl/agent/example.yaml`` for every key with a comment. Nothing here touches the host
except `existing_roots`, which expands the watch list (globs) against the live filesystem.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from hoopctl.agent.policy import (
    ACTIONS,
    KINDS,
    Allowlist,
    KindPolicy,
    Policy,
    Scope,
    ScopedAction,
    parse_targets,
)
from hoopctl.config import ConfigError, Section, load_yaml
from hoopctl.host.safefs import DEFAULT_EXCLUDES, DEFAULT_MAX_FILE_SIZE

__all__ = ["AgentConfig", "ConfigError", "FilesConfig", "ProcsConfig", "existing_roots", "load_config"]

DEFAULT_STATE_DIR = "/var/lib/hoopctl/agent"
DEFAULT_VAULT = "/var/lib/hoopctl/quarantine"
#: Where credentials get left behind: homes, temp dirs, service trees and CI workspaces.
DEFAULT_WATCH: tuple[str, ...] = (
    "/home",
    "/root",
    "/tmp",
    "/var/tmp",
    "/srv",
    "/opt",
    "/builds",
    "/home/*/actions-runner/_work",
    "/var/lib/jenkins/workspace",
    "/var/lib/gitlab-runner/builds",
)
_DEFAULT_AGES = {"credential": 0.0, "tunnel": 600.0, "orphan": 300.0}
_DEFAULT_ACTIONS = {"credential": "quarantine", "tunnel": "terminate", "orphan": "terminate"}


@dataclass(frozen=True)
class FilesConfig:
    watch: tuple[str, ...]
    exclude: tuple[str, ...]
    max_file_size: int
    debounce: float
    debounce_max: float
    rescan_unwatched: float
    quarantine_root_owned: bool
    full_scan: bool


@dataclass(frozen=True)
class ProcsConfig:
    enabled: bool
    tunnel_interval: float
    snapshot_interval: float
    orphan_interval: float
    protected: tuple[str, ...]
    service_accounts: tuple[str, ...]
    grace: float


@dataclass(frozen=True)
class AgentConfig:
    file: str
    mode: str  # report | enforce
    state_dir: str
    vault: str
    gateway_socket: str | None
    status_interval: float
    log_format: str  # json | logfmt
    files: FilesConfig
    procs: ProcsConfig
    policy: Policy

    def with_enforce(self, enforce: bool) -> AgentConfig:
        """`--apply` forces enforcement whatever the file says."""
        if not enforce:
            return self
        return replace(self, mode="enforce", policy=replace(self.policy, enforce=True))


def _seconds(sec: Section, key: str, default: float) -> float:
    """A duration that also accepts milliseconds (`50ms`) and plain numbers of seconds."""
    value = sec.data.get(key, default)
    if isinstance(value, str) and value.strip().lower().endswith("ms"):
        try:
            ms = float(value.strip()[:-2])
        except ValueError:
            sec.fail(f"expected a duration such as 50ms, 2s or 10m, got {value!r}", key)
        if ms < 0:
            sec.fail(f"expected a duration such as 50ms, 2s or 10m, got {value!r}", key)
        return ms / 1000.0
    if value == 0 and not isinstance(value, bool):
        return 0.0
    return sec.duration(key, default)


def _size(sec: Section, key: str, default: int) -> int:
    value = sec.data.get(key, default)
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    if isinstance(value, str):
        text = value.strip().lower().removesuffix("ib").removesuffix("b")
        mult = units.get(text[-1:], 1)
        digits = text[:-1] if text[-1:] in units else text
        if digits.isdigit() and int(digits) > 0:
            return int(digits) * mult
        sec.fail(f"expected a size such as 10MiB or 65536, got {value!r}", key)
    return sec.int(key, default, lo=1, hi=1 << 40)


def _strings(sec: Section, key: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
    value = sec.list(key, list(default))
    for n, item in enumerate(value):
        if not isinstance(item, str) or not item:
            sec.fail(f"expected a non-empty string, got {item!r}", f"{key}[{n}]")
    return tuple(value)


def _abs_paths(sec: Section, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
    out = _strings(sec, key, default)
    for n, p in enumerate(out):
        if not p.startswith("/"):
            sec.fail(f"expected an absolute path, got {p!r}", f"{key}[{n}]")
    return out


def _targets(sec: Section, key: str) -> tuple:
    specs = _strings(sec, key)
    try:
        return parse_targets(specs)
    except ValueError as exc:
        sec.fail(str(exc), key)


def _kind_policy(sec: Section, kind: str) -> KindPolicy:
    sec.check_keys({"action", "rules", "long_lived", "min_age"})
    action = sec.choice("action", ACTIONS[kind], _DEFAULT_ACTIONS[kind])
    age_key = "long_lived" if kind == "tunnel" else "min_age"
    if kind != "credential":
        other = "min_age" if age_key == "long_lived" else "long_lived"
        if other in sec.data:
            sec.fail(f"not a setting of {kind} findings (did you mean {age_key}?)", other)
    min_age = _seconds(sec, age_key, _DEFAULT_AGES[kind]) if kind != "credential" else 0.0
    rules = []
    for n, raw in enumerate(sec.list("rules", [])):
        r = Section(raw, file=sec.file, where=f"{sec.where}.rules[{n}]")
        r.check_keys({"action", "users", "paths", "targets", "rules"})
        paths = _abs_paths(r, "paths", ())
        scope = Scope(
            users=_strings(r, "users"),
            paths=paths,
            targets=_targets(r, "targets"),
            rules=_strings(r, "rules"),
        )
        rules.append(ScopedAction(scope, r.choice("action", ACTIONS[kind])))
    return KindPolicy(action, tuple(rules), min_age)


def parse_config(sec: Section) -> AgentConfig:
    """Build the config from a loaded YAML section; raises ConfigError naming the key."""
    sec.check_keys(
        {"mode", "state_dir", "vault", "gateway_admin_socket", "status_interval", "log", "files"}
        | {"processes", "policy", "allow"}
    )
    mode = sec.choice("mode", ("report", "enforce"), "report")
    log = sec.section("log")
    log.check_keys({"format"})
    files = sec.section("files")
    files.check_keys(
        {"watch", "exclude", "max_file_size", "debounce", "debounce_max", "rescan_unwatched"}
        | {"quarantine_root_owned", "full_scan"}
    )
    procs = sec.section("processes")
    procs.check_keys(
        {"enabled", "tunnel_interval", "snapshot_interval", "orphan_interval", "protected"}
        | {"service_accounts", "grace"}
    )
    pol = sec.section("policy")
    pol.check_keys(set(KINDS))
    allow = sec.section("allow")
    allow.check_keys({"paths", "users", "fingerprints", "tunnel_targets"})
    protected = _strings(procs, "protected")
    try:
        parse_targets(protected)
    except ValueError as exc:
        procs.fail(str(exc), "protected")
    gateway = sec.str("gateway_admin_socket", None)
    if gateway is not None and not gateway.startswith("/"):
        sec.fail(f"expected an absolute path, got {gateway!r}", "gateway_admin_socket")
    policy = Policy(
        enforce=mode == "enforce",
        credential=_kind_policy(pol.section("credential"), "credential"),
        tunnel=_kind_policy(pol.section("tunnel"), "tunnel"),
        orphan=_kind_policy(pol.section("orphan"), "orphan"),
        allow=Allowlist(
            paths=_abs_paths(allow, "paths", ()),
            users=_strings(allow, "users"),
            fingerprints=frozenset(_strings(allow, "fingerprints")),
            tunnel_targets=_targets(allow, "tunnel_targets"),
        ),
    )
    state_dir = sec.str("state_dir", DEFAULT_STATE_DIR)
    vault = sec.str("vault", DEFAULT_VAULT)
    for key, value in (("state_dir", state_dir), ("vault", vault)):
        if not value.startswith("/"):
            sec.fail(f"expected an absolute path, got {value!r}", key)
    debounce = _seconds(files, "debounce", 0.03)
    return AgentConfig(
        file=sec.file,
        mode=mode,
        state_dir=state_dir,
        vault=vault,
        gateway_socket=gateway,
        status_interval=_seconds(sec, "status_interval", 5.0),
        log_format=log.choice("format", ("json", "logfmt"), "json"),
        files=FilesConfig(
            watch=_abs_paths(files, "watch", DEFAULT_WATCH),
            exclude=_strings(files, "exclude", DEFAULT_EXCLUDES),
            max_file_size=_size(files, "max_file_size", DEFAULT_MAX_FILE_SIZE),
            debounce=debounce,
            debounce_max=max(debounce, _seconds(files, "debounce_max", 1.0)),
            rescan_unwatched=_seconds(files, "rescan_unwatched", 600.0),
            quarantine_root_owned=files.bool("quarantine_root_owned", False),
            full_scan=files.bool("full_scan", True),
        ),
        procs=ProcsConfig(
            enabled=procs.bool("enabled", True),
            tunnel_interval=_seconds(procs, "tunnel_interval", 0.5),
            snapshot_interval=_seconds(procs, "snapshot_interval", 10.0),
            orphan_interval=_seconds(procs, "orphan_interval", 30.0),
            protected=protected,
            service_accounts=_strings(procs, "service_accounts"),
            grace=_seconds(procs, "grace", 5.0),
        ),
        policy=policy,
    )


def load_config(path: str | os.PathLike[str]) -> AgentConfig:
    """Read and check an agent config file; raises ConfigError (one line) on any mistake."""
    return parse_config(load_yaml(Path(path)))


def existing_roots(patterns: tuple[str, ...], skip: tuple[str, ...] = ()) -> list[str]:
    """The watch list expanded (globs) to existing real directories, nested ones folded into their parent.

    A configured root that is a symlink is not watched: a root process must not be steered by it.
    `skip` (the vault, the state dir) are never roots themselves.
    """
    found: set[str] = set()
    for pattern in patterns:
        names = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        for name in names:
            norm = os.path.normpath(name)
            if norm in skip:
                continue
            try:
                if os.path.isdir(norm) and not os.path.islink(norm):
                    found.add(norm)
            except OSError:
                continue
    out: list[str] = []
    for root in sorted(found):
        if not any(root == o or root.startswith(o.rstrip("/") + "/") for o in out):
            out.append(root)
    return out


def describe(config: AgentConfig) -> dict[str, Any]:
    """A summary for `hoopctl agent check`."""
    skip = (config.vault, config.state_dir)
    return {
        "file": config.file,
        "mode": config.mode,
        "watch": list(config.files.watch),
        "watch_existing": existing_roots(config.files.watch, skip),
        "processes": config.procs.enabled,
        "gateway_admin_socket": config.gateway_socket,
        "actions": {k: config.policy.of(k).action for k in KINDS},
    }
