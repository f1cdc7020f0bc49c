"""Tunnel classification over constructed snapshots: every kind, both sides of a tunnel, protection."""

from __future__ import annotations

from hoopctl.detect.procsnap import Endpoint, Proc, Snapshot, Sock
from hoopctl.detect.tunnels import (
    classify_tunnels,
    destination_host,
    forwards_from_ssh_config,
    parse_protected,
)

NOW = 1_000_000.0
PG = [parse_protected("127.0.0.1:5432"), parse_protected("10.0.0.0/8:5432")]


def proc(pid, ppid, name, cmdline, *, user="root", socks=(), age=100.0):
    return Proc(
        pid=pid,
        ppid=ppid,
        uid=0 if user == "root" else 1000,
        user=user,
        name=name,
        cmdline=tuple(cmdline),
        create_time=NOW - age,
        sockets=tuple(socks),
    )


def listen(ip, port, fd=3):
    return Sock("tcp", Endpoint(ip, port), None, "LISTEN", fd)


def est(lip, lport, rip, rport, fd=4):
    return Sock("tcp", Endpoint(lip, lport), Endpoint(rip, rport), "ESTABLISHED", fd)


def snap(*procs):
    base = [proc(1, 0, "init", ["/sbin/init"]), proc(500, 1, "bash", ["-bash"])]
    return Snapshot(taken_at=NOW, procs={p.pid: p for p in (*base, *procs)})


def only(findings, **match):
    hits = [f for f in findings if all(getattr(f, k) == v for k, v in match.items())]
    assert len(hits) == 1, (match, findings)
    return hits[0]


def test_local_forward_in_argv_with_sockets_is_protected_and_reparented():
    ssh = proc(
        10,
        1,
        "ssh",
        ["ssh", "-NfL", "15432:127.0.0.1:5432", "-p", "22", "u@db"],
        socks=[
            listen("127.0.0.1", 15432),
            listen("::1", 15432, 4),
            est("10.1.1.1", 40000, "10.9.9.9", 22, 5),
        ],
    )
    f = only(classify_tunnels(snap(ssh), PG), pid=10)
    assert f.kind == "local" and f.listen_port == 15432
    assert f.listen == ("127.0.0.1:15432", "[::1]:15432")
    assert f.target == "127.0.0.1:5432" and f.protected
    assert f.reparented and f.ppid == 1 and f.age == 100 and f.peer == "u@db" and f.source == "argv"


def test_forward_to_unprotected_target_is_not_protected_and_interactive_parent_is_not_reparented():
    ssh = proc(11, 500, "ssh", ["ssh", "-L", "8080:web:80", "h"])
    f = only(classify_tunnels(snap(ssh), PG), pid=11)
    assert not f.protected and not f.reparented
    assert f.listen == ("localhost:8080",)  # no socket yet: what was asked for


def test_remote_dynamic_and_tun_forwards_each_get_a_finding():
    ssh = proc(12, 1, "ssh", ["ssh", "-R", "9000:10.0.0.5:5432", "-D1080", "-w", "0:1", "h"])
    found = classify_tunnels(snap(ssh), PG)
    r = only(found, kind="remote")
    assert r.listen == ("remote:localhost:9000",) and r.target == "10.0.0.5:5432" and r.protected
    d = only(found, kind="dynamic")
    assert d.listen_port == 1080 and d.target is None and not d.protected
    t = only(found, kind="tun")
    assert t.listen == ("tun:0",) and t.target == "tun:1"


def test_config_file_forward_seen_only_as_listen_socket():
    ssh = proc(13, 1, "ssh", ["ssh", "-F", "/home/u/cfg", "-N", "dbhost"], socks=[listen("127.0.0.1", 6000)])
    f = only(classify_tunnels(snap(ssh), PG), pid=13)
    assert f.kind == "local" and f.source == "sockets" and f.listen == ("127.0.0.1:6000",)
    assert f.target is None and not f.protected


def test_argv_forward_socket_is_not_reported_twice_as_a_config_forward():
    ssh = proc(14, 1, "ssh", ["ssh", "-L", "7000:db:5432", "h"], socks=[listen("127.0.0.1", 7000)])
    assert [f.source for f in classify_tunnels(snap(ssh), PG)] == ["argv"]


def test_mux_master_is_found_by_its_title_with_its_forward_sockets():
    mux = proc(15, 1, "ssh", ["ssh:", "/tmp/ctl-u", "[mux]"], socks=[listen("127.0.0.1", 7001)])
    f = only(classify_tunnels(snap(mux), PG), pid=15)
    assert f.kind == "mux" and f.listen == ("/tmp/ctl-u", "127.0.0.1:7001") and f.source == "mux"


def test_control_commands_are_not_tunnels():
    client = proc(16, 500, "ssh", ["ssh", "-S", "/tmp/c", "-O", "forward", "-L", "1:db:5432", "h"])
    assert classify_tunnels(snap(client), PG) == []


def test_autossh_parent_reports_its_child_forward():
    auto = proc(
        20, 1, "autossh", ["/usr/lib/autossh/autossh", "-M", "0", "-N", "-L", "5433:127.0.0.1:5432", "h"]
    )
    ssh = proc(
        21,
        20,
        "ssh",
        ["/usr/bin/ssh", "-N", "-L", "5433:127.0.0.1:5432", "h"],
        socks=[listen("127.0.0.1", 5433)],
    )
    found = classify_tunnels(snap(auto, ssh), PG)
    a = only(found, kind="autossh")
    assert a.pid == 20 and a.via == 21 and a.listen == ("127.0.0.1:5433",) and a.protected
    assert only(found, pid=21).kind == "local"


def test_autossh_between_restarts_reads_its_own_argv_without_its_monitor_port():
    auto = proc(22, 1, "autossh", ["autossh", "-M", "20000", "-f", "-N", "-L", "5434:10.1.2.3:5432", "h"])
    f = only(classify_tunnels(snap(auto), PG), pid=22)
    assert f.kind == "autossh" and f.listen_port == 5434 and f.target == "10.1.2.3:5432" and f.protected


def test_shell_restart_loop_around_ssh_counts_as_autossh():
    loop = proc(23, 1, "sh", ["sh", "-c", "while :; do ssh -N -L 5435:127.0.0.1:5432 h; sleep 1; done"])
    ssh = proc(24, 23, "ssh", ["ssh", "-N", "-L", "5435:127.0.0.1:5432", "h"])
    f = only(classify_tunnels(snap(loop, ssh), PG), kind="autossh")
    assert f.pid == 23 and f.via == 24 and f.source == "wrapper"


def test_interactive_shell_running_ssh_is_not_a_wrapper():
    ssh = proc(25, 500, "ssh", ["ssh", "-L", "1:db:5432", "h"])
    assert [f.kind for f in classify_tunnels(snap(ssh), PG)] == ["local"]


def test_socat_relay_reported_once_not_per_connection_child():
    argv = ["socat", "TCP-LISTEN:15433,fork,reuseaddr", "TCP:127.0.0.1:5432"]
    parent = proc(30, 1, "socat", argv, socks=[listen("0.0.0.0", 15433)])
    child = proc(31, 30, "socat", argv, socks=[est("127.0.0.1", 15433, "127.0.0.1", 50000)])
    found = classify_tunnels(snap(parent, child), PG)
    f = only(found, kind="socat")
    assert f.pid == 30 and f.listen == ("0.0.0.0:15433",) and f.target == "127.0.0.1:5432" and f.protected


def test_ncat_relay():
    nc = proc(32, 1, "ncat", ["ncat", "-lk", "15434", "--sh-exec", "ncat 10.0.0.5 5432"])
    f = only(classify_tunnels(snap(nc), PG), kind="ncat")
    assert f.listen_port == 15434 and f.target == "10.0.0.5:5432" and f.protected


def test_sshd_session_with_outbound_connection_is_a_forward_and_pairs_with_local_client():
    daemon = proc(
        40,
        1,
        "sshd",
        ["sshd: /usr/sbin/sshd -D [listener] 0 of 10-100 startups"],
        socks=[listen("0.0.0.0", 22)],
    )
    priv = proc(41, 40, "sshd", ["sshd: alice [priv]"], socks=[est("127.0.0.1", 22, "127.0.0.1", 40001)])
    sess = proc(
        42,
        41,
        "sshd",
        ["sshd:", "alice@notty"],
        user="alice",
        socks=[
            est("127.0.0.1", 22, "127.0.0.1", 40001, fd=4),
            est("127.0.0.1", 50500, "127.0.0.1", 5432, fd=7),
        ],
    )
    client = proc(
        43,
        1,
        "ssh",
        ["ssh", "-F", "cfg", "-N", "h"],
        socks=[listen("127.0.0.1", 6001), est("127.0.0.1", 40001, "127.0.0.1", 22, fd=3)],
    )
    found = classify_tunnels(snap(daemon, priv, sess, client), PG)
    s = only(found, kind="sshd-forward")
    assert s.pid == 42 and s.user == "alice" and s.target == "127.0.0.1:5432" and s.protected
    assert s.peer == "127.0.0.1:40001" and s.via == 43
    c = only(found, pid=43)  # the config forward borrows the target the sshd side sees
    assert c.kind == "local" and c.target == "127.0.0.1:5432" and c.protected and c.via == 42
    assert not [f for f in found if f.pid in (40, 41)]


def test_sshd_session_listening_is_a_remote_forward_and_accepted_connections_are_not_targets():
    daemon = proc(50, 1, "sshd", ["/usr/sbin/sshd", "-D"], socks=[listen("0.0.0.0", 22)])
    sess = proc(
        51,
        50,
        "sshd",
        ["sshd: bob"],
        user="bob",
        socks=[
            est("10.0.0.2", 22, "10.0.0.9", 41000, fd=3),
            listen("127.0.0.1", 9000, fd=8),
            est("127.0.0.1", 9000, "127.0.0.1", 53000, fd=9),
        ],
    )
    found = classify_tunnels(snap(daemon, sess), PG)
    f = only(found, pid=51)
    assert f.kind == "sshd-forward" and f.listen == ("127.0.0.1:9000",) and f.target is None
    assert f.peer == "10.0.0.9:41000"


def test_plain_sshd_session_without_forwards_is_clean():
    daemon = proc(60, 1, "sshd", ["/usr/sbin/sshd", "-D"], socks=[listen("0.0.0.0", 22)])
    sess = proc(
        61, 60, "sshd", ["sshd: carol@pts/0"], user="carol", socks=[est("10.0.0.2", 22, "10.0.0.9", 41000)]
    )
    assert classify_tunnels(snap(daemon, sess), PG) == []


def test_ordinary_processes_are_clean():
    others = [
        proc(70, 1, "postgres", ["postgres", "-D", "/var/lib/pg"], socks=[listen("127.0.0.1", 5432)]),
        proc(71, 500, "ssh", ["ssh", "h", "uptime"]),
        proc(72, 500, "socat", ["socat", "-", "TCP:db:5432"]),
        proc(73, 500, "nc", ["nc", "-l", "8000"]),
    ]
    assert classify_tunnels(snap(*others), PG) == []


# -- forwards from ssh_config texts

CONFIG = """
# global
DynamicForward 127.0.0.1:1081
Host db* !db-test
    HostName 10.0.0.5
    LocalForward 127.0.0.1:6000 10.0.0.5:5432
    RemoteForward=9001 127.0.0.1:22  # trailing comment
Host web
    LocalForward 8080 web:80
Match exec "true"
    LocalForward 7777 secret:1
Host *
    LocalForward 6001 [fd00::5]:5432
"""


def test_ssh_config_forwards_follow_host_blocks_and_skip_match():
    got = [(f.kind, f.listen_port, f.target_text) for f in forwards_from_ssh_config(CONFIG, "dbprod")]
    assert got == [
        ("dynamic", 1081, None),
        ("local", 6000, "10.0.0.5:5432"),
        ("remote", 9001, "127.0.0.1:22"),
        ("local", 6001, "[fd00::5]:5432"),
    ]
    assert [f.listen_port for f in forwards_from_ssh_config(CONFIG, "db-test")] == [1081, 6001]
    assert [f.listen_port for f in forwards_from_ssh_config(CONFIG, "web")] == [1081, 8080, 6001]
    assert forwards_from_ssh_config("Host *\n ClearAllForwardings yes\n LocalForward 1 a:2\n", "x") == []


def test_destination_host_of_every_destination_form():
    assert destination_host("db") == "db"
    assert destination_host("u@db") == "db"
    assert destination_host("ssh://u@db:2222") == "db"
    assert destination_host("ssh://[fd00::5]:22") == "fd00::5"
    assert destination_host(None) is None


def test_config_forward_gets_its_target_once_its_socket_confirms_it():
    ssh = proc(80, 1, "ssh", ["ssh", "-N", "u@dbprod"], socks=[listen("127.0.0.1", 6000)])
    found = classify_tunnels(snap(ssh), PG, ssh_configs={80: [CONFIG]})
    local = only(found, kind="local")
    assert local.listen_port == 6000 and local.target == "10.0.0.5:5432" and local.protected
    assert local.source == "config"
    # the remote forward cannot be confirmed from the client: reported as configured
    remote = only(found, kind="remote")
    assert remote.listen == ("remote:localhost:9001",) and remote.source == "config"
    # 1081 and 6001 have no socket: ssh did not open them (or failed to): not reported
    assert {f.listen_port for f in found} == {6000, 9001}


def test_clear_all_forwardings_in_argv_drops_config_forwards():
    ssh = proc(
        81, 500, "ssh", ["ssh", "-oClearAllForwardings=yes", "dbprod"], socks=[listen("127.0.0.1", 6000)]
    )
    found = classify_tunnels(snap(ssh), PG, ssh_configs={81: [CONFIG]})
    assert [(f.source, f.target) for f in found] == [("sockets", None)]


def test_argv_master_with_control_persist_is_a_mux_but_persist_no_is_not():
    master = proc(90, 1, "ssh", ["ssh", "-M", "-S", "/tmp/c", "-o", "ControlPersist=10m", "h", "true"])
    assert [(f.kind, f.listen) for f in classify_tunnels(snap(master), PG)] == [("mux", ("/tmp/c",))]
    plain = proc(91, 500, "ssh", ["ssh", "-o", "ControlMaster=auto", "-o", "ControlPersist=no", "h", "ls"])
    assert classify_tunnels(snap(plain), PG) == []


def test_timeout_around_ssh_is_not_a_restart_wrapper():
    t = proc(92, 500, "timeout", ["timeout", "60", "ssh", "-N", "-L", "1:db:5432", "h"])
    ssh = proc(93, 92, "ssh", ["ssh", "-N", "-L", "1:db:5432", "h"])
    assert [f.kind for f in classify_tunnels(snap(t, ssh), PG)] == ["local"]
