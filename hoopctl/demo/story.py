"""The seed story, act by act. Each act prints what it does and what it found."""

from __future__ import annotations

import click


def main() -> int:
    click.secho("hoopctl demo", bold=True)
    click.echo("(acts are added as the scanner, gateway and agent land)")
    return 0
