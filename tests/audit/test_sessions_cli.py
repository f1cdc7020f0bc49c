"""`hoopctl sessions`: outputs, exit codes, replay timing."""

from __future__ import annotations

import json
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
    return CliRunner().invoke(main, ["sessions", *args], env=env, catch_exceptions=False)


def test_list_shows_every_session(written: Written) -> None:
    res = run("list", "--dir", str(written.dir))
    assert res.exit_code == 0
    lines = res.output.splitlines()
    assert lines[0].split()[:4] == ["ID", "IDENTITY", "RESOURCE", "ROLE"]
    assert [ln.split()[0] for ln in lines[1:]] == written.sids
    assert lines[2].split()[1:5] == ["bob", "appdb", "read", "127.0.0.1:40000"]
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
        "SELECT 0",
        "SELECT 1",
        "SELECT 2",
    ]
    assert 0.19 <= took < 1.0
    began = time.monotonic()
    res = run("replay", sid, "--dir", str(d), "--speed", "0", "--json")
    assert time.monotonic() - began < 0.15
    assert [json.loads(ln)["text"] for ln in res.output.splitlines()] == ["SELECT 0", "SELECT 1", "SELECT 2"]
    assert run("replay", sid, "--dir", str(d), "--speed", "-1").exit_code == 2


def test_installed_entry_point(written: Written) -> None:
    exe = Path(sys.executable).with_name("hoopctl")
    res = subprocess.run(
        [str(exe), "sessions", "verify", "--dir", str(written.dir), "--json"], capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["sessions"] == 3
