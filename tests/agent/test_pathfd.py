"""pathfd: no symlink followed anywhere in a path, FIFOs never block, bytes names round-trip."""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path

import pytest

from hoopctl.host import pathfd
from hoopctl.host.pathfd import UnsafePath


def test_components_refuse_relative_paths_and_dotdot():
    assert pathfd.components("/a//b/./c/") == [b"a", b"b", b"c"]
    with pytest.raises(UnsafePath, match="absolute"):
        pathfd.components("a/b")
    with pytest.raises(UnsafePath, match=r"'\.\.'"):
        pathfd.components("/a/../etc/shadow")


def test_open_leaf_returns_parent_fd_name_fd_and_stat(tmp_path: Path):
    f = tmp_path / "f"
    f.write_bytes(b"hello")
    with pathfd.open_leaf(f) as leaf:
        assert leaf.name == b"f" and leaf.is_regular
        assert os.pread(leaf.fd, 10, 0) == b"hello"
        assert os.path.samestat(os.fstat(leaf.parent_fd), os.stat(tmp_path))
        assert pathfd.same_inode(leaf.stat, os.stat(f))
        assert leaf.name_still_here()
        os.rename(f, tmp_path / "g")
        assert not leaf.name_still_here()


def test_symlink_leaf_is_refused(tmp_path: Path):
    (tmp_path / "target").write_bytes(b"x")
    (tmp_path / "link").symlink_to(tmp_path / "target")
    with pytest.raises(UnsafePath, match="symlink") as info:
        pathfd.open_leaf(tmp_path / "link")
    assert info.value.errno == errno.ELOOP


def test_symlink_anywhere_in_the_path_is_refused(tmp_path: Path):
    real = tmp_path / "real" / "sub"
    real.mkdir(parents=True)
    (real / "f").write_bytes(b"x")
    (tmp_path / "alias").symlink_to(tmp_path / "real")
    for path in (tmp_path / "alias" / "sub" / "f", tmp_path / "alias" / "sub"):
        with pytest.raises(UnsafePath, match="symlink|not a directory"):
            pathfd.open_leaf(path)
    with pytest.raises(UnsafePath):
        pathfd.open_dir(tmp_path / "alias" / "sub")
    with pytest.raises(UnsafePath, match="no such"):
        pathfd.open_leaf(tmp_path / "missing" / "f")


@pytest.mark.timeout(10)
def test_fifo_socket_are_not_opened_for_reading_and_never_block(tmp_path: Path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pathfd.open_leaf(fifo) as leaf:
        assert not leaf.is_regular and pathfd.kind(leaf.stat) == "FIFO"
        with pytest.raises(OSError):
            os.read(leaf.fd, 1)  # an O_PATH handle: nothing can be read through it
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(tmp_path / "sock"))
        with pathfd.open_leaf(tmp_path / "sock") as leaf:
            assert pathfd.kind(leaf.stat) == "socket"


def test_bytes_names_with_newlines_and_invalid_utf8(tmp_path: Path):
    name = b"a\nb\xff"
    path = os.fsencode(tmp_path) + b"/" + name
    with open(path, "wb") as fh:
        fh.write(b"x")
    with pathfd.open_leaf(path) as leaf:
        assert leaf.name == name and leaf.path == path
    shown = pathfd.display(path)
    assert "\n" not in shown and "\\n" in shown and "\\xff" in shown
    assert pathfd.display(os.fsdecode(path)) == shown  # a surrogate-escaped str path is the same bytes


def test_ensure_dir_creates_with_mode_and_refuses_symlinks(tmp_path: Path):
    fd = pathfd.ensure_dir(tmp_path / "a" / "b", 0o700)
    try:
        assert os.fstat(fd).st_mode & 0o777 == 0o700
    finally:
        os.close(fd)
    (tmp_path / "l").symlink_to(tmp_path / "a")
    with pytest.raises(UnsafePath):
        pathfd.ensure_dir(tmp_path / "l" / "c")
    assert not (tmp_path / "a" / "c").exists()


def test_rename_noreplace_never_overwrites(tmp_path: Path):
    (tmp_path / "src").write_bytes(b"new")
    (tmp_path / "dst").write_bytes(b"old")
    fd = pathfd.open_dir(tmp_path)
    try:
        with pytest.raises(FileExistsError):
            pathfd.rename_noreplace(fd, b"src", fd, b"dst")
        assert (tmp_path / "dst").read_bytes() == b"old"
        pathfd.rename_noreplace(fd, b"src", fd, b"fresh")
        assert (tmp_path / "fresh").read_bytes() == b"new" and not (tmp_path / "src").exists()
    finally:
        os.close(fd)
