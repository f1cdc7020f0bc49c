"""Path resolution for a root process in trees that users can write to.

Every path is opened one component at a time from ``/``, each directory with
``O_NOFOLLOW | O_DIRECTORY`` and the leaf with ``O_NOFOLLOW | O_NONBLOCK``, so
a symlink anywhere in the path is an error, never a redirection, and a FIFO
never blocks. Callers then act on the held descriptors with the ``*at``
system calls (``os.rename(src_dir_fd=...)``, ``os.stat(dir_fd=...)``), so a
name that a user swaps after the open is never the thing acted upon.

Paths are handled as bytes throughout: names with newlines or bytes that are
not UTF-8 round-trip exactly.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass

PathLike = str | bytes | os.PathLike

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_LEAF_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


class UnsafePath(OSError):
    """A path that cannot be resolved safely: the message says which component and why."""


def to_bytes(path: PathLike) -> bytes:
    """The path as bytes (surrogate-escaped str paths come back to their original bytes)."""
    return os.fsencode(path)


def display(path: PathLike) -> str:
    """A one-line printable form of a path: newlines and undecodable bytes are escaped."""
    text = to_bytes(path).decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def components(path: PathLike) -> list[bytes]:
    """The names of an absolute path; ``.`` and empty names dropped, ``..`` refused."""
    raw = to_bytes(path)
    if not raw.startswith(b"/"):
        raise UnsafePath(errno.EINVAL, f"not an absolute path: {display(raw)}")
    parts = [p for p in raw.split(b"/") if p not in (b"", b".")]
    if b".." in parts:
        raise UnsafePath(errno.EINVAL, f"'..' is not allowed in {display(raw)}")
    return parts


def _explain(exc: OSError, shown: bytes) -> UnsafePath:
    if exc.errno == errno.ELOOP:
        return UnsafePath(errno.ELOOP, f"symlink refused: {display(shown)}")
    if exc.errno == errno.ENOTDIR:
        return UnsafePath(errno.ENOTDIR, f"not a directory (or a symlink): {display(shown)}")
    if exc.errno == errno.ENOENT:
        return UnsafePath(errno.ENOENT, f"no such file or directory: {display(shown)}")
    return UnsafePath(exc.errno, f"{os.strerror(exc.errno or 0)}: {display(shown)}")


def _descend(parts: list[bytes], create: tuple[int, int] | None = None) -> int:
    """Open `/` then each component with O_NOFOLLOW|O_DIRECTORY relative to the last one.

    With `create=(mode, parents_mode)`, missing components are made first (the last with `mode`).
    """
    fd = os.open(b"/", _DIR_FLAGS)
    walked = b""
    try:
        for i, name in enumerate(parts):
            walked += b"/" + name
            if create is not None:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(name, create[0] if i == len(parts) - 1 else create[1], dir_fd=fd)
            try:
                nxt = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                raise _explain(exc, walked) from None
            os.close(fd)
            fd = nxt
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_dir(path: PathLike) -> int:
    """Open an absolute directory path without following any symlink; the caller closes the fd."""
    return _descend(components(path))


def open_parent(path: PathLike) -> tuple[int, bytes]:
    """(fd of the parent directory, final name) of an absolute path, no symlink followed."""
    parts = components(path)
    if not parts:
        raise UnsafePath(errno.EINVAL, "the root directory has no parent")
    return open_dir(b"/" + b"/".join(parts[:-1])), parts[-1]


def ensure_dir(path: PathLike, mode: int = 0o700, parents_mode: int = 0o755) -> int:
    """Open a directory, creating missing components (the last with ``mode``); no symlinks followed."""
    return _descend(components(path), create=(mode, parents_mode))


def lstat_at(dir_fd: int, name: bytes) -> os.stat_result | None:
    """``fstatat(dir_fd, name, AT_SYMLINK_NOFOLLOW)``, or None when the name does not exist."""
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def same_inode(a: os.stat_result | None, b: os.stat_result | None) -> bool:
    """True when both stats name the same inode on the same device."""
    return a is not None and b is not None and (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def kind(st: os.stat_result) -> str:
    """A short name for the file type in ``st``."""
    mode = st.st_mode
    for test, name in (
        (stat.S_ISREG, "regular file"),
        (stat.S_ISDIR, "directory"),
        (stat.S_ISLNK, "symlink"),
        (stat.S_ISFIFO, "FIFO"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
    ):
        if test(mode):
            return name
    return "unknown file type"


@dataclass(frozen=True)
class Leaf:
    """An opened final path component: the held parent dir fd, the name in it, its fd and fstat.

    Close it (or use it as a context manager): both descriptors are owned by it.
    """

    path: bytes
    parent_fd: int
    name: bytes
    fd: int
    stat: os.stat_result

    def close(self) -> None:
        for fd in (self.fd, self.parent_fd):
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> Leaf:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def is_regular(self) -> bool:
        """Only a regular file's fd is open for reading; anything else is an ``O_PATH`` handle."""
        return stat.S_ISREG(self.stat.st_mode)

    def name_still_here(self) -> bool:
        """True when the name in the parent still refers to the opened inode (no swap so far)."""
        return same_inode(lstat_at(self.parent_fd, self.name), self.stat)


def open_leaf(path: PathLike, *, noatime: bool = True) -> Leaf:
    """Open an absolute path for reading, no symlink followed anywhere, never blocking.

    The leaf is first opened with ``O_PATH | O_NOFOLLOW``, which opens nothing: a
    FIFO, socket or device is returned as such (its fd cannot be read, see
    ``Leaf.is_regular``) without ever being opened for real. A regular file is
    then opened with ``O_NOFOLLOW | O_NONBLOCK`` and must be the same inode. A
    symlink leaf raises ``UnsafePath``. ``O_NOATIME`` (root may use it on any
    file) keeps a scan from touching atime.
    """
    parent_fd, name = open_parent(path)
    raw = to_bytes(path)
    fd = -1
    try:
        try:
            probe = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent_fd)
        except OSError as exc:
            raise _explain(exc, raw) from None
        st = os.fstat(probe)
        if stat.S_ISLNK(st.st_mode):
            os.close(probe)
            raise UnsafePath(errno.ELOOP, f"symlink refused: {display(raw)}")
        if not stat.S_ISREG(st.st_mode):
            return Leaf(path=raw, parent_fd=parent_fd, name=name, fd=probe, stat=st)
        os.close(probe)
        try:
            try:
                fd = os.open(name, _LEAF_FLAGS | (os.O_NOATIME if noatime else 0), dir_fd=parent_fd)
            except PermissionError:
                if not noatime:
                    raise
                fd = os.open(name, _LEAF_FLAGS, dir_fd=parent_fd)  # O_NOATIME needs ownership or CAP_FOWNER
        except OSError as exc:
            raise _explain(exc, raw) from None
        now = os.fstat(fd)
        if not same_inode(now, st):
            raise UnsafePath(errno.EAGAIN, f"file replaced while opening: {display(raw)}")
        return Leaf(path=raw, parent_fd=parent_fd, name=name, fd=fd, stat=now)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        os.close(parent_fd)
        raise


def read_chunks(fd: int, size: int = 1 << 20) -> Iterator[bytes]:
    """Stream a file from its current offset in chunks (never the whole file in memory)."""
    while True:
        chunk = os.read(fd, size)
        if not chunk:
            return
        yield chunk


def fsync_dir(dir_fd: int) -> None:
    """Make renames and creations in a directory durable."""
    with contextlib.suppress(OSError):
        os.fsync(dir_fd)


_RENAME_NOREPLACE = 1


def rename_noreplace(src_dir_fd: int, src: bytes, dst_dir_fd: int, dst: bytes) -> None:
    """Rename without ever replacing an existing destination (``FileExistsError`` instead).

    ``renameat2(RENAME_NOREPLACE)`` where the kernel and filesystem have it; otherwise
    ``linkat`` + ``unlinkat``, which is also atomic about the destination.
    """
    fn = getattr(_libc(), "renameat2", None)
    if fn is not None:
        if fn(src_dir_fd, src, dst_dir_fd, dst, _RENAME_NOREPLACE) == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.ENOSYS, errno.EINVAL):
            raise OSError(err, os.strerror(err), display(dst))
    os.link(src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd, follow_symlinks=False)
    os.unlink(src, dir_fd=src_dir_fd)


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)
