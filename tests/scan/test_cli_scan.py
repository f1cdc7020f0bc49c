"""`hoopctl scan` as a user runs it: a separate process, its exit codes, its JSON, its table."""

from __future__ import annotations

import json
import re

from tests.scan.conftest import hoopctl

TOKEN = "ghp_" + "zQWBuTSOoRi4A9spHcVY5ncnsDkxkJ" + "0mLq17"


def test_clean_tree_exits_0_with_empty_findings(tmp_path):
    (tmp_path / "README.md").write_text("nothing to see\n")
    r = hoopctl("scan", "--json", str(tmp_path))
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["findings"] == []
    assert doc["stats"]["files_scanned"] == 1


def test_findings_exit_1_and_json_is_one_object_with_the_documented_fields(tmp_path):
    (tmp_path / "deploy.sh").write_text(f"#!/bin/sh\nexport GITHUB_TOKEN={TOKEN}\n")
    (tmp_path / "deploy.sh").chmod(0o644)
    r = hoopctl("scan", "--json", str(tmp_path))
    assert r.returncode == 1, r.stderr
    assert r.stdout.count("\n") == 1  # exactly one JSON document on one line
    doc = json.loads(r.stdout)
    assert set(doc) == {"findings", "stats"}
    (f,) = doc["findings"]
    assert {"path", "line", "rule", "type", "severity", "owner", "mode", "fingerprint", "preview"} <= set(f)
    assert f["path"] == f"{tmp_path}/deploy.sh" and f["line"] == 2 and f["mode"] == "0644"
    assert "world-readable" in f["exposure"]
    for key in ("files_scanned", "bytes_scanned", "skipped_binary", "skipped_large", "skipped_special"):
        assert key in doc["stats"]
    for key in ("unreadable", "symlinks_skipped", "errors", "seconds", "mb_per_s"):
        assert key in doc["stats"]
    assert TOKEN not in r.stdout + r.stderr


def test_missing_path_exits_2_with_one_line_naming_it(tmp_path):
    r = hoopctl("scan", str(tmp_path), str(tmp_path / "nope"))
    assert r.returncode == 2
    assert r.stdout == ""
    assert r.stderr.strip().count("\n") == 0
    assert f"{tmp_path}/nope" in r.stderr and "Traceback" not in r.stderr


def test_bad_size_is_a_usage_error(tmp_path):
    r = hoopctl("scan", "--max-file-size", "lots", str(tmp_path))
    assert r.returncode == 2 and "size" in r.stderr


def test_max_file_size_and_exclude_options(tmp_path):
    (tmp_path / "a.env").write_text(f"GITHUB_TOKEN={TOKEN}\n" + "#" * 2000 + "\n")
    r = hoopctl("scan", "--json", "--max-file-size", "1K", str(tmp_path))
    assert r.returncode == 0 and json.loads(r.stdout)["stats"]["skipped_large"] == 1
    r = hoopctl("scan", "--json", "--exclude", "*.env", str(tmp_path))
    assert r.returncode == 0 and json.loads(r.stdout)["stats"]["excluded"] == 1


def test_table_shows_location_type_severity_and_a_summary(tmp_path):
    (tmp_path / "x.sh").write_text(f"export GITHUB_TOKEN={TOKEN}\n")
    r = hoopctl("scan", str(tmp_path))
    assert r.returncode == 1
    lines = r.stdout.splitlines()
    assert lines[0].split()[:3] == ["LOCATION", "TYPE", "SEVERITY"]
    assert f"{tmp_path}/x.sh:1" in lines[1]
    assert re.search(r"1 finding\(s\) in 1 files", lines[-1])
    assert "\x1b[" not in r.stdout  # no colour when not on a terminal


def test_no_planted_secret_appears_in_full_in_any_output(host_tree):
    outputs = []
    for args in (["scan"], ["scan", "--json"], ["-vv", "scan"], ["-vv", "scan", "--json"]):
        r = hoopctl(*args, str(host_tree.root))
        assert r.returncode == 1, r.stderr[-2000:]
        outputs.append(r.stdout + r.stderr)
    text = "\n".join(outputs)
    assert "DEBUG" in text  # -vv did log
    leaked = []
    for s in host_tree.secrets:
        parts = [s.secret]
        m = re.match(r"^[a-z+]+://[^:/@]*:([^@]+)@", s.secret)
        if m:
            parts.append(m.group(1))  # the password inside a URL
        parts += [ln for ln in s.secret.splitlines()[1:-1] if len(ln) >= 16]  # key body lines
        leaked += [(s.path, s.type) for p in parts if len(p) >= 8 and p in text]
    assert leaked == []


def test_json_stays_one_valid_line_with_odd_file_names(tmp_path):
    import os

    raw = os.fsencode(tmp_path) + b"/we\xffird\nname.env"
    with open(raw, "wb") as fh:
        fh.write(f"GITHUB_TOKEN={TOKEN}\n".encode())
    r = hoopctl("scan", "--json", str(tmp_path))
    assert r.returncode == 1 and r.stdout.count("\n") == 1
    (f,) = json.loads(r.stdout)["findings"]
    assert f["path"].endswith("/we\\xffird\\nname.env")
    table = hoopctl("scan", str(tmp_path))
    assert len(table.stdout.splitlines()) == 3  # header, one row, summary: the newline stayed escaped


def test_progress_shows_only_on_a_terminal(monkeypatch):
    import io

    from hoopctl.cli.scan import Progress

    class Tty(io.StringIO):
        def isatty(self):
            return True

    for stream, expect in ((Tty(), True), (io.StringIO(), False)):
        monkeypatch.setattr("sys.stderr", stream)
        p = Progress(delay=0.0)
        p(1024, 5_000_000)
        p.done()
        assert ("scanning: 1,024 files" in stream.getvalue()) is expect
