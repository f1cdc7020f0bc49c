"""Load credential rules from the packaged `rules.yaml` into typed, compiled `Rule` objects."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import yaml

from hoopctl.detect.match import SEVERITIES

#: Higher wins when two rules claim overlapping text; generic rules sit at the bottom.
DEFAULT_SPECIFICITY = 100


class RuleError(ValueError):
    """A rule file entry is malformed; the message names the rule and the key."""


@dataclass(frozen=True, slots=True)
class Rule:
    """One credential type: how to find it, how to confirm it, and its own proof (examples)."""

    id: str
    name: str
    severity: str
    keywords: tuple[str, ...] = ()
    prefilter: str = ""  # optional Hyperscan regex that replaces the keywords where Hyperscan runs
    pattern: re.Pattern[str] | None = None
    parser: str | None = None
    entropy: float | None = None
    validator: str | None = None
    prefix: str = ""
    scope: str = "near"
    back: int = 64
    ahead: int = 1024
    generic: bool = False
    specificity: int = DEFAULT_SPECIFICITY
    decode: str = ""  # "url": the secret is percent-encoded; fingerprint its decoded value
    examples: tuple[Any, ...] = ()
    negative_examples: tuple[Any, ...] = ()
    references: tuple[str, ...] = field(default=(), compare=False)


_KNOWN_KEYS = {
    "id",
    "name",
    "severity",
    "keywords",
    "prefilter",
    "pattern",
    "parser",
    "entropy",
    "validator",
    "prefix",
    "scope",
    "back",
    "ahead",
    "generic",
    "specificity",
    "decode",
    "examples",
    "negative_examples",
    "references",
}


def _build(raw: dict[str, Any]) -> Rule:
    rid = raw.get("id", "?")
    unknown = set(raw) - _KNOWN_KEYS
    if unknown:
        raise RuleError(f"rule {rid}: unknown key(s) {sorted(unknown)}")
    for key in ("id", "name", "severity"):
        if not isinstance(raw.get(key), str):
            raise RuleError(f"rule {rid}: '{key}' must be a string")
    if raw["severity"] not in SEVERITIES:
        raise RuleError(f"rule {rid}: severity must be one of {SEVERITIES}")
    pattern = None
    if "pattern" in raw:
        try:
            pattern = re.compile(raw["pattern"], re.VERBOSE | re.MULTILINE)
        except re.error as exc:
            raise RuleError(f"rule {rid}: bad pattern: {exc}") from exc
        if "secret" not in pattern.groupindex:
            raise RuleError(f"rule {rid}: pattern needs a named group 'secret'")
        if not raw.get("keywords"):
            raise RuleError(f"rule {rid}: a pattern rule needs 'keywords' for the prefilter")
    elif "parser" not in raw:
        raise RuleError(f"rule {rid}: needs 'pattern' or 'parser'")
    if raw.get("scope", "near") not in ("near", "line", "file"):
        raise RuleError(f"rule {rid}: scope must be near, line or file")
    if raw.get("prefix"):
        try:
            re.compile(raw["prefix"])
        except re.error as exc:
            raise RuleError(f"rule {rid}: bad prefix pattern: {exc}") from exc
    if raw.get("decode", "") not in ("", "url"):
        raise RuleError(f"rule {rid}: decode must be 'url' when given")
    generic = bool(raw.get("generic", False))
    return Rule(
        id=raw["id"],
        name=raw["name"],
        severity=raw["severity"],
        keywords=tuple(k.lower() for k in raw.get("keywords") or ()),
        prefilter=raw.get("prefilter", ""),
        pattern=pattern,
        parser=raw.get("parser"),
        entropy=raw.get("entropy"),
        validator=raw.get("validator"),
        prefix=raw.get("prefix", ""),
        scope=raw.get("scope", "near"),
        back=int(raw.get("back", 64)),
        ahead=int(raw.get("ahead", 1024)),
        generic=generic,
        specificity=int(raw.get("specificity", 10 if generic else DEFAULT_SPECIFICITY)),
        decode=raw.get("decode", ""),
        examples=tuple(raw.get("examples") or ()),
        negative_examples=tuple(raw.get("negative_examples") or ()),
        references=tuple(raw.get("references") or ()),
    )


def load_rules(text: str | None = None) -> list[Rule]:
    """Parse rules from YAML text, or from the packaged rules.yaml when no text is given."""
    if text is None:
        text = resources.files("hoopctl.detect").joinpath("rules.yaml").read_text("utf-8")
    # libyaml's loader parses the rule file in ~10 ms instead of ~110 ms: it is start-up time of
    # every `hoopctl scan`. Same safe subset of YAML either way.
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    doc = yaml.load(text, Loader=loader)  # noqa: S506 - a safe loader
    if not isinstance(doc, dict) or not isinstance(doc.get("rules"), list):
        raise RuleError("rules file: top level must be a mapping with a 'rules' list")
    rules = [_build(r) for r in doc["rules"]]
    seen: set[str] = set()
    for r in rules:
        if r.id in seen:
            raise RuleError(f"rule {r.id}: duplicate id")
        seen.add(r.id)
    return rules
