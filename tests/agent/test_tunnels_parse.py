"""ssh/socat/ncat argv parsing and protected-resource matching: pure, no processes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hoopctl.detect.tunnels import (
    parse_forward,
    parse_ncat_argv,
    parse_protected,
    parse_socat_argv,
    parse_ssh_argv,
)


def fwd_tuples(argv: list[str]) -> list[tuple]:
    return [
        (f.kind, f.listen_host, f.listen_port, f.listen_path, f.target_host, f.target_port, f.target_path)
        for f in parse_ssh_argv(argv).forwards
    ]


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["ssh", "-L", "8080:db:5432", "h"], [("local", None, 8080, None, "db", 5432, None)]),
        (["ssh", "-L8080:db:5432", "h"], [("local", None, 8080, None, "db", 5432, None)]),
        (["ssh", "-NfL", "8080:db:5432", "h"], [("local", None, 8080, None, "db", 5432, None)]),
        (["ssh", "-NfL8080:db:5432", "h"], [("local", None, 8080, None, "db", 5432, None)]),
        (["ssh", "-L", "0.0.0.0:8080:db:5432", "h"], [("local", "0.0.0.0", 8080, None, "db", 5432, None)]),
        (["ssh", "-L", ":8080:db:5432", "h"], [("local", "*", 8080, None, "db", 5432, None)]),
        (["ssh", "-L", "*:8080:db:5432", "h"], [("local", "*", 8080, None, "db", 5432, None)]),
        (
            ["ssh", "-L", "[::1]:8080:[fd00::5]:5432", "h"],
            [("local", "::1", 8080, None, "fd00::5", 5432, None)],
        ),
        (["ssh", "-L", "8080/fd00::5/5432", "h"], [("local", None, 8080, None, "fd00::5", 5432, None)]),
        (
            ["ssh", "-L", "8080:/run/postgresql/.s.PGSQL.5432", "h"],
            [("local", None, 8080, None, None, None, "/run/postgresql/.s.PGSQL.5432")],
        ),
        (
            ["ssh", "-L", "/tmp/l.sock:db:5432", "h"],
            [("local", None, None, "/tmp/l.sock", "db", 5432, None)],
        ),
        (["ssh", "-R", "9000:localhost:5432", "h"], [("remote", None, 9000, None, "localhost", 5432, None)]),
        (["ssh", "-R", "9000", "h"], [("remote", None, 9000, None, None, None, None)]),
        (["ssh", "-R", "0.0.0.0:9000", "h"], [("remote", "0.0.0.0", 9000, None, None, None, None)]),
        (["ssh", "-D", "1080", "h"], [("dynamic", None, 1080, None, None, None, None)]),
        (["ssh", "-D", "127.0.0.1:1080", "h"], [("dynamic", "127.0.0.1", 1080, None, None, None, None)]),
        (["ssh", "-D[::1]:1080", "h"], [("dynamic", "::1", 1080, None, None, None, None)]),
        (["ssh", "-w", "0:1", "h"], [("tun", "0", None, None, "1", None, None)]),
        (["ssh", "-o", "LocalForward=8080 db:5432", "h"], [("local", None, 8080, None, "db", 5432, None)]),
        (["ssh", "-oLocalForward 8080 db:5432", "h"], [("local", None, 8080, None, "db", 5432, None)]),
        (["ssh", "-oDynamicForward=1080", "h"], [("dynamic", None, 1080, None, None, None, None)]),
        (["ssh", "-o", "dynamicforward 1080", "h"], [("dynamic", None, 1080, None, None, None, None)]),
        (
            ["ssh", "-o", 'RemoteForward="9000 127.0.0.1:22"', "h"],
            [("remote", None, 9000, None, "127.0.0.1", 22, None)],
        ),
        (["ssh", "-o", "Tunnel=yes", "h"], [("tun", "any", None, None, "any", None, None)]),
        # options after the destination are still options (ssh's getopt restarts)
        (["ssh", "h", "-L", "8080:db:5432"], [("local", None, 8080, None, "db", 5432, None)]),
        # ... but not inside the remote command
        (["ssh", "h", "echo", "-L", "8080:db:5432"], []),
        (["ssh", "--", "h", "-L", "8080:db:5432"], []),
        # a value that looks like a forward flag is a value: -l takes a login name
        (["ssh", "-l", "-L8080:db:5432", "h"], []),
        (["ssh", "-i", "key", "-p", "22", "-N", "h"], []),
        # ssh would refuse these specs
        (["ssh", "-L", "8080", "h"], []),
        (["ssh", "-L", "[::1:8080:db:5432", "h"], []),
    ],
)
def test_ssh_forwards_parse_like_ssh(argv, expected):
    assert fwd_tuples(argv) == expected


def test_multiple_forwards_in_one_command_are_all_kept():
    argv = ["ssh", "-fN", "-L", "1:a:2", "-R3:b:4", "-D", "5", "-oLocalForward=6 c:7", "h"]
    assert [f.kind for f in parse_ssh_argv(argv).forwards] == ["local", "remote", "dynamic", "local"]


def test_destination_master_and_control_options_are_read():
    args = parse_ssh_argv(["ssh", "-M", "-S", "/tmp/c", "-o", "ControlPersist=60", "-p2222", "u@h"])
    assert args.destination == "u@h"
    assert args.master and args.control_path == "/tmp/c" and args.port == 2222
    assert parse_ssh_argv(["ssh", "-o", "ControlMaster=auto", "h"]).master
    assert not parse_ssh_argv(["ssh", "-o", "ControlMaster=no", "h"]).master
    assert parse_ssh_argv(["ssh", "-O", "exit", "-S", "/tmp/c", "h"]).control_command == "exit"


def test_forward_listen_and_target_text_bracket_ipv6():
    f = parse_forward("local", "[::1]:8080:[fd00::5]:5432")
    assert f is not None
    assert f.listen_text == "[::1]:8080" and f.target_text == "[fd00::5]:5432"
    assert parse_forward("local", "8080:db:5432").listen_text == "localhost:8080"


@pytest.mark.parametrize(
    "argv, listen, target",
    [
        (
            ["socat", "TCP-LISTEN:15432,fork,reuseaddr", "TCP:127.0.0.1:5432"],
            (None, 15432),
            ("127.0.0.1", 5432),
        ),
        (["socat", "-d", "-d", "tcp4-listen:1,bind=10.0.0.1", "tcp4:db:5432"], ("10.0.0.1", 1), ("db", 5432)),
        (["socat", "-T", "30", "TCP:[fd00::5]:5432", "TCP6-LISTEN:2"], (None, 2), ("fd00::5", 5432)),
        (["socat", "TCP-L:3", "SOCKS4A:proxy:db:5432"], (None, 3), ("db", 5432)),
        (["socat", "TCP-LISTEN:4", "UNIX-CONNECT:/run/pg.sock"], (None, 4), (None, None)),
        (["socat", "TCP-LISTEN:5", "EXEC:nc db 5432"], (None, 5), ("db", 5432)),
    ],
)
def test_socat_relays_parse(argv, listen, target):
    relay = parse_socat_argv(argv)
    assert relay is not None
    assert (relay.listen_host, relay.listen_port) == listen
    assert (relay.target_host, relay.target_port) == target


@pytest.mark.parametrize(
    "argv",
    [
        ["socat", "-", "TCP:db:5432"],  # a client, not a relay
        ["socat", "TCP-LISTEN:1", "STDOUT"],  # a listener with no target
        ["socat", "TCP-LISTEN:1"],
    ],
)
def test_socat_non_relays_are_not_relays(argv):
    assert parse_socat_argv(argv) is None


@pytest.mark.parametrize(
    "argv, listen, target",
    [
        (["ncat", "-lk", "15432", "--sh-exec", "ncat 127.0.0.1 5432"], (None, 15432), ("127.0.0.1", 5432)),
        (["ncat", "-l", "-p", "8", "-c", "nc db 5432"], (None, 8), ("db", 5432)),
        (["ncat", "--listen", "127.0.0.1", "9", "--sh-exec=ncat db 5432"], ("127.0.0.1", 9), ("db", 5432)),
        (["ncat", "-lkp10", "-e", "/usr/bin/socat - TCP:db:5432"], (None, 10), ("db", 5432)),
    ],
)
def test_ncat_relays_parse(argv, listen, target):
    relay = parse_ncat_argv(argv)
    assert relay is not None
    assert (relay.listen_host, relay.listen_port) == listen
    assert (relay.target_host, relay.target_port) == target


@pytest.mark.parametrize(
    "argv", [["ncat", "-l", "8080"], ["ncat", "db", "5432"], ["nc", "-c", "nc db 1", "db", "2"]]
)
def test_ncat_listeners_without_target_and_clients_are_not_relays(argv):
    assert parse_ncat_argv(argv) is None


@pytest.mark.parametrize(
    "spec, host, port, expected",
    [
        ("127.0.0.1:5432", "127.0.0.1", 5432, True),
        ("127.0.0.1:5432", "127.0.0.1", 5433, False),
        ("127.0.0.1:5432", "localhost", 5432, True),
        ("localhost:5432", "127.0.0.1", 5432, True),
        ("localhost:5432", "::1", 5432, False),  # loopback v4 only, by the CIDR it stands for
        ("10.0.0.0/8:5432", "10.2.3.4", 5432, True),
        ("10.0.0.0/8:5432", "::ffff:10.2.3.4", 5432, True),
        ("10.0.0.0/8:*", "10.2.3.4", 1, True),
        ("10.0.0.0/8:5432", "11.0.0.1", 5432, False),
        ("[fd00::5]:5432", "fd00::5", 5432, True),
        ("[fd00::/16]:5432", "[fd00::9]", 5432, True),
        ("DB.internal:5432", "db.INTERNAL", 5432, True),
        ("db.internal:5432", "10.0.0.5", 5432, False),
        ("db.internal:5432", None, 5432, False),
    ],
)
def test_protected_resources_match_hosts_cidrs_and_ports(spec, host, port, expected):
    assert parse_protected(spec).matches(host, port) is expected


@pytest.mark.parametrize(
    "spec", ["db", "db:", ":5432", "db:0", "db:70000", "db:x", "[::1", "bad host:1", "a_b:1"]
)
def test_bad_protected_specs_are_refused_with_the_spec_named(spec):
    with pytest.raises(ValueError, match="protected resource"):
        parse_protected(spec)


# -- properties: any argv is read without an exception, and forwards built from parts parse back

_ports = st.integers(min_value=1, max_value=65535)
_hosts = st.sampled_from(["db", "10.0.0.5", "db.internal", "fd00::5", "::1", "localhost"])
_binds = st.sampled_from([None, "127.0.0.1", "0.0.0.0", "::1", "*"])


def _h(host: str) -> str:
    return f"[{host}]" if ":" in host else host


@given(st.lists(st.text(max_size=20), max_size=12))
def test_any_argv_parses_without_error(argv):
    parse_ssh_argv(["ssh", *argv])
    parse_socat_argv(["socat", *argv])
    parse_ncat_argv(["ncat", *argv])


@given(_binds, _ports, _hosts, _ports, st.sampled_from(["-L", "-R"]), st.booleans(), st.booleans())
def test_forward_specs_built_from_parts_parse_back(bind, lport, host, hport, flag, attached, combined):
    spec = (f"{_h(bind)}:" if bind else "") + f"{lport}:{_h(host)}:{hport}"
    if combined:
        argv = [
            "ssh",
            f"-Nf{flag[1]}{spec}" if attached else f"-Nf{flag[1]}",
            *([] if attached else [spec]),
            "h",
        ]
    else:
        argv = ["ssh", f"{flag}{spec}"] if attached else ["ssh", flag, spec]
        argv.append("h")
    [f] = parse_ssh_argv(argv).forwards
    assert f.kind == ("local" if flag == "-L" else "remote")
    assert (f.listen_host, f.listen_port, f.target_host, f.target_port) == (bind, lport, host, hport)
