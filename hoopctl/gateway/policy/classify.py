"""Classify SQL by what it does, with PostgreSQL's own parser (pglast), never by its first word.

Every statement in a string is parsed and its whole tree walked: a DELETE inside a CTE, a
function call in a subquery's WHERE clause or an EXECUTE under EXPLAIN ANALYZE counts as much
as the statement's top. The classes, granted to roles by the policy:

=================  =====================================================================
read               SELECT, VALUES, TABLE, plain EXPLAIN, FETCH, DECLARE CURSOR over a read
                   (the policy adds to a FETCH what its cursor or portal runs)
write              INSERT/UPDATE/DELETE/MERGE anywhere in the tree (data-modifying CTEs
                   included), SELECT ... FOR UPDATE/SHARE (row locks), SELECT INTO,
                   CREATE TABLE AS, TRUNCATE, REFRESH MATERIALIZED VIEW, NOTIFY,
                   nextval/setval, large-object writes, EXPLAIN ANALYZE of any of these
ddl                CREATE/ALTER/DROP/COMMENT of schema objects, TRUNCATE, CREATE TABLE AS
admin              roles, GRANT/REVOKE, ALTER SYSTEM, databases, tablespaces, extensions,
                   SECURITY LABEL, event triggers, LOAD, CHECKPOINT, two-phase commit,
                   superuser-only settings, publications and subscriptions
maintenance        VACUUM, ANALYZE, CLUSTER, REINDEX, BRIN/GIN upkeep functions
copy               COPY to STDOUT / from STDIN (plus read or write for its direction)
program            COPY TO/FROM PROGRAM; functions in untrusted languages (C, *u)
file               server files: COPY to/from a file, pg_read_file, pg_ls_dir, lo_import...
role_switch        SET/RESET ROLE, SET/RESET SESSION AUTHORIZATION, set_config('role'...),
                   DISCARD ALL (it resets the session authorization)
backend_control    other backends and the server: pg_terminate_backend, pg_reload_conf...
procedural         DO, CALL
remote             dblink, postgres_fdw, foreign servers and user mappings
dynamic            functions that run SQL passed as a string (query_to_xml, ts_stat...)
lock               LOCK TABLE, advisory locks
search_path        a search_path that lists pg_catalog after another schema
session            BEGIN/COMMIT/ROLLBACK/SAVEPOINT, SET/SHOW/RESET of everyday settings,
                   LISTEN/UNLISTEN, DEALLOCATE, DISCARD PLANS/TEMP/SEQUENCES, CLOSE
=================  =====================================================================

Fail closed: a string that does not parse is `unparsable`; a node type this module does not
know is `unsupported-node:<Type>` (refused whatever the grants); an unknown function or setting
is `unknown-function:<name>` / `unknown-setting:<name>`, refused unless the role grants `unknown`.

Caching: a classification is reused for every text with the same `pglast.parser.normalize()`
form (the text with its literal constants replaced by $n). Decisions that read a literal
(set_config's setting name, a search_path value, a function's language given as a string,
EXPLAIN options with a value) mark the classification `cacheable=False`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from pglast import ast, enums, parser

from hoopctl.gateway.policy import functions, settings


def _words(text: str) -> list[str]:
    return text.split()


CLASSES: frozenset[str] = frozenset(
    _words(
        """
    read write ddl admin maintenance copy program file role_switch backend_control procedural
    remote dynamic lock search_path session
    """
    )
)
# A grant that lets a role run statements calling unknown functions or changing unknown settings.
UNKNOWN_GRANT = "unknown"
GRANTABLE: frozenset[str] = CLASSES | {UNKNOWN_GRANT}

UNPARSABLE = "unparsable"


@dataclass(frozen=True, slots=True)
class StatementClass:
    """What one statement of a query string does."""

    classes: frozenset[str]
    unknown: tuple[str, ...] = ()  # rules the `unknown` grant lets through
    refused: tuple[str, ...] = ()  # rules nothing lets through
    executes: tuple[str, ...] = ()  # prepared statements it runs (EXECUTE name)
    prepares: str | None = None  # PREPARE name AS ...: the name; `classes` are the query's
    deallocates: str | None = None
    deallocates_all: bool = False  # DEALLOCATE ALL, DISCARD ALL
    declares: str | None = None  # DECLARE name CURSOR FOR ...: the name; `classes` are the query's
    fetches: str | None = None  # FETCH/MOVE ... name: it runs what the cursor (or portal) runs
    # Judged by its classes alone: no names it runs or defines, nothing unknown or refused.
    # Set once (classifications are cached and judged at every statement).
    plain: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        plain = not (
            self.executes
            or self.refused
            or self.unknown
            or self.prepares is not None
            or self.deallocates is not None
            or self.deallocates_all
            or self.declares is not None
            or self.fetches is not None
        )
        object.__setattr__(self, "plain", plain)


@dataclass(frozen=True, slots=True)
class Classification:
    """What a whole query string does: one entry per statement, or an error when unparsable."""

    statements: tuple[StatementClass, ...]
    cacheable: bool = True
    error: str | None = None

    @property
    def classes(self) -> frozenset[str]:
        out: frozenset[str] = frozenset()
        for statement in self.statements:
            out |= statement.classes
        return out


def classify(sql: str) -> Classification:
    """Parse `sql` (any number of statements) and classify each statement; never raises."""
    if "\x00" in sql:
        # The C parser would stop at the NUL and judge only the text before it.
        return Classification((), cacheable=False, error="NUL character in statement")
    try:
        raw = parser.parse_sql(sql)
    except parser.ParseError as exc:
        return Classification((), cacheable=False, error=str(exc))
    except RecursionError:
        return Classification((), cacheable=False, error="statement nested too deeply")
    except (UnicodeError, ValueError) as exc:
        return Classification((), cacheable=False, error=type(exc).__name__)
    statements = []
    cacheable = True
    for rawstmt in raw or ():
        walk = _Walk()
        walk.run(rawstmt.stmt)
        statements.append(walk.result())
        cacheable = cacheable and walk.cacheable
    return Classification(tuple(statements), cacheable=cacheable)


def copies_out(sql: str) -> bool | None:
    """Whether `sql` holds a COPY ... TO STDOUT (only a top-level statement can be one); None
    if it does not parse. Asked only of statements classified `copy`: the second parse is rare."""
    try:
        raw = parser.parse_sql(sql)
    except (parser.ParseError, RecursionError, UnicodeError, ValueError):
        return None
    return any(
        isinstance(r.stmt, ast.CopyStmt) and not r.stmt.is_from and r.stmt.filename is None for r in raw or ()
    )


class _Walk:
    """An explicit-stack walk over one statement's tree (deep trees cannot exhaust the C stack)."""

    def __init__(self) -> None:
        self.classes: set[str] = set()
        self.unknown: list[str] = []
        self.refused: list[str] = []
        self.executes: list[str] = []
        self.prepares: str | None = None
        self.deallocates: str | None = None
        self.deallocates_all = False
        self.declares: str | None = None
        self.fetches: str | None = None
        self.cacheable = True
        self.stack: list[tuple[object, bool]] = []

    def run(self, root: object) -> None:
        self.stack.append((root, False))
        while self.stack:
            node, plan_only = self.stack.pop()
            if isinstance(node, tuple | list):
                self.stack.extend((child, plan_only) for child in node)
                continue
            if not isinstance(node, ast.Node):
                continue
            handler = _HANDLERS.get(type(node))
            if handler is None:
                self.refused.append(f"unsupported-node:{type(node).__name__}")
                continue
            handler(self, node, plan_only)

    def result(self) -> StatementClass:
        return StatementClass(
            classes=frozenset(self.classes),
            unknown=tuple(dict.fromkeys(self.unknown)),
            refused=tuple(dict.fromkeys(self.refused)),
            executes=tuple(dict.fromkeys(self.executes)),
            prepares=self.prepares,
            deallocates=self.deallocates,
            deallocates_all=self.deallocates_all,
            declares=self.declares,
            fetches=self.fetches,
        )

    def children(self, node: ast.Node, plan_only: bool, skip: tuple[str, ...] = ()) -> None:
        for attr in type(node).__slots__:
            if attr in skip:
                continue
            value = getattr(node, attr, None)
            if isinstance(value, ast.Node | tuple | list):
                self.stack.append((value, plan_only))

    def does(self, classes: frozenset[str], plan_only: bool) -> None:
        """Adds what a statement node itself does; under plain EXPLAIN it is only planned: a read."""
        self.classes.update(READ if plan_only else classes)


READ = frozenset({"read"})

Handler = Callable[[_Walk, ast.Node, bool], None]
_HANDLERS: dict[type, Handler] = {}


def _simple(classes: str, *node_types: type) -> None:
    """Node types whose own classes are fixed; their children are walked as usual."""
    needed = frozenset(classes.split())

    def handle(walk: _Walk, node: ast.Node, plan_only: bool) -> None:
        walk.classes.update(needed)
        walk.children(node, plan_only)

    for node_type in node_types:
        _HANDLERS[node_type] = handle


def _handles(*node_types: type) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        for node_type in node_types:
            _HANDLERS[node_type] = handler
        return handler

    return register


# Parts of statements and expressions that do nothing by themselves: their children are walked.
_simple(
    "",
    *(
        getattr(ast, name)
        for name in _words(
            """
        A_ArrayExpr A_Const A_Expr A_Indices A_Indirection A_Star Alias BoolExpr BooleanTest CaseExpr
        CaseWhen CoalesceExpr CollateClause ColumnRef CommonTableExpr CTECycleClause CTESearchClause
        CurrentOfExpr GroupingFunc GroupingSet JoinExpr MinMaxExpr MultiAssignRef NamedArgExpr NullTest
        ParamRef RangeFunction RangeSubselect RangeVar ResTarget RowExpr SetToDefault SortBy
        SQLValueFunction SubLink TypeCast TypeName WindowDef WithClause XmlExpr XmlSerialize
        OnConflictClause InferClause IndexElem MergeWhenClause ReturningClause ReturningOption
        MergeSupportFunc RangeTableFunc RangeTableFuncCol DefElem String Integer Float Boolean BitString
        RoleSpec ObjectWithArgs AccessPriv FunctionParameter ColumnDef Constraint PartitionSpec
        PartitionElem PartitionBoundSpec PartitionRangeDatum PartitionCmd AlterTableCmd ATAlterConstraint
        TableLikeClause TriggerTransition StatsElem PublicationObjSpec PublicationTable CreateOpClassItem
        VacuumRelation ReturnStmt IntoClause LockingClause
        JsonAggConstructor JsonArgument JsonArrayAgg JsonArrayConstructor JsonArrayQueryConstructor
        JsonBehavior JsonFormat JsonFuncExpr JsonIsPredicate JsonKeyValue JsonObjectAgg
        JsonObjectConstructor JsonOutput JsonParseExpr JsonReturning JsonScalarExpr JsonSerializeExpr
        JsonTable JsonTableColumn JsonTablePathSpec JsonValueExpr
        """
        )
    ),
)

_simple("session", ast.VariableShowStmt, ast.ListenStmt, ast.UnlistenStmt, ast.ClosePortalStmt)
_simple("session", ast.ConstraintsSetStmt)
_simple("write", ast.NotifyStmt)
_simple("write ddl", ast.TruncateStmt, ast.RefreshMatViewStmt)
_simple("lock", ast.LockStmt)
_simple("maintenance", ast.VacuumStmt, ast.ClusterStmt, ast.ReindexStmt)
_simple(
    "admin",
    *(
        getattr(ast, name)
        for name in _words(
            """
        AlterSystemStmt CreateRoleStmt AlterRoleStmt AlterRoleSetStmt DropRoleStmt GrantStmt GrantRoleStmt
        AlterDefaultPrivilegesStmt ReassignOwnedStmt DropOwnedStmt CreatedbStmt DropdbStmt AlterDatabaseStmt
        AlterDatabaseSetStmt AlterDatabaseRefreshCollStmt CreateTableSpaceStmt DropTableSpaceStmt
        AlterTableSpaceOptionsStmt AlterTableMoveAllStmt CreateExtensionStmt AlterExtensionStmt
        AlterExtensionContentsStmt CreatePLangStmt CreateEventTrigStmt AlterEventTrigStmt
        CreatePublicationStmt AlterPublicationStmt SecLabelStmt CreateAmStmt CreateCastStmt
        CreateTransformStmt LoadStmt CheckPointStmt
        """
        )
    ),
)
_simple("admin remote", ast.CreateSubscriptionStmt, ast.AlterSubscriptionStmt, ast.DropSubscriptionStmt)
_simple(
    "ddl remote",
    ast.CreateFdwStmt,
    ast.AlterFdwStmt,
    ast.CreateForeignServerStmt,
    ast.AlterForeignServerStmt,
    ast.CreateUserMappingStmt,
    ast.AlterUserMappingStmt,
    ast.DropUserMappingStmt,
    ast.ImportForeignSchemaStmt,
    ast.CreateForeignTableStmt,
)
_simple(
    "ddl",
    *(
        getattr(ast, name)
        for name in _words(
            """
        AlterCollationStmt AlterDomainStmt AlterEnumStmt AlterFunctionStmt AlterObjectDependsStmt
        AlterObjectSchemaStmt AlterOpFamilyStmt AlterOperatorStmt AlterOwnerStmt AlterPolicyStmt AlterSeqStmt
        AlterStatsStmt AlterTSConfigurationStmt AlterTSDictionaryStmt AlterTableStmt AlterTypeStmt CommentStmt
        CompositeTypeStmt CreateConversionStmt CreateDomainStmt CreateEnumStmt CreateOpClassStmt
        CreateOpFamilyStmt CreatePolicyStmt CreateRangeStmt CreateSchemaStmt CreateSeqStmt CreateStatsStmt
        CreateStmt CreateTrigStmt DefineStmt DropStmt IndexStmt RenameStmt ReplicaIdentityStmt RuleStmt ViewStmt
        """
        )
    ),
)

WRITE = frozenset({"write"})
WRITE_DDL = frozenset({"write", "ddl"})


@_handles(ast.SelectStmt)
def _select(walk: _Walk, node: ast.SelectStmt, plan_only: bool) -> None:
    walk.classes.add("read")
    if node.intoClause is not None:
        walk.does(WRITE_DDL, plan_only)  # SELECT ... INTO creates and fills a table
    if node.lockingClause:
        walk.does(WRITE, plan_only)  # row locks block writers; FOR UPDATE needs UPDATE privilege
    walk.children(node, plan_only)


@_handles(ast.InsertStmt, ast.UpdateStmt, ast.DeleteStmt, ast.MergeStmt)
def _dml(walk: _Walk, node: ast.Node, plan_only: bool) -> None:
    walk.does(WRITE, plan_only)
    walk.children(node, plan_only)


@_handles(ast.CreateTableAsStmt)
def _create_table_as(walk: _Walk, node: ast.CreateTableAsStmt, plan_only: bool) -> None:
    walk.does(WRITE_DDL, plan_only)
    walk.children(node, plan_only)


@_handles(ast.ExplainStmt)
def _explain(walk: _Walk, node: ast.ExplainStmt, plan_only: bool) -> None:
    walk.classes.add("read")
    analyze = False
    for option in node.options or ():
        if isinstance(option, ast.DefElem) and option.defname.lower() == "analyze":
            if option.arg is not None:
                walk.cacheable = False  # `(ANALYZE false)`: the verdict reads the value
            analyze = analyze or _truthy_option(option.arg)  # any true wins: the safe reading
    # EXPLAIN ANALYZE runs the statement; plain EXPLAIN only plans it. The planner may still
    # evaluate functions with constant arguments, so those keep their classes either way.
    walk.stack.append((node.query, plan_only or not analyze))
    walk.children(node, plan_only, skip=("query",))


def _truthy_option(arg: object) -> bool:
    """PostgreSQL's reading of a boolean option; anything it might read as true counts as true."""
    if arg is None:
        return True
    if isinstance(arg, ast.Boolean):
        return bool(arg.boolval)
    if isinstance(arg, ast.Integer):
        return arg.ival != 0
    if isinstance(arg, ast.String):
        return arg.sval.strip().lower() not in {"false", "off", "no", "0", "of", "f", "n"}
    if isinstance(arg, ast.A_Const):
        return _truthy_option(arg.val)
    return True


@_handles(ast.CopyStmt)
def _copy(walk: _Walk, node: ast.CopyStmt, plan_only: bool) -> None:
    walk.classes.add("copy")
    if node.filename is not None:
        walk.classes.add("program" if node.is_program else "file")
    if node.is_from:
        walk.classes.add("write")
    elif node.relation is not None:
        walk.classes.add("read")
    walk.children(node, plan_only)


@_handles(ast.TransactionStmt)
def _transaction(walk: _Walk, node: ast.TransactionStmt, plan_only: bool) -> None:
    two_phase = {
        enums.TransactionStmtKind.TRANS_STMT_PREPARE,
        enums.TransactionStmtKind.TRANS_STMT_COMMIT_PREPARED,
        enums.TransactionStmtKind.TRANS_STMT_ROLLBACK_PREPARED,
    }
    # Every caller shares the gateway's upstream account, so COMMIT/ROLLBACK PREPARED could
    # settle another caller's prepared transaction: two-phase commit is an administrator's tool.
    walk.classes.add("admin" if node.kind in two_phase else "session")
    walk.children(node, plan_only)


@_handles(ast.PrepareStmt)
def _prepare(walk: _Walk, node: ast.PrepareStmt, plan_only: bool) -> None:
    walk.prepares = node.name
    walk.children(node, plan_only)


@_handles(ast.ExecuteStmt)
def _execute(walk: _Walk, node: ast.ExecuteStmt, plan_only: bool) -> None:
    walk.executes.append(node.name)
    walk.children(node, plan_only)


@_handles(ast.DeclareCursorStmt)
def _declare(walk: _Walk, node: ast.DeclareCursorStmt, plan_only: bool) -> None:
    walk.classes.update(READ)
    walk.declares = node.portalname
    walk.children(node, plan_only)


@_handles(ast.FetchStmt)
def _fetch(walk: _Walk, node: ast.FetchStmt, plan_only: bool) -> None:
    # A cursor runs its query as it is fetched, and a protocol portal (bound to a DELETE ...
    # RETURNING, say) can be fetched by name too: the policy adds what the name runs.
    walk.classes.update(READ)
    walk.fetches = node.portalname
    walk.children(node, plan_only)


@_handles(ast.DeallocateStmt)
def _deallocate(walk: _Walk, node: ast.DeallocateStmt, plan_only: bool) -> None:
    walk.classes.add("session")
    if node.isall:
        walk.deallocates_all = True
    else:
        walk.deallocates = node.name


@_handles(ast.DiscardStmt)
def _discard(walk: _Walk, node: ast.DiscardStmt, plan_only: bool) -> None:
    walk.classes.add("session")
    if node.target == enums.DiscardMode.DISCARD_ALL:
        # DISCARD ALL includes SET SESSION AUTHORIZATION DEFAULT: it undoes any role the
        # gateway set for the caller.
        walk.classes.add("role_switch")
        walk.deallocates_all = True


@_handles(ast.CallStmt)
def _call(walk: _Walk, node: ast.CallStmt, plan_only: bool) -> None:
    walk.classes.add("procedural")
    # The procedure is what CALL runs, so it is covered by `procedural`; its arguments may
    # still call functions, which are judged as usual.
    if node.funccall is not None:
        walk.stack.append((node.funccall.args, plan_only))


TRUSTED_LANGUAGES = frozenset({"sql", "plpgsql", "plperl", "pltcl", "plv8"})


def _language(options: object) -> str | None:
    for option in options or ():
        if isinstance(option, ast.DefElem) and option.defname == "language":
            arg = option.arg
            if isinstance(arg, ast.String):
                return arg.sval.lower()
            return ""
    return None


@_handles(ast.DoStmt)
def _do(walk: _Walk, node: ast.DoStmt, plan_only: bool) -> None:
    walk.classes.add("procedural")
    walk.cacheable = False  # LANGUAGE may be written as a string literal
    language = _language(node.args)
    if language is not None and language not in TRUSTED_LANGUAGES:
        walk.classes.add("program")


@_handles(ast.CreateFunctionStmt)
def _create_function(walk: _Walk, node: ast.CreateFunctionStmt, plan_only: bool) -> None:
    walk.classes.add("ddl")
    walk.cacheable = False  # LANGUAGE may be written as a string literal
    language = _language(node.options)
    if language is None and node.sql_body is None:
        language = ""  # no LANGUAGE and no SQL body: PostgreSQL refuses it anyway; stay safe
    if language is not None and language not in TRUSTED_LANGUAGES:
        walk.classes.add("program")  # C and untrusted languages run code as the server
    walk.children(node, plan_only)


@_handles(ast.FuncCall)
def _func_call(walk: _Walk, node: ast.FuncCall, plan_only: bool) -> None:
    names = tuple(part.sval for part in node.funcname)
    if names[-1] == functions.SET_CONFIG and (len(names) == 1 or names[0] == "pg_catalog"):
        _set_config(walk, node)
    else:
        needed = functions.function_classes(names)
        if needed is None:
            walk.unknown.append(f"unknown-function:{'.'.join(names)}")
        else:
            walk.classes.update(needed)
    walk.children(node, plan_only, skip=("funcname",))


def _literal(node: object) -> str | None:
    """The text of a string constant (possibly cast), or None for anything computed."""
    while isinstance(node, ast.TypeCast):
        node = node.arg
    if isinstance(node, ast.A_Const) and isinstance(node.val, ast.String):
        return node.val.sval
    return None


def _set_config(walk: _Walk, node: ast.FuncCall) -> None:
    walk.cacheable = False  # the verdict depends on the literal setting name (and value)
    args = list(node.args or ())
    named = {arg.name: arg.arg for arg in args if isinstance(arg, ast.NamedArgExpr)}
    positional = [arg for arg in args if not isinstance(arg, ast.NamedArgExpr)]
    name_arg = positional[0] if positional else named.get("setting_name")
    value_arg = positional[1] if len(positional) > 1 else named.get("new_value")
    name = _literal(name_arg)
    if name is None or node.func_variadic:
        # A computed setting name could be 'role': judge it as the worst it could be.
        walk.classes.update(settings.ROLE_SWITCH | settings.SEARCH_PATH_CLASS)
        return
    value = _literal(value_arg)
    _setting(walk, name, None if value is None else [value], computed_value=value is None)


def _setting(walk: _Walk, name: str, values: list[str] | None, computed_value: bool = False) -> None:
    needed = settings.setting_classes(name)
    if needed is None:
        walk.unknown.append(f"unknown-setting:{name.lower()}")
        return
    walk.classes.update(needed)
    if name.lower() in settings.LEXER_SETTINGS:
        walk.cacheable = False
        if computed_value or not settings.lexer_value_safe(name, values):
            walk.classes.update(settings.ADMIN)
    if name.lower() == settings.SEARCH_PATH:
        walk.cacheable = False
        if computed_value or (values is not None and settings.search_path_demotes_catalog(values)):
            walk.classes.update(settings.SEARCH_PATH_CLASS)


@_handles(ast.VariableSetStmt)
def _variable_set(walk: _Walk, node: ast.VariableSetStmt, plan_only: bool) -> None:
    kind = node.kind
    if kind == enums.VariableSetKind.VAR_RESET_ALL:
        walk.classes.add("session")  # role and session_authorization are exempt from RESET ALL
        return
    if kind == enums.VariableSetKind.VAR_SET_MULTI:
        walk.classes.add("session")  # SET TRANSACTION ..., SET SESSION CHARACTERISTICS ...
        walk.children(node, plan_only)
        return
    values: list[str] = []
    for arg in node.args or ():
        text = _literal(arg)
        if text is None and isinstance(arg, ast.A_Const) and arg.val is not None:
            text = str(getattr(arg.val, "ival", getattr(arg.val, "fval", "")))
        values.append(text or "")
    _setting(walk, node.name or "", values)
    walk.children(node, plan_only)


@_handles(ast.RangeTableSample)
def _tablesample(walk: _Walk, node: ast.RangeTableSample, plan_only: bool) -> None:
    names = tuple(part.sval for part in node.method)
    if not (
        names[-1] in functions.TABLESAMPLE_METHODS and (len(names) == 1 or names[:-1] == ("pg_catalog",))
    ):
        walk.unknown.append(f"unknown-function:{'.'.join(names)}")
    walk.children(node, plan_only, skip=("method",))
