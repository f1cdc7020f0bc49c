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
from urllib.parse import unquote

from hoopctl.detect import filters, parsers
from hoopctl.detect.match import SEVERITIES, Match, fingerprint, redact
from hoopctl.detect.prefilter import KeywordIndex
from hoopctl.detect.rules import Rule, load_rules
from hoopctl.detect.validators import VALIDATORS, Verdict

log = logging.getLogger(__name__)

#: How far past a keyword a multi-line (`scope: file`) rule may read, e.g. a PEM key body.
FILE_SCOPE_WINDOW = 64 * 1024
#: Taken as the length of a regex prefilter's match when placing its search window.
REGEX_SPAN = 512


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

    def __init__(self, rules: list[Rule], *, prefilter: str | None = None) -> None:
        """Compile `rules`; `prefilter` forces a keyword backend ("hyperscan" | "ahocorasick")."""
        self.rules = rules
        self._by_id = {r.id: r for r in rules}
        self._pattern_rules = [r for r in rules if r.pattern is not None]
        backend = prefilter or KeywordIndex.default_backend()
        # Rules with a regex prefilter use it where Hyperscan runs; elsewhere their keywords.
        regex_rules = [i for i, r in enumerate(self._pattern_rules) if r.prefilter and backend == "hyperscan"]
        keywords = sorted(
            {kw for i, r in enumerate(self._pattern_rules) if i not in regex_rules for kw in r.keywords}
        )
        kw_index = {kw: n for n, kw in enumerate(keywords)}
        # prefilter entry number (keywords, then regexes) -> the pattern rules it triggers
        self._kw_rules: list[list[int]] = [[] for _ in keywords] + [[i] for i in regex_rules]
        for i, r in enumerate(self._pattern_rules):
            if i not in regex_rules:
                for kw in r.keywords:
                    self._kw_rules[kw_index[kw]].append(i)
        self._prefilter = KeywordIndex(
            keywords, regexes=[self._pattern_rules[i].prefilter for i in regex_rules], backend=backend
        )
        # how far before an entry's match end its rule's text may begin (a regex match is longer)
        self._kw_len = [len(kw) for kw in keywords] + [REGEX_SPAN] * len(regex_rules)
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
        chosen = parsers.select(path)
        hits, dense = self._prefilter.hits(data)
        if not hits and not chosen:
            return []  # the common case: no keyword, no structured format
        # latin-1 maps every byte to one code point: never raises, and offsets stay byte offsets.
        text = data.decode("latin-1")
        cands = self._rule_candidates(text, hits, dense) if hits else []
        for parse in chosen:
            for rule_id, start, end in parse(text):
                rule = self._by_id.get(rule_id)
                if rule is not None and end > start:
                    cands.append(Candidate(rule, start, end, text[start:end]))
        if not cands:
            return []
        return self._finish(text, cands)

    def _rule_candidates(
        self, text: str, hits: list[tuple[int, int]], dense: bool = False
    ) -> list[Candidate]:
        if dense:
            # Keywords on nearly every line (a huge log): one pass of each triggered rule over the
            # whole buffer beats tens of thousands of small windows.
            return self._search(text, {i: [(0, len(text))] for _, kw in hits for i in self._kw_rules[kw]})
        hits.sort()
        # rule index -> regions to search: around the keyword (scope near), its line, or onward (file)
        spans: dict[int, list[tuple[int, int]]] = {}
        kw_len = self._kw_len
        n = len(text)
        ls = le = -1
        for end_idx, kw in hits:
            if not (ls <= end_idx <= le):
                ls = text.rfind("\n", 0, end_idx) + 1
                le = text.find("\n", end_idx)
                if le < 0:
                    le = n
            kw_start = end_idx - kw_len[kw]
            for i in self._kw_rules[kw]:
                rule = self._pattern_rules[i]
                if rule.scope == "near":
                    region = (max(ls, kw_start - rule.back), min(le, end_idx + rule.ahead))
                elif rule.scope == "line":
                    region = (ls, le)
                else:
                    region = (ls, min(n, ls + FILE_SCOPE_WINDOW))
                spans.setdefault(i, []).append(region)
        return self._search(text, spans)

    def _search(self, text: str, spans: dict[int, list[tuple[int, int]]]) -> list[Candidate]:
        out: list[Candidate] = []
        for i, regions in spans.items():
            rule = self._pattern_rules[i]
            pat = rule.pattern
            assert pat is not None
            regions = _merge(regions)
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
            # the same password percent-encoded in a URL and raw in a .pgpass is one secret
            fp = fingerprint(unquote(c.secret) if c.rule.decode == "url" else c.secret)
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
        key = ""
        ls = text.rfind("\n", 0, c.start) + 1
        le = text.find("\n", c.end)
        # the candidate's line, capped so a huge minified line costs nothing extra
        line = text[max(ls, c.start - 512) : min(le if le >= 0 else len(text), c.end + 512)]
        if rule.generic and c.key_start >= 0:
            key = text[c.key_start : c.start]
        if rule.entropy is not None and filters.shannon_entropy(secret) < rule.entropy:
            return None
        if filters.rejects(secret, generic=rule.generic, line=line, key=key):
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
