"""`hoopctl token`: issue, narrow and inspect short-lived gateway credentials."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from hoopctl.access import tokens
from hoopctl.cli.common import DURATION, fail, print_json

DEFAULT_KEY = Path("/etc/hoopctl/token.key")


def _key_file(config: Path | None, key_file: Path | None) -> Path:
    if key_file:
        return key_file
    if config:
        from hoopctl.config import ConfigError
        from hoopctl.gateway.config import load_config

        try:
            return load_config(config).token_key_file
        except ConfigError as exc:
            fail(str(exc))
    return DEFAULT_KEY


@click.group()
def token() -> None:
    """Short-lived gateway credentials.

    \b
    Examples:
      hoopctl token issue --config gateway.yaml --identity ci-job --resource appdb --role writer --ttl 15m
      hoopctl token attenuate "$TOKEN" --identity helper --role reader --ttl 5m
    """


@token.command()
@click.argument("path", type=click.Path(path_type=Path))
def keygen(path: Path) -> None:
    """Create a new token signing key at PATH (mode 0600; never overwrites)."""
    try:
        tokens.generate_key(path)
    except FileExistsError:
        fail(f"{path}: already exists; remove it first if you mean to rotate the key")
    except OSError as exc:
        fail(f"{path}: {exc.strerror}")
    click.echo(f"wrote {path}")


@token.command()
@click.option("--config", type=click.Path(path_type=Path), help="Gateway config (for token_key_file).")
@click.option("--key-file", type=click.Path(path_type=Path), help=f"Signing key (default {DEFAULT_KEY}).")
@click.option("--identity", required=True, help="Who the token is for (a CI job, a person).")
@click.option("--resource", required=True, help="The protected resource (gateway database name).")
@click.option("--role", required=True, help="A role defined in the gateway config.")
@click.option("--ttl", type=DURATION, default="15m", show_default=True, help="Lifetime (90s, 15m, 2h).")
@click.option("--json", "as_json", is_flag=True, help="Print the token and its parts as JSON.")
def issue(config, key_file, identity, resource, role, ttl, as_json) -> None:
    """Sign a short-lived token with the gateway's key."""
    try:
        key = tokens.load_key(_key_file(config, key_file))
        value = tokens.TokenAuthority(key).issue(identity, resource, role, ttl)
    except tokens.TokenError as exc:
        fail(str(exc))
    _emit(value, as_json)


@token.command()
@click.argument("token_value", metavar="TOKEN")
@click.option("--identity", help="Name the child (recorded in the chain, e.g. helper).")
@click.option("--role", help="A narrower role (never wider than the parent's).")
@click.option("--resource", help="Restrict to one resource.")
@click.option("--ttl", type=DURATION, help="A shorter lifetime (the parent's expiry still holds).")
@click.option("--max-statements", type=click.IntRange(min=1), help="Statements allowed per session.")
@click.option("--client-cidr", help="Only from these client addresses (e.g. 10.0.0.0/24).")
@click.option("--json", "as_json", is_flag=True)
def attenuate(token_value, identity, role, resource, ttl, max_statements, client_cidr, as_json) -> None:
    """Narrow TOKEN offline for a child (no call to the gateway). Use - to read it from stdin."""
    if token_value == "-":
        token_value = sys.stdin.readline().strip()
    try:
        value = tokens.attenuate(
            token_value,
            identity=identity,
            role=role,
            resource=resource,
            ttl_s=ttl,
            max_statements=max_statements,
            client_cidr=client_cidr,
        )
    except (tokens.TokenError, ValueError) as exc:
        fail(str(exc))
    _emit(value, as_json)


@token.command()
@click.argument("token_value", metavar="TOKEN")
@click.option("--json", "as_json", is_flag=True)
def inspect(token_value, as_json) -> None:
    """Show a token's conditions (not its signature). Does not check it."""
    try:
        body = tokens.TokenBody.decode(tokens.split_token(token_value)[0])
        fields = body.fields()
    except tokens.TokenError as exc:
        fail(str(exc))
    principal, grants = tokens.principal_of(fields)
    if as_json:
        caveats = [{"key": k, "value": v} for k, v in fields]
        print_json({"id": body.identifier, "caveats": caveats, "principal": principal, "grants": grants})
        return
    click.echo(f"token {body.identifier}")
    for key, value in fields:
        if key == tokens.EXPIRES:
            left = float(value) - time.time()
            value = f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(float(value)))} ({left:.0f}s left)"
        click.echo(f"  {key:15} {value}")
    why = (
        "just-in-time grants and requests are for it"
        if grants
        else "narrowed in place: no just-in-time grants"
    )
    click.echo(f"principal {principal or '-'} ({why})")


def _emit(value: str, as_json: bool) -> None:
    user, sig = tokens.split_token(value)
    if as_json:
        print_json({"token": value, "scram_user": user, "scram_password": sig})
    else:
        click.echo(value)
