"""Terminate real process trees: process group, tree, cgroup; the guards (PID 1, self, pid reuse)."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest

from hoopctl.act.journal import Journal
from hoopctl.act.terminate import (
    TerminateRefused,
    apply_terminate,
    plan_terminate,
    record_plan,
    redact_argv,
    terminate,
)

pytestmark = pytest.mark.root

# A session leader with a listening child (optionally deaf to SIGTERM) and a child with a grandchild.
TREE = r"""
import os, signal, socket, sys, time
stubborn = sys.argv[1] == "stubborn"
r, w = os.pipe()
if os.fork() == 0:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    if stubborn:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    os.write(w, b"%d\n" % s.getsockname()[1])
    time.sleep(120)
    os._exit(0)
if os.fork() == 0:
    if os.fork() == 0:
        time.sleep(120)
        os._exit(0)
    time.sleep(120)
    os._exit(0)
print(os.read(r, 64).decode().strip(), flush=True)
time.sleep(120)
"""

# On every SIGTERM it forks a fresh member of its group, and keeps running.
RESPAWNER = r"""
import os, signal, time
def respawn(*_):
    if os.fork() == 0:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        time.sleep(120)
        os._exit(0)
signal.signal(signal.SIGTERM, respawn)
print("ready", flush=True)
while True:
    time.sleep(1)
"""


def live(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def group_members(pgid: int) -> list[int]:
    out = []
    for p in psutil.process_iter():
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            if os.getpgid(p.pid) == pgid and live(p.pid):
                out.append(p.pid)
    return out


def wait_for(cond, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


@pytest.fixture
def spawn():
    """Start a python script in its own session; everything in that session is killed afterwards."""
    procs: list[subprocess.Popen] = []

    def start(script: str, *args: str, env: dict | None = None, **kw) -> tuple[subprocess.Popen, str]:
        p = subprocess.Popen(
            [sys.executable, "-c", script, *args],
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
            env={**os.environ, **(env or {})},
            **kw,
        )
        procs.append(p)
        return p, p.stdout.readline().strip()

    yield start
    for p in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        p.wait(timeout=10)
        p.stdout.close()


@pytest.fixture
def journal(tmp_path: Path):
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    with Journal(fd) as j:
        yield j
    os.close(fd)


@pytest.mark.parametrize("stubborn", [False, True])
def test_kills_a_setsid_process_tree_and_closes_its_port(spawn, journal: Journal, stubborn: bool):
    leader, port = spawn(
        TREE, "stubborn" if stubborn else "calm", env={"GITLAB_CI": "true", "CI_JOB_ID": "7"}
    )
    wait_for(lambda: len(group_members(leader.pid)) == 4)
    with socket.create_connection(("127.0.0.1", int(port)), timeout=2):
        pass

    plan = plan_terminate(pid=leader.pid)
    assert plan.ok and plan.pgid == leader.pid and len(plan.procs) == 4
    listening = [s for p in plan.procs for s in p.sockets if s.status == "LISTEN"]
    assert [s.laddr for s in listening] == [f"127.0.0.1:{port}"]
    assert {"GITLAB_CI", "CI_JOB_ID"} <= set(plan.procs[0].markers)
    assert plan.procs[0].user == "root" and "-c" in plan.procs[0].cmdline

    started = time.monotonic()
    result = apply_terminate(plan, journal, grace=1.0)
    elapsed = time.monotonic() - started

    assert result.ok
    assert group_members(leader.pid) == []
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", int(port)), timeout=2)
    outcomes = sorted(o.outcome for o in result.outcomes)
    if stubborn:
        assert outcomes == ["exited", "exited", "exited", "killed"] and elapsed >= 1.0
    else:
        assert outcomes == ["exited"] * 4 and elapsed < 1.0
    records = list(journal.records())
    assert [r.state for r in records] == ["started", "done"]
    assert len(records[0].details["procs"]) == 4  # recorded before the first signal
    assert "GITLAB_CI" in records[0].details["procs"][0]["markers"]
    assert "true" not in str(records[0].details)  # marker names only, never values


def test_members_forked_during_termination_are_killed_too(spawn):
    leader, _ = spawn(RESPAWNER)
    result = terminate(leader.pid, grace=0.5)
    assert result.ok and group_members(leader.pid) == []
    assert "killed" in {o.outcome for o in result.outcomes}


def test_pid_reuse_guard_skips_a_process_that_is_not_the_planned_one(spawn, journal: Journal):
    proc, _ = spawn("print('up', flush=True)\nimport time\ntime.sleep(60)")
    plan = plan_terminate(pid=proc.pid, scope="pid")
    assert plan.ok
    # The same pid, but a process that started at another time: what a reused pid looks like.
    other = dataclasses.replace(plan.procs[0], start_ticks=plan.procs[0].start_ticks - 1)
    result = apply_terminate(dataclasses.replace(plan, procs=(other,)), journal, grace=0.2)
    assert [o.outcome for o in result.outcomes] == ["reused"]
    assert live(proc.pid)
    # The genuine plan still works.
    assert apply_terminate(plan, journal, grace=2).ok and not live(proc.pid)


def test_pgroup_whose_planned_members_are_all_gone_is_left_alone(spawn):
    proc, _ = spawn("print('up', flush=True)\nimport time\ntime.sleep(60)")
    plan = plan_terminate(pid=proc.pid)
    gone = dataclasses.replace(plan.procs[0], start_ticks=plan.procs[0].start_ticks - 1)
    result = apply_terminate(dataclasses.replace(plan, procs=(gone,)), grace=0.2)
    assert [o.outcome for o in result.outcomes] == ["gone"] and live(proc.pid)


def test_tree_scope_stops_descendants_only(spawn):
    leader, _ = spawn(TREE, "calm")
    wait_for(lambda: len(group_members(leader.pid)) == 4)
    children = psutil.Process(leader.pid).children()
    chain = next(c for c in children if c.children())  # the child with a grandchild
    grandchild = chain.children()[0].pid
    result = terminate(chain.pid, scope="tree", grace=2)
    assert result.ok and {o.pid for o in result.outcomes} == {chain.pid, grandchild}
    assert not live(chain.pid) and not live(grandchild)
    assert live(leader.pid) and len(group_members(leader.pid)) == 2


def test_refuses_pid_1_kernel_threads_this_process_and_its_group():
    assert "PID 1" in plan_terminate(pid=1, scope="pid").refusal
    assert plan_terminate(pid=1).refusal  # group 1 (or 0)
    assert "this process" in plan_terminate(pid=os.getpid(), scope="pid").refusal
    assert "own group" in plan_terminate(pid=os.getpid()).refusal
    assert "this process" in plan_terminate(pid=os.getppid(), scope="tree").refusal
    if os.path.exists("/proc/2/stat") and b"kthreadd" in Path("/proc/2/stat").read_bytes():
        assert "kernel thread" in plan_terminate(pid=2, scope="pid").refusal
    with pytest.raises(TerminateRefused):
        apply_terminate(plan_terminate(pid=1, scope="pid"))
    with pytest.raises(TerminateRefused):
        terminate(os.getpid(), scope="pid")
    assert "no process" in plan_terminate(pid=2**22 + 7, scope="pid").refusal


@pytest.fixture
def cgroup():
    base = Path("/sys/fs/cgroup/unified")
    if not (base / "cgroup.procs").exists():
        base = Path("/sys/fs/cgroup")
    path = base / f"hoopctl-test-{uuid.uuid4().hex[:8]}"
    try:
        path.mkdir()
    except OSError as exc:
        pytest.skip(f"cannot create a cgroup v2 here: {exc}")
    yield path
    for _ in range(50):
        try:
            path.rmdir()
            return
        except OSError:
            time.sleep(0.05)


def test_cgroup_scope_stops_every_process_in_the_cgroup(spawn, cgroup: Path, journal: Journal):
    procs_file = cgroup / "cgroup.procs"

    def join() -> None:
        procs_file.write_text(str(os.getpid()))

    leader, port = spawn(TREE, "stubborn", preexec_fn=join)
    wait_for(lambda: len(procs_file.read_text().split()) == 4)
    plan = plan_terminate(cgroup=str(cgroup))
    with pytest.raises(TerminateRefused, match="recreated"):  # same name, another cgroup
        apply_terminate(dataclasses.replace(plan, cgroup_ino=plan.cgroup_ino + 1), grace=0.1)
    assert len(group_members(leader.pid)) == 4
    result = terminate(cgroup=str(cgroup), journal=journal, grace=0.5)
    assert result.ok and len(result.outcomes) == 4
    wait_for(lambda: all(not live(int(p)) for p in procs_file.read_text().split()))
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", int(port)), timeout=2)
    assert journal.latest()[result.action_id].state == "done"


def test_command_lines_are_recorded_with_secret_values_hidden():
    argv = ["psql", "--password=hunter2", "--token", "abc", "-h", "db", "--api-key=x", "plain=1"]
    assert redact_argv(argv) == (
        "psql",
        "--password=****",
        "--token",
        "****",
        "-h",
        "db",
        "--api-key=****",
        "plain=1",
    )


def test_recorded_plan_then_apply_is_one_journaled_action(spawn, journal: Journal):
    proc, _ = spawn("print('up', flush=True)\nimport time\ntime.sleep(60)")
    plan = plan_terminate(pid=proc.pid)
    action_id = record_plan(journal, plan)
    result = apply_terminate(plan, journal, grace=2, action_id=action_id)
    assert result.action_id == action_id and not live(proc.pid)
    assert [r.state for r in journal.history(action_id)] == ["planned", "started", "done"]
