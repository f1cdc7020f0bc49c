"""The Prometheus endpoint: numbers that follow what real clients did through the gateway."""

from __future__ import annotations

import threading
import time
import urllib.request
from dataclasses import replace

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from hoopctl.access.tokens import TokenAuthority, load_key
from hoopctl.config import ConfigError
from hoopctl.gateway.config import EXAMPLE, load_config
from hoopctl.gateway.masking import MaskingRules
from hoopctl.gateway.metrics import GatewayCollector
from hoopctl.localpg import free_port
from tests.gateway.conftest import DBNAME, _run_gateway, _stop
from tests.gateway.test_config_example import localised


@pytest.fixture
def metered(base_config, gw_db, tmp_path):
    gw_db.psql(
        "DROP TABLE IF EXISTS metered; CREATE TABLE metered (id int, email text);"
        "INSERT INTO metered VALUES (1, 'ann@example.com'), (2, 'bob@example.com')",
        DBNAME,
    )
    port = free_port()
    config = replace(
        base_config,
        masking=MaskingRules.from_config([{"column": "*email*", "style": "partial"}]),
        recordings_dir=tmp_path / "rec",
        metrics_listen=("127.0.0.1", port),
    )
    handle = _run_gateway(config, TokenAuthority(load_key(base_config.token_key_file)), gw_db)
    yield handle, port
    _stop(handle)
    gw_db.psql("DROP TABLE IF EXISTS metered", DBNAME)


def _scrape(port: int) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_count_sessions_verdicts_masked_values_and_refused_logins(metered):
    gateway, port = metered
    db = (("resource", DBNAME),)
    before = _scrape(port)
    assert before[("hoopctl_gateway_sessions", db)] == 0
    assert before[("hoopctl_gateway_recording_up", ())] == 1

    with psycopg.connect(gateway.dsn(gateway.token()), autocommit=True, connect_timeout=5) as conn:
        assert len(conn.execute("SELECT id, email FROM metered").fetchall()) == 2
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM metered")
        live = _scrape(port)
        assert live[("hoopctl_gateway_sessions", db)] == 1
        assert live[("hoopctl_gateway_statements_total", (*db, ("verdict", "allowed")))] == 1
        assert live[("hoopctl_gateway_statements_total", (*db, ("verdict", "refused")))] == 1
        assert live[("hoopctl_gateway_masked_values_total", db)] == 2
        assert live[("hoopctl_gateway_catalog_up", db)] == 1

    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(gateway.dsn(gateway.token()[:-4] + "AAAA"), connect_timeout=5).close()

    after = _scrape(port)  # the ended session's counts are kept
    assert after[("hoopctl_gateway_sessions", db)] == 0
    assert after[("hoopctl_gateway_sessions_total", db)] == 1
    assert after[("hoopctl_gateway_statements_total", (*db, ("verdict", "allowed")))] == 1
    assert after[("hoopctl_gateway_statements_total", (*db, ("verdict", "refused")))] == 1
    assert after[("hoopctl_gateway_masked_values_total", db)] == 2
    assert after[("hoopctl_gateway_logins_refused_total", (("sqlstate", "28P01"),))] == 1


def test_statement_durations_are_a_histogram(metered):
    gateway, port = metered
    db = (("resource", DBNAME),)
    with psycopg.connect(gateway.dsn(gateway.token()), autocommit=True, connect_timeout=5) as conn:
        for _ in range(3):
            conn.execute("SELECT 1").fetchone()
        conn.execute("SELECT pg_sleep(0.3)").fetchone()
    m = _scrape(port)

    def bucket(le: str) -> float:
        return m[("hoopctl_gateway_statement_seconds_bucket", (("le", le), *db))]

    assert m[("hoopctl_gateway_statement_seconds_count", db)] == 4
    assert bucket("0.1") == 3 and bucket("0.25") == 3  # the sleep is in neither
    assert bucket("0.5") == 4 and bucket("+Inf") == 4
    assert 0.3 <= m[("hoopctl_gateway_statement_seconds_sum", db)] < 1.0


def test_metrics_listen_is_read_from_the_config_and_checked(tmp_path):
    on = "# metrics:\n#   listen: 127.0.0.1:9187"
    assert on in EXAMPLE.read_text()
    assert load_config(localised(tmp_path)).metrics_listen is None  # off unless asked for
    cfg = load_config(localised(tmp_path, lambda t: t.replace(on, "metrics:\n  listen: 127.0.0.1:9187")))
    assert cfg.metrics_listen == ("127.0.0.1", 9187)
    with pytest.raises(ConfigError, match="metrics.listen"):
        load_config(localised(tmp_path, lambda t: t.replace(on, "metrics:\n  listen: nowhere")))


# Found by review: a scrape racing a session's end, masked values of a statement cut short,
# and the rest of a pipeline after a refusal.


def _values(gw):
    out = {}
    for fam in GatewayCollector(gw).collect():
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


@pytest.fixture
def big_table(base_config, gw_db, tmp_path):
    gw_db.psql(
        "DROP TABLE IF EXISTS metered_big; CREATE TABLE metered_big (id int, email text);"
        "INSERT INTO metered_big SELECT g, 'user' || g || '@example.com' FROM generate_series(1, 20000) g",
        DBNAME,
    )
    config = replace(
        base_config,
        masking=MaskingRules.from_config([{"column": "*email*", "style": "partial"}]),
        recordings_dir=tmp_path / "rec",
    )
    handle = _run_gateway(config, TokenAuthority(load_key(base_config.token_key_file)), gw_db)
    yield handle
    _stop(handle)
    gw_db.psql("DROP TABLE IF EXISTS metered_big", DBNAME)


ALLOWED = ("hoopctl_gateway_statements_total", (("resource", DBNAME), ("verdict", "allowed")))
MASKED = ("hoopctl_gateway_masked_values_total", (("resource", DBNAME),))


def test_a_session_ending_during_a_scrape_is_counted_once(big_table):
    gw = big_table.gateway
    conn = psycopg.connect(big_table.dsn(big_table.token()), autocommit=True, connect_timeout=5)
    for _ in range(3):
        conn.execute("SELECT 1")
    assert _values(gw)[ALLOWED] == 3

    class EndsWhileCopied(set):
        """The loop ends the session right after the scrape thread copied the live sessions."""

        def __iter__(self):
            items = list(set.__iter__(self))
            conn.close()
            deadline = time.monotonic() + 5
            while self and time.monotonic() < deadline:  # folded into Stats on the loop
                time.sleep(0.01)
            return iter(items)

    gw.sessions = EndsWhileCopied(gw.sessions)
    racy = _values(gw)[ALLOWED]
    gw.sessions = set(gw.sessions)
    after = _values(gw)[ALLOWED]
    assert (racy, after) == (3, 3), f"counter went {racy} then {after} (a decrease reads as a reset)"


def test_masked_values_of_a_statement_cut_by_the_session_end_are_counted(big_table):
    gw = big_table.gateway
    conn = psycopg.connect(big_table.dsn(big_table.token()), autocommit=True, connect_timeout=5)
    conn.execute("SELECT email FROM metered_big WHERE id = 1").fetchall()
    base = _values(gw)[MASKED]
    assert base == 1

    def long_query():
        try:
            conn.execute(
                "SELECT email, CASE WHEN id = 20000 THEN pg_sleep(10) END FROM metered_big"
            ).fetchall()
        except psycopg.Error:
            pass

    t = threading.Thread(target=long_query)
    t.start()
    (session,) = list(gw.sessions)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        pending = list(session._pending)
        if pending and getattr(pending[0], "masked", 0) > 1000:
            break
        time.sleep(0.02)
    cut = pending[0].masked
    assert cut > 1000  # these values were masked and sent to the client
    big_table.loop.call_soon_threadsafe(session.fatal, "57P01", "shutting down")
    t.join(15)
    time.sleep(0.2)
    assert not gw.sessions
    assert _values(gw)[MASKED] >= base + cut, f"masked {cut} values, counted {_values(gw)[MASKED] - base}"


def test_an_extended_protocol_refusal_counts_once(big_table):
    gw = big_table.gateway
    conn = psycopg.connect(big_table.dsn(big_table.token()), autocommit=True, connect_timeout=5)
    before = _values(gw)
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("DELETE FROM metered_big WHERE id = %s", (1,))
    after = _values(gw)
    refused = ("hoopctl_gateway_statements_total", (("resource", DBNAME), ("verdict", "refused")))
    d_ref, d_all = after[refused] - before[refused], after[ALLOWED] - before[ALLOWED]
    assert (d_ref, d_all) == (1, 0), f"one refused extended statement counted refused={d_ref} allowed={d_all}"
