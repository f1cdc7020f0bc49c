"""The Prometheus endpoint: numbers that follow what real clients did through the gateway."""

from __future__ import annotations

import urllib.request
from dataclasses import replace

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from hoopctl.access.tokens import TokenAuthority, load_key
from hoopctl.config import ConfigError
from hoopctl.gateway.config import EXAMPLE, load_config
from hoopctl.gateway.masking import MaskingRules
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


def test_metrics_listen_is_read_from_the_config_and_checked(tmp_path):
    on = "# metrics:\n#   listen: 127.0.0.1:9187"
    assert on in EXAMPLE.read_text()
    assert load_config(localised(tmp_path)).metrics_listen is None  # off unless asked for
    cfg = load_config(localised(tmp_path, lambda t: t.replace(on, "metrics:\n  listen: 127.0.0.1:9187")))
    assert cfg.metrics_listen == ("127.0.0.1", 9187)
    with pytest.raises(ConfigError, match="metrics.listen"):
        load_config(localised(tmp_path, lambda t: t.replace(on, "metrics:\n  listen: nowhere")))
