"""When the gateway's own catalog lookups fail, masking fails closed and the session goes on."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import psycopg
import pytest

from hoopctl.access.tokens import TokenAuthority, load_key
from hoopctl.gateway.catalog import Catalog
from hoopctl.gateway.masking import MaskingRules
from hoopctl.gateway.upstream import UpstreamError
from tests.gateway.conftest import DBNAME, _run_gateway, _stop

TABLE = "catalog_outage"


@pytest.fixture
def gateway(base_config, gw_db, tmp_path):
    gw_db.psql(
        f"DROP TABLE IF EXISTS {TABLE}; CREATE TABLE {TABLE} (id int, email text);"
        f"INSERT INTO {TABLE} VALUES (1, 'ann@example.com')",
        DBNAME,
    )
    rules = MaskingRules.from_config({"rules": [{"column": "*email*", "style": "partial"}]})
    config = replace(base_config, masking=rules, recordings_dir=tmp_path / "rec")
    handle = _run_gateway(config, TokenAuthority(load_key(base_config.token_key_file)), gw_db)
    yield handle
    _stop(handle)
    gw_db.psql(f"DROP TABLE IF EXISTS {TABLE}", DBNAME)


def test_an_unreachable_catalog_withholds_rows_without_spinning(gateway):
    lookups = []

    async def unreachable(sql: str):
        lookups.append(sql)
        raise UpstreamError("sorry, too many clients already")

    with psycopg.connect(gateway.dsn(gateway.token()), autocommit=True, connect_timeout=5) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        catalog = gateway.gateway._catalogs[DBNAME]
        real_query, catalog._query = catalog._query, unreachable
        started = time.monotonic()
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="catalog"):
            conn.execute(f"SELECT id, email AS contact FROM {TABLE}").fetchall()
        assert time.monotonic() - started < 2 and len(lookups) == 1  # one try, then backoff
        with pytest.raises(psycopg.errors.InsufficientPrivilege):  # still down: no new lookup
            conn.execute(f"SELECT email AS contact FROM {TABLE}").fetchall()
        assert len(lookups) == 1
        assert conn.execute("SELECT 2").fetchone() == (2,)  # the session itself carries on

        catalog._query = real_query
        catalog._down_until = 0.0  # the backoff is over
        rows = conn.execute(f"SELECT id, email AS contact FROM {TABLE}").fetchall()
        assert rows == [(1, "a***@example.com")]  # the alias is seen through again


@pytest.fixture
def field_rule_gateway(base_config, gw_db, tmp_path):
    gw_db.psql(
        "DROP TABLE IF EXISTS staging, customers_renamed; CREATE TABLE staging (id int, note text)", DBNAME
    )
    gw_db.psql("INSERT INTO staging VALUES (1, 'call me at 555 0100')", DBNAME)
    rules = MaskingRules.from_config([{"field": f"{DBNAME}.public.customers_renamed.note", "style": "full"}])
    config = replace(base_config, masking=rules, recordings_dir=tmp_path / "rec")
    handle = _run_gateway(config, TokenAuthority(load_key(base_config.token_key_file)), gw_db)
    yield handle
    _stop(handle)
    gw_db.psql("DROP TABLE IF EXISTS staging, customers_renamed", DBNAME)


def test_a_table_renamed_to_a_protected_name_is_masked_once_the_cache_expires(field_rule_gateway, gw_db):
    gateway = field_rule_gateway
    with psycopg.connect(gateway.dsn(gateway.token()), autocommit=True, connect_timeout=5) as conn:
        assert conn.execute("SELECT note FROM staging").fetchone() == ("call me at 555 0100",)
        gw_db.psql("ALTER TABLE staging RENAME TO customers_renamed", DBNAME)
        gateway.gateway._catalogs[DBNAME]._expires = 0.0  # the minute is over
        assert conn.execute("SELECT note FROM customers_renamed").fetchone() != ("call me at 555 0100",)


def test_names_looked_up_before_a_forget_are_not_kept_after_it(base_config, gw_db):
    gw_db.psql("DROP TABLE IF EXISTS plain_t, secret_t; CREATE TABLE plain_t (email text)", DBNAME)

    async def scenario():
        cat = Catalog(base_config.resources[DBNAME])
        rows = await cat._query("SELECT 'plain_t'::regclass::oid::int8, 'x'")
        table = int(rows[0][0])
        looked_up = asyncio.Event()
        go_on = asyncio.Event()
        real = cat._query

        async def slow_query(sql):
            out = await real(sql)
            looked_up.set()
            await go_on.wait()  # the reply is on its way back (network latency)
            return out

        cat._query = slow_query
        task = asyncio.ensure_future(cat.resolve([table]))
        await looked_up.wait()
        # Meanwhile: the table is renamed and the minute ends (another session's plan() forgets).
        cat._query = real
        await cat._query("ALTER TABLE plain_t RENAME TO secret_t")
        cat.forget()
        go_on.set()
        await task
        name = cat.name(table)
        cat.close()
        return name, cat.stale()

    name, stale = asyncio.run(scenario())
    gw_db.psql("DROP TABLE IF EXISTS plain_t, secret_t", DBNAME)
    assert name != "public.plain_t", (
        f"after forget() the catalog still says {name!r} (stale={stale}) for a minute"
    )
