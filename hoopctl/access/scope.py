"""What one gateway session may do right now: its token's role, plus live grants.

The statement policy says which classes a statement needs (read, write, ddl, ...).
This module decides with the caller's current scope: the role in its credential,
widened only by just-in-time grants approved for exactly this identity and resource,
and narrowed by the credential's own limits (expiry, statement budget, revocation).
A statement beyond scope is refused with the command that asks for access, or, for
roles configured with `mode: hold`, waits until someone approves, denies or the
hold times out.
"""

from __future__ import annotations

import asyncio
import logging
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

from hoopctl.access.admin import RoleAccess
from hoopctl.access.jit import APPROVED, PENDING, AccessError, AccessService
from hoopctl.access.state import AccessState
from hoopctl.access.tokens import Credential

log = logging.getLogger(__name__)
# Classes no role can be granted by approval: the statement was not understood.
NEVER_GRANTABLE = frozenset({"unknown", "unparsable"})


class VerdictLike(Protocol):
    allowed: bool
    classes: frozenset[str]
    rule: str
    message: str


@dataclass(frozen=True)
class ScopeVerdict:
    allowed: bool
    classes: frozenset[str]
    rule: str
    message: str
    grant: str | None = None  # the request id whose grant allowed it
    end_session: bool = False


class CallerScope:
    def __init__(
        self,
        cred: Credential,
        *,
        role_grants: Callable[[str], frozenset[str]],
        requestable: dict[str, RoleAccess],
        state: AccessState | None = None,
        service: AccessService | None = None,
        on_expiry: str = "refuse",
        record_event: Callable[..., Any] = lambda kind, **fields: None,
        clock: Callable[[], float] = time.time,
        session_id: str | None = None,
    ) -> None:
        self.cred = cred
        self.role_grants = role_grants
        self.requestable = requestable
        self.state = state
        self.service = service
        self.on_expiry = on_expiry
        self.record_event = record_event
        self.clock = clock
        self.session_id = session_id
        self.statements = 0
        self._used_grants: dict[str, float] = {}

    # -- the synchronous decision (no waiting) -----------------------------------------

    def decide(self, verdict: VerdictLike) -> ScopeVerdict:
        base = ScopeVerdict(verdict.allowed, verdict.classes, verdict.rule, verdict.message)
        limit = self._credential_limits()
        if limit:
            return limit
        self.statements += 1
        expired = self._expired_grant_in_use()
        if expired and self.on_expiry == "end_session":
            return replace(base, allowed=False, rule="grant-expired", message=expired, end_session=True)
        if verdict.allowed:
            return base
        grant = self._covering_grant(verdict.classes)
        if grant:
            self._used_grants[grant.request_id] = grant.expires_at
            return ScopeVerdict(
                True, verdict.classes, f"grant:{grant.request_id}", "", grant=grant.request_id
            )
        return replace(base, message=self._refusal_message(verdict))

    def _credential_limits(self) -> ScopeVerdict | None:
        cred = self.cred
        if cred.expires_at <= self.clock():
            return ScopeVerdict(
                False, frozenset(), "credential-expired", "hoopctl: your credential expired; get a new one"
            )
        if self.state is not None and self.state.is_revoked(cred.token_ids):
            return ScopeVerdict(
                False, frozenset(), "credential-revoked", "hoopctl: your credential was revoked"
            )
        if cred.max_statements is not None and self.statements >= cred.max_statements:
            return ScopeVerdict(
                False,
                frozenset(),
                "statement-budget",
                f"hoopctl: this credential allows {cred.max_statements} statements per session",
            )
        return None

    def _expired_grant_in_use(self) -> str | None:
        now = self.clock()
        for request_id, expires_at in list(self._used_grants.items()):
            if expires_at <= now:
                del self._used_grants[request_id]
                self.record_event("grant-expired", request_id=request_id)
                return f"hoopctl: the grant {request_id} this session used has expired"
        return None

    def _covering_grant(self, classes: frozenset[str]):
        if not classes or classes & NEVER_GRANTABLE or self.state is None:
            return None
        base = self.role_grants(self.cred.role)
        for grant in self.state.grants_for(self.cred.identity, self.cred.resource, self.clock()):
            if classes <= base | self.role_grants(grant.role):
                return grant
        return None

    def role_to_request(self, classes: frozenset[str]) -> str | None:
        """The narrowest requestable role that covers what the statement needs."""
        if not classes or classes & NEVER_GRANTABLE:
            return None
        base = self.role_grants(self.cred.role)
        fits = [r for r in self.requestable if classes <= base | self.role_grants(r)]
        return min(fits, key=lambda r: len(self.role_grants(r)), default=None)

    def _refusal_message(self, verdict: VerdictLike) -> str:
        role = self.role_to_request(verdict.classes)
        if role is None:
            return verdict.message
        ask = shlex.join(
            [
                "hoopctl",
                "access",
                "request",
                "--resource",
                self.cred.resource,
                "--role",
                role,
                "--for",
                "30m",
                "--reason",
                "...",
            ]
        )
        needed = ", ".join(sorted(verdict.classes - self.role_grants(self.cred.role)))
        return (
            f"hoopctl: refused by rule {verdict.rule}: role {self.cred.role!r} does not grant {needed} "
            f"on {self.cred.resource!r}. Ask for access: {ask}"
        )

    # -- holding a statement for approval ----------------------------------------------

    def hold_role(self, verdict: VerdictLike) -> str | None:
        """The role to hold for, when the refusal may be resolved by an approval now."""
        if verdict.allowed or self.service is None or self.state is None:
            return None
        role = self.role_to_request(verdict.classes)
        if role and self.requestable[role].mode == "hold":
            return role
        return None

    async def hold(self, verdict: VerdictLike, role: str, sql: str, poll_s: float = 0.05) -> ScopeVerdict:
        """Files a request and waits for its outcome; the statement runs only if approved in time."""
        settings = self.requestable[role]
        try:
            req = await asyncio.to_thread(
                self.service.request,
                self.cred.identity,
                self.cred.resource,
                role,
                settings.max_duration_s,
                f"held statement: {sql[:200]}",
                mode="hold",
                session_id=self.session_id,
                approvals_required=settings.approvals,
            )
        except AccessError as exc:
            return ScopeVerdict(False, verdict.classes, "hold-failed", f"hoopctl: {exc}")
        self.record_event("access-requested", request_id=req.id, role=role, mode="hold")
        deadline = time.monotonic() + settings.hold_timeout_s
        status = PENDING
        while time.monotonic() < deadline:
            status = (await asyncio.to_thread(self.service.get, req.id)).status
            if status != PENDING:
                break
            await asyncio.sleep(poll_s)
        if status == APPROVED:
            # The poller will publish the grant; don't wait for it to run this statement.
            if self.state is not None:
                await asyncio.to_thread(self.state.refresh)
            self.record_event("access-approved", request_id=req.id)
            decided = self.decide(verdict)
            self.statements -= 1  # decide() counted this statement once already
            return decided
        if status == PENDING:
            await asyncio.to_thread(self.service.revoke, req.id, "gateway", "hold timed out")
            self.record_event("access-timeout", request_id=req.id)
            return ScopeVerdict(
                False,
                verdict.classes,
                "hold-timeout",
                f"hoopctl: no approval for {req.id} within {settings.hold_timeout_s:.0f}s; statement not run",
            )
        self.record_event("access-" + status, request_id=req.id)
        return ScopeVerdict(
            False, verdict.classes, f"hold-{status}", f"hoopctl: access request {req.id} was {status}"
        )
