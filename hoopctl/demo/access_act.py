"""Act 3: the helper asks for write access, root approves, the write goes through; then the audit."""

from __future__ import annotations

import re
import shutil
import time

from hoopctl.demo.gateway_act import RESOURCE, Stage
from hoopctl.demo.ui import act, check, note, run, step
from hoopctl.demo.ui import hoopctl as cli


def access_act(stage: Stage) -> None:
    act(
        3,
        "just-in-time access",
        "The helper needs to write, once. It asks; a person approves; the grant expires by itself.",
    )
    helper = stage.helper
    assert helper is not None
    step("the helper asks for writer on appdb for 10 minutes (filed as the job's helper: ci-job>helper)")
    asked = run(
        cli("access", "request", "--socket", "admin.sock", "--token", stage.tokens["HELPER"])
        + ["--resource", RESOURCE, "--role", "writer", "--for", "10m", "--reason", "backfill one customer"],
        shown_as='hoopctl access request --socket admin.sock --token "$HELPER" --resource appdb '
        '--role writer --for 10m --reason "backfill one customer"',
    )
    found = re.search(r"approve (\S+)", asked.stdout)
    check(asked.returncode == 0 and found, "the request is filed and waits for an approver")
    request_id = found.group(1)
    check("ci-job>helper" in asked.stdout, "it is filed as the job's helper, not as the job")

    step("until approved, the helper's write is still refused")
    answer = helper.sql("INSERT INTO customers (name, email) VALUES ('Helper Bot', 'bot@example.com');")
    check("42501" in answer, "no write before the approval")

    step("an approver (root here; or a member of the approver group) approves it")
    approved = run(
        cli("access", "approve", "--socket", "admin.sock", request_id, "--reason", "ticket OPS-7, checked")
    )
    check(approved.returncode == 0 and "approved" in approved.stdout, "the request is approved")
    time.sleep(1.0)  # the gateway picks up shared state every poll_interval_ms (250 ms by default)

    step("the helper's write now goes through, in the same session, without reconnecting")
    answer = helper.sql("INSERT INTO customers (name, email) VALUES ('Helper Bot', 'bot@example.com');")
    check("INSERT 0 1" in answer, "the helper's INSERT went through")
    answer = helper.sql("DROP TABLE customers;")
    check("42501" in answer, "the grant is writer, not owner: DROP TABLE is still refused")
    helper.close()
    count = stage.direct("SELECT count(*) FROM customers")
    check(count == "4", "PostgreSQL now holds 4 customers (asked directly)")

    step("who asked, who approved, when and why")
    shown = run(cli("access", "show", "--socket", "admin.sock", request_id))
    check("root" in shown.stdout and "backfill one customer" in shown.stdout, "the request's history is kept")
    stage.request_id = request_id


def _helper_session(listing: str) -> str:
    """The helper's session id, from the `sessions list` table (ID first, IDENTITY second)."""
    rows = [line.split() for line in listing.splitlines()[1:]]
    helper = [row[0] for row in rows if len(row) > 1 and row[1] == "ci-job>helper"]
    check(helper, "the helper's session is recorded")
    return helper[-1]


def audit_act(stage: Stage) -> None:
    act(
        3,
        "(cont.) the audit",
        "Every session is recorded as a hash chain; the helper's can be replayed statement by statement.",
    )
    step("the recorded sessions")
    listed = run(cli("sessions", "list", "--dir", "recordings"))
    check(listed.returncode == 0 and listed.stdout.strip(), "sessions are listed")
    session = _helper_session(listed.stdout)
    step("replaying the helper's session (the refused DROP and write, the grant arriving, the write)")
    replay = run(cli("sessions", "replay", "--dir", "recordings", "--speed", "0", session), max_lines=30)
    text = replay.stdout
    check(replay.returncode == 0, "the replay reads an intact recording")
    check(
        "DROP TABLE customers" in text and "INSERT INTO customers" in text, "the DROP and the write are there"
    )
    check("grant-applied" in text, "the grant's arrival mid-session is recorded")
    check("refused" in text.lower() or "deny" in text.lower(), "the refusals are marked as such")
    step("checking every hash chain")
    verified = run(cli("sessions", "verify", "--dir", "recordings"))
    check(verified.returncode == 0, "verify: intact (exit 0)")

    step("now someone edits one byte of a recording (in a copy)")
    copy = stage.workdir / "recordings-copy"
    shutil.copytree(stage.recordings, copy)
    victim = _tamper(copy)
    note(f"changed one byte in {victim.relative_to(stage.workdir)}")
    broken = run(cli("sessions", "verify", "--dir", "recordings-copy"))
    check(broken.returncode == 1, "verify fails (exit 1)")
    check(victim.name in broken.stdout + broken.stderr, "and names the broken record's file")


def _tamper(directory):
    """Flips one character of a recorded statement: `customers` becomes `customerz`."""
    for path in sorted((directory / "sessions").glob("*.jsonl")):
        data = path.read_bytes()
        at = data.find(b"DROP TABLE customers")
        if at >= 0:
            pos = at + len("DROP TABLE customer")
            path.write_bytes(data[:pos] + b"z" + data[pos + 1 :])
            return path
    check(False, "a recording with the DROP statement to tamper with")
    raise AssertionError
