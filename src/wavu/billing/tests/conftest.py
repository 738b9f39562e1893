"""Set-up for billing tests: a home-fibre subscriber on a KES 2,999 plan, in December 2026."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
import time_machine
from django.utils import timezone

from wavu.catalog.models import AddOn
from wavu.subscriptions.models import SubscriptionAddOn
from wavu.testing.factories import AddOnFactory, CustomerFactory, PlanFactory, SubscriptionFactory

NAIROBI_MORNING = dt.time(9, 30)


def at(day: dt.date, time: dt.time = NAIROBI_MORNING) -> dt.datetime:
    """An aware datetime on `day` in the ISP's time zone."""
    return timezone.make_aware(dt.datetime.combine(day, time))


@pytest.fixture
def december():
    """The clock stands on 1 Dec 2026, 09:30 in Nairobi."""
    with time_machine.travel(at(dt.date(2026, 12, 1)), tick=False) as traveller:
        yield traveller


@pytest.fixture
def customer(db):
    return CustomerFactory(
        name="Wanjiku Kamau",
        kra_pin="A012345678Z",
        address="Kileleshwa, Othaya Rd, Hse 4",
        town="Nairobi",
        county="Nairobi",
    )


@pytest.fixture
def plan(db):
    return PlanFactory(name="Home Fibre 20 Mbps", with_price=Decimal("2999.00"))


@pytest.fixture
def subscription(customer, plan):
    return SubscriptionFactory(customer=customer, plan=plan)


def attach_addon(
    subscription,
    *,
    name="Static IP",
    billing=AddOn.Billing.RECURRING,
    price="500.00",
    tax_class=None,
    quantity=1,
    started_at=None,
    ended_at=None,
    category=AddOn.Category.STATIC_IP,
):
    addon = AddOnFactory(
        name=name,
        billing=billing,
        category=category,
        with_price=Decimal(price),
        **({"tax_class": tax_class} if tax_class else {}),
    )
    return SubscriptionAddOn.objects.create(
        subscription=subscription,
        addon=addon,
        quantity=quantity,
        started_at=started_at or at(dt.date(2026, 11, 1)),
        ended_at=ended_at,
    )
