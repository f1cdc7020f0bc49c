"""Content detectors: find emails, card numbers, IBANs, phone numbers and national ids inside a value.

Everything works on bytes, so a value in any ASCII-compatible client encoding (or not valid text at
all) is scanned without decoding and can never raise. Each detector pairs a regex with a checksum or
structure check (Luhn, mod-97, the SSN's invalid ranges, the NIR key, the BSN eleven-test) so that
plain integers, dates and UUIDs are not mistaken for sensitive data. A detector yields `Hit`s: the
span, what it is, and a normalised token so that the hash style gives the same output for
"4111 1111 1111 1111" and "4111-1111-1111-1111".
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

#: Every content kind a rule can name.
KINDS = ("email", "card", "iban", "phone", "us_ssn", "fr_nir", "nl_bsn", "credential")

#: Names that stand for several kinds. `nl_bsn` is opt-in only: one 9-digit number in 11 passes its
#: checksum, too many false positives for a default.
GROUPS: dict[str, tuple[str, ...]] = {
    "national_id": ("us_ssn", "fr_nir"),
    "default": ("email", "card", "iban", "phone", "us_ssn", "fr_nir", "credential"),
    "all": KINDS,
}

DIGITS = b"0123456789"


class Hit(NamedTuple):
    """One sensitive token inside a value: where it is, what it is, and its normalised form.
    (A NamedTuple: built in the hot path, and a tuple is several times cheaper to make than a
    frozen dataclass.)"""

    start: int
    end: int
    kind: str
    token: bytes


# -- checksums ---------------------------------------------------------------------------------------


#: Maps an ASCII digit to the Luhn value of that digit doubled (5 -> 10 -> 1), as a byte value.
_LUHN_DOUBLED = bytes.maketrans(b"0123456789", bytes([0, 2, 4, 6, 8, 1, 3, 5, 7, 9]))


def luhn_ok(digits: bytes) -> bool:
    """The Luhn (mod 10) check used by payment card numbers (`digits`: ASCII digits only).

    Counted from the right, every second digit is doubled; done with slices, translate and sum so
    no Python loop runs per digit."""
    kept = digits[-1::-2]
    doubled = digits[-2::-2].translate(_LUHN_DOUBLED)
    return (sum(kept) - 48 * len(kept) + sum(doubled)) % 10 == 0


#: IBAN length per country (ISO 13616 registry). A country not listed here is not an IBAN.
IBAN_LENGTHS: dict[bytes, int] = {
    cc.encode(): n
    for cc, n in {
        "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
        "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28,
        "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23,
        "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26,
        "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20,
        "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30,
        "NL": 18, "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22,
        "SA": 24, "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25, "SV": 28,
        "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
    }.items()
}  # fmt: skip

_IBAN_LETTERS = {c: str(c - 55) for c in range(65, 91)}


def iban_ok(compact: bytes) -> bool:
    """ISO 13616 check: the upper-case IBAN, first four characters moved to the end, is 1 mod 97."""
    if IBAN_LENGTHS.get(compact[:2]) != len(compact) or not compact[2:4].isdigit():
        return False
    rearranged = compact[4:] + compact[:4]
    number = "".join(_IBAN_LETTERS.get(c) or chr(c) for c in rearranged)
    return number.isdigit() and int(number) % 97 == 1


def ssn_ok(area: bytes, group: bytes, serial: bytes) -> bool:
    """US SSN ranges never issued: area 000, 666 and 900-999, group 00, serial 0000."""
    return area not in (b"000", b"666") and area[0] != 57 and group != b"00" and serial != b"0000"


def nir_ok(compact: bytes) -> bool:
    """French NIR: the 2-digit key is 97 - (first 13 characters mod 97); Corsica's 2A/2B count as 19/18."""
    body, key = compact[:13], compact[13:]
    body = body.replace(b"2A", b"19", 1) if body[5:7] == b"2A" else body
    body = body.replace(b"2B", b"18", 1) if body[5:7] == b"2B" else body
    if not body.isdigit() or not key.isdigit():
        return False
    return 97 - int(body) % 97 == int(key)


def bsn_ok(digits: bytes) -> bool:
    """Dutch BSN eleven-test: 9*d1 + 8*d2 + ... + 2*d8 - d9 is a multiple of 11 (and not zero)."""
    s = sum((9 - i) * (digits[i] - 48) for i in range(8)) - (digits[8] - 48)
    return s != 0 and s % 11 == 0


# -- finders -----------------------------------------------------------------------------------------
# Lookarounds use \w (ASCII in bytes patterns) so that a token glued to letters or digits (part of a
# longer number, a UUID, a hex string) is never taken for a sensitive value.

_EMAIL = re.compile(
    rb"(?<![\w.%+\-])[\w.%+\-]{1,64}@(?:[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![\w\-])"
)
# 13-19 digits, single spaces or dashes allowed between them, an issuer prefix 2-6. Not followed by a
# separator and another digit, so that "1234-5678-..." groups inside a UUID are not cut into a card.
_CARD = re.compile(rb"(?<!\w)(?<!\w-)[2-6](?:[ \-]?\d){12,18}(?!\w)(?![ \-]\d)")
_IBAN = re.compile(rb"(?<!\w)[A-Za-z]{2}\d{2}(?: ?[A-Za-z0-9]){11,30}")
_PHONE_INTL = re.compile(rb"(?<![\w+])\+[1-9](?:[ .\-]?\(?\d\)?){6,14}(?!\d)")
_PHONE_NANP = re.compile(rb"(?<![\w(+\-.])(?:\([2-9]\d\d\) ?|[2-9]\d\d[\-.])[2-9]\d\d[\-.]\d{4}(?![\w\-.])")
_SSN = re.compile(rb"(?<![\w\-])(\d{3})-(\d{2})-(\d{4})(?![\w\-])")
_NIR = re.compile(
    rb"(?<!\w)[12378] ?\d\d ?(?:0[1-9]|1[0-2]|[2-9]\d) ?(?:\d\d|2[ABab]) ?\d{3} ?\d{3} ?\d\d(?!\w)"
)
_BSN = re.compile(rb"(?<![\w.\-])\d{9}(?![\w.\-])")


def find_emails(v: bytes) -> list[Hit]:
    return [Hit(m.start(), m.end(), "email", m.group().lower()) for m in _EMAIL.finditer(v)]


def find_cards(v: bytes) -> list[Hit]:
    hits = []
    for m in _CARD.finditer(v):
        digits = m.group().translate(None, b" -")
        if luhn_ok(digits):
            hits.append(Hit(m.start(), m.end(), "card", digits))
    return hits


def find_ibans(v: bytes) -> list[Hit]:
    hits = []
    pos = 0
    while (m := _IBAN.search(v, pos)) is not None:
        text = m.group()
        want = IBAN_LENGTHS.get(text[:2].upper(), 0)
        # The regex may run on into following words; the country's fixed length says where it ends.
        end, seen = 0, 0
        while end < len(text) and seen < want:
            if text[end] != 32:
                seen += 1
            end += 1
        compact = text[:end].replace(b" ", b"").upper()
        after = m.start() + end
        if seen == want and (after >= len(v) or not (v[after : after + 1].isalnum())) and iban_ok(compact):
            hits.append(Hit(m.start(), after, "iban", compact))
            pos = after
        else:
            pos = m.start() + 1
    return hits


def find_phones(v: bytes) -> list[Hit]:
    hits = []
    if 43 in v:  # '+'
        for m in _PHONE_INTL.finditer(v):
            digits = m.group().translate(None, b" .-()+")
            if 8 <= len(digits) <= 15:
                hits.append(Hit(m.start(), m.end(), "phone", b"+" + digits))
    if 45 in v or 46 in v:  # '-' or '.'
        for m in _PHONE_NANP.finditer(v):
            hits.append(Hit(m.start(), m.end(), "phone", b"+1" + m.group().translate(None, b" .-()")))
    return hits


def find_ssns(v: bytes) -> list[Hit]:
    return [
        Hit(m.start(), m.end(), "us_ssn", m.group(1) + m.group(2) + m.group(3))
        for m in _SSN.finditer(v)
        if ssn_ok(m.group(1), m.group(2), m.group(3))
    ]


def find_nirs(v: bytes) -> list[Hit]:
    hits = []
    for m in _NIR.finditer(v):
        compact = m.group().replace(b" ", b"").upper()
        if nir_ok(compact):
            hits.append(Hit(m.start(), m.end(), "fr_nir", compact))
    return hits


def find_bsns(v: bytes) -> list[Hit]:
    return [Hit(m.start(), m.end(), "nl_bsn", m.group()) for m in _BSN.finditer(v) if bsn_ok(m.group())]


# -- prefilter shapes --------------------------------------------------------------------------------
# A value's *shape* maps digits to '9', ASCII letters to 'a' and '.' to '-', in one C-level translate;
# its *compact* shape also drops the separators allowed inside cards, NIRs and phone numbers. The
# content scanner tests these with a few substring checks before it runs any finder's regex, so a
# timestamp stored as text ("9999-99-99 99:99:99-999999+99") runs none.

SHAPE = bytes.maketrans(
    b"0123456789.ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
    b"9999999999-" + b"a" * 52,
)
COMPACT_DROP = b" -()"


@dataclass(frozen=True, slots=True)
class Finder:
    """A detector and the least length a match of it needs."""

    kind: str
    find: Callable[[bytes], list[Hit]]
    min_len: int


#: In priority order: when two hits overlap, the one found by the earlier finder wins.
FINDERS: dict[str, Finder] = {
    "email": Finder("email", find_emails, 6),
    "iban": Finder("iban", find_ibans, 15),
    "card": Finder("card", find_cards, 13),
    "fr_nir": Finder("fr_nir", find_nirs, 15),
    "us_ssn": Finder("us_ssn", find_ssns, 11),
    "nl_bsn": Finder("nl_bsn", find_bsns, 9),
    "phone": Finder("phone", find_phones, 9),  # "+" and 8 digits
}
