"""`hoopctl quarantine` end to end through the click CLI: dry run, apply, list, show, restore."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

from hoopctl.cli import main

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def user():
    name = f"hc{uuid.uuid4().hex[:8]}"
    subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", name], check=True)
    try:
        pw = __import__("pwd").getpwnam(name)
        yield pw.pw_uid, pw.pw_gid, name
    finally:
        subprocess.run(["userdel", name], check=False)


@pytest.fixture
def env(tmp_path: Path, user):
    home = tmp_path / "home"
    home.mkdir()
    os.chown(home, user[0], user[1])
    token = home / ".env"
    token.write_bytes(b"GITLAB_TOKEN=glpat-" + b"x" * 20 + b"\n")
    os.chown(token, user[0], user[1])
    os.chmod(token, 0o600)
    return tmp_path / "vault", token


def run(vault: Path, *args: str):
    return CliRunner().invoke(main, ["quarantine", "--vault", str(vault), *args])


def test_add_is_a_dry_run_by_default(env):
    vault, token = env
    res = run(vault, "add", str(token))
    assert res.exit_code == 0, res.output
    assert "would quarantine" in res.output and "nothing changed" in res.output
    assert token.exists() and not vault.exists()


def test_add_apply_list_show_restore(env, user):
    vault, token = env
    data = token.read_bytes()
    res = run(
        vault, "add", str(token), "--apply", "--rule", "gitlab-pat", "--fingerprint", "fp:ab12", "--json"
    )
    assert res.exit_code == 0, res.output
    [row] = json.loads(res.output)
    assert row["result"] == "quarantined" and not token.exists()
    entry_id = row["id"]

    listed = json.loads(run(vault, "list", "--json").output)
    [entry] = listed["entries"]
    assert entry["id"] == entry_id and entry["state"] == "quarantined" and entry["user"] == user[2]
    assert entry["reason"]["rule_id"] == "gitlab-pat" and listed["unfinished"] == []
    assert "glpat" not in run(vault, "list").output  # never the secret

    shown = run(vault, "show", entry_id[-8:])
    assert shown.exit_code == 0 and "gitlab-pat" in shown.output and "mode 0600" in shown.output
    assert "glpat" not in shown.output

    res = run(vault, "restore", entry_id)
    assert res.exit_code == 0 and "restored" in res.output
    assert token.read_bytes() == data and os.stat(token).st_uid == user[0]
    assert json.loads(run(vault, "show", entry_id, "--json").output)["state"] == "restored"

    again = run(vault, "restore", entry_id)
    assert again.exit_code == 2 and again.output.count("\n") == 1 and "will not overwrite" in again.output
    other = token.parent / "copy"
    assert run(vault, "restore", entry_id, "--to", str(other)).exit_code == 0
    assert other.read_bytes() == data


def test_refused_files_exit_1_and_stay(env, tmp_path: Path):
    vault, token = env
    link = token.parent / "link"
    link.symlink_to("/etc/shadow")
    res = run(vault, "add", str(link), str(token), "--apply")
    assert res.exit_code == 1
    assert "refused" in res.output and "symlink" in res.output and "quarantined" in res.output
    assert link.is_symlink()


def test_errors_are_one_line_exit_2(env, tmp_path: Path):
    vault, _ = env
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o755)
    os.chmod(loose, 0o755)
    res = run(loose, "list")
    assert res.exit_code == 2 and res.output.count("\n") == 1 and "mode 0700" in res.output
    res = run(vault, "list")
    assert res.exit_code == 0 and "empty" in res.output and not vault.exists()
    res = run(vault, "show", "nope")
    assert res.exit_code == 2 and "no such file" in res.output
    vault.mkdir(mode=0o700)
    res = run(vault, "show", "nope")
    assert res.exit_code == 2 and "quarantine" in res.output
    res = run(vault, "restore", "../../etc")
    assert res.exit_code == 2
