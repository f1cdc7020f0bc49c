"""Just-in-time access: requests, approvals by others, time-boxed grants, revocations.

Every change is one transaction in the shared store and leaves an event (who, when,
why), so that several gateways see the same state and an auditor can follow it.
"""

from __future__ import annotations

import json
import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from hoopctl.access.tokens import PRINCIPAL_SEPARATOR
from hoopctl.store import Store

PENDING, APPROVED, DENIED, REVOKED, EXPIRED = "pending", "approved", "denied", "revoked", "expired"
COLUMNS = (
    "id, requester, resource, role, duration_s, reason, mode, session_id, status, approvals_required, "
    "created_at, decided_at, starts_at, expires_at, closed_by, close_reason"
)


class AccessError(Exception):
    """A refused access operation; the message is safe to show the caller."""


@dataclass(frozen=True, slots=True)
class AccessRequest:
    id: str
    requester: str
    resource: str
    role: str
    duration_s: float
    reason: str
    mode: str
    session_id: str | None
    status: str
    approvals_required: int
    created_at: float
    decided_at: float | None
    starts_at: float | None
    expires_at: float | None
    closed_by: str | None
    close_reason: str | None
    approvers: tuple[str, ...] = ()

    def active(self, now: float) -> bool:
        return (
            self.status == APPROVED
            and self.expires_at is not None
            and self.starts_at <= now < self.expires_at
        )


@dataclass(frozen=True, slots=True)
class Grant:
    """An approved request as the gateway uses it on the hot path."""

    request_id: str
    identity: str
    resource: str
    role: str
    expires_at: float


def new_id(prefix: str) -> str:
    """Sortable by time, unique across gateways."""
    return f"{prefix}{int(time.time() * 1000):x}{secrets.token_hex(3)}"


class AccessService:
    def __init__(self, store: Store, *, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock

    # -- requests and decisions -------------------------------------------------------

    def request(
        self,
        requester: str,
        resource: str,
        role: str,
        duration_s: float,
        reason: str,
        *,
        mode: str = "request",
        session_id: str | None = None,
        approvals_required: int = 1,
        filed_by: str | None = None,
    ) -> AccessRequest:
        """`requester` is who the grant is for (a token's principal, or a login name);
        `filed_by` the login that filed it, when not the requester (it may not approve it)."""
        if not reason.strip():
            raise AccessError("a reason is required (--reason)")
        if not math.isfinite(duration_s) or duration_s <= 0:
            raise AccessError("the duration must be a positive number of seconds")
        request_id = new_id("req-")
        now = self.clock()
        with self.store.transaction() as db:
            db.execute(
                "INSERT INTO access_requests (id, requester, resource, role, duration_s, reason, mode, "
                "session_id, status, approvals_required, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                request_id,
                requester,
                resource,
                role,
                float(duration_s),
                reason,
                mode,
                session_id,
                PENDING,
                max(1, approvals_required),
                now,
            )
            self._event(
                db,
                "requested",
                request_id,
                requester,
                resource=resource,
                role=role,
                reason=reason,
                filed_by=filed_by or requester,
            )
        return self.get(request_id)

    def approve(self, request_id: str, approver: str, reason: str = "") -> AccessRequest:
        return self._decide(request_id, approver, "approve", reason)

    def deny(self, request_id: str, approver: str, reason: str) -> AccessRequest:
        if not reason.strip():
            raise AccessError("a reason is required to deny (--reason)")
        return self._decide(request_id, approver, "deny", reason)

    def _decide(self, request_id: str, approver: str, decision: str, reason: str) -> AccessRequest:
        now = self.clock()
        with self.store.transaction() as db:
            req = self._load(db, request_id)
            if req.status != PENDING:
                raise AccessError(f"request {request_id} is {req.status}, not pending")
            # Nor anyone along the requester's chain (alice may not approve what her agent
            # alice>helper asked for), nor whoever filed it with a token they hold; except root,
            # who holds every key on the host anyway.
            filed_by = self._filed_by(db, request_id)
            if approver in req.requester.split(PRINCIPAL_SEPARATOR) or (approver == filed_by != "root"):
                raise AccessError("a requester cannot approve or deny their own request")
            if approver in req.approvers:
                raise AccessError(f"{approver} has already decided on {request_id}")
            db.execute(
                "INSERT INTO access_decisions (request_id, approver, decision, at, reason) VALUES (?,?,?,?,?)",
                request_id,
                approver,
                decision,
                now,
                reason,
            )
            if decision == "deny":
                db.execute(
                    "UPDATE access_requests SET status=?, decided_at=?, closed_by=?, close_reason=? WHERE id=?",
                    DENIED,
                    now,
                    approver,
                    reason,
                    request_id,
                )
                self._event(db, "denied", request_id, approver, reason=reason)
            else:
                self._event(db, "approval", request_id, approver, reason=reason)
                if len(req.approvers) + 1 >= req.approvals_required:
                    db.execute(
                        "UPDATE access_requests SET status=?, decided_at=?, starts_at=?, expires_at=? WHERE id=?",
                        APPROVED,
                        now,
                        now,
                        now + req.duration_s,
                        request_id,
                    )
                    self._event(db, "granted", request_id, approver, expires_at=now + req.duration_s)
        return self.get(request_id)

    def revoke(self, request_id: str, by: str, reason: str = "") -> AccessRequest:
        now = self.clock()
        with self.store.transaction() as db:
            req = self._load(db, request_id)
            if req.status not in (PENDING, APPROVED):
                raise AccessError(f"request {request_id} is {req.status}; nothing to revoke")
            db.execute(
                "UPDATE access_requests SET status=?, expires_at=?, closed_by=?, close_reason=? WHERE id=?",
                REVOKED,
                now,
                by,
                reason or "revoked",
                request_id,
            )
            self._event(db, "revoked", request_id, by, reason=reason)
        return self.get(request_id)

    def expire_due(self) -> list[str]:
        """Marks grants whose time is up as expired (an event each); returns their ids."""
        now = self.clock()
        with self.store.transaction() as db:
            due = [
                r[0]
                for r in db.query(
                    "SELECT id FROM access_requests WHERE status=? AND expires_at <= ?", APPROVED, now
                )
            ]
            for request_id in due:
                db.execute("UPDATE access_requests SET status=? WHERE id=?", EXPIRED, request_id)
                self._event(db, "expired", request_id, "gateway")
        return due

    # -- token revocation -------------------------------------------------------------

    def revoke_token(self, token_id: str, by: str, reason: str = "") -> None:
        with self.store.transaction() as db:
            if not db.query("SELECT 1 FROM revocations WHERE token_id=?", token_id):
                db.execute(
                    "INSERT INTO revocations (token_id, revoked_at, revoked_by, reason) VALUES (?,?,?,?)",
                    token_id,
                    self.clock(),
                    by,
                    reason,
                )
            self._event(db, "token-revoked", None, by, token_id=token_id, reason=reason)

    def revoked_token_ids(self) -> frozenset[str]:
        return frozenset(r[0] for r in self.store.query("SELECT token_id FROM revocations"))

    # -- reading ----------------------------------------------------------------------

    def get(self, request_id: str) -> AccessRequest:
        return self._load(self.store, request_id)

    def list(self, status: str | None = None) -> list[AccessRequest]:
        where, params = ("WHERE status=?", (status,)) if status else ("", ())
        rows = self.store.query(f"SELECT {COLUMNS} FROM access_requests {where} ORDER BY created_at", *params)
        return [self._with_approvers(self.store, row) for row in rows]

    def active_grants(self) -> list[Grant]:
        now = self.clock()
        rows = self.store.query(
            "SELECT id, requester, resource, role, expires_at FROM access_requests "
            "WHERE status=? AND starts_at <= ? AND expires_at > ?",
            APPROVED,
            now,
            now,
        )
        return [Grant(r[0], r[1], r[2], r[3], float(r[4])) for r in rows]

    def events(self, request_id: str | None = None) -> list[dict]:
        where, params = ("WHERE request_id=?", (request_id,)) if request_id else ("", ())
        rows = self.store.query(
            f"SELECT id, at, kind, request_id, actor, detail FROM access_events {where} ORDER BY at, id",
            *params,
        )
        return [
            {"id": r[0], "at": r[1], "kind": r[2], "request_id": r[3], "actor": r[4], **json.loads(r[5])}
            for r in rows
        ]

    def _load(self, db: Store, request_id: str) -> AccessRequest:
        rows = db.query(f"SELECT {COLUMNS} FROM access_requests WHERE id=?", request_id)
        if not rows:
            raise AccessError(f"no such request: {request_id}")
        return self._with_approvers(db, rows[0])

    def _with_approvers(self, db: Store, row) -> AccessRequest:
        approvers = tuple(
            r[0]
            for r in db.query("SELECT approver FROM access_decisions WHERE request_id=? ORDER BY at", row[0])
        )
        return AccessRequest(*row, approvers=approvers)

    def filers(self) -> dict[str, str | None]:
        """Request id -> the login that filed it, for every request, in one read."""
        rows = self.store.query("SELECT request_id, detail FROM access_events WHERE kind='requested'")
        return {r[0]: json.loads(r[1]).get("filed_by") for r in rows}

    def _filed_by(self, db: Store, request_id: str) -> str | None:
        rows = db.query(
            "SELECT detail FROM access_events WHERE request_id=? AND kind='requested'", request_id
        )
        return json.loads(rows[0][0]).get("filed_by") if rows else None

    def _event(self, db: Store, kind: str, request_id: str | None, actor: str, **detail) -> None:
        db.execute(
            "INSERT INTO access_events (id, at, kind, request_id, actor, detail) VALUES (?,?,?,?,?,?)",
            new_id("ev-"),
            self.clock(),
            kind,
            request_id,
            actor,
            json.dumps(detail, sort_keys=True),
        )
