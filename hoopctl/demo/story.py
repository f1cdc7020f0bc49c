"""The seed story, act by act, on this one host with embedded defaults.

Each act narrates what it does, runs the real commands an operator would, and
checks the outcome, so `make demo` fails loudly if the story stops being true.
Everything started along the way (PostgreSQL, gateway, agent, relays, users) is
stopped or removed at the end, also when a check fails.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

import click

from hoopctl.demo import ui
from hoopctl.demo.scan_act import scan_act


def _stop(signum: int, frame: object) -> None:
    # Unwinds like a failed check, so everything started so far is stopped and removed.
    raise ui.DemoFailed("demo: terminated")


def main() -> int:
    click.secho("hoopctl demo: least privilege where automation erodes it", bold=True)
    started = time.monotonic()
    signal.signal(signal.SIGTERM, _stop)
    workdir = Path(tempfile.mkdtemp(prefix="hoopctl-demo-"))
    ui.CWD = workdir
    try:
        with contextlib.ExitStack() as stack:
            stack.callback(shutil.rmtree, workdir, True)
            scan_act(workdir)
            if os.geteuid() != 0:
                click.echo()
                click.secho("acts 2-4 need root (PostgreSQL as the postgres user, the agent); stopping here")
                return 0
            from hoopctl.demo.access_act import access_act, audit_act
            from hoopctl.demo.agent_act import agent_act
            from hoopctl.demo.gateway_act import Stage, gateway_act

            stage = Stage(workdir=workdir, stack=stack)
            gateway_act(stage)
            access_act(stage)
            audit_act(stage)
            agent_act(stage)
            click.echo()
            click.secho("cleaning up: agent, gateway, PostgreSQL, processes, users, temp dirs", dim=True)
    except ui.DemoFailed as exc:
        click.secho(str(exc), fg="red", bold=True, err=True)
        return 1
    click.echo()
    click.secho(f"demo complete in {time.monotonic() - started:.0f}s", bold=True, fg="green")
    return 0
