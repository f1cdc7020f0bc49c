"""Walk and read files safely from a (possibly root) process in user-writable trees.

Every directory is opened relative to its parent's file descriptor with O_NOFOLLOW|O_DIRECTORY, and
every file relative to its directory's descriptor with O_NOFOLLOW|O_NONBLOCK|O_NOCTTY, then checked
with fstat on the opened descriptor: a path component swapped for a symlink between listing and
opening makes the open fail (ELOOP) instead of leading out of the tree, and a FIFO, socket or
device is never read (never opened at all when the directory listing already says what it is).

Choices, and why:
- Symlinks are never followed, inside or outside the tree, including the last component of a path
  given on the command line: a root scanner must not be steered by a user-made link. They are
  counted. The components above a starting path are resolved by the kernel as the operator wrote
  them (so /var/run/x works); scan the real path when those may be user-controlled.
- Mount points are crossed, except into pseudo filesystems (/proc, /sys, cgroups, ...), whose
  files are not credentials left behind and can be huge or slow; `one_file_system=True` stays on
  the device of each starting path.
- Files larger than `max_file_size` are skipped and counted. A file is binary (skipped, counted)
  when its first 8 KiB hold a NUL byte, except UTF-16/UTF-32 text with a byte-order mark, which is
  re-encoded as UTF-8 (line numbers unchanged) and scanned.
- Unreadable entries (EACCES/EPERM) are counted, never fatal.
- Default excludes are only the object stores of version control (compressed, never text); not
  node_modules nor .git itself, since .git/config and packages' .npmrc/.env hold real credentials.
- Names are `str` decoded with os.fsdecode (surrogateescape, lossless); `printable()` escapes them
  for display.
"""

from __future__ import annotations

import errno
import fnmatch
import logging
import os
import re
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

log = logging.getLogger(__name__)

DEFAULT_MAX_FILE_SIZE = 10 * 1024 * 1024
#: Version-control object stores: compressed blobs, never readable text.
DEFAULT_EXCLUDES: tuple[str, ...] = (".git/objects", "*/.git/objects", ".hg/store", "*/.hg/store")
BINARY_PROBE = 8192
#: One read covers most files whole; bigger ones get a second read after the binary probe.
FIRST_READ = 64 * 1024
MAX_DEPTH = 256

#: Filesystems whose files are kernel state, not files someone left behind.
PSEUDO_FS = frozenset(
    {
        "proc",
        "sysfs",
        "cgroup",
        "cgroup2",
        "devpts",
        "devtmpfs",
        "debugfs",
        "tracefs",
        "securityfs",
        "pstore",
        "bpf",
        "configfs",
        "fusectl",
        "mqueue",
        "hugetlbfs",
        "autofs",
        "binfmt_misc",
        "efivarfs",
        "nsfs",
        "rpc_pipefs",
    }
)

_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NOCTTY | os.O_CLOEXEC | os.O_NONBLOCK
# O_NOATIME leaves access times as they were (a scan should not look like a user reading their
# files) and saves a metadata write; the kernel allows it only to the owner or CAP_FOWNER, so it is
# used only by root, and dropped for the rest of a walk after the first EPERM.
_NOATIME = getattr(os, "O_NOATIME", 0)

_UNREADABLE = (errno.EACCES, errno.EPERM)
_BOMS = (
    (b"\xff\xfe\x00\x00", "utf-32"),
    (b"\x00\x00\xfe\xff", "utf-32"),
    (b"\xff\xfe", "utf-16"),
    (b"\xfe\xff", "utf-16"),
)


class WalkError(Exception):
    """A starting path cannot be scanned at all (missing, not a file or directory)."""


@dataclass(slots=True)
class WalkCounters:
    """What the walk skipped and why; mutated while walking, summed across workers."""

    files_scanned: int = 0
    bytes_scanned: int = 0
    dirs_scanned: int = 0
    skipped_binary: int = 0
    skipped_large: int = 0
    skipped_special: int = 0
    unreadable: int = 0
    symlinks_skipped: int = 0
    excluded: int = 0
    other_fs_skipped: int = 0
    errors: int = 0

    def add(self, other: WalkCounters) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


class FileData(NamedTuple):
    """One regular file read whole: where it is, its metadata and its bytes.

    A NamedTuple rather than a frozen dataclass: one is made per file, and a tuple costs less.
    """

    path: str  # display root joined with the relative path; fsdecoded, may hold surrogates
    data: bytes
    st_mode: int
    st_uid: int
    shared_dir: bool  # lies under a world-writable or sticky directory met during the walk


def printable(name: str) -> str:
    """A name safe to print on one line: control characters and undecodable bytes escaped.

    Backslashes are doubled whenever anything is escaped, so the escaping cannot be forged.
    """
    if name.isprintable() and "\\" not in name:
        return name
    out = []
    for ch in name:
        o = ord(ch)
        if 0xDC80 <= o <= 0xDCFF:  # surrogateescape: an undecodable byte
            out.append(f"\\x{o - 0xDC00:02x}")
        elif ch == "\\":
            out.append("\\\\")
        elif not ch.isprintable():
            out.append(ch.encode("unicode_escape").decode("ascii"))
        else:
            out.append(ch)
    return "".join(out)


def compile_excludes(globs: Sequence[str]) -> tuple[re.Pattern[str] | None, re.Pattern[str] | None]:
    """Globs without '/' match a basename at any depth; globs with '/' match the path from the root."""
    base = [fnmatch.translate(g) for g in globs if "/" not in g.strip("/")]
    rel = [fnmatch.translate(g.strip("/")) for g in globs if "/" in g.strip("/")]
    return (
        re.compile("|".join(base)) if base else None,
        re.compile("|".join(rel)) if rel else None,
    )


def _pseudo_devices() -> frozenset[int]:
    """Device numbers of mounted pseudo filesystems, from /proc/self/mountinfo."""
    devs = set()
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                left, _, right = line.partition(" - ")
                fields = left.split()
                fstype = right.split(" ", 1)[0]
                if fstype in PSEUDO_FS and len(fields) > 2:
                    major, _, minor = fields[2].partition(":")
                    devs.add(os.makedev(int(major), int(minor)))
    except (OSError, ValueError) as exc:
        log.debug("cannot read mountinfo: %s", exc)
    return frozenset(devs)


def _decode_bom(data: bytes) -> bytes | None:
    for bom, codec in _BOMS:
        if data.startswith(bom):
            try:
                return data.decode(codec).encode("utf-8", "surrogatepass")
            except UnicodeError:
                return None
    return None


@dataclass
class Walker:
    """Walks starting paths and yields the regular text files under them, read whole.

    `part=(k, n)` makes this walker read only the files whose (directory, name) hash falls in
    share k of n, so n forked workers split one tree without talking to each other; directory
    level counts (dirs, errors on directories) are kept by share 0 only.
    """

    excludes: Sequence[str] = DEFAULT_EXCLUDES
    max_file_size: int = DEFAULT_MAX_FILE_SIZE
    one_file_system: bool = False
    part: tuple[int, int] = (0, 1)
    counters: WalkCounters = field(default_factory=WalkCounters)
    _pseudo: frozenset[int] | None = None
    _file_flags: int = _FILE_FLAGS
    _dir_flags: int = _DIR_FLAGS

    def __post_init__(self) -> None:
        if os.geteuid() == 0 and _NOATIME:
            self._file_flags |= _NOATIME
            self._dir_flags |= _NOATIME

    def _open(self, name: str, flags: int, dir_fd: int | None) -> int:
        try:
            return os.open(name, flags, dir_fd=dir_fd)
        except PermissionError as exc:
            if not (flags & _NOATIME and exc.errno == errno.EPERM):
                raise
            self._file_flags &= ~_NOATIME
            self._dir_flags &= ~_NOATIME
            return os.open(name, flags & ~_NOATIME, dir_fd=dir_fd)

    def _is_pseudo(self, dev: int) -> bool:
        if self._pseudo is None:
            self._pseudo = _pseudo_devices()
        return dev in self._pseudo

    def walk(self, root: str) -> Iterator[FileData]:
        """Yield every readable regular text file under `root` (a directory or a single file)."""
        c = self.counters
        lead = self.part[0] == 0
        # "link/" would make the kernel resolve the symlink despite lstat and O_NOFOLLOW.
        root = root.rstrip("/") or "/"
        try:
            st = os.lstat(root)
        except FileNotFoundError:
            raise WalkError(f"{printable(root)}: no such file or directory") from None
        except OSError as exc:
            raise WalkError(f"{printable(root)}: {exc.strerror}") from None
        if stat.S_ISLNK(st.st_mode):
            log.warning("%s: is a symlink, not followed", printable(root))
            if lead:
                c.symlinks_skipped += 1
            return
        if stat.S_ISREG(st.st_mode):
            if lead:
                parent, name = os.path.split(root)
                yield from self._single(parent or ".", name, root)
            return
        if not stat.S_ISDIR(st.st_mode):
            if lead:
                c.skipped_special += 1
            return
        try:
            fd = self._open(root, self._dir_flags, None)
        except OSError as exc:
            if exc.errno in _UNREADABLE:
                if lead:
                    c.unreadable += 1
                return
            if exc.errno == errno.ELOOP:  # swapped for a symlink since the lstat
                if lead:
                    c.symlinks_skipped += 1
                return
            raise WalkError(f"{printable(root)}: {exc.strerror}") from None
        yield from self._tree(fd, root.rstrip("/") or "/")

    def walk_fd(self, dir_fd: int, display: str) -> Iterator[FileData]:
        """Yield every readable regular text file under an already-open directory.

        For a caller that opened the directory itself without following any symlink (e.g. with
        `hoopctl.host.pathfd.open_dir`): nothing is resolved by name above `dir_fd`, so a parent
        swapped for a symlink after that open cannot lead the walk elsewhere. `display` is only
        the prefix of the yielded paths. The caller keeps ownership of `dir_fd` (it is not closed
        here; the walk works on a duplicate, closed when the generator ends).
        """
        fd = os.dup(dir_fd)
        try:
            if not stat.S_ISDIR(os.fstat(fd).st_mode):
                raise WalkError(f"{printable(display)}: not a directory")
        except BaseException:
            os.close(fd)
            raise
        yield from self._tree(fd, display.rstrip("/") or "/")

    def _single(self, parent: str, name: str, display: str) -> Iterator[FileData]:
        # The parent is resolved as the operator wrote it (like the components above a starting
        # directory); the file itself is opened with O_NOFOLLOW relative to it.
        try:
            dfd = self._open(parent, self._dir_flags & ~os.O_NOFOLLOW, None)
        except OSError as exc:
            self._count_open_error(exc)
            return
        try:
            st = os.fstat(dfd)
            shared = bool(st.st_mode & (stat.S_IWOTH | stat.S_ISVTX))
            item = self._read(dfd, name, display, shared)
            if item is not None:
                yield item
        finally:
            os.close(dfd)

    def _count_open_error(self, exc: OSError) -> None:
        c = self.counters
        if exc.errno in _UNREADABLE:
            c.unreadable += 1
        elif exc.errno == errno.ELOOP:
            c.symlinks_skipped += 1
        elif exc.errno != errno.ENOENT:  # vanished between listing and opening: not an error
            c.errors += 1
            log.debug("open failed: %s", exc)

    def _read(self, dfd: int, name: str, path: str, shared: bool) -> FileData | None:
        c = self.counters
        try:
            fd = self._open(name, self._file_flags, dfd)
        except OSError as exc:
            self._count_open_error(exc)
            return None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                c.skipped_special += 1
                return None
            size = st.st_size
            if size > self.max_file_size:
                c.skipped_large += 1
                log.debug("%s: %d bytes, over the size limit", printable(path), size)
                return None
            if size == 0:
                c.files_scanned += 1
                return None
            data = os.read(fd, size if size <= FIRST_READ else FIRST_READ)
            if b"\0" in data[:BINARY_PROBE]:
                decoded = _decode_bom(data) if len(data) == size else None
                if decoded is None and data[:2] in (b"\xff\xfe", b"\xfe\xff"):
                    data += _read_rest(fd, size - len(data))
                    decoded = _decode_bom(data)
                if decoded is None:
                    c.skipped_binary += 1
                    return None
                data = decoded
            elif len(data) < size:
                data += _read_rest(fd, size - len(data))
        except OSError as exc:
            if exc.errno in _UNREADABLE:
                c.unreadable += 1
            else:
                c.errors += 1
                log.debug("%s: read failed: %s", printable(path), exc)
            return None
        finally:
            os.close(fd)
        c.files_scanned += 1
        c.bytes_scanned += len(data)
        return FileData(path, data, st.st_mode, st.st_uid, shared)

    def _tree(self, top_fd: int, top: str) -> Iterator[FileData]:
        c = self.counters
        k, n = self.part
        lead = k == 0
        base_re, rel_re = compile_excludes(self.excludes)
        top_st = os.fstat(top_fd)
        top_dev = top_st.st_dev
        topslash = top if top.endswith("/") else top + "/"
        # Each frame: (dir fd, relative path, shared, device, subdirectories still to enter).
        stack: list[tuple[int, str, bool, int, list[str]]] = []

        def enter(fd: int, rel: str, shared: bool, dev: int) -> Iterator[FileData]:
            subdirs: list[str] = []
            dhash = hash(rel)
            prefix = f"{topslash}{rel}/" if rel else topslash
            relprefix = rel + "/" if rel else ""
            # On the stack before listing, so an early close of this generator still closes fd.
            stack.append((fd, rel, shared, dev, subdirs))
            if lead:
                c.dirs_scanned += 1
            try:
                it = os.scandir(fd)
            except OSError as exc:
                if lead:
                    self._count_open_error(exc)
                return
            with it:
                for entry in it:
                    name = entry.name
                    if base_re is not None and base_re.match(name):
                        if lead:
                            c.excluded += 1
                        continue
                    if rel_re is not None and rel_re.match(relprefix + name):
                        if lead:
                            c.excluded += 1
                        continue
                    try:
                        # Most entries are regular files: test that first (d_type, no syscall).
                        if not entry.is_file(follow_symlinks=False):
                            if entry.is_dir(follow_symlinks=False):
                                subdirs.append(name)
                            elif n == 1 or (hash(name) ^ dhash) % n == k:
                                if entry.is_symlink():
                                    c.symlinks_skipped += 1
                                else:
                                    c.skipped_special += 1
                            continue
                        if n > 1 and (hash(name) ^ dhash) % n != k:
                            continue
                    except OSError as exc:
                        self._count_open_error(exc)
                        continue
                    item = self._read(fd, name, prefix + name, shared)
                    if item is not None:
                        yield item
            subdirs.reverse()  # popped from the end: keep listing order

        top_shared = bool(top_st.st_mode & (stat.S_IWOTH | stat.S_ISVTX))
        try:
            yield from enter(top_fd, "", top_shared, top_dev)
            while stack:
                fd, rel, shared, dev, subdirs = stack[-1]
                if not subdirs:
                    stack.pop()
                    os.close(fd)
                    continue
                name = subdirs.pop()
                child_rel = f"{rel}/{name}" if rel else name
                if len(stack) >= MAX_DEPTH:
                    if lead:
                        c.errors += 1
                        log.warning(
                            "%s/%s: deeper than %d levels, not entered", top, printable(child_rel), MAX_DEPTH
                        )
                    continue
                try:
                    cfd = self._open(name, self._dir_flags, fd)
                except OSError as exc:
                    if lead:
                        if exc.errno == errno.ENOTDIR:  # replaced since the listing; say by what
                            exc = _classify_swap(name, fd, exc)
                        self._count_open_error(exc)
                    continue
                try:
                    cst = os.fstat(cfd)
                except OSError:
                    os.close(cfd)
                    if lead:
                        c.errors += 1
                    continue
                if cst.st_dev != dev and (
                    (self.one_file_system and cst.st_dev != top_dev) or self._is_pseudo(cst.st_dev)
                ):
                    os.close(cfd)
                    if lead:
                        c.other_fs_skipped += 1
                    continue
                child_shared = shared or bool(cst.st_mode & (stat.S_IWOTH | stat.S_ISVTX))
                yield from enter(cfd, child_rel, child_shared, cst.st_dev)
        finally:
            # Also reached when the consumer stops early: release every descriptor still open.
            for frame in stack:
                os.close(frame[0])
            stack.clear()


def _classify_swap(name: str, dir_fd: int, exc: OSError) -> OSError:
    """A directory that is no longer one when opened: a symlink counts as one (ELOOP)."""
    try:
        if stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
            return OSError(errno.ELOOP, os.strerror(errno.ELOOP))
    except OSError as again:
        return again
    return exc


def _read_rest(fd: int, want: int) -> bytes:
    chunks = []
    while want > 0:
        chunk = os.read(fd, want)
        if not chunk:
            break
        chunks.append(chunk)
        want -= len(chunk)
    return b"".join(chunks)
