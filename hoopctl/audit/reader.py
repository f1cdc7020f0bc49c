"""Reading recordings: list, load, verify every chain against the ledger, replay.

What verify can prove, and what it cannot:
- any edit, insertion, deletion or reordering of records inside a file breaks
  that file's chain at the first place touched;
- a session file deleted, or truncated after it was sealed, no longer matches the
  ledger's record of its first and last hash and its record count;
- a session file added by hand is not in the ledger.
- It cannot see a rewrite of every file AND the ledger with fresh hashes, unless
  the ledger was written with a key (HMAC) that the rewriter does not hold; nor the
  loss of the newest ledger records together with their session files; nor a
  truncation of a session still open. Copy the ledger's head (printed by verify)
  somewhere else to anchor it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hoopctl.audit import layout
from hoopctl.audit.chain import ChainChecker, ChainError, is_torn_marker, parse_line
from hoopctl.audit.ids import is_id


class RecordingsError(Exception):
    """The recordings directory cannot be read, or an id does not name one session."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong: the file (relative to the directory), line, seq and what."""

    file: str
    line: int | None
    seq: int | None
    reason: str

    def describe(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
        if self.seq is not None:
            where += f" (seq {self.seq})"
        return f"{where}: {self.reason}"


@dataclass(frozen=True)
class ChainRead:
    """A file's records, checked in order up to the first bad one."""

    records: list[dict[str, Any]]
    hashes: list[str]
    problem: Problem | None
    tail: bytes  # bytes after the last newline (a record cut short, or nothing)
    warnings: list[Problem] = field(default_factory=list)


@dataclass
class LedgerView:
    """The ledger's valid prefix, indexed by session id."""

    records: list[dict[str, Any]]
    problem: Problem | None
    opens: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)
    seals: dict[str, dict[str, Any]] = field(default_factory=dict)
    head: str | None = None
    unchecked_macs: bool = False
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)


@dataclass(frozen=True)
class VerifyReport:
    """What verify found: problems break the recordings, warnings do not."""

    problems: list[Problem]
    warnings: list[Problem]
    sessions: int
    ledger_records: int
    ledger_head: str | None
    macs_checked: bool

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first(self) -> Problem | None:
        return self.problems[0] if self.problems else None


@dataclass(frozen=True)
class Summary:
    """One line of `sessions list`."""

    sid: str
    identity: str | None
    chain: list[Any]
    resource: str | None
    role: str | None
    client: str | None
    start: float | None
    end: float | None
    statements: int
    refused: int
    status: str  # closed | open | recovered | damaged


_TORN = b'"kind":"torn"'


def _torn_run_end(lines: list[bytes], start: int, checker: ChainChecker) -> int | None:
    """Where the ``torn`` marker is that covers the damaged lines from ``start`` on.

    A recorder restarting after a crash closes what the crash left (part of a
    record, possibly more than one line) and marks it with a ``torn`` record that
    continues the chain right after it and counts its exact bytes. Returns the
    marker's index, or None when the damage is not so marked."""
    covered = len(lines[start])
    for j in range(start + 1, len(lines)):
        raw = lines[j]
        if _TORN in raw:
            try:
                rec = parse_line(raw).record
            except ChainError:
                rec = {}
            if is_torn_marker(rec, covered, checker.prev, checker.seq):
                return j
        covered += 1 + len(raw)
    return None


def read_chain(data: bytes, name: str, key: bytes | None = None, allow_torn: bool = False) -> ChainRead:
    """Check ``data`` line by line; stop at the first bad record.

    ``allow_torn`` (the ledger): damaged lines followed by a valid ``torn`` marker
    for exactly their bytes are a warning, not a break.
    """
    checker = ChainChecker(key)
    lines = data.split(b"\n")
    tail = lines.pop()
    records: list[dict[str, Any]] = []
    hashes: list[str] = []
    warnings: list[Problem] = []
    problem = None
    i = 0
    while i < len(lines):
        try:
            parsed = checker.check(lines[i])
        except ChainError as exc:
            end = _torn_run_end(lines, i, checker) if allow_torn else None
            if end is None:
                problem = Problem(name, i + 1, checker.seq, str(exc))
                break
            torn = len(b"\n".join(lines[i:end]))
            warnings.append(Problem(name, i + 1, None, f"{torn} bytes of a record torn by a crash"))
            i = end  # the marker is checked as the next record
            continue
        records.append(parsed.record)
        hashes.append(parsed.hash)
        i += 1
    return ChainRead(records, hashes, problem, tail, warnings)


def read_key_file(path: str | Path) -> bytes:
    """The ledger's HMAC key: the file's bytes without trailing whitespace, 16 or more."""
    try:
        key = Path(path).read_bytes().rstrip()
    except OSError as exc:
        raise RecordingsError(f"cannot read key file {path}: {exc.strerror}") from None
    if len(key) < 16:
        raise RecordingsError(f"key file {path} holds fewer than 16 bytes")
    return key


class Recordings:
    """A recordings directory, read-only. Opens nothing through a symlink."""

    def __init__(self, dir: Path | str, key: bytes | None = None) -> None:
        self.dir = Path(dir)
        self.key = key

    @contextlib.contextmanager
    def _dirs(self) -> Iterator[tuple[int, int | None]]:
        try:
            dfd = layout.open_dir(self.dir)
        except FileNotFoundError:
            raise RecordingsError(f"no recordings directory at {self.dir}") from None
        except OSError as exc:
            raise RecordingsError(f"cannot open recordings directory {self.dir}: {exc.strerror}") from None
        try:
            try:
                sdfd: int | None = layout.open_dir(layout.SESSIONS, dir_fd=dfd)
            except FileNotFoundError:
                sdfd = None
            except OSError as exc:
                raise RecordingsError(f"cannot open {self.dir / layout.SESSIONS}: {exc.strerror}") from None
            try:
                yield dfd, sdfd
            finally:
                if sdfd is not None:
                    os.close(sdfd)
        finally:
            os.close(dfd)

    @staticmethod
    def _read(name: str, dir_fd: int, shared_lock: bool = False) -> bytes | None:
        """The file's bytes, or None if it does not exist; OSError for a symlink, a
        FIFO (never waited on), anything that is not a regular file.

        ``shared_lock``: read under flock(LOCK_SH), as the ledger must be: recorders
        append to it under LOCK_EX, so the read never sees half a record."""
        try:
            fd = layout.open_regular(name, os.O_RDONLY, dir_fd=dir_fd)
        except FileNotFoundError:
            return None
        with os.fdopen(fd, "rb") as f:
            if shared_lock:
                fcntl.flock(fd, fcntl.LOCK_SH)
            return f.read()

    # -- ids ----------------------------------------------------------------------

    def session_ids(self) -> list[str]:
        with self._dirs() as (_dfd, sdfd):
            return self._ids(sdfd)

    @staticmethod
    def _ids(sdfd: int | None) -> list[str]:
        if sdfd is None:
            return []
        names = os.listdir(sdfd)
        return sorted(n[: -len(layout.SUFFIX)] for n in names if n.endswith(layout.SUFFIX))

    def resolve(self, prefix: str) -> str:
        """The one session id starting with ``prefix`` (files and ledger both count)."""
        prefix = prefix.strip().lower()
        if not prefix:
            raise RecordingsError("empty session id")
        with self._dirs() as (dfd, sdfd):
            known = set(self._ids(sdfd)) | set(self._ledger(dfd).opens)
        matches = sorted(s for s in known if s.startswith(prefix))
        if not matches:
            raise RecordingsError(f"no session {prefix!r} in {self.dir}")
        if len(matches) > 1:
            shown = ", ".join(matches[:5]) + (", ..." if len(matches) > 5 else "")
            raise RecordingsError(f"session id {prefix!r} is ambiguous: {shown}")
        return matches[0]

    # -- ledger -------------------------------------------------------------------

    def _ledger(self, dfd: int) -> LedgerView:
        try:
            data = self._read(layout.LEDGER, dfd, shared_lock=True)
        except OSError as exc:
            raise RecordingsError(f"cannot read {self.dir / layout.LEDGER}: {exc.strerror}") from None
        if data is None:
            return LedgerView([], None)
        chain = read_chain(data, layout.LEDGER, self.key, allow_torn=True)
        problem = chain.problem
        if problem is None and chain.tail:
            problem = Problem(layout.LEDGER, len(chain.records) + 1, len(chain.records), "record cut short")
        view = LedgerView(chain.records, problem, head=chain.hashes[-1] if chain.hashes else None)
        view.warnings = chain.warnings
        view.unchecked_macs = self.key is None
        for number, rec in enumerate(chain.records, 1):
            kind, sid = rec.get("kind"), rec.get("sid")
            if kind in ("open", "close", "recover") and not is_id(sid):
                # Never used as a file name: it could lead outside the directory.
                view.problems.append(
                    Problem(layout.LEDGER, number, rec["seq"], f"session id {sid!r} is not an id")
                )
                continue
            if kind == "open":
                if sid in view.opens:
                    view.problems.append(
                        Problem(layout.LEDGER, number, rec["seq"], f"session {sid} opened twice")
                    )
                view.opens[sid] = (number, rec)
            elif kind in ("close", "recover"):
                if sid not in view.opens:
                    view.problems.append(
                        Problem(layout.LEDGER, number, rec["seq"], f"session {sid} sealed but never opened")
                    )
                elif sid in view.seals:
                    view.problems.append(
                        Problem(layout.LEDGER, number, rec["seq"], f"session {sid} sealed twice")
                    )
                else:
                    view.seals[sid] = {**rec, "_line": number}
        return view

    # -- sessions -----------------------------------------------------------------

    def _session(self, sid: str, sdfd: int | None) -> ChainRead | None:
        if sdfd is None or "/" in sid or "\0" in sid:
            return None
        name = f"{layout.SESSIONS}/{layout.session_file(sid)}"
        try:
            data = self._read(layout.session_file(sid), sdfd)
        except OSError as exc:  # a symlink (ELOOP), a directory, no permission...
            return ChainRead([], [], Problem(name, None, None, f"cannot read: {exc.strerror}"), b"")
        return None if data is None else read_chain(data, name)

    def read_session(self, sid: str) -> ChainRead:
        with self._dirs() as (_dfd, sdfd):
            chain = self._session(sid, sdfd)
        if chain is None:
            raise RecordingsError(f"session file for {sid} is missing from {self.dir / layout.SESSIONS}")
        return chain

    # -- verify -------------------------------------------------------------------

    def verify(self, sid: str | None = None) -> VerifyReport:
        """Check the ledger and every session (or one) against it."""
        problems: list[Problem] = []
        warnings: list[Problem] = []
        found: dict[str, tuple[list[Problem], list[Problem]]] = {}
        with self._dirs() as (dfd, sdfd):
            ledger = self._ledger(dfd)
            if ledger.problem:
                problems.append(ledger.problem)
            problems.extend(ledger.problems)
            warnings.extend(ledger.warnings)
            if sid is None:
                warnings.extend(_journals_left(dfd))
            files = set(self._ids(sdfd))
            sids = sorted(files | set(ledger.opens)) if sid is None else [sid]
            unregistered: dict[str, ChainRead | None] = {}
            for one in sids:
                found[one] = ([], [])
                if not is_id(one):
                    self._check_session(one, None, dfd, ledger, *found[one])
                elif one in ledger.opens:
                    self._check_session(one, self._session(one, sdfd), dfd, ledger, *found[one])
                else:
                    unregistered[one] = self._session(one, sdfd)
            if unregistered:
                self._verify_unregistered(unregistered, sdfd, dfd, found)
        for one in sids:
            problems.extend(found[one][0])
            warnings.extend(found[one][1])
        return VerifyReport(
            problems=problems,
            warnings=warnings,
            sessions=len(sids),
            ledger_records=len(ledger.records),
            ledger_head=ledger.head,
            macs_checked=self.key is not None,
        )

    def _verify_unregistered(
        self,
        chains: dict[str, ChainRead | None],
        sdfd: int | None,
        dfd: int,
        found: dict[str, tuple[list[Problem], list[Problem]]],
    ) -> None:
        """Sessions whose file was read but that the ledger, read before, did not hold.

        A recorder writes the file first, then the ledger: a session opened while
        verify ran is in the ledger read again now. One that is still not in it was
        not when its file was read (whatever that file held then is judged); one
        that is gets its file read again, after that ledger, as all others were."""
        fresh = self._ledger(dfd)
        for one, chain in chains.items():
            if one in fresh.opens:
                chain = self._session(one, sdfd)
            self._check_session(one, chain, dfd, fresh, *found[one])

    def _check_session(
        self,
        sid: str,
        chain: ChainRead | None,
        dfd: int,
        ledger: LedgerView,
        problems: list[Problem],
        warnings: list[Problem],
    ) -> None:
        """Check one session's file (``chain``, None if missing) against the ledger."""
        name = f"{layout.SESSIONS}/{layout.session_file(sid)}"
        if not is_id(sid):
            problems.append(Problem(name, None, None, "file name is not a session id"))
            return
        opened = ledger.opens.get(sid)
        seal = ledger.seals.get(sid)
        if chain is None:
            where = f" (ledger line {opened[0]})" if opened else ""
            problems.append(Problem(name, None, None, f"session file missing{where}"))
            return
        if chain.problem:
            problems.append(chain.problem)
            return
        recs, n = chain.records, len(chain.records)
        if n == 0:
            if opened is None:  # killed between creating the file and writing the start
                warnings.append(
                    Problem(name, 1, 0, "empty session file, not in the ledger (a crash while opening?)")
                )
            else:
                problems.append(Problem(name, 1, 0, "empty session file: start record missing"))
            return
        head = recs[0]
        if head.get("kind") != "start" or head.get("sid") != sid:
            problems.append(Problem(name, 1, 0, "first record is not this session's start"))
            return
        for i, rec in enumerate(recs[:-1]):
            if rec.get("kind") == "end":
                problems.append(Problem(name, i + 2, i + 1, "record after the session's end record"))
                return
        if opened is None:
            if n == 1 and not chain.tail:
                warnings.append(
                    Problem(name, 1, 0, "start record not in the ledger (a crash while opening?)")
                )
            else:
                problems.append(
                    Problem(name, None, None, "session not in the ledger (file added or ledger cut)")
                )
            return
        if opened[1].get("first") != chain.hashes[0]:
            problems.append(Problem(name, 1, 0, "start record differs from the one the ledger holds"))
            return
        if seal is None:
            rid = str(opened[1].get("recorder"))
            state = "open" if _recorder_alive(dfd, rid) else "unsealed: its recorder is gone"
            warnings.append(Problem(name, None, None, f"session {state}; its tail cannot be checked yet"))
            return
        self._check_seal(name, chain, seal, problems, warnings)

    @staticmethod
    def _check_seal(
        name: str,
        chain: ChainRead,
        seal: dict[str, Any],
        problems: list[Problem],
        warnings: list[Problem],
    ) -> None:
        n = len(chain.records)
        want = seal.get("records")
        where = f"ledger line {seal['_line']}"
        if seal.get("kind") == "recover":
            if seal.get("missing"):
                problems.append(
                    Problem(name, None, None, f"file was missing when its session was recovered ({where})")
                )
                return
            if seal.get("problem"):
                problems.append(
                    Problem(name, None, want, f"chain was broken when recovered: {seal['problem']}")
                )
                return
        if not isinstance(want, int):
            problems.append(
                Problem(layout.LEDGER, seal["_line"], seal.get("seq"), "seal without a record count")
            )
            return
        if n < want:
            problems.append(
                Problem(
                    name, n + 1, n, f"truncated: the ledger sealed {want} records, the file has {n} ({where})"
                )
            )
            return
        if n > want:
            problems.append(Problem(name, want + 1, want, f"record after the session was sealed ({where})"))
            return
        if want and chain.hashes[-1] != seal.get("last"):
            problems.append(Problem(name, n, n - 1, f"last record differs from the ledger's seal ({where})"))
            return
        torn = seal.get("torn", 0) if seal.get("kind") == "recover" else 0
        if chain.tail:
            if len(chain.tail) == torn:
                warnings.append(Problem(name, n + 1, n, f"{torn} bytes of a record cut short by a crash"))
            else:
                problems.append(Problem(name, n + 1, n, "bytes after the last record"))
        elif torn:
            problems.append(Problem(name, n + 1, n, "the crash-torn tail the ledger recorded is gone"))
        if seal.get("problem"):
            warnings.append(Problem(name, None, None, f"recorder reported: {seal['problem']}"))

    # -- list and show ------------------------------------------------------------

    def summaries(self) -> list[Summary]:
        out = []
        with self._dirs() as (dfd, sdfd):
            ledger = self._ledger(dfd)
            for sid in sorted(set(self._ids(sdfd)) | set(ledger.opens)):
                out.append(self._summary(sid, sdfd, ledger))
        return out

    def _summary(self, sid: str, sdfd: int | None, ledger: LedgerView) -> Summary:
        chain = self._session(sid, sdfd)
        recs = chain.records if chain else []
        head = recs[0] if recs and recs[0].get("kind") == "start" else ledger.opens.get(sid, (0, {}))[1]
        stmts = [r for r in recs if r.get("kind") == "stmt"]
        end_rec = recs[-1] if recs and recs[-1].get("kind") == "end" else None
        seal = ledger.seals.get(sid)
        if chain is None or chain.problem:
            status = "damaged"
        elif seal is None:
            status = "open"
        else:
            status = "closed" if seal.get("kind") == "close" else "recovered"
        end = end_rec.get("ts") if end_rec else (seal.get("ts") if seal else None)
        return Summary(
            sid=sid,
            identity=head.get("identity"),
            chain=list(head.get("chain") or []),
            resource=head.get("resource"),
            role=head.get("role"),
            client=head.get("client"),
            start=head.get("ts"),
            end=end,
            statements=len(stmts),
            refused=sum(1 for r in stmts if not r.get("allowed")),
            status=status,
        )

    def load(self, sid: str) -> dict[str, Any]:
        """A session as one document: start, statements with their results, events, end."""
        chain = self.read_session(sid)
        return assemble(chain.records)


def _recorder_alive(dfd: int, rid: str) -> bool:
    if not is_id(rid):
        return False
    try:
        rfd = layout.open_dir(layout.RECORDERS, dir_fd=dfd)
    except OSError:
        return False
    try:
        return layout.recorder_alive(rfd, rid)
    finally:
        os.close(rfd)


def _clean(rec: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in rec.items() if k not in ("prev", "kind")}


def assemble(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Group a session's records: each statement with its result, in order."""
    doc: dict[str, Any] = {"session": None, "items": [], "end": None}
    by_seq: dict[int, dict[str, Any]] = {}
    for rec in records:
        kind = rec.get("kind")
        if kind == "start":
            doc["session"] = _clean(rec)
        elif kind == "stmt":
            item = {"type": "statement", **_clean(rec), "result": None}
            by_seq[rec["seq"]] = item
            doc["items"].append(item)
        elif kind == "result":
            target = by_seq.get(rec.get("stmt"))
            if target is not None:
                target["result"] = {k: v for k, v in _clean(rec).items() if k != "stmt"}
        elif kind == "event":
            doc["items"].append({"type": "event", **_clean(rec)})
        elif kind == "end":
            doc["end"] = _clean(rec)
    return doc


def replay(
    doc: dict[str, Any],
    speed: float,
    emit: Callable[[dict[str, Any]], None],
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Emit each statement and event of an assembled session at its original offset
    from the session's start, divided by ``speed`` (0: no waiting)."""
    began = clock()
    for item in doc["items"]:
        if speed > 0:
            due = began + float(item.get("t") or 0.0) / speed
            wait = due - clock()
            if wait > 0:
                sleep(wait)
        emit(item)


def format_ts(ts: float | None) -> str:
    """UTC, to the millisecond, ISO 8601 with a Z."""
    if ts is None:
        return "-"
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1000) % 1000:03d}Z"


def _journals_left(dfd: int) -> list[Problem]:
    """Journals of recorders that stopped without cleaning up (a crash, a failed close).
    Not damage: the next recorder to start restores from them what a session file may
    lack after a power cut, then removes them."""
    try:
        rdfd = layout.open_dir(layout.RECORDERS, dir_fd=dfd)
    except OSError:
        return []
    try:
        stopped = {
            rid
            for rid, _, rest in (name.partition(".") for name in os.listdir(rdfd))
            if rest in ("0.wal", "1.wal") and is_id(rid) and not layout.recorder_alive(rdfd, rid)
        }
    finally:
        os.close(rdfd)
    return [
        Problem(
            f"{layout.RECORDERS}/{layout.journal_files(rid)[0]}",
            None,
            None,
            "journal of a stopped recorder: start the gateway (or any recorder) to restore and remove it",
        )
        for rid in sorted(stopped)
    ]
