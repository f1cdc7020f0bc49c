"""`hoopctl access`: ask for, grant and withdraw just-in-time access."""

from __future__ import annotations

import os
import time
from pathlib import Path

import click

from hoopctl.cli.common import DURATION, fail, print_json, visible

DEFAULT_SOCKET = Path(os.environ.get("HOOPCTL_ADMIN_SOCKET", "/run/hoopctl/admin.sock"))
socket_option = click.option(
    "--socket",
    "sock",
    type=click.Path(path_type=Path),
    default=DEFAULT_SOCKET,
    show_default=True,
    help="The gateway's admin socket (env HOOPCTL_ADMIN_SOCKET).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


def _call(sock: Path, op: str, **args):
    from hoopctl.access.admin import call

    try:
        resp = call(sock, op, **args)
    except (OSError, ValueError) as exc:
        fail(f"{sock}: cannot reach the gateway's admin API: {exc}")
    if not resp.get("ok"):
        fail(resp.get("error", "refused"))
    return resp


def _line(r: dict) -> str:
    left = ""
    if r["status"] == "approved" and r["expires_at"]:
        left = f" ({max(0, r['expires_at'] - time.time()):.0f}s left)"
    # The requester chose the reason (and names): shown with control characters escaped.
    return visible(
        f"{r['id']}  {r['status']:8}{left}  {r['requester']} -> {r['role']} on {r['resource']} "
        f"for {r['duration_s']:.0f}s  approvals {len(r['approvers'])}/{r['approvals_required']}  "
        f'"{r["reason"]}"'
    )


@click.group()
def access() -> None:
    """Just-in-time access: request, approve, deny, revoke.

    \b
    Examples:
      hoopctl access request --resource appdb --role writer --for 30m --reason "hotfix #42"
      hoopctl access list --status pending
      hoopctl access approve req-18c... --reason "checked with the on-call"
    """


@access.command()
@click.option("--resource", required=True)
@click.option("--role", required=True)
@click.option("--for", "duration", type=DURATION, default="30m", show_default=True)
@click.option("--reason", required=True)
@click.option("--token", envvar="HOOPCTL_TOKEN", help="Ask as this token's identity (env HOOPCTL_TOKEN).")
@socket_option
@json_option
def request(resource, role, duration, reason, token, sock, as_json) -> None:
    """Ask for a time-boxed grant; someone else approves it."""
    resp = _call(
        sock, "request", resource=resource, role=role, duration_s=duration, reason=reason, token=token or None
    )
    if as_json:
        print_json(resp["request"])
    else:
        click.echo(_line(resp["request"]))
        click.echo(f"waiting for approval: hoopctl access approve {resp['request']['id']}")


@access.command("list")
@click.option("--status", type=click.Choice(["pending", "approved", "denied", "revoked", "expired"]))
@socket_option
@json_option
def list_(status, sock, as_json) -> None:
    """List requests and grants."""
    resp = _call(sock, "list", status=status)
    if as_json:
        print_json(resp["requests"])
        return
    for r in resp["requests"]:
        click.echo(_line(r))


@access.command()
@click.argument("request_id")
@socket_option
@json_option
def show(request_id, sock, as_json) -> None:
    """A request with its history (who, when, why)."""
    resp = _call(sock, "show", id=request_id)
    if as_json:
        print_json({"request": resp["request"], "events": resp["events"]})
        return
    click.echo(_line(resp["request"]))
    for ev in resp["events"]:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ev["at"]))
        why = f'  "{ev["reason"]}"' if ev.get("reason") else ""
        click.echo(visible(f"  {when}  {ev['kind']:9} by {ev['actor']}{why}"))


def _decision(op: str, reason_required: bool):
    @click.argument("request_id")
    @click.option("--reason", required=reason_required, default="")
    @socket_option
    @json_option
    def command(request_id, reason, sock, as_json) -> None:
        resp = _call(sock, op, id=request_id, reason=reason)
        print_json(resp["request"]) if as_json else click.echo(_line(resp["request"]))

    return command


access.command("approve", help="Approve a pending request (approver group only; not your own).")(
    _decision("approve", False)
)
access.command("deny", help="Deny a pending request, with a reason.")(_decision("deny", True))
access.command("revoke", help="End a grant (or withdraw a pending request) now.")(_decision("revoke", False))


@access.command("revoke-token")
@click.argument("token_id")
@click.option("--reason", default="")
@socket_option
def revoke_token(token_id, reason, sock) -> None:
    """Revoke a token and every token narrowed from it."""
    _call(sock, "revoke-token", token_id=token_id, reason=reason)
    click.echo(f"revoked {token_id} and its descendants")
