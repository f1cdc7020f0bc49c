"""`hoopctl tunnels`: list ssh tunnels, ControlMaster muxes, autossh and socat/ncat relays on this host."""

from __future__ import annotations

import os

import click

from hoopctl.cli.common import EXIT_CLEAN, EXIT_FINDINGS, fail, on_tty, print_json, visible
from hoopctl.detect.tunnels import TunnelFinding, classify_tunnels, parse_protected
from hoopctl.host.procs import read_ssh_configs, take_snapshot


def format_age(seconds: int) -> str:
    """`42s`, `3m05s`, `2h10m`, `4d02h`: short and sortable by eye."""
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def render_table(headers: list[str], rows: list[list[str]], highlight: list[bool] | None = None) -> str:
    """Left-aligned columns; rows flagged in `highlight` are shown in bold red (callers pass it on a TTY).

    Cells come from processes (names, users, command lines): control characters are escaped."""
    rows = [[visible(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for n, row in enumerate(rows):
        line = "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        lines.append(click.style(line, fg="red", bold=True) if highlight and highlight[n] else line)
    return "\n".join(lines)


def warn_if_not_root(what: str) -> None:
    """Without root, other users' processes hide their sockets and environments: say so, once."""
    if os.geteuid() != 0:
        click.echo(f"hoopctl: warning: not root: other users' {what} are hidden", err=True)


def _row(f: TunnelFinding) -> list[str]:
    parent = f"{f.ppid}{'*' if f.reparented else ''}"
    return [
        str(f.pid),
        f.user,
        f.kind,
        ",".join(f.listen) or "-",
        f.target or "?",
        format_age(f.age),
        parent,
        "yes" if f.protected else "no",
    ]


@click.command("tunnels")
@click.option("--json", "as_json", is_flag=True, help='Print {"tunnels": [...]} instead of a table.')
@click.option(
    "--protected",
    "protected",
    multiple=True,
    metavar="HOST:PORT",
    help="A protected resource (HOST:PORT, [V6]:PORT or CIDR:PORT; PORT may be *). Repeatable.",
)
@click.pass_context
def tunnels(ctx: click.Context, as_json: bool, protected: tuple[str, ...]) -> None:
    """List stray tunnels: ssh -L/-R/-D/-w and config forwards, ControlMaster muxes, autossh,
    socat/ncat relays, and sshd sessions that carry forwards.

    Exit status: 0 none found, 1 found, 2 error. A parent marked * was reparented (PID 1 or a
    subreaper). Run as root to see other users' sockets.

    \b
    Examples:
      hoopctl tunnels
      hoopctl tunnels --json --protected 10.0.0.5:5432 --protected 10.1.0.0/16:*
    """
    try:
        specs = [parse_protected(p) for p in protected]
    except ValueError as exc:
        fail(str(exc))
    warn_if_not_root("sockets")
    snapshot = take_snapshot(environ=False, cgroups=False)
    own = os.getpid()
    configs = read_ssh_configs(snapshot)
    found = [f for f in classify_tunnels(snapshot, specs, ssh_configs=configs) if f.pid != own]
    if as_json:
        print_json({"tunnels": found})
    elif found:
        headers = ["PID", "USER", "KIND", "LISTEN", "TARGET", "AGE", "PPID", "PROTECTED"]
        highlight = [f.protected for f in found] if on_tty() else None
        click.echo(render_table(headers, [_row(f) for f in found], highlight))
    elif on_tty():
        click.echo("no tunnels found")
    ctx.exit(EXIT_FINDINGS if found else EXIT_CLEAN)
