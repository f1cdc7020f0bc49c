"""The agent's inotify layer against the real kernel: queue overflow, the watch limit, and the rescans they trigger.

Both limits are sysctls read by the kernel at the moment an inotify instance is created
(max_queued_events) or a watch is added (max_user_watches): they are lowered only around that
moment and restored right after, so other inotify users on the host are not starved.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hoopctl.agent.config import parse_config
from hoopctl.agent.daemon import Agent
from hoopctl.agent.watch import Job, Watcher, WorkQueue
from hoopctl.config import Section

pytestmark = pytest.mark.root

QUEUED = Path("/proc/sys/fs/inotify/max_queued_events")
WATCHES = Path("/proc/sys/fs/inotify/max_user_watches")


@contextlib.contextmanager
def sysctl(path: Path, value: int) -> Iterator[None]:
    old = path.read_text()
    path.write_text(str(value))
    try:
        yield
    finally:
        path.write_text(old)


def root_watches() -> int:
    """Inotify watches held by uid 0 now (the kernel's max_user_watches counts per user)."""
    n = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/status") as f:
                if not any(line.startswith("Uid:\t0\t") for line in f):
                    continue
            for fd in os.listdir(f"/proc/{pid}/fdinfo"):
                with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                    n += sum(line.startswith("inotify wd:") for line in f)
        except OSError:
            continue
    return n


def drain(q: WorkQueue, seconds: float = 0.3) -> list[Job]:
    out, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        job = q.get(timeout=0.05)
        if job is not None:
            out.append(job)
    return out


def test_queue_overflow_queues_a_rescan_of_every_root(tmp_path: Path):
    q = WorkQueue(0.001, 0.01)
    overflowed = threading.Event()
    with sysctl(QUEUED, 16):
        w = Watcher(q, on_overflow=overflowed.set)
    try:
        w.sync([str(tmp_path)])
        for round_ in range(20):
            for i in range(300):
                (tmp_path / f"f{round_}-{i}").write_bytes(b"x")
            if overflowed.wait(0.01):
                break
        assert overflowed.wait(5), "the kernel queue never overflowed"
        assert Job("tree", str(tmp_path)) in drain(q)
    finally:
        w.stop()


def test_watch_limit_is_reported_loudly_and_unwatched_trees_are_rescanned(tmp_path: Path, caplog):
    tree = tmp_path / "tree"
    for i in range(40):
        (tree / f"d{i:02d}" / "sub").mkdir(parents=True)
    cfg = parse_config(
        Section({"files": {"watch": [str(tree)]}, "processes": {"enabled": False}}, file="t.yaml")
    )
    agent = Agent(cfg)
    agent.watcher = Watcher(agent.queue, on_limit=agent._on_watch_limit)
    caplog.set_level(logging.INFO, logger="hoopctl.agent.events")
    try:
        with sysctl(WATCHES, root_watches() + 10):
            agent._sync_roots([str(tree)])
        assert 0 < agent.watcher.watch_count() <= 11
        unwatched = dict(agent.watcher.unwatched)
        assert unwatched and all(r == str(tree) for r in unwatched.values())
        loud = [r for r in caplog.records if r.getMessage() == "watch.limit"]
        assert loud and loud[0].levelno == logging.CRITICAL
        fields = loud[0].agent_fields
        assert fields["sysctl"] == "fs.inotify.max_user_watches" and "sysctl -w" in fields["message"]
        assert any(e["where"] == "watch-limit" for e in agent.status.snapshot()["errors"])

        # a credential in a directory without a watch is found by the periodic rescan
        hidden = Path(sorted(unwatched)[-1]) / "sub" / ".env"
        hidden.write_text("GITLAB_TOKEN=glpat-" + "Zq7Xw2Pk9Lm4Nb8Vc3Rt" + "\n")
        agent._rescan_unwatched()
        jobs = [j for j in drain(agent.queue) if j.kind == "tree"]
        assert {j.path for j in jobs} == set(unwatched)
        # the limit is back to normal here: the rescan also put the watches in place
        assert not agent.watcher.unwatched and agent.watcher.watch_count() == 81
        assert any(r.getMessage() == "watch.rewatched" for r in caplog.records)
        for j in jobs:
            agent._walk(agent._walker(), j.path)
        found = [r.agent_fields for r in caplog.records if r.getMessage() == "finding"]
        assert any(
            f["path"] == str(hidden) and f["action"] == "quarantine" and not f["applied"] for f in found
        )
    finally:
        agent.watcher.stop()


def test_a_crash_handling_one_file_is_logged_and_the_worker_carries_on(caplog):
    cfg = parse_config(Section({"processes": {"enabled": False}}, file="t.yaml"))
    agent = Agent(cfg)
    handled: list[str] = []

    def check(path: str) -> None:
        if path.endswith("boom"):
            raise RuntimeError("parser blew up")
        handled.append(path)

    agent._check_file = check  # the real worker loop, with a file handler that fails once
    worker = threading.Thread(target=agent._file_worker, daemon=True)
    worker.start()
    try:
        agent.queue.put(Job("file", "/srv/x/boom"), now=True)
        agent.queue.put(Job("file", "/srv/x/fine"), now=True)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not handled:
            time.sleep(0.01)
        assert handled == ["/srv/x/fine"] and worker.is_alive()
        errors = agent.status.snapshot()["errors"]
        assert len(errors) == 1 and "parser blew up" in errors[0]["message"]
    finally:
        agent.stop()
        agent.queue.close()
        worker.join(timeout=5)
