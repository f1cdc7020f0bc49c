"""Masking rules, and the per-result-set plan that applies them to DataRow values.

The gateway calls `MaskingRules.plan()` once per RowDescription. It returns None when no rule can
touch that result set, which is the common case and lets the server forward DataRows without
parsing them; otherwise a `RowMasker` holding only the columns to rewrite, each with its action
decided up front, so `mask()` does no rule lookups per row.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Sequence
from typing import Any, NamedTuple

from hoopctl.gateway.masking import config as _config
from hoopctl.gateway.masking.config import ColumnRule
from hoopctl.gateway.masking.content import ContentScanner, credential_check
from hoopctl.gateway.masking.pgtypes import BINARY_AS_TEXT_OIDS, JSONB_OID, NON_TEXT_OIDS
from hoopctl.gateway.masking.styles import FULL, Hasher, partial_generic

log = logging.getLogger(__name__)

Value = bytes | None
Action = Callable[[bytes], Value]

#: Plans cached per (resource, fields); cleared whole when full, which is rare and cheap.
PLAN_CACHE_SIZE = 4096
_NO_PLAN: Any = object()


class Field(NamedTuple):
    """One column of a RowDescription. A NamedTuple rather than a dataclass: it is hashed as a plan
    cache key for every result set, and a tuple hashes in C."""

    name: str
    table_oid: int
    column: int
    type_oid: int
    format: int  # 0 text, 1 binary


class RowMasker:
    """Rewrites the covered values of each DataRow of one result set."""

    __slots__ = ("_actions", "refuse", "reason", "columns", "hint")

    def __init__(
        self,
        actions: Sequence[tuple[int, Action]],
        refuse: bool,
        reason: str,
        columns: Sequence[str],
        hint: str = "ask for text format results",
    ):
        self._actions = tuple(sorted(actions, key=lambda a: a[0]))
        #: True when a covered column is in binary format and the policy is `refuse`.
        self.refuse = refuse
        #: Why the statement is refused (names the rule and the column), for the ErrorResponse.
        self.reason = reason
        #: Names of the columns that may be rewritten, for the recording.
        self.columns = tuple(columns)
        #: What the caller can do about a refusal.
        self.hint = hint

    def mask(self, values: list[bytes | None]) -> tuple[list[bytes | None], int]:
        """The row with covered values masked, and how many values changed. Never raises on any
        bytes and never changes the number of values; returns `values` itself when nothing changed."""
        out = values
        masked = 0
        n = len(values)
        for i, act in self._actions:
            if i >= n:
                break
            v = values[i]
            if v is None:
                continue
            if type(v) is not bytes:
                v = bytes(v)
            r = act(v)
            if r is not v:
                if masked == 0:
                    out = list(values)
                out[i] = r
                masked += 1
        return out, masked


def _column_action(style: str, hasher: Hasher | None) -> Action:
    if style == "null":
        return lambda v: None
    if style == "partial":
        return partial_generic
    if style == "hash" and hasher is not None:
        return hasher
    return lambda v: FULL


def _jsonb_action(scan: ContentScanner) -> Action:
    """jsonb in binary format: a version byte 1, then the JSON text, which the scanner can rewrite."""

    def act(v: bytes) -> Value:
        if v[:1] != b"\x01":
            return None if scan(v) is not v else v
        body = v[1:]
        r = scan(body)
        if r is body:
            return v
        return None if r is None else b"\x01" + r

    return act


def _detect_then_null(scan: ContentScanner) -> Action:
    """A binary value we cannot rewrite in place: nulled when the scanner finds anything in it."""
    return lambda v: None if scan(v) is not v else v


class MaskingRules:
    """All masking rules of one gateway config. Immutable once built; safe to share across sessions."""

    def __init__(
        self,
        parsed: _config.ParsedConfig,
        hasher: Hasher | None,
        credentials: Callable[[bytes], bool] | None,
        no_content: Collection[str] = (),
    ):
        self._no_content = frozenset(no_content)
        self._column_rules = parsed.column_rules
        self._content_rules = parsed.content_rules
        self.binary = parsed.binary
        self._hasher = hasher
        self._credentials = credentials
        self._per_resource: dict[str, tuple[tuple[ColumnRule, ...], bool, ContentScanner | None]] = {}
        self._plans: dict[tuple[str, tuple[Field, ...]], Any] = {}
        self._for_recording: dict[str, Any] = {}

    @classmethod
    def from_config(
        cls,
        cfg: list[dict[str, Any]] | dict[str, Any] | None,
        *,
        binary: str = "null",
        hash_key: bytes | None = None,
        where: str = "masking",
        no_content: Collection[str] = (),
    ) -> MaskingRules:
        """Build from the config's `masking:` section. Raises ValueError naming the key on bad input.

        `binary` is the default policy for binary-format columns a rule covers (`null` or `refuse`);
        a mapping config's own `binary:` key wins. `hash_key` is the per-gateway HMAC key, needed
        when any rule uses the `hash` style. `where` is the key path used in error messages.
        `no_content` names resources whose own config turns content masking off (column and field
        rules still apply to them).
        """
        if hash_key is not None and len(hash_key) < 16:
            raise ValueError(f"{where}: the hash key must be at least 16 bytes")
        parsed = _config.parse(cfg, binary=binary, have_hash_key=hash_key is not None, where=where)
        credentials = None
        if any("credential" in dict(r.styles) for r in parsed.content_rules):
            try:
                credentials = credential_check()
            except Exception as exc:  # a broken detector must not mean "mask nothing"
                raise ValueError(f"{where}: credential masking needs the scanner's detector: {exc}") from exc
        return cls(parsed, Hasher(hash_key) if hash_key is not None else None, credentials, no_content)

    # -- per resource ------------------------------------------------------------------------------

    def _resource(self, resource: str) -> tuple[tuple[ColumnRule, ...], bool, ContentScanner | None]:
        got = self._per_resource.get(resource)
        if got is None:
            columns = tuple(r for r in self._column_rules if r.applies_to(resource))
            needs_table = any(r.path is not None for r in columns)
            styles: dict[str, str] = {}
            for rule in () if resource in self._no_content else self._content_rules:
                if rule.applies_to(resource):
                    for kind, style in rule.styles:
                        styles.setdefault(kind, style)  # the first rule naming a kind decides its style
            scanner = ContentScanner(styles, self._hasher, self._credentials) if styles else None
            got = (columns, needs_table, scanner)
            self._per_resource[resource] = got
        return got

    def active(self, resource: str) -> bool:
        """Whether any rule applies to `resource` at all."""
        columns, _, scanner = self._resource(resource)
        return bool(columns) or scanner is not None

    # -- result sets -------------------------------------------------------------------------------

    def plan(
        self,
        resource: str,
        fields: Sequence[Field],
        table_name: Callable[[int], str | None],
        column_name: Callable[[int, int], str | None] | None = None,
    ) -> RowMasker | None:
        """The masker for one result set, or None when no rule can apply to it.

        `table_name(oid)` gives "schema.table" (or None); `column_name(oid, attnum)`, when given,
        gives a column's real name so that name and `field` rules also catch `SELECT card AS x`.
        """
        columns, needs_table, scanner = self._resource(resource)
        if not columns and scanner is None:
            return None
        key = (resource, tuple(fields))
        if not needs_table:
            cached = self._plans.get(key, _NO_PLAN)
            if cached is not _NO_PLAN:
                return cached
        masker = self._build(resource, fields, columns, scanner, table_name, column_name)
        if not needs_table:
            # Plans that consulted the catalogue are not cached: a renamed table must not keep
            # (or escape) its old rules.
            if len(self._plans) >= PLAN_CACHE_SIZE:
                self._plans.clear()
            self._plans[key] = masker
        return masker

    def _build(
        self,
        resource: str,
        fields: Sequence[Field],
        columns: tuple[ColumnRule, ...],
        scanner: ContentScanner | None,
        table_name: Callable[[int], str | None],
        column_name: Callable[[int, int], str | None] | None,
    ) -> RowMasker | None:
        actions: list[tuple[int, Action]] = []
        names: list[str] = []
        reasons: list[str] = []
        tables: dict[int, tuple[str, str] | None] = {}
        for i, f in enumerate(fields):
            rule = self._column_rule(resource, f, columns, tables, table_name, column_name)
            if rule is not None:
                if f.format != 0:
                    if self.binary == "refuse":
                        reasons.append(
                            f"column {f.name!r} is masked by rule {rule.label} and requested in binary format"
                        )
                        continue
                    actions.append((i, _column_action("null", None)))
                else:
                    actions.append((i, _column_action(rule.style, self._hasher)))
                names.append(f.name)
            elif scanner is not None and f.type_oid not in NON_TEXT_OIDS:
                if f.format == 0 or f.type_oid in BINARY_AS_TEXT_OIDS:
                    actions.append((i, scanner))
                elif self.binary == "refuse":
                    reasons.append(
                        f"column {f.name!r} is scanned by content rules and requested in binary format"
                    )
                    continue
                elif f.type_oid == JSONB_OID:
                    actions.append((i, _jsonb_action(scanner)))
                else:
                    actions.append((i, _detect_then_null(scanner)))
                names.append(f.name)
        if not actions and not reasons:
            return None
        return RowMasker(actions, bool(reasons), "; ".join(reasons), names)

    @staticmethod
    def _column_rule(
        resource: str,
        f: Field,
        columns: tuple[ColumnRule, ...],
        tables: dict[int, tuple[str, str] | None],
        table_name: Callable[[int], str | None],
        column_name: Callable[[int, int], str | None] | None,
    ) -> ColumnRule | None:
        """The first rule, in config order, that covers field `f`.

        A name rule matches the column's label or, when it comes from a table column, that
        column's real name: `SELECT email AS contact` must not escape a rule on `*email*`."""
        real: str | None | bool = False  # not looked up yet
        for rule in columns:
            if rule.name is not None:
                if rule.name.fullmatch(f.name):
                    return rule
                if real is False:
                    real = (
                        column_name(f.table_oid, f.column)
                        if column_name and f.table_oid and f.column > 0
                        else None
                    )
                if real and rule.name.fullmatch(real):
                    return rule
                continue
            if rule.path is None or not f.table_oid:
                continue
            if f.table_oid not in tables:
                tables[f.table_oid] = _split_table(table_name(f.table_oid))
            st = tables[f.table_oid]
            if st is None:
                continue
            col = (column_name(f.table_oid, f.column) if column_name and f.column > 0 else None) or f.name
            _, schema_re, table_re, column_re = rule.path
            if schema_re.fullmatch(st[0]) and table_re.fullmatch(st[1]) and column_re.fullmatch(col):
                return rule
        return None

    # -- recording ---------------------------------------------------------------------------------

    def _recording_scanner(self, resource: str) -> ContentScanner | None:
        """The resource's content scanner with `null` shown as `****`: in a recording, a masked
        parameter must not look like a NULL one, and a statement must not vanish."""
        got = self._for_recording.get(resource, _NO_PLAN)
        if got is _NO_PLAN:
            _, _, scanner = self._resource(resource)
            got = None
            if scanner is not None:
                styles = {k: "full" if s == "null" else s for k, s in scanner.styles.items()}
                got = ContentScanner(styles, self._hasher, self._credentials)
            self._for_recording[resource] = got
        return got

    def mask_params(self, resource: str, values: Sequence[bytes | str | None]) -> list[bytes | str | None]:
        """Bind parameters as they should appear in the recording: content rules applied to each
        (bytes stay bytes, str stays str, None stays None; the `null` style shows as `****`)."""
        scanner = self._recording_scanner(resource)
        if scanner is None:
            return list(values)
        out: list[bytes | str | None] = []
        for v in values:
            if v is None:
                out.append(None)
            elif isinstance(v, str):
                raw = v.encode("utf-8", "surrogatepass")
                r = scanner(raw)
                out.append(v if r is raw else (r or FULL).decode("utf-8", "replace"))
            else:
                b = bytes(v)
                out.append(scanner(b) or FULL)
        return out

    def masks_text(self, resource: str) -> bool:
        """Whether content rules apply to this resource's statement texts in the recording."""
        return self._recording_scanner(resource) is not None

    def mask_text(self, resource: str, text: str) -> str:
        """A statement's text for the recording, content rules applied to its literals. A statement
        holding a credential is masked whole (the detector reports lines, not spans)."""
        got = self.mask_params(resource, [text])[0]
        return str(got)


def _split_table(qualified: str | None) -> tuple[str, str] | None:
    if not qualified:
        return None
    schema, dot, table = qualified.rpartition(".")
    return (schema if dot else "public", table)
