"""`hoopctl procs --orphans`: processes left behind by finished CI jobs, service accounts, stopped units."""

from __future__ import annotations

import os
import re

import click

from hoopctl.cli.common import EXIT_CLEAN, EXIT_FINDINGS, fail, on_tty, print_json
from hoopctl.cli.tunnels import format_age, render_table, warn_if_not_root
from hoopctl.detect.orphans import classify_orphans
from hoopctl.host.procs import take_snapshot

_DURATION = re.compile(r"^(\d+)\s*([smhd]?)$")
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> int:
    """`90`, `90s`, `5m`, `2h`, `1d` -> seconds. Raises ValueError naming the bad value."""
    m = _DURATION.match(text.strip().lower())
    if not m:
        raise ValueError(f"--min-age {text!r}: expected a duration like 60s, 5m, 2h or 1d")
    return int(m.group(1)) * _UNIT[m.group(2)]


@click.command("procs")
@click.option("--orphans", is_flag=True, help="List orphaned processes (the only listing so far).")
@click.option("--json", "as_json", is_flag=True, help='Print {"orphans": [...]} instead of a table.')
@click.option("--min-age", default="60s", show_default=True, help="Ignore processes younger than this.")
@click.option(
    "--service-account",
    "service_accounts",
    multiple=True,
    metavar="NAME",
    help="A service account whose detached processes count as orphans. Repeatable.",
)
@click.pass_context
def procs(
    ctx: click.Context, orphans: bool, as_json: bool, min_age: str, service_accounts: tuple[str, ...]
) -> None:
    """List processes that outlived what started them: leftovers of finished CI jobs (CI markers in
    their initial environment, reparented to PID 1 or a subreaper, job gone), detached processes of
    service accounts, and processes left in the cgroup of a stopped unit.

    A job is gone when no process still carrying its job id (CI_JOB_ID, RUNNER_TRACKING_ID,
    BUILD_TAG, ...) hangs off a live runner: all that is left of it hangs off PID 1 or a subreaper.

    Exit status: 0 none found, 1 found, 2 error. Run as root to read other users' environments.

    \b
    Examples:
      hoopctl procs --orphans
      hoopctl procs --orphans --json --min-age 5m --service-account ci-runner
    """
    if not orphans:
        fail("say what to list: hoopctl procs --orphans")
    try:
        seconds = parse_duration(min_age)
    except ValueError as exc:
        fail(str(exc))
    warn_if_not_root("process environments")
    snapshot = take_snapshot(sockets=False)
    found = classify_orphans(
        snapshot, min_age=seconds, service_accounts=service_accounts, ignore_pids=(os.getpid(),)
    )
    if as_json:
        print_json({"orphans": found})
    elif found:
        rows = [
            [
                str(f.pid),
                f.user,
                f.name,
                ",".join(f.reasons),
                f"{f.ci or '-'} {f.job or ''}".strip(),
                format_age(f.age),
                str(f.ppid),
                str(len(f.descendants)),
            ]
            for f in found
        ]
        click.echo(render_table(["PID", "USER", "NAME", "REASONS", "JOB", "AGE", "PPID", "BELOW"], rows))
    elif on_tty():
        click.echo("no orphaned processes found")
    ctx.exit(EXIT_FINDINGS if found else EXIT_CLEAN)
