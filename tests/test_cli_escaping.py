"""Text that callers, processes or file names chose reaches the terminal with its control
characters written out: an access reason, a process name, a recorded statement."""

from __future__ import annotations

import re

from hoopctl.cli.access import _line
from hoopctl.cli.common import visible
from hoopctl.cli.tunnels import render_table

RAW = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\u200b-\u200f]")
HOSTILE = "fix \x1b]0;owned\x07\x1b[2K\r\u202eevil\u200b"


def test_visible_escapes_controls_and_invisible_reordering_but_keeps_backslashes():
    shown = visible(HOSTILE + " \\n")
    assert not RAW.search(shown)
    assert shown == "fix \\x1b]0;owned\\x07\\x1b[2K\\x0d\\u202eevil\\u200b \\n"


def test_an_access_reason_cannot_drive_the_approvers_terminal():
    request = {
        "id": "req-1",
        "status": "pending",
        "expires_at": None,
        "requester": "helper\x1b[8m",
        "role": "writer",
        "resource": "appdb",
        "duration_s": 60,
        "approvers": [],
        "approvals_required": 1,
        "reason": HOSTILE,
    }
    line = _line(request)
    assert not RAW.search(line)
    assert "helper\\x1b[8m" in line and "\\x1b]0;owned\\x07" in line


def test_process_table_cells_are_escaped_and_aligned():
    table = render_table(["PID", "USER"], [["1", "ci\x1b[31m"], ["22", "root"]])
    lines = table.splitlines()
    assert not any(RAW.search(line) for line in lines)
    assert lines[1] == "1    ci\\x1b[31m" and lines[2] == "22   root"
