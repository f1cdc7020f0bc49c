"""A user swaps a parent directory for a symlink to a root-only tree while the root agent handles it.

The swap happens at the worst moment: right after the agent has checked the path (opened it with
`pathfd.open_dir`, no symlink on the way) and before it reads anything. The root-only tree has the
same layout as the user's, with a credential where the user's files would be: if any part of the
agent resolved the path again, it would read, log and quarantine root's secret.
"""

from __future__ import annotations

import os
import pwd
import shutil
import threading
import time
from pathlib import Path

import pytest

from hoopctl.agent.config import parse_config
from hoopctl.agent.daemon import Agent
from hoopctl.config import Section
from hoopctl.host import pathfd

pytestmark = pytest.mark.root

NOBODY = pwd.getpwnam("nobody")
ROOT_TOKEN = "glpat-" + "R00tOnlyS3cretXyz9Qw"
USER_TOKEN = "glpat-" + "Us3rPlantedTok3nAb7K"


@pytest.fixture
def layout(tmp_path: Path):
    """area/home (nobody's) /proj/new/.env holds the user's token; secret/ (root, 0700) mirrors it."""
    area = tmp_path / "area"
    new = area / "home" / "proj" / "new"
    new.mkdir(parents=True)
    (new / ".env").write_text(f"GITLAB_TOKEN={USER_TOKEN}\n")
    for p in (area / "home", area / "home" / "proj", new, new / ".env"):
        os.chown(p, NOBODY.pw_uid, NOBODY.pw_gid)
    os.chmod(area, 0o1777)  # a shared directory: nobody may rename home and plant a symlink

    secret = tmp_path / "secret"
    (secret / "proj" / "new").mkdir(parents=True)
    os.chmod(secret, 0o700)
    target = secret / "proj" / "new" / ".env"
    target.write_text(f"ROOT_TOKEN={ROOT_TOKEN}\n")
    os.chmod(target, 0o600)

    cfg = parse_config(
        Section(
            {
                "files": {"watch": [str(area)]},
                "processes": {"enabled": False},
                "vault": str(tmp_path / "vault"),
                "state_dir": str(tmp_path / "state"),
            },
            file="t.yaml",
        )
    )
    agent = Agent(cfg, apply=True)
    read: list[bytes] = []
    real_scan = agent.detector.scan

    def scan(data: bytes, path: str):  # everything the agent reads passes the detector
        read.append(data)
        return real_scan(data, path)

    agent.detector.scan = scan  # type: ignore[method-assign]

    def swap() -> None:
        # what the user does (as nobody would: rename inside the sticky dir, then plant the link)
        os.rename(area / "home", area / "home.old")
        os.symlink(secret, area / "home")

    yield agent, new, target, read, swap, tmp_path
    shutil.rmtree(tmp_path / "vault", ignore_errors=True)


def _assert_root_tree_untouched(target: Path, read: list[bytes], caplog, vault: Path) -> None:
    assert target.read_text() == f"ROOT_TOKEN={ROOT_TOKEN}\n"  # not moved
    assert not any(ROOT_TOKEN.encode() in d for d in read)  # not read
    logged = "\n".join(f"{r.getMessage()} {getattr(r, 'agent_fields', '')}" for r in caplog.records)
    assert ROOT_TOKEN[:10] not in logged and "ROOT_TOKEN" not in logged  # no preview, no name
    stored = [p for p in vault.rglob("*") if p.is_file()] if vault.exists() else []
    assert not any(ROOT_TOKEN.encode() in p.read_bytes() for p in stored)


@pytest.mark.parametrize("job", ["dir", "tree"])
def test_parent_swapped_after_the_check_never_leads_a_rescan_into_a_root_tree(
    layout, monkeypatch, caplog, job
):
    agent, new, target, read, swap, tmp = layout
    caplog.set_level("DEBUG")
    real_open_dir = pathfd.open_dir
    swapped: list[int] = []

    def open_then_swap(path):
        fd = real_open_dir(path)  # the check passed: no symlink on the way
        if not swapped:
            swap()  # ... and now the parent is a symlink to root's tree
            swapped.append(fd)
        return fd

    monkeypatch.setattr(pathfd, "open_dir", open_then_swap)
    # a new directory's rescan, or an overflow/unwatched-tree rescan of the whole root
    start = str(new) if job == "dir" else str(new.parent)
    agent._walk(agent._walker(), start)
    assert swapped, "the hook never ran"
    _assert_root_tree_untouched(target, read, caplog, tmp / "vault")
    # the walk did run, on the directory that was checked (now home.old): the user's token was read
    assert any(USER_TOKEN.encode() in d for d in read)


def test_parent_swapped_before_a_file_check_is_refused(layout, caplog):
    agent, new, target, read, swap, tmp = layout
    caplog.set_level("DEBUG")
    swap()
    agent._check_file(str(new / ".env"))  # the event named the old path; it now leads to root's file
    _assert_root_tree_untouched(target, read, caplog, tmp / "vault")
    assert read == []


def test_a_user_flipping_the_parent_in_a_loop_never_leads_the_agent_into_the_root_tree(layout, caplog):
    """A racing thread instead of a hook: the parent flips between the real tree and the symlink."""
    agent, new, target, read, _swap, tmp = layout
    caplog.set_level("DEBUG")
    area = new.parent.parent.parent
    home, aside = area / "home", area / "home.real"
    stop = threading.Event()
    flips = [0]

    def flip() -> None:
        while not stop.is_set():
            os.rename(home, aside)
            os.symlink(target.parent.parent.parent, home)
            os.unlink(home)
            os.rename(aside, home)
            flips[0] += 1

    racer = threading.Thread(target=flip, daemon=True)
    racer.start()
    try:
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            agent._walk(agent._walker(), str(new))  # a new directory's rescan
            agent._walk(agent._walker(), str(new.parent))  # an overflow or unwatched-tree rescan
            agent._check_file(str(new / ".env"))  # a file event
    finally:
        stop.set()
        racer.join(timeout=5)
    assert flips[0] > 100, "the race never really ran"
    _assert_root_tree_untouched(target, read, caplog, tmp / "vault")
    assert any(USER_TOKEN.encode() in d for d in read)  # the real tree was read meanwhile
