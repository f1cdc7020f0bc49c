"""The gateway's in-memory view of shared access state, refreshed in the background.

The hot path (every statement, every login) reads a snapshot and never waits for
the store. A poller refreshes it every `interval_s`, so an approval or revocation
made through any gateway sharing the store takes effect here within that interval.
If the store cannot be read, the snapshot is marked stale and callers fail closed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from hoopctl.access.jit import AccessService, Grant

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Snapshot:
    revoked: frozenset[str] = frozenset()
    grants: tuple[Grant, ...] = ()
    taken_at: float = 0.0
    ok: bool = False
    expired: tuple[str, ...] = field(default=())


class AccessState:
    def __init__(
        self,
        service: AccessService,
        *,
        interval_s: float = 0.25,
        max_staleness_s: float = 5.0,
        on_refresh: Callable[[Snapshot], None] | None = None,
    ) -> None:
        self.service = service
        self.interval_s = interval_s
        self.max_staleness_s = max_staleness_s
        self.snapshot = Snapshot()
        self._on_refresh = on_refresh
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def refresh(self) -> Snapshot:
        try:
            expired = tuple(self.service.expire_due())
            snap = Snapshot(
                revoked=self.service.revoked_token_ids(),
                grants=tuple(self.service.active_grants()),
                taken_at=time.monotonic(),
                ok=True,
                expired=expired,
            )
        except Exception as exc:  # the store is down: keep the old view, marked stale
            log.warning("access state refresh failed: %s", exc)
            return self.snapshot
        self.snapshot = snap
        if self._on_refresh:
            self._on_refresh(snap)
        return snap

    def start(self) -> AccessState:
        self.refresh()
        self._thread = threading.Thread(target=self._run, name="access-state", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.refresh()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)

    @property
    def fresh(self) -> bool:
        snap = self.snapshot
        return snap.ok and time.monotonic() - snap.taken_at <= self.max_staleness_s

    def is_revoked(self, token_ids: Iterable[str]) -> bool:
        """Fail closed: with no fresh view of revocations, every token counts as revoked."""
        if not self.fresh:
            return True
        return not self.snapshot.revoked.isdisjoint(token_ids)

    def grants_for(self, identity: str, resource: str, now: float | None = None) -> list[Grant]:
        if not self.fresh:
            return []
        now = time.time() if now is None else now
        return [
            g
            for g in self.snapshot.grants
            if g.identity == identity and g.resource == resource and g.expires_at > now
        ]
