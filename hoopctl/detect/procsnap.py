"""The shape of a process-and-socket snapshot: what the tunnel and orphan classifiers read.

Built by `hoopctl.host.procs.take_snapshot` on a live host, or by hand in tests. Pure data:
nothing here reads the host.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property

INIT_PID = 1


@dataclass(frozen=True)
class Endpoint:
    """One end of a socket: an IP address and a port."""

    ip: str
    port: int

    def __str__(self) -> str:
        return f"[{self.ip}]:{self.port}" if ":" in self.ip else f"{self.ip}:{self.port}"


@dataclass(frozen=True)
class Sock:
    """An inet socket held by a process (psutil's names for status: LISTEN, ESTABLISHED, NONE...)."""

    proto: str  # "tcp" | "udp"
    laddr: Endpoint
    raddr: Endpoint | None = None
    status: str = "ESTABLISHED"
    fd: int = -1

    @property
    def listening(self) -> bool:
        return self.proto == "tcp" and self.status == "LISTEN"

    @property
    def established(self) -> bool:
        return self.proto == "tcp" and self.status == "ESTABLISHED" and self.raddr is not None


@dataclass(frozen=True)
class Proc:
    """One process as seen at snapshot time.

    `env_names` are the CI marker names found in its *initial* environment (/proc/PID/environ);
    `env_values` keeps the values of job-id markers only, never anything that may be a secret.
    """

    pid: int
    ppid: int
    uid: int
    user: str
    name: str
    cmdline: tuple[str, ...]
    create_time: float
    pgid: int = 0
    sid: int = 0
    cgroup: str = ""
    env_names: frozenset[str] = frozenset()
    env_values: Mapping[str, str] = field(default_factory=dict)
    env_readable: bool = True
    sockets: tuple[Sock, ...] = ()

    def listens(self) -> tuple[Sock, ...]:
        return tuple(s for s in self.sockets if s.listening)

    def established(self) -> tuple[Sock, ...]:
        return tuple(s for s in self.sockets if s.established)


@dataclass(frozen=True)
class Snapshot:
    """All processes at one instant. `active_units` is None when the host cannot tell (no systemd)."""

    taken_at: float
    procs: Mapping[int, Proc]
    active_units: frozenset[str] | None = None

    @cached_property
    def children(self) -> Mapping[int, tuple[int, ...]]:
        kids: dict[int, list[int]] = {}
        for p in self.procs.values():
            kids.setdefault(p.ppid, []).append(p.pid)
        return {k: tuple(sorted(v)) for k, v in kids.items()}

    def children_of(self, pid: int) -> tuple[Proc, ...]:
        return tuple(self.procs[c] for c in self.children.get(pid, ()) if c in self.procs)

    def descendants_of(self, pid: int) -> tuple[int, ...]:
        out: list[int] = []
        stack = list(self.children.get(pid, ()))
        seen = {pid}
        while stack:
            c = stack.pop()
            if c in seen:
                continue
            seen.add(c)
            out.append(c)
            stack.extend(self.children.get(c, ()))
        return tuple(sorted(out))

    def age(self, proc: Proc) -> int:
        return max(0, int(self.taken_at - proc.create_time))


def is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


# Processes that adopt orphans besides PID 1 (PR_SET_CHILD_SUBREAPER). The kernel does not expose
# the flag in /proc, so we know them by name; "systemd" counts only when it is not PID 1
# (`systemd --user`).
SUBREAPER_NAMES = frozenset(
    {
        "systemd",
        "tini",
        "tini-static",
        "dumb-init",
        "catatonit",
        "conmon",
        "docker-init",
        "containerd-shim",
        "containerd-shim-runc-v2",
        "s6-svscan",
    }
)


def is_reaper(snapshot: Snapshot, pid: int, extra: frozenset[str] = frozenset()) -> bool:
    """Whether `pid` is PID 1 or a process known to adopt orphans."""
    if pid <= INIT_PID:
        return True
    proc = snapshot.procs.get(pid)
    return proc is not None and (proc.name in SUBREAPER_NAMES or proc.name in extra)


def reparented(snapshot: Snapshot, proc: Proc, extra: frozenset[str] = frozenset()) -> bool:
    """Whether `proc` now hangs off PID 1 or a subreaper (or its parent is gone from the snapshot).

    Also true, whatever adopted it, when its session leader is gone and its parent sits in another
    session: a child starts in its parent's session, so such a parent cannot be the original one
    (this catches subreapers we do not know by name).
    """
    if proc.pid <= INIT_PID:
        return False
    parent = snapshot.procs.get(proc.ppid)
    if parent is None or is_reaper(snapshot, proc.ppid, extra):
        return True
    return (
        proc.sid > 0
        and parent.sid > 0
        and proc.sid != proc.pid
        and proc.sid not in snapshot.procs
        and parent.sid != proc.sid
    )
