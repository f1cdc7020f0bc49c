"""`hoopctl agent`: run the host agent, check its config, show its status."""

from __future__ import annotations

import click

from hoopctl.cli.common import EXIT_CLEAN, EXIT_FINDINGS, fail, print_json


@click.group()
def agent() -> None:
    """The host agent: quarantines leftover credential files, tears down stray tunnels, stops
    orphans of finished CI jobs. Report-only unless the config says `mode: enforce` or --apply.

    \b
    Examples:
      hoopctl agent check --config /etc/hoopctl/agent.yaml
      hoopctl agent run --config /etc/hoopctl/agent.yaml --apply
      hoopctl agent status --json
    """


def _load(config: str):  # noqa: ANN202 - the config type is imported lazily
    from hoopctl.agent.config import ConfigError, load_config

    try:
        return load_config(config)
    except ConfigError as exc:
        fail(str(exc))


@agent.command()
@click.option("--config", "config", required=True, type=click.Path(dir_okay=False), help="Agent YAML config.")
@click.option(
    "--apply", is_flag=True, help="Act (quarantine, terminate, adopt) whatever the config's mode says."
)
@click.pass_context
def run(ctx: click.Context, config: str, apply: bool) -> None:
    """Run the agent in the foreground (systemd Type=notify); structured log lines on stdout.

    SIGHUP reloads the config (a bad one is refused and the running one kept); SIGTERM stops.

    \b
    Example:
      hoopctl agent run --config /etc/hoopctl/agent.yaml --apply
    """
    cfg = _load(config)
    from hoopctl.agent.daemon import run_agent

    ctx.exit(run_agent(cfg, apply=apply))


@agent.command()
@click.option("--config", "config", required=True, type=click.Path(dir_okay=False), help="Agent YAML config.")
@click.option("--json", "as_json", is_flag=True, help="Print the parsed summary as JSON.")
def check(config: str, as_json: bool) -> None:
    """Check a config file: exit 0 when valid, 2 with a one-line error naming the key otherwise.

    \b
    Example:
      hoopctl agent check --config /etc/hoopctl/agent.yaml
    """
    from hoopctl.agent.config import describe

    summary = describe(_load(config))
    if as_json:
        print_json(summary)
        return
    click.echo(
        f"{config}: ok: mode {summary['mode']}, watching {len(summary['watch_existing'])} existing "
        f"of {len(summary['watch'])} configured trees, actions "
        + ", ".join(f"{k}={v}" for k, v in summary["actions"].items())
        + ("" if summary["processes"] else ", process pass off")
    )


@agent.command()
@click.option(
    "--state-dir",
    default="/var/lib/hoopctl/agent",
    show_default=True,
    envvar="HOOPCTL_AGENT_STATE_DIR",
    help="The agent's state directory (holds status.json).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the status file as JSON.")
@click.pass_context
def status(ctx: click.Context, state_dir: str, as_json: bool) -> None:
    """Show what the running agent last wrote: pid, scans, counts of findings and actions, watches, errors.

    Exit status: 0 the agent is running, 1 it is not (last status shown), 2 no status to read.

    \b
    Example:
      hoopctl agent status --json
    """
    from hoopctl.agent.status import pid_alive, read_status

    try:
        data = read_status(state_dir)
    except (OSError, ValueError) as exc:
        fail(
            f"{state_dir}/status.json: cannot read the agent's status ({getattr(exc, 'strerror', None) or exc})"
        )
    running = (
        data.get("state") not in ("stopped",) and isinstance(data.get("pid"), int) and pid_alive(data["pid"])
    )
    data["running"] = running
    if as_json:
        print_json(data)
    else:
        lines = [
            f"agent pid {data.get('pid')}: {'running' if running else 'not running'} ({data.get('state')}), "
            f"mode {data.get('mode')}",
            f"started {data.get('started')}, updated {data.get('updated')}, last full scan {data.get('last_full_scan')}",
            f"watches {data.get('watches')} on {len(data.get('roots', []))} roots, "
            f"{len(data.get('unwatched', []))} unwatched, {data.get('overflows', 0)} overflows",
            "findings "
            + (", ".join(f"{k}={v}" for k, v in sorted(data.get("findings", {}).items())) or "none"),
            "actions "
            + (", ".join(f"{k}={v}" for k, v in sorted(data.get("actions", {}).items())) or "none"),
            f"errors {data.get('error_count', 0)}",
        ]
        lines += [
            f"  {e.get('at')} {e.get('where')}: {e.get('message')}" for e in data.get("errors", [])[-5:]
        ]
        click.echo("\n".join(lines))
    ctx.exit(EXIT_CLEAN if running else EXIT_FINDINGS)
