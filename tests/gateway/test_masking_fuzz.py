"""Property tests: masking never raises on any bytes (invalid UTF-8 included), never changes the
number of values, and stays linear on adversarial input (no regex blow-up)."""

from __future__ import annotations

import time

from hypothesis import given, settings
from hypothesis import strategies as st

from hoopctl.gateway.masking import Field, MaskingRules
from hoopctl.gateway.masking import detectors as det
from hoopctl.gateway.masking.content import ContentScanner
from hoopctl.gateway.masking.detectors import KINDS

RULES = MaskingRules.from_config(
    [
        {"column": "*email*", "style": "partial"},
        {"column": "h*", "style": "hash"},
        {"field": "db.public.t.n*", "style": "null"},
        {"content": "all", "style": {"default": "partial", "iban": "hash", "phone": "full"}},
    ],
    hash_key=b"0123456789abcdef",
)
TYPES = [25, 1043, 23, 20, 1700, 16, 3802, 114, 17, 99999]

# Bytes biased towards what the detectors look at: digits, separators, '@', letters, '+', high bytes.
tricky = st.lists(
    st.sampled_from(list(b"0123456789 -.@+()AZaz_\xc3\xa9\xff\n") + [ord("4"), ord("1")]), max_size=120
).map(bytes)
value = st.one_of(st.none(), st.binary(max_size=200), tricky)
field = st.builds(
    Field,
    st.sampled_from(["email", "h1", "n1", "note", "id", "x"]),
    st.sampled_from([0, 1, 2]),
    st.integers(0, 5),
    st.sampled_from(TYPES),
    st.sampled_from([0, 1]),
)


def table_name(oid):
    return {1: "public.t", 2: "other.t"}.get(oid)


@settings(max_examples=400, deadline=None)
@given(fields=st.lists(field, max_size=6), rows=st.lists(st.lists(value, max_size=8), max_size=4))
def test_mask_never_raises_and_keeps_the_value_count(fields, rows):
    masker = RULES.plan("db", fields, table_name)
    if masker is None:
        return
    for row in rows:
        out, n = masker.mask(row)
        assert len(out) == len(row)
        assert 0 <= n <= len(row)
        assert all(v is None or isinstance(v, bytes) for v in out)
        assert sum(a is not b for a, b in zip(out, row, strict=True)) == n


@settings(max_examples=600, deadline=None)
@given(v=st.one_of(st.binary(max_size=300), tricky))
def test_content_scanner_never_raises_on_any_bytes(v):
    scan = ContentScanner(dict.fromkeys(KINDS[:-1], "partial"), None)
    r = scan(v)
    assert r is None or isinstance(r, bytes)


@settings(max_examples=200, deadline=None)
@given(
    params=st.lists(st.one_of(st.none(), st.binary(max_size=100), st.text(max_size=100), tricky), max_size=6)
)
def test_mask_params_never_raises_and_keeps_types(params):
    out = RULES.mask_params("db", params)
    assert len(out) == len(params)
    for a, b in zip(out, params, strict=True):
        assert a is None or type(a) is type(b)


def test_scanning_adversarial_values_stays_fast():
    scan = ContentScanner(dict.fromkeys(KINDS[:-1], "full"), None)
    nasty = [
        b"a" * 5000 + b"@" + b"b." * 2000,
        b"4 " * 5000,
        b"4-" * 5000 + b"x",
        b"+1 " * 3000,
        b"AB12 " + b"A1 " * 3000,
        b"a@" * 5000,
        b"1" * 10000,
        b"123-45-" * 2000,
    ]
    for v in nasty:
        t0 = time.perf_counter()
        scan(v)
        assert time.perf_counter() - t0 < 0.5, v[:20]


# Values the finders' own regexes accept (most then fail a checksum, some pass): the gates must
# open for every one a finder reports.
regex_shaped = st.one_of(
    [
        st.from_regex(r)
        for r in (det._CARD, det._IBAN, det._PHONE_INTL, det._PHONE_NANP, det._SSN, det._NIR, det._BSN)
    ]
)


ALL_BUT_CREDENTIAL = dict.fromkeys(KINDS[:-1], "partial")
GATED = ContentScanner(ALL_BUT_CREDENTIAL, None)
UNGATED = ContentScanner(ALL_BUT_CREDENTIAL, None, prefilter=False)


@settings(max_examples=800, deadline=None)
@given(v=st.one_of(tricky, st.binary(max_size=60), regex_shaped))
def test_prefilters_never_hide_what_the_finders_would_find(v):
    assert GATED(v) == UNGATED(v)
