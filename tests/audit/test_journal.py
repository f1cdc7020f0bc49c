"""The group-commit journal (fsync batch): one fdatasync per window for every session,
checkpoints that keep it small, and the records a power cut took from a session file
copied back from it by the next recorder."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from hoopctl.audit import recorder as recorder_mod
from hoopctl.audit.journal import Journal, read_journal
from hoopctl.audit.reader import Recordings
from hoopctl.audit.recorder import Recorder, RecordingError
from tests.audit import powercut
from tests.audit.conftest import lines_of

REPO = Path(__file__).resolve().parents[2]

_CRASHING = """
import sys, time
from hoopctl.audit.recorder import Recorder
r = Recorder(sys.argv[1], fsync="batch", interval_ms=2)
rec = r.open_session("victim", ("job:1",), "127.0.0.1:1", "appdb", "write")
for i in range(6):
    h = rec.statement(f"UPDATE accounts SET balance = {i}", None, True, "write", "simple")
    rec.result(h, 0.1, 1, None, 0)
time.sleep(0.2)  # a few windows: the journal is durable, no checkpoint yet
print(rec.sid, r.id, flush=True)
time.sleep(60)
"""


def _crash(d: Path) -> tuple[str, str]:
    child = subprocess.Popen(
        [sys.executable, "-c", _CRASHING, str(d)], stdout=subprocess.PIPE, cwd=REPO, text=True
    )
    try:
        sid, rid = child.stdout.readline().split()
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait(10)
    return sid, rid


def _ledger_records(d: Path) -> list[dict]:
    return [json.loads(line) for line in lines_of(d / "ledger.jsonl")]


def test_records_a_power_cut_took_from_the_session_file_come_back_from_the_journal(tmp_path: Path) -> None:
    d = tmp_path / "r"
    sid, rid = _crash(d)
    path = d / "sessions" / f"{sid}.jsonl"
    whole = path.read_bytes()
    lines = lines_of(path)
    # start, then 6 statements and 5 results: the last result waits for the next
    # record to share its write(2), and meanwhile is only in the journal
    assert len(lines) == 12
    # What a power cut leaves when the page cache never reached the disk: the first
    # three records, and the start of the fourth.
    torn = lines[3][:20]
    path.write_bytes(b"".join(lines[:3]) + torn)
    Recorder(d).close()
    assert path.read_bytes().startswith(whole)  # byte for byte, then the last result
    recover = [r for r in _ledger_records(d) if r["kind"] == "recover"]
    assert recover[0]["sid"] == sid and recover[0]["restored"] == 10 and recover[0]["cut"] == len(torn)
    report = Recordings(d).verify()
    assert report.ok and not report.warnings, (report.problems, report.warnings)
    items = Recordings(d).load(sid)["items"]
    assert [i["text"] for i in items] == [f"UPDATE accounts SET balance = {i}" for i in range(6)]
    assert all(i["result"]["rows"] == 1 for i in items)
    assert not list((d / "recorders").glob(f"{rid}*"))  # journal and lock file gone


def test_a_session_file_damaged_before_its_end_is_left_for_verify(tmp_path: Path) -> None:
    d = tmp_path / "r"
    sid, _ = _crash(d)
    path = d / "sessions" / f"{sid}.jsonl"
    lines = lines_of(path)
    assert b"balance = 0" in lines[1]
    lines[1] = lines[1].replace(b"balance = 0", b"balance = 9")  # an edit, not a crash
    path.write_bytes(b"".join(lines[:5]))
    Recorder(d).close()
    assert path.read_bytes() == b"".join(lines[:5])  # nothing appended after the damage
    assert "hash mismatch" in Recordings(d).verify().first.reason


def test_one_fdatasync_per_window_however_many_sessions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    real = os.fdatasync
    with Recorder(tmp_path / "r", fsync="batch", interval_ms=50) as r:
        sessions = [r.open_session(f"u{i}", (), "c", "db", "read") for i in range(20)]
        time.sleep(0.2)  # the windows for the session starts are over
        monkeypatch.setattr(os, "fdatasync", lambda fd: (calls.append(fd), real(fd)))
        for rec in sessions:
            h = rec.statement("SELECT 1", None, True, "read", "simple")
            rec.result(h, 0.1, 1, None, 0)
        time.sleep(0.3)  # a window or two, well before the checkpoint
        assert 1 <= len(calls) <= 2 and len(set(calls)) == 1, calls
        assert not {rec._fd for rec in sessions} & set(calls)
        for rec in sessions:
            rec.close()
    assert Recordings(tmp_path / "r").verify().ok


def test_checkpoints_fsync_the_session_files_and_keep_the_journal_small(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(recorder_mod, "_CHECKPOINT_S", 0.05)
    synced: list[tuple[int, str]] = []
    real = os.fdatasync
    monkeypatch.setattr(
        os, "fdatasync", lambda fd: (synced.append((fd, threading.current_thread().name)), real(fd))
    )
    d = tmp_path / "r"
    with Recorder(d, fsync="batch", interval_ms=2) as r:
        rec = r.open_session("a", (), "c", "db", "read")
        for i in range(400):
            h = rec.statement(f"SELECT {i}", [str(i)], True, "read", "extended")
            rec.result(h, 0.1, 1, None, 0)
            if i % 40 == 0:
                time.sleep(0.03)
        time.sleep(0.2)
        journal = sum(p.stat().st_size for p in (d / "recorders").glob(f"{r.id}.*.wal"))
        session = (d / "sessions" / f"{rec.sid}.jsonl").stat().st_size
        assert (rec._fd, "hoopctl-recorder-sync") in synced  # the checkpoint, not the close
        assert journal < session / 3, (journal, session)
        rec.close()
    assert not list((d / "recorders").glob("*.wal"))  # a clean stop leaves no journal
    assert Recordings(d).verify().ok


def test_reading_a_journal_skips_a_torn_or_foreign_line(tmp_path: Path) -> None:
    rid, sid = "1m8b051yv643eb", "1m8b051yxm0d5f"
    head = sid.encode() + b" "
    (tmp_path / f"{rid}.0.wal").write_bytes(head + b'{"seq":0}\n' + head + b'{"seq":1}\n' + head + b'{"se')
    (tmp_path / f"{rid}.1.wal").write_bytes(b'../../etc/x {"seq":5}\n' + head + b'{"seq":2}\n')
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        found = read_journal(fd, rid)
    finally:
        os.close(fd)
    assert found == {sid: [b'{"seq":0}\n', b'{"seq":1}\n', b'{"seq":2}\n']}


def test_a_failing_journal_fails_every_session_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:

    def disk_full(self: Journal) -> None:
        raise OSError(28, "No space left on device")

    with Recorder(tmp_path / "r", fsync="batch", interval_ms=2) as r:
        a, b = (r.open_session(n, (), "c", "db", "read") for n in "ab")
        monkeypatch.setattr(Journal, "commit", disk_full)
        a.statement("SELECT 1", None, True, "read", "simple")
        time.sleep(0.1)  # the window's commit fails
        for rec in (a, b):
            with pytest.raises(RecordingError, match="No space"):
                rec.statement("SELECT 2", None, True, "read", "simple")
        with pytest.raises(RecordingError, match="No space"):
            r.open_session("c", (), "c", "db", "read")
        monkeypatch.undo()
        for rec in (a, b):
            with pytest.raises(RecordingError):
                rec.close()


# Power cuts, simulated (tests/audit/powercut.py: only what was fsynced survives), with
# the background thread parked and each pass run by hand, as _sync_loop runs them.

PARKED = 10**7  # interval_ms: the thread never runs a pass by itself


def texts(d: Path, sid: str) -> list[str]:
    return [i["text"] for i in Recordings(d).load(sid)["items"]]


def parked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path, Recorder]:
    """A batch recorder whose passes the test runs, its directory, and where a power cut
    copies what survives."""
    powercut.install(monkeypatch)
    d = tmp_path / "r"
    return d, tmp_path / "cut", Recorder(d, fsync="batch", interval_ms=PARKED)


def park(r: Recorder) -> None:
    """Stop the background thread (the recorder is left as a crash leaves it)."""
    r._stop.set()
    r._wake.set()
    r._thread.join()


def one_pass(r: Recorder, sessions, checkpoint: bool = False) -> None:
    r._group_commit(sessions)
    if checkpoint:
        r._checkpoint(sessions)


def test_a_session_opened_during_a_pass_keeps_its_journaled_records(tmp_path, monkeypatch):
    """b opens after pass 1 took its snapshot and its statement goes into that pass's
    journal commit. Pass 2's checkpoint switches back to (and empties) that journal
    file: b must be fsynced by then, though no snapshot ever held it."""
    d, cut, r = parked(tmp_path, monkeypatch)
    a = r.open_session("a", (), "c", "db", "read")
    snapshot1 = list(r._open.values())  # the pass's snapshot
    b = r.open_session("b", (), "c", "db", "read")  # opened mid-pass
    b.statement("DELETE FROM accounts", None, True, "write", "simple")
    one_pass(r, snapshot1, checkpoint=True)  # journal fdatasynced: b's statement is durable
    a.statement("SELECT 1", None, True, "read", "simple")
    snapshot2 = list(r._open.values())
    real_switch = Journal.switch

    def switch_then_power_cut(self):
        real_switch(self)
        powercut.cut(d, cut)  # power cut right after the switch, before b's fsync

    monkeypatch.setattr(Journal, "switch", switch_then_power_cut)
    one_pass(r, snapshot2, checkpoint=True)
    monkeypatch.undo()
    park(r)
    Recorder(cut).close()
    assert texts(cut, b.sid) == ["DELETE FROM accounts"]


def test_a_failed_checkpoint_fsync_keeps_the_journal_and_stops_every_session(tmp_path, monkeypatch):
    """a's checkpoint fdatasync fails (EIO): the journal is then the only durable
    copy of a's statement, and no later checkpoint may empty it. Every session stops
    (c too), so the journal cannot grow without bound while it is kept."""
    d, cut, r = parked(tmp_path, monkeypatch)
    a = r.open_session("a", (), "c", "db", "read")
    c = r.open_session("c", (), "c", "db", "read")
    one_pass(r, [a, c], checkpoint=True)
    a.statement("DELETE FROM accounts", None, True, "write", "simple")
    one_pass(r, [a, c])  # the window passed: durable in the journal
    real = os.fdatasync

    def eio_for_a(fd):
        if fd == a._fd:
            raise OSError(errno.EIO, "Input/output error")
        real(fd)

    monkeypatch.setattr(os, "fdatasync", eio_for_a)
    r._checkpoint([a, c])  # a's fsync fails (logged, every session failed)
    monkeypatch.setattr(os, "fdatasync", powercut.fdatasync)
    with pytest.raises(RecordingError):
        c.statement("SELECT 1", None, True, "read", "simple")
    with pytest.raises(RecordingError):
        r.open_session("d", (), "c", "db", "read")
    one_pass(r, [a, c], checkpoint=True)  # would switch back, truncating the journal holding a's record
    powercut.cut(d, cut)
    park(r)
    Recorder(cut).close()
    assert texts(cut, a.sid) == ["DELETE FROM accounts"]


def test_a_journal_kept_after_a_failed_close_is_restored_then_removed(tmp_path, monkeypatch):
    """A close that fails keeps the journal and its lock file: the next recorder sees a
    dead one, restores from the journal what the sealed session lacks, and removes it."""
    d, cut, r = parked(tmp_path, monkeypatch)
    a = r.open_session("a", (), "c", "db", "read")
    a.statement("DELETE FROM accounts", None, True, "write", "simple")
    one_pass(r, [a])  # durable in the journal

    def eio_for_a(fd):
        if fd == a._fd:
            raise OSError(errno.EIO, "Input/output error")
        powercut.fsync(fd)

    monkeypatch.setattr(os, "fsync", eio_for_a)
    with pytest.raises(RecordingError):
        r.close()
    monkeypatch.setattr(os, "fsync", powercut.fsync)
    assert list((d / "recorders").glob("*.wal"))  # kept
    powercut.cut(d, cut)
    Recorder(cut).close()
    assert texts(cut, a.sid) == ["DELETE FROM accounts"], "journal kept, but not restored"
    assert not list((cut / "recorders").glob("*.wal")), "journal kept forever"


def test_a_journal_is_kept_when_its_restore_fails(tmp_path, monkeypatch):
    """A restore that fails (ENOSPC writing the session file) keeps the journal, the only
    copy of the records, and leaves the session open for the next start to try again."""
    d, cut, r = parked(tmp_path, monkeypatch)
    a = r.open_session("a", (), "c", "db", "read")
    a.statement("DELETE FROM accounts", None, True, "write", "simple")
    one_pass(r, [a])
    powercut.cut(d, cut)
    park(r)

    real_write_all = recorder_mod.write_all

    def enospc(fd, data):
        if sys._getframe(1).f_code.co_name == "_restore":
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write_all(fd, data)

    monkeypatch.setattr(recorder_mod, "write_all", enospc)
    Recorder(cut).close()
    monkeypatch.undo()
    assert list((cut / "recorders").glob("*.wal")), "the only copy of the records was deleted"
    kinds = [json.loads(x)["kind"] for x in (cut / "ledger.jsonl").read_text().splitlines()]
    assert "recover" not in kinds  # left open, for the next start to try again
    Recorder(cut).close()  # room on the disk again
    assert texts(cut, a.sid) == ["DELETE FROM accounts"]
    assert not list((cut / "recorders").glob("*.wal"))


def test_a_journal_failure_writes_held_results_before_failing_the_session(tmp_path, monkeypatch):
    """A journal failure fails the sessions, but their held (sealed, counted) results go
    to the files first: the ledger's close counts them, and verify must agree."""
    d = tmp_path / "r"
    r = Recorder(d, fsync="batch", interval_ms=PARKED)  # no power cut here
    a = r.open_session("a", (), "c", "db", "read")
    h = a.statement("SELECT 1", None, True, "read", "simple")
    a.result(h, 0.1, 1, None, 0)

    def disk_full(self):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Journal, "commit", disk_full)
    one_pass(r, [a])
    monkeypatch.undo()
    with pytest.raises(RecordingError):
        a.close()
    park(r)
    report = Recordings(d).verify()
    assert report.ok, report.problems


def test_a_pass_between_file_and_ledger_entry_keeps_the_file_name(tmp_path, monkeypatch):
    """A pass that lands between a session's file and its ledger entry fsyncs the
    sessions directory before the ledger: a power cut never leaves the ledger naming a
    session whose file name was lost."""
    d, cut, r = parked(tmp_path, monkeypatch)
    a = r.open_session("a", (), "c", "db", "read")
    one_pass(r, [a])
    a.statement("SELECT 1", None, True, "read", "simple")  # a is dirty: the pass commits
    real_append = recorder_mod.Ledger.append

    def append_then_pass(self, kind, fields, prefix=b""):
        out = real_append(self, kind, fields, prefix)
        if kind == "open":
            one_pass(r, list(r._open.values()))  # the thread's pass lands here
            powercut.cut(d, cut)
        return out

    monkeypatch.setattr(recorder_mod.Ledger, "append", append_then_pass)
    b = r.open_session("b", (), "c", "db", "read")
    monkeypatch.undo()
    park(r)
    Recorder(cut).close()
    assert (cut / "sessions" / f"{b.sid}.jsonl").exists(), (
        "ledger says open, file lost, journal had its start"
    )
    report = Recordings(cut).verify()
    assert report.ok, report.problems


def test_a_statement_sealed_as_the_session_fails_is_refused(tmp_path, monkeypatch):
    """The background thread's write_held fails (cutting the held result off the file)
    after _append sealed its line on top of that result: _append must see the failure
    under the lock and refuse, rather than write a record verify would call tampering."""
    d = tmp_path / "r"
    r = Recorder(d, fsync="batch", interval_ms=PARKED)  # no power cut here
    a = r.open_session("a", (), "c", "db", "read")
    h = a.statement("SELECT 1", None, True, "read", "simple")
    a.result(h, 0.1, 1, None, 0)  # held
    real_seal, real_write_all = recorder_mod.seal, recorder_mod.write_all

    def enospc(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    def seal_then_thread_runs(body, *k):
        out = real_seal(body, *k)
        monkeypatch.setattr(recorder_mod, "write_all", enospc)
        a.checkpoint()  # the background thread: write_held fails, _fail truncates
        monkeypatch.setattr(recorder_mod, "write_all", real_write_all)
        return out

    monkeypatch.setattr(recorder_mod, "seal", seal_then_thread_runs)
    try:
        a.statement("DROP TABLE accounts", None, True, "write", "simple")
        forwarded = True
    except RecordingError:
        forwarded = False
    monkeypatch.undo()
    with pytest.raises(RecordingError):
        a.close()
    park(r)
    report = Recordings(d).verify()
    assert report.ok, (forwarded, report.problems)
    assert not forwarded, "statement() succeeded although the session had just failed"


def test_verify_warns_of_a_journal_waiting_for_recovery(tmp_path: Path) -> None:
    d = tmp_path / "r"
    with Recorder(d) as live:  # a live recorder's own journal is no concern
        assert list((d / "recorders").glob(f"{live.id}.*.wal"))
        assert not [w for w in Recordings(d).verify().warnings if "journal" in w.reason]
    _, rid = _crash(d)
    report = Recordings(d).verify()
    assert report.ok
    assert [w.file for w in report.warnings if "journal" in w.reason] == [f"recorders/{rid}.0.wal"]
    Recorder(d).close()
    assert not [w for w in Recordings(d).verify().warnings if "journal" in w.reason]
