"""The real agent daemon as a subprocess: sd_notify, inotify, quarantine, tricks, orphans, tunnels, signals.

Each daemon runs `python -m hoopctl.cli agent run` with a fake NOTIFY_SOCKET (a datagram socket
read here) and its JSON log lines on stdout. Files are dropped by `nobody` into a shared sticky
directory, like a token left in /tmp. Tunnel and orphan actions are scoped to what these tests
start (a target port, a throwaway user), so other processes on the host are only ever reported.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import string
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.root

NOBODY = pwd.getpwnam("nobody")
ALNUM = string.ascii_letters + string.digits


def token() -> str:
    return "glpat-" + "".join(secrets.choice(ALNUM) for _ in range(20))


def as_user(fn: Callable[[], None], uid: int = NOBODY.pw_uid, gid: int = NOBODY.pw_gid) -> None:
    """Run `fn` in a forked child with the given ids (a real unprivileged user doing the deed)."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            fn()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def drop(path: Path, text: str) -> None:
    """Write a file as nobody, the way an editor or `echo >` would."""

    def write() -> None:
        with open(path, "w") as f:
            f.write(text)

    as_user(write)


class Daemon:
    """A running `hoopctl agent run` with its log events and sd_notify messages collected."""

    def __init__(self, workdir: Path, config: dict, *, apply: bool) -> None:
        self.workdir = workdir
        self.config_path = workdir / "agent.yaml"
        self.write_config(config)
        self.notify_path = workdir / "notify.sock"
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(self.notify_path))
        self.notify.settimeout(0.2)
        self.events: list[dict] = []
        self.notes: list[str] = []
        self.stderr = b""
        self._cond = threading.Condition()
        env = dict(os.environ, NOTIFY_SOCKET=str(self.notify_path), WATCHDOG_USEC="400000")
        env.pop("WATCHDOG_PID", None)
        cmd = [sys.executable, "-m", "hoopctl.cli", "agent", "run", "--config", str(self.config_path)]
        self.proc = subprocess.Popen(
            cmd + (["--apply"] if apply else []),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
        self._threads = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_notify, daemon=True),
        ]
        for t in self._threads:
            t.start()

    def write_config(self, config: dict) -> None:
        self.config_path.write_text(json.dumps(config))  # JSON is YAML

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            try:
                ev = json.loads(raw)
            except ValueError:
                ev = {"event": "unparsed", "raw": raw.decode(errors="replace")}
            with self._cond:
                self.events.append(ev)
                self._cond.notify_all()

    def _read_notify(self) -> None:
        while True:
            try:
                msg = self.notify.recv(4096).decode()
            except TimeoutError:
                if self.proc.poll() is not None:
                    return
                continue
            except OSError:
                return
            with self._cond:
                self.notes.append(msg)
                self._cond.notify_all()

    def wait_event(self, pred: Callable[[dict], bool], timeout: float = 10.0) -> dict:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for ev in self.events:
                    if pred(ev):
                        return ev
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None and not self._threads[0].is_alive():
                    raise AssertionError(
                        f"no such event; last events: {self.events[-8:]}; stderr: {self.stderr_text()}"
                    )
                self._cond.wait(min(left, 0.1))

    def wait_note(self, pred: Callable[[str], bool], timeout: float = 15.0) -> str:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for n in self.notes:
                    if pred(n):
                        return n
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"no such notification; got {self.notes[-5:]}; events {self.events[-5:]}"
                    )
                self._cond.wait(min(left, 0.1))

    def events_named(self, name: str) -> list[dict]:
        with self._cond:
            return [e for e in self.events if e.get("event") == name]

    def action_for(self, path: Path, timeout: float = 10.0) -> dict:
        return self.wait_event(lambda e: e.get("event") == "action" and e.get("path") == str(path), timeout)

    def stderr_text(self) -> str:
        return self.stderr.decode(errors="replace")[-2000:]

    def terminate(self, timeout: float = 10.0) -> tuple[int, float]:
        started = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        elapsed = time.monotonic() - started
        for t in self._threads:
            t.join(timeout=2)
        if self.proc.stderr is not None:
            self.stderr = self.proc.stderr.read()
        self.notify.close()
        return rc, elapsed


@pytest.fixture(scope="module")
def area() -> Iterator[Path]:
    """A scratch tree under /tmp that nobody can reach: shared/ is sticky and world-writable."""
    top = Path(tempfile.mkdtemp(prefix="hoopctl-agent-test-", dir="/tmp"))
    os.chmod(top, 0o755)
    try:
        yield top
    finally:
        shutil.rmtree(top, ignore_errors=True)


def shared_dir(base: Path, name: str) -> Path:
    d = base / name
    d.mkdir()
    os.chmod(d, 0o1777)
    return d


@pytest.fixture(scope="module")
def ci_user() -> Iterator[pwd.struct_passwd]:
    name = f"hcag{uuid.uuid4().hex[:8]}"
    subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", name], check=True)
    try:
        yield pwd.getpwnam(name)
    finally:
        uid = pwd.getpwnam(name).pw_uid
        for _ in range(50):  # userdel refuses while a process of the user is still there
            subprocess.run(["pkill", "-KILL", "-U", str(uid)], check=False)
            if subprocess.run(["userdel", name], check=False, capture_output=True).returncode == 0:
                break
            time.sleep(0.1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ports() -> dict[str, int]:
    return {
        "kill": free_port(),
        "adopt": free_port(),
        "kill_target": free_port(),
        "adopt_target": free_port(),
    }


@pytest.fixture(scope="module")
def enforcer(area: Path, ci_user: pwd.struct_passwd, ports: dict[str, int]) -> Iterator[Daemon]:
    work = area / "enforce"
    work.mkdir()
    shared = shared_dir(work, "shared")
    (shared / "allowed").mkdir()
    os.chmod(shared / "allowed", 0o1777)
    config = {
        "mode": "report",  # --apply below must be what enforces
        "state_dir": str(work / "state"),
        "vault": str(work / "vault"),
        "status_interval": "1s",
        "files": {"watch": [str(shared)], "max_file_size": "64KiB"},
        "processes": {"tunnel_interval": "500ms", "orphan_interval": "1s", "grace": "2s"},
        "policy": {
            "tunnel": {
                "action": "report",
                "long_lived": "1s",
                "rules": [
                    {"targets": [f"127.0.0.1:{ports['kill_target']}"], "action": "terminate"},
                    {"targets": [f"127.0.0.1:{ports['adopt_target']}"], "action": "adopt"},
                ],
            },
            "orphan": {
                "action": "report",
                "min_age": "1s",
                "rules": [{"users": [ci_user.pw_name], "action": "terminate"}],
            },
        },
        "allow": {"paths": [str(shared / "allowed")]},
    }
    daemon = Daemon(work, config, apply=True)
    try:
        daemon.wait_event(lambda e: e.get("event") == "agent.ready", timeout=20)
        yield daemon
    finally:
        daemon.terminate()


def shared_of(d: Daemon) -> Path:
    return d.workdir / "shared"


def test_ready_after_full_scan_then_watchdog_pings(enforcer: Daemon):
    ready = enforcer.wait_note(lambda n: n.startswith("READY=1"))
    assert "STATUS=running" in ready
    scan = enforcer.events_named("scan.full")
    assert scan and enforcer.events.index(scan[0]) < enforcer.events.index(
        enforcer.events_named("agent.ready")[0]
    )
    before = sum(n == "WATCHDOG=1" for n in enforcer.notes)
    time.sleep(0.7)
    assert sum(n == "WATCHDOG=1" for n in enforcer.notes) >= before + 2


def test_token_in_shared_dir_is_quarantined_and_restores_identical(enforcer: Daemon, area: Path):
    path = shared_of(enforcer) / "deploy.env"
    text = f"GITLAB_TOKEN={token()}\n"
    drop(path, text)
    ev = enforcer.action_for(path)
    assert ev["result"] == "done" and ev["action"] == "quarantine", ev
    assert not path.exists()
    vault = enforcer.workdir / "vault"
    listed = subprocess.run(
        [sys.executable, "-m", "hoopctl.cli", "quarantine", "--vault", str(vault), "list", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    entries = {e["id"]: e for e in json.loads(listed.stdout)["entries"]}
    assert ev["ref"] in entries and entries[ev["ref"]]["path"] == str(path)
    finding = enforcer.wait_event(lambda e: e.get("event") == "finding" and e.get("path") == str(path))
    assert finding["fingerprint"] and text.split("=", 1)[1].strip() not in json.dumps(enforcer.events)
    # restored outside the watched tree (inside it the agent would, rightly, take it again)
    out = area / f"restored-{uuid.uuid4().hex[:6]}.env"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "hoopctl.cli",
            "quarantine",
            "--vault",
            str(vault),
            "restore",
            ev["ref"],
            "--to",
            str(out),
        ],
        capture_output=True,
        check=True,
    )
    assert out.read_text() == text
    st = out.stat()
    assert (st.st_uid, st.st_mode & 0o777) == (NOBODY.pw_uid, 0o644)


def test_file_created_at_once_in_new_nested_dirs_is_caught(enforcer: Daemon):
    top = shared_of(enforcer) / f"job-{uuid.uuid4().hex[:6]}"
    path = top / "a" / "b" / "c" / ".env"

    def mkdir_and_write() -> None:
        os.makedirs(path.parent)
        with open(path, "w") as f:
            f.write(f"CI_DEPLOY_TOKEN={token()}\n")

    as_user(mkdir_and_write)
    ev = enforcer.action_for(path)
    assert ev["result"] == "done" and not path.exists()


def test_odd_names_are_handled_and_logged_escaped(enforcer: Daemon):
    raw = os.fsencode(shared_of(enforcer)) + b"/two\nlines-\xff.env"

    def write() -> None:
        fd = os.open(raw, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, f"GITLAB_TOKEN={token()}\n".encode())
        os.close(fd)

    as_user(write)
    shown = f"{shared_of(enforcer)}/two\\nlines-\\xff.env"
    ev = enforcer.wait_event(lambda e: e.get("event") == "action" and e.get("path") == shown)
    assert ev["result"] == "done" and not os.path.lexists(raw)


def test_allowlisted_path_is_left_alone(enforcer: Daemon):
    path = shared_of(enforcer) / "allowed" / "keep.env"
    drop(path, f"GITLAB_TOKEN={token()}\n")
    ev = enforcer.wait_event(lambda e: e.get("event") == "finding" and e.get("path") == str(path))
    assert ev["action"] == "allow" and ev["applied"] is False
    sentinel = shared_of(enforcer) / f"after-allowed-{uuid.uuid4().hex[:6]}.env"
    drop(sentinel, f"GITLAB_TOKEN={token()}\n")
    enforcer.action_for(sentinel)
    assert path.exists()
    assert not [e for e in enforcer.events_named("action") if e.get("path") == str(path)]


def test_symlink_fifo_and_oversized_file_are_not_followed_blocking_or_read(enforcer: Daemon, area: Path):
    secret_dir = area / f"rootonly-{uuid.uuid4().hex[:6]}"
    secret_dir.mkdir(mode=0o700)
    os.chmod(secret_dir, 0o711)  # nobody may traverse (a link target can be reached) but not list
    target = secret_dir / "credentials"
    target.write_text(f"GITLAB_TOKEN={token()}\n")
    os.chmod(target, 0o644)
    link = shared_of(enforcer) / f"link-{uuid.uuid4().hex[:6]}.env"
    fifo = shared_of(enforcer) / f"fifo-{uuid.uuid4().hex[:6]}.env"

    def plant() -> None:
        os.symlink(target, link)
        os.mkfifo(fifo)

    as_user(plant)
    big = shared_of(enforcer) / f"huge-{uuid.uuid4().hex[:6]}.env"
    drop(big, f"GITLAB_TOKEN={token()}\n" + "#" * 100_000 + "\n")  # over max_file_size: never read
    sentinel = shared_of(enforcer) / f"after-tricks-{uuid.uuid4().hex[:6]}.env"
    drop(sentinel, f"GITLAB_TOKEN={token()}\n")
    assert enforcer.action_for(sentinel)["result"] == "done"  # the worker got past both, unblocked
    assert link.is_symlink() and target.exists() and fifo.exists() and big.exists()
    mentioned = [e for e in enforcer.events if e.get("path") in (str(link), str(fifo), str(target), str(big))]
    assert mentioned == []


def test_orphan_of_finished_ci_job_is_terminated(enforcer: Daemon, ci_user: pwd.struct_passwd):
    job = str(secrets.randbelow(10**9))
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the CI job: fork a helper that outlives it (double fork), then exit
        try:
            os.close(r)
            os.setsid()
            os.setgroups([])
            os.setgid(ci_user.pw_gid)
            os.setuid(ci_user.pw_uid)
            helper = os.fork()
            if helper == 0:
                env = {"GITLAB_CI": "true", "CI_JOB_ID": job, "PATH": "/usr/bin:/bin"}
                os.execve("/bin/sleep", ["sleep", "300"], env)
            os.write(w, str(helper).encode())
        finally:
            os._exit(0)
    os.close(w)
    os.waitpid(pid, 0)
    with os.fdopen(r) as f:
        helper = int(f.read())
    try:
        ev = enforcer.wait_event(
            lambda e: e.get("event") == "action" and e.get("kind") == "orphan" and e.get("pid") == helper,
            timeout=15,
        )
        assert ev["result"] == "done", ev
        assert ev["job"] == f"CI_JOB_ID={job}"
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and Path(f"/proc/{helper}").exists():
            time.sleep(0.05)
        assert not Path(f"/proc/{helper}").exists()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(helper, signal.SIGKILL)


def _socat(listen: int, target: int) -> subprocess.Popen:
    return subprocess.Popen(
        ["socat", f"TCP-LISTEN:{listen},bind=127.0.0.1,reuseaddr,fork", f"TCP:127.0.0.1:{target}"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


@pytest.mark.skipif(shutil.which("socat") is None, reason="socat not installed")
def test_stray_tunnel_is_torn_down_and_adopt_without_gateway_is_a_noop(
    enforcer: Daemon, ports: dict[str, int]
):
    kill = _socat(ports["kill"], ports["kill_target"])
    keep = _socat(ports["adopt"], ports["adopt_target"])
    try:
        ev = enforcer.wait_event(
            lambda e: e.get("event") == "action" and e.get("kind") == "tunnel" and e.get("pid") == kill.pid,
            timeout=10,
        )
        assert ev["action"] == "terminate" and ev["result"] == "done", ev
        assert kill.wait(timeout=5) is not None
        with pytest.raises(OSError), socket.create_connection(("127.0.0.1", ports["kill"]), timeout=1):
            pass
        adopt = enforcer.wait_event(
            lambda e: e.get("event") == "action" and e.get("kind") == "tunnel" and e.get("pid") == keep.pid,
            timeout=10,
        )
        assert adopt["action"] == "adopt" and adopt["result"] == "skipped"
        assert "gateway_admin_socket" in adopt["detail"]
        assert keep.poll() is None  # nothing stopped without a gateway to take over
    finally:
        for p in (kill, keep):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def test_report_mode_changes_nothing_reloads_on_sighup_and_stops_on_sigterm(area: Path):
    work = area / "report"
    work.mkdir()
    first = shared_dir(work, "first")
    second = shared_dir(work, "second")
    config = {
        "state_dir": str(work / "state"),
        "vault": str(work / "vault"),
        "files": {"watch": [str(first)]},
        "processes": {"enabled": False},
    }
    d = Daemon(work, config, apply=False)
    try:
        d.wait_event(lambda e: e.get("event") == "agent.ready", timeout=20)
        path = first / "left.env"
        drop(path, f"GITLAB_TOKEN={token()}\n")
        ev = d.wait_event(lambda e: e.get("event") == "finding" and e.get("path") == str(path))
        assert ev["action"] == "quarantine" and ev["applied"] is False
        time.sleep(0.3)
        assert path.exists() and not (work / "vault").exists()

        d.write_config({**config, "files": {"watch": [str(first), str(second)]}})
        d.proc.send_signal(signal.SIGHUP)
        reload = d.wait_event(lambda e: e.get("event") == "agent.reload")
        assert reload["added"] == [str(second)]
        late = second / "late.env"
        drop(late, f"GITLAB_TOKEN={token()}\n")
        d.wait_event(lambda e: e.get("event") == "finding" and e.get("path") == str(late))

        d.write_config({**config, "mode": "loud"})
        d.proc.send_signal(signal.SIGHUP)
        bad = d.wait_event(lambda e: e.get("event") == "error" and e.get("where") == "reload")
        assert "mode: expected one of report, enforce" in bad["message"]
        assert d.proc.poll() is None
    finally:
        rc, elapsed = d.terminate()
    assert rc == 0 and elapsed < 5, (rc, elapsed, d.stderr_text())
    assert any(n.startswith("STOPPING=1") for n in d.notes)
    status = json.loads((work / "state" / "status.json").read_text())
    assert status["state"] == "stopped" and status["findings"]["credential"] == 2 and status["reloads"] == 1
    assert status["actions"] == {"credential.quarantine.dry-run": 2}
    shown = subprocess.run(
        [
            sys.executable,
            "-m",
            "hoopctl.cli",
            "agent",
            "status",
            "--json",
            "--state-dir",
            str(work / "state"),
        ],
        capture_output=True,
        text=True,
    )
    assert shown.returncode == 1 and json.loads(shown.stdout)["running"] is False


def test_a_storm_of_signals_never_deadlocks_the_agent(area: Path):
    # A signal handler runs in the main thread between two bytecodes; one that took a lock the
    # main loop was holding at that instant would hang the agent for good (systemd then kills it).
    work = area / "storm"
    work.mkdir()
    config = {
        "state_dir": str(work / "state"),
        "vault": str(work / "vault"),
        "files": {"watch": [str(shared_dir(work, "watched"))]},
        "processes": {"enabled": False},
    }
    d = Daemon(work, config, apply=False)
    try:
        d.wait_event(lambda e: e.get("event") == "agent.ready", timeout=20)
        for i in range(1500):
            d.proc.send_signal(signal.SIGHUP)
            if i % 3 == 0:
                time.sleep(0.0005)
        d.wait_event(lambda e: e.get("event") == "agent.reload", timeout=10)
    finally:
        rc, elapsed = d.terminate()
    assert rc == 0 and elapsed < 5, (rc, elapsed, d.stderr_text())
