"""The walker never follows symlinks, never blocks on special files, and counts what it skips."""

from __future__ import annotations

import os
import pickle
import pwd
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from hoopctl.host.safefs import Walker, WalkError, printable
from hoopctl.host.scan import scan_paths

TOKEN = (
    "ghp_" + "zQWBuTSOoRi4A9spHcVY5ncnsDkxkJ" + "0mLq17"
)  # valid checksum, split so this file is not a finding


def read_all(root: Path, **kw) -> tuple[dict[str, bytes], Walker]:
    w = Walker(**kw)
    return {item.path: item.data for item in w.walk(str(root))}, w


def test_symlinks_out_of_and_inside_the_tree_are_not_followed(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.env").write_text(f"GITHUB_TOKEN={TOKEN}\n")
    tree = tmp_path / "tree"
    (tree / "real").mkdir(parents=True)
    (tree / "real" / "notes.txt").write_text("nothing here\n")
    (tree / "to-outside-file").symlink_to(outside / "secret.env")
    (tree / "to-outside-dir").symlink_to(outside)
    (tree / "to-inside-dir").symlink_to(tree / "real")
    (tree / "to-inside-file").symlink_to(tree / "real" / "notes.txt")
    (tree / "dangling").symlink_to(tmp_path / "nowhere")
    files, w = read_all(tree)
    assert list(files) == [f"{tree}/real/notes.txt"]
    assert w.counters.symlinks_skipped == 5
    result = scan_paths([tree])
    assert result.findings == []


def test_symlink_given_as_the_starting_path_is_not_followed(tmp_path):
    (tmp_path / "secret.env").write_text(f"GITHUB_TOKEN={TOKEN}\n")
    (tmp_path / "link").symlink_to(tmp_path / "secret.env")
    result = scan_paths([tmp_path / "link"])
    assert result.findings == []
    assert result.stats.symlinks_skipped == 1
    (tmp_path / "dirlink").symlink_to(tmp_path)
    result = scan_paths([f"{tmp_path}/dirlink/"])  # a trailing slash would make the kernel follow it
    assert result.findings == []
    assert result.stats.symlinks_skipped == 1


def test_fifo_socket_and_device_never_block(tmp_path):
    import socket

    os.mkfifo(tmp_path / "fifo")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "sock"))
    (tmp_path / "ok.txt").write_text("hello\n")
    # A separate process, so a blocking open would hit the timeout instead of hanging the suite.
    code = textwrap.dedent(
        f"""
        import pickle, sys
        from hoopctl.host.safefs import Walker
        w = Walker()
        files = [i.path for i in w.walk({str(tmp_path)!r})]
        files += [i.path for i in w.walk({str(tmp_path / "fifo")!r})]
        sys.stdout.buffer.write(pickle.dumps((files, w.counters)))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=20, check=True).stdout
    files, counters = pickle.loads(out)
    sock.close()
    assert files == [f"{tmp_path}/ok.txt"]
    assert counters.skipped_special == 3


def test_huge_file_is_skipped_and_counted(tmp_path):
    big = tmp_path / "huge.log"
    with open(big, "wb") as fh:
        fh.write(f"GITHUB_TOKEN={TOKEN}\n".encode())
        fh.truncate(11 * 1024 * 1024)  # sparse: no 11 MiB written to disk
    (tmp_path / "small.txt").write_text("x\n")
    result = scan_paths([tmp_path])
    assert result.stats.skipped_large == 1
    assert result.stats.files_scanned == 1
    assert result.findings == []
    assert scan_paths([tmp_path], max_file_size=12 * 1024 * 1024).stats.skipped_large == 0


def test_binary_file_is_skipped_but_utf16_text_is_scanned(tmp_path):
    (tmp_path / "blob.bin").write_bytes(b"\x7fELF\x02\x01\x00\x00" + f"GITHUB_TOKEN={TOKEN}\n".encode())
    (tmp_path / "win.txt").write_bytes(f"line one\r\nGITHUB_TOKEN={TOKEN}\r\n".encode("utf-16"))
    result = scan_paths([tmp_path])
    assert result.stats.skipped_binary == 1
    assert [(Path(f.path).name, f.line) for f in result.findings] == [("win.txt", 2)]


def _walk_as_nobody(tree: Path) -> tuple[list[str], object]:
    """Walk `tree` in a forked child that dropped to `nobody` (root reads anything)."""
    nobody = pwd.getpwnam("nobody").pw_uid
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(nobody)
            os.setuid(nobody)
            wk = Walker()
            payload = ([i.path for i in wk.walk(str(tree))], wk.counters)
        except BaseException as exc:
            payload = ("error", repr(exc))
        os.write(w, pickle.dumps(payload))
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as fh:
        result = pickle.loads(fh.read())
    os.waitpid(pid, 0)
    assert result[0] != "error", result
    return result


def test_unreadable_file_is_counted_not_fatal():
    # Not under tmp_path: its parents are private to root, and `nobody` must reach the tree.
    top = Path(tempfile.mkdtemp(prefix="hoopctl-scan-"))
    try:
        top.chmod(0o755)
        (top / "locked.env").write_text(f"GITHUB_TOKEN={TOKEN}\n")
        (top / "locked-dir").mkdir()
        (top / "open.txt").write_text("fine\n")
        os.chmod(top / "locked.env", 0o000)
        os.chmod(top / "locked-dir", 0o000)
        if os.geteuid() == 0:
            paths, counters = _walk_as_nobody(top)
        else:
            wk = Walker()
            paths, counters = [i.path for i in wk.walk(str(top))], wk.counters
        assert paths == [f"{top}/open.txt"]
        assert counters.unreadable == 2
        assert counters.errors == 0
    finally:
        os.chmod(top / "locked-dir", 0o700)
        shutil.rmtree(top)


def test_names_with_newlines_and_invalid_utf8_are_read_and_printed_escaped(tmp_path):
    raw = os.fsencode(tmp_path) + b"/bad\xffname\nx.env"
    fd = os.open(raw, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, f"GITHUB_TOKEN={TOKEN}\n".encode())
    os.close(fd)
    result = scan_paths([tmp_path])
    assert len(result.findings) == 1
    f = result.findings[0]
    assert os.fsencode(f.path) == raw  # lossless
    shown = printable(f.path)
    assert "\n" not in shown and shown.endswith("/bad\\xffname\\nx.env")


def test_excludes_match_basenames_and_relative_paths(tmp_path):
    for rel in (
        "a/keep.txt",
        "a/skip.log",
        "srv/app/config/x.txt",
        "srv/app/src/y.txt",
        ".git/objects/ab/cd",
        ".git/config",
    ):
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("x\n")
    files, w = read_all(tmp_path, excludes=("*.log", "srv/*/config", ".git/objects"))
    assert sorted(Path(p).relative_to(tmp_path).as_posix() for p in files) == [
        ".git/config",
        "a/keep.txt",
        "srv/app/src/y.txt",
    ]
    assert w.counters.excluded == 3


def test_missing_starting_path_is_one_clear_error(tmp_path):
    with pytest.raises(WalkError, match="no such file or directory"):
        scan_paths([tmp_path, tmp_path / "missing"])


def test_workers_split_the_tree_without_overlap(host_tree):
    one = scan_paths([host_tree.root], jobs=1)
    three = scan_paths([host_tree.root], jobs=3)
    assert one.findings == three.findings
    for name in ("files_scanned", "bytes_scanned", "dirs_scanned", "skipped_binary", "symlinks_skipped"):
        assert getattr(one.stats, name) == getattr(three.stats, name), name


def test_descriptors_are_released_when_a_walk_stops_early(tmp_path):
    for i in range(5):
        (tmp_path / f"d{i}" / "e").mkdir(parents=True)
        (tmp_path / f"d{i}" / "e" / "f.txt").write_text("x\n")
    before = len(os.listdir("/proc/self/fd"))
    it = Walker().walk(str(tmp_path))
    next(it)
    it.close()
    assert len(os.listdir("/proc/self/fd")) == before


def test_directory_swapped_for_a_symlink_after_listing_is_not_entered(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.env").write_text(f"GITHUB_TOKEN={TOKEN}\n")
    tree = tmp_path / "tree"
    (tree / "zz-later").mkdir(parents=True)
    (tree / "zz-later" / "ok.txt").write_text("x\n")
    (tree / "aa-first.txt").write_text("x\n")
    w = Walker()
    it = w.walk(str(tree))
    first = next(it)  # the top directory is listed: zz-later is known as a directory
    assert first.path.endswith("aa-first.txt")
    shutil.rmtree(tree / "zz-later")
    (tree / "zz-later").symlink_to(outside)  # the attacker's swap, between listing and opening
    rest = [i.path for i in it]
    assert rest == []
    assert w.counters.symlinks_skipped == 1


def test_file_swapped_for_a_symlink_or_fifo_after_listing_is_not_read(tmp_path):
    outside = tmp_path / "outside.env"
    outside.write_text(f"GITHUB_TOKEN={TOKEN}\n")
    tree = tmp_path / "tree"
    tree.mkdir()
    for name in ("a.txt", "b.txt", "c.txt"):
        (tree / name).write_text("x\n")
    w = Walker()
    names = [e.name for e in os.scandir(tree)]  # the order the walker will see
    it = w.walk(str(tree))
    next(it)  # the listing is taken; two files are still to be opened
    (tree / names[1]).unlink()
    (tree / names[1]).symlink_to(outside)
    (tree / names[2]).unlink()
    os.mkfifo(tree / names[2])
    rest = [i.path for i in it]
    assert rest == []
    assert w.counters.symlinks_skipped == 1
    assert w.counters.skipped_special == 1


def test_pseudo_filesystems_are_recognised_from_mountinfo():
    from hoopctl.host.safefs import _pseudo_devices

    assert os.stat("/proc").st_dev in _pseudo_devices()


def test_overlapping_starting_paths_report_each_finding_once(tmp_path):
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "x.env").write_text(f"GITHUB_TOKEN={TOKEN}\n")
    result = scan_paths([tmp_path, tmp_path / "app", tmp_path / "app" / "x.env"])
    assert len(result.findings) == 1
