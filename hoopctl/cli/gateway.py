"""`hoopctl gateway`: run and check the PostgreSQL L7 gateway."""

from __future__ import annotations

from pathlib import Path

import click

from hoopctl.cli.common import fail
from hoopctl.config import ConfigError

DEFAULT_CONFIG = Path("/etc/hoopctl/gateway.yaml")


def _load(config: Path):
    from hoopctl.gateway.config import load_config

    try:
        return load_config(config)
    except ConfigError as exc:
        fail(str(exc))


@click.group()
def gateway() -> None:
    """The PostgreSQL L7 gateway.

    \b
    Examples:
      hoopctl gateway check --config /etc/hoopctl/gateway.yaml
      hoopctl gateway serve --config /etc/hoopctl/gateway.yaml
      psql "host=127.0.0.1 port=6432 dbname=appdb user=$(echo $TOKEN | cut -d. -f1,2) password=..."
    """


@gateway.command()
@click.option("--config", type=click.Path(path_type=Path), default=DEFAULT_CONFIG, show_default=True)
def check(config: Path) -> None:
    """Validate a config file; prints one line per problem."""
    cfg = _load(config)
    click.echo(
        f"{config}: ok ({len(cfg.resources)} resources, listening on {cfg.listen_host}:{cfg.listen_port})"
    )


@gateway.command()
@click.option("--config", type=click.Path(path_type=Path), default=DEFAULT_CONFIG, show_default=True)
def serve(config: Path) -> None:
    """Run the gateway in the foreground (SIGTERM drains, SIGHUP reloads policy)."""
    from hoopctl.audit.recorder import RecordingError
    from hoopctl.gateway.server import StartError
    from hoopctl.gateway.server import serve as run_server

    cfg = _load(config)
    try:
        run_server(cfg)
    except (StartError, RecordingError) as exc:
        raise click.ClickException(f"{config}: {exc}") from None


@gateway.command("example-config")
def example_config() -> None:
    """Print the commented reference configuration."""
    from hoopctl.gateway.config import EXAMPLE

    click.echo(EXAMPLE.read_text(), nl=False)
