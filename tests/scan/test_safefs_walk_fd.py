"""`Walker.walk_fd`: a walk that starts from a directory the caller opened, never from a name."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hoopctl.host.safefs import Walker, WalkError


def test_walk_fd_reads_the_opened_directory_even_after_its_path_is_swapped_for_a_symlink(tmp_path: Path):
    tree = tmp_path / "parent" / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "a.txt").write_text("mine\n")
    elsewhere = tmp_path / "elsewhere" / "tree" / "sub"
    elsewhere.mkdir(parents=True)
    (elsewhere / "a.txt").write_text("not mine\n")
    fd = os.open(tree, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        (tmp_path / "parent").rename(tmp_path / "moved")
        (tmp_path / "parent").symlink_to(tmp_path / "elsewhere")  # the path now leads elsewhere
        got = {item.path: item.data for item in Walker().walk_fd(fd, str(tree))}
        assert got == {f"{tree}/sub/a.txt": b"mine\n"}
        os.fstat(fd)  # still the caller's: not closed by the walk
    finally:
        os.close(fd)


def test_walk_fd_releases_its_descriptors_and_refuses_a_file(tmp_path: Path):
    for i in range(5):
        (tmp_path / f"d{i}").mkdir()
        (tmp_path / f"d{i}" / "f").write_text("x\n")
    before = len(os.listdir("/proc/self/fd"))
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        it = Walker().walk_fd(fd, str(tmp_path))
        next(it)
        it.close()  # stopped early: every descriptor it opened is closed
        assert len(os.listdir("/proc/self/fd")) == before + 1
    finally:
        os.close(fd)
    ffd = os.open(tmp_path / "d0" / "f", os.O_RDONLY)
    try:
        with pytest.raises(WalkError):
            list(Walker().walk_fd(ffd, "f"))
    finally:
        os.close(ffd)
