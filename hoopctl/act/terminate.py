"""Terminate: SIGTERM, wait, SIGKILL a process, its group, its tree or a cgroup, after recording what it was.

Plan first (``plan_terminate``: a snapshot of every process in scope with its
command line, user, sockets and CI marker names), then apply
(``apply_terminate``: journaled before the first signal). Nothing here is
undoable, so the journal keeps enough to explain what was stopped.

Guards, checked for every signal, not once:

- never PID 1, never a kernel thread, never this process; a plan that would
  include this process or its process group is refused;
- pid reuse: each process is signalled through a pidfd (``pidfd_open`` +
  ``pidfd_send_signal``), opened and *then* compared with the snapshot's start
  time (``/proc/PID/stat`` field 22, exact clock ticks). A pid that now names
  another process is skipped, and once the pidfd is open it pins that exact
  process, so no later reuse can redirect the signal;
- members that appear after the snapshot (forked while we work) are found
  again every round: by process group id, by ``cgroup.procs`` read through a
  held cgroup directory fd (a cgroup removed and recreated under the same name
  is a different directory), or as descendants of a verified process.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import signal
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass

import psutil

from hoopctl.act.journal import Journal, new_action_id
from hoopctl.host import pathfd

log = logging.getLogger(__name__)

SCOPES = ("pid", "tree", "pgroup", "cgroup")

# Environment variable names that mark a process as started by a CI job. Only
# the names are recorded: values may be tokens.
CI_MARKERS = frozenset(
    {
        "CI",
        "GITLAB_CI",
        "CI_JOB_ID",
        "CI_PIPELINE_ID",
        "GITHUB_ACTIONS",
        "GITHUB_RUN_ID",
        "RUNNER_TRACKING_ID",
        "JENKINS_URL",
        "JENKINS_HOME",
        "BUILD_TAG",
        "BUILDKITE",
        "BUILDKITE_JOB_ID",
        "DRONE",
        "DRONE_BUILD_NUMBER",
        "WOODPECKER",
        "CIRCLECI",
        "TRAVIS",
        "TEAMCITY_VERSION",
        "TF_BUILD",
        "BITBUCKET_BUILD_NUMBER",
        "HOOPCTL_TEST_MARKER",
    }
)

_PF_KTHREAD = 0x00200000
_SECRETISH = re.compile(r"pass|secret|token|key|auth|cred", re.IGNORECASE)
_ROUND_PAUSE = 0.05


class TerminateRefused(Exception):
    """The plan may not be applied (protected process in scope, nothing to do); nothing was signalled."""


@dataclass(frozen=True)
class Socket:
    """One inet socket of a process, as recorded before it is terminated."""

    kind: str
    laddr: str
    raddr: str
    status: str


@dataclass(frozen=True)
class ProcInfo:
    """A snapshot of one process: identity (pid + start ticks) and what it was doing."""

    pid: int
    start_ticks: int
    create_time: float
    ppid: int
    pgid: int
    sid: int
    uid: int
    user: str
    cmdline: tuple[str, ...]
    exe: str
    sockets: tuple[Socket, ...]
    markers: tuple[str, ...]


@dataclass(frozen=True)
class TerminatePlan:
    """What would be terminated: the scope, its target and a snapshot of its processes."""

    scope: str
    target: str
    procs: tuple[ProcInfo, ...]
    pgid: int | None = None
    cgroup: str | None = None
    cgroup_ino: int | None = None  # a cgroup removed and recreated under the same name has another
    refusal: str | None = None

    @property
    def ok(self) -> bool:
        return self.refusal is None and bool(self.procs)


@dataclass(frozen=True)
class Outcome:
    """What happened to one process: exited (after SIGTERM), killed, gone, reused, protected, survived."""

    pid: int
    start_ticks: int
    outcome: str


@dataclass(frozen=True)
class TerminateResult:
    """The outcome of applying a plan."""

    action_id: str
    outcomes: tuple[Outcome, ...]

    @property
    def ok(self) -> bool:
        return all(o.outcome != "survived" for o in self.outcomes)


# -- /proc helpers ----------------------------------------------------------


@dataclass(frozen=True)
class _Stat:
    pid: int
    state: str
    ppid: int
    pgid: int
    sid: int
    flags: int
    start_ticks: int


def _proc_stat(pid: int) -> _Stat | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read()
    except OSError:
        return None
    # comm may hold spaces and parentheses: the fields start after the last ')'.
    rest = raw[raw.rindex(b")") + 2 :].split()
    return _Stat(
        pid=pid,
        state=rest[0].decode(),
        ppid=int(rest[1]),
        pgid=int(rest[2]),
        sid=int(rest[3]),
        flags=int(rest[6]),
        start_ticks=int(rest[19]),
    )


def _all_stats() -> list[_Stat]:
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = _proc_stat(int(name))
            if st is not None:
                out.append(st)
    return out


def _protected(st: _Stat) -> str | None:
    if st.pid == 1:
        return "PID 1"
    if st.flags & _PF_KTHREAD or st.pid == 2 or st.ppid == 2:
        return "a kernel thread"
    if st.pid == os.getpid():
        return "this process"
    return None


def redact_argv(argv: Iterable[str]) -> tuple[str, ...]:
    """A command line with values of secret-looking options hidden (``--password=x``, ``--token x``)."""
    out: list[str] = []
    hide_next = False
    for arg in argv:
        if hide_next:
            out.append("****")
            hide_next = False
            continue
        name, eq, _value = arg.partition("=")
        if name.startswith("-") and _SECRETISH.search(name):
            if eq:
                out.append(f"{name}=****")
            else:
                out.append(arg)
                hide_next = True
            continue
        out.append(arg)
    return tuple(out)


def snapshot(pid: int) -> ProcInfo | None:
    """Record a process before it is touched; None when it is gone."""
    st = _proc_stat(pid)
    if st is None:
        return None
    try:
        proc = psutil.Process(pid)
        with proc.oneshot():
            uid = proc.uids().real
            user = proc.username()
            cmdline = redact_argv(proc.cmdline())
            exe = ""
            with contextlib.suppress(psutil.AccessDenied, psutil.ZombieProcess):
                exe = proc.exe()
            create_time = proc.create_time()
        sockets: tuple[Socket, ...] = ()
        with contextlib.suppress(psutil.AccessDenied, psutil.ZombieProcess):
            sockets = tuple(
                Socket(
                    kind=f"{c.family.name}/{c.type.name}",
                    laddr=_addr(c.laddr),
                    raddr=_addr(c.raddr),
                    status=c.status,
                )
                for c in proc.net_connections(kind="inet")
            )
        markers: tuple[str, ...] = ()
        with contextlib.suppress(psutil.AccessDenied, psutil.ZombieProcess):
            markers = tuple(sorted(CI_MARKERS & set(proc.environ())))
    except psutil.NoSuchProcess:
        return None
    return ProcInfo(
        pid=pid,
        start_ticks=st.start_ticks,
        create_time=create_time,
        ppid=st.ppid,
        pgid=st.pgid,
        sid=st.sid,
        uid=uid,
        user=user,
        cmdline=cmdline,
        exe=exe,
        sockets=sockets,
        markers=markers,
    )


def _addr(addr: object) -> str:
    if not addr:
        return ""
    ip, port = addr  # type: ignore[misc]
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


# -- membership -------------------------------------------------------------


def _descendants(roots: set[tuple[int, int]], stats: list[_Stat]) -> list[_Stat]:
    by_parent: dict[int, list[_Stat]] = {}
    for st in stats:
        by_parent.setdefault(st.ppid, []).append(st)
    found = [s for s in stats if (s.pid, s.start_ticks) in roots]
    seen = {(s.pid, s.start_ticks) for s in found}
    todo = list(found)
    while todo:
        cur = todo.pop()
        for child in by_parent.get(cur.pid, []):
            key = (child.pid, child.start_ticks)
            # A child cannot be older than its parent: an older one is a reused parent pid.
            if child.start_ticks >= cur.start_ticks and key not in seen:
                seen.add(key)
                found.append(child)
                todo.append(child)
    return found


def _cgroup_pids(cgroup_fd: int) -> list[int]:
    try:
        fd = os.open(b"cgroup.procs", os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=cgroup_fd)
    except FileNotFoundError:
        return []
    with os.fdopen(fd, "rb") as fh:
        return [int(x) for x in fh.read().split()]


def _members(plan: TerminatePlan, cgroup_fd: int | None, tree_roots: set[tuple[int, int]]) -> list[_Stat]:
    """The processes in the plan's scope right now (new forks included)."""
    if plan.scope == "pid":
        return [s for s in (_proc_stat(p.pid) for p in plan.procs) if s is not None]
    if plan.scope == "pgroup":
        return [s for s in _all_stats() if s.pgid == plan.pgid]
    if plan.scope == "cgroup":
        assert cgroup_fd is not None
        return [s for s in (_proc_stat(p) for p in _cgroup_pids(cgroup_fd)) if s is not None]
    return _descendants(tree_roots, _all_stats())


# -- plan -------------------------------------------------------------------


def plan_terminate(
    *, pid: int | None = None, scope: str = "pgroup", cgroup: str | os.PathLike | None = None
) -> TerminatePlan:
    """Snapshot what terminating ``pid`` (in ``scope``) or a cgroup directory would stop. Changes nothing."""
    if cgroup is not None:
        scope = "cgroup"
        target = pathfd.display(cgroup)
        try:
            fd = pathfd.open_dir(cgroup)
        except OSError as exc:
            return TerminatePlan(scope, target, (), cgroup=target, refusal=f"cgroup {target}: {exc.strerror}")
        try:
            stats = [s for s in (_proc_stat(p) for p in _cgroup_pids(fd)) if s is not None]
            ino = os.fstat(fd).st_ino
        finally:
            os.close(fd)
        return _finish_plan(scope, target, stats, cgroup=os.fsdecode(cgroup), cgroup_ino=ino)
    if pid is None or scope not in SCOPES:
        raise ValueError(f"give a pid and a scope in {SCOPES}, or a cgroup")
    target = str(pid)
    root = _proc_stat(pid)
    if root is None:
        return TerminatePlan(scope, target, (), refusal=f"no process {pid}")
    if scope == "pid":
        stats = [root]
    elif scope == "pgroup":
        if root.pgid <= 1 or root.pgid == os.getpgrp():
            why = "this process's own group" if root.pgid == os.getpgrp() else f"group {root.pgid}"
            return TerminatePlan(scope, target, (), pgid=root.pgid, refusal=f"refusing to signal {why}")
        stats = [s for s in _all_stats() if s.pgid == root.pgid]
    else:
        stats = _descendants({(root.pid, root.start_ticks)}, _all_stats())
    return _finish_plan(scope, target, stats, pgid=root.pgid if scope == "pgroup" else None)


def _finish_plan(
    scope: str,
    target: str,
    stats: list[_Stat],
    *,
    pgid: int | None = None,
    cgroup: str | None = None,
    cgroup_ino: int | None = None,
) -> TerminatePlan:
    where = {"pgid": pgid, "cgroup": cgroup, "cgroup_ino": cgroup_ino}
    for st in stats:
        why = _protected(st)
        if why:
            return TerminatePlan(scope, target, (), refusal=f"scope includes {why} (pid {st.pid})", **where)
    infos = tuple(i for i in (snapshot(s.pid) for s in stats) if i is not None)
    if not infos:
        return TerminatePlan(scope, target, (), refusal="no live process in scope", **where)
    return TerminatePlan(scope, target, infos, **where)


# -- apply ------------------------------------------------------------------


def _signal(st: _Stat, sig: signal.Signals, known: dict[int, int]) -> str:
    """Signal one process through a pidfd after checking it is the expected one.

    Returns "sent", "gone", "reused" or "protected". ``known`` maps snapshot pids to start ticks.
    """
    if _protected(st):
        return "protected"  # PID 1, a kernel thread or ourselves: never, whatever the scope says
    try:
        pidfd = os.pidfd_open(st.pid)
    except ProcessLookupError:
        return "gone"
    except OSError as exc:
        if exc.errno != errno.ENOSYS:
            raise
        pidfd = -1
    try:
        now = _proc_stat(st.pid)
        if now is None:
            return "gone"
        expected = known.get(st.pid, st.start_ticks)
        if now.start_ticks != expected:
            return "reused"
        try:
            if pidfd >= 0:
                signal.pidfd_send_signal(pidfd, sig)
            else:  # no pidfd (old kernel): the start-time check above narrows, not closes, the window
                os.kill(st.pid, sig)
        except ProcessLookupError:
            return "gone"
        return "sent"
    finally:
        if pidfd >= 0:
            os.close(pidfd)


def _alive(st: _Stat) -> bool:
    now = _proc_stat(st.pid)
    return now is not None and now.start_ticks == st.start_ticks and now.state not in ("Z", "X")


def _target(plan: TerminatePlan) -> dict[str, object]:
    return {"scope": plan.scope, "target": plan.target, "pgid": plan.pgid, "cgroup": plan.cgroup}


def record_plan(journal: Journal, plan: TerminatePlan) -> str:
    """Journal a plan as ``planned`` (the sweep's plan step); returns the action id for apply."""
    return journal.plan("terminate", _target(plan), {"procs": [asdict(p) for p in plan.procs]})


def apply_terminate(
    plan: TerminatePlan,
    journal: Journal | None = None,
    *,
    grace: float = 5.0,
    action_id: str | None = None,
) -> TerminateResult:
    """Stop every process in the plan's scope: SIGTERM, wait up to ``grace`` seconds, then SIGKILL.

    The plan is journaled as ``started`` (with the snapshot) before the first signal;
    ``action_id`` continues a plan recorded with ``record_plan``.
    """
    if not plan.ok:
        raise TerminateRefused(plan.refusal or "nothing to terminate")
    action_id = action_id or new_action_id()
    target = _target(plan)
    if journal is not None:
        journal.start(
            "terminate", target, {"procs": [asdict(p) for p in plan.procs], "grace": grace}, action_id
        )
    try:
        outcomes = _run(plan, grace)
    except BaseException as exc:
        if journal is not None:
            journal.finish(action_id, "terminate", "failed", {"error": repr(exc)})
        raise
    result = TerminateResult(action_id, tuple(outcomes.values()))
    if journal is not None:
        journal.finish(
            action_id,
            "terminate",
            "done" if result.ok else "failed",
            {"outcomes": [asdict(o) for o in result.outcomes]},
        )
    return result


def _run(plan: TerminatePlan, grace: float) -> dict[tuple[int, int], Outcome]:
    known = {p.pid: p.start_ticks for p in plan.procs}
    roots = {(p.pid, p.start_ticks) for p in plan.procs}
    state: dict[tuple[int, int], str] = dict.fromkeys(roots, "gone")
    if plan.scope == "pgroup" and not any(_alive_known(p) for p in plan.procs):
        # Every process of the snapshot is gone: whatever has that group id now is not vouched for.
        return {k: Outcome(k[0], k[1], "gone") for k in state}
    cgroup_fd = pathfd.open_dir(plan.cgroup) if plan.cgroup else None
    try:
        if cgroup_fd is not None and os.fstat(cgroup_fd).st_ino != plan.cgroup_ino:
            raise TerminateRefused(f"cgroup {plan.cgroup} was recreated since it was planned")
        signalled: dict[tuple[int, int], _Stat] = {}
        skipped: set[tuple[int, int]] = set()  # not the process we planned for: never signalled

        def pending() -> list[_Stat]:
            return [
                s
                for s in _members(plan, cgroup_fd, roots)
                if s.state not in ("Z", "X") and (s.pid, s.start_ticks) not in skipped
            ]

        def round_of(sig: signal.Signals, label: str, only_new: bool) -> int:
            live = pending()
            for st in live:
                key = (st.pid, st.start_ticks)
                if only_new and key in signalled:
                    continue
                sent = _signal(st, sig, known)
                if sent == "sent":
                    signalled[key] = st
                    roots.add(key)  # its children stay in a tree scope even after it dies
                    state[key] = label
                elif sent in ("reused", "protected"):
                    skipped.add(key)
                    state[(st.pid, known.get(st.pid, st.start_ticks))] = sent
            return len(live)

        deadline = time.monotonic() + grace
        # SIGTERM rounds until all exited or the grace period ends; members forked meanwhile get theirs too.
        while True:
            round_of(signal.SIGTERM, "exited", only_new=True)
            if not any(_alive(s) for s in signalled.values()) and not any(
                (s.pid, s.start_ticks) not in signalled for s in pending()
            ):
                break
            if time.monotonic() >= deadline:
                break
            time.sleep(_ROUND_PAUSE)
        # SIGKILL rounds for whatever is left (bounded: a fork loop cannot keep us here).
        for _ in range(40):
            if round_of(signal.SIGKILL, "killed", only_new=False) == 0:
                break
            time.sleep(_ROUND_PAUSE)
        for key, st in signalled.items():
            if _alive(st):
                state[key] = "survived"
        return {k: Outcome(k[0], k[1], v) for k, v in state.items()}
    finally:
        if cgroup_fd is not None:
            os.close(cgroup_fd)


def _alive_known(p: ProcInfo) -> bool:
    now = _proc_stat(p.pid)
    return now is not None and now.start_ticks == p.start_ticks and now.pgid == p.pgid


def terminate(
    pid: int | None = None,
    *,
    scope: str = "pgroup",
    cgroup: str | None = None,
    journal: Journal | None = None,
    grace: float = 5.0,
) -> TerminateResult:
    """Plan and apply in one go (the agent's path); raises ``TerminateRefused`` when the plan is refused."""
    plan = plan_terminate(pid=pid, scope=scope, cgroup=cgroup)
    if not plan.ok:
        if journal is not None:
            journal.write(
                new_action_id(),
                "terminate",
                "refused",
                {"scope": plan.scope, "target": plan.target},
                {"reason": plan.refusal},
            )
        raise TerminateRefused(plan.refusal or "nothing to terminate")
    return apply_terminate(plan, journal, grace=grace)
