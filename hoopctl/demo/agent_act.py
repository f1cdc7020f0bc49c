"""Act 4: the host agent quarantines a dropped token, hands a stray tunnel to the gateway, ends an orphan."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import string
import tempfile
import time
from pathlib import Path

import psutil

from hoopctl.demo import ui
from hoopctl.demo.gateway_act import Stage
from hoopctl.demo.ui import act, check, note, run, step
from hoopctl.demo.ui import hoopctl as cli
from hoopctl.testing.sshd import SshUser, ThrowawaySshd


def _bastion(stage: Stage) -> tuple[ThrowawaySshd, SshUser]:
    """A throwaway sshd on loopback (the bastion) and a login user on it playing the CI runner's
    user; both removed, with the user's processes, at the end."""
    home = Path(tempfile.mkdtemp(prefix="hoopctl-demo-sshd-"))
    home.chmod(0o711)  # the CI user reads its own key in here
    stage.stack.callback(shutil.rmtree, home, True)
    sshd = ThrowawaySshd(home).start()
    stage.stack.callback(sshd.stop)
    user = sshd.add_user(f"hoopdemo{secrets.token_hex(3)}")
    os.chown(user.key, user.uid, -1)
    return sshd, user


def _agent_config(stage: Stage, user: str, tunnel_target: str) -> dict:
    w = stage.workdir
    return {
        "mode": "report",  # `--apply` on the command line is what enforces
        "state_dir": str(w / "agent-state"),
        "vault": str(w / "vault"),
        "gateway_admin_socket": str(stage.admin_socket),
        "status_interval": "1s",
        "files": {"watch": [str(w / "srv" / "shared")], "max_file_size": "64KiB"},
        "processes": {
            "tunnel_interval": "500ms",
            "orphan_interval": "1s",
            "grace": "2s",
            "protected": [tunnel_target],
        },
        # Only what this demo starts is acted on; anything else on this host is only reported.
        "policy": {
            "tunnel": {
                "action": "report",
                "long_lived": "1s",
                "rules": [{"targets": [tunnel_target], "action": "adopt"}],
            },
            "orphan": {
                "action": "report",
                "min_age": "1s",
                "rules": [{"users": [user], "action": "terminate"}],
            },
        },
    }


class Agent:
    """The running `hoopctl agent run`, with its JSON log lines read back from its log file."""

    def __init__(self, stage: Stage) -> None:
        self.proc = ui.Background(
            cli("agent", "run", "--config", "agent.yaml", "--apply"), log=stage.workdir / "agent.log"
        )
        stage.stack.callback(self.proc.stop)

    def events(self) -> list[dict]:
        found = []
        for line in self.proc.log_text().splitlines():
            try:
                found.append(json.loads(line))
            except ValueError:
                continue
        return found

    def wait(self, what: str, pred, timeout: float = 20.0) -> dict:
        def seen():
            if not self.proc.alive():
                note(self.proc.log_text()[-800:])
                check(False, "the agent is running")
            return next((e for e in self.events() if pred(e)), None)

        return ui.wait_for(seen, what, timeout=timeout)


def _show_event(ev: dict) -> None:
    keys = ("event", "kind", "action", "result", "path", "pid", "user", "job", "ref", "detail")
    note("agent: " + " ".join(f"{k}={ev[k]}" for k in keys if ev.get(k) not in (None, "")))


def _strays(stage: Stage, sshd: ThrowawaySshd, ci: SshUser, target: str) -> tuple[ui.Background, int, int]:
    """An SSH tunnel to the database and a leftover of a finished CI job, both left by the CI user."""
    assert stage.pg is not None
    user = ci.name
    step("a CI job left an SSH tunnel to the database open through the bastion")
    port = ui.free_port()
    forward = f"{port}:{target}"
    tunnel = ui.Background(
        [
            "runuser",
            "-u",
            user,
            "--",
            *sshd.ssh_command(ci, "-N", "-o", "ExitOnForwardFailure=yes", "-L", forward),
        ],
        log=stage.workdir / "tunnel.log",
        shown_as=f"runuser -u {user} -- ssh -N -L {forward} {user}@bastion",
    )
    stage.stack.callback(tunnel.stop)
    ui.wait_for(lambda: ui.port_open(port), f"the tunnel listens on {port}")
    ui.secret(stage.pg.password, shown=False)
    out = run(
        [stage.pg.bin("psql"), "-X", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-d", "app"]
        + ["-c", "SELECT count(*) AS customers FROM customers"],
        env=dict(os.environ, PGPASSWORD=stage.pg.password, PGCONNECT_TIMEOUT="5"),
        shown_as=f'PGPASSWORD="$DB_PASSWORD" psql -h 127.0.0.1 -p {port} -U postgres app '  # noqa: S608
        '-c "SELECT count(*) AS customers FROM customers"',
    )
    check(out.returncode == 0, "with the tunnel, the database password alone gets in: no gateway, no record")
    found = run(cli("tunnels", "--protected", target))
    check(
        f"127.0.0.1:{port}" in found.stdout and user in found.stdout, "hoopctl tunnels lists the SSH tunnel"
    )

    step("and a helper it double-forked, which outlived the job (GITLAB_CI=true CI_JOB_ID=4242)")
    marker = str(600 + secrets.randbelow(300))
    run(
        ["runuser", "-u", user, "--", "env", "GITLAB_CI=true", "CI_JOB_ID=4242", "setsid", "sh", "-c"]
        + [f"sleep {marker} >/dev/null 2>&1 &"],
        check=True,
    )
    orphan = ui.wait_for(
        lambda: next(
            (p.pid for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"] == ["sleep", marker]), None
        ),
        "the leftover sleep is running",
    )
    stage.stack.callback(_kill, orphan)
    time.sleep(1.1)
    found = run(cli("procs", "--orphans", "--min-age", "1s"))
    check(str(orphan) in found.stdout, f"hoopctl procs --orphans lists pid {orphan}")
    return tunnel, port, orphan


def _kill(pid: int) -> None:
    try:
        if psutil.Process(pid).cmdline()[:1] == ["sleep"]:
            os.kill(pid, signal.SIGKILL)
    except (psutil.Error, ProcessLookupError):
        pass


def agent_act(stage: Stage) -> None:
    assert stage.pg is not None
    act(
        4,
        "the host agent",
        "On the host itself: tokens dropped in shared folders, tunnels around the gateway, leftovers of CI jobs.",
    )
    sshd, ci = _bastion(stage)
    user = ci.name
    note(
        f"a throwaway account {user} plays the CI runner's user; a throwaway sshd (port {sshd.port}) the bastion"
    )
    shared = stage.workdir / "srv" / "shared"
    shared.mkdir(parents=True)
    os.chmod(shared.parent, 0o755)  # noqa: S103 - nobody must reach the shared folder below
    os.chmod(shared, 0o1777)  # noqa: S103 - like /tmp: anyone may drop files here
    target = f"127.0.0.1:{stage.pg.port}"
    tunnel, tunnel_port, orphan = _strays(stage, sshd, ci, target)

    step("starting the agent, enforcing (watches srv/shared; the database is a protected target)")
    (stage.workdir / "agent.yaml").write_text(json.dumps(_agent_config(stage, user, target), indent=1))
    note(
        "agent.yaml: watch srv/shared; tunnels to "
        + target
        + " -> adopt; orphans of "
        + user
        + " -> terminate"
    )
    agent = Agent(stage)
    agent.wait("the agent is ready (initial scan done)", lambda e: e.get("event") == "agent.ready")

    step("the tunnel: the agent stops it and the gateway takes over its address")
    ev = agent.wait(
        "the agent acts on the tunnel",
        lambda e: e.get("event") == "action" and e.get("kind") == "tunnel" and e.get("action") == "adopt",
    )
    _show_event(ev)
    check(ev.get("result") == "done", "the tunnel was adopted by the gateway")
    check(ui.wait_for(lambda: not tunnel.alive(), "the ssh process ended"), "the ssh tunnel process is gone")
    out = run(
        [stage.pg.bin("psql"), "-X", "-h", "127.0.0.1", "-p", str(tunnel_port), "-U", "postgres", "-d", "app"]
        + ["-c", "SELECT 1"],
        env=dict(os.environ, PGPASSWORD=stage.pg.password, PGCONNECT_TIMEOUT="5"),
        shown_as=f'PGPASSWORD="$DB_PASSWORD" psql -h 127.0.0.1 -p {tunnel_port} -U postgres app -c "SELECT 1"',
    )
    check(out.returncode != 0, f"on port {tunnel_port} the database password no longer gets in")
    out = run(
        stage.psql_argv("-c", "SELECT count(*) AS customers FROM customers", port=tunnel_port),
        env=stage.psql_env(stage.tokens["JOB"]),
        shown_as=stage.psql_shown(
            "JOB", '-c "SELECT count(*) AS customers FROM customers"', port=tunnel_port
        ),
    )
    check(
        out.returncode == 0 and "4" in out.stdout,
        f"a gateway token works on {tunnel_port}, checked and recorded",
    )

    step("the orphan: terminated")
    ev = agent.wait(
        "the agent acts on the orphan",
        lambda e: e.get("event") == "action" and e.get("kind") == "orphan" and e.get("pid") == orphan,
    )
    _show_event(ev)
    ui.wait_for(lambda: not psutil.pid_exists(orphan), f"pid {orphan} is gone")
    check(not psutil.pid_exists(orphan), f"the leftover (pid {orphan}) is gone")

    step("someone (here: nobody) drops a deploy token into the shared folder")
    token = "glpat-" + "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(20))
    ui.secret(token)
    dropped = shared / "deploy.env"
    run(
        ["runuser", "-u", "nobody", "--", "sh", "-c", f"echo GITLAB_TOKEN={token} > srv/shared/deploy.env"],
        check=True,
    )
    ev = agent.wait(
        "the agent quarantines the file",
        lambda e: e.get("event") == "action" and e.get("path") == str(dropped),
    )
    _show_event(ev)
    check(ev.get("action") == "quarantine" and ev.get("result") == "done", "the file was quarantined")
    check(not dropped.exists(), "srv/shared/deploy.env is no longer there")
    vault = str(stage.workdir / "vault")
    run(cli("quarantine", "--vault", vault, "list"), shown_as='hoopctl quarantine --vault "$PWD/vault" list')
    restored = stage.workdir / "restored" / "deploy.env"
    restored.parent.mkdir()
    out = run(
        cli("quarantine", "--vault", vault, "restore", str(ev.get("ref")), "--to", "restored/deploy.env"),
        shown_as=f'hoopctl quarantine --vault "$PWD/vault" restore {ev.get("ref")} --to restored/deploy.env',
    )
    check(
        out.returncode == 0 and restored.read_text() == f"GITLAB_TOKEN={token}\n", "restorable byte for byte"
    )

    step("the agent's own account of what it did")
    time.sleep(1.2)  # the agent refreshes its status file every status_interval (1s here)
    run(cli("agent", "status", "--state-dir", "agent-state"), max_lines=20)
    agent.proc.stop()
    tunnel.stop()
