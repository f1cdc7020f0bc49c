"""PostgreSQL state, so that several gateways share revocations, requests and grants."""

from __future__ import annotations

from contextlib import contextmanager

from hoopctl.store.base import Store, StoreError


class PostgresStore(Store):
    placeholder = "%s"

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url
        try:
            self.conn = self._connect()
        except Exception as exc:  # psycopg.Error, or psycopg missing
            raise StoreError(f"cannot open state database: {exc}") from exc
        self.migrate()

    def _connect(self):
        import psycopg

        return psycopg.connect(self.url, autocommit=True)

    @contextmanager
    def _in_transaction(self):
        if self.conn.info.transaction_status != 0:  # already inside one
            yield
            return
        with self.conn.transaction():
            # Migrations from two gateways starting at once must not interleave.
            self.conn.execute("SELECT pg_advisory_xact_lock(724011)")
            yield

    def close(self) -> None:
        self.conn.close()
