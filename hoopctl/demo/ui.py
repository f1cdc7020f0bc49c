"""How the demo talks: act headings, narrated steps, commands shown as typed, and checks."""

from __future__ import annotations

import os
import queue
import shlex
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import click

# Secrets the story hands out are shown shortened; every other secret is never shown at all.
_SECRETS: dict[str, str] = {}
# Commands run here, so paths in them can be shown (and typed) relative to the demo's directory.
CWD: Path | None = None


class DemoFailed(SystemExit):
    """A CHECK of the story did not hold: the demo stops and exits non-zero."""


def act(number: int, title: str, story: str) -> None:
    click.echo()
    click.secho(f"== Act {number}: {title} ", bold=True, fg="cyan")
    click.echo(story)


def step(text: str) -> None:
    click.secho(f"-> {text}", fg="yellow")


def ok(text: str) -> None:
    click.secho(f"   ok: {text}", fg="green")


def note(text: str) -> None:
    click.echo(f"   {redact(text)}")


def check(condition: object, what: str) -> None:
    """The story's claim `what` must hold: print CHECK ok, or fail the demo loudly."""
    if not condition:
        click.secho(f"   CHECK FAILED: {what}", bold=True, fg="red")
        raise DemoFailed(f"demo: the story is not true: {what}")
    click.secho(f"   CHECK ok: {what}", fg="green")


def shorten(secret: str) -> str:
    return secret[:16] + "…"


def secret(value: str, *, shown: bool = True) -> str:
    """Registers a secret: displayed as its first 16 characters (or not at all) wherever it appears."""
    _SECRETS[value] = shorten(value) if shown else "[redacted]"
    body, _, sig = value.rpartition(".")
    if body and sig:  # a token's two halves travel apart (SCRAM user and password)
        _SECRETS.setdefault(body, shorten(body) if shown else "[redacted]")
        _SECRETS.setdefault(sig, "[redacted]")
    return value


def redact(text: str) -> str:
    for value in sorted(_SECRETS, key=len, reverse=True):
        if value in text:
            text = text.replace(value, _SECRETS[value])
    if CWD is not None:
        text = text.replace(str(CWD) + "/", "")
    return text


def _display(argv: list[str]) -> str:
    shown = list(argv)
    if shown[:3] == [sys.executable, "-m", "hoopctl.cli"]:
        shown = ["hoopctl", *shown[3:]]
    elif shown and "/" in shown[0]:
        shown[0] = Path(shown[0]).name
    return redact(shlex.join(shown))


def run(
    argv: list[str],
    *,
    env: dict | None = None,
    check: bool = False,
    show: bool = True,
    shown_as: str | None = None,
    max_lines: int = 40,
    **kw,
):
    """Runs a command the way an operator would type it, showing it and its output."""
    click.secho(f"   $ {shown_as or _display(argv)}", dim=True)
    kw.setdefault("cwd", CWD)
    kw.setdefault("timeout", 60)
    result = subprocess.run(argv, env=env, capture_output=True, text=True, **kw)
    if show:
        lines = (result.stdout + result.stderr).rstrip().splitlines()
        for line in lines[:max_lines]:
            click.echo(f"     {redact(line)}")
        if len(lines) > max_lines:
            click.echo(f"     ... ({len(lines) - max_lines} more lines)")
    if check and result.returncode != 0:
        raise DemoFailed(f"demo: {_display(argv)} failed with status {result.returncode}")
    return result


def hoopctl(*args: str) -> list[str]:
    """argv for this installation's hoopctl (works from the venv without activating it)."""
    return [sys.executable, "-m", "hoopctl.cli", *args]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_for(predicate, what: str, timeout: float = 15.0, interval: float = 0.1):
    """Polls `predicate` until it returns something true; fails the demo after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            check(False, what)
        time.sleep(interval)


class Background:
    """A long-running process started for the story (gateway, agent, relay), stopped at the end."""

    def __init__(self, argv: list[str], *, log: Path, env: dict | None = None, shown_as: str = "") -> None:
        click.secho(f"   $ {shown_as or _display(argv)} &", dim=True)
        self.log_path = log
        self._log = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=CWD,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, 15)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait()
        self._log.close()


class Psql:
    """An interactive psql session fed statement by statement, as someone at the prompt would."""

    def __init__(self, argv: list[str], *, env: dict, prompt: str, shown_as: str) -> None:
        click.secho(f"   $ {shown_as}", dim=True)
        self.prompt = prompt
        self._lines: queue.Queue[str] = queue.Queue()
        self.proc = subprocess.Popen(
            ["stdbuf", "-oL", "-eL", *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            cwd=CWD,
            bufsize=1,
        )
        threading.Thread(target=self._read, daemon=True).start()
        self._n = 0

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put("\0eof")

    def sql(self, statement: str, timeout: float = 20.0) -> str:
        """Sends one statement, shows it and psql's answer; returns the answer."""
        self._n += 1
        marker = f"-- demo marker {self._n} --"
        click.echo(f"     {self.prompt}=> {statement}")
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{statement}\n\\echo '{marker}'\n")
        self.proc.stdin.flush()
        out: list[str] = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                check(False, f"psql answered {statement!r} within {timeout:.0f}s")
            if line == marker or line == "\0eof":
                break
            out.append(line)
            click.echo(f"     {redact(line)}")
        return "\n".join(out)

    def close(self) -> int:
        if self.proc.poll() is None and self.proc.stdin is not None:
            try:
                self.proc.stdin.write("\\q\n")
                self.proc.stdin.close()
            except OSError:
                pass
        try:
            return self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()
