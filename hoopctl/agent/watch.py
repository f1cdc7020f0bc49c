"""inotify on the configured trees, turned into a debounced queue of paths to check.

watchdog provides the inotify layer (the ctypes syscalls `inotify_init`/`inotify_add_watch`/
`inotify_rm_watch`, the constants, the event-buffer parser); the recursive watch tree is kept
here, because watchdog's own bookkeeping (a `Watch` object with a callbacks dict per directory,
plus its emitter's path maps) costs ~500 bytes per watch: 50 MB at 100,000 directories, against an
80 MB budget for the whole agent. Here a watch is one entry in one dict, watch descriptor ->
directory path as bytes (~160 bytes per watch), holding no object the garbage collector tracks.

- Every directory is opened relative to its parent with O_NOFOLLOW|O_DIRECTORY (the root through
  `pathfd.open_dir`, no symlink on any component) and the watch is put on that descriptor, through
  /proc/self/fd/N: the watched directory is the one opened, whatever a user renames meanwhile.
- New (created or moved-in) directories get their watches when the event is read, and are then
  queued for a rescan of their own, so a file created in them before the watch existed is caught.
- A directory moved out (IN_MOVED_FROM) loses its watches and those below it (in one pass over the
  map per second; its events are ignored meanwhile); moved elsewhere in a watched tree it comes
  back through IN_MOVED_TO, its watches' paths rewritten. No move pairing, so no waiting on it.
- IN_IGNORED (directory deleted, filesystem unmounted) drops the watch.
- Queue overflow (IN_Q_OVERFLOW): the watches are rebuilt (events for new directories may be
  lost), stale ones dropped, and every root queued for a rescan.
- Watch limit (ENOSPC): the directory is recorded (not its subdirectories: its rescan covers them)
  and the daemon reports it loudly with the sysctl to raise, and rescans unwatched trees
  periodically.
- Debounce: a path is checked `debounce` after its last event (a file still being written), at
  most `debounce_max` after its first; IN_CLOSE_WRITE or a moved-in file is checked at once.

Only events that can bring a credential into view are asked from the kernel (create, modify,
attrib, close-write, moves): our own reads (open, close-nowrite) never generate work.
"""

from __future__ import annotations

import ctypes
import errno
import heapq
import logging
import os
import select
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from watchdog.observers.inotify_c import (
    InotifyConstants,
    InotifyFD,
    inotify_add_watch,
    inotify_init,
    inotify_rm_watch,
)

from hoopctl.host import pathfd
from hoopctl.host.safefs import compile_excludes

log = logging.getLogger(__name__)

_C = InotifyConstants
#: What a watched directory reports: what can bring a credential into view, and what changes the tree.
WATCH_MASK = (
    _C.IN_CREATE
    | _C.IN_MODIFY
    | _C.IN_ATTRIB
    | _C.IN_CLOSE_WRITE
    | _C.IN_MOVED_TO
    | _C.IN_MOVED_FROM
    | _C.IN_ONLYDIR
    | _C.IN_EXCL_UNLINK
)
_FILE_EVENTS = _C.IN_CREATE | _C.IN_MODIFY | _C.IN_ATTRIB | _C.IN_CLOSE_WRITE | _C.IN_MOVED_TO
_NEW_DIR = _C.IN_CREATE | _C.IN_MOVED_TO
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
READ_SIZE = 256 * 1024  # one read drains ~8,000 small events
MAX_DEPTH = 256
STALE_EVERY = 1.0
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


def _join(base: bytes, name: bytes) -> bytes:
    return base + name if base.endswith(b"/") else base + b"/" + name


def _under(path: bytes, top: bytes) -> bool:
    return path == top or path.startswith(top if top.endswith(b"/") else top + b"/")


class Watcher:
    """Watches roots recursively and feeds a `WorkQueue`; call `sync(roots)` again to change them.

    One reader thread blocks in poll() on the inotify descriptor (no timer: no CPU while idle).
    `_dirs` (watch descriptor -> directory path bytes) is changed under `_lock`, by the reader and
    by `sync`.
    """

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
        self.set_filters(exclude, skip_dirs)
        self._lock = threading.RLock()
        self._dirs: dict[int, bytes] = {}
        # Directories moved out, whose watches (and those below) are dropped in one pass over
        # `_dirs` at most every STALE_EVERY seconds: a pass costs ~15 ms at 100k watches, and a
        # package manager renames directories by the thousand. Their events are ignored meanwhile.
        self._stale: set[bytes] = set()
        self._stale_prefixes: tuple[bytes, ...] = ()
        self._stale_since = 0.0
        self._roots: list[bytes] = []
        self.unwatched: dict[str, str] = {}  # directory -> root it belongs to
        self.limit_hit = 0
        self.overflows = 0
        self._limit_cb = on_limit
        self._overflow_cb = on_overflow
        fd = inotify_init()
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"cannot start inotify: {os.strerror(err)}")
        os.set_inheritable(fd, False)
        self._fd = fd
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="agent-inotify", daemon=True)
        self._thread.start()

    # -- filters ---------------------------------------------------------------------------------

    def set_filters(self, exclude: Iterable[str], skip_dirs: Iterable[str]) -> None:
        self._exclude = compile_excludes(tuple(exclude))
        self._skip = tuple(os.path.normpath(d) for d in skip_dirs)
        self._skip_b = tuple(os.fsencode(d) for d in self._skip)

    def _excluded(self, path: str) -> bool:
        for skip in self._skip:
            if path == skip or path.startswith(skip + "/"):
                return True
        base_re, rel_re = self._exclude
        name = os.path.basename(path)
        return bool(
            (base_re is not None and base_re.match(name)) or (rel_re is not None and rel_re.search(path))
        )

    # -- adding watches --------------------------------------------------------------------------

    def _root_of(self, path: bytes) -> str:
        best = b""
        for root in self._roots:
            if _under(path, root) and len(root) > len(best):
                best = root
        return os.fsdecode(best or path)

    def _limited(self, path: bytes, err: int) -> None:
        name = os.fsdecode(path)
        self.limit_hit += 1
        if len(self.unwatched) < MAX_UNWATCHED:
            self.unwatched[name] = self._root_of(path)
        else:
            root = self._root_of(path)
            self.unwatched[root] = root
        if self._limit_cb is not None and self.limit_hit == 1:
            self._limit_cb(name, os.strerror(err))

    def _watch_fd(self, fd: int, path: bytes, seen: dict[int, bytes]) -> int:
        """Put a watch on an open directory; 0, or the errno when it could not be (limit, or gone)."""
        # The descriptor's /proc link names exactly the directory that was opened (no lookup by name).
        wd = inotify_add_watch(self._fd, b"/proc/self/fd/%d" % fd, WATCH_MASK)
        if wd < 0:
            err = ctypes.get_errno()
            if err in (errno.ENOSPC, errno.EMFILE):
                self._limited(path, err)
            elif err not in (errno.ENOENT, errno.EACCES):
                log.debug("cannot watch %s: %s", pathfd.display(path), os.strerror(err))
            return err or errno.EIO
        seen[wd] = path
        return 0

    def _add_tree(self, top_fd: int, top: bytes, seen: dict[int, bytes]) -> int:
        """Watch the open directory `top_fd` and every directory below it (closes `top_fd`).

        Each directory is opened relative to its parent's descriptor with O_NOFOLLOW, so a symlink
        planted by a user is never entered, and the watch is put on what was opened. Returns 0, or
        the errno when `top` itself could not be watched.
        """
        stack: list[tuple[int, bytes, list[bytes]]] = []
        try:
            err = self._watch_fd(top_fd, top, seen)
            if err:
                os.close(top_fd)
                return err
            stack.append((top_fd, top, self._subdirs(top_fd, top)))
            while stack:
                fd, path, subdirs = stack[-1]
                if not subdirs:
                    stack.pop()
                    os.close(fd)
                    continue
                name = subdirs.pop()
                child = _join(path, name)
                if len(stack) >= MAX_DEPTH:
                    continue
                try:
                    cfd = os.open(name, _DIR_FLAGS, dir_fd=fd)
                except OSError:
                    continue  # gone, replaced by a symlink or a file, or unreadable: nothing to watch
                if self._watch_fd(cfd, child, seen):
                    os.close(cfd)
                    continue
                stack.append((cfd, child, self._subdirs(cfd, child)))
        finally:
            for fd, _, _ in stack:
                os.close(fd)
        return 0

    def _subdirs(self, fd: int, path: bytes) -> list[bytes]:
        out: list[bytes] = []
        base_re, rel_re = self._exclude
        try:
            with os.scandir(fd) as it:
                for entry in it:
                    try:
                        if not entry.is_dir(follow_symlinks=False):
                            continue
                    except OSError:
                        continue
                    name = os.fsencode(entry.name)
                    child = _join(path, name)
                    if self._skip_b and any(_under(child, s) for s in self._skip_b):
                        continue
                    if (base_re is not None or rel_re is not None) and self._excluded(os.fsdecode(child)):
                        continue
                    out.append(name)
        except OSError:
            pass
        out.reverse()  # popped from the end: keep listing order
        return out

    def _add_path(self, path: bytes, seen: dict[int, bytes]) -> None:
        if self._stale and (self._is_stale(path) or any(s.startswith(path + b"/") for s in self._stale)):
            self._drop_stale()  # a directory back where one was moved out: its old watches go first
        try:
            fd = pathfd.open_dir(path)  # no symlink on any component
        except OSError:
            return  # gone already, or a symlink now: nothing to watch
        self._add_tree(fd, path, seen)

    def _forget(self, top: bytes) -> int:
        """Remove the watches on `top` and below (a root dropped)."""
        gone = [wd for wd, p in self._dirs.items() if _under(p, top)]
        for wd in gone:
            del self._dirs[wd]
            inotify_rm_watch(self._fd, wd)  # EINVAL when the kernel dropped it already: fine
        return len(gone)

    def _moved_out(self, path: bytes) -> None:
        if not self._stale:
            self._stale_since = time.monotonic()
        self._stale.add(path)
        self._stale_prefixes = tuple(_join(p, b"") for p in self._stale)

    def _is_stale(self, path: bytes) -> bool:
        return path in self._stale or path.startswith(self._stale_prefixes)

    def _drop_stale(self) -> None:
        """Remove the watches on directories moved out and below them (still so after any move back:
        a directory moved back in got its watches' paths rewritten when it was added again)."""
        if not self._stale:
            return
        stale, prefixes = self._stale, self._stale_prefixes
        gone = [wd for wd, p in self._dirs.items() if p in stale or p.startswith(prefixes)]
        for wd in gone:
            del self._dirs[wd]
            inotify_rm_watch(self._fd, wd)  # EINVAL when the kernel dropped it already: fine
        self._stale, self._stale_prefixes = set(), ()

    # -- events (reader thread) ------------------------------------------------------------------

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        while not self._stopping:
            if self._stale and time.monotonic() - self._stale_since >= STALE_EVERY:
                with self._lock:
                    self._drop_stale()
            try:
                # no timeout while nothing is pending: an idle agent costs no CPU
                ready = poller.poll(STALE_EVERY * 1000 if self._stale else None)
                if self._stopping:
                    break
                if not any(fd == self._fd for fd, _ in ready):
                    continue
                buf = os.read(self._fd, READ_SIZE)
            except InterruptedError:
                continue
            except OSError as exc:
                if self._stopping:
                    break
                log.error("inotify read failed: %s", exc)
                time.sleep(0.1)
                continue
            try:
                self._handle(buf)
            except Exception:  # never let one odd event stop the reader
                log.exception("cannot handle inotify events")

    def _handle(self, buf: bytes) -> None:
        put = self.queue.put
        with self._lock:
            for wd, mask, _cookie, name in InotifyFD._parse_event_buffer(buf):  # noqa: SLF001
                if mask & _C.IN_Q_OVERFLOW:
                    self._overflowed()
                    continue
                if mask & _C.IN_IGNORED:
                    self._dirs.pop(wd, None)
                    continue
                base = self._dirs.get(wd)
                if base is None or not name or (self._stale and self._is_stale(base)):
                    continue
                raw = _join(base, name)
                path = os.fsdecode(raw)
                if self._excluded(path):
                    continue
                if mask & _C.IN_ISDIR:
                    if mask & _C.IN_MOVED_FROM:
                        self._moved_out(raw)
                    elif mask & _NEW_DIR:
                        self._add_path(raw, self._dirs)
                        # then look inside: files may have been created before the watch existed
                        put(Job("dir", path))
                elif mask & _FILE_EVENTS:
                    put(Job("file", path), now=bool(mask & (_C.IN_CLOSE_WRITE | _C.IN_MOVED_TO)))

    def _overflowed(self) -> None:
        """Events were lost: rebuild the watches (new directories, deletions) and rescan every root."""
        self.overflows += 1
        log.warning("inotify queue overflowed; rebuilding watches and rescanning")
        fresh: dict[int, bytes] = {}
        self._stale, self._stale_prefixes = set(), ()  # the rebuild drops whatever is gone
        for root in self._roots:
            self._add_path(root, fresh)
        for wd in self._dirs.keys() - fresh.keys():
            inotify_rm_watch(self._fd, wd)  # moved out or deleted while the queue was full
        self._dirs = fresh
        for root in self._roots:
            self.queue.put(Job("tree", os.fsdecode(root)), now=True)
        if self._overflow_cb is not None:
            self._overflow_cb()

    # -- roots ----------------------------------------------------------------------------------

    def sync(self, roots: Iterable[str]) -> tuple[list[str], list[str], dict[str, str]]:
        """Watch exactly `roots`: (added, removed, failed root -> reason)."""
        wanted = [os.path.normpath(r) for r in roots]
        wanted_b = [os.fsencode(r) for r in wanted]
        added: list[str] = []
        removed: list[str] = []
        failed: dict[str, str] = {}
        with self._lock:
            self._drop_stale()
            for root in list(self._roots):
                if root in wanted_b:
                    continue
                self._roots.remove(root)
                others = [r for r in self._roots if _under(r, root) or _under(root, r)]
                if not others:  # a root nested in another keeps the watches they share
                    self._forget(root)
                name = os.fsdecode(root)
                for d in [d for d, r in self.unwatched.items() if r == name]:
                    del self.unwatched[d]
                removed.append(name)
            for root, raw in zip(wanted, wanted_b, strict=True):
                if raw in self._roots:
                    continue
                try:
                    fd = pathfd.open_dir(raw)
                except OSError as exc:
                    failed[root] = (
                        str(exc) if isinstance(exc, pathfd.UnsafePath) else exc.strerror or str(exc)
                    )
                    continue
                # registered first, so a limit hit while adding its subdirectories is charged to it
                self._roots.append(raw)
                err = self._add_tree(fd, raw, self._dirs)
                if err:
                    self._roots.remove(raw)
                    failed[root] = os.strerror(err)
                    if err in (errno.ENOSPC, errno.EMFILE):
                        self.unwatched[root] = root
                    continue
                added.append(root)
        return added, removed, failed

    def rewatch(self) -> list[str]:
        """Try again to watch the directories the limit left unwatched; returns those now watched.

        Called before each periodic rescan, so raising fs.inotify.max_user_watches takes effect
        without a restart. While the limit still holds, each attempt fails at its first watch.
        """
        done: list[str] = []
        with self._lock:
            self._drop_stale()
            for name, root in list(self.unwatched.items()):
                raw = os.fsencode(name)
                is_root = name == root and raw not in self._roots
                try:
                    fd = pathfd.open_dir(raw)
                except OSError:
                    if not os.path.lexists(name):
                        del self.unwatched[name]  # gone: nothing left to watch or rescan
                    continue
                del self.unwatched[name]
                before = len(self.unwatched)
                if is_root:
                    self._roots.append(raw)
                if self._add_tree(fd, raw, self._dirs):  # still at the limit
                    if is_root:
                        self._roots.remove(raw)
                    self.unwatched[name] = root
                elif len(self.unwatched) == before:  # else some directories below it are listed now
                    done.append(name)
        return done

    @property
    def roots(self) -> list[str]:
        return sorted(os.fsdecode(r) for r in self._roots)

    def watch_count(self) -> int:
        return len(self._dirs)  # len() of a dict is atomic under the GIL

    def stop(self) -> None:
        self._stopping = True
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass
        self._thread.join(timeout=30)
        with self._lock:
            for fd in (self._fd, self._wake_r, self._wake_w):
                try:
                    os.close(fd)
                except OSError:
                    pass
            self._dirs.clear()
