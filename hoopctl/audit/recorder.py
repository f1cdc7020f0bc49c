"""Writing session recordings: one hash-chained file per session, a shared ledger.

The gateway calls ``SessionRecording.statement()`` before it forwards a statement;
it returns only once the record has been handed to the kernel with write(2), so a
gateway killed right after cannot lose the record of a statement it forwarded.
Durability against power loss follows the fsync policy:

- ``always``: fsync before statement() returns;
- ``batch`` (default): every record also goes to the recorder's journal, which a
  background thread writes and fdatasyncs every ``interval_ms`` (group commit: one
  fdatasync per window for all sessions); a power cut loses at most that window.
  About once a second a checkpoint fsyncs the session files themselves (journal.py).
  The thread sleeps until something is written: an idle gateway costs no wakeups;
- ``os``: left to the kernel, except at session end, which is always fsynced.

A result record is not needed before anything is forwarded: result() seals it at
once (its place in the chain is fixed) but writes it to the session file together
with the session's next record, in one write(2), or else at the next checkpoint
(batch: it is in the journal within ``interval_ms``) or within 50 ms (os).

Any failure to write raises ``RecordingError``: the caller must refuse the
statement (no record, no forwarding). A session whose write failed stays failed.

One SessionRecording belongs to one connection and is not thread-safe; the
Recorder itself may be used from several threads. Several recorders (processes)
may share one directory: the ledger is appended under flock.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import math
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from hoopctl.audit import layout
from hoopctl.audit.chain import (
    GENESIS,
    RESERVED,
    ChainChecker,
    ChainError,
    Parsed,
    encode_fields,
    encode_str,
    is_torn_marker,
    json_default,
    parse_line,
    seal,
)
from hoopctl.audit.ids import is_id, new_id
from hoopctl.audit.journal import Journal, read_journal, remove_journal, write_all

log = logging.getLogger(__name__)

FsyncPolicy = Literal["always", "batch", "os"]
POLICIES = ("always", "batch", "os")
_START_FIELDS = frozenset({"sid", "identity", "chain", "client", "resource", "role", "recorder", "fsync"})
_FILE_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_LOCK_FLAGS = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
# Built once: json.dumps() with options would build an encoder on every call.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True, allow_nan=False, default=json_default)


def _encode_params(params: list[Any]) -> str:
    """Bind parameters as JSON; the usual all-text (or NULL) case without the encoder."""
    parts = []
    for value in params:
        if type(value) is str:
            parts.append(encode_str(value))
        elif value is None:
            parts.append("null")
        else:
            return _ENCODER.encode(params)
    return "[" + ",".join(parts) + "]"


_time = time.time
_mono = time.monotonic
_CHECK_EVERY_S = 0.5
_CHECKPOINT_S = 1.0


class RecordingError(RuntimeError):
    """A record could not be written (or made durable): refuse what it was for."""


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc)


@dataclass(frozen=True)
class _Tail:
    """The end of the ledger: its last well-formed record, and what follows it."""

    last: Parsed | None
    damaged: list[bytes]  # whole lines after it that are not well-formed records
    fragment: bytes  # bytes after the last newline
    reason: str  # why the last damaged line is not a record


def _ledger_record(raw: bytes) -> Parsed:
    parsed = parse_line(raw)
    seq = parsed.record.get("seq")
    if type(seq) is not int or seq < 0:
        raise ChainError("seq is not a count")
    return parsed


def _read_tail(fd: int, size: int) -> _Tail:
    """Read back from the end until a whole line is a well-formed record (or the start)."""
    window = 4096
    while True:
        start = max(0, size - window)
        lines = os.pread(fd, size - start, start).split(b"\n")
        fragment = lines.pop()
        if start > 0:
            del lines[:1]  # may begin in the middle of a line
        damaged: list[bytes] = []
        reason = ""
        for raw in reversed(lines):
            try:
                last = _ledger_record(raw)
            except ChainError as exc:
                damaged.append(raw)
                reason = reason or str(exc)
                continue
            return _Tail(last, damaged[::-1], fragment, reason)
        if start == 0:
            return _Tail(None, damaged[::-1], fragment, reason)
        window *= 4


def _continues(tail: _Tail, prev: str, seq: int) -> bool:
    """Whether the tail's fragment is a whole record that continues the chain from
    (prev, seq), as verify will read it: the next record, or the torn marker for the
    damaged lines before it (a repair whose write lost only its newline)."""
    if not tail.fragment:
        return False
    try:
        record = parse_line(tail.fragment).record
    except ChainError:
        return False
    if tail.damaged:
        return is_torn_marker(record, len(b"\n".join(tail.damaged)), prev, seq)
    return record.get("seq") == seq and record.get("prev") == prev


class Ledger:
    """The shared chain of session starts and ends, appended under flock."""

    def __init__(self, dir_fd: int, key: bytes | None) -> None:
        self._fd = layout.open_regular(layout.LEDGER, os.O_RDWR | os.O_APPEND | os.O_CREAT, dir_fd=dir_fd)
        self._key = key
        self._lock = threading.Lock()
        self._size = -1
        self._prev = GENESIS
        self._seq = 0
        self.dirty = False

    @contextlib.contextmanager
    def locked(self, repair: bool = False) -> Iterator[Ledger]:
        """Hold the ledger (threads and processes) and bring the tail up to date.

        ``repair``: mark a record torn by a crash instead of refusing to go on
        (done once, when a recorder starts)."""
        with self._lock:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                self._sync_tail(repair)
                yield self
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _sync_tail(self, repair: bool) -> None:
        st = os.fstat(self._fd)
        if st.st_nlink == 0:
            raise RecordingError("the recordings ledger was deleted")
        size = st.st_size
        if size == self._size:
            return
        if size == 0:
            self._prev, self._seq, self._size = GENESIS, 0, 0
            return
        tail = _read_tail(self._fd, size)
        if tail.last is None:
            self._prev, self._seq = GENESIS, 0
        else:
            self._prev, self._seq = tail.last.hash, tail.last.record["seq"] + 1
        if (tail.fragment or tail.damaged) and not repair:  # a running recorder never guesses
            if tail.damaged:
                raise RecordingError(
                    f"the ledger's last record is damaged ({tail.reason}); run `hoopctl sessions verify`"
                )
            raise RecordingError("the ledger ends with a partial record; run `hoopctl sessions verify`")
        self._size = size
        if tail.fragment or tail.damaged:
            self._repair(tail)

    def _repair(self, tail: _Tail) -> None:
        """Deal with what a crash left at the end of the ledger (a recorder is starting)."""
        if _continues(tail, self._prev, self._seq):
            # Only the newline was lost: the record is whole, and the chain goes on from it.
            try:
                write_all(self._fd, b"\n")
            except OSError as exc:
                raise RecordingError(f"cannot repair the recordings ledger: {_why(exc)}") from exc
            adopted = parse_line(tail.fragment)
            self._size += 1
            self._prev, self._seq = adopted.hash, self._seq + 1
            log.warning("the recordings ledger's last record had lost its newline; restored")
            return
        # Part of a record (or a line that is not one): close its line and say so in the
        # chain, which goes on from the last whole record. One write: a crash cannot
        # leave the line closed but unmarked.
        torn = b"\n".join([*tail.damaged, tail.fragment] if tail.fragment else tail.damaged)
        self.append("torn", {"bytes": len(torn)}, prefix=b"\n" if tail.fragment else b"")
        log.warning("the recordings ledger ended with %d bytes of a torn record; marked", len(torn))

    def append(self, kind: str, fields: dict[str, Any], prefix: bytes = b"") -> str:
        """Append one record; call inside ``locked()``. Returns its hash.

        ``prefix``: bytes written before the record, in the same write."""
        body = encode_fields(
            {"seq": self._seq, "ts": round(_time(), 6), "prev": self._prev, "kind": kind, **fields}
        )
        line, digest = seal(body, self._key)
        try:
            write_all(self._fd, prefix + line if prefix else line)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._size)
            raise RecordingError(f"cannot write the recordings ledger: {_why(exc)}") from exc
        self._size += len(prefix) + len(line)
        self._prev, self._seq = digest, self._seq + 1
        self.dirty = True
        return digest

    def read_all(self) -> list[dict[str, Any]]:
        """Every readable record so far (for recovery; verification is the reader's job)."""
        out = []
        data = os.pread(self._fd, max(self._size, 0), 0)
        for raw in data.split(b"\n"):
            with contextlib.suppress(ChainError):
                out.append(parse_line(raw).record)
        return out

    def fsync(self) -> None:
        self.dirty = False
        os.fsync(self._fd)

    def close(self) -> None:
        os.close(self._fd)


class SessionRecording:
    """The recording of one session. Not thread-safe: one connection, one task."""

    __slots__ = (
        "sid",
        "_recorder",
        "_fd",
        "_prev",
        "_seq",
        "_size",
        "_t0",
        "_always",
        "_dirty",
        "_error",
        "_sync_lock",
        "_stmts",
        "_refused",
        "_first",
        "_closed",
        "_held",
        "_wlock",
        "_kick",
        "_queue",
        "_head",
        "_unsynced",
    )

    def __init__(self, recorder: Recorder, sid: str, fd: int, t0: float) -> None:
        self.sid = sid
        self._recorder = recorder
        self._fd = fd
        self._prev = GENESIS
        self._seq = 0
        self._size = 0
        self._t0 = t0
        self._always = recorder.fsync == "always"
        self._dirty = False
        self._error: BaseException | None = None
        self._sync_lock = threading.Lock()
        self._stmts = 0
        self._refused = 0
        self._first = ""
        self._closed = False
        self._held = b""  # sealed result records not written yet
        # Guards the fd's writes and _size against the background thread writing held
        # results; never held across an fsync, so the connection never waits for one.
        self._wlock = threading.Lock()
        self._kick = recorder._kick
        # fsync batch: each record also goes to the recorder's journal, as "<sid> <line>".
        self._queue = recorder._journal.queue if recorder._journal is not None else None
        self._head = sid.encode("ascii") + b" "
        # Written since the checkpoint last fsynced the file (set and cleared under _wlock).
        self._unsynced = False

    # -- the hot path -------------------------------------------------------------

    def _append(self, body: bytes) -> str:
        if self._error is not None:
            raise RecordingError(f"session {self.sid}: recording failed earlier ({self._error})")
        line, digest = seal(body)
        with self._wlock:
            # Again under the lock: the background thread may have failed the session
            # (a held record lost) since the record was sealed on top of it.
            if self._error is not None:
                raise RecordingError(f"session {self.sid}: recording failed earlier ({self._error})")
            if self._held:
                data = self._held + line
                self._held = b""
            else:
                data = line
            try:
                n = os.write(self._fd, data)
                if n != len(data):
                    write_all(self._fd, data[n:])
                if self._queue is not None:
                    self._mark_unsynced()
                    self._queue(self._head + line)  # held records were queued when sealed
                if self._always:
                    os.fsync(self._fd)
                    if os.fstat(self._fd).st_nlink == 0:
                        raise OSError(errno.ENOENT, "the recording file was deleted")
            except OSError as exc:
                self._fail(exc, data)
            self._size += len(data)
            self._prev = digest
            self._seq += 1
        if not self._dirty:
            self._dirty = True
            self._kick()
        return digest

    def _hold(self, body: bytes) -> None:
        """Seal a record now and write it with the next one (or from the background thread)."""
        if self._error is not None:
            raise RecordingError(f"session {self.sid}: recording failed earlier ({self._error})")
        line, digest = seal(body)
        with self._wlock:
            if self._error is not None:  # see _append
                raise RecordingError(f"session {self.sid}: recording failed earlier ({self._error})")
            self._prev = digest
            self._seq += 1
            if self._held:
                self._held += line
            else:
                self._held = line
            if self._queue is not None:
                self._mark_unsynced()
                self._queue(self._head + line)
        if not self._dirty:
            self._dirty = True
            self._kick()

    def _mark_unsynced(self) -> None:
        # Under _wlock. The recorder's set, not its list of open sessions: a session
        # whose start the journal has may not be registered yet at the checkpoint.
        if not self._unsynced:
            self._unsynced = True
            self._recorder._unsynced.add(self)

    def write_held(self) -> None:
        """Write held result records (the background thread calls this)."""
        if not self._held:
            return
        with self._wlock:
            data = self._held
            if not data or self._fd < 0 or self._error is not None:
                return
            self._held = b""
            try:
                write_all(self._fd, data)
            except OSError as exc:
                with contextlib.suppress(RecordingError):
                    self._fail(exc, data)
                return
            self._size += len(data)

    def _fail(self, exc: OSError, lost: bytes = b"") -> None:
        # Cut a partly written record off, so that what is on disk stays a valid chain.
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, self._size)
        if lost:
            # Held results were sealed ahead of the disk: the chain's end is where the
            # first lost record starts (the ledger's close must name what is on disk).
            with contextlib.suppress(ChainError, KeyError, ValueError):
                first = parse_line(lost[: lost.index(b"\n")]).record
                self._prev, self._seq = str(first["prev"]), int(first["seq"])
        self._error = exc
        log.error("recording of session %s failed: %s", self.sid, _why(exc))
        raise RecordingError(f"session {self.sid}: cannot write the recording: {_why(exc)}") from exc

    def statement(
        self,
        text: str,
        params: list[Any] | None,
        allowed: bool,
        rule: str | None,
        protocol: Literal["simple", "extended"],
    ) -> int:
        """Record a statement (before it is forwarded). Returns the handle for result()."""
        if self._closed:
            raise RecordingError(f"session {self.sid}: recording already closed")
        seq = self._seq
        if params is None:
            p = "null"
        else:
            try:
                p = _encode_params(params)
            except (TypeError, ValueError) as exc:
                raise RecordingError(f"session {self.sid}: cannot encode parameters: {exc}") from None
        try:
            body = (
                f'{{"seq":{seq},"ts":{_time():.6f},"t":{_mono() - self._t0:.6f},"prev":"{self._prev}",'
                f'"kind":"stmt","text":{encode_str(text)},"params":{p},'
                f'"allowed":{"true" if allowed else "false"},"rule":{"null" if rule is None else encode_str(rule)},'
                f'"proto":{encode_str(protocol)}}}'
            ).encode("ascii")
        except TypeError as exc:  # text, rule or protocol not a str
            raise RecordingError(f"session {self.sid}: cannot encode statement: {exc}") from None
        self._append(body)
        self._stmts += 1
        if not allowed:
            self._refused += 1
        return seq

    def result(
        self, h: int, duration_ms: float, rows: int | None, error: str | None, masked: int = 0
    ) -> None:
        """Record how statement ``h`` ended: time taken, rows, error, masked values."""
        if self._closed:
            raise RecordingError(f"session {self.sid}: recording already closed")
        try:
            ms = f"{duration_ms:.3f}" if math.isfinite(duration_ms) else "null"
            body = (
                f'{{"seq":{self._seq},"ts":{_time():.6f},"t":{_mono() - self._t0:.6f},"prev":"{self._prev}",'
                f'"kind":"result","stmt":{int(h)},"ms":{ms},"rows":{"null" if rows is None else int(rows)},'
                f'"error":{"null" if error is None else encode_str(error)},"masked":{int(masked)}}}'
            ).encode("ascii")
        except (TypeError, ValueError) as exc:
            raise RecordingError(f"session {self.sid}: cannot encode result: {exc}") from None
        self._hold(body)

    def event(self, kind: str, **fields: Any) -> None:
        """Record something that happened in the session: an access request or approval
        (give its id, so the ledger's record of the decision can be found), a grant
        expiring, a token chain re-checked, an auth failure..."""
        if self._closed:
            raise RecordingError(f"session {self.sid}: recording already closed")
        clash = (RESERVED | {"event"}) & fields.keys()
        if clash:
            raise ValueError(f"event fields may not be named {sorted(clash)}")
        self._append(self._body("event", {"event": kind, **fields}))

    def _body(self, kind: str, fields: dict[str, Any]) -> bytes:
        try:
            return encode_fields(
                {
                    "seq": self._seq,
                    "ts": round(_time(), 6),
                    "t": round(_mono() - self._t0, 6),
                    "prev": self._prev,
                    "kind": kind,
                    **fields,
                }
            )
        except (TypeError, ValueError) as exc:
            raise RecordingError(f"session {self.sid}: cannot encode record: {exc}") from None

    # -- lifecycle ----------------------------------------------------------------

    def checkpoint(self) -> bool:
        """Write held records and fdatasync the file, if written since the last time.
        False if that failed: the journal is then the only durable copy."""
        with self._wlock:
            if not self._unsynced:
                return True
            # Cleared together with the writes it stands for: an append that comes
            # after this sets it again, for the next checkpoint.
            self._unsynced = False
            self._recorder._unsynced.discard(self)
        return self.fsync()

    def durability_lost(self, exc: OSError) -> None:
        """Fail the session: records cannot be made durable any more (the journal failed,
        or a checkpoint's fsync did). Its sealed results go to the file first: the
        ledger's count includes them."""
        self.write_held()
        with self._wlock:
            self._error = self._error or exc

    def fsync(self) -> bool:
        """Write held records and make the file durable; False if that failed."""
        with self._sync_lock:
            if self._fd < 0:
                return True
            before = self._error
            self.write_held()
            if self._error is not before:
                return False
            try:
                # The file's name is made durable by the directory's fsync at open;
                # fdatasync still writes the size that appends change.
                os.fdatasync(self._fd)
            except OSError as exc:
                self._error = exc
                log.error("fsync of session %s failed: %s", self.sid, _why(exc))
                return False
            return True

    def check_linked(self) -> None:
        """Fail the session if its file was deleted: writes would still succeed, into
        a file nobody can read back (the background thread calls this)."""
        with self._sync_lock:
            if self._fd < 0 or self._error is not None:
                return
            try:
                gone = os.fstat(self._fd).st_nlink == 0
            except OSError as exc:
                self._error = exc
                return
            if gone:
                self._error = OSError(errno.ENOENT, "the recording file was deleted")
                log.error("recording of session %s was deleted while open", self.sid)

    @property
    def statements(self) -> int:
        return self._stmts

    @property
    def refused(self) -> int:
        return self._refused

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self, reason: str = "closed") -> None:
        """Write the end record, fsync, and seal the session in the ledger.

        The file is closed whatever happens; RecordingError if the end could not be
        made durable (the gateway logs it: the statements are already recorded).
        """
        if self._closed:
            return
        self._closed = True
        problem: BaseException | None = None
        try:
            self._append(
                self._body(
                    "end",
                    {
                        "reason": reason,
                        "statements": self._stmts,
                        "refused": self._refused,
                        "duration": round(_mono() - self._t0, 6),
                    },
                )
            )
        except RecordingError as exc:
            problem = exc
        with self._sync_lock:
            try:
                os.fsync(self._fd)
            except OSError as exc:
                problem = problem or exc
            os.close(self._fd)
            self._fd = -1
        try:
            self._recorder._seal(self, problem)
        except RecordingError as exc:
            problem = problem or exc
        if problem is not None:
            raise RecordingError(f"session {self.sid}: end not recorded durably: {problem}")


def _walk(data: bytes) -> tuple[ChainChecker, int, bytes, str | None]:
    """Check a session file's whole lines in order. Returns the checker as it stands
    after the last good line, the bytes those lines cover, what follows the last
    newline (empty, or what a crash cut short), and the first problem, if any."""
    checker, good = ChainChecker(), 0
    *whole, torn = data.split(b"\n")
    for raw in whole:
        try:
            checker.check(raw)
        except ChainError as exc:
            return checker, good, torn, f"seq {checker.seq}: {exc}"
        good += len(raw) + 1
    return checker, good, torn, None


def _check_private(dfd: int, path: Path) -> None:
    """Refuse a recordings directory others may write to (they could swap or plant
    files under the recorder, which runs as root); only warn when others may read it."""
    mode = os.fstat(dfd).st_mode
    if mode & 0o022:
        raise RecordingError(
            f"recordings directory {path} is writable by other users (mode {mode & 0o7777:04o}); "
            "make it mode 0700"
        )
    if mode & 0o077:
        log.warning("recordings directory %s is open to other users; make it mode 0700", path)


class Recorder:
    """Opens session recordings in one directory and keeps them durable."""

    def __init__(
        self,
        dir: Path | str,
        fsync: FsyncPolicy = "batch",
        interval_ms: int = 5,
        key: bytes | None = None,
    ) -> None:
        if fsync not in POLICIES:
            raise ValueError(f"fsync policy must be one of {', '.join(POLICIES)}, not {fsync!r}")
        if interval_ms <= 0:
            raise ValueError("interval_ms must be positive")
        self.dir = Path(dir)
        self.fsync = fsync
        self.interval = interval_ms / 1000
        self.id = new_id()
        self._key = key
        self._open: dict[str, SessionRecording] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        # Set when something becomes dirty: the background thread sleeps on it.
        self._wake = threading.Event()
        self._kick = self._wake.set
        self._thread: threading.Thread | None = None
        self._closed = False
        self._sessions_dirty = False
        self._failed: OSError | None = None
        self._journal: Journal | None = None
        # Sessions written since the last checkpoint (each adds itself, under its lock).
        self._unsynced: set[SessionRecording] = set()
        # Set when a checkpoint could not make a session file durable: the journal is
        # then the only copy, and is never emptied again by this recorder.
        self._pinned = False
        fds: list[int] = []
        try:
            os.makedirs(self.dir, mode=0o700, exist_ok=True)
            self._dfd = layout.open_dir(self.dir)
            fds.append(self._dfd)
            _check_private(self._dfd, self.dir)
            self._sdfd = layout.open_dir(layout.SESSIONS, dir_fd=self._dfd, create=True)
            fds.append(self._sdfd)
            self._rdfd = layout.open_dir(layout.RECORDERS, dir_fd=self._dfd, create=True)
            fds.append(self._rdfd)
            for fd, sub in ((self._sdfd, layout.SESSIONS), (self._rdfd, layout.RECORDERS)):
                _check_private(fd, self.dir / sub)
            self._lockfd = os.open(layout.lock_file(self.id), _LOCK_FLAGS, 0o600, dir_fd=self._rdfd)
            fds.append(self._lockfd)
            fcntl.flock(self._lockfd, fcntl.LOCK_EX)
            self._ledger = Ledger(self._dfd, key)
        except (OSError, RecordingError) as exc:
            for fd in fds:
                os.close(fd)
            if isinstance(exc, RecordingError):
                raise
            raise RecordingError(f"cannot open recordings directory {self.dir}: {_why(exc)}") from exc
        try:
            if fsync == "batch":
                try:
                    self._journal = Journal(self._rdfd, self.id)
                except OSError as exc:
                    raise RecordingError(f"cannot create the journal in {self.dir}: {_why(exc)}") from exc
            with self._ledger.locked(repair=True) as ledger:
                ledger.append(
                    "recorder", {"recorder": self.id, "pid": os.getpid(), "host": socket.gethostname()}
                )
                self._recover(ledger)
            self._sync_dirs()
        except BaseException:
            self._release()
            raise
        # In every policy the thread watches for deleted files; in batch it also fsyncs.
        self._thread = threading.Thread(target=self._sync_loop, name="hoopctl-recorder-sync", daemon=True)
        self._thread.start()

    # -- sessions -----------------------------------------------------------------

    def open_session(
        self,
        identity: str,
        chain: tuple[str, ...] | list[Any],
        client_addr: str,
        resource: str,
        role: str,
        **extra: Any,
    ) -> SessionRecording:
        """Create the session's file, write its start record, and register it in the ledger.

        ``chain`` is the token chain from the root credential to this caller
        (job -> helper); ``extra`` adds fields to the start record.
        """
        if self._closed:
            raise RecordingError("recorder is closed")
        if self._failed is not None:
            raise RecordingError(f"recordings directory {self.dir} failed to sync: {_why(self._failed)}")
        clash = (RESERVED | _START_FIELDS) & extra.keys()
        if clash:
            raise ValueError(f"extra start fields may not be named {sorted(clash)}")
        t0 = _mono()
        for _ in range(5):
            sid = new_id()
            try:
                fd = os.open(layout.session_file(sid), _FILE_FLAGS, 0o600, dir_fd=self._sdfd)
                break
            except FileExistsError:
                continue
            except OSError as exc:
                raise RecordingError(f"cannot create a session recording in {self.dir}: {_why(exc)}") from exc
        else:  # pragma: no cover - 5 collisions of 25 random bits in one millisecond
            raise RecordingError("cannot allocate a session id")
        rec = SessionRecording(self, sid, fd, t0)
        # Before the ledger's entry: no group commit may make that durable without the
        # file's name.
        self._sessions_dirty = True
        start = {
            "sid": sid,
            "identity": identity,
            "chain": list(chain),
            "client": client_addr,
            "resource": resource,
            "role": role,
            "recorder": self.id,
            "fsync": self.fsync,
            **extra,
        }
        try:
            # File first, then ledger: a crash in between leaves a one-record orphan,
            # which verify reports as a warning; never a ledger entry without a file.
            rec._first = rec._append(rec._body("start", start))
            if self._always():
                os.fsync(self._sdfd)
            with self._ledger.locked() as ledger:
                ledger.append(
                    "open",
                    {
                        "sid": sid,
                        "recorder": self.id,
                        "first": rec._first,
                        "identity": identity,
                        "resource": resource,
                        "role": role,
                    },
                )
            if self._always():
                self._ledger.fsync()
        except (OSError, RecordingError) as exc:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(layout.session_file(sid), dir_fd=self._sdfd)
            if isinstance(exc, RecordingError):
                raise
            raise RecordingError(f"cannot record session start: {_why(exc)}") from exc
        with self._lock:
            self._open[sid] = rec
        self._kick()
        return rec

    def _always(self) -> bool:
        return self.fsync == "always"

    @property
    def failed(self) -> bool:
        """The directory or the journal failed to sync: new sessions are refused."""
        return self._failed is not None

    def _seal(self, rec: SessionRecording, problem: BaseException | None) -> None:
        with self._lock:
            self._open.pop(rec.sid, None)
        fields: dict[str, Any] = {
            "sid": rec.sid,
            "records": rec._seq,
            "last": rec._prev,
            "statements": rec._stmts,
            "refused": rec._refused,
        }
        if problem is not None:
            fields["problem"] = str(problem)
        with self._ledger.locked() as ledger:
            ledger.append("close", fields)
        try:
            os.fsync(self._sdfd)
            self._ledger.fsync()
        except OSError as exc:
            raise RecordingError(f"cannot fsync the recordings ledger: {_why(exc)}") from exc

    def event(self, kind: str, **fields: Any) -> str:
        """Record an event outside any session (an access request, an approval, a
        revocation...) in the ledger. Returns the record's hash, which a session
        event can cite to link the two."""
        clash = (RESERVED | {"event"}) & fields.keys()
        if clash:
            raise ValueError(f"event fields may not be named {sorted(clash)}")
        try:
            with self._ledger.locked() as ledger:
                digest = ledger.append("event", {"event": kind, **fields})
            if self._always():
                self._ledger.fsync()
        except (TypeError, ValueError) as exc:
            raise RecordingError(f"cannot encode event: {exc}") from None
        except OSError as exc:
            raise RecordingError(f"cannot record event: {_why(exc)}") from exc
        return digest

    # -- durability ---------------------------------------------------------------

    def _sync_dirs(self) -> None:
        os.fsync(self._sdfd)
        os.fsync(self._dfd)
        self._ledger.fsync()

    def _sync_loop(self) -> None:
        # With os nothing waits on this thread: write held results less often.
        interval = self.interval if self.fsync != "os" else max(self.interval, 0.05)
        wake, stop = self._wake, self._stop
        checkpoint_at: float | None = None
        check_at: float | None = None
        while True:
            # Asleep until a record is written (no wakeups while idle) or a checkpoint or
            # check is due, then wait out the group-commit window: one pass covers every
            # session.
            due = [t for t in (checkpoint_at, check_at) if t is not None]
            wake.wait(max(0.0, min(due) - _mono()) if due else None)
            if stop.wait(interval):
                return
            wake.clear()
            with self._lock:
                sessions = list(self._open.values())
            if self.fsync == "os":
                wrote = False
                for rec in sessions:
                    if rec._dirty:
                        rec._dirty, wrote = False, True
                        rec.write_held()
            else:
                wrote = self._group_commit(sessions)
            now = _mono()
            if wrote and checkpoint_at is None and self._journal is not None:
                checkpoint_at = now + _CHECKPOINT_S
            if checkpoint_at is not None and now >= checkpoint_at:
                checkpoint_at = None
                self._checkpoint(sessions)
            # Each system call here hands the GIL back and forth with the event loop:
            # look for deleted files now and then, while sessions write, not every pass.
            if wrote and check_at is None:
                check_at = now + _CHECK_EVERY_S
            if check_at is not None and now >= check_at:
                check_at = None
                for rec in sessions:
                    rec.check_linked()

    def _group_commit(self, sessions: list[SessionRecording]) -> bool:
        """One window's pass: the ledger, then every session's records, durable.
        Returns whether the journal got anything (a checkpoint will be due).

        The ledger first, and only the sessions registered before it: then a power
        cut never leaves a durable session whose ledger entry was lost (which verify
        would have to call an inserted session).
        """
        try:
            if self._sessions_dirty:
                self._sessions_dirty = False
                os.fsync(self._sdfd)
            if self._ledger.dirty:
                self._ledger.fsync()
        except OSError as exc:
            # New sessions are refused from now on; open ones carry their own fsyncs.
            self._failed = exc
            log.error("fsync of the recordings directory failed: %s", _why(exc))
        if self._journal is None:  # always: every write was fsynced already
            return False
        wrote = False
        for rec in sessions:
            # Cleared before the queue is taken: a record queued after that sets it again.
            if rec._dirty:
                rec._dirty, wrote = False, True
        if wrote:
            try:
                self._journal.commit()
            except OSError as exc:
                self._durability_lost(exc, sessions, f"the recordings journal failed: {_why(exc)}")
        return wrote

    def _durability_lost(self, exc: OSError, sessions: list[SessionRecording], why: str) -> None:
        # Nothing can be made durable any more: new sessions are refused, and each open
        # one refuses its next statement.
        self._failed = exc
        for rec in sessions:
            rec.durability_lost(exc)
        log.error("%s", why)

    def _checkpoint(self, sessions: list[SessionRecording]) -> None:
        """fsync the session files written since the last checkpoint, after switching
        the journal: the file it switches to held only what the last checkpoint made
        durable, and the one it leaves is emptied only at the next checkpoint."""
        if self._journal is None or self._pinned:
            return
        try:
            self._journal.switch()
        except OSError as exc:
            self._durability_lost(exc, sessions, f"the recordings journal failed: {_why(exc)}")
            return
        failed: OSError | None = None
        for rec in list(self._unsynced):
            if not rec.checkpoint():
                failed = failed or rec._error or OSError(errno.EIO, "a session file failed")
        if failed is not None:
            # The journal now holds the only durable copy: it is never emptied again. Every
            # session stops, as PostgreSQL stops after a failed fsync: sessions that went on
            # would grow a journal that can no longer be emptied, without bound.
            self._pinned = True
            first = self._failed  # a failure reported earlier stays the recorder's
            why = "a session file could not be made durable: every session stops; the journal is kept"
            self._durability_lost(failed, sessions, why)
            self._failed = first or failed

    # -- recovery -----------------------------------------------------------------

    def _recover(self, ledger: Ledger) -> None:
        """Seal sessions left open by recorders that are gone (crashed or killed), after
        copying back what their journals hold and the files lack; remove the lock files
        and journals those recorders left (kept if a restore failed: the next start
        tries again)."""
        owner: dict[str, str] = {}  # sessions still open -> their recorder
        opened: dict[str, str] = {}  # every session -> the recorder that opened it
        registered: set[str] = set()
        for rec in ledger.read_all():
            kind, sid, rid = rec.get("kind"), rec.get("sid"), rec.get("recorder")
            # Only self-hashed, not chain-checked here: a sid or recorder id that is not
            # an id could name a path outside the directory (as root). Ignore it.
            if kind == "open" and is_id(sid) and is_id(rid):
                owner[sid] = opened[sid] = rid
            elif kind in ("close", "recover") and isinstance(sid, str):
                owner.pop(sid, None)
            elif kind == "recorder" and is_id(rid):
                registered.add(rid)
        alive = {rid: layout.recorder_alive(self._rdfd, rid) for rid in set(owner.values())}
        # A recorder locks its file before it registers in the ledger (we hold the
        # ledger's lock): a registered one whose lock is free is dead, never starting.
        for name in os.listdir(self._rdfd):
            rid = name.removesuffix(".lock")
            if rid in registered and rid != self.id and rid not in alive:
                alive[rid] = layout.recorder_alive(self._rdfd, rid)
        dead = sorted(rid for rid, live in alive.items() if not live)
        restored: dict[str, dict[str, Any]] = {}
        kept: set[str] = set()
        for rid in dead:
            try:
                journal = read_journal(self._rdfd, rid)
            except OSError as exc:
                log.error("cannot read the journal of recorder %s: %s", rid, _why(exc))
                kept.add(rid)
                continue
            for sid, lines in journal.items():
                if opened.get(sid) == rid:  # never a session some other recorder wrote
                    restored[sid] = self._restore(sid, lines)
                    if "restore_problem" in restored[sid]:
                        kept.add(rid)
        for sid, rid in owner.items():
            if rid in dead and "restore_problem" not in restored.get(sid, {}):
                fields = {
                    "sid": sid,
                    "recorder": rid,
                    "by": self.id,
                    **self._scan(sid),
                    **restored.get(sid, {}),
                }
                ledger.append("recover", fields)
                log.warning("sealed session %s left open by recorder %s", sid, rid)
        for rid in dead:
            if rid not in kept:
                with contextlib.suppress(OSError):
                    remove_journal(self._rdfd, rid)  # what it held is in fsynced files now
                    os.unlink(layout.lock_file(rid), dir_fd=self._rdfd)

    def _restore(self, sid: str, journaled: list[bytes]) -> dict[str, Any]:
        """Append to a dead recorder's session file the journaled records it lacks (a
        power cut lost them from the page cache), replacing a torn last line; then
        fsync it, since only the journal was durable. A file whose chain is damaged
        before its end is left as it is, for verify to report."""
        if not journaled:
            return {}
        by_seq: dict[int, bytes] = {}
        for line in journaled:
            with contextlib.suppress(ChainError):
                seq = parse_line(line.rstrip(b"\n")).record.get("seq")
                if type(seq) is int:
                    by_seq.setdefault(seq, line)
        try:
            fd = layout.open_regular(layout.session_file(sid), os.O_RDWR, dir_fd=self._sdfd)
        except OSError:
            return {}  # gone or not a file: _scan says so
        try:
            checker, good, torn, problem = _walk(os.pread(fd, os.fstat(fd).st_size, 0))
            if problem is not None:
                return {}
            added = []
            while checker.seq in by_seq:
                line = by_seq[checker.seq]
                try:
                    checker.check(line.rstrip(b"\n"))
                except ChainError:
                    break
                added.append(line)
            if added:
                os.ftruncate(fd, good)
                os.lseek(fd, 0, os.SEEK_END)
                write_all(fd, b"".join(added))
            os.fsync(fd)
        except OSError as exc:
            log.error("cannot restore session %s from the journal: %s", sid, _why(exc))
            return {"restore_problem": _why(exc)}
        finally:
            os.close(fd)
        if not added:
            return {}
        log.warning("restored %d records of session %s from the journal", len(added), sid)
        return {"restored": len(added), "cut": len(torn)}

    def _scan(self, sid: str) -> dict[str, Any]:
        """What a dead recorder left of a session: valid records, last hash, torn tail."""
        try:
            fd = layout.open_regular(layout.session_file(sid), os.O_RDONLY, dir_fd=self._sdfd)
        except OSError as exc:  # gone, a symlink, a FIFO...: no recording to read
            return {"records": 0, "last": None, "missing": True, "problem": _why(exc)}
        try:
            with os.fdopen(fd, "rb") as f:
                data = f.read()
        except OSError as exc:
            return {"records": 0, "last": None, "problem": _why(exc)}
        checker, _, torn, problem = _walk(data)
        out: dict[str, Any] = {} if problem is None else {"problem": problem}
        out.update(records=checker.seq, last=checker.prev if checker.seq else None, torn=len(torn))
        return out

    # -- shutdown -----------------------------------------------------------------

    def close(self) -> None:
        """End every open session, fsync everything, stop the batch thread."""
        if self._closed:
            return
        self._closed = True
        with self._lock:
            sessions = list(self._open.values())
        problems = []
        for rec in sessions:
            try:
                rec.close("recorder-closed")
            except RecordingError as exc:
                problems.append(str(exc))
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
        try:
            with self._ledger.locked() as ledger:
                ledger.append("recorder-stop", {"recorder": self.id})
            self._sync_dirs()
        except (OSError, RecordingError) as exc:
            problems.append(str(exc))
        keep = bool(problems) or self._pinned
        if self._journal is not None:
            # Every session is closed and fsynced; after a problem the next recorder to
            # start needs the journal, and finds it by the lock file kept with it.
            self._journal.close(remove=not keep)
            self._journal = None
        self._release(keep_lock=keep)
        if problems:
            raise RecordingError("; ".join(problems))

    def _release(self, keep_lock: bool = False) -> None:
        if self._journal is not None:  # a start that failed: nothing was journaled
            self._journal.close(remove=True)
        if not keep_lock:
            with contextlib.suppress(OSError):
                os.unlink(layout.lock_file(self.id), dir_fd=self._rdfd)
        self._ledger.close()
        for fd in (self._lockfd, self._rdfd, self._sdfd, self._dfd):
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
