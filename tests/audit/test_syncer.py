"""The fsync helper process: it syncs, survives SIGTERM, reports failures, and never strands a session."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from hoopctl.audit.reader import Recordings
from hoopctl.audit.recorder import Recorder, RecordingError

SQL = "SELECT 1"


def _open(recorder: Recorder):
    return recorder.open_session("alice", ("job:1",), "127.0.0.1:5", "db", "read")


def _helper_pid(recorder: Recorder) -> int:
    assert recorder._helper is not None, "the recorder runs without its helper"
    return recorder._helper.pid


def _gone(pid: int, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.02)
    return False


def test_helper_records_and_exits_with_the_recorder(tmp_path: Path) -> None:
    recorder = Recorder(tmp_path / "rec", helper=True, interval_ms=2)
    pid = _helper_pid(recorder)
    os.kill(pid, signal.SIGTERM)  # a unit-wide SIGTERM must not cut the last syncs short
    rec = _open(recorder)
    for i in range(50):
        h = rec.statement(f"{SQL} -- {i}", None, True, "read", "simple")
        rec.result(h, 0.1, 1, None)
    time.sleep(0.05)
    assert psutil.Process(pid).is_running() and recorder._helper is not None
    rec.close()
    recorder.close()
    assert _gone(pid), "the helper outlived its recorder"
    recordings = Recordings(tmp_path / "rec")
    report = recordings.verify()
    assert report.ok, report.first
    assert [s.statements for s in recordings.summaries()] == [50]


def test_a_dead_helper_falls_back_to_syncing_in_process(tmp_path: Path) -> None:
    recorder = Recorder(tmp_path / "rec", helper=True, interval_ms=1)
    rec = _open(recorder)
    rec.statement(SQL, None, True, "read", "simple")
    pid = _helper_pid(recorder)
    os.kill(pid, signal.SIGKILL)
    assert _gone(pid)
    for i in range(20):  # no statement is refused for it
        rec.statement(f"{SQL} -- {i}", None, True, "read", "simple")
        time.sleep(0.002)
    assert recorder._helper is None and rec._request is None
    second = _open(recorder)  # new sessions too
    second.statement(SQL, None, True, "read", "simple")
    second.close()
    rec.close()
    recorder.close()
    assert Recordings(tmp_path / "rec").verify().ok


def test_a_failed_sync_stops_that_session_only(tmp_path: Path) -> None:
    recorder = Recorder(tmp_path / "rec", helper=True, interval_ms=1)
    bad, good = _open(recorder), _open(recorder)
    r, w = os.pipe()  # fdatasync of a pipe fails (EINVAL): a disk error as the helper sees it
    try:
        recorder._helper.add(bad.sid, r)
        deadline = time.monotonic() + 5
        with pytest.raises(RecordingError, match="recording failed earlier"):
            while time.monotonic() < deadline:
                bad.statement(SQL, None, True, "read", "simple")
                time.sleep(0.005)
        good.statement(SQL, None, True, "read", "simple")  # the other session goes on
    finally:
        os.close(r)
        os.close(w)
    good.close()
    with pytest.raises(RecordingError):
        bad.close()
    recorder.close()


def test_a_killed_gateway_leaves_no_helper_and_loses_no_record(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        from hoopctl.audit.recorder import Recorder
        recorder = Recorder({str(tmp_path / "rec")!r}, helper=True, interval_ms=50)
        rec = recorder.open_session("alice", ("job:1",), "127.0.0.1:5", "db", "read")
        for i in range(100):
            rec.statement("SELECT %d" % i, None, True, "read", "simple")
        print(recorder._helper.pid, rec.sid, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == -signal.SIGKILL, out.stderr
    pid, sid = out.stdout.split()
    assert _gone(int(pid)), "the helper outlived a killed gateway"
    lines = (tmp_path / "rec" / "sessions" / f"{sid}.jsonl").read_bytes().splitlines()
    assert len(lines) == 101  # the start record and every statement
