"""The group-commit journal: one fdatasync per window, however many sessions are open.

Each session's records go to its own file on the hot path, as before: that file is
what readers see, and all a killed gateway needs (the kernel has the bytes). With
``fsync: batch`` every write is also appended here, framed with its session id,
and the background thread fdatasyncs this one file each window instead of every
session's file (at 32 busy sessions that was 6,400 fdatasyncs a second).

About once a second a checkpoint fdatasyncs the session files written since the
last one, then the journal switches to the other of its two files, emptied first:
the journal only holds what the last checkpoint may not cover. After a power cut,
the next recorder to start copies back from the journal whatever a session file
lacks (``read_journal``), then removes it.

    recorders/<rid>.0.wal, recorders/<rid>.1.wal
    one frame:  b"<sid> <length>\\n" + <length> bytes of whole sealed records
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import threading

from hoopctl.audit import layout
from hoopctl.audit.ids import is_id

log = logging.getLogger(__name__)

_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
# A frame longer than this is damage, not a record (the gateway caps messages far lower).
_MAX_FRAME = 1 << 30


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        if n <= 0:  # pragma: no cover - write(2) on a regular file returns >0 or raises
            raise OSError(errno.EIO, "short write")
        view = view[n:]


def frame(sid: str, data: bytes) -> bytes:
    return b"%s %d\n%s" % (sid.encode("ascii"), len(data), data)


class Journal:
    """A recorder's two journal files; ``write`` may be called from any thread."""

    def __init__(self, dir_fd: int, rid: str) -> None:
        self._dir_fd = dir_fd
        self._names = layout.journal_files(rid)
        self._fds: list[int] = []
        try:
            for name in self._names:
                self._fds.append(os.open(name, _FLAGS, 0o600, dir_fd=dir_fd))
            os.fsync(dir_fd)  # the names must survive a power cut before anything relies on them
        except OSError:
            self.close(remove=True)
            raise
        self._active = 0
        self._lock = threading.Lock()  # the active fd is never switched mid-write
        self._broken: OSError | None = None

    def write(self, data: bytes) -> None:
        """Append whole frames. After one failed write every later one fails too: a torn
        frame would hide the frames after it from recovery."""
        with self._lock:
            if self._broken is not None:
                raise self._broken
            try:
                write_all(self._fds[self._active], data)
            except OSError as exc:
                self._broken = exc
                raise

    def sync(self) -> None:
        """fdatasync what was written so far (the background thread, once per window)."""
        os.fdatasync(self._fds[self._active])

    def switch(self) -> None:
        """Start writing to the other file, emptied first. Call only once everything in
        that file is durable in the session files (the checkpoint before this one)."""
        other = 1 - self._active
        os.ftruncate(self._fds[other], 0)
        with self._lock:
            self._active = other

    def close(self, remove: bool) -> None:
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds = []
        if remove:
            for name in self._names:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(name, dir_fd=self._dir_fd)


def read_journal(dir_fd: int, rid: str) -> dict[str, list[bytes]]:
    """The records a dead recorder journaled, by session id, each line with its newline.

    Reading stops at the first damaged or torn frame of each file: a power cut may
    cut the last one short, and nothing after damage can be trusted to be framed.
    """
    found: dict[str, list[bytes]] = {}
    for name in layout.journal_files(rid):
        try:
            fd = layout.open_regular(name, os.O_RDONLY, dir_fd=dir_fd)
        except FileNotFoundError:
            continue
        except OSError as exc:
            log.warning("cannot read journal %s: %s", name, exc.strerror or exc)
            continue
        with os.fdopen(fd, "rb") as f:
            data = f.read()
        pos = 0
        while (nl := data.find(b"\n", pos, pos + 64)) >= 0:
            sid, _, size = data[pos:nl].partition(b" ")
            text = sid.decode("ascii", "replace")
            if not is_id(text) or not size.isdigit() or int(size) > _MAX_FRAME:
                break
            end = nl + 1 + int(size)
            if end > len(data) or data[end - 1 : end] != b"\n":
                break
            found.setdefault(text, []).extend(data[nl + 1 : end].splitlines(keepends=True))
            pos = end
    return found


def remove_journal(dir_fd: int, rid: str) -> None:
    for name in layout.journal_files(rid):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=dir_fd)
