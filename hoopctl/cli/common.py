"""What every command shares: exit codes, one-line errors, JSON output."""

from __future__ import annotations

import dataclasses
import json
import re
import sys
from typing import Any, NoReturn

import click

from hoopctl.config import parse_duration

EXIT_CLEAN = 0
EXIT_FINDINGS = 1
EXIT_ERROR = 2


class HoopctlError(click.ClickException):
    """A user-facing error: printed as one line, exit status 2."""

    exit_code = EXIT_ERROR

    def show(self, file: Any = None) -> None:
        click.echo(f"hoopctl: error: {self.format_message()}", err=True)


def fail(message: str) -> NoReturn:
    raise HoopctlError(message)


def _default(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return dataclasses.asdict(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    return str(obj)


def print_json(payload: Any) -> None:
    # One write: json.dump to a stream issues a write per token.
    sys.stdout.write(json.dumps(payload, default=_default, separators=(",", ":")) + "\n")


# C0 controls, DEL and C1 controls (the characters a terminal acts on instead of showing), and
# the invisible ones that reorder or hide text: zero-width marks, bidi embeddings and isolates.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]")


def visible(value: Any) -> str:
    """``value`` as one line of text with every control character written out as
    ``\\xNN``: text a caller or a database chose (recorded SQL, errors, names) must
    not move the cursor, erase, hide or retitle anything on the reader's terminal."""
    return _CONTROL.sub(_escape, str(value))


def _escape(m: re.Match[str]) -> str:
    code = ord(m.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def on_tty() -> bool:
    return sys.stdout.isatty()


class Duration(click.ParamType):
    """`90s`, `15m`, `2h`, `1d` (or plain seconds) -> seconds."""

    name = "duration"

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        try:
            return parse_duration(value)
        except ValueError:
            self.fail(f"{value!r} is not a positive duration (examples: 90s, 15m, 2h)", param, ctx)


DURATION = Duration()
