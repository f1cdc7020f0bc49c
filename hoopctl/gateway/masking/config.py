"""Parse and validate the `masking:` section of the gateway config into typed rules.

A bad entry raises ValueError naming the key, e.g. `masking[2].pattern: not a valid regex: ...`,
and nothing is half-loaded. The schema is documented in hoopctl/gateway/masking_example.yaml.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from typing import Any

from hoopctl.gateway.masking.detectors import GROUPS, KINDS
from hoopctl.gateway.masking.styles import STYLES

RULE_KEYS = ("name", "column", "pattern", "field", "content", "resources", "style")
SELECTORS = ("column", "pattern", "field", "content")
BINARY_POLICIES = ("null", "refuse")


@dataclass(frozen=True, slots=True)
class ColumnRule:
    """Masks a whole column, chosen by its name (glob/regex) or by resource.schema.table.column."""

    label: str
    style: str
    resources: frozenset[str] | None  # None: every resource
    name: re.Pattern[str] | None = None
    path: tuple[re.Pattern[str], re.Pattern[str], re.Pattern[str], re.Pattern[str]] | None = None

    def applies_to(self, resource: str) -> bool:
        if self.path is not None:
            return self.path[0].fullmatch(resource) is not None
        return self.resources is None or resource in self.resources


@dataclass(frozen=True, slots=True)
class ContentRule:
    """Masks sensitive tokens inside every text value; `styles` maps each kind to its style."""

    label: str
    styles: tuple[tuple[str, str], ...]
    resources: frozenset[str] | None

    def applies_to(self, resource: str) -> bool:
        return self.resources is None or resource in self.resources


@dataclass(frozen=True, slots=True)
class ParsedConfig:
    column_rules: tuple[ColumnRule, ...]
    content_rules: tuple[ContentRule, ...]
    binary: str


def _strings(value: Any, key: str) -> list[str]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(s, str) and s for s in items):
        raise ValueError(f"{key}: expected a non-empty string or list of non-empty strings")
    return items


def _glob(text: str, key: str) -> re.Pattern[str]:
    try:
        return re.compile(fnmatch.translate(text), re.IGNORECASE)
    except re.error as exc:
        raise ValueError(f"{key}: not a valid glob {text!r}: {exc}") from None


def _name_pattern(raw: dict[str, Any], key: str) -> re.Pattern[str]:
    """One regex matching any of the rule's globs (`column`) or regexes (`pattern`), case-insensitive."""
    parts: list[str] = []
    if "column" in raw:
        parts += [_glob(g, f"{key}.column").pattern for g in _strings(raw["column"], f"{key}.column")]
    if "pattern" in raw:
        for rx in _strings(raw["pattern"], f"{key}.pattern"):
            try:
                re.compile(rx)
            except re.error as exc:
                raise ValueError(f"{key}.pattern: not a valid regex {rx!r}: {exc}") from None
            parts.append(f"(?:{rx})")
    return re.compile("|".join(f"(?:{p})" for p in parts), re.IGNORECASE)


def _path(text: str, key: str) -> tuple[re.Pattern[str], re.Pattern[str], re.Pattern[str], re.Pattern[str]]:
    segs = text.split(".")
    if len(segs) == 3:
        segs.insert(1, "public")
    if len(segs) != 4 or not all(segs):
        raise ValueError(
            f"{key}: expected resource.schema.table.column or resource.table.column, got {text!r}"
        )
    r, s, t, c = (_glob(seg, key) for seg in segs)
    return r, s, t, c


def _kinds(value: Any, key: str) -> list[str]:
    names = ["default"] if value is True else _strings(value, key)
    kinds: list[str] = []
    for n in names:
        expanded = GROUPS.get(n, (n,))
        for k in expanded:
            if k not in KINDS:
                raise ValueError(
                    f"{key}: unknown content kind {n!r} (known: {', '.join(KINDS + tuple(GROUPS))})"
                )
            if k not in kinds:
                kinds.append(k)
    return kinds


def _content_styles(raw: dict[str, Any], kinds: list[str], key: str) -> tuple[tuple[str, str], ...]:
    style = _style(raw.get("style", "partial"))
    if isinstance(style, str):
        _check_style(style, f"{key}.style")
        return tuple((k, style) for k in kinds)
    if not isinstance(style, dict):
        raise ValueError(f"{key}.style: expected a style name or a mapping of kind -> style")
    style = {k: _style(v) for k, v in style.items()}
    default = style.get("default", "partial")
    _check_style(default, f"{key}.style.default")
    for k, s in style.items():
        if k != "default" and k not in kinds:
            raise ValueError(f"{key}.style.{k}: not one of this rule's content kinds ({', '.join(kinds)})")
        _check_style(s, f"{key}.style.{k}")
    return tuple((k, style.get(k, default)) for k in kinds)


def _style(value: Any) -> Any:
    """YAML reads a bare `null` as None; it means the null style (or binary policy) here."""
    return "null" if value is None else value


def _check_style(style: Any, key: str) -> None:
    if style not in STYLES:
        raise ValueError(f"{key}: expected one of {', '.join(STYLES)}, got {style!r}")


def _rule(raw: Any, key: str) -> ColumnRule | ContentRule:
    if not isinstance(raw, dict):
        raise ValueError(f"{key}: expected a mapping, got {type(raw).__name__}")
    for k in raw:
        if k not in RULE_KEYS:
            raise ValueError(f"{key}.{k}: unknown key (known: {', '.join(RULE_KEYS)})")
    chosen = [s for s in SELECTORS if s in raw]
    if not chosen:
        raise ValueError(f"{key}: needs one of {', '.join(SELECTORS)}")
    if len(chosen) > 1 and set(chosen) != {"column", "pattern"}:
        raise ValueError(f"{key}.{chosen[1]}: cannot be combined with {chosen[0]}")
    label = raw.get("name", key)
    if not isinstance(label, str) or not label:
        raise ValueError(f"{key}.name: expected a non-empty string")
    resources = None
    if "resources" in raw:
        if "field" in raw:
            raise ValueError(
                f"{key}.resources: not allowed with field (the resource is the first part of the path)"
            )
        resources = frozenset(_strings(raw["resources"], f"{key}.resources"))
    if "content" in raw:
        kinds = _kinds(raw["content"], f"{key}.content")
        return ContentRule(label, _content_styles(raw, kinds, key), resources)
    style = _style(raw.get("style", "full"))
    _check_style(style, f"{key}.style")
    if "field" in raw:
        paths = _strings(raw["field"], f"{key}.field")
        if len(paths) != 1:
            raise ValueError(f"{key}.field: one path per rule (write one rule per field)")
        return ColumnRule(label, style, None, path=_path(paths[0], f"{key}.field"))
    return ColumnRule(label, style, resources, name=_name_pattern(raw, key))


def _uses_hash(rule: ColumnRule | ContentRule) -> bool:
    if isinstance(rule, ColumnRule):
        return rule.style == "hash"
    return any(s == "hash" for _, s in rule.styles)


def parse(
    cfg: Any, *, binary: str = "null", have_hash_key: bool = False, where: str = "masking"
) -> ParsedConfig:
    """Validate a masking section: a list of rules, or a mapping {rules: [...], binary: null|refuse}."""
    rules_where = where
    if cfg is None:
        cfg = []
    if isinstance(cfg, dict):
        for k in cfg:
            # hash_key_file is read by the gateway config, which passes the key in as hash_key.
            if k not in ("rules", "binary", "hash_key_file"):
                raise ValueError(f"{where}.{k}: unknown key (known: rules, binary, hash_key_file)")
        binary = _style(cfg.get("binary", binary))
        if binary not in BINARY_POLICIES:
            raise ValueError(f"{where}.binary: expected one of {', '.join(BINARY_POLICIES)}, got {binary!r}")
        rules_where = f"{where}.rules"
        cfg = cfg.get("rules") or []
    if binary not in BINARY_POLICIES:
        raise ValueError(f"{where}: binary must be one of {', '.join(BINARY_POLICIES)}, got {binary!r}")
    if not isinstance(cfg, list):
        raise ValueError(f"{rules_where}: expected a list of rules, got {type(cfg).__name__}")
    parsed = [_rule(raw, f"{rules_where}[{i}]") for i, raw in enumerate(cfg)]
    for i, rule in enumerate(parsed):
        if not have_hash_key and _uses_hash(rule):
            # Without a per-gateway key a hash of a low-entropy value (a card, an SSN) is reversible.
            raise ValueError(
                f"{rules_where}[{i}].style: 'hash' needs the gateway's hash key, and none is configured"
            )
    columns = tuple(r for r in parsed if isinstance(r, ColumnRule))
    contents = tuple(r for r in parsed if isinstance(r, ContentRule))
    return ParsedConfig(columns, contents, binary)
