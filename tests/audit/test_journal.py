"""The group-commit journal (fsync batch): one fdatasync per window for every session,
checkpoints that keep it small, and the records a power cut took from a session file
copied back from it by the next recorder."""

from __future__ import annotations

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
from hoopctl.audit.journal import read_journal
from hoopctl.audit.reader import Recordings
from hoopctl.audit.recorder import Recorder
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
    from hoopctl.audit.journal import Journal
    from hoopctl.audit.recorder import RecordingError

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
