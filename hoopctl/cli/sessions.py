"""`hoopctl sessions`: list, show, replay and verify the gateway's session recordings."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import click

from hoopctl.audit import layout
from hoopctl.audit.reader import (
    Recordings,
    RecordingsError,
    VerifyReport,
    format_ts,
    read_key_file,
    replay,
)
from hoopctl.cli.common import EXIT_CLEAN, EXIT_FINDINGS, fail, print_json, visible

dir_option = click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False),
    default=None,
    help=f"Recordings directory (default: ${layout.ENV_DIR}, else {layout.DEFAULT_DIR}).",
)
key_option = click.option(
    "--key-file",
    type=click.Path(dir_okay=False),
    default=None,
    help=f"HMAC key the ledger was written with (default: ${layout.ENV_KEY_FILE}); checks its macs.",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")


def _echo(*lines: str, err: bool = False) -> None:
    """Every human-readable line of these commands goes out here: recordings hold
    text that callers and the database chose, so each line has its control
    characters written out (JSON output is escaped by json.dumps instead)."""
    click.echo("\n".join(visible(line) for line in lines), err=err)


def _text_lines(text: Any, indent: str) -> list[str]:
    """Recorded (maybe multi-line) text, every line indented: a statement cannot
    start a line of its own that looks like the next record's header."""
    return [indent + line for line in str(text).split("\n")]


def _open(directory: str | None, key_file: str | None = None) -> Recordings:
    key_file = key_file or os.environ.get(layout.ENV_KEY_FILE)
    try:
        key = read_key_file(key_file) if key_file else None
    except RecordingsError as exc:
        fail(visible(exc))
    return Recordings(layout.resolve_dir(directory), key=key)


def _resolve(recs: Recordings, sid: str) -> str:
    try:
        return recs.resolve(sid)
    except RecordingsError as exc:
        fail(visible(exc))


def _report_json(report: VerifyReport) -> dict[str, Any]:
    first = report.first
    return {
        "ok": report.ok,
        "first_broken": first.__dict__ if first else None,
        "problems": [p.__dict__ for p in report.problems],
        "warnings": [p.__dict__ for p in report.warnings],
        "sessions": report.sessions,
        "ledger_records": report.ledger_records,
        "ledger_head": report.ledger_head,
        "macs_checked": report.macs_checked,
    }


def _warn_if_broken(report: VerifyReport) -> None:
    if not report.ok and report.first is not None:
        _echo(f"hoopctl: warning: recording BROKEN: {report.first.describe()}", err=True)


@click.group()
def sessions() -> None:
    """Session recordings: who ran what, through the gateway, and proof it is intact.

    \b
    Examples:
      hoopctl sessions list --dir /var/lib/hoopctl/recordings
      hoopctl sessions show 1m8ahh
      hoopctl sessions replay 1m8ahh --speed 4
      hoopctl sessions verify --json
    """


@sessions.command("list")
@dir_option
@json_option
def list_(directory: str | None, as_json: bool) -> None:
    """List recorded sessions, oldest first."""
    recs = _open(directory)
    try:
        rows = recs.summaries()
    except RecordingsError as exc:
        fail(visible(exc))
    if as_json:
        print_json([r.__dict__ for r in rows])
        return
    if not rows:
        _echo(f"no sessions recorded in {recs.dir}")
        return
    header = ("ID", "IDENTITY", "RESOURCE", "ROLE", "CLIENT", "START", "END", "STMTS", "REFUSED", "STATUS")
    table = [header] + [
        tuple(
            visible(cell)
            for cell in (
                r.sid,
                _who(r.identity, r.chain),
                r.resource or "-",
                r.role or "-",
                r.client or "-",
                format_ts(r.start),
                format_ts(r.end),
                r.statements,
                r.refused,
                r.status,
            )
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:  # cells are escaped already (widths count what is shown)
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def _who(identity: str | None, chain: list[Any]) -> str:
    """The identity column: a nested agent's names itself, so it shows with the chain it came
    down (from the identity the token was issued to)."""
    if chain and len(chain) > 1:
        return ">".join(str(c) for c in chain)
    return identity or "-"


def _chain_text(chain: list[Any]) -> str:
    return " -> ".join(str(c) for c in chain) if chain else "-"


@sessions.command()
@click.argument("session_id")
@dir_option
@key_option
@json_option
def show(session_id: str, directory: str | None, key_file: str | None, as_json: bool) -> None:
    """Show a session's header and every statement: time, verdict, rule, duration,
    rows, masked values, error, parameters. Exit 1 if its recording is broken."""
    recs = _open(directory, key_file)
    sid = _resolve(recs, session_id)
    try:
        report = recs.verify(sid)
        doc = recs.load(sid)
    except RecordingsError as exc:
        fail(visible(exc))
    if as_json:
        print_json({**doc, "verify": _report_json(report)})
        sys.exit(EXIT_CLEAN if report.ok else EXIT_FINDINGS)
    s = doc["session"] or {}
    end = doc["end"] or {}
    stmts = [i for i in doc["items"] if i["type"] == "statement"]
    refused = sum(1 for i in stmts if not i.get("allowed"))
    extra = {k: v for k, v in s.items() if k not in _HEADER_KEYS}
    lines = [
        f"session    {sid}",
        f"identity   {s.get('identity', '-')}",
        f"chain      {_chain_text(s.get('chain') or [])}",
        f"resource   {s.get('resource', '-')}   role {s.get('role', '-')}   client {s.get('client', '-')}",
        f"start      {format_ts(s.get('ts'))}   end {format_ts(end.get('ts'))}"
        + (f" ({end.get('reason')})" if end else " (open)"),
        f"statements {len(stmts)} ({refused} refused)",
    ]
    if extra:
        lines.append("extra      " + json.dumps(extra, sort_keys=True))
    lines.append("chain check " + ("ok" if report.ok else f"BROKEN: {report.first.describe()}"))  # type: ignore[union-attr]
    lines.append("")
    for item in doc["items"]:
        lines.extend(_show_item(item))
    _echo(*lines)
    sys.exit(EXIT_CLEAN if report.ok else EXIT_FINDINGS)


_HEADER_KEYS = frozenset({"seq", "ts", "t", "sid", "identity", "chain", "client", "resource", "role", "hash"})


_SHOW_INDENT = " " * 7


def _show_item(item: dict[str, Any]) -> list[str]:
    when = format_ts(item.get("ts"))
    if item["type"] == "event":
        fields = {k: v for k, v in item.items() if k not in ("type", "seq", "ts", "t", "event")}
        return [
            f"#{item['seq']:<5} {when}  event    {item.get('event')}  {json.dumps(fields, sort_keys=True)}"
        ]
    verdict = "allowed" if item.get("allowed") else "REFUSED"
    res = item.get("result") or {}
    parts = [f"#{item['seq']:<5} {when}  {verdict:<8} rule={item.get('rule')}  {item.get('proto')}"]
    if res:
        rows = "-" if res.get("rows") is None else res["rows"]
        parts.append(f"{res.get('ms')} ms  rows={rows}  masked={res.get('masked')}")
    out = ["  ".join(parts)]
    out.extend(_text_lines(item.get("text", ""), _SHOW_INDENT))
    if item.get("params") is not None:
        out.append(_SHOW_INDENT + "params: " + json.dumps(item["params"]))
    if res.get("error"):
        out.append(_SHOW_INDENT + "error: " + str(res["error"]))
    return out


# Every statement line is indented: only the "-- +" comment lines start a record.
_REPLAY_INDENT = "   "


@sessions.command("replay")
@click.argument("session_id")
@dir_option
@key_option
@click.option(
    "--speed",
    type=click.FloatRange(min=0),
    default=1.0,
    show_default=True,
    help="Time scale: 2 plays twice as fast; 0 prints without waiting.",
)
@json_option
def replay_(
    session_id: str, directory: str | None, key_file: str | None, speed: float, as_json: bool
) -> None:
    """Print a session's statements in their exact order, with their original timing.

    Each statement is preceded by a comment line (offset from the session's start,
    verdict, rule) and printed as it was received, each of its lines indented, with
    control characters written as \\xNN. Exit 1 if the recording is broken (it is
    still replayed, after a warning).
    """
    recs = _open(directory, key_file)
    sid = _resolve(recs, session_id)
    try:
        report = recs.verify(sid)
        doc = recs.load(sid)
    except RecordingsError as exc:
        fail(visible(exc))
    _warn_if_broken(report)
    s = doc["session"] or {}
    if not as_json:
        _echo(
            f"-- session {sid}: {s.get('identity')} ({_chain_text(s.get('chain') or [])}) "
            f"on {s.get('resource')} as {s.get('role')} from {s.get('client')}, {format_ts(s.get('ts'))}"
        )

    def emit(item: dict[str, Any]) -> None:
        if as_json:
            click.echo(json.dumps(item, separators=(",", ":")))
        elif item["type"] == "event":
            _echo(f"-- +{item.get('t', 0):.6f}s event {item.get('event')}")
        else:
            verdict = "allowed" if item.get("allowed") else "REFUSED"
            _echo(
                f"-- +{item.get('t', 0):.6f}s {verdict} rule={item.get('rule')} {item.get('proto')}",
                *_text_lines(item.get("text", ""), _REPLAY_INDENT),
            )
        sys.stdout.flush()

    replay(doc, speed, emit)
    sys.exit(EXIT_CLEAN if report.ok else EXIT_FINDINGS)


@sessions.command()
@click.argument("session_id", required=False)
@dir_option
@key_option
@json_option
def verify(session_id: str | None, directory: str | None, key_file: str | None, as_json: bool) -> None:
    """Check every hash chain (or one session's) against the ledger.

    Exit 0 when intact, 1 when something was edited, inserted, reordered, cut or
    deleted; the first broken record is named (file, line, seq, what is wrong).
    """
    recs = _open(directory, key_file)
    sid = _resolve(recs, session_id) if session_id else None
    try:
        report = recs.verify(sid)
    except RecordingsError as exc:
        fail(visible(exc))
    if as_json:
        print_json(_report_json(report))
    else:
        for w in report.warnings:
            _echo(f"warning: {w.describe()}")
        for p in report.problems:
            _echo(f"BROKEN: {p.describe()}")
        mac = "macs checked" if report.macs_checked else "macs not checked (no key)"
        if report.ok:
            _echo(
                f"ok: {report.sessions} session(s), ledger {report.ledger_records} records, "
                f"head {report.ledger_head or '-'}, {mac}"
            )
        else:
            _echo(f"first broken record: {report.first.describe()}")  # type: ignore[union-attr]
    sys.exit(EXIT_CLEAN if report.ok else EXIT_FINDINGS)
