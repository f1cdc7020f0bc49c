"""Carrying out the agent's decisions through the act/ journal: quarantine, terminate, adopt.

Each function returns an `Outcome` (done | refused | failed | skipped, with a one-line detail) and
never raises for a refusal: the daemon logs it and carries on. The vault (and its journal) is
opened on first use, so a report-only agent never creates it.

*Adopt* replaces a tunnel to a protected resource by a gateway route: journal ``started``, stop
the tunnel's process (so its address and port are free), then ask the gateway over its admin
socket to listen there for the resource behind the same target. Clients keep their address and
now need gateway credentials. Without a configured gateway socket nothing is stopped: the
finding is reported as skipped, with the reason.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hoopctl.act.quarantine import QuarantinePolicy, Reason, Refused, Vault, VaultError
from hoopctl.act.terminate import TerminateRefused, terminate
from hoopctl.agent.policy import split_target


@dataclass(frozen=True)
class Outcome:
    result: str  # done | refused | failed | skipped
    detail: str = ""
    ref: str | None = None  # vault entry id or journal action id


class Actor:
    """Runs actions; one per daemon, shared by the file worker and the process pass."""

    def __init__(self, vault_root: str, gateway_socket: str | None, *, grace: float = 5.0) -> None:
        self.vault_root = vault_root
        self.gateway_socket = gateway_socket
        self.grace = grace
        self._vault: Vault | None = None
        self._lock = threading.Lock()

    def vault(self) -> Vault:
        with self._lock:
            if self._vault is None:
                self._vault = Vault(self.vault_root)
            return self._vault

    def close(self) -> None:
        with self._lock:
            if self._vault is not None:
                self._vault.close()
                self._vault = None

    def quarantine(self, path: str, rule: str, fingerprint: str, note: str, *, root_owned: bool) -> Outcome:
        try:
            vault = self.vault()
        except VaultError as exc:
            return Outcome("failed", str(exc))
        policy = QuarantinePolicy(refuse_root_owned=not root_owned)
        try:
            manifest = vault.quarantine(path, Reason(rule, fingerprint, note), policy)
        except Refused as exc:
            return Outcome("refused", str(exc))
        except OSError as exc:
            return Outcome("failed", f"{exc.strerror or exc}")
        return Outcome("done", f"sha256 {manifest.sha256[:16]}", manifest.id)

    def terminate(self, pid: int, scope: str) -> Outcome:
        try:
            journal = self.vault().journal
        except VaultError as exc:
            return Outcome("failed", str(exc))
        try:
            result = terminate(pid, scope=scope, journal=journal, grace=self.grace)
        except TerminateRefused as exc:
            return Outcome("refused", str(exc))
        except OSError as exc:
            return Outcome("failed", f"{exc.strerror or exc}")
        states = ",".join(sorted({o.outcome for o in result.outcomes}))
        return Outcome(
            "done" if result.ok else "failed", f"{len(result.outcomes)} processes: {states}", result.action_id
        )

    def adopt(
        self, pid: int, listen: tuple[str, ...], listen_port: int | None, target: str | None
    ) -> Outcome:
        target_host, target_port = split_target(target)
        if listen_port is None or target_host is None or target_port is None:
            return Outcome("skipped", "adopt needs a TCP listen port and a host:port target")
        if self.gateway_socket is None:
            return Outcome(
                "skipped", "no gateway_admin_socket configured: tunnel left running, reported only"
            )
        listen_host = _listen_host(listen)
        try:
            journal = self.vault().journal
        except VaultError as exc:
            return Outcome("failed", str(exc))
        request: dict[str, Any] = {
            "listen_host": listen_host,
            "listen_port": listen_port,
            "target_host": target_host,
            "target_port": target_port,
        }
        action_id = journal.start("adopt", {"pid": pid, **request}, {"gateway_socket": self.gateway_socket})
        stopped = self.terminate(pid, "pid")
        if stopped.result != "done":
            journal.finish(action_id, "adopt", "failed", {"reason": f"stopping the tunnel: {stopped.detail}"})
            return Outcome("failed", f"stopping the tunnel: {stopped.detail}", action_id)
        from hoopctl.access.admin import call

        try:
            reply = call(Path(self.gateway_socket), "adopt", **request)
        except (OSError, ValueError) as exc:
            why = f"gateway admin socket: {getattr(exc, 'strerror', None) or exc}"
            journal.finish(action_id, "adopt", "failed", {"reason": why, "tunnel_stopped": True})
            return Outcome("failed", why + " (tunnel stopped)", action_id)
        if not isinstance(reply, dict) or not reply.get("ok"):
            why = str(reply.get("error") if isinstance(reply, dict) else reply)
            journal.finish(action_id, "adopt", "failed", {"reason": why, "tunnel_stopped": True})
            return Outcome("failed", f"gateway refused: {why} (tunnel stopped)", action_id)
        resource = str(reply.get("resource", ""))
        journal.finish(action_id, "adopt", "done", {"resource": resource})
        return Outcome("done", f"gateway now serves {listen_host}:{listen_port} for {resource}", action_id)


def _listen_host(listen: tuple[str, ...]) -> str:
    """The address to hand to the gateway: the tunnel's IPv4 listener if it had one, else its first."""
    hosts = [split_target(a)[0] for a in listen]
    for h in hosts:
        if h and ":" not in h:
            return h
    return next((h for h in hosts if h), "127.0.0.1")
