"""Crash repair of the ledger, verify on a live directory, and hostile directory contents."""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from hoopctl.audit.chain import encode_fields, parse_line, seal
from hoopctl.audit.ids import new_id
from hoopctl.audit.reader import Recordings
from hoopctl.audit.recorder import Recorder, RecordingError
from tests.audit.conftest import lines_of, write_session

REPO = Path(__file__).resolve().parents[2]


def _next_record(ledger: Path, **fields: object) -> bytes:
    """A ledger line that continues the chain (what anyone who can write it, without
    the key, can append)."""
    last = parse_line(lines_of(ledger)[-1].rstrip(b"\n"))
    body = encode_fields({"seq": last.record["seq"] + 1, "ts": 1.0, "prev": last.hash, **fields})
    return seal(body)[0]


def _run(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a child: a hang is a failure, not a stuck test run."""
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=REPO, timeout=30
    )


# -- crash repair of the ledger ----------------------------------------------------


def test_ledger_record_that_lost_only_its_newline_is_kept(tmp_path: Path) -> None:
    d = tmp_path / "r"
    with Recorder(d) as r:
        sid = write_session(r)
    ledger = d / "ledger.jsonl"
    ledger.write_bytes(ledger.read_bytes()[:-1])  # the last write(2) was cut one byte short
    with Recorder(d) as r:
        write_session(r, "after")
    report = Recordings(d).verify()
    assert report.ok, report.problems
    assert not report.warnings
    assert sid in {s.sid for s in Recordings(d).summaries()}


def test_torn_line_closed_but_never_marked_does_not_stop_recorders(tmp_path: Path) -> None:
    d = tmp_path / "r"
    with Recorder(d) as r:
        write_session(r)
    live = Recorder(d)  # running while a crashed repair leaves a closed, damaged line
    with open(d / "ledger.jsonl", "ab") as f:
        f.write(b'{"seq":5,"ts":1.0,"pr\n')
    with pytest.raises(RecordingError, match="last record is damaged"):
        live.open_session("a", (), "c", "db", "read")  # a running recorder never guesses
    for _ in range(2):
        with Recorder(d) as r:  # a restart marks it, and all carry on
            write_session(r, "after")
    live.close()
    report = Recordings(d).verify()
    assert report.ok, report.problems
    assert [w.reason for w in report.warnings] == ["21 bytes of a record torn by a crash"]


def test_a_crash_anywhere_in_the_repair_is_repaired_by_the_next_recorder(tmp_path: Path) -> None:
    base = tmp_path / "base"
    with Recorder(base) as r:
        write_session(r)
    ledger = base / "ledger.jsonl"
    with open(ledger, "ab") as f:
        f.write(b'{"seq":7,"ts":17')  # a power cut in the middle of a record
    damaged = ledger.read_bytes()
    probe = tmp_path / "probe"
    shutil.copytree(base, probe)
    Recorder(probe).close()
    repair = (probe / "ledger.jsonl").read_bytes()[len(damaged) :]
    repair = repair[: repair.index(b"}\n") + 2]  # the newline and the torn marker
    for cut in range(len(repair) + 1):  # the repairing recorder killed after `cut` bytes
        d = tmp_path / f"cut{cut}"
        shutil.copytree(base, d)
        (d / "ledger.jsonl").write_bytes(damaged + repair[:cut])
        with Recorder(d) as r:
            write_session(r, "after")
        report = Recordings(d).verify()
        assert report.ok, (cut, report.problems)
        assert any("torn by a crash" in w.reason for w in report.warnings), cut
        shutil.rmtree(d)


# -- verify next to a live gateway -------------------------------------------------


def test_session_opened_while_verify_runs_is_not_called_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = tmp_path / "r"
    with Recorder(d) as r:
        write_session(r)
        opened = []
        list_files = Recordings._ids

        def open_one_then_list(sdfd: int | None) -> list[str]:
            if not opened:  # the gateway opens a session after verify has read the ledger
                rec = r.open_session("bob", ("job",), "c", "db", "read")
                rec.statement("SELECT 1", None, True, "read", "simple")
                opened.append(rec)
            return list_files(sdfd)

        monkeypatch.setattr(Recordings, "_ids", staticmethod(open_one_then_list))
        report = Recordings(d).verify()
        assert report.ok, report.problems
        assert [w.reason for w in report.warnings] == ["session open; its tail cannot be checked yet"]
        assert report.sessions == 2
        opened[0].close()


def test_verify_waits_for_a_ledger_append_in_progress(tmp_path: Path) -> None:
    d = tmp_path / "r"
    with Recorder(d) as r:
        write_session(r)
    ledger = d / "ledger.jsonl"
    line = _next_record(ledger, kind="event", event="approval", note="x" * 20000)
    reports = []
    with open(ledger, "ab") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # as a recorder appends
        f.write(line[:5000])
        f.flush()
        reader = threading.Thread(target=lambda: reports.append(Recordings(d).verify()))
        reader.start()
        time.sleep(0.2)
        f.write(line[5000:])
        f.flush()
        fcntl.flock(f, fcntl.LOCK_UN)
    reader.join(10)
    assert reports and reports[0].ok, reports and reports[0].problems


# -- hostile contents ------------------------------------------------------------


def test_ledger_ids_that_are_paths_are_never_used_as_paths(tmp_path: Path) -> None:
    d = tmp_path / "r"
    outside = tmp_path / "precious"
    (tmp_path / "precious.lock").write_text("x")
    (tmp_path / "secret.jsonl").write_text("x")
    with Recorder(d) as r:
        write_session(r)
    ledger = d / "ledger.jsonl"
    with open(ledger, "ab") as f:  # chain-valid: only a key would tell it was not a recorder
        f.write(_next_record(ledger, kind="open", sid="../../secret", recorder=str(outside)))
    with open(ledger, "ab") as f:
        f.write(_next_record(ledger, kind="recorder", recorder=str(outside)))
    with Recorder(d) as r:
        write_session(r, "after")
    assert (tmp_path / "precious.lock").exists()
    assert b'"kind":"recover"' not in ledger.read_bytes()
    recs = Recordings(d)
    report = recs.verify()
    assert [p.reason for p in report.problems] == ["session id '../../secret' is not an id"]
    assert all("secret" not in s.sid for s in recs.summaries())


@pytest.mark.parametrize("mode", [0o770, 0o777, 0o1777, 0o722])
def test_directory_others_can_write_is_refused(tmp_path: Path, mode: int) -> None:
    d = tmp_path / "r"
    Recorder(d).close()
    d.chmod(mode)
    with pytest.raises(RecordingError, match=f"writable by other users \\(mode {mode:04o}\\)"):
        Recorder(d)
    d.chmod(0o700)
    (d / "sessions").chmod(0o777)
    with pytest.raises(RecordingError, match="sessions is writable by other users"):
        Recorder(d)


def test_directory_others_can_only_read_is_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    d = tmp_path / "r"
    d.mkdir(mode=0o755)
    d.chmod(0o755)
    with caplog.at_level(logging.WARNING, logger="hoopctl.audit.recorder"), Recorder(d) as r:
        write_session(r)
    assert any("open to other users" in m for m in caplog.messages)
    assert Recordings(d).verify().ok


_VERIFY_AND_LIST = """
import sys
from hoopctl.audit.reader import Recordings
recs = Recordings(sys.argv[1])
print([p.reason for p in recs.verify().problems])
print([s.status for s in recs.summaries()])
"""


def test_fifo_in_place_of_a_session_is_reported_not_waited_on(tmp_path: Path) -> None:
    d = tmp_path / "r"
    with Recorder(d) as r:
        sid = write_session(r)
    path = d / "sessions" / f"{sid}.jsonl"
    path.unlink()
    os.mkfifo(path)
    out = _run(_VERIFY_AND_LIST, str(d))
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["['cannot read: not a regular file']", "['damaged']"]


def test_fifos_do_not_hang_a_starting_recorder(tmp_path: Path) -> None:
    d = tmp_path / "r"
    crash = (
        "import sys, os, signal; from hoopctl.audit.recorder import Recorder\n"
        "r = Recorder(sys.argv[1]); s = r.open_session('a', ('j',), 'c', 'db', 'read')\n"
        "print(s.sid, r.id, flush=True); os.kill(os.getpid(), signal.SIGKILL)"
    )
    sid, rid = _run(crash, str(d)).stdout.split()
    session, lock = d / "sessions" / f"{sid}.jsonl", d / "recorders" / f"{rid}.lock"
    for path in (session, lock):
        path.unlink()
        os.mkfifo(path)
    out = _run(
        "import sys; from hoopctl.audit.recorder import Recorder; Recorder(sys.argv[1]).close()", str(d)
    )
    assert out.returncode == 0, out.stderr
    seal = parse_line(lines_of(d / "ledger.jsonl")[-2].rstrip(b"\n")).record
    assert seal["kind"] == "recover" and seal["sid"] == sid and seal["problem"] == "not a regular file"


def test_fifo_in_place_of_the_ledger_is_a_clear_error(tmp_path: Path) -> None:
    d = tmp_path / "r"
    d.mkdir(mode=0o700)
    os.mkfifo(d / "ledger.jsonl")
    with pytest.raises(RecordingError, match="not a regular file"):
        Recorder(d)


# -- a recorder killed while opening a session -------------------------------------


@pytest.mark.parametrize("left", [b"", b'{"seq":0,"ts":1700000000.1,"t":0.0,"prev":"00'])
def test_session_file_cut_before_its_start_record_is_a_warning(tmp_path: Path, left: bytes) -> None:
    d = tmp_path / "r"
    with Recorder(d) as r:
        write_session(r)
    (d / "sessions" / f"{new_id()}.jsonl").write_bytes(
        left
    )  # killed between creating the file and writing the start
    Recorder(d).close()
    report = Recordings(d).verify()
    assert report.ok, report.problems
    assert [w.reason for w in report.warnings] == [
        "empty session file, not in the ledger (a crash while opening?)"
    ]
