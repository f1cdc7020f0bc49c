"""What a state backend offers, and the migrations every backend applies."""

from __future__ import annotations

import abc
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

# Each migration is applied once, in order, inside one transaction; never edit a
# released one, add the next number instead.
MIGRATIONS: list[tuple[int, list[str]]] = [
    (
        1,
        [
            """CREATE TABLE revocations (
                token_id TEXT PRIMARY KEY, revoked_at DOUBLE PRECISION NOT NULL,
                revoked_by TEXT NOT NULL, reason TEXT NOT NULL)""",
            """CREATE TABLE access_requests (
                id TEXT PRIMARY KEY, requester TEXT NOT NULL, resource TEXT NOT NULL,
                role TEXT NOT NULL, duration_s DOUBLE PRECISION NOT NULL, reason TEXT NOT NULL,
                mode TEXT NOT NULL, session_id TEXT, status TEXT NOT NULL,
                approvals_required INTEGER NOT NULL, created_at DOUBLE PRECISION NOT NULL,
                decided_at DOUBLE PRECISION, starts_at DOUBLE PRECISION, expires_at DOUBLE PRECISION,
                closed_by TEXT, close_reason TEXT)""",
            """CREATE TABLE access_decisions (
                request_id TEXT NOT NULL, approver TEXT NOT NULL, decision TEXT NOT NULL,
                at DOUBLE PRECISION NOT NULL, reason TEXT NOT NULL,
                PRIMARY KEY (request_id, approver))""",
            """CREATE TABLE access_events (
                id TEXT PRIMARY KEY, at DOUBLE PRECISION NOT NULL, kind TEXT NOT NULL,
                request_id TEXT, actor TEXT NOT NULL, detail TEXT NOT NULL)""",
            "CREATE INDEX access_requests_status ON access_requests (status)",
        ],
    ),
]


class StoreError(RuntimeError):
    """The state backend failed; callers fail closed."""


class Store(abc.ABC):
    """A small, thread-safe surface over one connection."""

    placeholder = "?"

    def __init__(self) -> None:
        self._lock = threading.RLock()

    @abc.abstractmethod
    def _connect(self) -> Any: ...

    @abc.abstractmethod
    def _in_transaction(self) -> Any: ...

    def _sql(self, sql: str) -> str:
        return sql if self.placeholder == "?" else sql.replace("?", self.placeholder)

    @contextmanager
    def transaction(self) -> Iterator[Store]:
        with self._lock, self._in_transaction():
            yield self

    def execute(self, sql: str, *params: Any) -> int:
        with self._lock:
            cur = self.conn.cursor()
            cur.execute(self._sql(sql), params)
            return cur.rowcount

    def query(self, sql: str, *params: Any) -> list[Sequence[Any]]:
        with self._lock:
            cur = self.conn.cursor()
            cur.execute(self._sql(sql), params)
            return list(cur.fetchall())

    def migrate(self) -> int:
        """Applies pending migrations; returns the schema version."""
        with self.transaction():
            self.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY)")
            done = {row[0] for row in self.query("SELECT version FROM schema_migrations")}
            for version, statements in MIGRATIONS:
                if version in done:
                    continue
                for statement in statements:
                    self.execute(statement)
                self.execute("INSERT INTO schema_migrations (version) VALUES (?)", version)
        return max(v for v, _ in MIGRATIONS)

    @abc.abstractmethod
    def close(self) -> None: ...
