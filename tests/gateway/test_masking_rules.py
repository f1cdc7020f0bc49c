"""Masking rules: config validation, column/field/content rules, styles, binary policy, bind params."""

from __future__ import annotations

import re

import pytest

from hoopctl.gateway.masking import Field, MaskingRules

KEY = b"k" * 32
TEXT, VARCHAR, INT4, INT8, NUMERIC, BOOL, DATE, JSONB, BYTEA_ARRAY_UNKNOWN = (
    25,
    1043,
    23,
    20,
    1700,
    16,
    1082,
    3802,
    99999,
)
CUSTOMERS, ACCOUNTS = 16401, 16500
TABLES = {CUSTOMERS: "public.customers", ACCOUNTS: "public.pgbench_accounts", 16600: "hr.staff"}


class Catalogue:
    """A fake resolver that counts its calls (the real one is the server's catalogue lookup)."""

    def __init__(self, tables=TABLES):
        self.tables = dict(tables)
        self.calls = 0

    def __call__(self, oid):
        self.calls += 1
        return self.tables.get(oid)


def text(name, table=CUSTOMERS, col=1, type_oid=TEXT, fmt=0):
    return Field(name, table, col, type_oid, fmt)


def rules(cfg, **kw):
    kw.setdefault("hash_key", KEY)
    return MaskingRules.from_config(cfg, **kw)


# -- plan() returns None when nothing can apply ------------------------------------------------------


def test_pgbench_select_plans_nothing_with_unrelated_column_and_table_rules():
    r = rules([{"column": "*email*"}, {"field": "bench.public.customers.card"}, {"pattern": "^ssn$"}])
    cat = Catalogue()
    fields = [Field("abalance", ACCOUNTS, 3, INT4, 0)]
    assert r.plan("bench", fields, cat) is None
    assert cat.calls == 1  # the field rule had to look at the table once, and did not match


def test_content_rules_skip_non_text_types_entirely():
    r = rules([{"content": "default"}])
    fields = [
        Field(n, ACCOUNTS, i, t, 0)
        for i, (n, t) in enumerate([("a", INT4), ("b", NUMERIC), ("c", BOOL), ("d", DATE)])
    ]
    assert r.plan("bench", fields, Catalogue()) is None


def test_digits_in_an_int_column_are_not_a_card_but_in_a_text_column_they_are():
    r = rules([{"content": ["card"], "style": "full"}])
    m = r.plan("db", [Field("n", 0, 0, INT8, 0), Field("t", 0, 0, TEXT, 0)], Catalogue())
    assert m is not None
    assert m.mask([b"4111111111111111", b"4111111111111111"]) == ([b"4111111111111111", b"****"], 1)


def test_rules_limited_to_other_resources_do_not_apply():
    r = rules([{"column": "email", "resources": ["crm"]}, {"content": "default", "resources": "crm"}])
    assert r.plan("billing", [text("email")], Catalogue()) is None
    assert not r.active("billing") and r.active("crm")
    assert r.plan("crm", [text("email")], Catalogue()) is not None


def test_no_config_means_no_masking():
    for cfg in (None, [], {"rules": []}):
        r = rules(cfg)
        assert r.plan("db", [text("email")], Catalogue()) is None
        assert r.mask_params("db", ["a@b.com"]) == ["a@b.com"]


# -- column and field rules --------------------------------------------------------------------------


def test_column_globs_are_case_insensitive_and_match_the_whole_name():
    r = rules([{"column": ["*email*", "ssn"]}])
    fields = [text("Contact_EMAIL"), text("ssn"), text("ssn_hint"), text("name")]
    m = r.plan("db", fields, Catalogue())
    assert m.columns == ("Contact_EMAIL", "ssn")
    assert m.mask([b"a@b.com", b"123-45-6789", b"last 4", b"Ann"]) == (
        [b"****", b"****", b"last 4", b"Ann"],
        2,
    )


def test_column_regex_rule():
    r = rules([{"pattern": "^(card|cc)_?(number|num)$", "style": "partial"}])
    m = r.plan("db", [text("CC_NUM"), text("card_numbers")], Catalogue())
    assert m.columns == ("CC_NUM",)
    assert m.mask([b"4111 1111 1111 1111", b"x"])[0] == [b"************1111", b"x"]


def test_field_rule_matches_resource_schema_table_column():
    r = rules([{"field": "shop.customers.card_number", "style": "null"}, {"field": "shop.hr.*.salary"}])
    cat = Catalogue()
    fields = [
        text("card_number"),
        text("salary", table=16600),
        text("card_number", table=ACCOUNTS),
        text("x", 0, 0),
    ]
    m = r.plan("shop", fields, cat)
    assert m.columns == ("card_number", "salary")
    assert m.mask([b"4111", b"100", b"4111", b"y"]) == ([None, b"****", b"4111", b"y"], 2)
    assert r.plan("other", fields, cat) is None


def test_field_rule_catches_an_alias_when_the_server_gives_column_names():
    r = rules([{"field": "shop.public.customers.card_number"}])
    aliased = [text("x", col=3)]
    assert r.plan("shop", aliased, Catalogue()) is None  # without column names an alias hides it
    names = {(CUSTOMERS, 3): "card_number"}
    m = r.plan("shop", aliased, Catalogue(), lambda oid, att: names.get((oid, att)))
    assert m is not None and m.mask([b"4111111111111111"])[0] == [b"****"]


def test_unknown_table_oid_matches_no_field_rule():
    r = rules([{"field": "shop.public.customers.card_number"}])
    assert r.plan("shop", [text("card_number")], Catalogue({})) is None


def test_first_matching_rule_in_config_order_decides_the_style():
    r = rules([{"column": "email", "style": "null"}, {"column": "*mail*", "style": "full"}])
    m = r.plan("db", [text("email"), text("email2")], Catalogue())
    assert m.mask([b"a@b.com", b"c@d.com"])[0] == [None, b"****"]


def test_plans_are_cached_unless_they_read_the_catalogue():
    r = rules([{"column": "*email*"}])
    fields = [text("email")]
    assert r.plan("db", fields, Catalogue()) is r.plan("db", list(fields), Catalogue())
    r2 = rules([{"field": "db.public.customers.email"}])
    cat = Catalogue()
    r2.plan("db", fields, cat)
    cat.tables[CUSTOMERS] = "public.renamed"
    assert r2.plan("db", fields, cat) is None  # a renamed table is seen at once
    assert cat.calls == 2


# -- styles ------------------------------------------------------------------------------------------


def test_partial_style_keeps_the_usual_part():
    r = rules([{"column": "v", "style": "partial"}])
    m = r.plan("db", [text("v")], Catalogue())
    cases = {
        b"jane.doe@example.com": b"j***@example.com",
        b"4111-1111-1111-1111": b"************1111",
        b"ABCD-1234-XYZ9": b"****XYZ9",
        b"short": b"****",
        "überlänge€".encode(): b"****",  # would otherwise cut a multi-byte character
    }
    for value, want in cases.items():
        assert m.mask([value])[0] == [want]


def test_hash_style_is_stable_keyed_and_short():
    cfg = [{"column": "email", "style": "hash"}]
    m1 = rules(cfg).plan("db", [text("email")], Catalogue())
    m2 = rules(cfg, hash_key=b"another-key-0123456789").plan("db", [text("email")], Catalogue())
    a = m1.mask([b"a@b.com"])[0][0]
    assert re.fullmatch(rb"hash:[0-9a-f]{12}", a)
    assert m1.mask([b"a@b.com"])[0][0] == a  # stable: joins still correlate
    assert m1.mask([b"c@b.com"])[0][0] != a
    assert m2.mask([b"a@b.com"])[0][0] != a  # depends on the gateway's key


def test_content_hash_normalises_the_token():
    r = rules([{"content": ["card", "email"], "style": "hash"}])
    m = r.plan("db", [text("a"), text("b"), text("c"), text("d")], Catalogue())
    out, n = m.mask([b"4111 1111 1111 1111", b"4111-1111-1111-1111", b"Bob@Example.com", b"bob@example.com"])
    assert n == 4 and out[0] == out[1] and out[2] == out[3]


def test_content_rule_rewrites_only_the_tokens_and_counts_values():
    r = rules([{"content": "default", "style": {"default": "partial", "email": "full"}}])
    m = r.plan("db", [Field("id", 0, 0, INT4, 0), text("note"), text("plain")], Catalogue())
    row = [b"7", b"mail bob@x.org, card 4111 1111 1111 1111, ssn 123-45-6789", b"nothing here"]
    out, n = m.mask(row)
    assert out == [b"7", b"mail ****, card ************1111, ssn ***-**-6789", b"nothing here"]
    assert n == 1


def test_content_null_style_nulls_the_value():
    r = rules([{"content": ["iban"], "style": "null"}])
    m = r.plan("db", [text("t")], Catalogue())
    assert m.mask([b"pay to GB82 WEST 1234 5698 7654 32"]) == ([None], 1)


def test_mask_returns_the_same_row_when_nothing_changes():
    r = rules([{"content": "default"}])
    m = r.plan("db", [text("a"), text("b")], Catalogue())
    row = [b"hello", None]
    out, n = m.mask(row)
    assert out is row and n == 0


# -- binary format -----------------------------------------------------------------------------------


def test_covered_binary_column_is_nulled_by_default():
    r = rules([{"column": "email", "style": "partial"}])
    m = r.plan("db", [text("email", fmt=1), text("id", type_oid=INT4, fmt=1)], Catalogue())
    assert not m.refuse
    assert m.mask([b"a@b.com", b"\x00\x00\x00\x07"]) == ([None, b"\x00\x00\x00\x07"], 1)


def test_covered_binary_column_refuses_when_configured():
    for r in (
        rules([{"column": "email"}], binary="refuse"),
        rules({"binary": "refuse", "rules": [{"column": "email"}]}),
    ):
        m = r.plan("db", [text("email", fmt=1)], Catalogue())
        assert m.refuse and "email" in m.reason and "binary" in m.reason
        assert r.plan("db", [text("email", fmt=0)], Catalogue()).refuse is False


def test_content_rules_rewrite_binary_text_and_jsonb():
    r = rules([{"content": ["email"], "style": "full"}])
    m = r.plan("db", [text("t", fmt=1), text("j", type_oid=JSONB, fmt=1)], Catalogue())
    assert not m.refuse
    out, n = m.mask([b"to a@b.com", b'\x01{"e": "a@b.com"}'])
    assert out == [b"to ****", b'\x01{"e": "****"}'] and n == 2


def test_content_rules_on_an_opaque_binary_type_null_on_detection_or_refuse():
    r = rules([{"content": ["email"]}])
    m = r.plan("db", [text("x", type_oid=BYTEA_ARRAY_UNKNOWN, fmt=1)], Catalogue())
    assert m.mask([b"\x00\x01a@b.com"]) == ([None], 1)
    assert m.mask([b"\x00\x01plain"]) == ([b"\x00\x01plain"], 0)
    refusing = rules([{"content": ["email"]}], binary="refuse")
    assert refusing.plan("db", [text("x", type_oid=BYTEA_ARRAY_UNKNOWN, fmt=1)], Catalogue()).refuse


# -- bind parameters for the recording ---------------------------------------------------------------


def test_mask_params_applies_content_rules_only():
    r = rules([{"column": "*"}, {"content": "default", "resources": ["db"]}])
    params = ["bob@example.com", b"4111111111111111", None, "42", b"\x00\x00\x00\x2a"]
    out = r.mask_params("db", params)
    assert out == ["b***@example.com", b"************1111", None, "42", b"\x00\x00\x00\x2a"]
    assert r.mask_params("other", params) == params


def test_mask_text_masks_literals_in_a_statement():
    r = rules([{"content": ["email", "card"], "style": {"default": "partial", "email": "null"}}])
    sql = "SELECT 1 WHERE e = 'bob@example.com' AND c = '4111111111111111'"
    assert r.mask_text("db", sql) == "SELECT 1 WHERE e = '****' AND c = '************1111'"
    assert r.mask_text("db", "SELECT 1") == "SELECT 1"


def test_recorded_params_show_null_style_as_stars_not_as_null():
    r = rules([{"content": ["email"], "style": "null"}])
    assert r.mask_params("db", ["bob@example.com", b"bob@example.com", None]) == ["****", b"****", None]
    # ...while in result sets the null style really sends NULL
    assert r.plan("db", [text("e")], Catalogue()).mask([b"bob@example.com"]) == ([None], 1)


def test_a_statement_holding_a_credential_is_recorded_masked_whole():
    r = rules([{"content": "default"}])
    sql = "SELECT * FROM t WHERE url = 'postgres://billing:Qp7vK2mZx9LtR4wN@db1.internal:5432/billing'"
    assert "Qp7vK2mZx9LtR4wN" not in r.mask_text("db", sql)


# -- config errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cfg,message",
    [
        (
            [{"column": "a"}, {"column": "b"}, {"pattern": "(unclosed"}],
            r"^masking\[2\]\.pattern: not a valid regex",
        ),
        ([{"column": ["a", None]}], r"^masking\[0\]\.column: expected a non-empty string"),
        ([{"colum": "email"}], r"^masking\[0\]\.colum: unknown key"),
        ([{"style": "full"}], r"^masking\[0\]: needs one of column, pattern, field, content"),
        ([{"column": "a", "content": "default"}], r"^masking\[0\]\.content: cannot be combined with column"),
        (
            [{"column": "a", "style": "blur"}],
            r"^masking\[0\]\.style: expected one of full, partial, hash, null",
        ),
        ([{"column": ""}], r"^masking\[0\]\.column: expected a non-empty string"),
        ([{"column": 3}], r"^masking\[0\]\.column: expected a non-empty string"),
        ([{"field": "a.b"}], r"^masking\[0\]\.field: expected resource\.schema\.table\.column"),
        ([{"field": "a.b.c.d.e"}], r"^masking\[0\]\.field: expected"),
        ([{"field": "a.b.c", "resources": ["a"]}], r"^masking\[0\]\.resources: not allowed with field"),
        ([{"content": ["emails"]}], r"^masking\[0\]\.content: unknown content kind 'emails'"),
        ([{"content": ["email"], "style": {"card": "full"}}], r"^masking\[0\]\.style\.card: not one of"),
        ([{"content": ["email"], "style": {"email": "x"}}], r"^masking\[0\]\.style\.email: expected one of"),
        (["email"], r"^masking\[0\]: expected a mapping"),
        ({"rules": [{"column": "a"}], "binary": "drop"}, r"^masking\.binary: expected one of null, refuse"),
        ({"rules": [{"pattern": "("}]}, r"^masking\.rules\[0\]\.pattern: not a valid regex"),
        ({"rule": []}, r"^masking\.rule: unknown key"),
        ("email", r"^masking: expected a list of rules"),
    ],
)
def test_bad_config_names_the_key(cfg, message):
    with pytest.raises(ValueError, match=message):
        rules(cfg)


def test_hash_style_needs_a_key_of_reasonable_length():
    with pytest.raises(ValueError, match=r"^masking\[1\]\.style: 'hash' needs the gateway's hash key"):
        MaskingRules.from_config([{"column": "a"}, {"column": "b", "style": "hash"}])
    with pytest.raises(ValueError, match=r"^masking: the hash key must be at least 16 bytes"):
        MaskingRules.from_config([{"column": "a"}], hash_key=b"short")


def test_yaml_null_means_the_null_style():
    r = rules({"binary": None, "rules": [{"column": "a", "style": None}]})
    assert r.binary == "null"
    assert r.plan("db", [text("a")], Catalogue()).mask([b"x"]) == ([None], 1)


def test_the_packaged_example_config_loads():
    import yaml

    from hoopctl.gateway import masking

    example = masking.__file__.replace("masking/__init__.py", "masking_example.yaml")
    with open(example, encoding="utf-8") as fh:
        cfg = yaml.safe_load(fh)["masking"]
    r = MaskingRules.from_config(cfg, hash_key=KEY)
    cat = Catalogue({CUSTOMERS: "public.customers"})
    m = r.plan("billing", [text("card_number"), text("contact_email"), text("notes")], cat)
    out, n = m.mask([b"4111111111111111", b"ann@example.com", b"call +44 20 7946 0958"])
    assert (
        out[:2] == [b"************1111", b"a***@example.com"]
        and out[2] == b"call +** ** **** **58"
        and n == 3
    )


def test_resources_with_content_masking_off_keep_column_rules_only():
    r = rules([{"column": "email"}, {"content": "default"}], no_content=["bench"])
    assert r.plan("bench", [text("note")], Catalogue()) is None
    assert r.plan("bench", [text("email")], Catalogue()).mask([b"a@b.com"])[0] == [b"****"]
    assert r.mask_params("bench", ["a@b.com"]) == ["a@b.com"]
    assert r.plan("shop", [text("note")], Catalogue()).mask([b"a@b.com"])[0] == [b"a***@b.com"]
