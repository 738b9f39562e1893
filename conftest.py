"""Shared pytest fixtures. The suite runs on SQLite and, in the same `make test`, on PostgreSQL.

Every test runs on a pinned clock (`_pinned_clock`), so no test depends on the day it is run.
"""

import datetime as dt

import pytest
import time_machine
from django.db import connection

# The instant every test starts at, unless it says otherwise with `@pytest.mark.clock(...)`. An
# ordinary Monday morning in Nairobi; scenario tests travel from here (or from their own marker).
PINNED_NOW = dt.datetime(2026, 12, 7, 6, 0, tzinfo=dt.UTC)


def pytest_collection_modifyitems(config, items):
    from django.conf import settings

    on_postgres = settings.DATABASES["default"]["ENGINE"].endswith("postgresql")
    skip = pytest.mark.skip(reason="needs PostgreSQL (run by `make test` when a server is reachable)")
    for item in items:
        if "postgres_only" in item.keywords and not on_postgres:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _pinned_clock(request):
    """Start every test at a fixed instant, with the clock ticking from there.

    `@pytest.mark.clock(instant)` (an aware datetime) picks another start; `@pytest.mark.wall_clock`
    leaves the real clock for tests whose other processes (FreeRADIUS, a `wavu worker` subprocess)
    read the real time: such a test must compute every instant from `clock.now()`. `make test` runs
    part of the suite with the machine's clock moved (faketime, in .ci/run) to keep both kinds honest.
    """
    if request.node.get_closest_marker("wall_clock"):
        yield
        return
    marker = request.node.get_closest_marker("clock")
    instant = marker.args[0] if marker else PINNED_NOW
    with time_machine.travel(instant, tick=True):
        yield


@pytest.fixture(scope="session", autouse=True)
def _flush_lifts_row_protections():
    """A transactional test ends with Django's flush, which empties every table with DELETE on SQLite
    (TRUNCATE on PostgreSQL, which row triggers do not see). The append-only triggers (the journal,
    payments, the audit trail) refuse those DELETEs, so the flush lifts them and puts them back."""
    from django.db import connections

    from wavu.core.db import drop_row_protections, install_row_protections

    if connections["default"].vendor != "sqlite":
        yield
        return
    operations = type(connections["default"].ops)
    original = operations.execute_sql_flush

    def execute_sql_flush(self, sql_list):
        drop_row_protections(self.connection.alias)
        try:
            original(self, sql_list)
        finally:
            install_row_protections(self.connection.alias)

    operations.execute_sql_flush = execute_sql_flush
    yield
    operations.execute_sql_flush = original


@pytest.fixture
def reference_data(db):
    """Tax rates and the chart of accounts (data migrations' rows vanish in transactional tests)."""
    from wavu.core.reference_data import install_tax_rates
    from wavu.ledger.services import install_chart_of_accounts

    install_tax_rates()
    install_chart_of_accounts()


@pytest.fixture
def vendor():
    return connection.vendor


@pytest.fixture(autouse=True)
def _fresh_channel_cache():
    """Each test starts without the M-Pesa channels a previous test's hook requests cached."""
    from wavu.mpesa.selectors import forget_cached_channels

    forget_cached_channels()
    yield


@pytest.fixture(scope="session")
def django_db_modify_db_settings(tmp_path_factory):
    """On SQLite the test database is a file, not Django's default shared in-memory connection: tests
    with a live server (the M-Pesa end-to-end tests, where the simulator calls Wavu's hooks while the
    test's worker drains them) then give each thread its own connection, which SQLite serialises as in
    production. On the shared in-memory connection two threads' statements collided ("cannot commit
    transaction - SQL statements in progress")."""
    from django.conf import settings

    database = settings.DATABASES["default"]
    if database["ENGINE"].endswith("sqlite3"):
        database.setdefault("TEST", {})["NAME"] = str(tmp_path_factory.mktemp("db") / "wavu-test.sqlite3")
