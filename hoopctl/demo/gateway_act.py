"""Act 2: a real PostgreSQL behind `hoopctl gateway serve`; a CI job's token and its helper's narrower one."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from hoopctl.demo import ui
from hoopctl.demo.ui import act, check, note, run, step
from hoopctl.demo.ui import hoopctl as cli
from hoopctl.localpg import LocalPostgres

RESOURCE = "appdb"
CUSTOMERS = """
CREATE TABLE customers (id serial PRIMARY KEY, name text, email text, card_number text);
INSERT INTO customers (name, email, card_number) VALUES
  ('Ada Lovelace', 'ada@example.com', '4111111111111111'),
  ('Grace Hopper', 'grace@example.org', '5555555555554444'),
  ('Alan Turing', 'alan@example.net', '378282246310005');
ALTER TABLE customers OWNER TO hoop_gateway;
"""


@dataclass
class Stage:
    """What the acts share: the work directory, the database, the gateway and the tokens handed out."""

    workdir: Path
    stack: contextlib.ExitStack
    pg: LocalPostgres | None = None
    gateway: ui.Background | None = None
    gateway_port: int = 0
    config: Path = Path("gateway.yaml")
    recordings: Path = Path("recordings")
    admin_socket: Path = Path("admin.sock")
    tokens: dict[str, str] = field(default_factory=dict)
    helper: ui.Psql | None = None
    request_id: str = ""

    def psql_env(self, token: str) -> dict[str, str]:
        body, _, sig = token.rpartition(".")
        return dict(os.environ, PGUSER=body, PGPASSWORD=sig, PGCONNECT_TIMEOUT="5")

    def psql_argv(self, *extra: str, port: int | None = None) -> list[str]:
        assert self.pg is not None
        port = port or self.gateway_port
        return [self.pg.bin("psql"), "-X", "-h", "127.0.0.1", "-p", str(port), "-d", RESOURCE, *extra]

    def psql_shown(self, var: str, *extra: str, port: int | None = None) -> str:
        port = port or self.gateway_port
        tail = " ".join(extra)
        return f'PGUSER="${{{var}%.*}}" PGPASSWORD="${{{var}##*.}}" psql -h 127.0.0.1 -p {port} {RESOURCE} {tail}'.rstrip()

    def direct(self, sql: str) -> str:
        """Asks PostgreSQL itself (over its unix socket, as its superuser), bypassing the gateway."""
        assert self.pg is not None
        return self.pg.psql(sql, "app")


def _start_postgres(stage: Stage) -> None:
    step("starting a PostgreSQL (the system's binaries) with an `app` database of customers")
    pg = LocalPostgres.start(stage.workdir / "pg")
    stage.stack.callback(pg.stop)
    stage.pg = pg
    gw_password = secrets.token_hex(16)
    pg.psql(f"CREATE ROLE hoop_gateway LOGIN PASSWORD '{gw_password}'")
    pg.psql("CREATE DATABASE app OWNER hoop_gateway")
    pg.psql(CUSTOMERS, "app")
    secrets_dir = stage.workdir / "secrets"
    secrets_dir.mkdir(mode=0o700)
    pw_file = secrets_dir / "appdb"
    pw_file.write_text(gw_password + "\n")
    os.chmod(pw_file, 0o600)
    ui.secret(gw_password, shown=False)
    note(f"PostgreSQL on 127.0.0.1:{pg.port}; the gateway's own login `hoop_gateway` owns the data")
    note("its password sits in secrets/appdb (0600); callers never see it")


def _gateway_config(stage: Stage, port: int) -> str:
    assert stage.pg is not None
    return f"""\
# The demo's gateway: one database, three roles, masking, recordings, just-in-time access.
listen: 127.0.0.1:{port}
token_key_file: token.key
recordings:
  dir: recordings
resources:
  {RESOURCE}:
    host: 127.0.0.1
    port: {stage.pg.port}
    dbname: app
    user: hoop_gateway
    password_file: secrets/appdb
    sslmode: disable
roles:
  reader: {{grants: [read]}}
  writer: {{grants: [read, write, copy]}}
  owner: {{grants: [read, write, copy, ddl]}}
masking:
  rules:
    - {{name: emails, column: ["*email*"], style: partial}}
    - {{name: cards, field: "{RESOURCE}.public.customers.card_number", style: partial}}
access:
  state: sqlite://{stage.workdir}/state.db
  admin_socket: admin.sock
  approver_group: root
  roles:
    writer: {{mode: request, approvals: 1, max_duration: 1h}}
"""


def _start_gateway(stage: Stage) -> None:
    step("writing gateway.yaml and a token signing key, then starting the gateway")
    port = ui.free_port()
    stage.config = stage.workdir / "gateway.yaml"
    stage.config.write_text(_gateway_config(stage, port))
    stage.recordings = stage.workdir / "recordings"
    stage.admin_socket = stage.workdir / "admin.sock"
    for line in stage.config.read_text().splitlines()[1:]:
        if line.startswith(("  state:",)):
            line = "  state: sqlite://state.db"
        note(f"  | {line}")
    run(cli("token", "keygen", "token.key"), check=True)
    run(cli("gateway", "check", "--config", "gateway.yaml"), check=True)
    gateway = ui.Background(
        cli("gateway", "serve", "--config", "gateway.yaml"), log=stage.workdir / "gateway.log"
    )
    stage.stack.callback(gateway.stop)
    stage.gateway = gateway
    stage.gateway_port = port

    def up() -> bool:
        if not gateway.alive():
            for line in gateway.log_text().splitlines()[-10:]:
                note(f"gateway.log: {line}")
            check(False, "the gateway started")
        return ui.port_open(port)

    ui.wait_for(up, f"the gateway listens on 127.0.0.1:{port}")
    ui.wait_for(stage.admin_socket.exists, "the gateway's admin socket is there")
    check(ui.port_open(port), f"the gateway listens on 127.0.0.1:{port}")


def _tokens(stage: Stage) -> None:
    step("the CI job gets a writer token; it hands its helper a narrower one, offline")
    out = run(
        cli("token", "issue", "--config", "gateway.yaml", "--identity", "ci-job", "--resource", RESOURCE)
        + ["--role", "writer", "--ttl", "15m"],
        check=True,
        show=False,
    )
    job = ui.secret(out.stdout.strip().splitlines()[-1].strip())
    note(f"JOB={ui.shorten(job)}")
    out = run(
        cli("token", "attenuate", job) + ["--identity", "helper", "--role", "reader", "--ttl", "5m"],
        check=True,
        show=False,
        shown_as='hoopctl token attenuate "$JOB" --identity helper --role reader --ttl 5m',
    )
    helper = ui.secret(out.stdout.strip().splitlines()[-1].strip())
    note(f"HELPER={ui.shorten(helper)}")
    note("(tokens are shown shortened; the helper's is the job's token with narrowing caveats appended)")
    stage.tokens.update(JOB=job, HELPER=helper)
    shown = run(cli("token", "inspect", helper), show=False, shown_as='hoopctl token inspect "$HELPER"')
    try:
        info = json.loads(shown.stdout)
    except ValueError:
        info = {}
    for line in (shown.stdout if not info else json.dumps(info, indent=1)).splitlines()[:14]:
        note(f"  {line}")
    check(
        helper != job and len(helper) > len(job), "the helper's token is the job's, narrowed (longer chain)"
    )


def _through_the_gateway(stage: Stage) -> None:
    step("the CI job reads customers through the gateway with plain psql: emails and cards masked")
    out = run(
        stage.psql_argv("-c", "SELECT name, email, card_number FROM customers ORDER BY id"),
        env=stage.psql_env(stage.tokens["JOB"]),
        shown_as=stage.psql_shown("JOB", '-c "SELECT name, email, card_number FROM customers ORDER BY id"'),
    )
    check(out.returncode == 0 and "Ada Lovelace" in out.stdout, "the job's SELECT went through")
    check(
        "ada@example.com" not in out.stdout and "4111111111111111" not in out.stdout,
        "no email or card number left the gateway in clear",
    )
    check("1111" in out.stdout and "@example.com" in out.stdout, "masking kept the useful part (partial)")

    step("the helper opens its own session; it may read, nothing more")
    stage.helper = ui.Psql(
        stage.psql_argv("-v", "VERBOSITY=verbose"),
        env=stage.psql_env(stage.tokens["HELPER"]),
        prompt=RESOURCE,
        shown_as=stage.psql_shown("HELPER"),
    )
    stage.stack.callback(stage.helper.close)
    h = stage.helper
    h.sql("\\set VERBOSITY verbose")
    answer = h.sql("SELECT count(*) FROM customers;")
    check("3" in answer, "the helper can read")
    answer = h.sql("DROP TABLE customers;")
    check("42501" in answer, "the helper's DROP TABLE is refused (SQLSTATE 42501)")
    exists = stage.direct("SELECT to_regclass('public.customers') IS NOT NULL")
    check(exists == "t", "the customers table still exists (asked PostgreSQL directly)")
    answer = h.sql("INSERT INTO customers (name, email) VALUES ('Helper Bot', 'bot@example.com');")
    check("42501" in answer, "the helper's write is refused too")
    note(f"the refusal names the way out: {_way_out(answer)}")
    count = stage.direct("SELECT count(*) FROM customers")
    check(count == "3", "PostgreSQL still holds exactly 3 customers")


def _way_out(answer: str) -> str:
    for line in answer.splitlines():
        if "Ask for access:" in line:
            return line.split("Ask for access:", 1)[1].strip()
    return "(no hint in the refusal)"


def gateway_act(stage: Stage) -> None:
    act(
        2,
        "the gateway in front of the database",
        "Callers get short-lived tokens, never the database password; every statement is checked and recorded.",
    )
    _start_postgres(stage)
    _start_gateway(stage)
    _tokens(stage)
    _through_the_gateway(stage)
