"""Which run-time settings (GUCs) a caller may change with SET, RESET or set_config().

PostgreSQL looks setting names up case-insensitively (`SET "ROLE" = x` is SET ROLE), so every
name is lower-cased before it is judged.

- `role` and `session_authorization` switch the identity statements run as: `role_switch`.
- `search_path` decides which function an unqualified name calls. The function allow-list judges
  unqualified names as the built-ins of pg_catalog, which holds while pg_catalog is searched
  first: PostgreSQL searches it first unless the path lists it explicitly after another schema.
  So a path that keeps pg_catalog first (or leaves it out) is a harmless `session` setting, and a
  path that demotes it needs the `search_path` class. The verdict depends on the value: callers
  mark such classifications uncacheable.
- Settings that only a superuser may change and that weaken the server's own guarantees
  (triggers off, damaged pages zeroed, logging silenced, libraries loaded) need `admin`: the
  gateway's upstream account may be a superuser, so PostgreSQL's own check may not stop them.
- Everyday settings of a client session (`SESSION_SETTINGS`) are `session`, granted to everyone.
- Settings that change how the server splits a string into tokens must keep the values the
  gateway's parser assumes (`LEXER_SETTINGS`): with `standard_conforming_strings = off`, the text
  `SELECT '\\', $$'; DELETE ...; --$$` is two harmless literals to the gateway but a DELETE to the
  server; a client-only encoding (SJIS, BIG5, GBK...) can hide a quote in a multi-byte
  character. Any other value needs `admin` (and the verdict reads the value: uncacheable).
- Anything else, including custom `app.*` settings (row-level security policies often read them),
  is unknown and refused unless the role grants `unknown`.
"""

from __future__ import annotations

ROLE_SETTINGS = frozenset({"role", "session_authorization"})
SEARCH_PATH = "search_path"

SESSION_SETTINGS: frozenset[str] = frozenset(
    [
        "application_name",
        "client_encoding",
        "client_min_messages",
        "datestyle",
        "intervalstyle",
        "timezone",
        "timezone_abbreviations",
        "extra_float_digits",
        "bytea_output",
        "xmlbinary",
        "xmloption",
        "standard_conforming_strings",
        "escape_string_warning",
        "backslash_quote",
        "array_nulls",
        "quote_all_identifiers",
        "transform_null_equals",
        "lc_monetary",
        "lc_numeric",
        "lc_time",
        "default_text_search_config",
        "statement_timeout",
        "lock_timeout",
        "idle_in_transaction_session_timeout",
        "idle_session_timeout",
        "transaction_timeout",
        "work_mem",
        "maintenance_work_mem",
        "temp_buffers",
        "hash_mem_multiplier",
        "logical_decoding_work_mem",
        "default_transaction_isolation",
        "default_transaction_read_only",
        "default_transaction_deferrable",
        "transaction_isolation",
        "transaction_read_only",
        "transaction_deferrable",
        "synchronous_commit",
        "jit",
        "jit_above_cost",
        "jit_inline_above_cost",
        "jit_optimize_above_cost",
        "random_page_cost",
        "seq_page_cost",
        "cpu_tuple_cost",
        "cpu_index_tuple_cost",
        "cpu_operator_cost",
        "parallel_setup_cost",
        "parallel_tuple_cost",
        "min_parallel_table_scan_size",
        "min_parallel_index_scan_size",
        "effective_cache_size",
        "effective_io_concurrency",
        "maintenance_io_concurrency",
        "from_collapse_limit",
        "join_collapse_limit",
        "geqo",
        "geqo_threshold",
        "geqo_effort",
        "geqo_pool_size",
        "geqo_generations",
        "geqo_selection_bias",
        "geqo_seed",
        "default_statistics_target",
        "constraint_exclusion",
        "cursor_tuple_fraction",
        "plan_cache_mode",
        "max_parallel_workers_per_gather",
        "max_parallel_maintenance_workers",
        "parallel_leader_participation",
        "recursive_worktable_factor",
        "row_security",
        "check_function_bodies",
        "default_table_access_method",
        "default_tablespace",
        "temp_tablespaces",
        "default_toast_compression",
        "gin_fuzzy_search_limit",
        "gin_pending_list_limit",
        "synchronize_seqscans",
        "vacuum_cost_delay",
        "vacuum_cost_limit",
        "vacuum_cost_page_hit",
        "vacuum_cost_page_miss",
        "vacuum_cost_page_dirty",
        "vacuum_freeze_min_age",
        "vacuum_freeze_table_age",
        "vacuum_multixact_freeze_min_age",
        "vacuum_multixact_freeze_table_age",
        "vacuum_failsafe_age",
        "vacuum_multixact_failsafe_age",
        "password_encryption",
        "exit_on_error",
        "gin_fuzzy_search_limit",
        "enable_partition_pruning",
    ]
)

# Prefixes of families of harmless planner switches (enable_seqscan, enable_hashjoin, ...).
SESSION_PREFIXES: tuple[str, ...] = ("enable_",)

ADMIN_SETTINGS: frozenset[str] = frozenset(
    [
        "session_replication_role",
        "allow_system_table_mods",
        "allow_in_place_tablespaces",
        "zero_damaged_pages",
        "ignore_system_indexes",
        "ignore_checksum_failure",
        "ignore_invalid_pages",
        "dynamic_library_path",
        "local_preload_libraries",
        "session_preload_libraries",
        "jit_provider",
        "lc_messages",
        "temp_file_limit",
        "compute_query_id",
        "update_process_title",
        "commit_delay",
        "commit_siblings",
        "max_stack_depth",
    ]
)
ADMIN_PREFIXES: tuple[str, ...] = ("log_", "debug_", "trace_", "track_", "wal_")


# Settings whose value changes how statements are tokenized, with the values the parser assumes.
LEXER_SETTINGS: dict[str, frozenset[str]] = {
    "standard_conforming_strings": frozenset({"on", "true", "yes", "1", "default"}),
    "client_encoding": frozenset({"utf8", "utf-8", "unicode", "default"}),
}


def lexer_value_safe(name: str, values: list[str] | None) -> bool:
    """Whether setting a tokenizer-affecting setting to `values` keeps the parser's assumptions."""
    safe = LEXER_SETTINGS.get(name.lower())
    if safe is None:
        return True
    if values is None or len(values) > 1:
        return False
    return not values or values[0].strip().lower() in safe


def setting_classes(name: str) -> frozenset[str] | None:
    """Classes needed to change setting `name` (any value but search_path's); None if unknown."""
    name = name.lower()
    if name in ROLE_SETTINGS:
        return ROLE_SWITCH
    if name in ADMIN_SETTINGS or name.startswith(ADMIN_PREFIXES):
        return ADMIN
    if name == SEARCH_PATH or name in SESSION_SETTINGS or name.startswith(SESSION_PREFIXES):
        return SESSION
    return None


def search_path_demotes_catalog(values: list[str]) -> bool:
    """Whether a search_path value lists pg_catalog after another schema.

    `values` are the literal items of the SET (each may itself hold a comma-separated list, as in
    `SET search_path = 'a, pg_catalog'`). A double-quoted "PG_CATALOG" is a different schema to
    PostgreSQL; comparing case-insensitively only ever refuses more, so it is done that way.
    """
    items: list[str] = []
    for value in values:
        items.extend(part.strip().strip('"').strip().lower() for part in value.split(","))
    items = [item for item in items if item]
    return any(item == "pg_catalog" for item in items[1:]) and items[0] != "pg_catalog"


ROLE_SWITCH = frozenset({"role_switch"})
ADMIN = frozenset({"admin"})
SESSION = frozenset({"session"})
SEARCH_PATH_CLASS = frozenset({"search_path"})
