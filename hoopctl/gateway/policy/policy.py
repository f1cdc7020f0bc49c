"""Roles grant classes of statement; a session's policy judges each query string against them.

A role is a plain set of classes (see `classify.py` for what each class means), so that roles can
later be intersected along a token chain and widened by just-in-time grants (`extra_grants`).
A query string is allowed only when every statement in it is; a refusal names its rule and tells
the caller how to ask for access. In the gateway's YAML config:

    roles:
      reader: {grants: [read]}               # plus `session`, which every role has
      writer: {grants: [read, write, copy]}
      admin:  {grants: [all]}                # every class, and `unknown` functions/settings

Classification is the expensive part (a full parse and walk), so the policy caches it by the
statement's normalized text (`pglast.parser.normalize`: literals replaced by $n), which pgbench's
and psql's queries share whatever their literal values; classifications that depended on a literal
are never cached (see `classify.py`). The cache is an LRU of bounded size, shared by the sessions
of one `Policy`.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

from pglast import parser

from hoopctl.gateway.policy.classify import (
    GRANTABLE,
    UNKNOWN_GRANT,
    UNPARSABLE,
    Classification,
    StatementClass,
    classify,
)

log = logging.getLogger(__name__)

# The SQLSTATE a refusal is reported with (insufficient_privilege).
REFUSAL_SQLSTATE = "42501"

# Grant shorthand in the config: every class, and the unknown grant.
ALL = "all"

# Transaction control and everyday session settings: every configured role may use them.
ALWAYS_GRANTED = frozenset({"session"})

# When several classes are missing, the message names the most dangerous first.
_SEVERITY = (
    "program",
    "file",
    "role_switch",
    "backend_control",
    "remote",
    "dynamic",
    "admin",
    "procedural",
    "search_path",
    "ddl",
    "maintenance",
    "copy",
    "write",
    "lock",
    "read",
    "session",
)


@dataclass(frozen=True, slots=True)
class Role:
    """A named set of granted statement classes."""

    name: str
    grants: frozenset[str]


@dataclass(frozen=True, slots=True)
class Verdict:
    """The decision on one query string: allowed or not, what it does, and why."""

    allowed: bool
    classes: frozenset[str]
    rule: str
    message: str


class Policy:
    """The configured roles, and a cache of classifications shared by every session."""

    def __init__(self, roles: Mapping[str, Role], *, cache_size: int = 2048, max_cached_text: int = 8192):
        self.roles: dict[str, Role] = dict(roles)
        self.cache_size = cache_size
        self.max_cached_text = max_cached_text
        self._cache: OrderedDict[str, Classification] = OrderedDict()
        self.hits = 0
        self.misses = 0

    @classmethod
    def from_config(cls, roles: object, **kwargs: int) -> Policy:
        """Builds a policy from the `roles:` mapping of the YAML config; ValueError names the bad key."""
        if not isinstance(roles, Mapping):
            raise ValueError(
                f"roles: expected a mapping of role name to {{grants: [...]}}, got {_kind(roles)}"
            )
        built: dict[str, Role] = {}
        for name, spec in roles.items():
            where = f"roles.{name}"
            if not isinstance(name, str) or not name:
                raise ValueError(f"{where}: a role name must be a non-empty string")
            if not isinstance(spec, Mapping):
                raise ValueError(f"{where}: expected a mapping with a grants list, got {_kind(spec)}")
            if "grants" not in spec:
                raise ValueError(f"{where}.grants: missing (a list of classes, e.g. [read])")
            grants = spec["grants"]
            if not isinstance(grants, list | tuple):
                raise ValueError(f"{where}.grants: expected a list of classes, got {_kind(grants)}")
            granted: set[str] = set()
            for index, grant in enumerate(grants):
                if grant == ALL:
                    granted |= GRANTABLE
                elif isinstance(grant, str) and grant in GRANTABLE:
                    granted.add(grant)
                else:
                    known = ", ".join(sorted(GRANTABLE | {ALL}))
                    raise ValueError(f"{where}.grants[{index}]: unknown class {grant!r} (known: {known})")
            built[name] = Role(name=name, grants=frozenset(granted))
        return cls(built, **kwargs)

    @classmethod
    def from_roles(cls, roles: Mapping[str, list[str] | tuple[str, ...]], **kwargs: int) -> Policy:
        """Shorthand for tests and demos: `{"reader": ["read"]}`; validated like the config."""
        return cls.from_config({name: {"grants": list(grants)} for name, grants in roles.items()}, **kwargs)

    def classify(self, sql: str) -> Classification:
        """The classification of `sql`, from the cache when an equivalent text was seen."""
        # A text without literals (an extended-protocol Parse with $1 parameters) is its own
        # normalized form: look it up before paying for normalize().
        key = sql
        cached = self._cache.get(key)
        if cached is None:
            if "\x00" in sql:
                return classify(sql)  # refused: the C parser would stop at the NUL
            try:
                key = parser.normalize(sql)
            except (parser.ParseError, UnicodeError, ValueError, RecursionError):
                return classify(sql)  # reports it unparsable; not worth caching
            cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            self.hits += 1
            return cached
        self.misses += 1
        found = classify(sql)
        if found.cacheable and len(key) <= self.max_cached_text:
            self._cache[key] = found
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return found

    def cache_info(self) -> tuple[int, int, int]:
        """(hits, misses, entries) of the classification cache."""
        return self.hits, self.misses, len(self._cache)

    def session(
        self,
        role: str,
        extra_grants: frozenset[str] = frozenset(),
        *,
        resource: str | None = None,
        within: frozenset[str] | None = None,
    ) -> SessionPolicy:
        """The policy of one client session acting as `role` (unknown role: everything refused).

        `extra_grants` are just-in-time grants added to the role's; `within` caps the role's grants
        (the intersection of the grants along a token chain, say), not the just-in-time ones.
        """
        return SessionPolicy(self, role, extra_grants, resource=resource, within=within)

    def role_granting(self, needed: frozenset[str]) -> str | None:
        """The narrowest configured role granting all of `needed`, to suggest in a refusal."""
        needed = needed - ALWAYS_GRANTED
        fitting = [role for role in self.roles.values() if needed <= role.grants]
        if not fitting:
            return None
        return min(fitting, key=lambda role: (len(role.grants), role.name)).name


class SessionPolicy:
    """Judges the statements of one session; tracks its prepared statements.

    SQL `PREPARE name AS ...` and named protocol-level Parse messages record what `name` does, so
    that `EXECUTE name` is judged by it. A name keeps every class it ever carried in the session
    (re-preparing a name after DEALLOCATE cannot launder it, even when a DEALLOCATE failed on the
    server); EXECUTE of a name the gateway never saw prepared is refused.

    A protocol Parse is judged (`judge_parse`) when it arrives, staged (`stage_statement`) when it is
    forwarded and confirmed (`confirm_statement`) when the database answers ParseComplete: until
    then the database may skip it (after an earlier error in the pipeline) and keep what the name
    ran before, so a staged name is judged by both. The unnamed statement, replaced at every
    unnamed Parse, keeps only what it may run now.
    """

    def __init__(
        self,
        policy: Policy,
        role: str,
        extra_grants: frozenset[str] = frozenset(),
        *,
        resource: str | None = None,
        within: frozenset[str] | None = None,
    ):
        self.policy = policy
        self.role = role
        self.resource = resource
        self._role = policy.roles.get(role)
        self._within = None if within is None else frozenset(within)
        self._extra = frozenset(extra_grants)
        self._grants = self._compute_grants()
        self._prepared: dict[str, frozenset[str]] = {}
        self._history: dict[str, frozenset[str]] = {}
        # Statement names whose classes name others (EXECUTE x, FETCH c): resolved at each Bind.
        self._with_refs: set[str] = set()
        # Cursors and named portals -> everything the name ran in this session (FETCH runs it).
        self._cursors: dict[str, frozenset[str]] = {}

    @property
    def grants(self) -> frozenset[str]:
        return self._grants

    @property
    def has_role(self) -> bool:
        """Whether the policy knows this session's role (a reload may have removed it)."""
        return self._role is not None

    def _compute_grants(self) -> frozenset[str]:
        if self._role is None:
            return frozenset()
        granted = self._role.grants if self._within is None else self._role.grants & self._within
        return granted | self._extra | ALWAYS_GRANTED

    def set_extra_grants(self, extra_grants: frozenset[str]) -> None:
        """Replaces the just-in-time grants (an approval arrived, or one expired)."""
        self._extra = frozenset(extra_grants)
        self._grants = self._compute_grants()

    def inherit(self, old: SessionPolicy) -> None:
        """Take over a session's state from before a reload (SIGHUP): what its prepared
        names do (judged by this policy's grants at each EXECUTE), and its live
        just-in-time grants."""
        self._prepared = dict(old._prepared)
        self._history = dict(old._history)
        self._with_refs = set(old._with_refs)
        self._cursors = dict(old._cursors)
        self.set_extra_grants(old._extra)

    def check_query(self, sql: str) -> Verdict:
        """A simple-protocol Query: every statement must be allowed, or the whole string is refused."""
        return self._check(self.policy.classify(sql))

    def check_parse(self, sql: str, name: str = "") -> Verdict:
        """An extended-protocol Parse (one statement) that `name` now runs, if allowed."""
        verdict, classes = self.judge_parse(sql)
        if verdict.allowed:
            self.stage_statement(name, classes)
        return verdict

    def judge_parse(self, sql: str) -> tuple[Verdict, frozenset[str]]:
        """An extended-protocol Parse (one statement), and what its name will need at each Bind.

        Records nothing under the statement's name: see `stage_statement`."""
        found = self.policy.classify(sql)
        if found.error is None and len(found.statements) > 1:
            return self._refuse("multiple-statements-in-parse", found.classes, None), frozenset()
        verdict = self._check(found)
        if not verdict.allowed or not found.statements:
            return verdict, frozenset()
        return verdict, _stored(found.statements[0])

    def stage_statement(self, name: str, classes: frozenset[str]) -> None:
        """A Parse of `name` is on its way: until the database answers, `name` may still run what
        it ran before (the Parse may be skipped), so it is judged by both."""
        self._record(name, classes | self._prepared.get(name, frozenset()), self._prepared, union=name != "")

    def confirm_statement(self, name: str, classes: frozenset[str]) -> None:
        """The database prepared `name`: it runs `classes` (with those of Parses still on their way)."""
        self._record(name, classes, self._prepared, union=name != "")

    def check_execute(self, name: str) -> Verdict:
        """Bind/Execute of a statement prepared earlier: judged again against today's grants."""
        stored = self._prepared.get(name)
        if stored is None:
            return self._refuse(f"unknown-prepared-statement:{name}", frozenset(), None)
        if name in self._with_refs:
            resolved = self._resolve(stored)
            if isinstance(resolved, Verdict):
                return resolved
            stored = resolved
        return self._judge_classes(stored, self.grants)

    def check_classes(self, classes: frozenset[str]) -> Verdict:
        """A portal bound earlier: what its Bind was allowed to run, judged by today's grants."""
        return self._judge_classes(classes, self.grants)

    def cursor_classes(self, name: str) -> frozenset[str]:
        """Everything that ran under a cursor or portal name in this session (empty if none)."""
        return self._cursors.get(name, frozenset())

    def bind_portal(self, name: str, classes: frozenset[str]) -> None:
        """A named portal was bound to run `classes`: a FETCH of it by name runs them too."""
        if name:
            self._cursors[name] = self._cursors.get(name, frozenset()) | classes

    def _cursor(self, name: str) -> frozenset[str]:
        """What fetching `name` runs. A cursor this session never declared nor bound was opened
        by a function, which only the `unknown` grant lets run: its query is unknown too."""
        return self._cursors.get(name, _UNKNOWN_CURSOR)

    def _resolve(self, classes: frozenset[str], depth: int = 0) -> frozenset[str] | Verdict:
        """`classes` with each reference (EXECUTE x, FETCH c) replaced by what that name runs
        now; a refusal if a prepared name is unknown or the references go too deep."""
        out: set[str] = set()
        for cls in classes:
            if not cls.startswith(_REF):
                out.add(cls)
                continue
            kind, _, name = cls[1:].partition(":")
            if kind == "fetch":
                out |= self._cursor(name)
                continue
            runs = self._prepared.get(name)
            if runs is None:
                return self._refuse(f"unknown-prepared-statement:{name}", frozenset(), None)
            if depth >= _MAX_REF_DEPTH:
                return self._refuse("prepared-statements-nested-too-deeply", frozenset(), None)
            runs = self._resolve(runs, depth + 1)
            if isinstance(runs, Verdict):
                return runs
            out |= runs
        return frozenset(out)

    def close_statement(self, name: str) -> None:
        """The database closed a prepared statement (protocol-level Close)."""
        self._prepared.pop(name, None)

    def _check(self, found: Classification) -> Verdict:
        if found.error is not None:
            return self._refuse(UNPARSABLE, frozenset(), None, detail=found.error)
        if self._role is None:
            return self._refuse("unknown-role", found.classes, None)
        grants = self._grants
        statements = found.statements
        if len(statements) == 1:
            only = statements[0]
            if only.plain and only.classes <= grants:
                return _allowed(only.classes)
        prepared = self._prepared
        staged: dict[str, frozenset[str]] | None = None
        total: frozenset[str] = frozenset()
        for statement in statements:
            needed = statement.classes
            if statement.refused:
                return self._refuse(statement.refused[0], found.classes, None)
            if statement.unknown and UNKNOWN_GRANT not in grants:
                return self._refuse(statement.unknown[0], found.classes, frozenset({UNKNOWN_GRANT}))
            current = prepared if staged is None else staged
            for name in statement.executes:
                runs = current.get(name)
                if runs is None:
                    return self._refuse(f"unknown-prepared-statement:{name}", found.classes, None)
                if name in self._with_refs:
                    runs = self._resolve(runs)
                    if isinstance(runs, Verdict):
                        return runs
                needed = needed | runs
            if statement.fetches is not None:
                needed = needed | self._cursor(statement.fetches)
            verdict = self._judge_classes(needed, grants)
            if not verdict.allowed:
                return verdict
            total |= needed
            if statement.declares is not None:
                self.bind_portal(
                    statement.declares, needed | {UNKNOWN_GRANT} if statement.unknown else needed
                )
            if (
                statement.prepares is not None
                or statement.deallocates is not None
                or statement.deallocates_all
            ):
                staged = dict(current) if staged is None else staged
                self._apply(statement, staged)
        if staged is not None:
            self._prepared = staged
        return _allowed(total)

    def _apply(self, statement: StatementClass, staged: dict[str, frozenset[str]]) -> None:
        if statement.deallocates_all:
            # DEALLOCATE ALL and DISCARD ALL leave the protocol's unnamed statement in place.
            unnamed = staged.get("")
            staged.clear()
            if unnamed is not None:
                staged[""] = unnamed
        if statement.deallocates is not None:
            staged.pop(statement.deallocates, None)
        if statement.prepares is not None:
            self._record(statement.prepares, _stored(statement), staged, union=True)

    def _record(
        self, name: str, classes: frozenset[str], into: dict[str, frozenset[str]], union: bool
    ) -> None:
        if union:
            classes = classes | self._history.get(name, frozenset())
            self._history[name] = classes
        into[name] = classes
        if any(cls.startswith(_REF) for cls in classes):
            self._with_refs.add(name)

    def _judge_classes(self, needed: frozenset[str], grants: frozenset[str]) -> Verdict:
        missing = needed - grants
        if not missing:
            return _allowed(needed)
        worst = min(missing, key=lambda cls: _SEVERITY.index(cls) if cls in _SEVERITY else -1)
        return self._refuse(f"{worst}-not-granted", needed, needed)

    def _refuse(
        self, rule: str, classes: frozenset[str], needed: frozenset[str] | None, detail: str | None = None
    ) -> Verdict:
        if rule == UNPARSABLE:
            message = f"hoopctl: statement refused by rule {rule} ({detail}): the gateway only forwards SQL it can parse"
        elif self._role is None:
            message = f'hoopctl: statement refused by rule {rule}: role "{self.role}" is not configured on this gateway'
        else:
            granted = ", ".join(sorted(self.grants)) or "nothing"
            message = f'hoopctl: statement refused by rule {rule} (role "{self.role}" on this resource grants: {granted}).'
            if needed is not None:
                suggested = self.policy.role_granting(needed | self.grants) or self.policy.role_granting(
                    needed
                )
                role = suggested or "<role granting " + ", ".join(sorted(needed - self.grants)) + ">"
                resource = self.resource or "<resource>"
                message += f' Ask for access: hoopctl access request --resource {resource} --role {role} --reason "..."'
            else:
                message += " " + _hint(rule)
        log.debug("refused: %s", rule)
        return Verdict(False, classes, rule, message)


def _hint(rule: str) -> str:
    """What to do about a refusal that no grant can lift."""
    if rule.startswith("unknown-prepared-statement:"):
        return "PREPARE (or Parse) the statement in this session, through the gateway, before executing it."
    if rule == "multiple-statements-in-parse":
        return "Send one statement per Parse message."
    return "No role can allow this statement; rewrite it or ask an administrator."


_ALLOWED: dict[frozenset[str], Verdict] = {}


def _allowed(classes: frozenset[str]) -> Verdict:
    """The allowed verdict for `classes`; shared, since verdicts are immutable (and this is hot)."""
    verdict = _ALLOWED.get(classes)
    if verdict is None:
        verdict = Verdict(True, classes, "allowed", "")
        if len(_ALLOWED) < 4096:  # a few dozen combinations occur in practice; stay bounded anyway
            _ALLOWED[classes] = verdict
    return verdict


# A reference in a prepared statement's classes, resolved at each Bind: "@execute:NAME" for
# SQL EXECUTE (the name may be prepared anew, or the grants that allowed it lost, since the
# Parse) and "@fetch:NAME" for FETCH/MOVE of a cursor or portal.
_REF = "@"
_UNKNOWN_CURSOR = frozenset({UNKNOWN_GRANT})
_MAX_REF_DEPTH = 4


def _stored(statement: StatementClass) -> frozenset[str]:
    """What a prepared statement will need when executed: its classes, `unknown` if it had any,
    and references to the names it executes or fetches."""
    stored = statement.classes
    if statement.unknown:
        stored = stored | {UNKNOWN_GRANT}
    if statement.executes or statement.fetches is not None:
        refs = {f"{_REF}execute:{name}" for name in statement.executes}
        if statement.fetches is not None:
            refs.add(f"{_REF}fetch:{statement.fetches}")
        stored = stored | refs
    return stored


def _kind(value: object) -> str:
    return type(value).__name__
