"""The content scanner: one callable per resource that masks the sensitive tokens inside a value.

It runs on every text value of every row, so the common case (no '@', few digits) must cost next to
nothing: one C-level `translate` to count digits, then only the finders whose prefilter (least
digits, least length, a byte they need) passes run their regex. Credentials are found by the
scanner's own engine (`hoopctl.detect.Detector`), which reports lines, not spans: a value holding a
credential is masked whole.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from hoopctl.gateway.masking.detectors import (
    COMPACT_DROP,
    FINDERS,
    SHAPE,
    Hit,
    find_bsns,
    find_cards,
    find_emails,
    find_ibans,
    find_nirs,
    find_phones,
    find_ssns,
)
from hoopctl.gateway.masking.styles import FULL, Hasher, partial_for_hit

log = logging.getLogger(__name__)

#: Shorter values are not worth asking the credential engine about (no rule matches so few bytes).
CREDENTIAL_MIN_LEN = 8
_PRIORITY = {kind: i for i, kind in enumerate(FINDERS)}
_RUN8, _RUN13 = "9" * 8, "9" * 13


def credential_check() -> Callable[[bytes], bool]:
    """A predicate "does this value hold a credential", backed by the scanner's detector.

    Raises when the detector cannot be built, so a config that asks for credential masking fails
    at load time instead of silently masking nothing. The detector only runs rules whose keywords
    occur; we check the same keywords first with our own automaton, which halves the cost on the
    common value that holds none (about 0.4 us instead of 0.75 us here).
    """
    from hoopctl.detect import Detector

    detector = Detector.default()
    # A value has no path: only keyworded pattern rules can fire (parser rules are chosen by path).
    # Should that ever change, fall back to asking the detector about every value.
    try:
        from hoopctl.detect import parsers

        pathless = not parsers.select("")
    except (ImportError, AttributeError):
        pathless = False
    rules = getattr(detector, "rules", None) or []
    pattern_rules = [r for r in rules if getattr(r, "pattern", None) is not None]
    keywords = {kw for r in pattern_rules for kw in r.keywords}
    if not pathless or not keywords or not all(r.keywords for r in pattern_rules):
        return lambda v: bool(detector.scan(v, ""))

    import ahocorasick

    auto = ahocorasick.Automaton()
    for kw in keywords:
        auto.add_word(kw, kw)
    auto.make_automaton()

    def has_credential(v: bytes) -> bool:
        for _ in auto.iter(v.lower().decode("latin-1")):
            return bool(detector.scan(v, ""))
        return False

    return has_credential


class ContentScanner:
    """Masks sensitive tokens in one value. `styles` maps each enabled kind to its mask style."""

    __slots__ = ("_styles", "_hasher", "_min_len", "_cred", "_prefilter", "_email", "_digits", "_want")

    def __init__(
        self,
        styles: dict[str, str],
        hasher: Hasher | None,
        credentials: Callable[[bytes], bool] | None = None,
        *,
        prefilter: bool = True,
    ) -> None:
        """`prefilter=False` runs every enabled finder on every value: the reference the tests
        compare the prefiltered scanner with, never used in the gateway."""
        self._styles = dict(styles)
        self._hasher = hasher
        self._prefilter = prefilter
        self._email = "email" in styles
        self._want = frozenset(styles)
        # 0 when no digit-based kind is enabled, else the least length any of them can match.
        self._digits = min((f.min_len for k, f in FINDERS.items() if k in styles and k != "email"), default=0)
        lens = [f.min_len for k, f in FINDERS.items() if k in styles]
        self._cred = credentials if "credential" in styles else None
        if self._cred is not None:
            lens.append(CREDENTIAL_MIN_LEN)
        self._min_len = min(lens, default=1 << 30)

    @property
    def styles(self) -> dict[str, str]:
        """Each enabled kind and its style."""
        return dict(self._styles)

    def __call__(self, v: bytes) -> bytes | None:
        """`v` itself when nothing is found (identity, so callers can test `is`), else the masked value."""
        n = len(v)
        if n < self._min_len and self._prefilter:
            return v
        hits: list[Hit] | None = None
        # `int in bytes` is a plain byte scan; `bytes in bytes` first tries the needle as an int and
        # pays for a swallowed TypeError, several times slower on short values.
        if self._email and 64 in v:  # '@'
            hits = find_emails(v) or None
        if self._digits and (n >= self._digits or not self._prefilter):
            shape = v.translate(SHAPE)
            if 57 in shape or not self._prefilter:  # every one of them needs a digit ('9')
                found = self._digit_hits(v, n, shape)
                if found:
                    hits = hits + found if hits else found
        if self._cred is not None and n >= CREDENTIAL_MIN_LEN and self._cred(v):
            return self._whole("credential", v)
        if not hits:
            return v
        return self._render(v, hits)

    def _digit_hits(self, v: bytes, n: int, shape_b: bytes) -> list[Hit]:
        """Each test below is a superset of what the finder's regex accepts (the tests prove it
        against `prefilter=False`), so skipping a finder never hides a match."""
        want, pf = self._want, self._prefilter
        # Substring tests on str: bytes' `in` is slow on this hot path (see __call__).
        compact = shape_b.translate(None, COMPACT_DROP).decode("latin-1")
        shape = shape_b.decode("latin-1")
        out: list[Hit] = []
        if "iban" in want and (not pf or (n >= 15 and "aa99" in shape)):
            out += find_ibans(v)
        # All the others need 8+ digits in a row once separators are dropped.
        if pf and _RUN8 not in compact:
            return out
        if "card" in want and (not pf or (n >= 13 and _RUN13 in compact)):
            out += find_cards(v)
        # Corsica's departments 2A/2B break the NIR's digit run: "99999a99999999".
        if "fr_nir" in want and (not pf or (n >= 15 and (_RUN13 in compact or "9a9" in compact))):
            out += find_nirs(v)
        if "us_ssn" in want and (not pf or "999-99-9999" in shape):
            out += find_ssns(v)
        if "nl_bsn" in want and (not pf or "999999999" in shape):
            out += find_bsns(v)
        if "phone" in want and (
            not pf
            or "+9999999" in compact
            or "999-999-9999" in shape
            or "999) 999-9999" in shape
            or "999)999-9999" in shape
        ):
            out += find_phones(v)
        return out

    def _whole(self, kind: str, v: bytes) -> bytes | None:
        style = self._styles[kind]
        if style == "null":
            return None
        if style == "hash" and self._hasher is not None:
            return self._hasher(v)
        return FULL

    def _render(self, v: bytes, hits: list[Hit]) -> bytes | None:
        if len(hits) > 1:
            hits.sort(key=lambda h: (h.start, _PRIORITY[h.kind], -h.end))
        out: list[bytes] = []
        pos = 0
        for h in hits:
            if h.start < pos:
                continue  # overlaps a hit already masked
            style = self._styles[h.kind]
            if style == "null":
                return None
            out.append(v[pos : h.start])
            if style == "hash" and self._hasher is not None:
                out.append(self._hasher(h.token))
            elif style == "partial":
                out.append(partial_for_hit(h.kind, v[h.start : h.end], h.token))
            else:
                out.append(FULL)
            pos = h.end
        out.append(v[pos:])
        return b"".join(out)
