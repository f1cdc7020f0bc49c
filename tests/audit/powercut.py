"""A simulated power cut for the recorder tests: only what was fsynced survives.

Track, per inode, the size at its last fsync/fdatasync, and for directories the
names present at their last fsync. `cut(src, dst)` copies `src` to `dst` keeping
only that: each file truncated to min(current size, last synced size) (0 if
never synced), and in sessions/ only the names present at the dir's last fsync.
"""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

_real_fsync, _real_fdatasync = os.fsync, os.fdatasync
synced: dict[tuple[int, int], int] = {}
dir_names: dict[tuple[int, int], set[str]] = {}
_lock = threading.Lock()


def _note(fd: int) -> None:
    st = os.fstat(fd)
    key = (st.st_dev, st.st_ino)
    with _lock:
        if stat.S_ISDIR(st.st_mode):
            dir_names[key] = set(os.listdir(fd))
        else:
            synced[key] = st.st_size


def fsync(fd):
    _real_fsync(fd)
    _note(fd)


def fdatasync(fd):
    _real_fdatasync(fd)
    _note(fd)


def install(monkeypatch) -> None:
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "fdatasync", fdatasync)


def cut(src: Path, dst: Path) -> None:
    """Copy src to dst as a power cut right now would leave it."""
    with _lock:
        for root, _dirs, files in os.walk(src):
            rel = Path(root).relative_to(src)
            st = os.stat(root)
            durable = dir_names.get((st.st_dev, st.st_ino))
            (dst / rel).mkdir(parents=True, exist_ok=True, mode=0o700)
            os.chmod(dst / rel, 0o700)
            for name in files:
                if rel == Path("sessions") and durable is not None and name not in durable:
                    continue  # its directory entry never reached the disk
                p = Path(root) / name
                fst = p.lstat()
                if not stat.S_ISREG(fst.st_mode):
                    continue
                keep = min(fst.st_size, synced.get((fst.st_dev, fst.st_ino), 0))
                (dst / rel / name).write_bytes(p.read_bytes()[:keep])
                os.chmod(dst / rel / name, 0o600)
