"""Which PostgreSQL type oids can hold free text, and which carry text bytes unchanged in binary format.

Content rules skip a column only when its type is known to be non-textual (an int4 full of digits is
not a card number); every other type, including extension types and domains whose oids we cannot
know in advance, is scanned. That errs towards masking, which is the safe side.
"""

from __future__ import annotations

#: Built-in types whose text output cannot carry an email, a card number or a credential
#: (numbers, booleans, dates and times, network addresses, uuids, geometry, ranges, oids) and
#: their array types.
NON_TEXT_OIDS: frozenset[int] = frozenset(
    {
        16, 17, 18, 20, 21, 22, 23, 24, 26, 27, 28, 29, 30,  # bool bytea char int8 int2 int2vector int4 regproc oid tid xid cid oidvector
        600, 601, 602, 603, 604, 628, 650, 700, 701, 718, 774, 790, 829, 869,  # geometry, cidr, float, macaddr8, money, macaddr, inet
        1082, 1083, 1114, 1184, 1186, 1266, 1560, 1562, 1700,  # date time timestamp timestamptz interval timetz bit varbit numeric
        2202, 2203, 2204, 2205, 2206, 2278, 2950, 2970, 3220, 3734, 3769, 4089, 4096, 5069,  # reg*, void, uuid, snapshots, lsn, xid8
        3904, 3906, 3908, 3910, 3912, 3926,  # int4range numrange tsrange tstzrange daterange int8range
        1000, 1001, 1002, 1005, 1006, 1007, 1016, 1021, 1022, 1028, 1115, 1182, 1183, 1185, 1187, 1231, 1270, 2951,  # arrays
    }
)  # fmt: skip

#: Types whose binary wire format is exactly their text (text, varchar, bpchar, name, unknown, json, xml):
#: a content rule can rewrite them in binary format as it does in text format.
BINARY_AS_TEXT_OIDS: frozenset[int] = frozenset({25, 1043, 1042, 19, 705, 114, 142})

#: jsonb's binary format is a version byte (1) followed by the JSON text.
JSONB_OID = 3802
