"""The agent's policy (pure) and config parsing: actions by kind and scope, allowlists, thresholds, errors."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from hoopctl.agent.config import ConfigError, existing_roots, load_config, parse_config
from hoopctl.agent.notify import Notifier, watchdog_interval
from hoopctl.agent.policy import Subject, decide, path_matches, split_target
from hoopctl.agent.watch import Job, WorkQueue
from hoopctl.config import Section

EXAMPLE = Path(__file__).resolve().parents[2] / "hoopctl" / "agent" / "example.yaml"


def policy_of(data: dict, file: str = "agent.yaml"):
    return parse_config(Section(data, file=file)).policy


def test_report_only_by_default():
    p = policy_of({})
    d = decide(p, Subject("credential", user="alice", path="/tmp/x/.env", rule="r", fingerprint="f"))
    assert d.action == "quarantine" and not d.apply and not d.acts


def test_enforce_acts_and_scoped_rule_wins_first_match():
    p = policy_of(
        {
            "mode": "enforce",
            "policy": {
                "credential": {
                    "rules": [
                        {"paths": ["/srv/keep"], "action": "report"},
                        {"users": ["bob"], "action": "quarantine"},
                    ]
                },
                "tunnel": {"rules": [{"targets": ["10.0.0.5:5432"], "action": "adopt"}], "long_lived": "60s"},
            },
        }
    )
    kept = decide(p, Subject("credential", user="bob", path="/srv/keep/a/.env"))
    assert kept.action == "report" and not kept.acts and "rules[0]" in kept.why
    moved = decide(p, Subject("credential", user="bob", path="/home/bob/.env"))
    assert moved.acts and moved.action == "quarantine"
    db = decide(p, Subject("tunnel", user="ci", target="10.0.0.5:5432", age=120))
    assert db.action == "adopt" and db.acts
    other = decide(p, Subject("tunnel", user="ci", target="10.0.0.6:22", age=120))
    assert other.action == "terminate" and other.acts


def test_thresholds_make_young_tunnels_and_orphans_wait():
    p = policy_of(
        {"mode": "enforce", "policy": {"tunnel": {"long_lived": "10m"}, "orphan": {"min_age": "5m"}}}
    )
    assert decide(p, Subject("tunnel", target="h:1", age=599)).action == "wait"
    assert decide(p, Subject("tunnel", target="h:1", age=601)).action == "terminate"
    assert decide(p, Subject("orphan", age=10)).action == "wait"
    assert decide(p, Subject("orphan", age=301)).acts


def test_allowlists_beat_everything():
    p = policy_of(
        {
            "mode": "enforce",
            "allow": {
                "paths": ["/srv/allowed"],
                "users": ["svc"],
                "fingerprints": ["abcd"],
                "tunnel_targets": ["127.0.0.1:5432"],
            },
        }
    )
    for s in (
        Subject("credential", user="a", path="/srv/allowed/deep/.env"),
        Subject("credential", user="svc", path="/tmp/.env"),
        Subject("credential", user="a", path="/tmp/.env", fingerprint="abcd"),
        Subject("tunnel", user="a", target="localhost:5432", age=10**6),
    ):
        d = decide(p, s)
        assert d.action == "allow" and not d.acts, s
    assert decide(p, Subject("credential", user="a", path="/srv/allowedx/.env")).acts


def test_path_globs_and_targets():
    assert path_matches("/home/al/ci/.env", "/home/*/ci")
    assert path_matches("/home/al/ci/x/y", "/home/*/ci/")
    assert not path_matches("/home/al/cix", "/home/*/ci")
    assert split_target("[::1]:5432") == ("::1", 5432)
    assert split_target("/run/x.sock") == (None, None)


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"mode": "on"}, "agent.yaml: mode: expected one of report, enforce"),
        ({"files": {"watch": ["relative"]}}, "files.watch[0]: expected an absolute path"),
        ({"files": {"debounce": "fast"}}, "files.debounce: expected a duration"),
        ({"files": {"max_file_size": "lots"}}, "files.max_file_size: expected a size"),
        ({"policy": {"credential": {"action": "terminate"}}}, "policy.credential.action: expected one of"),
        ({"policy": {"tunnel": {"min_age": "5m"}}}, "policy.tunnel.min_age: not a setting of tunnel"),
        (
            {"policy": {"orphan": {"rules": [{"user": ["x"], "action": "report"}]}}},
            "policy.orphan.rules[0].user",
        ),
        ({"processes": {"protected": ["db:port"]}}, "processes.protected:"),
        ({"allow": {"fingerprint": []}}, "allow.fingerprint: unknown key"),
        ({"gateway_admin_socket": "run/x"}, "gateway_admin_socket: expected an absolute path"),
    ],
)
def test_bad_config_is_one_line_naming_the_key(data, needle):
    with pytest.raises(ConfigError) as err:
        parse_config(Section(data, file="agent.yaml"))
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_example_config_is_valid_and_report_only():
    cfg = load_config(EXAMPLE)
    assert cfg.mode == "report" and not cfg.policy.enforce
    assert cfg.files.debounce == pytest.approx(0.03)
    assert "/home/*/actions-runner/_work" in cfg.files.watch
    assert cfg.with_enforce(True).policy.enforce


def test_existing_roots_fold_nested_and_skip_symlinks(tmp_path: Path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "c").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "c")
    roots = existing_roots(
        (str(tmp_path / "a"), str(tmp_path / "a" / "b"), str(tmp_path / "*"), str(tmp_path / "missing")),
        skip=(str(tmp_path / "c"),),
    )
    assert roots == [str(tmp_path / "a")]


def test_work_queue_debounces_and_close_write_is_immediate():
    q = WorkQueue(debounce=0.05, debounce_max=0.2)
    job = Job("file", "/x")
    for _ in range(5):
        q.put(job)
    assert q.get(timeout=0.01) is None  # still being written
    assert q.get(timeout=0.2) == job
    assert q.get(timeout=0.06) is None  # collapsed into one
    q.put(Job("file", "/y"))
    q.put(Job("file", "/y"), now=True)
    assert q.get(timeout=0.005) == Job("file", "/y")


def test_notifier_speaks_sd_notify_and_watchdog_interval(tmp_path: Path):
    path = tmp_path / "notify.sock"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    srv.bind(str(path))
    try:
        n = Notifier({"NOTIFY_SOCKET": str(path)})
        assert n.ready("up") and n.watchdog() and n.stopping()
        got = [srv.recv(4096).decode() for _ in range(3)]
        assert got[0].startswith("READY=1\n") and "STATUS=up" in got[0]
        assert got[1] == "WATCHDOG=1" and got[2].startswith("STOPPING=1")
    finally:
        srv.close()
    assert not Notifier({}).ready()
    assert watchdog_interval({"WATCHDOG_USEC": "2000000"}) == 1.0
    assert watchdog_interval({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval({}) is None


@pytest.mark.parametrize("verb", ["run", "check"])
def test_cli_bad_config_is_one_line_and_exit_2(tmp_path: Path, verb: str):
    from click.testing import CliRunner

    from hoopctl.cli import main

    bad = tmp_path / "agent.yaml"
    bad.write_text("mode: enforce\nfiles:\n  watch: [/tmp]\n  debounse: 10ms\n")
    result = CliRunner().invoke(main, ["agent", verb, "--config", str(bad)])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "files.debounse: unknown key" in lines[0] and str(bad) in lines[0]


def test_cli_check_summarises_a_good_config(tmp_path: Path):
    from click.testing import CliRunner

    from hoopctl.cli import main

    result = CliRunner().invoke(main, ["agent", "check", "--config", str(EXAMPLE)])
    assert result.exit_code == 0 and "ok: mode report" in result.output
