"""A throwaway sshd on 127.0.0.1 with its own host key, plus disposable login users (tests and the demo; root).

    with ThrowawaySshd(workdir) as sshd:
        user = sshd.add_user()                  # useradd + unlocked + a fresh client key
        subprocess.run(sshd.ssh_command(user, "-N", "-f", "-L", "15432:127.0.0.1:5432"))
        ...
    # on exit: every process of the users is killed, the users removed, sshd stopped

Nothing here touches the system sshd or its config: the daemon reads only files under `workdir`.
"""

from __future__ import annotations

import logging
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import psutil

log = logging.getLogger(__name__)

SSHD = "/usr/sbin/sshd"


class SshdUnavailable(RuntimeError):
    """sshd or ssh-keygen is missing, or we are not root."""


@dataclass(frozen=True)
class SshUser:
    name: str
    uid: int
    key: Path  # private key of the client (owned by the caller)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bind port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, host: str = "127.0.0.1", timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s") from None
            time.sleep(0.02)


def kill_tree(pids: list[int] | set[int], timeout: float = 3.0) -> None:
    """SIGTERM then SIGKILL the given processes (by pid only; vanished ones are skipped).

    A killed process that is not our child stays a zombie until its reaper collects it (PID 1
    here can take a second): a zombie counts as gone.
    """
    procs = []
    for pid in pids:
        try:
            procs.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            continue
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in procs:
            try:
                p.send_signal(sig)
            except psutil.NoSuchProcess:
                pass
        deadline = time.monotonic() + timeout
        while procs and time.monotonic() < deadline:
            procs = [p for p in procs if _alive(p)]
            if procs:
                time.sleep(0.02)
        if not procs:
            return


def _alive(proc: psutil.Process) -> bool:
    try:
        proc.wait(timeout=0)  # reaps our own children
    except psutil.TimeoutExpired:
        pass
    except psutil.NoSuchProcess:
        return False
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class ThrowawaySshd:
    """A private sshd: start() on a free loopback port; add_user() for logins; stop() undoes everything."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.workdir = Path(workdir)
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.users: list[SshUser] = []
        self.keys_dir: Path | None = None
        self.config = self.workdir / "sshd_config"
        self.log = self.workdir / "sshd.log"

    # -- lifecycle

    def start(self) -> ThrowawaySshd:
        if os.geteuid() != 0:
            raise SshdUnavailable("a throwaway sshd needs root")
        for tool in (SSHD, "ssh-keygen", "ssh", "useradd", "userdel"):
            if not shutil.which(tool):
                raise SshdUnavailable(
                    f"{tool} is not installed (apt-get install openssh-server openssh-client)"
                )
        self.workdir.mkdir(parents=True, exist_ok=True)
        # sshd reads authorized keys as the login user: they live in a world-traversable
        # directory of their own, since `workdir` may sit under a root-only tree.
        self.keys_dir = Path(tempfile.mkdtemp(prefix="hoopctl-sshd-keys-"))
        self.keys_dir.chmod(0o755)
        host_key = self.workdir / "ssh_host_ed25519_key"
        if not host_key.exists():
            _keygen(host_key)
        self.config.write_text(
            "\n".join(
                [
                    f"HostKey {host_key}",
                    f"PidFile {self.workdir / 'sshd.pid'}",
                    f"AuthorizedKeysFile {self.keys_dir}/%u",
                    "UsePAM no",
                    "StrictModes no",
                    "PermitRootLogin no",
                    "PubkeyAuthentication yes",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "AllowTcpForwarding yes",
                    "AllowStreamLocalForwarding yes",
                    "GatewayPorts no",
                    "X11Forwarding no",
                    "PrintMotd no",
                    "MaxStartups 100",
                    "LogLevel VERBOSE",
                    "",
                ]
            )
        )
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation directory
        cmd = [
            SSHD,
            "-D",
            "-e",
            "-f",
            str(self.config),
            "-p",
            str(self.port),
            "-o",
            "ListenAddress=127.0.0.1",
        ]
        with open(self.log, "ab") as logf:
            self.proc = subprocess.Popen(cmd, stdout=logf, stderr=logf, stdin=subprocess.DEVNULL)
        try:
            wait_for_port(self.port)
        except TimeoutError:
            self.stop()
            raise SshdUnavailable(f"sshd did not start: {self.log.read_text()[-500:]}") from None
        return self

    def stop(self) -> None:
        """Kill sessions and clients of our users, remove the users, stop sshd. Safe to call twice."""
        for user in list(self.users):
            self.remove_user(user)
        if self.proc is not None:
            kill_tree({c.pid for c in _children(self.proc.pid)} | {self.proc.pid})
            self.proc.wait(timeout=5)
            self.proc = None
        if self.keys_dir is not None:
            shutil.rmtree(self.keys_dir, ignore_errors=True)
            self.keys_dir = None

    def __enter__(self) -> ThrowawaySshd:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- users

    def add_user(self, name: str | None = None) -> SshUser:
        """A new unlocked system user with a fresh client key authorised for this sshd only."""
        name = name or f"hoopt{secrets.token_hex(3)}"
        subprocess.run(
            ["useradd", "--no-create-home", "--home-dir", "/nonexistent", "--shell", "/bin/sh", name],
            check=True,
            capture_output=True,
        )
        try:
            # '*' is "no password", not locked ('!'): sshd lets key logins in.
            subprocess.run(["usermod", "-p", "*", name], check=True, capture_output=True)
            key = self.workdir / f"id_{name}"
            _keygen(key)
            assert self.keys_dir is not None, "start() the sshd before adding users"
            authorized = self.keys_dir / name
            authorized.write_text(Path(f"{key}.pub").read_text())
            authorized.chmod(0o644)
            user = SshUser(name, pwd.getpwnam(name).pw_uid, key)
        except Exception:
            subprocess.run(["userdel", name], check=False, capture_output=True)
            raise
        self.users.append(user)
        return user

    def remove_user(self, user: SshUser) -> None:
        kill_tree(
            {
                p.pid
                for p in psutil.process_iter(["uids"])
                if p.info["uids"] and p.info["uids"].real == user.uid
            }
        )
        subprocess.run(["userdel", user.name], check=False, capture_output=True)
        if self.keys_dir is not None:
            (self.keys_dir / user.name).unlink(missing_ok=True)
        if user in self.users:
            self.users.remove(user)

    # -- clients

    def client_options(self, user: SshUser) -> list[str]:
        """Options for an ssh client that logs in as `user` without prompts or known_hosts."""
        return [
            "-p",
            str(self.port),
            "-i",
            str(user.key),
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "LogLevel=ERROR",
            "-o",
            "IdentitiesOnly=yes",
        ]

    def ssh_command(self, user: SshUser, *args: str) -> list[str]:
        """`ssh <our options> <args...> user@127.0.0.1`."""
        return ["ssh", *self.client_options(user), *args, f"{user.name}@127.0.0.1"]

    def client_config(self, user: SshUser, host_alias: str, *extra_lines: str) -> str:
        """An ssh_config text for `ssh -F FILE host_alias` (forwards go in `extra_lines`)."""
        lines = [
            f"Host {host_alias}",
            "  HostName 127.0.0.1",
            f"  Port {self.port}",
            f"  User {user.name}",
            f"  IdentityFile {user.key}",
            "  IdentitiesOnly yes",
            "  StrictHostKeyChecking no",
            "  UserKnownHostsFile /dev/null",
            "  BatchMode yes",
            "  LogLevel ERROR",
            *(f"  {line}" for line in extra_lines),
            "",
        ]
        return "\n".join(lines)


def _keygen(path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "hoopctl-test", "-f", str(path)],
        check=True,
        capture_output=True,
    )


def _children(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
