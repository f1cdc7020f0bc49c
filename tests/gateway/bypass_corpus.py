"""Bypass attempts and legitimate reads, as data, for a caller whose role grants only `read`.

Used by the policy's unit tests and, end to end, by the gateway's tests against a real
PostgreSQL: load `SCHEMA_SQL` into a fresh database, send each case's `sql` as one simple-protocol
Query through the gateway as a `reader`, and assert that every "refuse" case gets SQLSTATE 42501
and leaves the database exactly as it was (`STATE_SQL` returns the same rows before and after),
while every "allow" case succeeds. Each refused case is something that WOULD change the state
below, leak a server file or reach outside the database if it ran (a few need an extension the
test server may lack, such as dblink; those would then fail on the server instead, and still must
be refused first). Single-statement cases can be replayed through the extended protocol (Parse).
"""

from __future__ import annotations

from typing import NamedTuple

SCHEMA_SQL = """
CREATE TABLE accounts (
    id      int PRIMARY KEY,
    email   text NOT NULL,
    balance int NOT NULL DEFAULT 0
);
CREATE TABLE audit_log (
    id         bigserial PRIMARY KEY,
    account_id int REFERENCES accounts (id),
    action     text NOT NULL,
    at         timestamptz NOT NULL DEFAULT now()
);
CREATE SEQUENCE invoice_seq;
CREATE VIEW account_emails AS SELECT id, email FROM accounts;
CREATE FUNCTION bump_balance(account int, amount int) RETURNS void LANGUAGE sql
    AS $$ UPDATE accounts SET balance = balance + amount WHERE id = account $$;
CREATE PROCEDURE close_account(account int) LANGUAGE sql
    AS $$ DELETE FROM accounts WHERE id = account $$;
INSERT INTO accounts VALUES (1, 'ada@example.com', 100), (2, 'bob@example.com', 50), (3, 'eve@example.com', 0);
INSERT INTO audit_log (account_id, action) VALUES (1, 'open'), (2, 'open');
"""

# Everything a refused case could change, in one comparable result (run it as the superuser).
STATE_SQL = """
SELECT 'accounts', count(*)::text || ':' || coalesce(sum(balance), 0)::text || ':' || coalesce(string_agg(email, ',' ORDER BY id), '')
  FROM accounts
UNION ALL SELECT 'audit_log', count(*)::text FROM audit_log
UNION ALL SELECT 'invoice_seq', last_value::text || is_called::text FROM invoice_seq
UNION ALL SELECT 'relations', count(*)::text FROM pg_class WHERE relnamespace = 'public'::regnamespace
UNION ALL SELECT 'functions', count(*)::text FROM pg_proc WHERE pronamespace = 'public'::regnamespace
UNION ALL SELECT 'roles', count(*)::text FROM pg_roles
UNION ALL SELECT 'large_objects', count(*)::text FROM pg_largeobject_metadata
UNION ALL SELECT 'auto_conf', count(*)::text FROM pg_file_settings WHERE sourcefile LIKE '%auto.conf'
ORDER BY 1
"""


class Case(NamedTuple):
    sql: str
    expected: str  # "refuse" or "allow", for a role granting only read
    note: str


REFUSE = "refuse"
ALLOW = "allow"

CASES: tuple[Case, ...] = (
    # --- comments do not hide statements --------------------------------------------------------
    Case("SELECT 1; /* harmless */ DELETE FROM accounts", REFUSE, "block comment before a second statement"),
    Case("/* SELECT */ DELETE FROM accounts", REFUSE, "a comment that looks like a read"),
    Case("SELECT 1 -- ; is this a comment?\n; DROP TABLE audit_log", REFUSE, "line comment ends at newline"),
    Case("/* outer /* nested */ still comment */ TRUNCATE accounts", REFUSE, "nested block comments"),
    Case("SELECT 1 /* ; */ ; UPDATE accounts SET balance = 0", REFUSE, "semicolon inside a comment"),
    Case("--\nDELETE FROM audit_log", REFUSE, "statement after a leading line comment"),
    Case("SELECT /* DELETE FROM accounts */ count(*) FROM accounts", ALLOW, "a write only inside a comment"),
    Case("SELECT 1 -- DROP TABLE accounts", ALLOW, "a drop only inside a line comment"),
    # --- several statements in one string --------------------------------------------------------
    Case("SELECT 1; SELECT 2; INSERT INTO audit_log (action) VALUES ('x')", REFUSE, "write last of three"),
    Case("UPDATE accounts SET balance = 0; SELECT 1", REFUSE, "write first"),
    Case(
        "INSERT INTO accounts VALUES (4, 'mallory@example.com', 0) ON CONFLICT DO NOTHING",
        REFUSE,
        "upsert that quietly inserts",
    ),
    Case("SELECT 1;;; DELETE FROM accounts;", REFUSE, "empty statements around a write"),
    Case("SELECT id FROM accounts; SELECT count(*) FROM audit_log", ALLOW, "two reads"),
    # --- transaction tricks ----------------------------------------------------------------------
    Case("BEGIN; DELETE FROM accounts; COMMIT", REFUSE, "write wrapped in a transaction"),
    Case("BEGIN; SELECT 1; COMMIT; UPDATE accounts SET email = 'x'", REFUSE, "write after a committed read"),
    Case(
        "START TRANSACTION READ WRITE; INSERT INTO accounts VALUES (9, 'x@y', 0); COMMIT",
        REFUSE,
        "read write txn",
    ),
    Case("BEGIN; SAVEPOINT s; DELETE FROM accounts; RELEASE s; COMMIT", REFUSE, "write inside a savepoint"),
    Case("BEGIN; SELECT * FROM accounts; COMMIT", ALLOW, "reads inside a transaction"),
    Case(
        "BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM accounts; SAVEPOINT a; ROLLBACK TO a; COMMIT",
        ALLOW,
        "transaction control around reads",
    ),
    Case("BEGIN; PREPARE TRANSACTION 'hoop'", REFUSE, "two-phase commit holds locks past the session"),
    # --- CTEs and hidden writes ------------------------------------------------------------------
    Case("WITH gone AS (DELETE FROM accounts RETURNING *) SELECT * FROM gone", REFUSE, "DELETE in a CTE"),
    Case(
        "WITH x AS (INSERT INTO audit_log (action) VALUES ('x') RETURNING id) SELECT id FROM x",
        REFUSE,
        "INSERT CTE",
    ),
    Case(
        "WITH a AS (SELECT 1), b AS (UPDATE accounts SET balance = 1 RETURNING id) SELECT * FROM a",
        REFUSE,
        "unused data-modifying CTE still runs",
    ),
    Case(
        "SELECT * FROM (WITH d AS (DELETE FROM audit_log RETURNING 1) SELECT * FROM d) s",
        REFUSE,
        "data-modifying CTE nested in a subquery",
    ),
    Case("WITH t AS (SELECT id FROM accounts) SELECT * FROM t", ALLOW, "read-only CTE"),
    Case(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5) SELECT sum(i) FROM n",
        ALLOW,
        "recursive CTE",
    ),
    Case(
        "MERGE INTO accounts a USING (SELECT 1 AS id) s ON a.id = s.id WHEN MATCHED THEN DELETE",
        REFUSE,
        "MERGE",
    ),
    # --- dollar quoting, string escapes, unicode escapes -----------------------------------------
    Case("SELECT $$; DELETE FROM accounts; $$", ALLOW, "a write only inside a dollar-quoted string"),
    Case("SELECT $tag$ $$ $tag$; DELETE FROM accounts", REFUSE, "tagged dollar quote closed before a write"),
    Case("SELECT E'it\\'s; DELETE FROM accounts; --'", ALLOW, "escaped quote keeps it one string"),
    Case("SELECT 'it\\'; DELETE FROM accounts; --'", REFUSE, "standard strings: backslash does not escape"),
    Case("SELECT U&'\\0044ELETE'", ALLOW, "unicode-escaped string is data"),
    Case('DELETE FROM U&"\\0061ccounts"', REFUSE, "unicode-escaped table name"),
    Case("SELECT U&\"\\0070g_read_file\"('/etc/passwd')", REFUSE, "unicode-escaped pg_read_file"),
    Case("SELECT U&\"!0070g_ls_dir\" UESCAPE '!' ('.')", REFUSE, "unicode escape with UESCAPE"),
    Case("SET standard_conforming_strings = off", REFUSE, "would make the server read strings differently"),
    Case("SET client_encoding = 'SJIS'", REFUSE, "client-only encodings can hide quotes in characters"),
    # --- prepared statements ---------------------------------------------------------------------
    Case("PREPARE wipe AS DELETE FROM accounts", REFUSE, "preparing a write"),
    Case("PREPARE wipe2 AS DELETE FROM accounts; EXECUTE wipe2", REFUSE, "prepare and execute a write"),
    Case("EXECUTE never_prepared", REFUSE, "executing a statement the gateway never saw prepared"),
    Case(
        "PREPARE r1(int) AS SELECT email FROM accounts WHERE id = $1; EXECUTE r1(1)", ALLOW, "prepared read"
    ),
    Case("PREPARE r2 AS SELECT 1; DEALLOCATE r2", ALLOW, "prepare then deallocate a read"),
    Case("EXPLAIN ANALYZE EXECUTE never_prepared_either", REFUSE, "EXPLAIN ANALYZE of an unknown statement"),
    # --- functions with side effects -------------------------------------------------------------
    Case("SELECT pg_read_file('/etc/passwd')", REFUSE, "server file read"),
    Case("SELECT pg_catalog.pg_read_file('/etc/passwd')", REFUSE, "schema-qualified file read"),
    Case("SELECT pg_catalog . pg_read_binary_file ('/etc/passwd')", REFUSE, "spaces in a qualified name"),
    Case("SELECT \"pg_read_file\"('/etc/passwd')", REFUSE, "quoted lower-case name is the same function"),
    Case("SELECT \"PG_READ_FILE\"('/etc/passwd')", REFUSE, "quoted upper-case name: unknown function"),
    Case("SELECT * FROM pg_ls_dir('.')", REFUSE, "file listing as a table function"),
    Case("SELECT id FROM accounts WHERE email = pg_read_file('/etc/hostname')", REFUSE, "file read in WHERE"),
    Case("SELECT (SELECT pg_stat_file('postgresql.conf'))", REFUSE, "file stat in a scalar subquery"),
    Case("SELECT lo_import('/etc/passwd')", REFUSE, "server file into a large object"),
    Case(
        "SELECT lo_export(lo_from_bytea(0, 'x'), '/tmp/hoopctl-policy-leak')",
        REFUSE,
        "large object to a file",
    ),
    Case("SELECT lo_create(0)", REFUSE, "creating a large object"),
    Case("SELECT dblink_exec('dbname=postgres', 'DELETE FROM accounts')", REFUSE, "dblink write elsewhere"),
    Case("SELECT * FROM public.dblink('dbname=postgres', 'SELECT 1') AS t(x int)", REFUSE, "dblink read"),
    Case("SELECT pg_terminate_backend(pid) FROM pg_stat_activity", REFUSE, "killing other sessions"),
    Case("SELECT pg_cancel_backend(pg_backend_pid())", REFUSE, "cancelling a backend"),
    Case("SELECT pg_reload_conf()", REFUSE, "reloading server configuration"),
    Case("SELECT set_config('role', 'postgres', false)", REFUSE, "role switch through set_config"),
    Case("SELECT set_config('session_authorization', 'postgres', false)", REFUSE, "session authorization"),
    Case("SELECT set_config(lower('ROLE'), 'postgres', false)", REFUSE, "computed setting name"),
    Case(
        "SELECT set_config(new_value => 'postgres', setting_name => 'role', is_local => false)",
        REFUSE,
        "named arguments reorder set_config",
    ),
    Case("SELECT set_config('search_path', 'public, pg_catalog', false)", REFUSE, "demoting pg_catalog"),
    Case("SELECT nextval('invoice_seq')", REFUSE, "advancing a sequence"),
    Case("SELECT setval('invoice_seq', 1000)", REFUSE, "setting a sequence"),
    Case("SELECT pg_advisory_lock(42)", REFUSE, "session-level advisory lock"),
    Case("SELECT pg_notify('jobs', 'run')", REFUSE, "notifying listeners"),
    Case(
        "SELECT query_to_xml('DELETE FROM accounts RETURNING 1', true, false, '')", REFUSE, "SQL as a string"
    ),
    Case("SELECT bump_balance(1, 1000)", REFUSE, "user-defined function: unknown"),
    Case("SELECT public.bump_balance(1, 1000)", REFUSE, "schema-qualified user-defined function"),
    Case(
        "SELECT * FROM accounts TABLESAMPLE SYSTEM (50) REPEATABLE (length(pg_read_file('/etc/hostname')))",
        REFUSE,
        "file read in a TABLESAMPLE seed",
    ),
    Case("SELECT * FROM ROWS FROM (generate_series(1, 3), pg_ls_dir('.')) AS t(a, b)", REFUSE, "ROWS FROM"),
    Case("SELECT (pg_stat_file('postgresql.conf')).size", REFUSE, "field of a side-effect function's result"),
    Case("VALUES (nextval('invoice_seq'))", REFUSE, "sequence advanced inside VALUES"),
    Case("SELECT pg_catalog.lower(email) FROM accounts", ALLOW, "qualified built-in read"),
    Case("SELECT lower(email), upper(email), length(email) FROM accounts", ALLOW, "string functions"),
    # --- COPY ------------------------------------------------------------------------------------
    Case("COPY accounts FROM PROGRAM 'echo 9,x,1'", REFUSE, "COPY FROM PROGRAM"),
    Case("COPY accounts TO PROGRAM 'cat > /tmp/hoopctl-policy-leak'", REFUSE, "COPY TO PROGRAM"),
    Case("COPY (SELECT 1) TO PROGRAM 'touch /tmp/hoopctl-policy-pwned'", REFUSE, "COPY query to a program"),
    Case("COPY accounts TO '/tmp/hoopctl-policy-leak.csv'", REFUSE, "COPY to a server file"),
    Case("COPY accounts FROM '/etc/hostname'", REFUSE, "COPY from a server file"),
    Case("COPY (DELETE FROM accounts RETURNING *) TO STDOUT", REFUSE, "COPY of a data-modifying query"),
    # --- roles and identity ----------------------------------------------------------------------
    Case("SET ROLE postgres", REFUSE, "SET ROLE"),
    Case("SET LOCAL ROLE postgres", REFUSE, "SET LOCAL ROLE"),
    Case('SET "role" TO postgres', REFUSE, "quoted setting name"),
    Case('SET "ROLE" TO postgres', REFUSE, "setting names are case-insensitive"),
    Case("SET SESSION AUTHORIZATION postgres", REFUSE, "SET SESSION AUTHORIZATION"),
    Case("RESET SESSION AUTHORIZATION", REFUSE, "RESET SESSION AUTHORIZATION"),
    Case("DISCARD ALL", REFUSE, "DISCARD ALL resets the session authorization"),
    Case("CREATE ROLE hoop_intruder SUPERUSER LOGIN", REFUSE, "creating a role"),
    Case("GRANT ALL ON accounts TO PUBLIC", REFUSE, "GRANT"),
    Case("ALTER SYSTEM SET log_statement = 'none'", REFUSE, "ALTER SYSTEM"),
    Case("SET session_replication_role = replica", REFUSE, "disables triggers and foreign keys"),
    Case(
        "SET search_path = public, pg_catalog", REFUSE, "demoting pg_catalog lets public functions shadow it"
    ),
    Case("SET myapp.tenant_id = '2'", REFUSE, "custom settings can steer row-level security"),
    # --- procedural ------------------------------------------------------------------------------
    Case("DO $$ BEGIN DELETE FROM accounts; END $$", REFUSE, "DO block"),
    Case("DO LANGUAGE plpgsql $x$ BEGIN PERFORM 1; END $x$", REFUSE, "DO with a language"),
    Case("CALL close_account(1)", REFUSE, "CALL a procedure"),
    Case(
        "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'DELETE FROM accounts RETURNING 1'",
        REFUSE,
        "CREATE FUNCTION",
    ),
    Case("LOAD 'auto_explain'", REFUSE, "loading a shared library"),
    # --- DDL, tables from queries, maintenance ---------------------------------------------------
    Case("SELECT * INTO stolen FROM accounts", REFUSE, "SELECT INTO creates a table"),
    Case("CREATE TABLE stolen AS SELECT * FROM accounts", REFUSE, "CREATE TABLE AS"),
    Case("CREATE TEMP TABLE scratch (x int)", REFUSE, "temporary tables are DDL too"),
    Case("DROP TABLE audit_log", REFUSE, "DROP"),
    Case("ALTER TABLE accounts ADD COLUMN pwned bool", REFUSE, "ALTER TABLE"),
    Case("TRUNCATE audit_log", REFUSE, "TRUNCATE"),
    Case("COMMENT ON TABLE accounts IS 'pwned'", REFUSE, "COMMENT ON"),
    Case("CREATE INDEX ON accounts (email)", REFUSE, "CREATE INDEX"),
    Case("VACUUM FULL accounts", REFUSE, "VACUUM FULL rewrites the table"),
    Case("LOCK TABLE accounts IN ACCESS EXCLUSIVE MODE", REFUSE, "LOCK TABLE"),
    Case("SELECT * FROM accounts FOR UPDATE", REFUSE, "row locks"),
    Case("NOTIFY jobs, 'run'", REFUSE, "NOTIFY"),
    Case("CHECKPOINT", REFUSE, "CHECKPOINT"),
    Case("SECURITY LABEL ON TABLE accounts IS 'secret'", REFUSE, "SECURITY LABEL"),
    # --- EXPLAIN and cursors ---------------------------------------------------------------------
    Case("EXPLAIN ANALYZE DELETE FROM accounts", REFUSE, "EXPLAIN ANALYZE runs the DELETE"),
    Case("EXPLAIN (ANALYZE, BUFFERS) UPDATE accounts SET balance = 0", REFUSE, "EXPLAIN (ANALYZE) runs it"),
    Case("EXPLAIN (ANALYZE on) INSERT INTO audit_log (action) VALUES ('x')", REFUSE, "ANALYZE on"),
    Case("EXPLAIN (ANALYZE 1) DELETE FROM audit_log", REFUSE, "ANALYZE 1"),
    Case("EXPLAIN (ANALYSE) DELETE FROM accounts", REFUSE, "British spelling of ANALYZE"),
    Case("EXPLAIN ANALYSE VERBOSE UPDATE accounts SET email = 'x'", REFUSE, "ANALYSE VERBOSE"),
    Case("EXPLAIN DELETE FROM accounts", ALLOW, "plain EXPLAIN only plans"),
    Case("EXPLAIN (ANALYZE false) DELETE FROM accounts", ALLOW, "ANALYZE false only plans"),
    Case("EXPLAIN SELECT * FROM accounts WHERE id = 1", ALLOW, "EXPLAIN of a read"),
    Case("EXPLAIN ANALYZE SELECT count(*) FROM accounts", ALLOW, "EXPLAIN ANALYZE of a read"),
    Case(
        "BEGIN; DECLARE c CURSOR FOR WITH d AS (DELETE FROM accounts RETURNING *) SELECT * FROM d; FETCH ALL FROM c; COMMIT",
        REFUSE,
        "cursor over a data-modifying CTE",
    ),
    Case(
        "BEGIN; DECLARE c CURSOR FOR SELECT * FROM accounts; FETCH 2 FROM c; CLOSE c; COMMIT",
        ALLOW,
        "read cursor",
    ),
    # --- junk and edge cases ---------------------------------------------------------------------
    Case("DELEET FROM accounts", REFUSE, "unparsable"),
    Case("SELECT 'unterminated", REFUSE, "unterminated string"),
    Case("SELECT 1; DELETE FROM accounts WHERE", REFUSE, "unparsable tail refuses the whole string"),
    Case("", ALLOW, "empty query"),
    Case(";", ALLOW, "empty statement"),
    # --- legitimate reads ------------------------------------------------------------------------
    Case("SELECT now()", ALLOW, "now()"),
    Case("SELECT 1", ALLOW, "constant"),
    Case(
        "SELECT version(), current_user, current_database(), current_setting('server_version')", ALLOW, "info"
    ),
    Case(
        "SELECT a.email, count(l.id) FROM accounts a LEFT JOIN audit_log l ON l.account_id = a.id GROUP BY a.email",
        ALLOW,
        "join and aggregate",
    ),
    Case(
        "SELECT id, balance, rank() OVER (ORDER BY balance DESC), sum(balance) OVER () FROM accounts",
        ALLOW,
        "window functions",
    ),
    Case(
        "SELECT id FROM accounts WHERE id IN (SELECT account_id FROM audit_log) AND email LIKE '%@example.com'",
        ALLOW,
        "subquery and LIKE",
    ),
    Case("SELECT * FROM account_emails ORDER BY id LIMIT 2 OFFSET 1", ALLOW, "view, ORDER BY, LIMIT"),
    Case("SELECT json_agg(a) FROM accounts a", ALLOW, "json aggregate"),
    Case("SELECT date_trunc('day', at), coalesce(account_id, 0) FROM audit_log", ALLOW, "date functions"),
    Case(
        "SELECT random() < 2, md5(email), to_char(now(), 'YYYY') FROM accounts",
        ALLOW,
        "volatile but harmless",
    ),
    Case("SELECT last_value FROM invoice_seq", ALLOW, "reading a sequence's state"),
    Case("SHOW search_path", ALLOW, "SHOW"),
    Case("SET statement_timeout = '5s'", ALLOW, "everyday setting"),
    Case("SET application_name = 'report'; RESET application_name", ALLOW, "SET and RESET"),
    Case("SET search_path = public", ALLOW, "pg_catalog still searched first"),
    Case("SELECT pg_catalog.set_config('search_path', '', true)", ALLOW, "pg_dump's empty search_path"),
    Case("VALUES (1, 'a'), (2, 'b')", ALLOW, "VALUES"),
    Case("TABLE accounts", ALLOW, "TABLE shorthand"),
    Case("SELECT * FROM accounts TABLESAMPLE BERNOULLI (50)", ALLOW, "TABLESAMPLE"),
    Case("LISTEN jobs", ALLOW, "LISTEN"),
    # psql's own catalog queries (psql 15 `\d accounts`, `\dt`, `\df`, `\l`), as psql -E prints them.
    Case(
        "SELECT c.oid,\n  n.nspname,\n  c.relname\nFROM pg_catalog.pg_class c\n"
        "     LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace\n"
        "WHERE c.relname OPERATOR(pg_catalog.~) '^(accounts)$' COLLATE pg_catalog.default\n"
        "  AND pg_catalog.pg_table_is_visible(c.oid)\nORDER BY 2, 3;",
        ALLOW,
        "psql \\d accounts: find the relation",
    ),
    Case(
        "SELECT a.attname,\n  pg_catalog.format_type(a.atttypid, a.atttypmod),\n"
        "  (SELECT pg_catalog.pg_get_expr(d.adbin, d.adrelid, true)\n   FROM pg_catalog.pg_attrdef d\n"
        "   WHERE d.adrelid = a.attrelid AND d.adnum = a.attnum AND a.atthasdef),\n  a.attnotnull,\n"
        "  (SELECT c.collname FROM pg_catalog.pg_collation c, pg_catalog.pg_type t\n"
        "   WHERE c.oid = a.attcollation AND t.oid = a.atttypid AND a.attcollation <> t.typcollation) AS attcollation,\n"
        "  a.attidentity,\n  a.attgenerated\nFROM pg_catalog.pg_attribute a\n"
        "WHERE a.attrelid = 'accounts'::regclass AND a.attnum > 0 AND NOT a.attisdropped\nORDER BY a.attnum;",
        ALLOW,
        "psql \\d accounts: columns",
    ),
    Case(
        "SELECT c2.relname, i.indisprimary, i.indisunique, i.indisclustered, i.indisvalid, "
        "pg_catalog.pg_get_indexdef(i.indexrelid, 0, true),\n  pg_catalog.pg_get_constraintdef(con.oid, true), "
        "contype, condeferrable, condeferred, i.indisreplident, c2.reltablespace\n"
        "FROM pg_catalog.pg_class c, pg_catalog.pg_class c2, pg_catalog.pg_index i\n"
        "  LEFT JOIN pg_catalog.pg_constraint con ON (conrelid = i.indrelid AND conindid = i.indexrelid "
        "AND contype IN ('p','u','x'))\nWHERE c.oid = 'accounts'::regclass AND c.oid = i.indrelid "
        "AND i.indexrelid = c2.oid\nORDER BY i.indisprimary DESC, c2.relname;",
        ALLOW,
        "psql \\d accounts: indexes",
    ),
    Case(
        'SELECT n.nspname as "Schema",\n  c.relname as "Name",\n'
        "  CASE c.relkind WHEN 'r' THEN 'table' WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view' "
        "WHEN 'i' THEN 'index' WHEN 'S' THEN 'sequence' WHEN 't' THEN 'TOAST table' WHEN 'f' THEN 'foreign table' "
        "WHEN 'p' THEN 'partitioned table' WHEN 'I' THEN 'partitioned index' END as \"Type\",\n"
        '  pg_catalog.pg_get_userbyid(c.relowner) as "Owner"\nFROM pg_catalog.pg_class c\n'
        "     LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace\n"
        "     LEFT JOIN pg_catalog.pg_am am ON am.oid = c.relam\nWHERE c.relkind IN ('r','p','')\n"
        "      AND n.nspname <> 'pg_catalog'\n      AND n.nspname !~ '^pg_toast'\n"
        "      AND n.nspname <> 'information_schema'\n  AND pg_catalog.pg_table_is_visible(c.oid)\nORDER BY 1,2;",
        ALLOW,
        "psql \\dt",
    ),
    Case(
        'SELECT n.nspname as "Schema",\n  p.proname as "Name",\n'
        '  pg_catalog.pg_get_function_result(p.oid) as "Result data type",\n'
        '  pg_catalog.pg_get_function_arguments(p.oid) as "Argument data types",\n'
        " CASE p.prokind\n  WHEN 'a' THEN 'agg'\n  WHEN 'w' THEN 'window'\n  WHEN 'p' THEN 'proc'\n"
        "  ELSE 'func'\n END as \"Type\"\nFROM pg_catalog.pg_proc p\n"
        "     LEFT JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace\n"
        "WHERE pg_catalog.pg_function_is_visible(p.oid)\n      AND n.nspname <> 'pg_catalog'\n"
        "      AND n.nspname <> 'information_schema'\nORDER BY 1, 2, 4;",
        ALLOW,
        "psql \\df",
    ),
    Case(
        'SELECT\n  d.datname as "Name",\n  pg_catalog.pg_get_userbyid(d.datdba) as "Owner",\n'
        '  pg_catalog.pg_encoding_to_char(d.encoding) as "Encoding",\n  d.datcollate as "Collate",\n'
        '  d.datctype as "Ctype",\n  pg_catalog.array_to_string(d.datacl, E\'\\n\') AS "Access privileges"\n'
        "FROM pg_catalog.pg_database d\nORDER BY 1;",
        ALLOW,
        "psql \\l",
    ),
    Case(
        "SELECT pg_catalog.pg_size_pretty(pg_catalog.pg_table_size('accounts'::regclass)), "
        "obj_description('accounts'::regclass, 'pg_class'), has_table_privilege('accounts', 'SELECT')",
        ALLOW,
        "psql \\d+ style sizes and privileges",
    ),
)
