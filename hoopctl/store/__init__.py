"""Shared state: SQLite (WAL) as the embedded default, PostgreSQL when gateways share it.

Both backends speak the same small surface (`execute`, `query`, `transaction`) over
portable SQL written with `?` placeholders, and apply the same numbered migrations.
"""

from __future__ import annotations

from hoopctl.store.base import Store, StoreError


def open_store(url: str) -> Store:
    """`sqlite:///abs/path.db`, a plain path, or `postgresql://user@host/db`."""
    if url.startswith(("postgresql://", "postgres://")):
        from hoopctl.store.postgres import PostgresStore

        return PostgresStore(url)
    from hoopctl.store.sqlite import SQLiteStore

    path = url.removeprefix("sqlite://") if url.startswith("sqlite://") else url
    return SQLiteStore(path)


__all__ = ["Store", "StoreError", "open_store"]
