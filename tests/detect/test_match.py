"""Matches are safe to print: redacted previews, stable fingerprints, no raw secret held anywhere."""

from __future__ import annotations

import dataclasses

import pytest

from hoopctl.detect import Detector, Match
from hoopctl.detect.match import fingerprint, redact
from tests.detect.tokens import github_token, random_string

DET = Detector.default()


def _example_secrets() -> list[tuple[str, str]]:
    """(rule id, example text) for every string example of a pattern rule."""
    return [(r.id, ex) for r in DET.rules for ex in r.examples if isinstance(ex, str)]


@pytest.mark.parametrize(("rule_id", "text"), _example_secrets(), ids=lambda v: v[:30])
def test_preview_never_contains_the_whole_secret(rule_id: str, text: str) -> None:
    for m in DET.scan(text.encode(), "example.txt"):
        shown = m.preview.split(" (")[0].replace("…", "")
        # whatever the preview shows must be a small part: prefix + a 4-character tail at most
        assert len(shown) <= len(m.preview)
        for value in _values(text):
            if len(value) >= 8 and fingerprint(value) == m.fingerprint:
                assert value not in m.preview
                assert len(shown) < len(value) / 2 + 16


def _values(text: str) -> set[str]:
    import re

    return set(re.findall(r"[^\s\"'=:@,;/]{8,}", text))


def test_match_has_exactly_the_agreed_fields_and_no_secret() -> None:
    token = github_token("ghp_", seed=11)
    (m,) = DET.scan(f"token: {token}\n".encode(), "config.yaml")
    assert [f.name for f in dataclasses.fields(Match)] == [
        "rule_id",
        "type",
        "severity",
        "line",
        "fingerprint",
        "preview",
    ]
    assert token not in repr(m)
    assert m.preview == f"ghp_…{token[-4:]} (40 chars)"
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.line = 3  # type: ignore[misc]


def test_fingerprint_is_the_same_secret_in_any_file_and_context() -> None:
    token = github_token("ghp_", seed=12)
    a = DET.scan(f"GITHUB_TOKEN={token}\n".encode(), "/srv/app/.env")
    b = DET.scan(f"# notes\n\n  url: https://{token}@github.com/acme/x.git\n".encode(), "/home/x/notes.md")
    assert len(a) == len(b) == 1
    assert a[0].fingerprint == b[0].fingerprint == fingerprint(token)
    assert (a[0].line, b[0].line) == (1, 3)
    other = DET.scan(f"GITHUB_TOKEN={github_token('ghp_', seed=13)}\n".encode(), "/srv/app/.env")
    assert other[0].fingerprint != a[0].fingerprint


def test_several_secrets_on_one_line_are_each_reported_once() -> None:
    aws_id = "AKIAZPJAG3OL5DPH5I5U"
    gh = github_token("ghp_", seed=14)
    line = (
        f"AWS_ACCESS_KEY_ID={aws_id} GITHUB_TOKEN={gh} DATABASE_URL=postgres://app:Qp7vK2mZx9LtR4wN@db1/app\n"
    )
    found = DET.scan(line.encode(), "/home/ci/.bash_history")
    assert sorted(m.rule_id for m in found) == [
        "aws-access-key-id",
        "github-pat-classic",
        "postgres-url-password",
    ]
    assert {m.line for m in found} == {1}


def test_overlapping_hits_keep_the_most_specific_rule() -> None:
    gh = github_token("ghp_", seed=15)
    found = DET.scan(f'api_token = "{gh}"\n'.encode(), "settings.py")
    assert [m.rule_id for m in found] == ["github-pat-classic"]
    found = DET.scan(f"GITHUB_TOKEN={gh}\n".encode(), "/srv/app/.env")  # parser vs specific rule
    assert [m.rule_id for m in found] == ["github-pat-classic"]


def test_same_secret_twice_on_a_line_is_one_finding() -> None:
    pw = "Qp7vK2mZx9LtR4wN"
    found = DET.scan(f"postgres://a:{pw}@db1/x postgres://a:{pw}@db2/x\n".encode(), "notes.txt")
    assert len(found) == 1


@pytest.mark.parametrize("n", [3, 9, 16, 40, 200])
def test_redact_shows_a_short_tail_only(n: int) -> None:
    secret = random_string(n, seed=n)
    preview = redact(secret)
    assert secret not in preview
    assert preview.endswith(f"({n} chars)")
    tail = preview.split("…")[1].split(" ")[0]
    assert len(tail) <= 4
    assert len(tail) < max(1, n // 3) or tail == ""


def test_checksum_validator_lowers_severity_of_a_bad_checksum() -> None:
    good = DET.scan(github_token("ghp_", seed=16).encode(), "x")
    bad = DET.scan(github_token("ghp_", seed=16, valid=False).encode(), "x")
    assert good[0].severity == "critical"
    assert bad[0].severity == "medium"


def test_encrypted_private_key_is_reported_at_lower_severity() -> None:
    rule = DET.rule("private-key")
    by_kind = {ex.splitlines()[0]: DET.scan(ex.encode(), "id_key") for ex in rule.examples}
    assert by_kind["-----BEGIN EC PRIVATE KEY-----"][0].severity == "critical"
    assert by_kind["-----BEGIN OPENSSH PRIVATE KEY-----"][0].severity == "critical"
    assert by_kind["-----BEGIN ENCRYPTED PRIVATE KEY-----"][0].severity == "medium"


def test_private_key_inside_json_is_found_once() -> None:
    rule = DET.rule("gcp-service-account-key")
    found = DET.scan(rule.examples[0].encode(), "/srv/app/sa.json")
    assert [m.rule_id for m in found] == ["gcp-service-account-key"]
    assert found[0].line == 5


def test_detector_default_is_cached_and_has_many_types() -> None:
    assert Detector.default() is DET
    assert len({r.id for r in DET.rules}) >= 35


def test_percent_encoded_url_password_has_the_raw_password_fingerprint() -> None:
    (url,) = DET.scan(b"DATABASE_URL=postgres://app:T9%2Fk3Lm8Qz%40x@db1/app\n", "/srv/app/settings.ini")
    (pgpass,) = DET.scan(b"db1:5432:app:app:T9/k3Lm8Qz@x\n", "/home/app/.pgpass")
    assert url.fingerprint == pgpass.fingerprint == fingerprint("T9/k3Lm8Qz@x")
