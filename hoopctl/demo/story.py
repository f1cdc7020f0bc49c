"""The seed story, act by act, on this one host with embedded defaults.

Each act narrates what it does, runs the real commands an operator would, and
checks the outcome, so `make demo` fails loudly if the story stops being true.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import click

from hoopctl.demo.scan_act import scan_act


def main() -> int:
    click.secho("hoopctl demo: least privilege where automation erodes it", bold=True)
    workdir = Path(tempfile.mkdtemp(prefix="hoopctl-demo-"))
    try:
        scan_act(workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    click.echo()
    click.secho("demo complete", bold=True, fg="green")
    return 0
