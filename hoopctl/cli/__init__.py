"""The `hoopctl` command line: one click group, one module per verb family."""

from __future__ import annotations

import importlib
import logging

import click

from hoopctl import __version__

# verb -> "module:attribute"; imported only when that verb runs, so `hoopctl scan`
# does not pay for the gateway's imports.
COMMANDS: dict[str, str] = {
    "scan": "hoopctl.cli.scan:scan",
    "gateway": "hoopctl.cli.gateway:gateway",
    "token": "hoopctl.cli.token:token",
    "sessions": "hoopctl.cli.sessions:sessions",
    "access": "hoopctl.cli.access:access",
    "agent": "hoopctl.cli.agent:agent",
    "tunnels": "hoopctl.cli.tunnels:tunnels",
    "procs": "hoopctl.cli.procs:procs",
    "quarantine": "hoopctl.cli.quarantine:quarantine",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(COMMANDS) | set(self.commands))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.commands:
            return self.commands[name]
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        try:
            return getattr(importlib.import_module(module), attr)
        except ModuleNotFoundError as exc:
            if exc.name == module:  # verb not built yet
                return None
            raise


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hoopctl")
@click.option("-v", "--verbose", count=True, help="More log output (repeat for debug).")
def main(verbose: int) -> None:
    """Least privilege where automation erodes it.

    \b
    Examples:
      hoopctl scan /home /srv --json
      hoopctl gateway serve --config /etc/hoopctl/gateway.yaml
    """
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
