"""Any bytes in, never an exception out; and bad rule files fail with a message naming the rule."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hoopctl.detect import Detector, RuleError, load_rules
from hoopctl.detect.parsers import PARSERS
from hoopctl.detect.prefilter import KeywordIndex
from tests.detect.tokens import github_token

DET = Detector.default()
PATHS = [
    "x.txt",
    "/home/a/.pgpass",
    "/home/a/.netrc",
    "/home/a/.kube/config",
    "/srv/.env",
    "/root/.bash_history",
    "/etc/systemd/system/a.service",
    "/home/a/.docker/config.json",
    "/home/a/.aws/credentials",
    "/etc/gitlab-runner/config.toml",
    "/root/.vault-token",
    "/home/a/.npmrc",
    "/opt/r/.credentials_rsaparams",
]
# fragments that steer random input into the rules and parsers
FRAGMENTS = [
    b"password=",
    b"token: ",
    b"ghp_",
    b"-----BEGIN RSA PRIVATE KEY-----",
    b"-----END RSA PRIVATE KEY-----",
    b"eyJ",
    b"postgres://u:",
    b"@h/",
    b"AKIA",
    b"\n",
    b"\r\n",
    b"\x00",
    b"\xff\xfe",
    b"'",
    b'"',
    b"\\",
    b"export ",
    b"Environment=",
    b"machine m password ",
    b"sk-ant-api03-",
    b"xoxb-1-2-",
    b"=",
    b":",
]

chunks = st.one_of(st.binary(max_size=64), st.sampled_from(FRAGMENTS))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(parts=st.lists(chunks, max_size=40), path=st.sampled_from(PATHS))
def test_scan_never_raises_on_any_bytes(parts: list[bytes], path: str) -> None:
    data = b"".join(parts)
    for m in DET.scan(data, path):
        assert m.line >= 1
        assert m.severity in ("critical", "high", "medium", "low")
        assert len(m.fingerprint) == 16


@settings(max_examples=100, deadline=None)
@given(text=st.text(max_size=300))
def test_parsers_never_raise_on_any_text(text: str) -> None:
    for parse in PARSERS.values():
        for _rule, start, end in parse(text):
            assert 0 <= start <= end <= len(text)


def test_empty_and_huge_single_line_inputs() -> None:
    assert DET.scan(b"", "x") == []
    blob = b"A" * 3_000_000 + b" password='Zk8#qPm2!vRt7wLx' " + b"B" * 3_000_000
    (m,) = DET.scan(blob, "bundle.min.js")
    assert m.rule_id == "generic-password"


def test_both_prefilter_backends_agree() -> None:
    words = ["ghp_", "password", "://"]
    text = b"GHP_x PassWord=1 http://a ghp_ ://"
    a = sorted(KeywordIndex(words, backend="ahocorasick").hits(text)[0])
    try:
        b = sorted(KeywordIndex(words, backend="hyperscan").hits(text)[0])
    except (ImportError, AttributeError):
        pytest.skip("hyperscan not installed")
    assert a == b == [(4, 0), (14, 1), (24, 2), (30, 0), (34, 2)]


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("rules: [{id: a, name: A, severity: high, keywords: [x], pattern: 'x'}]", "named group 'secret'"),
        ("rules: [{id: a, name: A, severity: urgent, keywords: [x], pattern: '(?P<secret>x)'}]", "severity"),
        ("rules: [{id: a, name: A, severity: high, pattern: '(?P<secret>x)'}]", "keywords"),
        ("rules: [{id: a, name: A, severity: high, keywords: [x], pattern: '(?P<secret>x'}]", "bad pattern"),
        (
            "rules: [{id: a, name: A, severity: high, keywords: [x], pattern: '(?P<secret>x)', colour: red}]",
            "unknown key",
        ),
        (
            "rules: [{id: a, name: A, severity: high, parser: pgpass}, {id: a, name: B, severity: low, parser: netrc}]",
            "duplicate",
        ),
        ("nothing: here", "'rules' list"),
    ],
)
def test_bad_rule_files_are_refused_with_a_clear_message(yaml_text: str, message: str) -> None:
    with pytest.raises(RuleError, match=message):
        load_rules(yaml_text)


def test_unknown_validator_is_refused() -> None:
    rules = load_rules(
        "rules: [{id: a, name: A, severity: high, keywords: [x], pattern: '(?P<secret>x)', validator: nope}]"
    )
    with pytest.raises(ValueError, match="unknown validator"):
        Detector(rules)


def test_keyword_dense_file_still_finds_its_secrets() -> None:
    # more keyword hits than the prefilter lists: the engine switches to whole-buffer search
    noise = b"INFO auth: token refreshed for user=alice\n" * 25_000
    data = noise + b"export GITHUB_TOKEN=" + github_token("ghp_", seed=31).encode() + b"\n" + noise
    found = DET.scan(data, "/var/log/auth.log")
    assert [(m.rule_id, m.line) for m in found] == [("github-pat-classic", 25_001)]


def test_many_armour_lines_without_end_do_not_blow_up() -> None:
    import time

    data = b"-----BEGIN RSA PRIVATE KEY-----\nAAAA\n" * 20_000
    t = time.process_time()
    assert DET.scan(data, "keys.txt") == []
    assert time.process_time() - t < 5


def test_fallback_prefilter_finds_the_same_examples() -> None:
    slow = Detector(DET.rules, prefilter="ahocorasick")
    for rule in DET.rules:
        for ex in rule.examples:
            text, path = (ex["text"], ex["path"]) if isinstance(ex, dict) else (ex, "example.txt")
            assert slow.scan(text.encode(), path) == DET.scan(text.encode(), path), rule.id
