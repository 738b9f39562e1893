"""Catalog reads: which price applies at a moment. Issued invoices store the price they used."""

from __future__ import annotations

import datetime as dt

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
