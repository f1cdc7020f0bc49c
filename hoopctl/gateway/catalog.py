"""Table OID -> "schema.table" (and column numbers -> names), for masking rules on fields.

A RowDescription names each column's table only by OID. The catalog asks the
database over its own connection (the gateway's credentials, one per resource),
never through a caller's session, and caches the answers, including "no such
table", for a minute: a table renamed since (say, to the name a rule protects)
is looked up again then. Lookups for one resource are serialised on that one
connection.

When a lookup fails the catalog is "down" for a while (1 s, doubling up to 30 s):
no lookup is tried meanwhile, and masking withholds the rows it cannot check
(see `Gateway._plan`) rather than retrying for every RowDescription.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable

from hoopctl.gateway import pgwire as pw
from hoopctl.gateway.config import Resource
from hoopctl.gateway.upstream import Upstream, UpstreamError, open_upstream

log = logging.getLogger(__name__)

FIRST_BACKOFF_S = 1.0
MAX_BACKOFF_S = 30.0
CACHE_TTL_S = 60.0

_LOOKUP = (
    "SELECT c.oid::int8, n.nspname || '.' || c.relname FROM pg_catalog.pg_class c "
    "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.oid IN ({oids})"
)
_COLUMNS = (
    "SELECT attrelid::int8 || '.' || attnum, attname FROM pg_catalog.pg_attribute "
    "WHERE attrelid IN ({oids}) AND attnum > 0 AND NOT attisdropped"
)


class Catalog:
    """Cached OID -> name resolution for one resource."""

    def __init__(self, resource: Resource) -> None:
        self.resource = resource
        self._names: dict[int, str | None] = {0: None}
        self._columns: dict[tuple[int, int], str] = {}
        self._conn: Upstream | None = None
        self._lock = asyncio.Lock()
        self._down_until = 0.0
        self._backoff = FIRST_BACKOFF_S
        self._expires = time.monotonic() + CACHE_TTL_S
        self._generation = 0  # bumped by forget(): a lookup begun before it is dropped

    def known(self, oids: Iterable[int]) -> bool:
        names = self._names
        return all(o in names for o in oids)

    def stale(self) -> bool:
        return time.monotonic() >= self._expires

    def forget(self) -> None:
        """Drop every cached name (the caller drops the masking plans made from them).
        All at once: one lookup a minute per table in use, and no entry outlives a
        rename by more than that."""
        self._generation += 1
        self._names = {0: None}
        self._columns = {}
        self._expires = time.monotonic() + CACHE_TTL_S

    def available(self) -> bool:
        """False while lookups are suspended after a failure."""
        return time.monotonic() >= self._down_until

    def name(self, oid: int) -> str | None:
        """The cached name (call `resolve` first); None for no table or an unknown OID."""
        return self._names.get(oid)

    def column_name(self, oid: int, attnum: int) -> str | None:
        """The real name of a table's column (so an alias does not hide it from field rules)."""
        return self._columns.get((oid, attnum))

    async def resolve(self, oids: Iterable[int]) -> None:
        """Fetches the names of the OIDs not cached yet. On failure they stay unknown, and the
        catalog is down for the backoff period."""
        async with self._lock:
            missing = sorted({int(o) for o in oids if o not in self._names})
            if not missing or not self.available():
                return
            generation = self._generation
            try:
                oid_list = ",".join(str(o) for o in missing)  # integers only
                rows = await self._query(_LOOKUP.format(oids=oid_list))
                columns = await self._query(_COLUMNS.format(oids=oid_list))
            except (UpstreamError, OSError, pw.ProtocolError, asyncio.IncompleteReadError) as exc:
                log.warning(
                    "catalog lookup on %s failed (%s); next try in %.0f s",
                    self.resource.name,
                    exc,
                    self._backoff,
                )
                self.close()
                self._down_until = time.monotonic() + self._backoff
                self._backoff = min(self._backoff * 2, MAX_BACKOFF_S)
                return
            self._backoff = FIRST_BACKOFF_S
            if generation != self._generation:
                return  # forgotten meanwhile: these names may predate a rename
            for oid in missing:
                self._names[oid] = None
            for oid, name in rows:
                self._names[int(oid)] = name
            for key, name in columns:
                rel, _, attnum = key.partition(".")
                self._columns[(int(rel), int(attnum))] = name

    async def _query(self, sql: str) -> list[tuple[str, str]]:
        if self._conn is None:
            self._conn = await open_upstream(self.resource, {"application_name": "hoopctl-catalog"})
        conn = self._conn
        conn.writer.write(pw.Query(sql).encode())
        parser = pw.BackendParser()
        parser.phase = pw.Phase.READY
        parser.feed(conn.leftover)
        conn.leftover = b""
        rows: list[tuple[str, str]] = []
        error = None
        while True:
            for msg in parser:
                if isinstance(msg, pw.DataRow) and len(msg.values) == 2 and None not in msg.values:
                    rows.append((msg.values[0].decode(), msg.values[1].decode()))
                elif isinstance(msg, pw.ErrorResponse):
                    error = msg.message
                elif isinstance(msg, pw.ReadyForQuery):
                    if error:
                        raise UpstreamError(error)
                    return rows
            data = await conn.reader.read(65536)
            if not data:
                raise UpstreamError("catalog connection closed")
            parser.feed(data)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.writer.close()
            self._conn = None
