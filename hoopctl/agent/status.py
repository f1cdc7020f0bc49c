"""The agent's status: counters kept while running, written atomically to a JSON file for `agent status`.

The file (``<state_dir>/status.json``) is replaced with write-to-temp + fsync + rename, so a reader
sees either the previous or the new content, never a torn one.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections import Counter, deque
from pathlib import Path
from typing import Any

from hoopctl.host import pathfd

STATUS_NAME = "status.json"
MAX_ERRORS = 20


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


class Status:
    """Thread-safe counters of what the agent saw and did."""

    def __init__(self, mode: str) -> None:
        self._lock = threading.Lock()
        self.pid = os.getpid()
        self.started = time.time()
        self.mode = mode
        self.state = "starting"
        self.findings: Counter[str] = Counter()
        self.actions: Counter[str] = Counter()  # "<kind>.<action>.<outcome>"
        self.last_full_scan: float | None = None
        self.full_scan_seconds: float | None = None
        self.last_file_event: float | None = None
        self.last_proc_scan: float | None = None
        self.files_checked = 0
        self.watches = 0
        self.roots: list[str] = []
        self.unwatched: list[str] = []
        self.overflows = 0
        self.reloads = 0
        self.errors: deque[dict[str, Any]] = deque(maxlen=MAX_ERRORS)
        self.error_count = 0

    def finding(self, kind: str) -> None:
        with self._lock:
            self.findings[kind] += 1

    def action(self, kind: str, action: str, outcome: str) -> None:
        with self._lock:
            self.actions[f"{kind}.{action}.{outcome}"] += 1

    def error(self, where: str, message: str) -> None:
        with self._lock:
            self.error_count += 1
            self.errors.append({"at": _iso(time.time()), "where": where, "message": message})

    def set(self, **fields: Any) -> None:
        with self._lock:
            for k, v in fields.items():
                setattr(self, k, v)

    def bump(self, name: str, n: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + n)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "pid": self.pid,
                "state": self.state,
                "mode": self.mode,
                "started": _iso(self.started),
                "updated": _iso(time.time()),
                "last_full_scan": _iso(self.last_full_scan),
                "full_scan_seconds": self.full_scan_seconds,
                "last_file_event": _iso(self.last_file_event),
                "last_process_scan": _iso(self.last_proc_scan),
                "files_checked": self.files_checked,
                "findings": dict(self.findings),
                "actions": dict(self.actions),
                "watches": self.watches,
                "roots": list(self.roots),
                "unwatched": list(self.unwatched),
                "overflows": self.overflows,
                "reloads": self.reloads,
                "error_count": self.error_count,
                "errors": list(self.errors),
            }

    def line(self) -> str:
        """A short STATUS= line for systemd."""
        with self._lock:
            f = sum(self.findings.values())
            a = sum(v for k, v in self.actions.items() if k.endswith(".done"))
            return (
                f"{self.state}: {self.watches} watches, {f} findings, {a} actions, "
                f"{self.error_count} errors ({self.mode})"
            )


def write_status(state_dir: str | os.PathLike[str], data: dict[str, Any]) -> None:
    """Replace `<state_dir>/status.json` atomically (no symlink followed on the way)."""
    fd = pathfd.ensure_dir(os.fspath(state_dir), 0o755)
    tmp = f".{STATUS_NAME}.{os.getpid()}.tmp"
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=fd)
        out = os.open(
            tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=fd
        )
        try:
            os.write(out, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())
            os.fsync(out)
        finally:
            os.close(out)
        os.rename(tmp, STATUS_NAME, src_dir_fd=fd, dst_dir_fd=fd)
    finally:
        os.close(fd)


def read_status(state_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The last status written; OSError/ValueError when there is none or it is unreadable."""
    return json.loads(Path(state_dir, STATUS_NAME).read_text())


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
