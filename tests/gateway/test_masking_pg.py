"""Masking on real result sets: RowDescriptions and DataRow values straight from PostgreSQL (via
libpq's result object), with the table resolver asking the real catalogue, in text and binary format.

`masked_rows` does what the gateway server does per statement; the end-to-end psql test of the
server can compare its output with it.
"""

from __future__ import annotations

import psycopg
import pytest

from hoopctl.gateway.masking import Field, MaskingRules

DB = "masking_t"
SETUP = """
CREATE SCHEMA hr;
CREATE TABLE customers (id int PRIMARY KEY, email text, card_number varchar(40), note text,
                        balance numeric, born date, phone_digits bigint);
CREATE TABLE hr.staff (id int, salary int);
CREATE TABLE pgbench_accounts (aid int PRIMARY KEY, bid int, abalance int, filler char(84));
INSERT INTO customers VALUES
  (1, 'ann@example.com', '4111 1111 1111 1111', 'iban GB82 WEST 1234 5698 7654 32, call +44 20 7946 0958',
   4111111111111111, '2024-01-15', 4111111111111111),
  (2, 'bob@example.org', '5555555555554444', 'no secrets; order 4111111111111112', 0, '1990-05-05', 14155552671);
INSERT INTO hr.staff VALUES (1, 100000);
INSERT INTO pgbench_accounts VALUES (1, 1, 0, '');
"""
CONFIG = {
    "binary": "null",
    "rules": [
        {"column": "*email*", "style": "partial"},
        {"field": "shop.customers.card_number", "style": "partial"},
        {"field": "shop.hr.staff.salary", "style": "full"},
        {"content": "default", "style": "partial"},
    ],
}

MASKED_NOTE = b"iban GB" + b"*" * 16 + b"5432, call +** ** **** **58"


@pytest.fixture(scope="module")
def conn(postgres):
    postgres.psql(f"DROP DATABASE IF EXISTS {DB}")
    postgres.psql(f"CREATE DATABASE {DB}")
    with psycopg.connect(postgres.dsn(DB), autocommit=True) as c:
        c.execute(SETUP)
        yield c
    postgres.psql(f"DROP DATABASE IF EXISTS {DB}")


def catalogue(conn):
    """The resolvers the server would give plan(): table oid -> "schema.table", (oid, attnum) -> name."""

    def table_name(oid):
        row = conn.execute(
            "SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE c.oid = %s",
            (oid,),
        ).fetchone()
        return row[0] if row else None

    def column_name(oid, attnum):
        row = conn.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = %s AND attnum = %s", (oid, attnum)
        ).fetchone()
        return row[0] if row else None

    return table_name, column_name


def masked_rows(conn, rules, resource, sql, *, binary=False):
    """Run `sql`, then plan and mask its result as the gateway does. Returns (masker, rows, masked)."""
    cur = conn.cursor(binary=binary)
    cur.execute(sql)
    res = cur.pgresult
    fields = [
        Field(res.fname(i).decode(), res.ftable(i), res.ftablecol(i), res.ftype(i), res.fformat(i))
        for i in range(res.nfields)
    ]
    masker = rules.plan(resource, fields, *catalogue(conn))
    rows, total = [], 0
    for r in range(res.ntuples):
        values = [res.get_value(r, c) for c in range(res.nfields)]
        if masker is not None and not masker.refuse:
            values, n = masker.mask(values)
            total += n
        rows.append(values)
    return masker, rows, total


@pytest.fixture(scope="module")
def rules():
    return MaskingRules.from_config(CONFIG, hash_key=b"gateway-key-0123456789")


def test_masks_a_real_result_set_by_column_field_and_content(conn, rules):
    masker, rows, total = masked_rows(conn, rules, "shop", "SELECT * FROM customers ORDER BY id")
    assert masker is not None and not masker.refuse
    ann, bob = rows
    assert ann[1] == b"a***@example.com" and bob[1] == b"b***@example.org"
    assert ann[2] == b"************1111" and bob[2] == b"************4444"
    assert ann[3] == MASKED_NOTE
    assert bob[3] == b"no secrets; order 4111111111111112"  # Luhn-invalid: left alone
    # numeric, date and bigint columns are never scanned, even when their digits pass Luhn
    assert ann[4] == b"4111111111111111" and ann[5] == b"2024-01-15" and ann[6] == b"4111111111111111"
    assert total == 5


def test_field_rule_follows_an_alias_and_another_schema(conn, rules):
    _, rows, _ = masked_rows(
        conn, rules, "shop", "SELECT c.card_number AS x, s.salary AS pay FROM customers c, hr.staff s"
    )
    assert rows[0] == [b"************1111", b"****"]


def test_expressions_escape_column_rules_but_not_content_rules(conn, rules):
    _, rows, _ = masked_rows(conn, rules, "shop", "SELECT card_number || '' AS x FROM customers WHERE id = 1")
    assert rows == [[b"************1111"]]


def test_pgbench_select_needs_no_masking(conn, rules):
    masker, rows, _ = masked_rows(conn, rules, "shop", "SELECT abalance FROM pgbench_accounts WHERE aid = 1")
    assert masker is None and rows == [[b"0"]]


def test_binary_format_covered_columns_are_nulled_or_refused(conn, rules):
    masker, rows, _ = masked_rows(
        conn, rules, "shop", "SELECT id, email, note FROM customers WHERE id = 1", binary=True
    )
    assert rows[0][0] == b"\x00\x00\x00\x01"  # an int4 in binary, untouched
    assert rows[0][1] is None  # covered by a column rule: nulled
    assert rows[0][2] == MASKED_NOTE  # text in binary is still text
    refusing = MaskingRules.from_config({**CONFIG, "binary": "refuse"}, hash_key=b"gateway-key-0123456789")
    masker, _, _ = masked_rows(conn, refusing, "shop", "SELECT id, email FROM customers", binary=True)
    assert masker.refuse and "email" in masker.reason


def test_other_resources_are_left_alone(conn, rules):
    masker, rows, _ = masked_rows(conn, rules, "other", "SELECT card_number FROM customers WHERE id = 2")
    assert rows == [[b"************4444"]]  # still caught by the content rule, which has no resource limit
    limited = MaskingRules.from_config([{"field": "shop.customers.card_number"}])
    masker, rows, _ = masked_rows(conn, limited, "other", "SELECT card_number FROM customers WHERE id = 2")
    assert masker is None and rows == [[b"5555555555554444"]]
