"""`hoopctl scan`: find credentials left in files, as a table on a terminal or one JSON object."""

from __future__ import annotations

import sys
import time

import click

from hoopctl.cli.common import EXIT_CLEAN, EXIT_FINDINGS, fail, print_json
from hoopctl.host.safefs import DEFAULT_EXCLUDES, DEFAULT_MAX_FILE_SIZE, printable
from hoopctl.host.scan import Finding, ScanResult, default_jobs

_UNITS = {"": 1, "B": 1, "K": 1024, "KB": 1024, "KIB": 1024, "M": 1024**2, "MB": 1024**2, "MIB": 1024**2}
_UNITS |= {"G": 1024**3, "GB": 1024**3, "GIB": 1024**3}
SEVERITY_COLOURS = {"critical": "red", "high": "magenta", "medium": "yellow", "low": "cyan"}


def parse_size(text: str) -> int:
    """'10M', '512k', '1048576' -> bytes; raises ValueError on anything else."""
    t = text.strip().upper()
    num = t.rstrip("BKMGI")
    unit = t[len(num) :]
    if not num or unit not in _UNITS:
        raise ValueError(text)
    value = float(num) * _UNITS[unit]
    if value < 0:
        raise ValueError(text)
    return int(value)


class _SizeType(click.ParamType):
    name = "SIZE"

    def convert(self, value, param, ctx):  # type: ignore[no-untyped-def]
        if isinstance(value, int):
            return value
        try:
            return parse_size(str(value))
        except ValueError:
            self.fail(f"{value!r} is not a size (examples: 10M, 512K, 1048576)", param, ctx)


class Progress:
    """A one-line progress indicator on stderr, shown only on a terminal and only on long scans."""

    def __init__(self, delay: float = 1.0) -> None:
        self.enabled = sys.stderr.isatty()
        self.started = time.monotonic()
        self.delay = delay
        self.last = 0.0
        self.shown = False

    def __call__(self, files: int, nbytes: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self.started < self.delay or now - self.last < 0.2:
            return
        self.last = now
        rate = nbytes / 1e6 / max(now - self.started, 1e-9)
        sys.stderr.write(f"\r\x1b[Kscanning: {files:,} files, {nbytes / 1e6:,.1f} MB, {rate:,.0f} MB/s")
        sys.stderr.flush()
        self.shown = True

    def done(self) -> None:
        if self.shown:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def render_table(findings: list[Finding], *, colour: bool = False, relative_to: str | None = None) -> str:
    """The findings as an aligned text table (no secret: previews and short fingerprints only).

    `relative_to` shortens paths under that directory (the demo shows its tree's paths that way).
    """
    header = ("LOCATION", "TYPE", "SEVERITY", "OWNER", "MODE", "PREVIEW", "FINGERPRINT")
    cut = len(relative_to.rstrip("/")) + 1 if relative_to else 0

    def where(f: Finding) -> str:
        path = f.path[cut:] if cut and f.path.startswith(relative_to.rstrip("/") + "/") else f.path  # type: ignore[union-attr]
        return f"{printable(path)}:{f.line}"

    rows = [
        (
            _short(where(f), 80),
            _short(f.type, 28),
            f.severity,
            _short(f.owner, 12),
            f.mode,
            _short(printable(f.preview), 40),
            f.fingerprint[:12],
        )
        for f in findings
    ]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    for r, f in zip(rows, findings, strict=True):
        cells = [c.ljust(w) for c, w in zip(r, widths, strict=True)]
        if colour:
            cells[2] = click.style(
                cells[2], fg=SEVERITY_COLOURS.get(f.severity), bold=f.severity == "critical"
            )
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def render_summary(result: ScanResult) -> str:
    s = result.stats
    skipped = [
        f"{n} {what}"
        for n, what in (
            (s.skipped_binary, "binary"),
            (s.skipped_large, "too large"),
            (s.skipped_special, "special"),
            (s.symlinks_skipped, "symlinks"),
            (s.unreadable, "unreadable"),
            (s.excluded, "excluded"),
            (s.other_fs_skipped, "pseudo/other filesystems"),
            (s.errors, "errors"),
        )
        if n
    ]
    line = (
        f"{len(result.findings)} finding(s) in {s.files_scanned:,} files "
        f"({s.bytes_scanned / 1e6:,.1f} MB, {s.seconds:.2f}s, {s.mb_per_s:,.0f} MB/s)"
    )
    return line + (f"; skipped: {', '.join(skipped)}" if skipped else "")


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object {findings, stats}.")
@click.option(
    "--exclude",
    "excludes",
    multiple=True,
    metavar="GLOB",
    help="Skip basenames matching GLOB, or paths from the scan root if GLOB has a '/' (repeatable).",
)
@click.option(
    "--max-file-size",
    type=_SizeType(),
    default=DEFAULT_MAX_FILE_SIZE,
    help="Skip (and count) larger files, e.g. 2M, 512K.  [default: 10M]",
)
@click.option("--no-default-excludes", is_flag=True, help=f"Also scan {', '.join(DEFAULT_EXCLUDES[::2])}.")
@click.option("--one-file-system", is_flag=True, help="Do not enter other mounted filesystems.")
@click.option(
    "-j", "--jobs", type=click.IntRange(1, 64), default=None, help="Worker processes [default: CPUs, max 8]."
)
def scan(
    paths: tuple[str, ...],
    as_json: bool,
    excludes: tuple[str, ...],
    max_file_size: int,
    no_default_excludes: bool,
    one_file_system: bool,
    jobs: int | None,
) -> None:
    """Find credentials left in files under PATHS.

    Symlinks are never followed, FIFOs and devices never opened, binary and huge files skipped
    and counted. Exit status: 0 nothing found, 1 findings, 2 error.

    \b
    Examples:
      hoopctl scan /home /srv /tmp /etc
      hoopctl scan --json --exclude '*.log' --max-file-size 2M /srv/app
    """
    from hoopctl.host.scan import WalkError, scan_paths

    all_excludes = tuple(excludes) + (() if no_default_excludes else DEFAULT_EXCLUDES)
    progress = None if as_json else Progress()
    try:
        result = scan_paths(
            paths,
            excludes=all_excludes,
            max_file_size=max_file_size,
            one_file_system=one_file_system,
            jobs=jobs or default_jobs(),
            progress=progress,
        )
    except WalkError as exc:
        fail(str(exc))
    finally:
        if progress is not None:
            progress.done()
    if as_json:
        print_json(result.to_json())
    else:
        colour = sys.stdout.isatty()
        if result.findings:
            click.echo(render_table(result.findings, colour=colour))
        click.echo(render_summary(result))
    sys.exit(EXIT_FINDINGS if result.findings else EXIT_CLEAN)
