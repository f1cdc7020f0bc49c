"""`hoopctl quarantine`: list, show, restore and add files in the root-only quarantine vault."""

from __future__ import annotations

import datetime as dt
import os
import pwd
from typing import Any

import click

from hoopctl.act.journal import FINAL_STATES
from hoopctl.act.quarantine import (
    DEFAULT_VAULT,
    Manifest,
    QuarantinePolicy,
    Reason,
    Refused,
    Vault,
    VaultError,
    plan_quarantine,
)
from hoopctl.cli.common import EXIT_CLEAN, EXIT_FINDINGS, fail, print_json, visible
from hoopctl.host.pathfd import display


def _open_vault(ctx: click.Context, create: bool = False) -> Vault:
    root = ctx.obj["vault"]
    try:
        return Vault(root, create=create)
    except VaultError as exc:
        hint = "" if os.geteuid() == 0 else " (run as root)"
        fail(f"{exc}{hint}")


def _when(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _row(m: Manifest) -> dict[str, Any]:
    out = m.to_json()
    out["state"] = "restored" if m.restored else "quarantined"
    return out


@click.group()
@click.option(
    "--vault",
    envvar="HOOPCTL_VAULT",
    default=DEFAULT_VAULT,
    show_default=True,
    type=click.Path(path_type=bytes),
    help="Vault directory (root-only).",
)
@click.pass_context
def quarantine(ctx: click.Context, vault: bytes) -> None:
    """Files moved out of users' reach, with a manifest, restorable byte for byte.

    \b
    Examples:
      hoopctl quarantine add /home/ci/.env            # dry run: what would move
      hoopctl quarantine add /home/ci/.env --apply
      hoopctl quarantine list --json
      hoopctl quarantine show 1a2b3c4d
      hoopctl quarantine restore 1a2b3c4d --to /home/ci/.env.restored
    """
    ctx.ensure_object(dict)
    ctx.obj["vault"] = vault


@quarantine.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON array of entries.")
@click.pass_context
def list_(ctx: click.Context, as_json: bool) -> None:
    """List vault entries (with their restore state) and any unfinished journal actions."""
    if not os.path.lexists(ctx.obj["vault"]):  # nothing was ever quarantined on this host
        if as_json:
            print_json({"entries": [], "unfinished": []})
        else:
            click.echo("quarantine is empty")
        return
    with _open_vault(ctx) as vault:
        rows = [_row(m) for m in vault.manifests()]
        unfinished = [r for r in vault.journal.latest().values() if r.state not in FINAL_STATES]
    if as_json:
        print_json({"entries": rows, "unfinished": [r.__dict__ for r in unfinished]})
        return
    if not rows:
        click.echo("quarantine is empty")
    for r in rows:
        owner = r["user"] or r["uid"]
        rule = r["reason"]["rule_id"] or "-"
        click.echo(
            f"{r['id']}  {r['state']:<11}  {r['size']:>10}  {owner!s:<12} {rule:<24} {display(r['path'])}"
        )
    for rec in unfinished:
        click.echo(
            f"warning: {rec.action} {rec.id} was {rec.state} and never finished (interrupted?)", err=True
        )


@quarantine.command()
@click.argument("entry_id")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def show(ctx: click.Context, entry_id: str, as_json: bool) -> None:
    """Show one entry's manifest and its journal history (never its content)."""
    with _open_vault(ctx) as vault:
        try:
            m = vault.get(entry_id)
        except VaultError as exc:
            fail(str(exc))
        restore_ids = {r.journal_id for r in m.restores}
        history = [r for r in vault.journal.records() if r.id == m.journal_id or r.id in restore_ids]
    if as_json:
        print_json({**_row(m), "journal": [h.__dict__ for h in history]})
        return
    r = _row(m)
    click.echo(f"id:        {m.id} ({r['state']})")
    click.echo(f"path:      {display(r['path'])}")
    click.echo(f"owner:     {m.user or '?'} ({m.uid}) / {m.group or '?'} ({m.gid}), mode {r['mode_octal']}")
    click.echo(f"size:      {m.size} bytes, sha256 {m.sha256}")
    click.echo(f"mtime:     {_when(m.mtime_ns)} UTC")
    click.echo(
        f"why:       rule {m.reason.rule_id or '-'}, fingerprint {m.reason.fingerprint or '-'} {m.reason.note}"
    )
    click.echo(f"moved:     {m.quarantined_at} by uid {m.actor_uid} ({m.method})")
    for res in m.restores:
        click.echo(f"restored:  {res.at} to {display(res.path)}")
    for h in history:
        click.echo(f"journal:   {h.at} {h.action} {h.state}")


@quarantine.command()
@click.argument("entry_id")
@click.option("--to", "to", type=click.Path(path_type=bytes), help="Restore to this path instead.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def restore(ctx: click.Context, entry_id: str, to: bytes | None, as_json: bool) -> None:
    """Put an entry back byte for byte with owner, mode and times; never overwrites."""
    if to is not None:
        to = os.path.abspath(to)
    with _open_vault(ctx) as vault:
        try:
            m = vault.restore(entry_id, to)
        except (Refused, VaultError) as exc:
            fail(str(exc))
    where = display(m.restores[-1].path)
    if as_json:
        print_json({"id": m.id, "restored_to": where, "sha256": m.sha256})
    else:
        click.echo(f"restored {m.id} to {where}")


@quarantine.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=bytes))
@click.option("--apply", is_flag=True, help="Move the files (default: dry run, changes nothing).")
@click.option("--rule", default="manual", show_default=True, help="Rule id recorded as the reason.")
@click.option("--fingerprint", default="", help="Finding fingerprint recorded as the reason.")
@click.option("--note", default="", help="Free text recorded as the reason.")
@click.option("--allow-root-owned", is_flag=True, help="Also move files owned by root.")
@click.option("--owner", "owners", multiple=True, help="Only files owned by this user (repeatable).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def add(
    ctx: click.Context,
    paths: tuple[bytes, ...],
    apply: bool,
    rule: str,
    fingerprint: str,
    note: str,
    allow_root_owned: bool,
    owners: tuple[str, ...],
    as_json: bool,
) -> None:
    """Quarantine files: a dry run unless --apply. Exit 1 when any file is refused."""
    policy = QuarantinePolicy(refuse_root_owned=not allow_root_owned, owners=_uids(owners))
    reason = Reason(rule_id=rule, fingerprint=fingerprint, note=note)
    results: list[dict[str, Any]] = []
    vault = _open_vault(ctx, create=True) if apply else None
    try:
        for raw in paths:
            path = os.path.abspath(raw)
            shown = display(path)
            if vault is None:
                plan = plan_quarantine(path, policy)
                if plan.ok and plan.facts is not None:
                    results.append({"path": shown, "result": "would quarantine", "sha256": plan.facts.sha256})
                else:
                    results.append({"path": shown, "result": "refused", "reason": plan.refusal})
                continue
            try:
                m = vault.quarantine(path, reason, policy)
                results.append({"path": shown, "result": "quarantined", "id": m.id, "sha256": m.sha256})
            except Refused as exc:
                why = str(exc).removeprefix(f"{shown}: ")
                results.append({"path": shown, "result": "refused", "reason": why})
    finally:
        if vault is not None:
            vault.close()
    if as_json:
        print_json(results)
    else:
        for r in results:
            extra = r.get("id") or r.get("reason") or r.get("sha256", "")[:16]
            click.echo(f"{r['result']}: {display(r['path'])} ({visible(extra)})")
        if not apply:
            click.echo("dry run: nothing changed; add --apply to quarantine", err=True)
    ctx.exit(EXIT_FINDINGS if any(r["result"] == "refused" for r in results) else EXIT_CLEAN)


def _uids(names: tuple[str, ...]) -> frozenset[int] | None:
    if not names:
        return None
    out = set()
    for name in names:
        try:
            out.add(int(name) if name.isdigit() else pwd.getpwnam(name).pw_uid)
        except KeyError:
            fail(f"--owner: no such user {name!r}")
    return frozenset(out)
