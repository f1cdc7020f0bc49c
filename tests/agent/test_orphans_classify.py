"""Orphan classification over constructed snapshots: CI leftovers, job-gone rule, accounts, units."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from hoopctl.detect.orphans import MARKER_VALUE_NAMES, classify_orphans, job_key, unit_of
from hoopctl.detect.procsnap import Proc, Snapshot

NOW = 1_000_000.0


def proc(pid, ppid, name="sleep", *, env=None, user="root", age=600.0, cgroup=""):
    env = env or {}
    return Proc(
        pid=pid,
        ppid=ppid,
        uid=0,
        user=user,
        name=name,
        cmdline=(name,),
        create_time=NOW - age,
        pgid=pid,
        cgroup=cgroup,
        env_names=frozenset(env),
        env_values={k: v for k, v in env.items() if k in MARKER_VALUE_NAMES},
    )


def snap(*procs, units=None):
    base = [proc(1, 0, "init"), proc(100, 1, "gitlab-runner"), proc(200, 1, "sshd")]
    return Snapshot(taken_at=NOW, procs={p.pid: p for p in (*base, *procs)}, active_units=units)


GITLAB_4242 = {"GITLAB_CI": "true", "CI_JOB_ID": "4242", "CI_JOB_TOKEN": "glcbt-secret"}
GITLAB_4243 = {"GITLAB_CI": "true", "CI_JOB_ID": "4243"}


def test_leftover_of_a_finished_gitlab_job_is_an_orphan_with_its_subtree():
    leftover = proc(300, 1, "sh", env=GITLAB_4242)
    child = proc(301, 300, "sleep", env=GITLAB_4242)
    [f] = classify_orphans(snap(leftover, child))
    assert f.pid == 300 and f.reasons == ("ci-job-gone",)
    assert f.ci == "gitlab" and f.job == "CI_JOB_ID=4242" and f.descendants == (301,)


def test_leftover_is_not_an_orphan_while_its_job_still_runs():
    job_shell = proc(310, 100, "bash", env=GITLAB_4242)  # still under the runner
    leftover = proc(311, 1, "sleep", env=GITLAB_4242)
    assert classify_orphans(snap(job_shell, leftover)) == []


def test_a_running_job_does_not_keep_another_jobs_leftovers_alive():
    job_shell = proc(320, 100, "bash", env=GITLAB_4243)
    leftover = proc(321, 1, "sleep", env=GITLAB_4242)
    assert [f.pid for f in classify_orphans(snap(job_shell, leftover))] == [321]


def test_children_of_a_leftover_do_not_count_as_a_live_job():
    # the leftover's own children carry the same job id and have a non-init parent:
    # they must not make the job look alive
    leftover = proc(330, 1, "sh", env=GITLAB_4242)
    grandchild_parent = proc(331, 330, "python3", env=GITLAB_4242)
    grandchild = proc(332, 331, "sleep", env=GITLAB_4242)
    [f] = classify_orphans(snap(leftover, grandchild_parent, grandchild))
    assert f.pid == 330 and f.descendants == (331, 332)


def test_process_under_a_subreaper_is_detached():
    reaper = proc(340, 1, "tini")
    leftover = proc(341, 340, env={"GITHUB_ACTIONS": "true", "RUNNER_TRACKING_ID": "github_abc"})
    [f] = classify_orphans(snap(reaper, leftover))
    assert f.pid == 341 and f.ci == "github" and f.job == "RUNNER_TRACKING_ID=github_abc"


def test_configured_subreaper_name_is_honoured():
    reaper = proc(345, 1, "my-reaper")
    leftover = proc(346, 345, env=GITLAB_4242)
    assert classify_orphans(snap(reaper, leftover)) == []
    assert [f.pid for f in classify_orphans(snap(reaper, leftover), subreapers=frozenset({"my-reaper"}))] == [
        346
    ]


def test_young_processes_are_left_alone():
    leftover = proc(350, 1, env=GITLAB_4242, age=5)
    assert classify_orphans(snap(leftover), min_age=60) == []
    assert [f.pid for f in classify_orphans(snap(leftover), min_age=0)] == [350]


def test_non_ci_daemons_are_not_orphans():
    assert classify_orphans(snap(proc(360, 1, "cron"), proc(361, 1, "postgres"))) == []


def test_each_ci_system_is_recognised_by_its_markers():
    cases = {
        "jenkins": {"JENKINS_URL": "http://j", "BUILD_TAG": "jenkins-x-7", "JENKINS_NODE_COOKIE": "c00k"},
        "buildkite": {"BUILDKITE": "true", "BUILDKITE_JOB_ID": "0190-a"},
        "drone": {"DRONE": "true", "DRONE_BUILD_NUMBER": "12"},
        "github": {"GITHUB_ACTIONS": "true", "GITHUB_RUN_ID": "99"},
        "generic": {"CI": "true"},
    }
    procs = [proc(400 + i, 1, env=env) for i, env in enumerate(cases.values())]
    found = classify_orphans(snap(*procs))
    assert [f.ci for f in found] == list(cases)
    assert found[0].job == "JENKINS_NODE_COOKIE=c00k"
    assert found[-1].job is None


def test_secret_values_are_never_kept_as_markers():
    p = proc(410, 1, env=GITLAB_4242)
    assert "CI_JOB_TOKEN" in p.env_names and "CI_JOB_TOKEN" not in p.env_values
    assert "CI_JOB_TOKEN" not in MARKER_VALUE_NAMES
    assert job_key(p) == ("gitlab", "CI_JOB_ID", "4242")


def test_service_account_detached_processes_are_orphans_but_attached_ones_are_not():
    detached = proc(420, 1, user="ci-runner")
    attached = proc(421, 200, user="ci-runner")
    other = proc(422, 1, user="www-data")
    found = classify_orphans(snap(detached, attached, other), service_accounts=["ci-runner"])
    assert [(f.pid, f.reasons) for f in found] == [(420, ("service-account",))]


def test_service_account_process_in_a_running_unit_is_not_an_orphan():
    daemon = proc(430, 1, user="ci-runner", cgroup="/system.slice/runner.service")
    units = frozenset({"runner.service"})
    assert classify_orphans(snap(daemon, units=units), service_accounts=["ci-runner"]) == []


def test_process_left_in_a_stopped_units_cgroup():
    left = proc(440, 1, cgroup="/system.slice/backup.service")
    running = proc(441, 1, cgroup="/system.slice/cron.service")
    found = classify_orphans(snap(left, running, units=frozenset({"cron.service"})))
    assert [(f.pid, f.reasons, f.unit) for f in found] == [(440, ("stopped-unit",), "backup.service")]
    # without knowing the active units nothing is claimed
    assert classify_orphans(snap(left, running)) == []


def test_reasons_add_up_and_subtree_is_reported_once():
    top = proc(450, 1, user="ci-runner", env=GITLAB_4242, cgroup="/system.slice/job.service")
    below = proc(451, 450, user="ci-runner", env=GITLAB_4242, cgroup="/system.slice/job.service")
    [f] = classify_orphans(snap(top, below, units=frozenset()), service_accounts=["ci-runner"])
    assert f.pid == 450 and f.reasons == ("ci-job-gone", "service-account", "stopped-unit")
    assert f.descendants == (451,)


def test_ignored_pids_and_init_are_never_findings():
    leftover = proc(460, 1, env=GITLAB_4242)
    assert classify_orphans(snap(leftover), ignore_pids=[460]) == []


def test_unit_of_reads_the_innermost_unit():
    assert unit_of("/system.slice/foo.service") == "foo.service"
    assert unit_of("/user.slice/user-1000.slice/user@1000.service/app.slice/x.scope") == "x.scope"
    assert unit_of("/") is None and unit_of("") is None


def test_adopted_by_an_unknown_subreaper_is_detached_when_its_session_leader_is_gone():
    reaper = Proc(470, 1, 0, "root", "mystery", ("mystery",), NOW - 900, pgid=470, sid=470)
    # started by `setsid sh -c 'sleep &'`: session 471 (the sh) is gone, adopted by 470
    leftover = Proc(
        472, 470, 0, "root", "sleep", ("sleep",), NOW - 600, pgid=471, sid=471, env_names=frozenset({"CI"})
    )
    # a child still in its parent's session is not detached
    kid = Proc(
        473, 470, 0, "root", "sleep", ("sleep",), NOW - 600, pgid=470, sid=470, env_names=frozenset({"CI"})
    )
    assert [f.pid for f in classify_orphans(snap(reaper, leftover, kid))] == [472]


# -- properties over random process trees


@st.composite
def process_trees(draw):
    """Random forests under PID 1 with a runner, a subreaper, job markers, users and ages."""
    n = draw(st.integers(min_value=1, max_value=25))
    procs = [proc(1, 0, "init"), proc(100, 1, "gitlab-runner"), proc(150, 1, "tini")]
    for i in range(n):
        pid = 1000 + i
        parent = draw(st.sampled_from([1, 100, 150] + [p.pid for p in procs if p.pid >= 1000]))
        job = draw(st.sampled_from([None, "1", "2"]))
        env = {"GITLAB_CI": "true", "CI_JOB_ID": job} if job else {}
        user = draw(st.sampled_from(["root", "ci"]))
        age = draw(st.sampled_from([5.0, 600.0]))
        procs.append(proc(pid, parent, env=env, user=user, age=age))
    return Snapshot(taken_at=NOW, procs={p.pid: p for p in procs})


def _ancestors(s: Snapshot, pid: int) -> list[int]:
    out, p = [], s.procs[pid]
    while p.ppid in s.procs and p.ppid > 1:
        out.append(p.ppid)
        p = s.procs[p.ppid]
    return out


@given(process_trees())
@settings(max_examples=200, deadline=None)
def test_orphan_findings_hold_their_invariants(s):
    found = classify_orphans(s, min_age=60, service_accounts=["ci"])
    pids = {f.pid for f in found}
    for f in found:
        p = s.procs[f.pid]
        assert s.age(p) >= 60
        assert p.ppid in (1, 150)  # detached: PID 1 or the subreaper
        assert not set(_ancestors(s, f.pid)) & pids  # reported once, at the top of its subtree
        assert set(f.descendants) == {d for d in s.procs if f.pid in _ancestors(s, d)}
        if "ci-job-gone" in f.reasons:
            # no process of the same job hangs off the runner through same-job parents
            job = p.env_values["CI_JOB_ID"]
            for q in s.procs.values():
                if q.env_values.get("CI_JOB_ID") == job:
                    top = q
                    while s.procs[top.ppid].env_values.get("CI_JOB_ID") == job and top.ppid not in (1, 150):
                        top = s.procs[top.ppid]
                    assert top.ppid != 100
    # every detached old process with a job id whose job is anchored nowhere is reported somewhere
    for p in s.procs.values():
        if p.ppid in (1, 150) and p.pid >= 1000 and s.age(p) >= 60 and p.user == "ci":
            assert p.pid in pids or set(_ancestors(s, p.pid)) & pids
