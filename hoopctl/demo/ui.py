"""How the demo talks: act headings, narrated steps, and commands shown as typed."""

from __future__ import annotations

import shlex
import subprocess
import sys

import click


def act(number: int, title: str, story: str) -> None:
    click.echo()
    click.secho(f"== Act {number}: {title} ", bold=True, fg="cyan")
    click.echo(story)


def step(text: str) -> None:
    click.secho(f"-> {text}", fg="yellow")


def ok(text: str) -> None:
    click.secho(f"   ok: {text}", fg="green")


def note(text: str) -> None:
    click.echo(f"   {text}")


def run(argv: list[str], *, env: dict | None = None, check: bool = False, show: bool = True, **kw):
    """Runs a command the way an operator would type it, showing it and its output."""
    shown = [a if len(a) < 80 else a[:40] + "…" for a in argv]
    click.secho(f"   $ {shlex.join(shown)}", dim=True)
    result = subprocess.run(argv, env=env, capture_output=True, text=True, **kw)
    if show:
        for line in (result.stdout + result.stderr).rstrip().splitlines():
            click.echo(f"     {line}")
    if check and result.returncode != 0:
        raise SystemExit(f"demo: {argv[0]} failed with status {result.returncode}")
    return result


def hoopctl(*args: str) -> list[str]:
    """argv for this installation's hoopctl (works from the venv without activating it)."""
    return [sys.executable, "-m", "hoopctl.cli", *args]
