"""The gateway's link to shared access state, consulted by every session.

A session's scope is its credential's role, widened only by just-in-time grants
approved for exactly its identity and resource, and cut off by revocation. The
broker answers from the in-memory snapshot (`AccessState`), so the statement path
never waits on the store; only a held statement waits, for a human's decision.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from hoopctl.access.admin import RoleAccess
from hoopctl.access.jit import APPROVED, PENDING, AccessError, AccessService
from hoopctl.access.state import AccessState
from hoopctl.access.tokens import Credential

log = logging.getLogger(__name__)


class AccessBroker:
    def __init__(
        self,
        service: AccessService,
        state: AccessState,
        *,
        role_grants: Callable[[str], frozenset[str]],
        requestable: dict[str, RoleAccess],
        on_expiry: str = "refuse",
        poll_s: float = 0.05,
    ) -> None:
        self.service = service
        self.state = state
        self.role_grants = role_grants
        self.requestable = requestable
        self.on_expiry = on_expiry
        self.poll_s = poll_s

    @classmethod
    def open(cls, access: Any, role_grants: Callable[[str], frozenset[str]]) -> AccessBroker:
        from hoopctl.store import open_store

        service = AccessService(open_store(access.state))
        state = AccessState(service, interval_s=access.poll_interval_ms / 1000)
        return cls(
            service, state, role_grants=role_grants, requestable=access.roles, on_expiry=access.on_expiry
        )

    def start(self) -> AccessBroker:
        self.state.start()
        return self

    def stop(self) -> None:
        self.state.stop()
        self.service.store.close()

    # -- the hot path: snapshot reads only -------------------------------------------

    def is_revoked(self, cred: Credential) -> bool:
        return self.state.is_revoked(cred.token_ids)

    def grants(self, cred: Credential) -> tuple[frozenset[str], tuple[str, ...]]:
        """Classes added by live grants for this caller, and the grants' request ids."""
        if cred.narrowed_in_place:
            return frozenset(), ()
        found = self.state.grants_for(cred.principal, cred.resource)
        if not found:
            return frozenset(), ()
        classes = frozenset().union(*(self.role_grants(g.role) for g in found))
        return classes, tuple(sorted(g.request_id for g in found))

    def hold_role(self, cred: Credential, needed: frozenset[str]) -> str | None:
        """The narrowest requestable role in `hold` mode covering what was refused."""
        if cred.narrowed_in_place:
            return None
        base = self.role_grants(cred.role)
        fits = [
            r
            for r, settings in self.requestable.items()
            if settings.mode == "hold" and needed <= base | self.role_grants(r)
        ]
        return min(fits, key=lambda r: (len(self.role_grants(r)), r), default=None)

    # -- holding a statement for a decision -------------------------------------------

    async def hold(
        self,
        cred: Credential,
        role: str,
        sql: str,
        *,
        session_id: str | None,
        record_event: Callable[..., Any],
    ) -> tuple[str, str]:
        """Files a request and waits for its outcome: ('approved'|'denied'|'revoked'|'timeout', id)."""
        settings = self.requestable[role]
        try:
            req = await asyncio.to_thread(
                self.service.request,
                cred.principal,
                cred.resource,
                role,
                settings.max_duration_s,
                f"held statement: {sql[:200]}",
                mode="hold",
                session_id=session_id,
                approvals_required=settings.approvals,
            )
        except AccessError as exc:
            log.warning("could not file a hold request: %s", exc)
            return "failed", ""
        record_event("access-requested", request_id=req.id, role=role, mode="hold")
        log.info("statement held for %s: %s", cred.principal, req.id)
        deadline = time.monotonic() + settings.hold_timeout_s
        status = PENDING
        while time.monotonic() < deadline:
            status = (await asyncio.to_thread(self.service.get, req.id)).status
            if status != PENDING:
                break
            await asyncio.sleep(self.poll_s)
        if status == PENDING:
            await asyncio.to_thread(self.service.revoke, req.id, "gateway", "hold timed out")
            status = "timeout"
        elif status == APPROVED:
            # Publish the grant now rather than at the next poll, so the statement can run.
            await asyncio.to_thread(self.state.refresh)
        record_event(f"access-{status}", request_id=req.id)
        return status, req.id
