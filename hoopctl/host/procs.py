"""Take a snapshot of the live host's processes and inet sockets (psutil + a few /proc reads).

What is kept per process: pid, ppid, pgid, sid, uid and user name, name, cmdline, create time,
cgroup path, the *names* in its initial environment and the values of CI job-id variables only
(`hoopctl.detect.orphans.MARKER_VALUE_NAMES`); no other environment value is ever held. Processes
that vanish mid-snapshot are dropped; what cannot be read (permission) is left empty and marked.
Kernel threads are skipped. Cheap enough to run every few seconds (see `benchmark_snapshot`).
"""

from __future__ import annotations

import logging
import os
import pwd
import socket
import time

import psutil

from hoopctl.detect.orphans import MARKER_VALUE_NAMES
from hoopctl.detect.procsnap import Endpoint, Proc, Snapshot, Sock

log = logging.getLogger(__name__)

_PROC = "/proc"
_ATTRS = ["pid", "ppid", "uids", "name", "cmdline", "create_time", "status"]
_MAX_ENVIRON = 1 << 20  # a larger initial environment is read up to this many bytes
_MAX_VALUE = 128  # a job id is short; anything longer is not what we look for
_TYPES = {socket.SOCK_STREAM: "tcp", socket.SOCK_DGRAM: "udp"}


def take_snapshot(*, sockets: bool = True, environ: bool = True, cgroups: bool = True) -> Snapshot:
    """All user-space processes now, with their inet sockets, initial-environment markers and cgroup."""
    by_pid = _sockets_by_pid() if sockets else {}
    users: dict[int, str] = {}
    procs: dict[int, Proc] = {}
    for p in psutil.process_iter(_ATTRS, ad_value=None):
        info = p.info
        pid = info["pid"]
        if pid is None or info.get("status") == psutil.STATUS_ZOMBIE:
            continue
        ppid = info["ppid"]
        if pid == 2 or ppid == 2 or ppid is None:  # kernel threads
            continue
        uids = info["uids"]
        uid = uids.real if uids is not None else -1
        try:
            pgid, sid = os.getpgid(pid), os.getsid(pid)
        except (ProcessLookupError, PermissionError):
            continue  # gone between listing and reading
        names, values, readable = _environ(pid) if environ else (frozenset(), {}, False)
        procs[pid] = Proc(
            pid=pid,
            ppid=ppid,
            uid=uid,
            user=_user(uid, users),
            name=info["name"] or "",
            cmdline=_trim(info["cmdline"]),
            create_time=info["create_time"] or 0.0,
            pgid=pgid,
            sid=sid,
            cgroup=_cgroup(pid) if cgroups else "",
            env_names=names,
            env_values=values,
            env_readable=readable,
            sockets=tuple(by_pid.get(pid, ())),
        )
    return Snapshot(taken_at=time.time(), procs=procs, active_units=_active_units())


def _trim(cmdline: list[str] | None) -> tuple[str, ...]:
    """Drop the empty padding a rewritten process title (sshd, ssh mux) leaves behind."""
    args = list(cmdline or ())
    while args and not args[-1]:
        args.pop()
    return tuple(args)


def _user(uid: int, cache: dict[int, str]) -> str:
    if uid not in cache:
        try:
            cache[uid] = pwd.getpwuid(uid).pw_name
        except (KeyError, OverflowError):
            cache[uid] = str(uid)
    return cache[uid]


def _sockets_by_pid() -> dict[int, list[Sock]]:
    out: dict[int, list[Sock]] = {}
    try:
        conns = psutil.net_connections(kind="inet")
    except psutil.AccessDenied:
        log.warning("cannot list sockets of other users' processes (not root): tunnels may be missed")
        return out
    for c in conns:
        if c.pid is None or not c.laddr:
            continue
        raddr = Endpoint(c.raddr.ip, c.raddr.port) if c.raddr else None
        out.setdefault(c.pid, []).append(
            Sock(
                proto=_TYPES.get(c.type, "other"),
                laddr=Endpoint(c.laddr.ip, c.laddr.port),
                raddr=raddr,
                status=c.status,
                fd=c.fd,
            )
        )
    return out


def _environ(pid: int) -> tuple[frozenset[str], dict[str, str], bool]:
    """Names in the initial environment, and the values of job-id markers only."""
    try:
        fd = os.open(f"{_PROC}/{pid}/environ", os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except (FileNotFoundError, ProcessLookupError):
        return frozenset(), {}, False
    except PermissionError:
        return frozenset(), {}, False
    try:
        data = os.read(fd, _MAX_ENVIRON)
    except OSError:  # ESRCH/EPERM while the process exits
        return frozenset(), {}, False
    finally:
        os.close(fd)
    names: set[str] = set()
    values: dict[str, str] = {}
    for entry in data.split(b"\0"):
        name, sep, value = entry.partition(b"=")
        if not sep or not name:
            continue
        text = name.decode("utf-8", "replace")
        names.add(text)
        if text in MARKER_VALUE_NAMES and len(value) <= _MAX_VALUE:
            values[text] = value.decode("utf-8", "replace")
    return frozenset(names), values, True


def _cgroup(pid: int) -> str:
    """The process's cgroup path: the unified (v2) one, else systemd's named v1 hierarchy."""
    try:
        with open(f"{_PROC}/{pid}/cgroup", encoding="utf-8", errors="replace") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return ""
    unified = named = ""
    for line in lines:
        hier, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hier == "0" and controllers == "":
            unified = path
        elif controllers == "name=systemd":
            named = path
    return unified if unified not in ("", "/") else named or unified


def _active_units(run_dir: str = "/run/systemd/units") -> frozenset[str] | None:
    """Units systemd says are running, or None when PID 1 is not systemd (then nobody can tell).

    systemd keeps an `invocation:UNIT` link in /run/systemd/units for each unit it has started
    and drops it when the unit is gone: best effort, but no D-Bus needed.
    """
    try:
        with open(f"{_PROC}/1/comm", encoding="utf-8") as fh:
            if fh.read().strip() != "systemd":
                return None
        entries = os.listdir(run_dir)
    except OSError:
        return None
    return frozenset(e.split(":", 1)[1] for e in entries if e.startswith("invocation:"))


def benchmark_snapshot(rounds: int = 10, **kwargs: bool) -> dict[str, float]:
    """Median and max wall time of `take_snapshot` in milliseconds, and the process count."""
    times: list[float] = []
    count = 0
    for _ in range(rounds):
        start = time.perf_counter()
        snap = take_snapshot(**kwargs)
        times.append((time.perf_counter() - start) * 1000)
        count = len(snap.procs)
    times.sort()
    return {"median_ms": times[len(times) // 2], "max_ms": times[-1], "processes": float(count)}
