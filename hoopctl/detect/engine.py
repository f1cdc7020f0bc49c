"""The detector: keyword prefilter over the whole buffer, then only the triggered rules on the lines
around their keyword hits, then structured parsers chosen by path, then filters, validators and dedupe.
"""

from __future__ import annotations

import bisect
import logging
import re
import threading
from dataclasses import dataclass
from typing import ClassVar

import ahocorasick

from hoopctl.detect import filters, parsers
from hoopctl.detect.match import SEVERITIES, Match, fingerprint, redact
from hoopctl.detect.rules import Rule, load_rules
from hoopctl.detect.validators import VALIDATORS, Verdict

log = logging.getLogger(__name__)

#: How far past a keyword a multi-line (`scope: file`) rule may read, e.g. a PEM key body.
FILE_SCOPE_WINDOW = 64 * 1024
#: Lines longer than this (minified code, blobs) are only searched in a window around each keyword.
LONG_LINE = 4096
WINDOW_BEFORE, WINDOW_AFTER = 256, 2048


@dataclass(frozen=True, slots=True)
class Candidate:
    """A secret located in the buffer, before filtering and dedupe. Internal: holds the raw secret."""

    rule: Rule
    start: int
    end: int
    secret: str
    key_start: int = -1  # where the name in `name = value` begins, for generic rules


def _lower_severity(sev: str) -> str:
    i = SEVERITIES.index(sev)
    return SEVERITIES[min(i + 2, len(SEVERITIES) - 1)]


class Detector:
    """Finds credentials in a byte buffer. Build once (`Detector.default()`), call `scan` per file."""

    _default: ClassVar[Detector | None] = None
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, rules: list[Rule]) -> None:
        self.rules = rules
        self._by_id = {r.id: r for r in rules}
        self._pattern_rules = [r for r in rules if r.pattern is not None]
        auto = ahocorasick.Automaton()
        kw_rules: dict[str, list[int]] = {}
        for i, r in enumerate(self._pattern_rules):
            for kw in r.keywords:
                kw_rules.setdefault(kw, []).append(i)
        for kw, idx in kw_rules.items():
            auto.add_word(kw, tuple(idx))
        auto.make_automaton()
        self._auto = auto
        for r in rules:
            if r.validator and r.validator not in VALIDATORS:
                raise ValueError(f"rule {r.id}: unknown validator {r.validator!r}")
            if r.parser and r.parser not in parsers.PARSERS:
                raise ValueError(f"rule {r.id}: unknown parser {r.parser!r}")

    @classmethod
    def default(cls) -> Detector:
        """The packaged rules, loaded and compiled once per process."""
        if cls._default is None:
            with cls._lock:
                if cls._default is None:
                    cls._default = cls(load_rules())
        return cls._default

    def rule(self, rule_id: str) -> Rule:
        return self._by_id[rule_id]

    # -- scanning ---------------------------------------------------------------------------------

    def scan(self, data: bytes, path: str = "") -> list[Match]:
        """All credentials in `data`, in order of position. `path` only selects structured parsers."""
        # latin-1 maps every byte to one code point: never raises, and offsets stay byte offsets.
        text = data.decode("latin-1")
        cands = self._rule_candidates(data, text)
        for parse in parsers.select(path):
            for rule_id, start, end in parse(text):
                rule = self._by_id.get(rule_id)
                if rule is not None and end > start:
                    cands.append(Candidate(rule, start, end, text[start:end]))
        if not cands:
            return []
        return self._finish(text, cands)

    def _rule_candidates(self, data: bytes, text: str) -> list[Candidate]:
        lowered = data.lower().decode("latin-1")
        # rule index -> line spans (start, end) where one of its keywords occurs
        spans: dict[int, set[tuple[int, int]]] = {}
        cur_start = cur_end = -1
        for end_idx, rule_idx in self._auto.iter(lowered):
            if not (cur_start <= end_idx < cur_end):
                cur_start = text.rfind("\n", 0, end_idx) + 1
                cur_end = text.find("\n", end_idx)
                if cur_end < 0:
                    cur_end = len(text)
            if cur_end - cur_start > LONG_LINE:
                region = (max(cur_start, end_idx - WINDOW_BEFORE), min(cur_end, end_idx + WINDOW_AFTER))
            else:
                region = (cur_start, cur_end)
            for i in rule_idx:
                spans.setdefault(i, set()).add(region)
        out: list[Candidate] = []
        for i, lines in spans.items():
            rule = self._pattern_rules[i]
            pat = rule.pattern
            assert pat is not None
            if rule.scope == "file":
                regions = _merge([(s, min(len(text), s + FILE_SCOPE_WINDOW)) for s, _ in lines])
            else:
                regions = _merge(list(lines))
            has_key = "key" in pat.groupindex
            for s, e in regions:
                for m in pat.finditer(text, s, e):
                    a, b = m.span("secret")
                    if b > a:
                        ks = _name_start(text, m.start("key")) if has_key else -1
                        out.append(Candidate(rule, a, b, m.group("secret"), ks))
        return out

    def _finish(self, text: str, cands: list[Candidate]) -> list[Match]:
        kept: list[tuple[Candidate, str]] = []
        for c in cands:
            sev = self._judge(text, c)
            if sev is not None:
                kept.append((c, sev))
        kept = _dedupe(kept)
        out: list[Match] = []
        seen: set[tuple[int, str]] = set()
        line_no, line_pos = 1, 0
        for c, sev in kept:
            line_no += text.count("\n", line_pos, c.start)
            line_pos = c.start
            fp = fingerprint(c.secret)
            if (line_no, fp) in seen:
                continue
            seen.add((line_no, fp))
            prefix = ""
            if c.rule.prefix:
                pm = re.match(c.rule.prefix, c.secret)
                prefix = pm.group(0) if pm else ""
            out.append(Match(c.rule.id, c.rule.name, sev, line_no, fp, redact(c.secret, prefix)))
        return out

    def _judge(self, text: str, c: Candidate) -> str | None:
        """The severity to report `c` at, or None when a filter or validator rejects it."""
        rule, secret = c.rule, c.secret
        line = key = ""
        if rule.generic:
            ls = text.rfind("\n", 0, c.start) + 1
            le = text.find("\n", c.end)
            line = text[ls : le if le >= 0 else len(text)]
            if c.key_start >= 0:
                key = text[c.key_start : c.start]
        if filters.rejects(secret, generic=rule.generic, line=line, key=key):
            return None
        if rule.entropy is not None and filters.shannon_entropy(secret) < rule.entropy:
            return None
        sev = rule.severity
        if rule.validator:
            verdict = VALIDATORS[rule.validator](secret)
            if verdict is Verdict.REJECT:
                return None
            if verdict is Verdict.WEAK:
                sev = _lower_severity(sev)
        return sev


_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


def _name_start(text: str, pos: int) -> int:
    """Walk left from a keyword to the start of the identifier holding it (DB_PASSWORD, spring.pwd)."""
    stop = max(0, pos - 64)
    while pos > stop and text[pos - 1] in _NAME_CHARS:
        pos -= 1
    return pos


def _merge(regions: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for s, e in sorted(regions):
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


def _dedupe(kept: list[tuple[Candidate, str]]) -> list[tuple[Candidate, str]]:
    """One finding per span: where candidates overlap, the most specific rule (then the longest) wins."""
    ranked = sorted(kept, key=lambda cs: (-cs[0].rule.specificity, -(cs[0].end - cs[0].start), cs[0].start))
    starts: list[int] = []  # sorted, non-overlapping taken spans
    ends: list[int] = []
    winners: list[tuple[Candidate, str]] = []
    for c, sev in ranked:
        i = bisect.bisect_right(starts, c.start)
        if i and ends[i - 1] > c.start:  # the span starting before overlaps us
            continue
        if i < len(starts) and starts[i] < c.end:  # the span starting after overlaps us
            continue
        starts.insert(i, c.start)
        ends.insert(i, c.end)
        winners.append((c, sev))
    winners.sort(key=lambda cs: cs[0].start)
    return winners
