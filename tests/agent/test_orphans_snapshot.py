"""The live snapshot: fields of a known process, churn, permission errors, secrets never kept."""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
import time

import pytest

from hoopctl.host.procs import _read_proc, take_snapshot


def test_snapshot_reads_a_known_process_and_keeps_only_marker_values():
    env = {"PATH": "/usr/bin:/bin", "GITLAB_CI": "true", "CI_JOB_ID": "31337", "CI_JOB_TOKEN": "s3cr3t-value"}
    child = subprocess.Popen(["sleep", "30"], env=env, start_new_session=True)
    try:
        time.sleep(0.05)
        p = take_snapshot().procs[child.pid]
        assert p.ppid == os.getpid() and p.pgid == child.pid and p.sid == child.pid
        assert p.name == "sleep" and p.cmdline == ("sleep", "30")
        assert p.uid == os.getuid() and p.user == pwd.getpwuid(os.getuid()).pw_name
        assert abs(p.create_time - time.time()) < 5
        assert p.env_readable and {"GITLAB_CI", "CI_JOB_ID"} <= p.env_names
        assert dict(p.env_values) == {"CI_JOB_ID": "31337"}
        assert "s3cr3t-value" not in repr(p) and "PATH" not in p.env_names
    finally:
        child.kill()
        child.wait()


def test_vanished_processes_are_skipped_not_raised():
    assert _read_proc(2**22 + 12345, 0.0) is None
    # churn: processes start and exit while snapshots are taken
    churn = subprocess.Popen(["sh", "-c", "for i in $(seq 200); do /bin/true & done; wait"])
    try:
        for _ in range(5):
            snap = take_snapshot()
            assert os.getpid() in snap.procs
    finally:
        churn.wait(timeout=30)


def test_kernel_threads_and_zombies_are_left_out():
    zombie = subprocess.Popen(["true"])
    time.sleep(0.1)  # exited, not yet reaped: a zombie
    try:
        snap = take_snapshot(sockets=False)
        assert zombie.pid not in snap.procs
        assert 2 not in snap.procs and all(p.ppid != 2 for p in snap.procs.values())
    finally:
        zombie.wait()


@pytest.mark.root
def test_unprivileged_snapshot_marks_unreadable_environments_instead_of_failing():
    code = (
        "from hoopctl.host.procs import take_snapshot; s = take_snapshot(); "
        "print(s.procs[1].env_readable, len(s.procs) > 1)"
    )
    out = subprocess.run(
        ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=30,
        cwd="/",
        env={"PYTHONPATH": os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))},
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "True"]
