"""Orphaned processes from a process snapshot: leftovers of finished CI jobs, service accounts, stopped units.

Pure classification: a `Snapshot` in, `OrphanFinding`s out. A process is *detached* when its
parent is PID 1, a known subreaper, or gone from the snapshot. A finding is reported for the
topmost process of each detached subtree that meets one of these reasons, and lists the subtree
below it (what a terminate action must stop too):

``ci-job-gone``
    The process carries a CI system's markers in its initial environment (/proc/PID/environ:
    GITLAB_CI, GITHUB_ACTIONS/RUNNER_TRACKING_ID, JENKINS_URL/BUILD_TAG, BUILDKITE_JOB_ID,
    DRONE_BUILD_NUMBER, ...), is detached, and its job is gone.

    *Job gone*, concretely: a job is identified by (CI system, job-id variable, value), e.g.
    ``gitlab CI_JOB_ID=4242``. For every live process carrying that same job id, walk up its
    parents while they carry the same job id: the last one reached is the top of that job's
    branch. If that top's parent is a live process that is not PID 1 nor a subreaper (in practice
    the runner: gitlab-runner, Runner.Worker, the Jenkins agent, buildkite-agent), the branch is
    anchored and the job is alive. The job is gone when no branch is anchored, i.e. every
    process still carrying its id hangs off PID 1/a subreaper, directly or through other
    leftovers. A CI marker with no job id (a bare CI=true) cannot be matched to a job: such a
    detached process counts as gone.

``service-account``
    Owned by one of the configured service accounts and detached (and not inside a unit that is
    known to be running).

``stopped-unit``
    In the cgroup of a systemd unit that the host reports as not active (only when the snapshot
    knows the active units; on a host without systemd this reason never fires).

Every reason needs the process to be at least ``min_age`` seconds old.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from hoopctl.detect.procsnap import INIT_PID, Proc, Snapshot, is_reaper, reparented


@dataclass(frozen=True)
class CiSystem:
    """A CI system: any of `markers` says a process belongs to it; `job_keys` identify the job."""

    name: str
    markers: tuple[str, ...]
    job_keys: tuple[str, ...]


CI_SYSTEMS: tuple[CiSystem, ...] = (
    CiSystem("gitlab", ("GITLAB_CI", "CI_JOB_ID", "CI_RUNNER_ID"), ("CI_JOB_ID",)),
    # RUNNER_TRACKING_ID is what the Actions runner itself uses to find a job's leftovers.
    CiSystem("github", ("GITHUB_ACTIONS", "RUNNER_TRACKING_ID"), ("RUNNER_TRACKING_ID", "GITHUB_RUN_ID")),
    # JENKINS_NODE_COOKIE is the Jenkins process-tree killer's own marker.
    CiSystem(
        "jenkins",
        ("JENKINS_URL", "JENKINS_HOME", "JENKINS_NODE_COOKIE", "BUILD_TAG"),
        ("JENKINS_NODE_COOKIE", "BUILD_TAG"),
    ),
    CiSystem("buildkite", ("BUILDKITE", "BUILDKITE_JOB_ID"), ("BUILDKITE_JOB_ID",)),
    CiSystem("drone", ("DRONE", "DRONE_BUILD_NUMBER"), ("DRONE_BUILD_NUMBER",)),
    CiSystem("circleci", ("CIRCLECI",), ("CIRCLE_WORKFLOW_JOB_ID", "CIRCLE_BUILD_NUM")),
    CiSystem("azure", ("TF_BUILD",), ("SYSTEM_JOBID", "BUILD_BUILDID")),
    CiSystem("travis", ("TRAVIS",), ("TRAVIS_JOB_ID",)),
    CiSystem("teamcity", ("TEAMCITY_VERSION",), ("BUILD_NUMBER",)),
    CiSystem("woodpecker", ("CI_PIPELINE_NUMBER", "WOODPECKER"), ("CI_STEP_NUMBER", "CI_PIPELINE_NUMBER")),
    CiSystem("generic", ("CI",), ()),
)

# The environment variables whose *values* a snapshot may keep: job ids only, never tokens.
MARKER_VALUE_NAMES: frozenset[str] = frozenset(k for s in CI_SYSTEMS for k in s.job_keys)
MARKER_NAMES: frozenset[str] = frozenset(m for s in CI_SYSTEMS for m in s.markers) | MARKER_VALUE_NAMES

REASONS = ("ci-job-gone", "service-account", "stopped-unit")


@dataclass(frozen=True)
class OrphanFinding:
    """One leftover process and the subtree under it."""

    pid: int
    user: str
    name: str
    ppid: int
    age: int
    reasons: tuple[str, ...]
    ci: str | None  # CI system name
    job: str | None  # "CI_JOB_ID=4242"
    unit: str | None
    cgroup: str
    pgid: int
    descendants: tuple[int, ...]


def ci_system(proc: Proc) -> CiSystem | None:
    """The CI system whose markers `proc` carries (the most specific one), or None."""
    for system in CI_SYSTEMS:
        if system.name == "generic":
            # a bare CI variable, set by nearly every CI system: last, as the weakest sign
            if "CI" in proc.env_names:
                return system
            continue
        if any(m in proc.env_names for m in system.markers):
            return system
    return None


def job_key(proc: Proc) -> tuple[str, str, str] | None:
    """(system, variable, value) identifying the job `proc` was started by, when it has one."""
    system = ci_system(proc)
    if system is None:
        return None
    for key in system.job_keys:
        value = proc.env_values.get(key)
        if value:
            return system.name, key, value
    return None


def unit_of(cgroup: str) -> str | None:
    """The innermost systemd unit (.service or .scope) in a cgroup path, if any."""
    for part in reversed(cgroup.strip("/").split("/")):
        if part.endswith((".service", ".scope")):
            return part
    return None


def classify_orphans(
    snapshot: Snapshot,
    *,
    min_age: float = 60.0,
    service_accounts: Iterable[str] = (),
    subreapers: frozenset[str] = frozenset(),
    ignore_pids: Iterable[int] = (),
) -> list[OrphanFinding]:
    """Leftover processes in `snapshot`, topmost of each subtree, sorted by pid."""
    accounts = frozenset(service_accounts)
    ignored = frozenset(ignore_pids)
    procs = snapshot.procs
    keys = {pid: job_key(p) for pid, p in procs.items()}

    def detached(p: Proc) -> bool:
        return reparented(snapshot, p, subreapers)

    def branch_top(p: Proc) -> Proc:
        key, seen = keys[p.pid], {p.pid}
        while True:
            parent = procs.get(p.ppid)
            if parent is None or parent.pid in seen or keys.get(parent.pid) != key:
                return p
            if is_reaper(snapshot, parent.pid, subreapers):
                return p
            seen.add(parent.pid)
            p = parent

    alive_jobs: set[tuple[str, str, str]] = set()
    for pid, key in keys.items():
        if key is not None and key not in alive_jobs and not detached(branch_top(procs[pid])):
            alive_jobs.add(key)

    flagged: dict[int, list[str]] = {}
    for pid, p in procs.items():
        if pid <= INIT_PID or pid in ignored or snapshot.age(p) < min_age:
            continue
        reasons: list[str] = []
        unit = unit_of(p.cgroup)
        unit_active = snapshot.active_units is not None and unit is not None and unit in snapshot.active_units
        if detached(p):
            if ci_system(p) is not None:
                key = keys[pid]
                if key is None or key not in alive_jobs:
                    reasons.append("ci-job-gone")
            if p.user in accounts and not unit_active:
                reasons.append("service-account")
        if (
            snapshot.active_units is not None
            and unit is not None
            and unit.endswith(".service")
            and unit not in snapshot.active_units
        ):
            reasons.append("stopped-unit")
        if reasons:
            flagged[pid] = reasons

    findings: list[OrphanFinding] = []
    for pid, reasons in sorted(flagged.items()):
        if _has_flagged_ancestor(snapshot, procs[pid], flagged):
            continue  # folded into its ancestor's subtree
        p = procs[pid]
        key = keys[pid]
        system = ci_system(p)
        findings.append(
            OrphanFinding(
                pid=pid,
                user=p.user,
                name=p.name,
                ppid=p.ppid,
                age=snapshot.age(p),
                reasons=tuple(reasons),
                ci=system.name if system else None,
                job=f"{key[1]}={key[2]}" if key else None,
                unit=unit_of(p.cgroup),
                cgroup=p.cgroup,
                pgid=p.pgid,
                descendants=snapshot.descendants_of(pid),
            )
        )
    return findings


def _has_flagged_ancestor(snapshot: Snapshot, proc: Proc, flagged: dict[int, list[str]]) -> bool:
    seen = {proc.pid}
    parent = snapshot.procs.get(proc.ppid)
    while parent is not None and parent.pid not in seen and parent.pid > INIT_PID:
        if parent.pid in flagged:
            return True
        seen.add(parent.pid)
        parent = snapshot.procs.get(parent.ppid)
    return False
