"""`hoopctl sessions`: outputs, exit codes, replay timing."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from hoopctl.audit.reader import Recordings, assemble, replay
from hoopctl.audit.recorder import Recorder
from hoopctl.cli import main
from tests.audit.conftest import Written, lines_of


def run(*args: str, env: dict[str, str] | None = None):
    # color=True: click must not strip escape codes, so the output is what a terminal gets.
    return CliRunner().invoke(main, ["sessions", *args], env=env, catch_exceptions=False, color=True)


def test_list_shows_every_session(written: Written) -> None:
    res = run("list", "--dir", str(written.dir))
    assert res.exit_code == 0
    lines = res.output.splitlines()
    assert lines[0].split()[:4] == ["ID", "IDENTITY", "RESOURCE", "ROLE"]
    assert [ln.split()[0] for ln in lines[1:]] == written.sids
    # A nested agent names itself: the list shows the chain it came down.
    assert lines[1].split()[1] == "job:ci-42>helper:alice"
    assert lines[2].split()[1:5] == ["job:ci-42>helper:bob", "appdb", "read", "127.0.0.1:40000"]
    assert lines[2].split()[-3:] == ["4", "2", "closed"]


def test_list_json_and_env_dir(written: Written) -> None:
    res = run("list", "--json", env={"HOOPCTL_RECORDINGS": str(written.dir)})
    assert res.exit_code == 0
    rows = json.loads(res.output)
    assert [r["sid"] for r in rows] == written.sids
    assert rows[0]["identity"] == "alice" and rows[0]["chain"] == ["job:ci-42", "helper:alice"]
    assert rows[0]["statements"] == 4 and rows[0]["refused"] == 2
    assert rows[0]["start"] < rows[0]["end"]


def test_show_lists_header_and_statements(written: Written) -> None:
    res = run("show", written.sids[0], "--dir", str(written.dir))
    assert res.exit_code == 0, res.output
    out = res.output
    assert "identity   alice" in out and "job:ci-42 -> helper:alice" in out
    assert "chain check ok" in out
    assert "DELETE FROM accounts WHERE id = 1" in out and "REFUSED" in out and "rule=write-not-granted" in out
    assert 'params: ["0"]' in out and "error: refused: 42501" in out and "masked=2" in out
    assert "access-request" in out


def test_show_json(written: Written) -> None:
    res = run("show", written.sids[1], "--dir", str(written.dir), "--json")
    doc = json.loads(res.output)
    assert res.exit_code == 0 and doc["verify"]["ok"] is True
    stmts = [i for i in doc["items"] if i["type"] == "statement"]
    assert [s["allowed"] for s in stmts] == [True, False, True, False]
    assert stmts[2]["result"] == {**stmts[2]["result"], "rows": 2, "masked": 2, "ms": 0.5}


def test_unique_prefix_resolves_and_ambiguous_one_is_an_error(tmp_path: Path) -> None:
    d = tmp_path / "r"
    with Recorder(d) as r:
        a = r.open_session("a", (), "c", "db", "read")
        a.close()
        b = r.open_session("b", (), "c", "db", "read")
        b.close()
    common = 0
    while a.sid[common] == b.sid[common]:
        common += 1
    res = run("show", a.sid[: common + 1], "--dir", str(d))
    assert res.exit_code == 0 and f"session    {a.sid}" in res.output
    res = run("show", a.sid[:common], "--dir", str(d))
    assert res.exit_code == 2 and "ambiguous" in res.output
    res = run("show", "zzzz", "--dir", str(d))
    assert res.exit_code == 2 and "no session 'zzzz'" in res.output


def test_missing_directory_is_one_line_error(tmp_path: Path) -> None:
    res = run("list", "--dir", str(tmp_path / "nope"))
    assert res.exit_code == 2
    assert res.output.strip().count("\n") == 0 and "no recordings directory" in res.output


def test_verify_exit_codes_and_first_broken(written: Written) -> None:
    res = run("verify", "--dir", str(written.dir))
    assert res.exit_code == 0 and res.output.startswith("ok: 3 session(s)")
    path = written.session_path(2)
    lines = lines_of(path)
    lines[5] = lines[5].replace(b"SELECT 2", b"SELECT 9")
    path.write_bytes(b"".join(lines))
    written.session_path(0).unlink()
    res = run("verify", "--dir", str(written.dir))
    assert res.exit_code == 1
    first = f"first broken record: sessions/{written.sids[0]}.jsonl: session file missing"
    assert first in res.output
    assert f"BROKEN: sessions/{written.sids[2]}.jsonl:6 (seq 5): hash mismatch" in res.output
    res = run("verify", written.sids[2], "--dir", str(written.dir), "--json")
    doc = json.loads(res.output)
    assert res.exit_code == 1 and doc["ok"] is False
    assert doc["first_broken"] == {
        "file": f"sessions/{written.sids[2]}.jsonl",
        "line": 6,
        "seq": 5,
        "reason": "hash mismatch: the record was altered",
    }
    assert run("verify", written.sids[1], "--dir", str(written.dir)).exit_code == 0
    res = run("show", written.sids[2], "--dir", str(written.dir))
    assert res.exit_code == 1 and "chain check BROKEN" in res.output


def test_verify_with_key_file(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_bytes(b"a-key-of-at-least-16-bytes\n")
    with Recorder(tmp_path / "r", key=b"a-key-of-at-least-16-bytes") as r:
        r.open_session("a", (), "c", "db", "read").close()
    res = run("verify", "--dir", str(tmp_path / "r"), "--key-file", str(key))
    assert res.exit_code == 0 and "macs checked" in res.output
    key.write_bytes(b"another-key-entirely")
    res = run("verify", "--dir", str(tmp_path / "r"), "--key-file", str(key))
    assert res.exit_code == 1 and "mac does not match" in res.output
    key.write_bytes(b"short")
    assert run("verify", "--dir", str(tmp_path / "r"), "--key-file", str(key)).exit_code == 2


@pytest.fixture
def timed(tmp_path: Path) -> tuple[Path, str]:
    """A session with statements 0.0, 0.3 and 0.6 s after its start."""
    d = tmp_path / "r"
    with Recorder(d) as r:
        rec = r.open_session("a", (), "c", "db", "read")
        for i in range(3):
            if i:
                time.sleep(0.3)
            rec.statement(f"SELECT {i}", None, True, "read", "simple")
        rec.close()
    return d, rec.sid


def test_replay_keeps_order_and_scales_timing(timed: tuple[Path, str]) -> None:
    d, sid = timed
    doc = assemble(Recordings(d).read_session(sid).records)
    clock = [0.0]
    waits: list[float] = []

    def sleep(s: float) -> None:
        waits.append(s)
        clock[0] += s

    seen: list[str] = []
    replay(doc, 2.0, lambda item: seen.append(item["text"]), sleep=sleep, clock=lambda: clock[0])
    assert seen == ["SELECT 0", "SELECT 1", "SELECT 2"]
    assert clock[0] == pytest.approx(doc["items"][-1]["t"] / 2, abs=1e-6)
    assert 0.29 < doc["items"][-1]["t"] - doc["items"][0]["t"] < 1.0


def test_replay_cli_timing(timed: tuple[Path, str]) -> None:
    d, sid = timed
    began = time.monotonic()
    res = run("replay", sid, "--dir", str(d), "--speed", "3")
    took = time.monotonic() - began
    assert res.exit_code == 0
    assert [ln for ln in res.output.splitlines() if not ln.startswith("--")] == [
        "   SELECT 0",
        "   SELECT 1",
        "   SELECT 2",
    ]
    assert 0.19 <= took < 1.0
    began = time.monotonic()
    res = run("replay", sid, "--dir", str(d), "--speed", "0", "--json")
    assert time.monotonic() - began < 0.15
    assert [json.loads(ln)["text"] for ln in res.output.splitlines()] == ["SELECT 0", "SELECT 1", "SELECT 2"]
    assert run("replay", sid, "--dir", str(d), "--speed", "-1").exit_code == 2


# What a caller or the database could put in a recording to act on the auditor's
# terminal: OSC retitle, CSI colour/erase/conceal, BEL, CR, DEL, C1 CSI.
HOSTILE_TEXT = "SELECT 1; -- \x1b]0;pwned\x07\x1b[31mRED\r\x1b[2Khidden\x7f\x9b2J"
HOSTILE_ERROR = "ERROR: \x1b[8mconcealed"
RAW_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f]")  # every control character but \n


@pytest.fixture
def hostile(tmp_path: Path) -> tuple[Path, str]:
    """A closed session whose every recorded field carries terminal control characters."""
    d = tmp_path / "r"
    with Recorder(d) as r:
        rec = r.open_session(
            "alice\x1b[2J", ["job\x9b31m"], "1.2.3.4\x07", "db\x1b]0;t\x07", "read\x7f", note="\x1b[3J"
        )
        h = rec.statement(HOSTILE_TEXT, ["\x1b[5m"], True, "rule\x1b[8m", "extended")
        rec.result(h, 1.0, 1, HOSTILE_ERROR)
        rec.event("grant\x1b[1A", reason="\x1b]52;c;aGk=\x07")
        rec.close()
    return d, rec.sid


def raw_controls(output: str) -> list[str]:
    return RAW_CONTROL.findall(output)


def test_show_writes_recorded_control_characters_visibly(hostile: tuple[Path, str]) -> None:
    d, sid = hostile
    res = run("show", sid, "--dir", str(d))
    assert res.exit_code == 0
    assert raw_controls(res.output) == []
    out = res.output
    assert "SELECT 1; -- \\x1b]0;pwned\\x07\\x1b[31mRED\\x0d\\x1b[2Khidden\\x7f\\x9b2J" in out
    assert "error: ERROR: \\x1b[8mconcealed" in out and "rule=rule\\x1b[8m" in out
    assert "identity   alice\\x1b[2J" in out and "chain      job\\x9b31m" in out
    assert "resource   db\\x1b]0;t\\x07   role read\\x7f   client 1.2.3.4\\x07" in out
    assert "event    grant\\x1b[1A" in out and '"reason": "\\u001b]52;c;aGk=\\u0007"' in out
    assert '"note": "\\u001b[3J"' in out


def test_replay_writes_recorded_control_characters_visibly(hostile: tuple[Path, str]) -> None:
    d, sid = hostile
    res = run("replay", sid, "--dir", str(d), "--speed", "0")
    assert res.exit_code == 0
    assert raw_controls(res.output) == []
    lines = res.output.splitlines()
    assert lines[0].startswith(
        f"-- session {sid}: alice\\x1b[2J (job\\x9b31m) on db\\x1b]0;t\\x07 as read\\x7f from 1.2.3.4\\x07,"
    )
    assert lines[1].endswith(" allowed rule=rule\\x1b[8m extended")
    assert lines[2] == "   SELECT 1; -- \\x1b]0;pwned\\x07\\x1b[31mRED\\x0d\\x1b[2Khidden\\x7f\\x9b2J"
    assert lines[3].endswith(" event grant\\x1b[1A")


def test_list_writes_recorded_control_characters_visibly(hostile: tuple[Path, str]) -> None:
    d, sid = hostile
    res = run("list", "--dir", str(d))
    assert res.exit_code == 0
    assert raw_controls(res.output) == []
    row = res.output.splitlines()[1].split()
    assert row[:5] == [sid, "alice\\x1b[2J", "db\\x1b]0;t\\x07", "read\\x7f", "1.2.3.4\\x07"]


def test_json_output_escapes_control_characters_and_keeps_them(hostile: tuple[Path, str]) -> None:
    d, sid = hostile
    shown = run("show", sid, "--dir", str(d), "--json").output
    replayed = run("replay", sid, "--dir", str(d), "--speed", "0", "--json").output
    listed = run("list", "--dir", str(d), "--json").output
    for out in (shown, replayed, listed):
        assert raw_controls(out) == []
    stmt = json.loads(shown)["items"][0]
    assert stmt["text"] == HOSTILE_TEXT and stmt["result"]["error"] == HOSTILE_ERROR
    assert json.loads(replayed.splitlines()[0])["text"] == HOSTILE_TEXT
    assert json.loads(listed)[0]["identity"] == "alice\x1b[2J"


def test_multi_line_text_cannot_fake_the_next_record(tmp_path: Path) -> None:
    d = tmp_path / "r"
    fake_show = "#9      2026-01-01T00:00:00.000Z  allowed  rule=read  simple"
    fake_replay = "-- +0.000001s allowed rule=read simple"
    with Recorder(d) as r:
        rec = r.open_session("a", (), "c", "db", "read")
        rec.statement(
            f"{fake_replay}\nDROP TABLE t;\n{fake_show}\n{fake_replay}\nSELECT 1", None, False, "x", "simple"
        )
        rec.statement("SELECT 2", None, True, "read", "simple")
        rec.close()
    shown = run("show", rec.sid, "--dir", str(d)).output.splitlines()
    assert len([ln for ln in shown if ln.startswith("#")]) == 2
    assert f"       {fake_show}" in shown and "       DROP TABLE t;" in shown
    replayed = run("replay", rec.sid, "--dir", str(d), "--speed", "0").output.splitlines()
    records = [ln for ln in replayed if ln.startswith("-- +")]
    assert len(records) == 2 and records[0].endswith(" REFUSED rule=x simple")
    assert replayed[2:7] == [
        f"   {fake_replay}",
        "   DROP TABLE t;",
        f"   {fake_show}",
        f"   {fake_replay}",
        "   SELECT 1",
    ]


def test_installed_entry_point(written: Written) -> None:
    exe = Path(sys.executable).with_name("hoopctl")
    res = subprocess.run(
        [str(exe), "sessions", "verify", "--dir", str(written.dir), "--json"], capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["sessions"] == 3
