"""inotify on the configured trees (watchdog), turned into a debounced queue of paths to check.

What watchdog gives and what is added here:

- Recursive watches; a new directory gets its watches when its creation event is read, and
  watchdog replays creation events for what it finds inside. On top of that every new (or
  moved-in) directory is queued for a rescan of its own, so a file created in it before its watch
  existed is never missed.
- Queue overflow (IN_Q_OVERFLOW): watchdog 7 re-adds the recursive watches but emits no event. A
  small `InotifyFD` subclass sees the overflow in `handle_event` (public) and we queue a rescan of
  every root.
- Watch limit (ENOSPC): watchdog swallows the error for subdirectories. The same subclass sees it
  in `add_callback` (public), records the directory, and the daemon reports it loudly with the
  sysctl to raise (`fs.inotify.max_user_watches`) and rescans unwatched trees periodically.
- Debounce: a path is checked `debounce` after its last event (a file still being written), at
  most `debounce_max` after its first; IN_CLOSE_WRITE means the writer is done: checked at once.

Only events that can bring a credential into view are asked from the kernel (create, modify,
attrib, close-write, moves): our own reads (open, close-nowrite) never generate work.
"""

from __future__ import annotations

import errno
import heapq
import logging
import os
import threading
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from watchdog.events import (
    DirCreatedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers.api import BaseObserver, ObservedWatch
from watchdog.observers.inotify import InotifyEmitter
from watchdog.observers.inotify_c import InotifyConstants, InotifyEvent, InotifyFD, Mask

from hoopctl.host.safefs import compile_excludes

log = logging.getLogger(__name__)
# watchdog warns when `mkdir -p` races its own recursive add and a watch is registered twice; harmless.
warnings.filterwarnings("ignore", message="Callback with id .* already exists", category=RuntimeWarning)

EVENT_FILTER = [
    DirCreatedEvent,
    DirMovedEvent,
    FileCreatedEvent,
    FileModifiedEvent,
    FileClosedEvent,
    FileMovedEvent,
]
MAX_UNWATCHED = 10_000  # directories remembered by name; past that, whole roots are rescanned
SYSCTL_WATCHES = "/proc/sys/fs/inotify/max_user_watches"


def max_user_watches() -> int | None:
    try:
        with open(SYSCTL_WATCHES) as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


@dataclass(frozen=True, order=True)
class Job:
    """One unit of work: check a file, rescan a new directory, or rescan a whole tree."""

    kind: str  # "file" | "dir" | "tree"
    path: str


class WorkQueue:
    """Debounced jobs keyed by (kind, path): repeated events for a path collapse into one check."""

    def __init__(self, debounce: float, debounce_max: float) -> None:
        self.debounce = debounce
        self.debounce_max = debounce_max
        self._cond = threading.Condition()
        self._due: dict[Job, tuple[float, float]] = {}  # job -> (due, first seen)
        self._heap: list[tuple[float, Job]] = []
        self._closed = False

    def put(self, job: Job, *, now: bool = False) -> None:
        t = time.monotonic()
        with self._cond:
            prev = self._due.get(job)
            first = prev[1] if prev else t
            # each event pushes the check back (the writer is still busy), but never past debounce_max
            due = t if now else min(t + self.debounce, first + self.debounce_max)
            if prev is not None and prev[0] == due:
                return
            self._due[job] = (due, first)
            heapq.heappush(self._heap, (due, job))
            self._cond.notify()

    def get(self, timeout: float) -> Job | None:
        """The next job that is due, waiting up to `timeout` seconds; None on timeout or close."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._closed:
                now = time.monotonic()
                while self._heap:
                    due, job = self._heap[0]
                    cur = self._due.get(job)
                    if cur is None or cur[0] != due:
                        heapq.heappop(self._heap)  # superseded by a later event for the same path
                        continue
                    if due <= now:
                        heapq.heappop(self._heap)
                        del self._due[job]
                        return job
                    break
                wait = deadline - now
                if self._heap:
                    wait = min(wait, self._heap[0][0] - now)
                if deadline - now <= 0:
                    return None
                self._cond.wait(max(wait, 0.0005))
        return None

    def __len__(self) -> int:
        with self._cond:
            return len(self._due)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class AgentInotifyFD(InotifyFD):
    """watchdog's inotify reader, with the two things the agent must know: overflow and watch limit."""

    def __init__(self, on_overflow: Callable[[], None], on_limit: Callable[[bytes, OSError], None]) -> None:
        super().__init__()
        self._on_overflow = on_overflow
        self._on_limit = on_limit

    def handle_event(self, event: InotifyEvent) -> None:
        super().handle_event(event)  # watchdog re-adds the recursive watches first
        if event.is_queue_overflow:
            self._on_overflow()

    def add_callback(self, path, mask, callback, id_):  # noqa: ANN001 - watchdog's signature
        try:
            return super().add_callback(path, mask, callback, id_)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EMFILE):
                self._on_limit(path, exc)
            raise

    def watch_count(self) -> int:
        # watchdog keeps one Watch per descriptor; len() of a dict is atomic under the GIL
        return len(getattr(self, "_watch_for_wd", {}))


class AgentEmitter(InotifyEmitter):
    """watchdog's emitter without IN_MOVED_FROM.

    watchdog holds every IN_MOVED_FROM for 0.5 s to pair it with its IN_MOVED_TO, and the events
    queued behind it wait too; each quarantine is a move out of a watched directory, so under a
    steady stream of new files every check would come half a second late. A file or directory
    moved in still arrives (IN_MOVED_TO, reported as created, and watchdog watches a moved-in
    directory again under its new name); what is lost is only the pairing, which we do not use.
    """

    def get_event_mask_from_filter(self) -> Mask:
        return Mask(super().get_event_mask_from_filter() & ~InotifyConstants.IN_MOVED_FROM)


class AgentObserver(BaseObserver):
    """watchdog's inotify observer, built on `AgentInotifyFD` and `AgentEmitter`."""

    def __init__(self, inotify_fd: AgentInotifyFD, timeout: float = 1.0) -> None:
        self._agent_fd = inotify_fd
        inotify_fd.start()
        super().__init__(AgentEmitter, timeout=timeout, inotify_fd=inotify_fd)

    def on_thread_stop(self) -> None:
        super().on_thread_stop()
        self._agent_fd.stop()
        self._agent_fd.join()


class _Handler(FileSystemEventHandler):
    def __init__(self, watcher: Watcher) -> None:
        self.watcher = watcher

    def on_any_event(self, event: FileSystemEvent) -> None:
        self.watcher.on_event(event)


class Watcher:
    """Watches roots recursively and feeds a `WorkQueue`; call `sync(roots)` again to change them."""

    def __init__(
        self,
        queue: WorkQueue,
        *,
        exclude: Iterable[str] = (),
        skip_dirs: Iterable[str] = (),
        on_limit: Callable[[str, str], None] | None = None,
        on_overflow: Callable[[], None] | None = None,
    ) -> None:
        self.queue = queue
        self._exclude = compile_excludes(tuple(exclude))
        self._skip = tuple(os.path.normpath(d) for d in skip_dirs)
        self._lock = threading.Lock()
        self._watches: dict[str, ObservedWatch] = {}
        self.unwatched: dict[str, str] = {}  # directory -> root it belongs to
        self.limit_hit = 0
        self._limit_cb = on_limit
        self._overflow_cb = on_overflow
        self._fd = AgentInotifyFD(self._overflowed, self._limited)
        self._observer = AgentObserver(self._fd)
        self._handler = _Handler(self)
        self._observer.start()

    # -- callbacks from watchdog threads ---------------------------------------------------------

    def _root_of(self, path: str) -> str:
        best = ""
        for root in self._watches:
            if (path == root or path.startswith(root.rstrip("/") + "/")) and len(root) > len(best):
                best = root
        return best or path

    def _limited(self, path: bytes, exc: OSError) -> None:
        name = os.fsdecode(path)
        self.limit_hit += 1
        first = self.limit_hit == 1
        if len(self.unwatched) < MAX_UNWATCHED:
            parent = os.path.dirname(name)
            if parent not in self.unwatched:  # the parent's rescan covers the child
                self.unwatched[name] = self._root_of(name)
        else:
            root = self._root_of(name)
            self.unwatched[root] = root
        if self._limit_cb is not None and first:
            self._limit_cb(name, exc.strerror or str(exc))

    def _overflowed(self) -> None:
        for root in list(self._watches):
            self.queue.put(Job("tree", root), now=True)
        if self._overflow_cb is not None:
            self._overflow_cb()

    def _excluded(self, path: str) -> bool:
        for skip in self._skip:
            if path == skip or path.startswith(skip + "/"):
                return True
        base_re, rel_re = self._exclude
        name = os.path.basename(path)
        return bool(
            (base_re is not None and base_re.match(name)) or (rel_re is not None and rel_re.search(path))
        )

    def on_event(self, event: FileSystemEvent) -> None:
        try:
            path = (
                os.fsdecode(event.dest_path or event.src_path)
                if event.event_type == "moved"
                else os.fsdecode(event.src_path)
            )
            if not path or self._excluded(path):
                return
            if event.is_directory:
                if isinstance(event, (DirCreatedEvent, DirMovedEvent)):
                    self.queue.put(Job("dir", path))
                return
            self.queue.put(Job("file", path), now=isinstance(event, FileClosedEvent))
        except Exception:  # never let one odd event stop watchdog's dispatch thread
            log.exception("cannot queue a file event")

    def set_filters(self, exclude: Iterable[str], skip_dirs: Iterable[str]) -> None:
        self._exclude = compile_excludes(tuple(exclude))
        self._skip = tuple(os.path.normpath(d) for d in skip_dirs)

    # -- roots ----------------------------------------------------------------------------------

    def sync(self, roots: Iterable[str]) -> tuple[list[str], list[str], dict[str, str]]:
        """Watch exactly `roots`: (added, removed, failed root -> reason)."""
        wanted = [os.path.normpath(r) for r in roots]
        added: list[str] = []
        removed: list[str] = []
        failed: dict[str, str] = {}
        with self._lock:
            for root in list(self._watches):
                if root not in wanted:
                    self._observer.unschedule(self._watches.pop(root))
                    for d in [d for d, r in self.unwatched.items() if r == root]:
                        del self.unwatched[d]
                    removed.append(root)
            for root in wanted:
                if root in self._watches:
                    continue
                # register first, so a limit hit while adding its subdirectories is charged to it
                self._watches[root] = ObservedWatch(root, recursive=True)
                try:
                    self._watches[root] = self._observer.schedule(
                        self._handler, root, recursive=True, event_filter=EVENT_FILTER
                    )
                    added.append(root)
                except OSError as exc:
                    del self._watches[root]
                    failed[root] = exc.strerror or str(exc)
                    if exc.errno in (errno.ENOSPC, errno.EMFILE):
                        self.unwatched[root] = root
        return added, removed, failed

    @property
    def roots(self) -> list[str]:
        return sorted(self._watches)

    def watch_count(self) -> int:
        return self._fd.watch_count()

    def stop(self) -> None:
        self._observer.stop()
        self._observer.join(timeout=30)
