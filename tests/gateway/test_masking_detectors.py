"""Content detectors: each kind with positives, and the look-alikes (Luhn-invalid numbers, plain
integers, UUIDs, dates, timestamps) that must stay untouched."""

from __future__ import annotations

import pytest

from hoopctl.detect import Detector
from hoopctl.gateway.masking.content import ContentScanner, credential_check
from hoopctl.gateway.masking.detectors import (
    bsn_ok,
    find_bsns,
    find_cards,
    find_emails,
    find_ibans,
    find_nirs,
    find_phones,
    find_ssns,
    iban_ok,
    luhn_ok,
)

# Look-alikes no detector may flag.
INNOCENT = [
    b"42",
    b"1234567890",
    b"14155552671",  # a plain integer with a phone's digits
    b"41111111111111111111",  # 20 digits: longer than any card
    b"2024-01-15",
    b"2024-01-15 10:30:00.123456+01",
    b"2024-01-15T10:30:00+0100",
    b"123e4567-e89b-12d3-a456-426614174000",
    b"12345678-1234-5678-1234-567812345678",  # an all-digit UUID
    b"550e8400-e29b-41d4-a716-446655440000",
    b"192.168.100.200",
    b"version 1.22.333",
    b"3.14159265358979323846",
    b"order #4111111111111112 shipped",  # Luhn-invalid
    b"de305d54-75b4-431b-adb2-eb6b9e546014",
    b"sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
]


@pytest.mark.parametrize(
    "text,found",
    [
        (b"john@example.com", b"john@example.com"),
        (b"Mail: A.B+tag@Sub.Example.co.uk.", b"a.b+tag@sub.example.co.uk"),
        (b'{"email": "x_y@corp.io"}', b"x_y@corp.io"),
    ],
)
def test_finds_emails(text, found):
    assert [h.token for h in find_emails(text)] == [found]


@pytest.mark.parametrize(
    "text", [b"user@localhost", b"@handle", b"a@b", b"first.last at example.com", b"x@y.1com"]
)
def test_ignores_email_lookalikes(text):
    assert find_emails(text) == []


@pytest.mark.parametrize(
    "text",
    [
        b"4111111111111111",
        b"4111 1111 1111 1111",
        b"4111-1111-1111-1111",
        b"5555555555554444",
        b"378282246310005",
        b"6011111111111117",
        b"4222222222222",
        b"6304000000000000000",
        b"paid with 4111 1111 1111 1111 yesterday",
    ],
)
def test_finds_luhn_valid_cards(text):
    hits = find_cards(text)
    assert len(hits) == 1 and luhn_ok(hits[0].token) and 13 <= len(hits[0].token) <= 19


@pytest.mark.parametrize(
    "text",
    [b"4111111111111112", b"4111 1111 1111 1112", b"1234567890123", b"0000000000000", b"411111111111"]
    + INNOCENT,
)
def test_ignores_card_lookalikes(text):
    assert find_cards(text) == []


@pytest.mark.parametrize(
    "text,compact",
    [
        (b"GB82 WEST 1234 5698 7654 32", b"GB82WEST12345698765432"),
        (b"DE89370400440532013000", b"DE89370400440532013000"),
        (b"iban: nl91abna0417164300.", b"NL91ABNA0417164300"),
        (b"FR14 2004 1010 0505 0001 3M02 606 and more", b"FR1420041010050500013M02606"),
    ],
)
def test_finds_mod97_ibans(text, compact):
    assert [h.token for h in find_ibans(text)] == [compact]


def test_finds_two_ibans_side_by_side():
    assert len(find_ibans(b"NL91 ABNA 0417 1643 00 DE89 3704 0044 0532 0130 00")) == 2


@pytest.mark.parametrize(
    "text",
    [
        b"GB82WEST12345698765433",
        b"XX82WEST12345698765432",
        b"GB82WEST1234569876543",
        b"GB82WEST123456987654321",
    ]
    + INNOCENT,
)
def test_ignores_iban_lookalikes(text):
    assert find_ibans(text) == []
    assert not iban_ok(text.replace(b" ", b""))


@pytest.mark.parametrize(
    "text",
    [b"+44 20 7946 0958", b"+1-415-555-2671", b"+14155552671", b"(415) 555-2671", b"call 415-555-2671 now"],
)
def test_finds_phones(text):
    assert len(find_phones(text)) == 1


@pytest.mark.parametrize("text", [b"+12", b"+0100", b"1e+10", b"015-555-2671"] + INNOCENT)
def test_ignores_phone_lookalikes(text):
    assert find_phones(text) == []


@pytest.mark.parametrize("text", [b"123-45-6789", b"ssn 078-05-1121, ok"])
def test_finds_ssns(text):
    assert len(find_ssns(text)) == 1


@pytest.mark.parametrize(
    "text",
    [b"000-12-3456", b"666-12-3456", b"900-12-3456", b"123-00-4567", b"123-45-0000", b"123456789"] + INNOCENT,
)
def test_ignores_invalid_ssns(text):
    assert find_ssns(text) == []


@pytest.mark.parametrize("text", [b"185057800608491", b"1 85 05 78 006 084 91", b"2 69 02 2A 341 732 14"])
def test_finds_nirs_with_valid_key(text):
    assert len(find_nirs(text)) == 1


@pytest.mark.parametrize(
    "text", [b"185057800608492", b"1 85 05 78 006 084 90", b"985057800608491"] + INNOCENT
)
def test_ignores_nirs_with_bad_key(text):
    assert find_nirs(text) == []


def test_bsn_eleven_test():
    assert bsn_ok(b"111222333") and bsn_ok(b"123456782")
    assert not bsn_ok(b"123456789") and not bsn_ok(b"000000000")
    assert len(find_bsns(b"bsn 123456782")) == 1
    assert find_bsns(b"1234567820") == [] and find_bsns(b"123.456.782") == []


POSITIVES = [
    b"write to john@example.com",
    b"4111 1111 1111 1111",
    b"Amex 3782-822463-10005",
    b"iban: nl91abna0417164300.",
    b"+44 20 7946 0958",
    b"(415) 555-2671",
    b"+12345678",
    b"415.555.2671",
    b"123-45-6789",
    b"1 85 05 78 006 084 91",
    b"2 69 02 2A 341 732 14",
    b"bsn 123456782",
]


@pytest.mark.parametrize("text", POSITIVES)
def test_scanner_prefilters_let_every_positive_through(text):
    scan = ContentScanner(
        dict.fromkeys(("email", "card", "iban", "phone", "us_ssn", "fr_nir", "nl_bsn"), "full"), None
    )
    out = scan(text)
    assert out is not text and b"****" in out


@pytest.mark.parametrize("text", INNOCENT)
def test_scanner_leaves_lookalikes_alone(text):
    kinds = ("email", "card", "iban", "phone", "us_ssn", "fr_nir")
    scan = ContentScanner({k: "full" for k in kinds}, None)
    assert scan(text) is text


def test_credentials_found_by_the_scanner_engine_mask_the_whole_value():
    secret = b"DATABASE_URL=postgres://billing:Qp7vK2mZx9LtR4wN@db1.internal:5432/billing"
    assert Detector.default().scan(secret, "")  # the engine itself agrees it is a credential
    check = credential_check()
    assert check(secret)
    assert not check(b"an ordinary sentence about tokens and passwords")
    scan = ContentScanner({"credential": "full", "email": "partial"}, None, check)
    assert scan(secret) == b"****"
    assert scan(b"nothing secret in here") == b"nothing secret in here"


def test_credential_prefilter_agrees_with_the_engine_on_every_rule_example():
    detector = Detector.default()
    check = credential_check()
    samples = [
        ex
        for rule in detector.rules
        for ex in (*rule.examples, *rule.negative_examples)
        if isinstance(ex, str) and rule.pattern is not None
    ]
    assert len(samples) > 50
    for text in samples:
        data = text.encode()
        assert check(data) == bool(detector.scan(data, "")), text[:40]
