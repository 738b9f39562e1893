"""Catalog reads: which price applies at a moment. Issued invoices store the price they used."""

from __future__ import annotations

import datetime as dt

from dateutil.relativedelta import relativedelta
from django.db.models import OuterRef, Subquery
from django.utils import timezone

from wavu.core import clock
from wavu.core.errors import DomainError
from wavu.core.money import Money

from .models import AddOn, AddOnPrice, Plan, PlanPrice


class NoPrice(DomainError):
    code = "no_price"


def plan_price(plan: Plan, at: dt.datetime) -> Money:
    """The tax-inclusive price of `plan` in force at `at` (the latest version started by then)."""
    row = PlanPrice.objects.filter(plan=plan, valid_from__lte=at).order_by("-valid_from").first()
    if row is None:
        raise NoPrice(f"plan {plan} has no price in force on {at:%Y-%m-%d}")
    return Money.of(row.amount, row.currency)


def addon_price(addon: AddOn, at: dt.datetime) -> Money:
    """The tax-inclusive price of `addon` in force at `at`."""
    row = AddOnPrice.objects.filter(addon=addon, valid_from__lte=at).order_by("-valid_from").first()
    if row is None:
        raise NoPrice(f"add-on {addon} has no price in force on {at:%Y-%m-%d}")
    return Money.of(row.amount, row.currency)


def add_validity(start: dt.datetime, unit: str, count: int) -> dt.datetime:
    """`start` plus `count` validity units. Minutes and hours are elapsed time; days and calendar
    months are counted on the ISP's local calendar, keeping the time of day. A month added to a
    day the next month lacks lands on that month's last day (31 Jan + 1 month = 28/29 Feb)."""
    if unit == Plan.ValidityUnit.MINUTE:
        return start + dt.timedelta(minutes=count)
    if unit == Plan.ValidityUnit.HOUR:
        return start + dt.timedelta(hours=count)
    local = clock.local(start) if timezone.is_aware(start) else start
    if unit == Plan.ValidityUnit.DAY:
        end = local + relativedelta(days=count)
    elif unit == Plan.ValidityUnit.MONTH:
        end = local + relativedelta(months=count)
    else:
        raise ValueError(f"unknown validity unit {unit!r}")
    return end  # zoneinfo works out the offset of the new wall-clock time


def plan_validity_end(plan: Plan, start: dt.datetime) -> dt.datetime:
    """When a period of `plan` that starts at `start` ends (prepaid/hotspot expiry)."""
    return add_validity(start, plan.validity_unit, plan.validity_count)


def with_current_price(queryset=None, at: dt.datetime | None = None):
    """Plans annotated with `current_price` and `current_price_currency` in force at `at` (default now)
    in one query; None when a plan has no price yet."""
    at = at or clock.now()
    latest = PlanPrice.objects.filter(plan=OuterRef("pk"), valid_from__lte=at).order_by("-valid_from")
    qs = Plan.objects.all() if queryset is None else queryset
    return qs.annotate(
        current_price=Subquery(latest.values("amount")[:1]),
        current_price_currency=Subquery(latest.values("currency")[:1]),
    )


def addons_with_current_price(queryset=None, at: dt.datetime | None = None):
    """Add-ons annotated like `with_current_price`."""
    at = at or clock.now()
    latest = AddOnPrice.objects.filter(addon=OuterRef("pk"), valid_from__lte=at).order_by("-valid_from")
    qs = AddOn.objects.all() if queryset is None else queryset
    return qs.annotate(
        current_price=Subquery(latest.values("amount")[:1]),
        current_price_currency=Subquery(latest.values("currency")[:1]),
    )


def portal_plans():
    """Active plans sold on the captive/self-service portal, cheapest first."""
    return with_current_price(Plan.objects.filter(is_active=True, sold_on_portal=True)).order_by(
        "current_price", "name"
    )


class PriceBook:
    """Every price version of the given plans and add-ons, read once, answering `plan_price` and
    `addon_price` in memory: for set-based writers (billing runs) that price thousands of services.
    Same answers as the functions of the same names."""

    def __init__(self, plan_ids, addon_ids=()):
        self._plans: dict[int, list[tuple[dt.datetime, Money]]] = {}
        self._addons: dict[int, list[tuple[dt.datetime, Money]]] = {}
        rows = PlanPrice.objects.filter(plan_id__in=set(plan_ids)).order_by("-valid_from")
        for plan_id, valid_from, amount, currency in rows.values_list("plan_id", "valid_from", "amount", "currency"):
            self._plans.setdefault(plan_id, []).append((valid_from, Money.of(amount, currency)))
        rows = AddOnPrice.objects.filter(addon_id__in=set(addon_ids)).order_by("-valid_from")
        for addon_id, valid_from, amount, currency in rows.values_list("addon_id", "valid_from", "amount", "currency"):
            self._addons.setdefault(addon_id, []).append((valid_from, Money.of(amount, currency)))

    @staticmethod
    def _lookup(versions, at: dt.datetime, what: str) -> Money:
        for valid_from, price in versions or ():
            if valid_from <= at:
                return price
        raise NoPrice(f"{what} has no price in force on {at:%Y-%m-%d}")

    def plan_price(self, plan: Plan, at: dt.datetime) -> Money:
        return self._lookup(self._plans.get(plan.pk), at, f"plan {plan}")

    def addon_price(self, addon: AddOn, at: dt.datetime) -> Money:
        return self._lookup(self._addons.get(addon.pk), at, f"add-on {addon}")
