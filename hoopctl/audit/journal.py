"""The group-commit journal: one fdatasync per window, however many sessions are open.

Each session's records go to its own file on the hot path, as before: that file is
what readers see, and all a killed gateway needs (the kernel has the bytes). With
``fsync: batch`` each record is also queued here in memory, and once per window
the background thread appends the queue to this one file in one write(2) and
fdatasyncs it, instead of fdatasyncing every session's file (at 32 busy sessions
that was 6,400 fdatasyncs a second). A power cut loses the same window either way.

About once a second a checkpoint fdatasyncs the session files written since the
last one, then the journal switches to the other of its two files, emptied first:
the journal only holds what the last checkpoint may not cover. After a power cut,
the next recorder to start copies back from the journal whatever a session file
lacks (``read_journal``), then removes it.

    recorders/<rid>.0.wal, recorders/<rid>.1.wal
    one line per record:  b"<sid> " + the sealed record line (which ends in a newline)
"""

from __future__ import annotations

import contextlib
import errno
import os

from hoopctl.audit import layout
from hoopctl.audit.ids import is_id

_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        if n <= 0:  # pragma: no cover - write(2) on a regular file returns >0 or raises
            raise OSError(errno.EIO, "short write")
        view = view[n:]


class Journal:
    """A recorder's two journal files and the queue of records not written to them yet.

    Any thread may ``queue``; only the background thread calls the rest.
    """

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
        # list.append and the slice taken by commit() are atomic under the GIL: no lock.
        self._queue: list[bytes] = []
        self.queue = self._queue.append
        self._broken: OSError | None = None

    def commit(self) -> None:
        """Append everything queued so far in one write(2), then fdatasync. After one
        failure every later call fails too: a torn line would swallow the next one."""
        if self._broken is not None:
            raise self._broken
        n = len(self._queue)
        try:
            if n:
                data = b"".join(self._queue[:n])
                del self._queue[:n]
                write_all(self._fds[self._active], data)
            os.fdatasync(self._fds[self._active])
        except OSError as exc:
            self._broken = exc
            raise

    def switch(self) -> None:
        """Start writing to the other file, emptied first. Call only once everything in
        that file is durable in the session files (the checkpoint before this one)."""
        other = 1 - self._active
        os.ftruncate(self._fds[other], 0)
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

    A power cut may cut the last line short: a line without its newline is left out,
    and so is one that does not start with a session id. OSError if a file exists
    but cannot be read (a symlink, a FIFO...): the caller keeps the journal.
    """
    found: dict[str, list[bytes]] = {}
    for name in layout.journal_files(rid):
        try:
            fd = layout.open_regular(name, os.O_RDONLY, dir_fd=dir_fd)
        except FileNotFoundError:
            continue
        with os.fdopen(fd, "rb") as f:
            data = f.read()
        for line in data.splitlines(keepends=True):
            sid, _, record = line.partition(b" ")
            text = sid.decode("ascii", "replace")
            if record.endswith(b"\n") and is_id(text):
                found.setdefault(text, []).append(record)
    return found


def remove_journal(dir_fd: int, rid: str) -> None:
    for name in layout.journal_files(rid):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=dir_fd)
