"""Where recordings live on disk, and how to open them without following symlinks.

    DIR/ledger.jsonl           one hash chain over every session's start and end
    DIR/sessions/<id>.jsonl    one hash chain per session (start, statements, end)
    DIR/recorders/<id>.lock    held (flock) by a live recorder; a free one marks a dead
                               recorder whose open sessions may be sealed
    DIR/recorders/<id>.N.wal   its group-commit journal (fsync batch; see journal.py)

One file per session keeps concurrent sessions from contending on a lock for every
statement; only session starts and ends go through the shared, locked ledger.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from pathlib import Path

LEDGER = "ledger.jsonl"
SESSIONS = "sessions"
RECORDERS = "recorders"
SUFFIX = ".jsonl"
DEFAULT_DIR = Path("/var/lib/hoopctl/recordings")
ENV_DIR = "HOOPCTL_RECORDINGS"
ENV_KEY_FILE = "HOOPCTL_RECORDINGS_KEY_FILE"

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def open_dir(path: Path | str, *, dir_fd: int | None = None, create: bool = False) -> int:
    """Open a directory without following a symlink at its last component.

    With ``create``, make it (mode 0700) if missing. Raises OSError.
    """
    if create:
        try:
            os.mkdir(path, 0o700, dir_fd=dir_fd)
        except FileExistsError:
            pass
    return os.open(path, _DIR_FLAGS, dir_fd=dir_fd)


def open_regular(name: str, flags: int, *, dir_fd: int, mode: int = 0o600) -> int:
    """Open a regular file in ``dir_fd`` without following a symlink or blocking.

    O_NONBLOCK: opening a FIFO planted under a recording's name must not hang the
    caller (which may hold the ledger's lock). Anything but a regular file raises
    OSError "not a regular file".
    """
    fd = os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, mode, dir_fd=dir_fd)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        os.set_blocking(fd, True)  # what follows is plain file I/O, as without the flag
    except BaseException:
        os.close(fd)
        raise
    return fd


def session_file(sid: str) -> str:
    return sid + SUFFIX


def lock_file(rid: str) -> str:
    return rid + ".lock"


def journal_files(rid: str) -> tuple[str, str]:
    return rid + ".0.wal", rid + ".1.wal"


def resolve_dir(option: str | Path | None) -> Path:
    """The recordings directory: the option, else $HOOPCTL_RECORDINGS, else the default."""
    if option:
        return Path(option)
    env = os.environ.get(ENV_DIR)
    return Path(env) if env else DEFAULT_DIR


def recorder_alive(recorders_fd: int, rid: str) -> bool:
    """Whether recorder `rid` still holds its lock file (a probe: takes the lock only if free)."""
    try:
        fd = open_regular(lock_file(rid), os.O_RDONLY, dir_fd=recorders_fd)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
