"""Races on PostgreSQL: two clerks opening services for the same customer at the same moment."""

from decimal import Decimal

import pytest

from wavu.customers import services as customers
from wavu.subscriptions import services
from wavu.subscriptions.models import Subscription
from wavu.testing.concurrency import race
from wavu.testing.factories import PlanFactory

pytestmark = [pytest.mark.postgres_only, pytest.mark.django_db(transaction=True)]


def test_services_opened_at_the_same_moment_get_different_usernames(reference_data):
    customer = customers.create_customer(name="Wanjiku Kamau", phone="0712345678")
    plan = PlanFactory(with_price=Decimal("2500"))

    results, errors = race(6, lambda: services.create_subscription(customer, plan).username)

    assert errors == []
    assert len(set(results)) == 6
    assert set(results) == set(Subscription.objects.values_list("username", flat=True))
    assert customer.account_number in results


def test_a_status_change_raced_by_two_clerks_happens_once(reference_data):
    customer = customers.create_customer(name="Wanjiku Kamau", phone="0712345678")
    subscription = services.create_subscription(customer, PlanFactory(with_price=Decimal("2500")))
    services.activate(subscription)

    def suspend():
        return services.suspend(Subscription.objects.get(pk=subscription.pk), reason="overdue").status

    results, errors = race(4, suspend)

    assert results == ["suspended"]
    assert len(errors) == 3 and all(isinstance(e, services.InvalidTransition) for e in errors)
    assert subscription.events.filter(kind="suspended").count() == 1
