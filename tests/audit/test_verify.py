"""Verify finds every kind of tampering and names the first broken record."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hoopctl.audit.chain import encode_fields, parse_line, seal
from hoopctl.audit.reader import Recordings
from hoopctl.audit.recorder import Recorder
from tests.audit.conftest import Written, lines_of, write_session


def _verify(w: Written, sid: str | None = None, key: bytes | None = None):
    return Recordings(w.dir, key=key).verify(sid)


def test_untouched_recordings_verify(written: Written) -> None:
    report = _verify(written)
    assert report.ok, report.problems
    assert report.sessions == 3 and not report.warnings
    assert report.ledger_records == 3 * 2 + 2  # recorder start, open+close per session, stop
    assert _verify(written, written.sids[1]).ok


def test_one_edited_byte_names_that_record(written: Written) -> None:
    path = written.session_path(1)
    lines = lines_of(path)
    lines[3] = lines[3].replace(b"id = 1", b"id = 7")  # line 4 is seq 3
    path.write_bytes(b"".join(lines))
    report = _verify(written)
    assert not report.ok
    first = report.first
    assert (first.file, first.line, first.seq) == (f"sessions/{written.sids[1]}.jsonl", 4, 3)
    assert "altered" in first.reason
    # the other sessions are unaffected, and checking them alone passes
    assert _verify(written, written.sids[0]).ok


def test_rehashed_edit_breaks_the_link_to_the_next_record(written: Written) -> None:
    path = written.session_path(0)
    lines = lines_of(path)
    rec = parse_line(lines[1].rstrip(b"\n")).record
    rec["text"] = "SELECT 'innocent'"
    lines[1], _ = seal(encode_fields(rec))
    path.write_bytes(b"".join(lines))
    first = _verify(written).first
    assert (first.line, first.seq) == (3, 2) and "prev" in first.reason


def _rewrite_chain(records: list[dict]) -> bytes:
    prev, out = "0" * 64, []
    for i, rec in enumerate(records):
        rec = {**rec, "seq": i, "prev": prev}
        line, prev = seal(encode_fields(rec))
        out.append(line)
    return b"".join(out)


def test_fully_rewritten_session_is_caught_by_the_ledger(written: Written) -> None:
    path = written.session_path(2)
    records = [parse_line(raw.rstrip(b"\n")).record for raw in lines_of(path)]
    del records[3:5]  # drop a refused DELETE and its result, then rechain everything
    path.write_bytes(_rewrite_chain(records))
    first = _verify(written).first
    assert first.file.endswith(f"{written.sids[2]}.jsonl") and "truncated" in first.reason


def test_deleted_record_is_caught(written: Written) -> None:
    path = written.session_path(0)
    lines = lines_of(path)
    del lines[2]
    path.write_bytes(b"".join(lines))
    first = _verify(written).first
    assert (first.line, first.seq) == (3, 2) and "missing" in first.reason


def test_reordered_records_are_caught(written: Written) -> None:
    path = written.session_path(0)
    lines = lines_of(path)
    lines[1], lines[3] = lines[3], lines[1]
    path.write_bytes(b"".join(lines))
    first = _verify(written).first
    assert (first.line, first.seq) == (2, 1) and "seq 3 where 1" in first.reason


def test_inserted_duplicate_record_is_caught(written: Written) -> None:
    path = written.session_path(0)
    lines = lines_of(path)
    lines.insert(3, lines[2])
    path.write_bytes(b"".join(lines))
    first = _verify(written).first
    assert (first.line, first.seq) == (4, 3) and "repeated" in first.reason


def test_truncation_at_the_end_is_caught(written: Written) -> None:
    path = written.session_path(1)
    lines = lines_of(path)
    path.write_bytes(b"".join(lines[:-2]))  # whole records gone: the file's own chain is fine
    first = _verify(written).first
    assert first.file.endswith(f"{written.sids[1]}.jsonl") and "truncated" in first.reason
    path.write_bytes(b"".join(lines)[:-30])  # cut inside the last record
    assert "truncated" in _verify(written).first.reason


def test_deleted_session_file_is_caught(written: Written) -> None:
    written.session_path(1).unlink()
    report = _verify(written)
    assert report.first.file == f"sessions/{written.sids[1]}.jsonl"
    assert "missing" in report.first.reason
    assert not _verify(written, written.sids[1]).ok


def test_session_file_added_by_hand_is_caught(written: Written) -> None:
    other = written.dir.parent / "other"
    with Recorder(other) as r:
        sid = write_session(r, "mallory")
    (other / "sessions" / f"{sid}.jsonl").rename(written.dir / "sessions" / f"{sid}.jsonl")
    first = _verify(written).first
    assert sid in first.file and "not in the ledger" in first.reason


def test_edited_ledger_is_caught(written: Written) -> None:
    lines = lines_of(written.ledger)
    lines[2] = lines[2].replace(b'"records":', b'"records":1', 1)
    written.ledger.write_bytes(b"".join(lines))
    first = _verify(written).first
    assert (first.file, first.line, first.seq) == ("ledger.jsonl", 3, 2)


def test_key_stops_a_rewrite_of_the_ledger(tmp_path: Path) -> None:
    key = b"0123456789abcdef0123456789abcdef"
    d = tmp_path / "recs"
    with Recorder(d, key=key) as r:
        sid = write_session(r)
    w = Written(d, [sid])
    assert _verify(w, key=key).ok
    assert _verify(w).ok and not _verify(w).macs_checked
    # drop the session from both the ledger and the disk, rechaining the ledger without the key
    records = [parse_line(raw.rstrip(b"\n")).record for raw in lines_of(w.ledger)]
    kept = [r for r in records if r.get("sid") != sid]
    w.ledger.write_bytes(_rewrite_chain(kept))
    w.session_path().unlink()
    assert _verify(w).ok  # a plain hash chain cannot see a full rewrite (documented)
    report = _verify(w, key=key)
    assert report.first.file == "ledger.jsonl" and "no mac" in report.first.reason
    assert not _verify(w, key=b"another key of 32 bytes........").ok


def test_json_report_names_fields(written: Written) -> None:
    path = written.session_path(0)
    path.write_bytes(path.read_bytes().replace(b"DELETE", b"delete", 1))
    report = _verify(written)
    doc = json.loads(json.dumps(report.first.__dict__))
    assert doc["seq"] == 3 and doc["line"] == 4


def test_hash_is_over_the_bytes_as_written(written: Written) -> None:
    raw = lines_of(written.session_path(0))[1].rstrip(b"\n")
    body, _, tail = raw.rpartition(b',"hash":"')
    assert hashlib.sha256(body + b"}").hexdigest().encode() == tail[:-2]


def test_symlinked_session_file_is_not_followed(written: Written, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("root-only data\n")
    path = written.session_path(1)
    path.unlink()
    path.symlink_to(secret)
    report = _verify(written)
    assert report.first.file == f"sessions/{written.sids[1]}.jsonl"
    assert "cannot read" in report.first.reason and "symbolic links" in report.first.reason
    assert "root-only" not in repr(report)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Written:
    d = tmp_path_factory.mktemp("pristine") / "recs"
    with Recorder(d) as r:
        sids = [write_session(r, name, 3) for name in ("alice", "bob")]
    return Written(d, sids)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=st.integers(0, 2), where=st.floats(0, 1, exclude_max=True), flip=st.integers(1, 255))
def test_any_single_byte_change_anywhere_is_caught(
    pristine: Written, which: int, where: float, flip: int
) -> None:
    path = pristine.ledger if which == 2 else pristine.session_path(which)
    original = path.read_bytes()
    data = bytearray(original)
    data[int(where * len(data))] ^= flip
    path.write_bytes(bytes(data))
    try:
        assert not _verify(pristine).ok
    finally:
        path.write_bytes(original)
    assert _verify(pristine).ok
