"""Take a snapshot of the live host's processes (/proc) and inet sockets (psutil).

What is kept per process: pid, ppid, pgid, sid, uid and user name, name, cmdline, create time,
cgroup path, which CI marker *names* its initial environment holds, and the values of CI job-id
variables only (`hoopctl.detect.orphans.MARKER_VALUE_NAMES`); no other environment value is held. Processes
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

from hoopctl.detect.cmdlines import parse_ssh_argv
from hoopctl.detect.orphans import MARKER_NAMES, MARKER_VALUE_NAMES
from hoopctl.detect.procsnap import Endpoint, Proc, Snapshot, Sock
from hoopctl.host import pathfd

log = logging.getLogger(__name__)

_PROC = "/proc"
_PF_KTHREAD = 0x00200000
_CLK_TCK = os.sysconf("SC_CLK_TCK")
_MAX_ENVIRON = 1 << 20  # a larger initial environment is read up to this many bytes
_MAX_VALUE = 128  # a job id is short; anything longer is not what we look for
_TYPES = {socket.SOCK_STREAM: "tcp", socket.SOCK_DGRAM: "udp"}
_NEEDLES = {name: b"\0" + name.encode() + b"=" for name in MARKER_NAMES}


def take_snapshot(*, sockets: bool = True, environ: bool = True, cgroups: bool = True) -> Snapshot:
    """All user-space processes now, with their inet sockets, initial-environment markers and cgroup.

    `environ` and `cgroups` cost two reads per process; a tunnel-only poll can leave them off.
    """
    by_pid = _sockets_by_pid() if sockets else {}
    boot = psutil.boot_time()
    users: dict[int, str] = {}
    procs: dict[int, Proc] = {}
    for entry in os.listdir(_PROC):
        if not entry.isdigit():
            continue
        pid = int(entry)
        base = _read_proc(pid, boot)
        if base is None:
            continue  # a kernel thread, a zombie, or gone between listing and reading
        names, values, readable = _environ(pid) if environ else (frozenset(), {}, False)
        procs[pid] = Proc(
            user=_user(base["uid"], users),
            cgroup=_cgroup(pid) if cgroups else "",
            env_names=names,
            env_values=values,
            env_readable=readable,
            sockets=tuple(by_pid.get(pid, ())),
            **base,
        )
    return Snapshot(taken_at=time.time(), procs=procs, active_units=_active_units())


# psutil's per-process objects cost about four times what these three reads do (measured with
# 300 processes: ~25 ms against ~100 ms), and the agent polls: psutil stays for the sockets.
def _read_proc(pid: int, boot: float) -> dict | None:
    """pid, ppid, pgid, sid, uid, name, cmdline, create_time from /proc/PID/{stat,status,cmdline}."""
    try:
        with open(f"{_PROC}/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:  # gone (ENOENT/ESRCH) or hidden from us
        return None
    close = stat.rfind(b")")
    name = stat[stat.find(b"(") + 1 : close].decode("utf-8", "replace")
    fields = stat[close + 2 :].split()
    # fields[0] is field 3 of proc(5): state, ppid, pgrp, session, ..., flags (9), ..., starttime (22)
    if len(fields) < 20 or fields[0] == b"Z" or int(fields[6]) & _PF_KTHREAD:
        return None  # zombies and kernel threads cost no more reads
    try:
        # the real uid: /proc/PID's owner is root for the non-dumpable (ssh, sshd), so ask status
        with open(f"{_PROC}/{pid}/status", "rb") as fh:
            status = fh.read()
        with open(f"{_PROC}/{pid}/cmdline", "rb") as fh:
            raw_cmdline = fh.read()
    except OSError:
        return None
    uid_at = status.find(b"\nUid:")
    uid = int(status[uid_at + 5 :].split()[0]) if uid_at >= 0 else -1
    return {
        "pid": pid,
        "ppid": int(fields[1]),
        "pgid": int(fields[2]),
        "sid": int(fields[3]),
        "uid": uid,
        "name": name,
        "cmdline": _split_cmdline(raw_cmdline),
        "create_time": round(boot + int(fields[19]) / _CLK_TCK, 2),
    }


def _split_cmdline(raw: bytes) -> tuple[str, ...]:
    """argv from /proc/PID/cmdline, without the empty padding a rewritten title (sshd, ssh mux) leaves."""
    args = raw.decode("utf-8", "replace").split("\0")
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
    """Which CI marker names are in the initial environment, and the values of job-id markers only."""
    try:
        fd = os.open(f"{_PROC}/{pid}/environ", os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:  # gone, or not ours to read
        return frozenset(), {}, False
    try:
        data = b"\0" + os.read(fd, _MAX_ENVIRON)
    except OSError:  # ESRCH/EPERM while the process exits
        return frozenset(), {}, False
    finally:
        os.close(fd)
    # substring tests in C beat splitting thousands of variables in Python, and nothing else is kept
    names = frozenset(n for n, needle in _NEEDLES.items() if needle in data)
    values: dict[str, str] = {}
    for name in names & MARKER_VALUE_NAMES:
        start = data.index(_NEEDLES[name]) + len(_NEEDLES[name])
        end = data.find(b"\0", start)
        value = data[start : end if end >= 0 else len(data)]
        if len(value) <= _MAX_VALUE:
            values[name] = value.decode("utf-8", "replace")
    return names, values, True


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


def read_ssh_configs(
    snapshot: Snapshot, system_config: str = "/etc/ssh/ssh_config"
) -> dict[int, tuple[str, ...]]:
    """For each ssh client in `snapshot`, the ssh_config texts it read, in ssh's order: its -F
    file alone, else the user's ~/.ssh/config then the system file. Feed to `classify_tunnels`.

    These files are user-writable and we may be root: each is opened with no symlink followed
    anywhere in its path (`pathfd.open_leaf`), must be a regular file, and is read up to 256 KiB;
    anything else is skipped. Include lines are not followed.
    """
    out: dict[int, tuple[str, ...]] = {}
    cache: dict[str, str | None] = {}
    for proc in snapshot.procs.values():
        if proc.name != "ssh" or not proc.cmdline or proc.cmdline[0].startswith("ssh: "):
            continue  # not a client, or a mux master whose argv is gone
        args = parse_ssh_argv(proc.cmdline)
        if args.control_command is not None:
            continue
        home = _home(proc.uid)
        if args.config_file is not None:
            paths = [] if args.config_file == "none" else [_config_path(proc.pid, args.config_file, home)]
        else:
            paths = [f"{home}/.ssh/config" if home else "", system_config]
        texts = []
        for path in paths:
            if path and path not in cache:
                cache[path] = _read_small_text(path)
            if path and cache[path]:
                texts.append(cache[path])
        if texts:
            out[proc.pid] = tuple(t for t in texts if t)
    return out


def _home(uid: int) -> str | None:
    try:
        return pwd.getpwuid(uid).pw_dir
    except (KeyError, OverflowError):
        return None


def _config_path(pid: int, path: str, home: str | None) -> str:
    """An -F path as ssh resolved it: `~/` is the user's home, relative is against the process cwd."""
    if path.startswith("~/") and home:
        return home + path[1:]
    if os.path.isabs(path):
        return path
    try:
        cwd = os.readlink(f"{_PROC}/{pid}/cwd")  # the kernel's answer, not a path we follow
    except OSError:
        return ""
    return os.path.join(cwd, path)


def _read_small_text(path: str, limit: int = 256 * 1024) -> str | None:
    try:
        with pathfd.open_leaf(path) as leaf:
            if not leaf.is_regular:
                return None
            data = os.read(leaf.fd, limit)
    except OSError as exc:  # missing, a symlink somewhere, unreadable: not a config we trust
        log.debug("ssh config %s skipped: %s", path, exc)
        return None
    return data.decode("utf-8", "replace")


def benchmark_snapshot(rounds: int = 10, **kwargs: bool) -> dict[str, float]:
    """Median wall and CPU time of `take_snapshot` in milliseconds, and the process count.

    CPU time is what an agent polling every few seconds pays; wall time also counts waiting for
    the CPU on a busy host.
    """
    wall: list[float] = []
    cpu: list[float] = []
    count = 0
    for _ in range(rounds):
        start, start_cpu = time.perf_counter(), time.process_time()
        snap = take_snapshot(**kwargs)
        wall.append((time.perf_counter() - start) * 1000)
        cpu.append((time.process_time() - start_cpu) * 1000)
        count = len(snap.procs)
    wall.sort()
    cpu.sort()
    return {
        "wall_median_ms": round(wall[len(wall) // 2], 1),
        "wall_max_ms": round(wall[-1], 1),
        "cpu_median_ms": round(cpu[len(cpu) // 2], 1),
        "processes": float(count),
    }
