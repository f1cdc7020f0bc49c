"""The agent's own recursive watch tree against the real kernel: new, moved and deleted directories,
symlinks, and the rebuild after a queue overflow. The watch map must name exactly the directories
that exist under the roots, or a file event would be reported under a wrong (stale) path.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hoopctl.agent.watch import Job, Watcher, WorkQueue

pytestmark = pytest.mark.root

QUEUED = Path("/proc/sys/fs/inotify/max_queued_events")


def wait_for(cond: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.01)
    return cond()


def drain(q: WorkQueue, seconds: float = 0.3) -> list[Job]:
    out, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        job = q.get(timeout=0.05)
        if job is not None:
            out.append(job)
    return out


def watched(w: Watcher) -> set[str]:
    with w._lock:
        return {os.fsdecode(p) for p in w._dirs.values()}


@pytest.fixture
def tree(tmp_path: Path) -> Iterator[tuple[Watcher, WorkQueue, Path, Path]]:
    root = tmp_path / "root"
    root.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    q = WorkQueue(0.001, 0.01)
    w = Watcher(q)
    w.sync([str(root)])
    try:
        yield w, q, root, outside
    finally:
        w.stop()


def test_new_moved_and_deleted_directories_keep_the_watch_map_exact(tree):
    w, q, root, outside = tree
    (root / "a" / "b" / "c").mkdir(parents=True)
    (root / "a" / "b" / "c" / "f.env").write_text("x")  # created before its directory's watch may exist
    want = {str(root), f"{root}/a", f"{root}/a/b", f"{root}/a/b/c"}
    assert wait_for(lambda: watched(w) == want), watched(w)
    jobs = drain(q)
    assert Job("dir", f"{root}/a") in jobs  # the rescan that catches f.env whatever the timing

    # moved out of the tree: no watch left on it nor below it, no event from it
    os.rename(root / "a", outside / "a")
    assert wait_for(lambda: watched(w) == {str(root)}), watched(w)
    drain(q)
    (outside / "a" / "b" / "late.env").write_text("x")
    assert drain(q) == []

    # moved back in under another name: watched again under the new name, and rescanned
    os.rename(outside / "a", root / "z")
    want = {str(root), f"{root}/z", f"{root}/z/b", f"{root}/z/b/c"}
    assert wait_for(lambda: watched(w) == want), watched(w)
    (root / "z" / "b" / "c" / "g.env").write_text("x")
    jobs = drain(q)
    assert Job("dir", f"{root}/z") in jobs and Job("file", f"{root}/z/b/c/g.env") in jobs

    # renamed within the tree: one path per directory, the new one
    os.rename(root / "z" / "b", root / "z" / "bb")
    want = {str(root), f"{root}/z", f"{root}/z/bb", f"{root}/z/bb/c"}
    assert wait_for(lambda: watched(w) == want), watched(w)

    # deleted: the kernel's IN_IGNORED drops the watches
    shutil.rmtree(root / "z")
    assert wait_for(lambda: watched(w) == {str(root)} and w.watch_count() == 1), watched(w)


def test_a_symlinked_directory_is_never_watched_nor_entered(tree):
    w, q, root, outside = tree
    (outside / "secret").mkdir()
    os.symlink(outside, root / "link")
    (root / "real").mkdir()
    assert wait_for(lambda: f"{root}/real" in watched(w))
    drain(q)
    (outside / "secret" / "s.env").write_text("x")
    (outside / "t.env").write_text("x")
    assert drain(q) == []
    assert watched(w) == {str(root), f"{root}/real"}


def test_a_root_behind_a_symlink_is_refused(tmp_path: Path):
    (tmp_path / "real").mkdir()
    (tmp_path / "via").symlink_to(tmp_path)
    w = Watcher(WorkQueue(0.001, 0.01))
    try:
        added, _, failed = w.sync([str(tmp_path / "via" / "real")])
        assert added == [] and "symlink" in failed[str(tmp_path / "via" / "real")]
        assert w.watch_count() == 0
    finally:
        w.stop()


@contextlib.contextmanager
def sysctl(path: Path, value: int) -> Iterator[None]:
    old = path.read_text()
    path.write_text(str(value))
    try:
        yield
    finally:
        path.write_text(old)


def test_after_a_queue_overflow_the_watches_are_rebuilt(tmp_path: Path):
    (tmp_path / "gone" / "deep").mkdir(parents=True)
    q = WorkQueue(0.001, 0.01)
    with sysctl(QUEUED, 16):
        w = Watcher(q)
    try:
        w.sync([str(tmp_path)])
        assert w.watch_count() == 3
        with w._lock:  # the reader stalls: the kernel queue overflows while the tree changes
            shutil.rmtree(tmp_path / "gone")
            (tmp_path / "late" / "deeper").mkdir(parents=True)
            for i in range(100):
                (tmp_path / f"f{i}").write_bytes(b"x")
        assert wait_for(lambda: w.overflows > 0)
        want = {str(tmp_path), f"{tmp_path}/late", f"{tmp_path}/late/deeper"}
        assert wait_for(lambda: watched(w) == want), watched(w)
        assert Job("tree", str(tmp_path)) in drain(q)
    finally:
        w.stop()


WATCHES = Path("/proc/sys/fs/inotify/max_user_watches")


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


def test_directories_left_unwatched_by_the_limit_are_watched_once_it_is_raised(tmp_path: Path):
    for i in range(20):
        (tmp_path / f"d{i:02d}" / "sub").mkdir(parents=True)
    limits: list[str] = []
    w = Watcher(WorkQueue(0.001, 0.01), on_limit=lambda path, why: limits.append(why))
    try:
        with sysctl(WATCHES, root_watches() + 5):
            w.sync([str(tmp_path)])
            assert w.unwatched and w.watch_count() <= 5 and limits
            assert w.rewatch() == []  # still at the limit: nothing changes
            assert w.unwatched
        left = set(w.unwatched)
        assert set(w.rewatch()) == left  # raised: every one of them is watched now, and below it
        assert not w.unwatched and w.watch_count() == 41
    finally:
        w.stop()


def test_directories_renamed_by_the_hundred_and_one_recreated_at_an_old_name(tree):
    w, q, root, _outside = tree
    for i in range(200):
        (root / f"pkg{i}" / "lib").mkdir(parents=True)
    (root / "build" / "out").mkdir(parents=True)
    assert wait_for(lambda: w.watch_count() == 1 + 400 + 2)
    for i in range(200):  # what a package manager does: extract aside, rename into place
        os.rename(root / f"pkg{i}", root / f"node{i}")
    os.rename(root / "build", root / "build.old")
    (root / "build").mkdir()  # at once, at the name just moved away
    want = {str(root), f"{root}/build", f"{root}/build.old", f"{root}/build.old/out"}
    want |= {f"{root}/node{i}" for i in range(200)} | {f"{root}/node{i}/lib" for i in range(200)}
    assert wait_for(lambda: watched(w) == want), sorted(watched(w) ^ want)[:5]
    drain(q)
    (root / "build" / "a.env").write_text("x")
    (root / "build.old" / "out" / "b.env").write_text("x")
    (root / "node7" / "lib" / "c.env").write_text("x")
    jobs = set(drain(q))
    assert {
        Job("file", f"{root}/build/a.env"),
        Job("file", f"{root}/build.old/out/b.env"),
        Job("file", f"{root}/node7/lib/c.env"),
    } <= jobs
    assert not any("pkg" in j.path for j in jobs)
