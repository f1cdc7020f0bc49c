"""Which functions a statement may call: the deny-list and the allow-list, as data.

A function call is judged by its name alone, the way the classifier sees it after PostgreSQL's
own parser has run (so unquoted names are already lower case and `"PG_READ_FILE"` stays upper
case, which is a different function: PostgreSQL's names are case-sensitive once quoted).

- `DENIED` maps a name to the classes a call needs. It applies whatever the schema qualifier
  (`pg_catalog.pg_read_file`, `public.dblink`): extensions live in any schema.
- A name not denied is read-only when it is a built-in of pg_catalog (`STABLE_BUILTINS`, generated
  from the catalog: IMMUTABLE or STABLE functions), or one of the VOLATILE built-ins reviewed by
  hand below (`VOLATILE_READ_ONLY`), called unqualified or qualified with `pg_catalog`; or one of
  information_schema's helpers, qualified with `information_schema`.
- Anything else is unknown, and the classifier refuses it (fail closed).

Unqualified names are judged as the built-ins they are named after: pg_catalog is searched first
unless a statement puts it later in search_path, which `settings.py` keeps out of a caller's reach.
"""

from __future__ import annotations

from hoopctl.gateway.policy.builtin_functions import STABLE_BUILTINS


def _names(words: str) -> frozenset[str]:
    return frozenset(words.split())


# VOLATILE built-ins that only read, or only touch the caller's own session, reviewed one by one.
VOLATILE_READ_ONLY: frozenset[str] = _names(
    """
    clock_timestamp timeofday random setseed gen_random_uuid current_query currval lastval
    pg_backend_pid pg_blocking_pids pg_safe_snapshot_blocking_pids pg_isolation_test_session_is_blocked
    pg_collation_actual_version pg_database_collation_actual_version
    pg_control_checkpoint pg_control_init pg_control_recovery pg_control_system
    pg_current_logfile pg_current_wal_flush_lsn pg_current_wal_insert_lsn pg_current_wal_lsn
    pg_database_size pg_indexes_size pg_relation_size pg_table_size pg_tablespace_size pg_total_relation_size
    pg_get_backend_memory_contexts pg_get_multixact_members pg_get_shmem_allocations
    pg_get_wal_replay_pause_state pg_get_wal_resource_managers pg_is_in_recovery pg_is_wal_replay_paused
    pg_jit_available pg_last_committed_xact pg_last_wal_receive_lsn pg_last_wal_replay_lsn
    pg_last_xact_replay_timestamp pg_lock_status pg_notification_queue_usage pg_partition_ancestors
    pg_partition_tree pg_prepared_xact pg_sequence_last_value pg_show_replication_origin_status
    pg_sleep pg_sleep_for pg_sleep_until pg_stat_clear_snapshot pg_stat_have_stats
    pg_stat_get_recovery_prefetch pg_stat_get_xact_blocks_fetched pg_stat_get_xact_blocks_hit
    pg_stat_get_xact_function_calls pg_stat_get_xact_function_self_time pg_stat_get_xact_function_total_time
    pg_stat_get_xact_numscans pg_stat_get_xact_tuples_deleted pg_stat_get_xact_tuples_fetched
    pg_stat_get_xact_tuples_hot_updated pg_stat_get_xact_tuples_inserted pg_stat_get_xact_tuples_returned
    pg_stat_get_xact_tuples_updated pg_xact_commit_timestamp pg_xact_commit_timestamp_origin
    pg_xact_status txid_status pg_export_snapshot pg_replication_origin_session_is_setup
    pg_replication_origin_progress pg_replication_origin_session_progress amvalidate
    lo_open lo_close loread lo_get lo_lseek lo_lseek64 lo_tell lo_tell64
    """
)

# Read-only built-ins newer than the PostgreSQL 15 catalog the generated list came from.
NEWER_READ_ONLY: frozenset[str] = _names(
    """
    any_value random_normal pg_input_is_valid pg_input_error_info array_sample array_shuffle
    date_add date_subtract uuidv4 uuidv7 uuid_extract_version uuid_extract_timestamp casefold
    pg_get_acl pg_basetype json_scalar json_serialize system_user reverse crc32 crc32c
    pg_stat_get_backend_io pg_numa_available pg_get_loaded_modules
    """
)

INFORMATION_SCHEMA_HELPERS: frozenset[str] = _names(
    """
    _pg_char_max_length _pg_char_octet_length _pg_datetime_precision _pg_expandarray _pg_index_position
    _pg_interval_type _pg_numeric_precision _pg_numeric_precision_radix _pg_numeric_scale
    _pg_truetypid _pg_truetypmod
    """
)

# Table-sampling methods (`TABLESAMPLE bernoulli (10)`): built in, and only read.
TABLESAMPLE_METHODS: frozenset[str] = _names("bernoulli system")


def _deny(classes: str, words: str) -> dict[str, frozenset[str]]:
    needed = frozenset(classes.split())
    return dict.fromkeys(words.split(), needed)


DENIED: dict[str, frozenset[str]] = {
    # Server files: read or list them, or move them in and out of large objects.
    **_deny(
        "file",
        """
        pg_read_file pg_read_file_old pg_read_binary_file pg_ls_dir pg_ls_logdir pg_ls_waldir pg_ls_tmpdir
        pg_ls_archive_statusdir pg_ls_logicalmapdir pg_ls_logicalsnapdir pg_ls_replslotdir pg_stat_file
        pg_hba_file_rules pg_ident_file_mappings pg_show_all_file_settings pg_file_write pg_file_rename
        pg_file_unlink pg_file_sync pg_logdir_ls pg_file_read pg_file_length
        """,
    ),
    **_deny("file write", "lo_import lo_export"),
    # Large objects and sequences are data: creating, changing or advancing them is a write.
    **_deny(
        "write",
        """
        lo_creat lo_create lo_unlink lo_put lo_from_bytea lowrite lo_truncate lo_truncate64
        nextval setval pg_notify pg_logical_emit_message
        """,
    ),
    **_deny(
        "maintenance",
        "brin_summarize_range brin_summarize_new_values brin_desummarize_range gin_clean_pending_list",
    ),
    # Other sessions and the server itself.
    **_deny(
        "backend_control",
        """
        pg_terminate_backend pg_cancel_backend pg_reload_conf pg_rotate_logfile pg_rotate_logfile_old
        pg_promote pg_log_backend_memory_contexts pg_switch_wal pg_create_restore_point
        pg_backup_start pg_backup_stop pg_start_backup pg_stop_backup pg_wal_replay_pause pg_wal_replay_resume
        pg_stat_reset pg_stat_reset_shared pg_stat_reset_single_table_counters pg_stat_reset_single_function_counters
        pg_stat_reset_slru pg_stat_reset_replication_slot pg_stat_reset_subscription_stats pg_stat_force_next_flush
        pg_stat_statements_reset pg_stat_reset_backend_stats
        pg_create_logical_replication_slot pg_create_physical_replication_slot pg_drop_replication_slot
        pg_copy_logical_replication_slot pg_copy_physical_replication_slot pg_replication_slot_advance
        pg_logical_slot_get_changes pg_logical_slot_get_binary_changes
        pg_logical_slot_peek_changes pg_logical_slot_peek_binary_changes
        pg_replication_origin_create pg_replication_origin_drop pg_replication_origin_advance
        pg_replication_origin_session_setup pg_replication_origin_session_reset
        pg_replication_origin_xact_setup pg_replication_origin_xact_reset pg_sync_replication_slots
        """,
    ),
    **_deny(
        "admin",
        """
        pg_import_system_collations pg_extension_config_dump pg_nextoid pg_stop_making_pinned_objects
        binary_upgrade_create_empty_extension binary_upgrade_set_missing_value binary_upgrade_set_record_init_privs
        binary_upgrade_set_next_array_pg_type_oid binary_upgrade_set_next_heap_pg_class_oid
        binary_upgrade_set_next_heap_relfilenode binary_upgrade_set_next_index_pg_class_oid
        binary_upgrade_set_next_index_relfilenode binary_upgrade_set_next_multirange_array_pg_type_oid
        binary_upgrade_set_next_multirange_pg_type_oid binary_upgrade_set_next_pg_authid_oid
        binary_upgrade_set_next_pg_enum_oid binary_upgrade_set_next_pg_tablespace_oid
        binary_upgrade_set_next_pg_type_oid binary_upgrade_set_next_toast_pg_class_oid
        binary_upgrade_set_next_toast_relfilenode
        """,
    ),
    # Advisory locks block other sessions (and session-level ones outlive the transaction).
    **_deny(
        "lock",
        """
        pg_advisory_lock pg_advisory_lock_shared pg_advisory_xact_lock pg_advisory_xact_lock_shared
        pg_try_advisory_lock pg_try_advisory_lock_shared pg_try_advisory_xact_lock pg_try_advisory_xact_lock_shared
        pg_advisory_unlock pg_advisory_unlock_shared pg_advisory_unlock_all
        """,
    ),
    # SQL handed over as a string runs unseen by the classifier (ts_rewrite and ts_stat take a query).
    **_deny(
        "dynamic",
        """
        query_to_xml query_to_xmlschema query_to_xml_and_xmlschema cursor_to_xml cursor_to_xmlschema
        ts_stat ts_rewrite
        """,
    ),
    # Another server, reached from this one (dblink, postgres_fdw).
    **_deny(
        "remote",
        """
        dblink dblink_exec dblink_connect dblink_connect_u dblink_disconnect dblink_open dblink_fetch
        dblink_close dblink_send_query dblink_get_result dblink_get_connections dblink_is_busy
        dblink_cancel_query dblink_error_message dblink_get_notify dblink_build_sql_insert
        dblink_build_sql_delete dblink_build_sql_update dblink_get_pkey
        postgres_fdw_get_connections postgres_fdw_disconnect postgres_fdw_disconnect_all
        """,
    ),
}

# set_config's verdict depends on the setting it names: settings.py judges it, not this table.
SET_CONFIG = "set_config"

READ_ONLY: frozenset[str] = (
    (STABLE_BUILTINS | VOLATILE_READ_ONLY | NEWER_READ_ONLY) - DENIED.keys() - {SET_CONFIG}
)


def function_classes(qualified: tuple[str, ...]) -> frozenset[str] | None:
    """Classes a call to `qualified` (schema parts then name) needs; None when it is unknown."""
    name = qualified[-1]
    denied = DENIED.get(name)
    if denied is not None:
        return denied
    if len(qualified) == 1 or (len(qualified) == 2 and qualified[0] == "pg_catalog"):
        return READ if name in READ_ONLY else None
    if len(qualified) == 2 and qualified[0] == "information_schema" and name in INFORMATION_SCHEMA_HELPERS:
        return READ
    return None


READ: frozenset[str] = frozenset({"read"})
