"""Real orphaned processes: double forks carrying CI markers, a live job, a service account."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time

import psutil
import pytest
from click.testing import CliRunner

from hoopctl.cli import main
from hoopctl.detect.orphans import classify_orphans
from hoopctl.host.procs import take_snapshot

pytestmark = pytest.mark.root

SECRET = "glcbt-DoNotPrintThisTokenValue"


def job_env(job_id: str) -> dict[str, str]:
    return {
        "PATH": "/usr/bin:/bin",
        "GITLAB_CI": "true",
        "CI_JOB_ID": job_id,
        "CI_JOB_TOKEN": SECRET,
    }


def pids_with_job(job_id: str) -> list[int]:
    snap = take_snapshot(sockets=False)
    return sorted(p.pid for p in snap.procs.values() if p.env_values.get("CI_JOB_ID") == job_id)


@pytest.fixture
def job_id(spawn):
    """A fresh job id; every process still carrying it is killed at teardown."""
    value = str(900000 + secrets.randbelow(99999))
    yield value
    for pid in pids_with_job(value):
        spawn.track(pid)


def double_fork(spawn, env: dict[str, str], user: str | None = None) -> int:
    """`setsid sh -c 'sleep 300 &'`: the sh exits at once and its sleep is adopted by PID 1."""
    marker = f"{300 + secrets.randbelow(600)}"
    subprocess.run(["setsid", "sh", "-c", f"sleep {marker} &"], env=env, user=user, check=True, timeout=10)
    return spawn.wait_for(lambda p: p.cmdline() == ["sleep", marker] and p.ppid() != os.getpid())


def test_double_forked_leftover_of_a_finished_job_is_an_orphan(spawn, job_id):
    pid = double_fork(spawn, job_env(job_id))
    found = {f.pid: f for f in classify_orphans(take_snapshot(sockets=False), min_age=0)}
    f = found[pid]
    assert f.reasons == ("ci-job-gone",) and f.ci == "gitlab" and f.job == f"CI_JOB_ID={job_id}"
    assert f.user == "root" and f.name == "sleep" and f.descendants == ()
    # the age threshold holds it back while young
    assert pid not in {f.pid for f in classify_orphans(take_snapshot(sockets=False), min_age=60)}


def test_leftover_is_not_an_orphan_while_its_job_runs_and_is_once_the_job_ends(spawn, job_id):
    # the "runner" (no markers) runs the job (markers) as its child, then lingers
    runner = spawn.popen(
        ["sh", "-c", f"env GITLAB_CI=true CI_JOB_ID={job_id} sleep 120; sleep 120"],
        env={"PATH": "/usr/bin:/bin"},
    )
    job = spawn.wait_for(lambda p: p.ppid() == runner.pid and p.name() == "sleep")
    leftover = double_fork(spawn, job_env(job_id))
    found = classify_orphans(take_snapshot(sockets=False), min_age=0)
    assert leftover not in {f.pid for f in found}
    psutil.Process(job).kill()
    spawn.wait_for(lambda p: p.ppid() == runner.pid and p.name() == "sleep" and p.pid != job)
    found = {f.pid: f for f in classify_orphans(take_snapshot(sockets=False), min_age=0)}
    assert found[leftover].reasons == ("ci-job-gone",)


def test_orphan_subtree_is_reported_at_its_top(spawn, job_id):
    marker = f"{300 + secrets.randbelow(600)}"
    subprocess.run(
        ["setsid", "sh", "-c", f"sh -c 'sleep {marker}; true' &"], env=job_env(job_id), check=True, timeout=10
    )
    top = spawn.wait_for(lambda p: p.cmdline() == ["sh", "-c", f"sleep {marker}; true"])
    below = spawn.wait_for(lambda p: p.cmdline() == ["sleep", marker])
    found = {f.pid: f for f in classify_orphans(take_snapshot(sockets=False), min_age=0)}
    assert top in found and below not in found and found[top].descendants == (below,)


def test_service_account_leftover(spawn):
    name = f"hoopsvc{secrets.token_hex(3)}"
    subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", name], check=True)
    try:
        pid = double_fork(spawn, {"PATH": "/usr/bin:/bin"}, user=name)
        snap = take_snapshot(sockets=False)
        found = {f.pid: f for f in classify_orphans(snap, min_age=0, service_accounts=[name])}
        assert found[pid].reasons == ("service-account",) and found[pid].user == name
        assert pid not in {f.pid for f in classify_orphans(snap, min_age=0)}
    finally:
        spawn.cleanup()
        subprocess.run(["userdel", name], check=False, capture_output=True)


def test_cli_lists_the_orphan_as_json_without_secret_values(spawn, job_id):
    pid = double_fork(spawn, job_env(job_id))
    result = CliRunner().invoke(main, ["procs", "--orphans", "--json", "--min-age", "0"])
    assert result.exit_code == 1, result.output
    assert SECRET not in result.output
    mine = [o for o in json.loads(result.output)["orphans"] if o["pid"] == pid]
    assert mine and mine[0]["job"] == f"CI_JOB_ID={job_id}" and mine[0]["reasons"] == ["ci-job-gone"]
    young = CliRunner().invoke(main, ["procs", "--orphans", "--json", "--min-age", "1h"])
    assert pid not in {o["pid"] for o in json.loads(young.output)["orphans"]}


def test_cli_errors_are_one_line():
    for args in (["procs"], ["procs", "--orphans", "--min-age", "soon"]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 2 and result.output.count("\n") == 1 and "Traceback" not in result.output


def test_snapshot_is_fast_enough_to_poll():
    start = time.perf_counter()
    snap = take_snapshot()
    elapsed = time.perf_counter() - start
    assert snap.procs and elapsed < 1.0
