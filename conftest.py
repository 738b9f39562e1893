"""Shared pytest fixtures. The suite runs on SQLite and, in the same `make test`, on PostgreSQL."""

import pytest
from django.db import connection


def pytest_collection_modifyitems(config, items):
    from django.conf import settings

    on_postgres = settings.DATABASES["default"]["ENGINE"].endswith("postgresql")
    skip = pytest.mark.skip(reason="needs PostgreSQL (run by `make test` when a server is reachable)")
    for item in items:
        if "postgres_only" in item.keywords and not on_postgres:
            item.add_marker(skip)


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
