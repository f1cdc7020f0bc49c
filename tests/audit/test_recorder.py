"""The recorder: durability policies, fail-closed errors, concurrency, crash recovery."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from hoopctl.audit.reader import Recordings
from hoopctl.audit.recorder import Recorder, RecordingError
from tests.audit.conftest import write_session

REPO = Path(__file__).resolve().parents[2]


def _session_fd(rec) -> int:
    return rec._fd


def test_start_statement_result_event_end_are_recorded(tmp_path: Path) -> None:
    with Recorder(tmp_path / "r") as r:
        rec = r.open_session("alice", ("job:ci-1", "helper:h"), "10.1.2.3:5000", "appdb", "read", grant="g-7")
        h = rec.statement("SELECT $1::int", ["5"], True, "read", "extended")
        rec.result(h, 1.5, 1, None, 0)
        rec.event("grant-expired", grant="g-7")
        rec.close()
    doc = Recordings(tmp_path / "r").load(rec.sid)
    assert doc["session"]["chain"] == ["job:ci-1", "helper:h"]
    assert doc["session"]["grant"] == "g-7" and doc["session"]["client"] == "10.1.2.3:5000"
    stmt, event = doc["items"]
    assert stmt["text"] == "SELECT $1::int" and stmt["params"] == ["5"] and stmt["allowed"] is True
    assert stmt["result"]["ms"] == 1.5 and stmt["result"]["rows"] == 1
    assert event["event"] == "grant-expired"
    assert doc["end"]["statements"] == 1 and doc["end"]["refused"] == 0


def test_files_are_private(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        with Recorder(tmp_path / "r") as r:
            sid = write_session(r)
    finally:
        os.umask(old)
    for p in (tmp_path / "r", tmp_path / "r" / "sessions", tmp_path / "r" / "recorders"):
        assert stat.S_IMODE(p.stat().st_mode) == 0o700, p
    for p in (tmp_path / "r" / "ledger.jsonl", tmp_path / "r" / "sessions" / f"{sid}.jsonl"):
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p


def test_reserved_names_are_refused(tmp_path: Path) -> None:
    with Recorder(tmp_path / "r") as r:
        with pytest.raises(ValueError):
            r.open_session("a", (), "c", "db", "read", seq=3)
        rec = r.open_session("a", (), "c", "db", "read")
        with pytest.raises(ValueError):
            rec.event("x", prev="0" * 64)


def test_always_policy_fsyncs_before_statement_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    real = os.fsync

    def counting(fd: int) -> None:
        synced.append(fd)
        real(fd)

    with Recorder(tmp_path / "r", fsync="always") as r:
        rec = r.open_session("a", (), "c", "db", "read")
        monkeypatch.setattr(os, "fsync", counting)
        for i in range(3):
            before = synced.count(_session_fd(rec))
            rec.statement(f"SELECT {i}", None, True, "read", "simple")
            assert synced.count(_session_fd(rec)) == before + 1
        rec.close()


def test_batch_policy_fsyncs_in_the_background(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, str]] = []
    real = os.fsync

    def counting(fd: int) -> None:
        calls.append((fd, threading.current_thread().name))
        real(fd)

    monkeypatch.setattr(os, "fsync", counting)
    monkeypatch.setattr(os, "fdatasync", counting)  # the background pass uses fdatasync
    with Recorder(tmp_path / "r", fsync="batch", interval_ms=5) as r:
        rec = r.open_session("a", (), "c", "db", "read")
        fd = _session_fd(rec)
        main = threading.current_thread().name
        rec.statement("SELECT 1", None, True, "read", "simple")
        assert (fd, main) not in calls  # statement() itself never waits for the disk
        deadline = time.monotonic() + 2
        while not any(f == fd for f, _ in calls) and time.monotonic() < deadline:
            time.sleep(0.002)
        assert any(f == fd and t != main for f, t in calls)
        rec.close()
        assert (fd, main) in calls  # the end of a session is always fsynced


def test_os_policy_fsyncs_only_at_session_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = os.fsync
    with Recorder(tmp_path / "r", fsync="os") as r:
        rec = r.open_session("a", (), "c", "db", "read")
        fd = _session_fd(rec)
        monkeypatch.setattr(os, "fsync", lambda f: (calls.append(f), real(f)))
        for _ in range(20):
            rec.statement("SELECT 1", None, True, "read", "simple")
        time.sleep(0.05)
        assert fd not in calls
        rec.close()
        assert fd in calls


_KILLED_CHILD = """
import sys, time
from hoopctl.audit.recorder import Recorder
r = Recorder(sys.argv[1], fsync=sys.argv[2])
rec = r.open_session("victim", ("job:1",), "127.0.0.1:1", "appdb", "write")
rec.statement("UPDATE accounts SET balance = 0", None, True, "write", "simple")
print(rec.sid, flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize("policy", ["batch", "os"])
def test_statement_record_survives_sigkill_right_after_statement(tmp_path: Path, policy: str) -> None:
    d = tmp_path / "r"
    child = subprocess.Popen(
        [sys.executable, "-c", _KILLED_CHILD, str(d), policy], stdout=subprocess.PIPE, cwd=REPO, text=True
    )
    try:
        sid = child.stdout.readline().strip()
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait(10)
    recs = Recordings(d)
    doc = recs.load(sid)
    assert [i["text"] for i in doc["items"]] == ["UPDATE accounts SET balance = 0"]
    report = recs.verify()
    assert report.ok and any("unsealed" in w.reason for w in report.warnings)
    # the next recorder seals what the dead one left open, and the result verifies clean
    Recorder(d).close()
    report = recs.verify()
    assert report.ok and not report.warnings, report.warnings
    assert [s.status for s in recs.summaries()] == ["recovered"]


def test_live_recorder_sessions_are_not_sealed_by_another(tmp_path: Path) -> None:
    d = tmp_path / "r"
    with Recorder(d) as first:
        rec = first.open_session("a", (), "c", "db", "read")
        rec.statement("SELECT 1", None, True, "read", "simple")
        Recorder(d).close()  # a second gateway process starting on the same directory
        rec.statement("SELECT 2", None, True, "read", "simple")
        assert any("open" in w.reason for w in Recordings(d).verify().warnings)
        rec.close()
    report = Recordings(d).verify()
    assert report.ok and not report.warnings


def test_lock_files_of_dead_recorders_are_removed_and_live_ones_kept(tmp_path: Path) -> None:
    d = tmp_path / "r"
    crash = (
        "import os, signal; from hoopctl.audit.recorder import Recorder; "
        f"print(Recorder({str(d)!r}).id, flush=True); os.kill(os.getpid(), signal.SIGKILL)"
    )
    out = subprocess.run([sys.executable, "-c", crash], capture_output=True, text=True, timeout=60)
    crashed = out.stdout.strip()
    locks = d / "recorders"
    assert (locks / f"{crashed}.lock").exists(), out.stderr
    assert (locks / f"{crashed}.0.wal").exists()  # fsync batch: its journal too
    live = Recorder(d)
    with Recorder(d) as third:
        names = {p.name for p in locks.iterdir()}
        assert {n for n in names if n.endswith(".lock")} == {f"{live.id}.lock", f"{third.id}.lock"}
        assert not any(n.startswith(crashed) for n in names)
    live.close()
    assert not list(locks.iterdir())


def test_many_concurrent_sessions_keep_every_chain(tmp_path: Path) -> None:
    d = tmp_path / "r"
    errors: list[BaseException] = []

    def worker(r: Recorder, n: int) -> None:
        try:
            for _ in range(3):
                rec = r.open_session(f"user{n}", (f"job:{n}",), "c", "db", "read")
                for i in range(150):
                    h = rec.statement(f"SELECT {i}", [i], i % 7 != 0, "read", "extended")
                    rec.result(h, 0.1, 1, None, 0)
                rec.close()
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    with Recorder(d, fsync="batch", interval_ms=1) as r:
        threads = [threading.Thread(target=worker, args=(r, n)) for n in range(16)]
        for t in threads:
            t.start()
        # a second process writes into the same directory and ledger at the same time
        other = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import sys\nfrom hoopctl.audit.recorder import Recorder\nfrom tests.audit.conftest import write_session\n"
                "r = Recorder(sys.argv[1])\n[write_session(r, f'p{i}', 40) for i in range(20)]\nr.close()",
                str(d),
            ],
            cwd=REPO,
        )
        for t in threads:
            t.join()
        assert other.wait(60) == 0
    assert not errors
    recs = Recordings(d)
    report = recs.verify()
    assert report.ok, report.problems[:3]
    assert not report.warnings
    assert report.sessions == 16 * 3 + 20
    rows = recs.summaries()
    assert sum(r.statements for r in rows) == 16 * 3 * 150 + 20 * 40


def test_missing_directory_raises_a_clear_error(tmp_path: Path) -> None:
    d = tmp_path / "r"
    r = Recorder(d)
    rec = r.open_session("a", (), "c", "db", "read")
    shutil.rmtree(d)
    with pytest.raises(RecordingError, match="cannot"):
        r.open_session("a", (), "c", "db", "read")
    # the open session's file is gone too: within moments its statements are refused
    with pytest.raises(RecordingError, match="deleted"):
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            rec.statement("SELECT 1", None, True, "read", "simple")
            time.sleep(0.001)
    with pytest.raises(RecordingError):
        Recorder(Path("/proc/self/no-such-dir/recordings"))
    with pytest.raises(RecordingError):
        r.close()  # the ledger went with the directory: said, not swallowed


def test_symlinked_sessions_dir_is_refused(tmp_path: Path) -> None:
    d = tmp_path / "r"
    d.mkdir()
    (tmp_path / "elsewhere").mkdir()
    (d / "sessions").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(RecordingError):
        Recorder(d)


def test_write_error_fails_closed_and_keeps_the_chain_valid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = tmp_path / "r"
    with Recorder(d) as r:
        rec = r.open_session("a", (), "c", "db", "read")
        rec.statement("SELECT 1", None, True, "read", "simple")
        real = os.write

        def failing(fd: int, data: bytes) -> int:
            if fd == rec._fd:
                real(fd, bytes(data)[:10])  # a partial record reaches the disk, then the error
                raise OSError(errno.EIO, "Input/output error")
            return real(fd, data)

        monkeypatch.setattr(os, "write", failing)
        with pytest.raises(RecordingError, match="Input/output error"):
            rec.statement("DROP TABLE accounts", None, True, "ddl", "simple")
        monkeypatch.setattr(os, "write", real)
        with pytest.raises(RecordingError, match="failed earlier"):
            rec.statement("SELECT 2", None, True, "read", "simple")
        with pytest.raises(RecordingError):
            rec.close()
    report = Recordings(d).verify()
    assert report.ok, report.problems
    doc = Recordings(d).load(rec.sid)
    assert [i["text"] for i in doc["items"]] == ["SELECT 1"]


@pytest.mark.root
def test_full_disk_raises_and_what_was_written_verifies(tmp_path: Path) -> None:
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", str(mnt)]).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        with Recorder(mnt / "r") as r:
            rec = r.open_session("a", (), "c", "db", "read")
            filler = mnt / "filler"
            with pytest.raises(RecordingError, match="No space left"):
                for i in range(100_000):
                    rec.statement("SELECT " + "x" * 2000 + f" {i}", None, True, "read", "simple")
                    if i == 10:  # fill the disk to the last block
                        fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
                        try:
                            while os.write(fd, b"\0" * 4096):
                                pass
                        except OSError as exc:
                            assert exc.errno == errno.ENOSPC
                        finally:
                            os.close(fd)
            written = rec.statements
            filler.unlink()  # room for the ledger's seal again
            with pytest.raises(RecordingError):
                rec.close()
        report = Recordings(mnt / "r").verify()
        assert report.ok, report.problems
        assert len(Recordings(mnt / "r").load(rec.sid)["items"]) == written
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        Recorder(tmp_path / "r", fsync="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Recorder(tmp_path / "r", interval_ms=0)


def _killed_recorder_session(d: Path) -> str:
    child = subprocess.Popen(
        [sys.executable, "-c", _KILLED_CHILD, str(d), "batch"], stdout=subprocess.PIPE, cwd=REPO, text=True
    )
    try:
        sid = child.stdout.readline().strip()
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait(10)
    return sid


def test_crash_torn_session_tail_is_sealed_as_such(tmp_path: Path) -> None:
    d = tmp_path / "r"
    sid = _killed_recorder_session(d)
    path = d / "sessions" / f"{sid}.jsonl"
    with open(path, "ab") as f:
        f.write(b'{"seq":2,"ts":17')  # what a power cut can leave of the next record
    Recorder(d).close()
    report = Recordings(d).verify()
    assert report.ok and [w.reason for w in report.warnings] == ["16 bytes of a record cut short by a crash"]
    path.write_bytes(path.read_bytes()[:-16])  # the torn bytes the ledger noted must stay
    assert "torn tail" in Recordings(d).verify().first.reason


def test_torn_ledger_tail_is_marked_by_the_next_recorder(tmp_path: Path) -> None:
    d = tmp_path / "r"
    with Recorder(d) as r:
        write_session(r)
        live = Recorder(d)  # a second recorder, still running when the ledger gets torn
        with open(d / "ledger.jsonl", "ab") as f:
            f.write(b'{"seq":99,"ts":1')
        first = Recordings(d).verify().first
        assert first.file == "ledger.jsonl" and "cut short" in first.reason
        with pytest.raises(RecordingError, match="partial record"):
            live.open_session("a", (), "c", "db", "read")  # a running recorder never guesses
        with Recorder(d) as fresh:  # a restart marks the torn record, and all carry on
            write_session(fresh, "after")
        write_session(live, "live")
        live.close()
    report = Recordings(d).verify()
    assert report.ok, report.problems
    assert any("torn by a crash" in w.reason for w in report.warnings)
    assert report.sessions == 3


def test_ledger_events_link_to_session_events(tmp_path: Path) -> None:
    d = tmp_path / "r"
    with Recorder(d) as r:
        rec = r.open_session(
            "helper",
            ({"token": "t-job", "identity": "ci-job"}, {"token": "t-helper", "identity": "helper"}),
            "c",
            "db",
            "read",
        )
        ref = r.event("access-approved", request="req-9", approver="dana", grant="g-1", until=1_900_000_000)
        rec.event("grant-applied", grant="g-1", ledger_ref=ref)
        rec.close()
    recs = Recordings(d)
    assert recs.verify().ok
    doc = recs.load(rec.sid)
    assert [c["identity"] for c in doc["session"]["chain"]] == ["ci-job", "helper"]
    (event,) = doc["items"]
    ledger = [json.loads(line) for line in (d / "ledger.jsonl").read_text().splitlines()]
    approved = next(x for x in ledger if x.get("event") == "access-approved")
    assert approved["hash"] == event["ledger_ref"] and approved["approver"] == "dana"


@pytest.mark.root
def test_read_only_filesystem_raises_the_clear_error(tmp_path: Path) -> None:
    mnt = tmp_path / "ro"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(mnt)]).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        with Recorder(mnt / "r") as r:
            sid = write_session(r)
        # (a filesystem with files open for writing cannot be remounted read-only)
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        with pytest.raises(RecordingError, match="Read-only file system"):
            Recorder(mnt / "r")
        with pytest.raises(RecordingError, match="Read-only file system"):
            Recorder(mnt / "new")
        report = Recordings(mnt / "r").verify()  # reading needs no write access
        assert report.ok and report.sessions == 1
        assert len(Recordings(mnt / "r").load(sid)["items"]) == 5
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_result_is_written_with_the_next_record_or_soon_after(tmp_path: Path) -> None:
    with Recorder(tmp_path / "r", fsync="os", interval_ms=5) as r:
        rec = r.open_session("a", (), "c", "db", "read")
        path = tmp_path / "r" / "sessions" / f"{rec.sid}.jsonl"
        h = rec.statement("SELECT 1", None, True, "read", "simple")
        rec.result(h, 0.5, 1, None, 0)
        rec.statement("SELECT 2", None, True, "read", "simple")
        kinds = [json.loads(x)["kind"] for x in path.read_bytes().splitlines()]
        assert kinds == ["start", "stmt", "result", "stmt"]  # in chain order, before the next stmt
        rec.result(h + 2, 0.5, 1, None, 0)
        deadline = time.monotonic() + 2
        while path.read_bytes().count(b'"kind":"result"') < 2 and time.monotonic() < deadline:
            time.sleep(0.005)
        assert path.read_bytes().count(b'"kind":"result"') == 2  # an idle session's result lands too
        rec.close()
    report = Recordings(tmp_path / "r").verify()
    assert report.ok, report.problems


def test_idle_recorder_does_not_wake_to_fsync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    with Recorder(tmp_path / "r", fsync="batch", interval_ms=2) as r:
        rec = r.open_session("a", (), "c", "db", "read")
        rec.statement("SELECT 1", None, True, "read", "simple")
        time.sleep(0.1)  # the one pass for that statement is over
        real = os.fdatasync
        monkeypatch.setattr(os, "fdatasync", lambda fd: (calls.append(fd), real(fd)))
        time.sleep(0.1)
        assert calls == []
        rec.statement("SELECT 2", None, True, "read", "simple")
        deadline = time.monotonic() + 2
        while not calls and time.monotonic() < deadline:
            time.sleep(0.002)
        assert calls  # a write wakes it
        rec.close()


def test_write_error_with_a_held_result_keeps_the_ledger_matching_the_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = tmp_path / "r"
    with Recorder(d, fsync="os") as r:
        rec = r.open_session("a", (), "c", "db", "read")
        h = rec.statement("SELECT 1", None, True, "read", "simple")
        rec.result(h, 0.5, 1, None, 0)  # held: sealed, not yet written
        real = os.write

        def failing(fd: int, data: bytes) -> int:
            if fd == rec._fd:
                raise OSError(errno.EIO, "Input/output error")
            return real(fd, data)

        monkeypatch.setattr(os, "write", failing)
        with pytest.raises(RecordingError, match="Input/output error"):
            rec.statement("DROP TABLE accounts", None, True, "ddl", "simple")
        monkeypatch.setattr(os, "write", real)
        with pytest.raises(RecordingError):
            rec.close()
    report = Recordings(d).verify()
    assert report.ok, report.problems  # the ledger's seal names the last record on disk
    assert [i["text"] for i in Recordings(d).load(rec.sid)["items"]] == ["SELECT 1"]
