"""Fixtures for the agent's tests with real things: a throwaway sshd, a login user, spawned processes.

Everything started here is killed at teardown by pid, even when a test fails; users are removed.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence

import psutil
import pytest

from hoopctl.testing.sshd import SshdUnavailable, SshUser, ThrowawaySshd, kill_tree


def _need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (CI runs as root)")


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThrowawaySshd]:
    """A private sshd on 127.0.0.1 for this module; stopped (users removed) at module end."""
    _need_root()
    workdir = tmp_path_factory.mktemp("sshd")
    server = ThrowawaySshd(workdir)
    try:
        server.start()
    except SshdUnavailable as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(str(exc))
    try:
        yield server
    finally:
        # any client we started carries a path under workdir in its argv (key, config, control path)
        kill_tree(_pids_mentioning(str(workdir)))
        server.stop()


@pytest.fixture(scope="module")
def ssh_user(sshd: ThrowawaySshd) -> SshUser:
    return sshd.add_user()


def _pids_mentioning(text: str) -> set[int]:
    own = os.getpid()
    out = set()
    for p in psutil.process_iter(["cmdline"]):
        if p.pid != own and any(text in a for a in p.info["cmdline"] or ()):
            out.add(p.pid)
    return out


class Spawner:
    """Starts processes for one test and remembers every pid (and the pids below them) to kill later."""

    def __init__(self) -> None:
        self.pids: set[int] = set()
        self.popens: list[subprocess.Popen[bytes]] = []

    def popen(self, cmd: Sequence[str], **kwargs) -> subprocess.Popen[bytes]:
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        kwargs.setdefault("stdout", subprocess.DEVNULL)
        kwargs.setdefault("stderr", subprocess.DEVNULL)
        proc = subprocess.Popen(list(cmd), start_new_session=True, **kwargs)
        self.popens.append(proc)
        self.pids.add(proc.pid)
        return proc

    def background(self, cmd: Sequence[str], timeout: float = 15.0, **kwargs) -> int:
        """Run a command that daemonizes (`ssh -f`, `autossh -f`) and return the pid it left behind."""
        before = {p.pid for p in psutil.process_iter()}
        result = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, **kwargs)
        assert result.returncode == 0, f"{cmd} failed: {result.stderr}"
        return self.wait_for(lambda p: tuple(p.cmdline()) == tuple(cmd) and p.pid not in before)

    def wait_for(self, match: Callable[[psutil.Process], bool], timeout: float = 5.0) -> int:
        """The pid of a new process matching `match` (tracked for cleanup)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for p in psutil.process_iter():
                try:
                    if match(p):
                        self.pids.add(p.pid)
                        return p.pid
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
            time.sleep(0.02)
        raise AssertionError("the expected process never appeared")

    def track(self, pid: int) -> None:
        self.pids.add(pid)

    def cleanup(self) -> None:
        everything = set(self.pids)
        for pid in self.pids:
            try:
                everything |= {c.pid for c in psutil.Process(pid).children(recursive=True)}
            except psutil.NoSuchProcess:
                pass
        kill_tree(everything)
        for proc in self.popens:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass


@pytest.fixture
def spawn() -> Iterator[Spawner]:
    spawner = Spawner()
    try:
        yield spawner
    finally:
        spawner.cleanup()
