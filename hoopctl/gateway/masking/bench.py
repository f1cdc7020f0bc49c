"""Micro-benchmark of masking costs: `python -m hoopctl.gateway.masking.bench`.

Prints the cost of plan() per result set and of content scanning per value (best of several runs,
in ns) for typical values; the machine is shared and noisy, so compare figures from one run.
"""

from __future__ import annotations

import timeit
from collections.abc import Callable

from hoopctl.gateway.masking.plan import Field, MaskingRules

VALUES = {
    "int as text '123456'": b"123456",
    "short text 'Alice'": b"Alice",
    "name 'Jane Q. Public'": b"Jane Q. Public",
    "sentence (60 B)": b"Shipped to the warehouse in the north, awaiting pickup now.",
    "email": b"jane.public@example.com",
    "text with a keyword": b"reset your password via the link",
    "timestamp as text": b"2024-01-15 10:30:00.123456+01",
    "card": b"4111 1111 1111 1111",
}


def ns(fn: Callable[[], object], number: int = 50000) -> float:
    return min(timeit.repeat(fn, number=number, repeat=7)) / number * 1e9


def main() -> None:
    def table_name(oid: int) -> str:
        return "public.pgbench_accounts"

    key = b"bench-key-0123456789"
    cols = MaskingRules.from_config([{"column": "*email*"}, {"pattern": "^ssn$"}])
    fields = MaskingRules.from_config([{"column": "*email*"}, {"field": "db.customers.card"}])
    full = MaskingRules.from_config([{"content": "default"}], hash_key=key)
    nocred = MaskingRules.from_config([{"content": ["email", "card", "iban", "phone", "national_id"]}])
    pgbench = [Field("abalance", 16500, 3, 23, 0)]
    print("plan() for pgbench's `SELECT abalance` (returns None):")
    print(f"  column rules (cached)           {ns(lambda: cols.plan('db', pgbench, table_name)):7.0f} ns")
    print(f"  a field rule (asks the resolver) {ns(lambda: fields.plan('db', pgbench, table_name)):7.0f} ns")
    print(f"  content rules (int4: skipped)   {ns(lambda: full.plan('db', pgbench, table_name)):7.0f} ns")
    for label, rules in (
        ("content: default (with credential)", full),
        ("content: without credential", nocred),
    ):
        masker = rules.plan("db", [Field("v", 1, 1, 25, 0)], table_name)
        assert masker is not None
        print(f"mask() per text value, {label}:")
        for name, v in VALUES.items():
            row = [v]
            print(f"  {name:28s} {ns(lambda row=row, m=masker: m.mask(row)):7.0f} ns")
    row_fields = [
        Field(n, 1, i, t, 0)
        for i, (n, t) in enumerate([("id", 23), ("name", 25), ("note", 25), ("at", 1184)])
    ]
    row = [b"42", b"Jane Q. Public", b"Shipped to the warehouse", b"2024-01-15 10:30:00+01"]
    for label, rules in (("with credential", full), ("without credential", nocred)):
        masker = rules.plan("db", row_fields, table_name)
        assert masker is not None
        t = ns(lambda masker=masker: masker.mask(row))
        print(f"typical row (int4, 2 text, timestamptz), nothing to mask, {label}: {t:.0f} ns/row")
    print(
        f"reference: bytes.translate on a 14 B value {ns(lambda: b'Jane Q. Public'.translate(None, b'0123456789')):.0f} ns"
    )


if __name__ == "__main__":
    main()
