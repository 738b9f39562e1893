"""Plan changes with proration: upgrades take effect now, downgrades at the end of the period.

`change_plan(subscription, new_plan, when=...)` decides when a change takes effect and what it
costs, then does all of it in one transaction:

- **When.** An upgrade (the new plan's price at `at` is higher than the old plan's price for the
  current period) takes effect at once. A downgrade, or a plan at the same price, waits for the
  end of the current period: `subscriptions.services.schedule_plan_change` sets `pending_plan`,
  which the billing run / prepaid renewal applies (`apply_pending_plan`) before billing the next
  period. Staff may force either: `when="now"` prorates at once, `when="period_end"` schedules.
  A service not in use (pending, expired) has nothing to prorate and simply switches.
- **What it costs.** Remaining time `r` = current period end − `at`, in seconds. The part of the
  old plan already billed for the time after `at` comes back as a **credit note** on the invoice
  that billed it, for the old plan's line: `line gross × r / seconds the line billed`, rounded
  once. The new plan for the rest of the period is charged on a **new invoice** with one
  PRORATION line [at, period end): `new price × r / seconds of the period`, rounded once. For the
  usual case (the period invoice's subscription line billed the whole period) this is exactly
  credit = old gross × fraction and charge = new price × fraction, fraction = r / period seconds.
  The billed line is the latest line of the old plan in the current period (the period invoice's
  SUBSCRIPTION line, or the PRORATION line of an earlier change), so a second change in one
  period credits what the first one charged.
- **Why a credit note and not a negative line.** KRA eTIMS accepts no negative invoice lines, and a
  credit note must reference the invoice it corrects; so the unused part of the old plan is a
  credit note line against the old plan's invoice line (at the tax rates that line charged), and
  the new plan is a normal, positive invoice.
- **Money already paid.** The credit note releases payments that had paid the old invoice into
  customer credit (`issue_credit_note`); issuing the proration invoice applies that credit to it
  (`issue_invoice`). A KES 3,000 plan paid in full, upgraded to KES 4,500 with 20 of 30 days
  left: credit note 2,000.00, proration invoice 3,000.00, 1,000.00 left to pay.
- **Never billed yet.** When no issued invoice billed the old plan for the current period: a
  postpaid period still waiting for the billing run (`next_bill_at` ≤ period start) is billed by
  that run on the new plan, so nothing is invoiced now; otherwise (e.g. a prepaid period given
  without an invoice) there is no credit and only the charge.

Locks, in the house order: the customer row, then the subscription row, then (inside
`issue_credit_note` / `issue_invoice`) the invoice rows and the number counters. A refusal
writes nothing: every check runs before the first write and all writes share one transaction.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

from django.core.exceptions import ValidationError
from django.db import transaction

from wavu.catalog.models import Plan
from wavu.catalog.selectors import NoPrice, plan_price
from wavu.core import clock
from wavu.core.errors import NotAllowed
from wavu.core.money import quantum
from wavu.customers.services import lock_accounts
from wavu.subscriptions import services as subscriptions
from wavu.subscriptions.models import Status, Subscription

from . import services
from .models import CreditNote, CreditNoteLine, Invoice, InvoiceLine

UPGRADE, DOWNGRADE = "upgrade", "downgrade"
WHEN_CHOICES = ("auto", "now", "period_end")


class NoCurrentPeriod(NotAllowed):
    code = "no_current_period"


class PausedService(NotAllowed):
    code = "subscription_paused"


class ValidityMismatch(NotAllowed):
    code = "plan_validity_mismatch"


@dataclass(frozen=True)
class PlanChangeQuote:
    """What a plan change would do, computed without writing (`quote_plan_change`)."""

    kind: str  # "upgrade" or "downgrade" (a plan at the same price counts as a downgrade: it waits)
    effective_at: dt.datetime
    scheduled: bool
    prorated: bool
    credit: Decimal  # the credit note's amount (0: none)
    charge: Decimal  # the proration invoice's amount (0: none)
    credited_line: InvoiceLine | None
    old_price: Decimal
    new_price: Decimal


@dataclass(frozen=True)
class PlanChangeResult:
    """What `change_plan` did."""

    kind: str
    effective_at: dt.datetime
    credit_note: CreditNote | None
    invoice: Invoice | None
    scheduled: bool
    credit: Decimal = Decimal("0.00")
    charge: Decimal = Decimal("0.00")


def _round_once(value: Fraction, currency: str) -> Decimal:
    """An exact non-negative fraction of money, rounded half-up to the currency's minor unit: the
    single rounding of a proration."""
    cent = quantum(currency)
    units = math.floor(value / Fraction(cent) + Fraction(1, 2))
    return (Decimal(units) * cent).quantize(cent)


def _seconds(delta: dt.timedelta) -> Fraction:
    return Fraction(delta.days * 86_400 + delta.seconds) + Fraction(delta.microseconds, 1_000_000)


def _billed_line(sub: Subscription, plan: Plan, at: dt.datetime) -> InvoiceLine | None:
    """The issued invoice line that billed `plan` for the time `at` falls in, within the current
    period: the period invoice's SUBSCRIPTION line or a later PRORATION line, the latest first."""
    return (
        InvoiceLine.objects.filter(
            subscription=sub,
            plan=plan,
            kind__in=(InvoiceLine.Kind.SUBSCRIPTION, InvoiceLine.Kind.PRORATION),
            period_start__gte=sub.current_period_start,
            period_start__lte=at,
            period_end__isnull=False,
        )
        .exclude(invoice__status=Invoice.Status.DRAFT)
        .select_related("invoice")
        .order_by("-period_start", "-pk")
        .first()
    )


def _left_on_line(line: InvoiceLine) -> Decimal:
    credited = sum(CreditNoteLine.objects.filter(invoice_line=line).values_list("gross", flat=True), Decimal(0))
    return line.gross - credited


def _quote(sub: Subscription, new_plan: Plan, when: str, at: dt.datetime) -> PlanChangeQuote:
    """Every check and every figure of a plan change, without writing (callers may hold locks)."""
    if when not in WHEN_CHOICES:
        raise ValidationError(
            {"when": [ValidationError(f"when is one of {', '.join(WHEN_CHOICES)}, not {when!r}.", code="when_invalid")]}
        )
    if not isinstance(at, dt.datetime) or at.tzinfo is None:
        raise ValidationError({"at": [ValidationError("Give a date and time with a time zone.", code="at_invalid")]})
    subscriptions.validate_plan_switch(sub, new_plan, at=at)
    old_plan = sub.plan
    start, end = sub.current_period_start, sub.current_period_end
    new_price = plan_price(new_plan, at)
    try:
        old_price = plan_price(old_plan, start if start is not None and start <= at else at)
    except NoPrice:
        old_price = plan_price(old_plan, at)
    currency = new_price.currency
    kind = UPGRADE if new_price.amount > old_price.amount else DOWNGRADE
    zero = Decimal(0).quantize(quantum(currency))

    def plain(effective_at, *, scheduled=False):
        return PlanChangeQuote(kind, effective_at, scheduled, False, zero, zero, None, old_price.amount,
                               new_price.amount)  # fmt: skip

    if sub.status in (Status.PENDING, Status.EXPIRED):
        return plain(at)  # not in use: nothing to prorate, nothing to wait for
    immediate = when == "now" or (when == "auto" and kind == UPGRADE)
    if not immediate:
        if end is None:
            raise NoCurrentPeriod(
                f"Service {sub.username} has no current period to end: change its plan now instead.",
                fields={"when": ["no current period"]},
            )
        return plain(end, scheduled=True)
    if sub.status == Status.PAUSED:
        raise PausedService(
            f"Service {sub.username} is paused: resume it first, or schedule the change for the end of its period.",
            fields={"when": ["the service is paused"]},
        )
    if start is None or end is None or not start <= at < end:
        raise NoCurrentPeriod(
            f"Service {sub.username} has no current period at {clock.local(at):%Y-%m-%d %H:%M}: nothing to prorate.",
            fields={"when": ["no current period"]},
        )
    if (old_plan.validity_unit, old_plan.validity_count) != (new_plan.validity_unit, new_plan.validity_count):
        raise ValidityMismatch(
            f"{old_plan} and {new_plan} run for periods of different lengths, which cannot be prorated: "
            "schedule the change for the end of the period.",
            fields={"plan": ["another period length"]},
        )
    remaining = _seconds(end - at)
    line = _billed_line(sub, old_plan, at)
    if line is None:
        waiting_for_run = (
            old_plan.kind == Plan.Kind.POSTPAID and sub.next_bill_at is not None and sub.next_bill_at <= start
        )
        if waiting_for_run:
            return PlanChangeQuote(kind, at, False, False, zero, zero, None, old_price.amount, new_price.amount)
        charge = _round_once(Fraction(new_price.amount) * remaining / _seconds(end - start), currency)
        return PlanChangeQuote(kind, at, False, True, zero, charge, None, old_price.amount, new_price.amount)
    span = _seconds(line.period_end - line.period_start)
    used_span = min(remaining, span)
    credit = min(_round_once(Fraction(line.gross) * used_span / span, currency), _left_on_line(line))
    if old_price.amount > 0:
        # The line's own rate (a short first period or an earlier proration bills less than the
        # full price) scaled by the price ratio: new price per second of a full period.
        charge = _round_once(
            Fraction(line.gross) * Fraction(new_price.amount) * used_span / (Fraction(old_price.amount) * span),
            currency,
        )
    else:
        charge = _round_once(Fraction(new_price.amount) * remaining / _seconds(end - start), currency)
    return PlanChangeQuote(kind, at, False, True, max(credit, zero), charge, line, old_price.amount,
                           new_price.amount)  # fmt: skip


def quote_plan_change(
    subscription: Subscription, new_plan: Plan, *, when: str = "auto", at: dt.datetime | None = None
) -> PlanChangeQuote:
    """What `change_plan` would do now (kind, when, credit and charge), with the same checks and
    refusals, writing nothing and taking no locks: for forms and previews."""
    sub = Subscription.objects.select_related("plan").get(pk=subscription.pk)
    return _quote(sub, new_plan, when, at or clock.now())


def _proration_invoice(sub: Subscription, new_plan: Plan, quote: PlanChangeQuote, description: str) -> Invoice:
    start, end = quote.effective_at, sub.current_period_end
    try:
        draft = services.create_draft_invoice(sub.customer, subscription=sub, period_start=start, period_end=end)
    except services.AlreadyInvoiced:
        # Another invoice of this service already starts at this instant (a second change at the
        # same moment, or a change at the very start of the period): the header carries no
        # period, the line still does.
        draft = services.create_draft_invoice(sub.customer, subscription=sub)
    services.add_line(
        draft,
        kind=InvoiceLine.Kind.PRORATION,
        description=description,
        unit_price=quote.charge,
        quantity=1,
        tax_class=new_plan.tax_class,
        period_start=start,
        period_end=end,
        subscription=sub,
        plan=new_plan,
    )
    return services.issue_invoice(draft)


def change_plan(
    subscription: Subscription,
    new_plan: Plan,
    *,
    when: str = "auto",
    at: dt.datetime | None = None,
    reason: str = "",
) -> PlanChangeResult:
    """Move a service to `new_plan`, prorating the current period (see the module docstring).

    `when`: "auto" (an upgrade now, a downgrade or same-price change at the end of the period),
    "now" (staff: prorate at once either way) or "period_end" (schedule). `at` defaults to now.

    Refused, writing nothing: a cancelled service (`subscription_cancelled`), the same plan
    (`same_plan`), a plan no longer sold (`plan_not_available`) or without a price (`no_price`),
    a plan of another kind (`plan_kind_mismatch`: postpaid ↔ prepaid/hotspot is a new service),
    an immediate change on a service without a current period containing `at`
    (`no_current_period`), on a paused service (`subscription_paused`) or between plans with
    different period lengths (`plan_validity_mismatch`), and a bad `when`.

    An immediate change, in one transaction holding the customer then the subscription lock:
    drops a scheduled change (`plan_change_cancelled`), issues the credit note for the unused old
    plan ("Unused <old plan>, <dates>") and the proration invoice ("Upgrade to <new plan>,
    <dates>"), then switches the plan with `subscriptions.services.change_plan`, whose
    `plan_changed` event carries {from_plan, to_plan, prorated, credit, charge, credit_note,
    invoice}. A scheduled change writes `plan_change_scheduled`. Not idempotent for immediate
    changes: the second identical call is refused as `same_plan`; scheduling is idempotent.
    """
    at = at or clock.now()
    with transaction.atomic():
        customer_id = Subscription.objects.values_list("customer_id", flat=True).get(pk=subscription.pk)
        lock_accounts(customer_id)
        sub = (
            Subscription.objects.select_for_update(of=("self",))
            .select_related("plan", "customer")
            .get(pk=subscription.pk)
        )
        quote = _quote(sub, new_plan, when, at)
        if quote.scheduled:
            subscriptions.schedule_plan_change(sub, new_plan, quote.effective_at, reason=reason)
            subscription.refresh_from_db()
            return PlanChangeResult(quote.kind, quote.effective_at, None, None, True)
        if sub.pending_plan_id is not None:
            subscriptions.cancel_scheduled_plan_change(sub, reason=f"replaced by the change to {new_plan.name}")
        note = invoice = None
        data: dict = {"prorated": quote.prorated, "kind": quote.kind}
        if quote.prorated:
            label = services.period_label(at, sub.current_period_end)
            if quote.credit > 0:
                note = services.issue_credit_note(
                    quote.credited_line.invoice,
                    reason=f"Unused {sub.plan.name}, {label}",
                    lines={quote.credited_line.pk: quote.credit},
                )
            if quote.charge > 0:
                if quote.new_price > quote.old_price:
                    verb = "Upgrade"
                elif quote.new_price < quote.old_price:
                    verb = "Downgrade"
                else:
                    verb = "Change"
                invoice = _proration_invoice(sub, new_plan, quote, f"{verb} to {new_plan.name}, {label}")
            data.update(
                credit=str(quote.credit),
                charge=str(quote.charge),
                credit_note=note.number if note else None,
                invoice=invoice.number if invoice else None,
            )
        subscriptions.change_plan(sub, new_plan, reason=reason, at=at, data=data)
    subscription.refresh_from_db()
    return PlanChangeResult(quote.kind, at, note, invoice, False, quote.credit, quote.charge)


__all__ = [
    "DOWNGRADE",
    "UPGRADE",
    "WHEN_CHOICES",
    "NoCurrentPeriod",
    "PausedService",
    "PlanChangeQuote",
    "PlanChangeResult",
    "ValidityMismatch",
    "change_plan",
    "quote_plan_change",
]
