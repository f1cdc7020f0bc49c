"""The classification cache never lets one statement's verdict stand for a different statement's."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pglast import parser

from hoopctl.gateway.policy import Policy, classify
from tests.gateway.bypass_corpus import CASES

ROLES = {
    "reader": {"grants": ["read"]},
    "copier": {"grants": ["read", "copy"]},
    "writer": {"grants": ["read", "write"]},
}

DEEP = 150  # deeper than libpg_query's fingerprint looks (100)

# Pairs that differ only where a literal, a quote, a qualifier or an option value sits, and whose
# verdicts differ for at least one role. Priming the cache with one must not decide the other.
TWINS = [
    ("SELECT set_config('role', 'postgres', false)", "SELECT set_config('work_mem', '64MB', false)"),
    (
        "SELECT set_config('search_path', '', false)",
        "SELECT set_config('search_path', 'x, pg_catalog', false)",
    ),
    ("SELECT set_config($1, 'postgres', false)", "SELECT set_config('application_name', 'postgres', false)"),
    ("SET search_path = 'public'", "SET search_path = 'public, pg_catalog'"),
    ("SET standard_conforming_strings = on", "SET standard_conforming_strings = off"),
    ("SET client_encoding = 'UTF8'", "SET client_encoding = 'SJIS'"),
    ("SELECT lower('x')", "SELECT \"LOWER\"('x')"),
    ("SELECT pg_catalog.lower('x')", "SELECT public.lower('x')"),
    ("SELECT lower('x')", "SELECT lo_import('x')"),
    ("EXPLAIN DELETE FROM accounts", "EXPLAIN ANALYZE DELETE FROM accounts"),
    ("EXPLAIN (ANALYZE false) DELETE FROM accounts", "EXPLAIN (ANALYZE true) DELETE FROM accounts"),
    ("EXPLAIN (ANALYZE 0) DELETE FROM accounts", "EXPLAIN (ANALYZE 1) DELETE FROM accounts"),
    ("EXPLAIN (ANALYZE 'off') DELETE FROM accounts", "EXPLAIN (ANALYZE 'on') DELETE FROM accounts"),
    ("COPY accounts TO STDOUT", "COPY accounts TO '/tmp/x'"),
    ("COPY accounts TO '/tmp/x'", "COPY accounts TO PROGRAM '/tmp/x'"),
    ("COPY accounts TO STDOUT", "COPY accounts FROM STDIN"),
    (
        "CREATE FUNCTION f() RETURNS int LANGUAGE 'sql' AS 'SELECT 1'",
        "CREATE FUNCTION f() RETURNS int LANGUAGE 'c' AS 'SELECT 1'",
    ),
    ("DO LANGUAGE 'plpgsql' 'BEGIN END'", "DO LANGUAGE 'plperlu' 'BEGIN END'"),
    ("SELECT id FROM accounts", "SELECT id FROM accounts FOR UPDATE"),
    ("SELECT id FROM accounts", "SELECT id INTO stolen FROM accounts"),
    ("DISCARD PLANS", "DISCARD ALL"),
    ("RESET work_mem", "RESET role"),
    ("SELECT currval('s')", "SELECT nextval('s')"),
    ("SELECT * FROM t TABLESAMPLE system (1)", "SELECT * FROM t TABLESAMPLE system_time (1)"),
    (
        "SELECT " + "(" * DEEP + "lower('x')" + ")" * DEEP,
        "SELECT " + "(" * DEEP + "pg_read_file('x')" + ")" * DEEP,
    ),
    ("SELECT 1 AS a", "SELECT 1 AS a; DELETE FROM accounts"),
    ("SELECT set_config('work_mem', '1MB', false)", "SELECT set_config($1, $2, $3)"),
    ("SELECT lower('x') FROM accounts", "SELECT lower($1) FROM accounts; DELETE FROM accounts"),
    ("SELECT 'x' -- ; DELETE FROM accounts", "SELECT 'x' ; DELETE FROM accounts"),
]


def _verdicts(policy: Policy, sql: str) -> dict[str, tuple[bool, str]]:
    out = {}
    for role in ROLES:
        verdict = policy.session(role).check_query(sql)
        out[role] = (verdict.allowed, verdict.rule)
    return out


@pytest.mark.parametrize(("first", "second"), TWINS + [(b, a) for a, b in TWINS])
def test_twins_never_share_a_cache_entry(first: str, second: str) -> None:
    fresh = _verdicts(Policy.from_config(ROLES), second)
    primed = Policy.from_config(ROLES)
    _verdicts(primed, first)
    assert _verdicts(primed, second) == fresh
    assert primed.classify(second) == classify(second)


def test_twins_really_differ() -> None:
    # If a pair judged the same for every role, it would prove nothing about the cache.
    same = [
        (a, b)
        for a, b in TWINS
        if _verdicts(Policy.from_config(ROLES), a) == _verdicts(Policy.from_config(ROLES), b)
    ]
    assert same == []


def test_whole_corpus_cached_equals_uncached() -> None:
    policy = Policy.from_config(ROLES)
    for case in [*CASES, *reversed(CASES)]:
        assert policy.classify(case.sql) == classify(case.sql), case.sql


def test_literal_values_share_one_entry() -> None:
    policy = Policy.from_config(ROLES)
    session = policy.session("reader")
    for key in range(200):
        assert session.check_query(f"SELECT abalance FROM pgbench_accounts WHERE aid = {key * 7919};").allowed
    hits, misses, entries = policy.cache_info()
    assert (hits, misses, entries) == (199, 1, 1)


def test_parameterized_text_hits_without_normalizing() -> None:
    policy = Policy.from_config(ROLES)
    session = policy.session("reader")
    assert session.check_query("SELECT abalance FROM pgbench_accounts WHERE aid = 5").allowed
    assert session.check_parse("SELECT abalance FROM pgbench_accounts WHERE aid = $1").allowed
    assert policy.cache_info() == (1, 1, 1)


def test_literal_dependent_verdicts_are_not_cached() -> None:
    policy = Policy.from_config(ROLES)
    session = policy.session("reader")
    for sql in (
        "SELECT set_config('work_mem', '1MB', false)",
        "SET search_path = 'public'",
        "SET client_encoding = 'UTF8'",
        "EXPLAIN (ANALYZE false) DELETE FROM accounts",
        "DO 'BEGIN END'",
    ):
        session.check_query(sql)
    assert policy.cache_info()[2] == 0


def test_cache_is_bounded() -> None:
    policy = Policy.from_config(ROLES, cache_size=16)
    session = policy.session("reader")
    for n in range(100):
        session.check_query(f"SELECT c{n} FROM accounts")
    assert policy.cache_info()[2] == 16
    policy = Policy.from_config(ROLES, max_cached_text=64)
    policy.session("reader").check_query("SELECT " + ", ".join(f"c{n}" for n in range(50)) + " FROM accounts")
    assert policy.cache_info()[2] == 0


SETTING_NAMES = [
    "role",
    "ROLE",
    "Role",
    "session_authorization",
    "search_path",
    "work_mem",
    "application_name",
    "standard_conforming_strings",
    "client_encoding",
    "session_replication_role",
    "app.tenant",
    "log_statement",
]
SETTING_VALUES = [
    "postgres",
    "",
    "public",
    "public, pg_catalog",
    "pg_catalog, public",
    "off",
    "on",
    "UTF8",
    "SJIS",
]


def _statement(kind: int, name: str, value: str) -> str:
    quoted_value = "'" + value.replace("'", "''") + "'"
    quoted_name = "'" + name.replace("'", "''") + "'"
    if kind == 0:
        return f"SELECT set_config({quoted_name}, {quoted_value}, false)"
    if kind == 1:
        return (
            f"SELECT set_config(new_value => {quoted_value}, setting_name => {quoted_name}, is_local => true)"
        )
    if kind == 2:
        return f'SET "{name}" = {quoted_value}'
    return f'RESET "{name}"'


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 3), st.sampled_from(SETTING_NAMES), st.sampled_from(SETTING_VALUES)),
        min_size=1,
        max_size=12,
    )
)
def test_setting_statements_cached_equal_uncached(sequence: list[tuple[int, str, str]]) -> None:
    policy = Policy.from_config(ROLES)
    for kind, name, value in sequence:
        sql = _statement(kind, name, value)
        assert policy.classify(sql) == classify(sql), sql


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(
                ["lower", "pg_read_file", '"LOWER"', "pg_catalog.lower", "public.lower", "nextval"]
            ),
            st.integers(0, 120),
            st.sampled_from(["'x'", "1", "$1", "E'\\x41'", "$$q$$"]),
        ),
        min_size=1,
        max_size=10,
    )
)
def test_function_calls_cached_equal_uncached(sequence: list[tuple[str, int, str]]) -> None:
    policy = Policy.from_config(ROLES)
    for function, depth, argument in sequence:
        sql = "SELECT " + "(" * depth + f"{function}({argument})" + ")" * depth
        assert policy.classify(sql) == classify(sql), sql


def test_a_normalized_text_classifies_like_the_texts_it_stands_for() -> None:
    # The cache is consulted with the raw text before normalizing it: sound only if a text that
    # equals a normalized form would be classified the same as the texts that produced it.
    for sql in [case.sql for case in CASES] + [text for pair in TWINS for text in pair]:
        try:
            normalized = parser.normalize(sql)
        except parser.ParseError:
            continue
        original = classify(sql)
        again = classify(normalized)
        if original.cacheable and again.error is None:
            assert again == original, sql
