"""Quarantine and restore with real files owned by a real user, and the attacks of issue 5 point 6."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest

from hoopctl.act.journal import Journal
from hoopctl.act.quarantine import (
    BLOB,
    QuarantinePolicy,
    Reason,
    Refused,
    Vault,
    VaultError,
    plan_quarantine,
)

pytestmark = pytest.mark.root

REASON = Reason(rule_id="generic-api-key", fingerprint="fp:1234abcd")
ROOT_DATA = b"root:$6$do-not-touch:19000:0:99999:7:::\n"


@pytest.fixture(scope="module")
def user():
    """A throwaway user (uid, gid) created with useradd, removed afterwards."""
    name = f"hq{uuid.uuid4().hex[:8]}"
    subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", name], check=True)
    try:
        pw = __import__("pwd").getpwnam(name)
        yield pw.pw_uid, pw.pw_gid, name
    finally:
        subprocess.run(["userdel", name], check=False)


@pytest.fixture
def tree(tmp_path: Path, user):
    """A user-owned directory (as in /home/NAME) inside a root-only test dir."""
    uid, gid, _ = user
    home = tmp_path / "home"
    home.mkdir()
    os.chown(home, uid, gid)
    return home


@pytest.fixture
def vault(tmp_path: Path):
    with Vault(tmp_path / "vault") as v:
        yield v


@pytest.fixture
def shm_vault():
    """A vault on another filesystem (tmpfs), so quarantine must copy."""
    root = Path(tempfile.mkdtemp(dir="/dev/shm", prefix="hoopctl-vault-"))
    try:
        with Vault(root / "vault") as v:
            yield v
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def root_file(tmp_path: Path) -> Path:
    """A root-owned, root-only file standing in for /etc/shadow."""
    p = tmp_path / "shadow"
    p.write_bytes(ROOT_DATA)
    os.chmod(p, 0o600)
    return p


def user_file(
    tree: Path, user, name: str | bytes = "token.txt", data: bytes = b"", mode: int = 0o640
) -> bytes:
    uid, gid, _ = user
    path = os.fsencode(tree) + b"/" + os.fsencode(name)
    data = data or b"AKIA" + os.urandom(64) + b"\n\x00binary\xff"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, data)
    os.close(fd)
    os.chown(path, uid, gid)
    os.chmod(path, mode)
    os.utime(path, ns=(1_600_000_000_123_456_789, 1_500_000_000_987_654_321))
    return path


def snapshot(path) -> tuple:
    st = os.stat(path, follow_symlinks=False)
    fd = os.open(path, os.O_RDONLY | os.O_NOATIME)  # reading must not change what we compare
    with os.fdopen(fd, "rb") as fh:
        data = fh.read()
    return (data, st.st_uid, st.st_gid, st.st_mode, st.st_mtime_ns, st.st_atime_ns, st.st_ino, st.st_nlink)


def vault_blobs(v: Vault) -> list[bytes]:
    root = os.fsdecode(v.root)
    out = []
    for entry in os.listdir(root):
        blob = os.path.join(root, entry, "blob")
        if os.path.lexists(blob):
            out.append(Path(blob).read_bytes() if not os.path.islink(blob) else b"<symlink>")
    return out


def assert_root_file_untouched(root_file: Path, before: tuple) -> None:
    assert snapshot(root_file) == before


# -- the happy path ------------------------------------------------------------


def test_quarantined_file_restores_identical(vault: Vault, tree: Path, user):
    path = user_file(tree, user, mode=0o640)
    before = snapshot(path)
    sha = hashlib.sha256(before[0]).hexdigest()

    m = vault.quarantine(path, REASON)

    assert not os.path.lexists(path)
    assert m.method == "rename" and m.sha256 == sha and m.size == len(before[0])
    assert (m.uid, m.gid, m.user, m.mode & 0o7777) == (user[0], user[1], user[2], 0o640)
    assert (m.mtime_ns, m.atime_ns) == (before[4], before[5])
    entry = Path(os.fsdecode(vault.root)) / m.id
    assert (entry / "blob").read_bytes() == before[0]
    on_disk = json.loads((entry / "manifest.json").read_text())
    assert on_disk["reason"] == {"rule_id": "generic-api-key", "fingerprint": "fp:1234abcd", "note": ""}
    assert os.stat(vault.root).st_mode & 0o777 == 0o700 and os.stat(vault.root).st_uid == 0

    restored = vault.restore(m.id)

    after = snapshot(path)
    assert after[:6] == before[:6]  # bytes, uid, gid, mode, mtime, atime
    assert hashlib.sha256(after[0]).hexdigest() == sha
    assert restored.restored and restored.restores[0].path == path
    assert (entry / "blob").read_bytes() == before[0]  # the entry is kept, nothing deleted
    assert vault.get(m.id).restored
    states = [(r.action, r.state) for r in vault.journal.records()]
    assert states == [
        ("quarantine", "started"),
        ("quarantine", "done"),
        ("restore", "started"),
        ("restore", "done"),
    ]


def test_quarantine_across_filesystems_copies_verifies_and_restores(shm_vault: Vault, tree: Path, user):
    path = user_file(tree, user, mode=0o600)
    before = snapshot(path)
    m = shm_vault.quarantine(path, REASON)
    assert m.method == "copy" and not os.path.lexists(path)
    assert vault_blobs(shm_vault) == [before[0]]
    shm_vault.restore(m.id)
    assert snapshot(path)[:6] == before[:6]


def test_unreadable_file_is_handled_as_root(vault: Vault, tree: Path, user):
    path = user_file(tree, user, mode=0o000)
    before = snapshot(path)
    m = vault.quarantine(path, REASON)
    vault.restore(m.id)
    assert snapshot(path)[:6] == before[:6]


def test_names_with_newlines_and_invalid_utf8_round_trip(vault: Vault, tree: Path, user):
    name = b"tok\nen \xff\xfe.env"
    path = user_file(tree, user, name=name)
    before = snapshot(path)
    m = vault.quarantine(path, REASON)
    assert m.path == path
    assert vault.get(m.id).path == path  # through manifest.json and back
    assert "\n" not in m.to_json()["path"]
    vault.restore(m.id)
    assert snapshot(path)[:6] == before[:6]
    assert name in os.listdir(os.fsencode(tree))


# -- refusals: nothing moves ---------------------------------------------------


def test_symlink_leaf_is_refused(vault: Vault, tree: Path, root_file: Path):
    before = snapshot(root_file)
    link = tree / "link"
    link.symlink_to(root_file)
    with pytest.raises(Refused, match="symlink"):
        vault.quarantine(link, REASON, QuarantinePolicy(refuse_root_owned=False))
    assert link.is_symlink() and vault.ids() == []
    assert_root_file_untouched(root_file, before)


def test_symlinked_parent_directory_is_refused(vault: Vault, tree: Path, user, tmp_path: Path):
    path = user_file(tree, user)
    alias = tmp_path / "alias"
    alias.symlink_to(tree)
    with pytest.raises(Refused, match="symlink"):
        vault.quarantine(alias / "token.txt", REASON)
    assert os.path.exists(path) and vault.ids() == []


def test_hard_link_to_root_file_is_refused(vault: Vault, tree: Path, root_file: Path):
    before = snapshot(root_file)
    link = tree / "looks-like-a-token"
    os.link(root_file, link)
    with pytest.raises(Refused, match="hard links"):
        vault.quarantine(link, REASON, QuarantinePolicy(refuse_root_owned=False))
    assert os.path.samefile(link, root_file) and vault.ids() == []
    os.unlink(link)
    assert_root_file_untouched(root_file, before)


def test_hard_link_to_etc_shadow_is_refused(vault: Vault, tree: Path):
    if os.stat("/etc/shadow").st_dev != os.stat(tree).st_dev:
        pytest.skip("/etc/shadow is on another filesystem")
    before = Path("/etc/shadow").read_bytes()
    link = tree / "shadow-link"
    os.link("/etc/shadow", link)
    try:
        with pytest.raises(Refused, match="hard links"):
            vault.quarantine(link, REASON, QuarantinePolicy(refuse_root_owned=False))
        assert vault.ids() == [] and Path("/etc/shadow").read_bytes() == before
    finally:
        os.unlink(link)


def test_root_owned_file_in_user_tree_is_refused_unless_policy_allows(vault: Vault, tree: Path):
    path = tree / "root-made"
    path.write_bytes(b"x")
    with pytest.raises(Refused, match="owned by root"):
        vault.quarantine(path, REASON)
    assert path.exists()
    m = vault.quarantine(path, REASON, QuarantinePolicy(refuse_root_owned=False))
    assert m.uid == 0 and not path.exists()


def test_owner_policy_limits_whose_files_move(vault: Vault, tree: Path, user):
    path = user_file(tree, user)
    with pytest.raises(Refused, match="not in the policy"):
        vault.quarantine(path, REASON, QuarantinePolicy(owners=frozenset({user[0] + 1})))
    assert os.path.exists(path)


@pytest.mark.timeout(10)
def test_fifo_and_socket_never_block_and_are_refused(vault: Vault, tree: Path, user):
    fifo = tree / "fifo"
    os.mkfifo(fifo)
    os.chown(fifo, user[0], user[1])
    with pytest.raises(Refused, match="FIFO"):
        vault.quarantine(fifo, REASON)
    assert plan_quarantine(fifo).refusal and "FIFO" in plan_quarantine(fifo).refusal
    sock_path = tree / "sock"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(sock_path))
        with pytest.raises(Refused, match="socket"):
            vault.quarantine(sock_path, REASON)
    assert fifo.exists() and sock_path.exists() and vault.ids() == []


def test_directory_is_refused(vault: Vault, tree: Path):
    with pytest.raises(Refused, match="directory"):
        vault.quarantine(tree, REASON, QuarantinePolicy(refuse_root_owned=False))


def test_file_changed_since_plan_is_refused(vault: Vault, tree: Path, user):
    path = user_file(tree, user)
    plan = plan_quarantine(path)
    assert plan.ok and plan.facts is not None
    with open(path, "ab") as fh:
        fh.write(b"more")
    with pytest.raises(Refused, match="changed since it was planned"):
        vault.quarantine(path, REASON, expect=plan.facts)
    assert os.path.exists(path) and vault.ids() == []
    assert [r.state for r in vault.journal.records()] == ["refused"]


# -- symlink swaps during handling ---------------------------------------------


def _swapper(path: bytes, target: Path, aside: bytes):
    def hook(stage: str, wanted: str) -> None:
        if stage == wanted:
            os.rename(path, aside)
            os.symlink(target, path)

    return hook


@pytest.mark.parametrize("stage", ["opened", "hashed", "before_rename"])
def test_symlink_swap_during_handling_never_moves_the_root_file(
    vault: Vault, tree: Path, user, root_file: Path, stage: str
):
    path = user_file(tree, user)
    data = snapshot(path)[0]
    before = snapshot(root_file)
    aside = os.fsencode(tree) + b"/aside"
    swap = _swapper(path, root_file, aside)
    with pytest.raises(Refused, match="replaced|swapped|changed"):
        vault.quarantine(path, REASON, hook=lambda s: swap(s, stage))
    assert os.path.islink(path) and os.readlink(path) == os.fsencode(root_file)  # put back as it was
    assert Path(os.fsdecode(aside)).read_bytes() == data  # the user's file is intact
    assert vault_blobs(vault) == [] and vault.ids() == []
    assert_root_file_untouched(root_file, before)
    assert [r.state for r in vault.journal.records()][-1] in ("failed", "refused")


def test_symlink_swap_before_unlink_across_filesystems_keeps_everything(
    shm_vault: Vault, tree: Path, user, root_file: Path
):
    path = user_file(tree, user)
    data = snapshot(path)[0]
    before = snapshot(root_file)
    aside = os.fsencode(tree) + b"/aside"
    swap = _swapper(path, root_file, aside)
    with pytest.raises(Refused, match="replaced"):
        shm_vault.quarantine(path, REASON, hook=lambda s: swap(s, "before_unlink"))
    assert os.path.islink(path) and Path(os.fsdecode(aside)).read_bytes() == data
    assert vault_blobs(shm_vault) == [] and shm_vault.ids() == []
    assert_root_file_untouched(root_file, before)


def test_racing_symlink_swapper_thread_never_wins(vault: Vault, tree: Path, user, root_file: Path):
    """A thread flips the name between the user's file and a symlink to a root file as fast as it can."""
    before = snapshot(root_file)
    stop = threading.Event()
    outcomes = {"done": 0, "refused": 0}
    datas = set()
    for round_ in range(30):
        path = user_file(tree, user, name=f"t{round_}")
        datas.add(snapshot(path)[0])
        link = os.fsencode(tree) + b"/link%d" % round_
        os.symlink(root_file, link)
        spare = os.fsencode(tree) + b"/spare%d" % round_

        pause = (round_ % 3) * 0.0005  # vary the timing so that some attempts win the race

        def flip(path=path, link=link, spare=spare, pause=pause):
            while not stop.is_set():
                try:
                    os.rename(path, spare)  # file aside
                    os.rename(link, path)  # symlink in
                    time.sleep(pause)
                    os.rename(path, link)  # symlink out
                    os.rename(spare, path)  # file back
                    time.sleep(pause)
                except FileNotFoundError:
                    return  # quarantined: the file is gone

        t = threading.Thread(target=flip)
        t.start()
        try:
            vault.quarantine(path, REASON)
            outcomes["done"] += 1
        except Refused:
            outcomes["refused"] += 1
        finally:
            stop.set()
            t.join()
            stop.clear()
    assert_root_file_untouched(root_file, before)
    blobs = vault_blobs(vault)
    for blob in blobs:
        assert blob in datas  # only user files ever reach the vault
    left = {p.read_bytes() for p in tree.iterdir() if p.is_file() and not p.is_symlink()}
    assert datas <= left | set(blobs)  # and every user file is somewhere: nothing lost
    assert outcomes["done"] == len(blobs) and outcomes["done"] + outcomes["refused"] == 30


# -- huge files ----------------------------------------------------------------


def test_huge_file_is_moved_by_rename_and_hashed_by_streaming(tmp_path: Path, tree: Path, user):
    """A 256 MiB sparse file: quarantined in a child process whose peak RSS must stay small."""
    path = tree / "huge.bin"
    with open(path, "wb") as fh:
        fh.truncate(256 << 20)
        fh.seek((256 << 20) - 6)
        fh.write(b"SECRET")
    os.chown(path, user[0], user[1])
    ino = os.stat(path).st_ino
    code = (
        "import resource, sys\n"
        "from hoopctl.act.quarantine import Vault, Reason\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "with Vault(sys.argv[1]) as v:\n"
        "    m = v.quarantine(sys.argv[2], Reason('r', 'f'))\n"
        "print(m.id, m.method, m.sha256, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "vault"), str(path)],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.split()
    # Growth, not the peak: a child's ru_maxrss starts from its (large) pytest parent's at fork.
    entry_id, method, sha, growth_kb = out[0], out[1], out[2], int(out[3])
    assert method == "rename"
    assert growth_kb < 64_000, f"peak RSS grew {growth_kb} kB: the file was read into memory"
    blob = tmp_path / "vault" / entry_id / "blob"
    assert os.stat(blob).st_ino == ino  # the same inode: moved, not copied
    digest = hashlib.sha256()
    with open(blob, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    assert digest.hexdigest() == sha


# -- restore refusals ----------------------------------------------------------


def test_restore_refuses_to_overwrite_and_can_go_elsewhere(vault: Vault, tree: Path, user):
    path = user_file(tree, user)
    data = snapshot(path)[0]
    m = vault.quarantine(path, REASON)
    Path(os.fsdecode(path)).write_bytes(b"new file by the user")
    with pytest.raises(Refused, match="exists; will not overwrite"):
        vault.restore(m.id)
    assert Path(os.fsdecode(path)).read_bytes() == b"new file by the user"
    other = tree / "restored.txt"
    vault.restore(m.id, to=other)
    assert other.read_bytes() == data and os.stat(other).st_uid == user[0]


def test_restore_refuses_a_symlink_at_the_target(vault: Vault, tree: Path, user, root_file: Path):
    path = user_file(tree, user)
    before = snapshot(root_file)
    m = vault.quarantine(path, REASON)
    os.symlink(root_file, path)
    with pytest.raises(Refused, match="exists"):
        vault.restore(m.id)
    assert_root_file_untouched(root_file, before)


def test_restore_refuses_a_symlinked_parent(vault: Vault, tree: Path, user, tmp_path: Path):
    path = user_file(tree, user)
    m = vault.quarantine(path, REASON)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.rename(tree, tmp_path / "moved-home")
    os.symlink(elsewhere, tree)
    with pytest.raises(Refused, match="parent directory"):
        vault.restore(m.id)
    assert os.listdir(elsewhere) == []
    with pytest.raises(Refused, match="parent directory"):
        vault.restore(m.id, to=tmp_path / "missing" / "x")


def test_restore_refuses_when_the_name_appears_during_restore(vault: Vault, tree: Path, user):
    path = user_file(tree, user)
    m = vault.quarantine(path, REASON)

    def hook(stage: str) -> None:
        if stage == "before_link":
            Path(os.fsdecode(path)).write_bytes(b"raced in")

    with pytest.raises(Refused, match="will not overwrite"):
        vault.restore(m.id, hook=hook)
    assert Path(os.fsdecode(path)).read_bytes() == b"raced in"
    assert sorted(os.listdir(tree)) == ["token.txt"]  # no temporary file left behind
    assert [r.state for r in vault.journal.records()][-1] == "failed"


def test_restore_refuses_a_tampered_blob(vault: Vault, tree: Path, user):
    path = user_file(tree, user)
    m = vault.quarantine(path, REASON)
    blob = Path(os.fsdecode(vault.root)) / m.id / os.fsdecode(BLOB)
    with open(blob, "ab") as fh:
        fh.write(b"tamper")
    with pytest.raises(Refused, match="sha256"):
        vault.restore(m.id)
    assert not os.path.lexists(path) and os.listdir(tree) == []


# -- the vault itself ----------------------------------------------------------


def test_vault_with_loose_mode_or_symlinked_path_is_refused(tmp_path: Path):
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o755)
    os.chmod(loose, 0o755)
    with pytest.raises(VaultError, match="mode 0700"):
        Vault(loose)
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    (tmp_path / "via-link").symlink_to(real)
    with pytest.raises(VaultError, match="symlink|not a directory"):
        Vault(tmp_path / "via-link")


def test_ids_are_validated_and_prefixes_resolve(vault: Vault, tree: Path, user):
    m = vault.quarantine(user_file(tree, user), REASON)
    assert vault.get(m.id[-8:]).id == m.id
    for bad in ("../../etc", "x", m.id + "/.."):
        with pytest.raises(VaultError):
            vault.get(bad)


# -- plan -> apply -> undo (what the offboarding sweep does) -------------------


def test_plan_apply_undo_is_one_journaled_action(vault: Vault, tree: Path, user):
    path = user_file(tree, user)
    before = snapshot(path)
    plan = vault.plan(path, REASON)
    assert plan.ok and plan.action_id and os.path.exists(path)  # planning changes nothing
    m = vault.apply(plan, REASON)
    assert m.id == plan.action_id and not os.path.lexists(path)
    assert [r.state for r in vault.journal.history(plan.action_id)] == ["planned", "started", "done"]
    vault.undo(m.id)
    assert snapshot(path)[:6] == before[:6]
    assert vault.journal.unfinished() == []


def test_applying_a_stale_plan_is_refused_under_the_plan_id(vault: Vault, tree: Path, user):
    path = user_file(tree, user)
    plan = vault.plan(path, REASON)
    os.unlink(path)
    user_file(tree, user)  # same name, another file
    with pytest.raises(Refused, match="changed since it was planned"):
        vault.apply(plan, REASON)
    assert [r.state for r in vault.journal.history(plan.action_id)] == ["planned", "refused"]
    refused = vault.plan(tree / "nothing-here", REASON)
    assert not refused.ok and refused.action_id is None
    with pytest.raises(Refused, match="no such file"):
        vault.apply(refused, REASON)


def test_journal_skips_a_torn_last_line_and_reports_unfinished_actions(vault: Vault, tree: Path, user):
    vault.quarantine(user_file(tree, user), REASON)
    started = vault.journal.start("quarantine", {"path": "/x"})
    with open(os.path.join(os.fsdecode(vault.root), "journal.jsonl"), "ab") as fh:
        fh.write(b'{"id": "torn", "act')  # power lost mid-line
    assert [r.id for r in vault.journal.unfinished()] == [started]
    assert len(list(vault.journal.records())) == 3


def test_a_manifest_lost_in_a_crash_is_rebuilt_from_the_journal(vault: Vault, tree: Path, user):
    path = user_file(tree, user)
    before = snapshot(path)
    m = vault.quarantine(path, REASON)
    (Path(os.fsdecode(vault.root)) / m.id / "manifest.json").write_bytes(b'{"trunc')  # torn by a crash
    assert vault.get(m.id).sha256 == m.sha256
    assert json.loads((Path(os.fsdecode(vault.root)) / m.id / "manifest.json").read_text())["id"] == m.id
    vault.restore(m.id)
    assert snapshot(path)[:6] == before[:6]


def test_parent_directory_swapped_for_a_symlink_mid_move_moves_only_the_inspected_file(
    vault: Vault, tree: Path, user, root_file: Path, tmp_path: Path
):
    """The held parent fd is used, not the name: the real file moves, the decoy dir is never read."""
    path = user_file(tree, user)
    data = snapshot(path)[0]
    before = snapshot(root_file)
    decoy = tmp_path / "decoy"
    decoy.mkdir()
    os.link(root_file, decoy / "token.txt")

    def hook(stage: str) -> None:
        if stage == "before_rename":
            os.rename(tree, tmp_path / "home-moved")
            os.symlink(decoy, tree)

    m = vault.quarantine(path, REASON, hook=hook)
    assert vault_blobs(vault) == [data]
    assert not (tmp_path / "home-moved" / "token.txt").exists()
    assert os.path.samefile(decoy / "token.txt", root_file)
    os.unlink(decoy / "token.txt")
    assert_root_file_untouched(root_file, before)
    with pytest.raises(Refused, match="parent directory"):  # and restore will not write through the symlink
        vault.restore(m.id)


def test_journal_lines_from_concurrent_processes_never_interleave(tmp_path: Path):
    state = tmp_path / "state"
    pids = []
    for writer in range(3):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            code = 0
            try:
                with Journal.at(state) as j:
                    for i in range(150):
                        j.write(f"w{writer}-{i}", "test", "started", {"pad": "x" * (50 * writer)})
            except BaseException:
                code = 1
            os._exit(code)
        pids.append(pid)
    assert all(os.waitpid(pid, 0)[1] == 0 for pid in pids)
    with Journal.at(state) as j:
        ids = [r.id for r in j.records()]
    assert len(ids) == 450 and len(set(ids)) == 450
    assert os.stat(state).st_mode & 0o777 == 0o700
    assert os.stat(state / "journal.jsonl").st_mode & 0o777 == 0o600
