"""The local admin API: JSON lines over a unix socket, callers known by SO_PEERCRED.

Anyone on the host may connect and ask for access; only root and members of the
configured approver group may approve, deny or revoke, and nobody decides on their
own request. The kernel, not the client, says who is calling.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import json
import logging
import os
import pwd
import socket
import struct
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hoopctl.access.jit import AccessError, AccessService
from hoopctl.access.tokens import PRINCIPAL_SEPARATOR, AuthError

log = logging.getLogger(__name__)
MAX_LINE = 64 * 1024


@dataclass(frozen=True, slots=True)
class Peer:
    pid: int
    uid: int
    gid: int
    user: str
    groups: frozenset[str]


def peer_of(sock: socket.socket) -> Peer:
    pid, uid, gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    try:
        user = pwd.getpwuid(uid).pw_name
        groups = frozenset(grp.getgrgid(g).gr_name for g in os.getgrouplist(user, gid))
    except KeyError:
        user, groups = f"uid:{uid}", frozenset()
    return Peer(pid, uid, gid, user, groups)


@dataclass(frozen=True)
class RoleAccess:
    """How a role is obtained beyond a caller's scope."""

    mode: str = "request"  # request: refuse with the command to ask; hold: wait for approval
    approvals: int = 1
    hold_timeout_s: float = 60.0
    max_duration_s: float = 8 * 3600


class AdminAPI:
    """Handles one request dict from one peer; pure of sockets, easy to test."""

    def __init__(
        self,
        service: AccessService,
        *,
        approver_group: str,
        roles: dict[str, RoleAccess],
        identify_token: Callable[[str, str], str] | None = None,
        adopt: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        on_change: Callable[[], Any] | None = None,
    ) -> None:
        self.service = service
        self.adopt = adopt
        # Called after a decision, so this gateway applies it at once rather than at its next poll.
        self.on_change = on_change or (lambda: None)
        self.approver_group = approver_group
        self.roles = roles
        self.identify_token = identify_token

    def may_decide(self, peer: Peer) -> bool:
        return peer.uid == 0 or self.approver_group in peer.groups

    def _visible(self, peer: Peer, requests: list[Any]) -> list[Any]:
        """Approvers see every request; others only those for their login (or an agent of
        theirs) or that they filed: a held statement's text can hold what others must not read."""
        if self.may_decide(peer):
            return requests
        filers = self.service.filers()
        return [
            r
            for r in requests
            if r.requester.split(PRINCIPAL_SEPARATOR)[0] == peer.user or filers.get(r.id) == peer.user
        ]

    def handle(self, peer: Peer, req: dict[str, Any]) -> dict[str, Any]:
        op = req.get("op")
        try:
            if op == "request":
                return self._request(peer, req)
            if op == "list":
                found = self._visible(peer, self.service.list(req.get("status")))
                return {"ok": True, "requests": [asdict(r) for r in found]}
            if op == "show":
                request_id = str(req.get("id", ""))
                shown = self.service.get(request_id)
                if not self._visible(peer, [shown]):
                    return _error(f"{peer.user} may see only their own requests")
                return {"ok": True, "request": asdict(shown), "events": self.service.events(request_id)}
            if op == "adopt":
                # The agent hands over a torn-down tunnel's address: root or approvers only.
                if not self.may_decide(peer):
                    return _error(f"{peer.user} may not change the gateway's listeners")
                if self.adopt is None:
                    return _error("this gateway does not adopt tunnels")
                return self.adopt(req)
            if op in ("approve", "deny", "revoke", "revoke-token"):
                if not self.may_decide(peer):
                    return _error(f"{peer.user} is not in the approver group {self.approver_group!r}")
                return self._decide(peer, op, req)
            return _error(f"unknown operation {op!r}")
        except (AccessError, AuthError) as exc:
            return _error(str(exc))
        except (TypeError, ValueError):
            return _error("malformed request")

    def _request(self, peer: Peer, req: dict[str, Any]) -> dict[str, Any]:
        role = str(req.get("role", ""))
        settings = self.roles.get(role)
        if settings is None:
            return _error(f"role {role!r} cannot be requested (not in access.roles)")
        duration = float(req.get("duration_s", 0))
        if duration > settings.max_duration_s:
            return _error(f"at most {settings.max_duration_s:.0f}s may be requested for role {role!r}")
        requester = peer.user
        if req.get("token"):
            if self.identify_token is None:
                return _error("this gateway does not accept tokens on the admin API")
            requester = self.identify_token(str(req["token"]), str(req.get("resource", "")))
        created = self.service.request(
            requester,
            str(req.get("resource", "")),
            role,
            duration,
            str(req.get("reason", "")),
            approvals_required=settings.approvals,
            filed_by=peer.user,
        )
        return {"ok": True, "request": asdict(created)}

    def _decide(self, peer: Peer, op: str, req: dict[str, Any]) -> dict[str, Any]:
        reason = str(req.get("reason", ""))
        if op == "revoke-token":
            self.service.revoke_token(str(req.get("token_id", "")), peer.user, reason)
            self.on_change()
            return {"ok": True}
        actions = {"approve": self.service.approve, "deny": self.service.deny, "revoke": self.service.revoke}
        decided = actions[op](str(req.get("id", "")), peer.user, reason)
        self.on_change()
        return {"ok": True, "request": asdict(decided)}


def _error(message: str) -> dict[str, Any]:
    return {"ok": False, "error": message}


async def serve_admin(api: AdminAPI, path: Path) -> asyncio.AbstractServer:
    """Listens on `path` (mode 0666: authorisation is by peer credentials, per request)."""
    if path.is_socket():
        path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = peer_of(writer.get_extra_info("socket"))
        try:
            while line := await reader.readline():
                try:
                    req = json.loads(line)
                    if not isinstance(req, dict):
                        raise ValueError
                    # The store is synchronous; keep the event loop free for database traffic.
                    resp = await asyncio.to_thread(api.handle, peer, req)
                except ValueError:
                    resp = _error("expected one JSON object per line")
                except Exception as exc:  # never let one caller take the API down
                    log.exception("admin API error")
                    resp = _error(f"internal error: {type(exc).__name__}")
                writer.write(json.dumps(resp).encode() + b"\n")
                await writer.drain()
        except (asyncio.LimitOverrunError, ValueError):  # a line over MAX_LINE
            with contextlib.suppress(ConnectionError):
                writer.write(json.dumps(_error(f"request longer than {MAX_LINE} bytes")).encode() + b"\n")
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_unix_server(on_client, path=str(path), limit=MAX_LINE)
    os.chmod(path, 0o666)  # noqa: S103 -- authorisation is per request, by SO_PEERCRED
    return server


def call(path: Path, op: str, **args: Any) -> dict[str, Any]:
    """One request to the admin API (used by `hoopctl access`)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(30)
        sock.connect(str(path))
        sock.sendall(json.dumps({"op": op, **args}).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            buf += chunk
    return json.loads(buf)
