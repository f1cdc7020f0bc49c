"""An append-only journal of remediation actions (JSON lines).

Every action is written down before it changes anything (``planned`` when a
sweep plans it, ``started`` right before it runs) and again with its outcome
(``done``, ``failed`` or ``refused``) with details. A crash therefore leaves a
``started`` line without an outcome: the action may be half done, and the
record says what it was about to touch.

Each line is written with a single ``write(2)`` on an ``O_APPEND`` descriptor
under an exclusive ``flock`` and fsynced before the action goes on, so lines
from several processes never interleave and a record is durable before the
deed. A torn last line (power loss mid-write) is skipped when reading.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import logging
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from hoopctl.host import pathfd

log = logging.getLogger(__name__)

STATES = ("planned", "started", "done", "failed", "refused")
FINAL_STATES = frozenset({"done", "failed", "refused"})
JOURNAL_NAME = b"journal.jsonl"


def new_action_id() -> str:
    """A sortable, unique id: UTC time to the second plus 32 random bits."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{secrets.token_hex(4)}"


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")


@dataclass(frozen=True)
class Record:
    """One journal line: an action's id, kind, state, target and details."""

    id: str
    action: str
    state: str
    at: str
    target: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    actor_uid: int = -1
    actor_pid: int = -1

    def to_json(self) -> str:
        return json.dumps(
            {
                "id": self.id,
                "action": self.action,
                "state": self.state,
                "at": self.at,
                "target": self.target,
                "details": self.details,
                "actor_uid": self.actor_uid,
                "actor_pid": self.actor_pid,
            },
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=True,
        )


class Journal:
    """The action journal: a JSON-lines file opened under a directory fd that the caller trusts."""

    def __init__(self, dir_fd: int, name: bytes = JOURNAL_NAME, *, owns_dir_fd: bool = False) -> None:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        self._dir_fd = dir_fd
        self._name = name
        self._owns_dir_fd = owns_dir_fd
        self._fd = os.open(name, flags, 0o600, dir_fd=dir_fd)

    @classmethod
    def at(cls, directory: pathfd.PathLike) -> Journal:
        """The journal in a state directory, created root-only (0700) if missing, no symlink followed."""
        dir_fd = pathfd.ensure_dir(directory, 0o700)
        try:
            return cls(dir_fd, owns_dir_fd=True)
        except BaseException:
            os.close(dir_fd)
            raise

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._fd)
        if self._owns_dir_fd:
            with contextlib.suppress(OSError):
                os.close(self._dir_fd)

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing -------------------------------------------------------------

    def write(
        self,
        action_id: str,
        action: str,
        state: str,
        target: dict[str, Any] | None = None,
        details: dict[str, Any] | None = None,
    ) -> Record:
        """Append one record and make it durable before returning."""
        if state not in STATES:
            raise ValueError(f"unknown journal state {state!r}")
        rec = Record(
            id=action_id,
            action=action,
            state=state,
            at=now_iso(),
            target=target or {},
            details=details or {},
            actor_uid=os.geteuid(),
            actor_pid=os.getpid(),
        )
        line = (rec.to_json() + "\n").encode("ascii")
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            written = os.write(self._fd, line)
            if written != len(line):  # a short write on a regular file: disk full
                raise OSError(f"journal write truncated ({written} of {len(line)} bytes)")
            os.fsync(self._fd)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        log.debug("journal %s %s %s", action_id, action, state)
        return rec

    def plan(self, action: str, target: dict[str, Any], details: dict[str, Any] | None = None) -> str:
        """Record a planned action (sweep: plan now, apply later); returns its id."""
        action_id = new_action_id()
        self.write(action_id, action, "planned", target, details)
        return action_id

    def start(
        self,
        action: str,
        target: dict[str, Any],
        details: dict[str, Any] | None = None,
        action_id: str | None = None,
    ) -> str:
        """Record that an action is about to run (before it changes anything); returns its id."""
        action_id = action_id or new_action_id()
        self.write(action_id, action, "started", target, details)
        return action_id

    def finish(
        self, action_id: str, action: str, state: str, details: dict[str, Any] | None = None
    ) -> Record:
        """Record an action's outcome: done, failed or refused."""
        if state not in FINAL_STATES:
            raise ValueError(f"{state!r} is not an outcome")
        return self.write(action_id, action, state, None, details)

    # -- reading -------------------------------------------------------------

    def records(self) -> Iterator[Record]:
        """Every well-formed record in file order (a torn or corrupt line is logged and skipped)."""
        fd = os.open(self._name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self._dir_fd)
        with os.fdopen(fd, "rb") as fh:
            for lineno, raw in enumerate(fh, 1):
                try:
                    obj = json.loads(raw)
                    yield Record(**obj)
                except (ValueError, TypeError) as exc:
                    log.warning("journal line %d unreadable, skipped: %s", lineno, exc)

    def history(self, action_id: str) -> list[Record]:
        """All records of one action, oldest first."""
        return [r for r in self.records() if r.id == action_id]

    def latest(self) -> dict[str, Record]:
        """The last record of every action, by id."""
        out: dict[str, Record] = {}
        for rec in self.records():
            out[rec.id] = rec
        return out

    def unfinished(self) -> list[Record]:
        """Actions started (or planned) without an outcome: what a crash may have left half done."""
        return [r for r in self.latest().values() if r.state not in FINAL_STATES]
