"""One record's seal and check: every byte counts, the mac binds the key."""

from __future__ import annotations

import pytest

from hoopctl.audit.chain import GENESIS, ChainChecker, ChainError, encode_fields, parse_line, seal
from hoopctl.audit.ids import LENGTH, is_id, new_id


def _line(seq: int, prev: str, key: bytes | None = None, **fields: object) -> tuple[bytes, str]:
    line, digest = seal(encode_fields({"seq": seq, "prev": prev, "kind": "x", **fields}), key)
    return line.rstrip(b"\n"), digest


def test_sealed_line_parses_back_to_its_fields() -> None:
    line, digest = _line(0, GENESIS, text="SELECT 'é' -- \"quoted\"\n", params=[b"\x00\xff", None])
    parsed = parse_line(line)
    assert parsed.hash == digest
    assert parsed.record["text"] == "SELECT 'é' -- \"quoted\"\n"
    assert parsed.record["params"] == [{"$b64": "AP8="}, None]
    assert line.isascii()


@pytest.mark.parametrize("position", [2, 20, -80, -10])
def test_any_flipped_byte_is_caught(position: int) -> None:
    line, _ = _line(0, GENESIS, text="SELECT 1")
    bad = bytearray(line)
    bad[position] ^= 0x01
    with pytest.raises(ChainError):
        parse_line(bytes(bad))


def test_whitespace_added_inside_the_body_is_caught() -> None:
    line, _ = _line(0, GENESIS, text="SELECT 1")
    with pytest.raises(ChainError, match="altered"):
        parse_line(line.replace(b'"kind":', b'"kind": ', 1))


def test_checker_requires_order_and_links() -> None:
    a, ha = _line(0, GENESIS)
    b, hb = _line(1, ha)
    c, _ = _line(2, hb)
    checker = ChainChecker()
    checker.check(a)
    with pytest.raises(ChainError, match="seq 2 where 1"):
        checker.check(c)
    forged, _ = _line(1, GENESIS)
    fresh = ChainChecker()
    fresh.check(a)
    with pytest.raises(ChainError, match="prev"):
        fresh.check(forged)


def test_mac_binds_the_key() -> None:
    key = b"k" * 32
    line, _ = _line(0, GENESIS, key=key)
    assert ChainChecker(key).check(line).mac
    with pytest.raises(ChainError, match="mac does not match"):
        ChainChecker(b"x" * 32).check(line)
    plain, _ = _line(0, GENESIS)
    with pytest.raises(ChainError, match="no mac"):
        ChainChecker(key).check(plain)


def test_ids_are_short_sortable_and_unique() -> None:
    ids = [new_id(1_800_000_000 + i / 1000) for i in range(50)]
    assert ids == sorted(ids)
    assert all(len(i) == LENGTH and is_id(i) for i in ids)
    assert len({new_id() for _ in range(2000)}) == 2000
