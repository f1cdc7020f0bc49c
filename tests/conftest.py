"""Shared fixtures: a real PostgreSQL for the whole run, and the root marker."""

from __future__ import annotations

import os

import pytest

from hoopctl.localpg import LocalPostgres, PostgresUnavailable


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root (CI runs as root)")
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL cluster, started once per test run.

    Its directory is its own mkdtemp, not pytest's numbered tmp dirs, which a
    concurrent pytest run may prune while this cluster is still running."""
    try:
        pg = LocalPostgres.start()
    except PostgresUnavailable as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(str(exc))
    try:
        yield pg
    finally:
        pg.stop()
