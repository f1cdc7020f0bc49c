"""Structured log lines for journald: JSON lines (default) or logfmt, one event per line.

Agent events go through `event(name, **fields)`; every other library log record becomes an event
named `log`. Paths are passed through `pathfd.display` by the callers (newlines and undecodable
bytes escaped); findings carry a rule, a fingerprint and a redacted preview, never a secret.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, TextIO

EVENTS = logging.getLogger("hoopctl.agent.events")


def event(name: str, level: int = logging.INFO, /, **fields: Any) -> None:
    """Log one agent event with its fields."""
    EVENTS.log(level, name, extra={"agent_fields": fields})


def _logfmt_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str, separators=(",", ":"))
    if text and all(c.isalnum() or c in "-_./:@+," for c in text):
        return text
    return json.dumps(text)


class EventFormatter(logging.Formatter):
    def __init__(self, fmt: str = "json") -> None:
        super().__init__()
        self.style_name = fmt

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = {"ts": round(record.created, 6), "level": record.levelname.lower()}
        extra = getattr(record, "agent_fields", None)
        if extra is not None:
            fields["event"] = record.getMessage()
            fields.update(extra)
        else:
            fields["event"] = "log"
            fields["logger"] = record.name
            fields["msg"] = record.getMessage()
        if record.exc_info:
            fields["error"] = self.formatException(record.exc_info).splitlines()[-1]
        if self.style_name == "logfmt":
            return " ".join(f"{k}={_logfmt_value(v)}" for k, v in fields.items() if v is not None)
        return json.dumps(fields, default=str, ensure_ascii=True, separators=(",", ":"))


class _FlushingHandler(logging.StreamHandler):
    """Line-buffered regardless of where stdout goes (a pipe to journald or a test)."""

    def emit(self, record: logging.LogRecord) -> None:
        super().emit(record)
        self.flush()


def setup(fmt: str = "json", level: int = logging.INFO, stream: TextIO | None = None) -> None:
    """Send all logging to `stream` (stdout) as structured lines; replaces existing root handlers."""
    handler = _FlushingHandler(stream or sys.stdout)
    handler.setFormatter(EventFormatter(fmt))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level)
    logging.Formatter.converter = time.gmtime
