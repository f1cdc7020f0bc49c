"""Policy: what to do with a finding, by its type and scope. Pure: no I/O, no clock.

A finding is described by a `Subject` (kind, user, path, target, age, rule, fingerprint). `decide`
answers with a `Decision`:

1. allowlists first (paths, users, fingerprints, tunnel targets): ``allow``, nothing more;
2. thresholds: a tunnel younger than ``long_lived`` or an orphan younger than ``min_age`` is
   ``wait`` (looked at again on the next pass);
3. the first scoped rule of the kind whose selectors all match (users, path globs, targets,
   credential rule ids) gives the action, else the kind's default action.

Whether the action is carried out is `Decision.apply`: false unless the policy enforces (config
``mode: enforce`` or ``--apply``). Report-only is the default.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass, field

from hoopctl.detect.tunnels import Protected, parse_protected

KINDS = ("credential", "tunnel", "orphan")
ACTIONS: dict[str, tuple[str, ...]] = {
    "credential": ("report", "quarantine"),
    "tunnel": ("report", "terminate", "adopt"),
    "orphan": ("report", "terminate"),
}
#: Outcomes that are not actions on the host.
PASSIVE = ("allow", "wait", "report")


def path_matches(path: str, pattern: str) -> bool:
    """Glob match where `*` also crosses `/`; a pattern also matches everything below it."""
    base = pattern.rstrip("/") or "/"
    return (
        fnmatch.fnmatchcase(path, pattern)
        or fnmatch.fnmatchcase(path, base + "/*")
        or (base == "/" and path.startswith("/"))
    )


def split_target(target: str | None) -> tuple[str | None, int | None]:
    """`host:port` or `[v6]:port` -> (host, port); (None, None) for anything else (unix sockets)."""
    if not target:
        return None, None
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        return None, None
    return host.strip("[]") or None, int(port)


@dataclass(frozen=True)
class Scope:
    """Selectors of a rule; an empty selector matches anything, a non-empty one must match."""

    users: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    targets: tuple[Protected, ...] = ()
    rules: tuple[str, ...] = ()

    def matches(self, s: Subject) -> bool:
        if self.users and s.user not in self.users:
            return False
        if self.paths and (s.path is None or not any(path_matches(s.path, p) for p in self.paths)):
            return False
        if self.targets and not _target_in(s.target, self.targets):
            return False
        return not (self.rules and s.rule not in self.rules)


@dataclass(frozen=True)
class ScopedAction:
    scope: Scope
    action: str


@dataclass(frozen=True)
class KindPolicy:
    """The default action of one finding type, its scoped exceptions, and its age threshold."""

    action: str
    rules: tuple[ScopedAction, ...] = ()
    min_age: float = 0.0  # seconds: tunnels' "long_lived", orphans' "min_age"


@dataclass(frozen=True)
class Allowlist:
    paths: tuple[str, ...] = ()
    users: tuple[str, ...] = ()
    fingerprints: frozenset[str] = frozenset()
    tunnel_targets: tuple[Protected, ...] = ()


@dataclass(frozen=True)
class Policy:
    enforce: bool = False
    credential: KindPolicy = KindPolicy("quarantine")
    tunnel: KindPolicy = KindPolicy("terminate", min_age=600.0)
    orphan: KindPolicy = KindPolicy("terminate", min_age=300.0)
    allow: Allowlist = field(default_factory=Allowlist)

    def of(self, kind: str) -> KindPolicy:
        return {"credential": self.credential, "tunnel": self.tunnel, "orphan": self.orphan}[kind]


@dataclass(frozen=True)
class Subject:
    """What policy needs to know about one finding (never the secret)."""

    kind: str
    user: str = ""
    path: str | None = None
    target: str | None = None
    age: float = 0.0
    rule: str | None = None
    fingerprint: str | None = None


@dataclass(frozen=True)
class Decision:
    action: str  # allow | wait | report | quarantine | terminate | adopt
    apply: bool  # carry it out (enforce) or only report it (dry run)
    why: str

    @property
    def acts(self) -> bool:
        """True when something on the host is to be changed."""
        return self.apply and self.action not in PASSIVE


def _target_in(target: str | None, specs: Sequence[Protected]) -> bool:
    host, port = split_target(target)
    return host is not None and any(p.matches(host, port) for p in specs)


def _allowed(policy: Policy, s: Subject) -> str | None:
    a = policy.allow
    if s.user and s.user in a.users:
        return f"user {s.user} is allowlisted"
    if s.path is not None and any(path_matches(s.path, p) for p in a.paths):
        return "path is allowlisted"
    if s.fingerprint and s.fingerprint in a.fingerprints:
        return "fingerprint is allowlisted"
    if s.kind == "tunnel" and _target_in(s.target, a.tunnel_targets):
        return "tunnel target is allowlisted"
    return None


def decide(policy: Policy, s: Subject) -> Decision:
    """The action for one finding under `policy`."""
    if s.kind not in KINDS:
        raise ValueError(f"unknown finding kind {s.kind!r}")
    why = _allowed(policy, s)
    if why:
        return Decision("allow", False, why)
    kp = policy.of(s.kind)
    if s.kind in ("tunnel", "orphan") and s.age < kp.min_age:
        return Decision("wait", False, f"younger than {kp.min_age:g}s")
    action, why = kp.action, f"default for {s.kind}"
    for n, rule in enumerate(kp.rules):
        if rule.scope.matches(s):
            action, why = rule.action, f"policy.{s.kind}.rules[{n}]"
            break
    return Decision(action, policy.enforce and action not in PASSIVE, why)


def parse_targets(specs: Sequence[str]) -> tuple[Protected, ...]:
    """`HOST:PORT`, `[V6]:PORT`, `CIDR:PORT` (PORT may be `*`); ValueError names the bad one."""
    return tuple(parse_protected(s) for s in specs)
