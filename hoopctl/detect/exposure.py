"""Severity by exposure: a credential others can read, or one left in a shared directory, matters more.

Pure: file mode bits and a flag in, (severity, reasons) out. Each kind of exposure raises the
severity one step (readable by group or others; in a world-writable or sticky directory), up to
"critical".
"""

from __future__ import annotations

import stat

SEVERITY_ORDER = ("low", "medium", "high", "critical")


def exposure_reasons(mode: int, shared_dir: bool) -> tuple[str, ...]:
    """Why a file is exposed beyond its owner, most serious first."""
    reasons = []
    if mode & stat.S_IROTH:
        reasons.append("world-readable")
    elif mode & stat.S_IRGRP:
        reasons.append("group-readable")
    if shared_dir:
        reasons.append("shared-dir")
    return tuple(reasons)


def raise_severity(severity: str, steps: int) -> str:
    """`severity` moved up `steps` levels, capped at critical; unknown severities are left as they are."""
    try:
        i = SEVERITY_ORDER.index(severity)
    except ValueError:
        return severity
    return SEVERITY_ORDER[min(i + max(steps, 0), len(SEVERITY_ORDER) - 1)]


def adjust_severity(severity: str, mode: int, shared_dir: bool) -> tuple[str, tuple[str, ...]]:
    """The severity a finding gets in a file with `mode`, and the exposure reasons behind it."""
    reasons = exposure_reasons(mode, shared_dir)
    return raise_severity(severity, len(reasons)), reasons
