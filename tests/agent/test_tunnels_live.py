"""Real tunnels through a real sshd on loopback, found from a live snapshot.

The target is the test PostgreSQL; it is the protected resource. Each test asserts the finding's
kind, listen port, target, protected flag and user, on both sides where both are on this host.
"""

from __future__ import annotations

import json
import shutil
import socket
import struct
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from hoopctl.cli import main
from hoopctl.detect.tunnels import TunnelFinding, classify_tunnels, parse_protected
from hoopctl.host.procs import read_ssh_configs, take_snapshot
from hoopctl.testing.sshd import free_port, wait_for_port

pytestmark = pytest.mark.root

EXIT_ON_FAILURE = ["-o", "ExitOnForwardFailure=yes"]


def findings(pg_port: int, **match) -> list[TunnelFinding]:
    snap = take_snapshot(environ=False, cgroups=False)  # what `hoopctl tunnels` does
    protected = [parse_protected(f"127.0.0.1:{pg_port}")]
    found = classify_tunnels(snap, protected, ssh_configs=read_ssh_configs(snap))
    return [f for f in found if all(getattr(f, k) == v for k, v in match.items())]


def wait_finding(pg_port: int, timeout: float = 3.0, **match) -> TunnelFinding:
    deadline = time.monotonic() + timeout
    while True:
        hits = findings(pg_port, **match)
        if len(hits) == 1:
            return hits[0]
        if time.monotonic() > deadline:
            raise AssertionError(f"expected one finding {match}, got {hits}")
        time.sleep(0.05)


def private_dir(sshd) -> Path:
    """A fresh folder under the sshd's workdir: any process whose argv names it is killed at module end."""
    return Path(tempfile.mkdtemp(dir=sshd.workdir))


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def test_local_forward_is_found_within_2s_protected_and_gone_after_teardown(sshd, ssh_user, spawn, postgres):
    lport = free_port()
    cmd = sshd.ssh_command(ssh_user, *EXIT_ON_FAILURE, "-N", "-f", "-L", f"{lport}:127.0.0.1:{postgres.port}")
    pid = spawn.background(cmd)  # returns once the forward is up (ExitOnForwardFailure)
    created = time.monotonic()
    f = wait_finding(postgres.port, timeout=2.0, pid=pid, listen=(f"127.0.0.1:{lport}", f"[::1]:{lport}"))
    assert time.monotonic() - created < 2.0  # the agent's target: found within 2 s of creation
    assert f.kind == "local" and f.listen_port == lport and f.source == "argv"
    assert set(f.listen) == {f"127.0.0.1:{lport}", f"[::1]:{lport}"}
    assert f.target == f"127.0.0.1:{postgres.port}" and f.protected
    assert f.user == "root" and f.reparented and f.peer == f"{ssh_user.name}@127.0.0.1"

    # traffic through it: the sshd side now shows the forward, owned by the login user
    with socket.create_connection(("127.0.0.1", lport)):
        s = wait_finding(
            postgres.port,
            kind="sshd-forward",
            user=ssh_user.name,
            via=pid,
            target=f"127.0.0.1:{postgres.port}",
        )
        assert s.target == f"127.0.0.1:{postgres.port}" and s.protected
        assert s.via == pid and s.listen_port == lport

    spawn.cleanup()
    assert not port_open(lport)
    assert findings(postgres.port, pid=pid) == []


def test_local_forward_to_an_unprotected_target_is_not_protected(sshd, ssh_user, spawn, postgres):
    lport = free_port()
    other = free_port()
    pid = spawn.background(
        sshd.ssh_command(ssh_user, "-N", "-f", "-L", f"127.0.0.1:{lport}:127.0.0.1:{other}")
    )
    f = wait_finding(postgres.port, pid=pid, listen=(f"127.0.0.1:{lport}",))
    assert f.kind == "local" and f.listen == (f"127.0.0.1:{lport}",) and not f.protected


def test_remote_forward_found_on_client_and_on_sshd(sshd, ssh_user, spawn, postgres):
    rport = free_port()
    cmd = sshd.ssh_command(ssh_user, *EXIT_ON_FAILURE, "-N", "-f", "-R", f"{rport}:127.0.0.1:{postgres.port}")
    pid = spawn.background(cmd)
    c = wait_finding(postgres.port, pid=pid)
    assert c.kind == "remote" and c.listen == (f"remote:localhost:{rport}",) and c.listen_port == rport
    assert c.target == f"127.0.0.1:{postgres.port}" and c.protected and c.user == "root"
    s = wait_finding(
        postgres.port, kind="sshd-forward", user=ssh_user.name, listen_port=rport, via=pid, protected=True
    )
    assert f"127.0.0.1:{rport}" in s.listen
    assert s.target == f"127.0.0.1:{postgres.port}" and s.protected and s.via == pid


def _socks5_connect(port: int, target_port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"\x05\x01\x00")
    assert s.recv(2) == b"\x05\x00"
    s.sendall(b"\x05\x01\x00\x01" + socket.inet_aton("127.0.0.1") + struct.pack(">H", target_port))
    reply = s.recv(10)
    assert reply[:2] == b"\x05\x00", reply
    return s


def test_dynamic_forward_is_protected_while_it_carries_traffic_to_the_database(
    sshd, ssh_user, spawn, postgres
):
    dport = free_port()
    pid = spawn.background(
        sshd.ssh_command(ssh_user, *EXIT_ON_FAILURE, "-N", "-f", "-D", f"127.0.0.1:{dport}")
    )
    f = wait_finding(postgres.port, pid=pid, listen=(f"127.0.0.1:{dport}",))
    assert f.kind == "dynamic" and f.listen == (f"127.0.0.1:{dport}",) and f.target is None
    assert not f.protected
    with _socks5_connect(dport, postgres.port):
        f = wait_finding(postgres.port, pid=pid, protected=True)
        assert f.kind == "dynamic" and f.protected
        s = wait_finding(postgres.port, kind="sshd-forward", user=ssh_user.name, protected=True)
        assert s.target == f"127.0.0.1:{postgres.port}" and s.protected


def test_config_file_forward_is_found_with_its_target_from_the_config(sshd, ssh_user, spawn, postgres):
    lport = free_port()
    config = private_dir(sshd) / "ssh_config"
    config.write_text(
        sshd.client_config(ssh_user, "dbtunnel", f"LocalForward 127.0.0.1:{lport} 127.0.0.1:{postgres.port}")
    )
    cmd = ["ssh", "-F", str(config), *EXIT_ON_FAILURE, "-N", "-f", "dbtunnel"]
    pid = spawn.background(cmd)
    f = wait_finding(postgres.port, pid=pid, listen=(f"127.0.0.1:{lport}",))
    assert f.kind == "local" and f.source == "config" and f.listen_port == lport and f.user == "root"
    assert f.target == f"127.0.0.1:{postgres.port}" and f.protected


def test_relative_config_path_is_read_from_the_clients_working_directory(sshd, ssh_user, spawn, postgres):
    lport = free_port()
    here = private_dir(sshd)
    (here / "cfg").write_text(
        sshd.client_config(ssh_user, "dbtunnel", f"LocalForward 127.0.0.1:{lport} 127.0.0.1:{postgres.port}")
    )
    marker = f"hoop{lport}"  # an unused option value that makes this argv unique
    cmd = ["ssh", "-F", "cfg", "-o", f"SetEnv=X={marker}", *EXIT_ON_FAILURE, "-N", "-f", "dbtunnel"]
    pid = spawn.background(cmd, cwd=here)
    f = wait_finding(postgres.port, pid=pid, listen=(f"127.0.0.1:{lport}",))
    assert f.source == "config" and f.target == f"127.0.0.1:{postgres.port}" and f.protected


def test_config_forward_behind_a_symlinked_config_is_found_from_sockets_only(sshd, ssh_user, spawn, postgres):
    lport = free_port()
    here = private_dir(sshd)
    real = here / "real_config"
    real.write_text(
        sshd.client_config(ssh_user, "dbtunnel", f"LocalForward 127.0.0.1:{lport} 127.0.0.1:{postgres.port}")
    )
    link = here / "ssh_config"
    link.symlink_to(real)  # root must not follow it: the forward is still seen, from its socket
    pid = spawn.background(["ssh", "-F", str(link), *EXIT_ON_FAILURE, "-N", "-f", "dbtunnel"])
    f = wait_finding(postgres.port, pid=pid, listen=(f"127.0.0.1:{lport}",))
    assert f.kind == "local" and f.source == "sockets" and f.target is None
    with socket.create_connection(("127.0.0.1", lport)):
        # once it carries a connection, the sshd side on this host tells the target
        f = wait_finding(postgres.port, pid=pid, target=f"127.0.0.1:{postgres.port}")
        assert f.protected


def test_controlpersist_master_is_a_mux_with_the_forwards_added_to_it(sshd, ssh_user, spawn, postgres):
    ctl = str(private_dir(sshd) / "ctl")
    opts = ["-o", "ControlMaster=yes", "-o", f"ControlPath={ctl}", "-o", "ControlPersist=60"]
    # a job runs one command over a master; ControlPersist keeps the master after the job is done
    done = subprocess.run([*sshd.ssh_command(ssh_user, *opts), "true"], capture_output=True, timeout=15)
    assert done.returncode == 0, done.stderr
    pid = spawn.wait_for(lambda p: " ".join(a for a in p.cmdline() if a) == f"ssh: {ctl} [mux]")
    lport = free_port()
    subprocess.run(
        ["ssh", "-S", ctl, "-O", "forward", "-L", f"127.0.0.1:{lport}:127.0.0.1:{postgres.port}", "x"],
        check=True,
        capture_output=True,
        timeout=10,
    )
    wait_for_port(lport)
    f = wait_finding(postgres.port, pid=pid, listen=(ctl, f"127.0.0.1:{lport}"))
    assert f.kind == "mux" and f.listen == (ctl, f"127.0.0.1:{lport}") and f.listen_port == lport
    assert f.user == "root" and f.reparented


def test_autossh_parent_is_found_with_its_ssh_child(sshd, ssh_user, spawn, postgres):
    if not shutil.which("autossh"):
        pytest.skip("autossh is not installed (scripts/system-deps.sh installs it)")
    lport = free_port()
    cmd = [
        "autossh",
        "-M",
        "0",
        *sshd.ssh_command(ssh_user, "-N", "-L", f"{lport}:127.0.0.1:{postgres.port}")[1:],
    ]
    proc = spawn.popen(cmd, env={"AUTOSSH_GATETIME": "0", "PATH": "/usr/bin:/bin"})
    wait_for_port(lport)
    f = wait_finding(postgres.port, kind="autossh", pid=proc.pid, protected=True)
    assert f.listen_port == lport and f.target == f"127.0.0.1:{postgres.port}" and f.protected
    child = f.via
    assert child is not None and findings(postgres.port, pid=child)[0].kind == "local"


def test_restart_loop_wrapper_is_found_as_autossh(sshd, ssh_user, spawn, postgres):
    lport = free_port()
    ssh = " ".join(sshd.ssh_command(ssh_user, "-N", "-L", f"{lport}:127.0.0.1:{postgres.port}"))
    proc = spawn.popen(["sh", "-c", f"while :; do {ssh}; sleep 0.2; done"])
    wait_for_port(lport)
    f = wait_finding(postgres.port, kind="autossh", pid=proc.pid)
    assert f.source == "wrapper" and f.listen_port == lport and f.protected


def test_socat_relay_is_found(spawn, postgres):
    if not shutil.which("socat"):
        pytest.skip("socat is not installed (scripts/system-deps.sh installs it)")
    lport = free_port()
    proc = spawn.popen(
        ["socat", f"TCP-LISTEN:{lport},bind=127.0.0.1,fork,reuseaddr", f"TCP:127.0.0.1:{postgres.port}"]
    )
    wait_for_port(lport)
    f = wait_finding(postgres.port, pid=proc.pid, listen=(f"127.0.0.1:{lport}",))
    assert f.kind == "socat" and f.listen == (f"127.0.0.1:{lport}",) and f.listen_port == lport
    assert f.target == f"127.0.0.1:{postgres.port}" and f.protected and f.user == "root"


def test_cli_json_lists_the_tunnel_and_exits_1(sshd, ssh_user, spawn, postgres):
    lport = free_port()
    pid = spawn.background(sshd.ssh_command(ssh_user, "-N", "-f", "-L", f"{lport}:127.0.0.1:{postgres.port}"))
    result = CliRunner().invoke(main, ["tunnels", "--json", "--protected", f"127.0.0.1:{postgres.port}"])
    assert result.exit_code == 1, result.output
    mine = [t for t in json.loads(result.output)["tunnels"] if t["pid"] == pid]
    assert len(mine) == 1 and mine[0]["kind"] == "local" and mine[0]["protected"] is True
    table = CliRunner().invoke(main, ["tunnels"])
    assert table.exit_code == 1 and str(pid) in table.output and "KIND" in table.output


def test_cli_refuses_a_bad_protected_spec_in_one_line():
    result = CliRunner().invoke(main, ["tunnels", "--protected", "db"])
    assert result.exit_code == 2
    assert "protected resource 'db'" in result.output and "Traceback" not in result.output
