"""Prepaid and hotspot services: buying periods, renewing from account credit at expiry, lapsing.

The rules (issue 3):
- A purchase buys one validity period of the service's plan. It starts at the later of now and the
  current expiry — paying early never loses paid time, paying late never backdates — and ends after
  the plan's validity (`catalog.selectors.plan_validity_end`). An expired or never-started service
  starts now. A period that starts when a scheduled plan change (`pending_plan`) is due is bought
  and invoiced on the new plan; the switch happens at once when the period starts now, and when the
  period was bought early, `process_expiries` switches the plan when `pending_plan_at` comes (the
  time already paid on the old plan keeps the old plan).
- Each purchase is one issued invoice for exactly the period bought (the plan, plus the add-ons
  `billing.services.invoice_subscription_period` bills with a period), paid from the customer's
  unapplied credit when `issue_invoice` applies it. By default a purchase needs that credit to pay
  the invoice in full: otherwise it is refused with `InsufficientCredit` (code insufficient_credit,
  with the shortfall) and nothing is written.
- A payment extends: after money arrives, `apply_credit_to_prepaid` buys periods while the credit
  covers them (a payment of two periods' price extends twice).
- At expiry (`process_expiries`, every minute): renew from credit when auto-renew is on and the
  credit covers the price, otherwise the service expires.
- Hotspot plans start per plan (`Plan.hotspot_starts`): at purchase like any prepaid period, or at
  first login: a package bought for a service with no running time (pending or expired) leaves it
  active with no period; `start_at_first_login` starts the clock on the first login.

Locks, in the order billing and payments use: the customer row (the account's money lock), then the
subscription row; `issue_invoice` then locks the invoice, the payments and the open invoices. The
state that decides (status, expiry, credit) is re-read under these locks, so a double call renews or
expires once. The invoice's unique (subscription, period start) is the last guard against buying the
same period twice.

The event stream: every purchase writes exactly one `activated` (first purchase) or `renewed`
lifecycle event whose data carries the period and the invoice (`invoice`, `invoice_id`, `amount`,
`plan`); a lapse writes `expired` (actor "job:expiry"); a first login writes `period_started`.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from decimal import Decimal

from django.db import transaction

from wavu.catalog.models import AddOn, Plan
from wavu.catalog.selectors import plan_price, plan_validity_end
from wavu.core import audit, clock
from wavu.core.db import copy_field_values
from wavu.core.errors import DomainError, NotAllowed
from wavu.core.models import AuditEvent
from wavu.customers.models import Customer
from wavu.customers.services import lock_accounts
from wavu.ledger.selectors import customer_credit
from wavu.subscriptions import services as subscriptions
from wavu.subscriptions.models import Status, Subscription, SubscriptionAddOn
from wavu.subscriptions.selectors import due_to_expire

from . import services as billing
from .models import Invoice, InvoiceLine
from .selectors import open_invoices

logger = logging.getLogger(__name__)

PREPAID_KINDS = (Plan.Kind.PREPAID, Plan.Kind.HOTSPOT)
EXPIRY_ACTOR = "job:expiry"
# A payment never buys more than this many periods in one call (a runaway guard: 10 years of months).
MAX_PURCHASES_PER_CALL = 120


# --- errors (stable codes for the API) --------------------------------------------------------


class InsufficientCredit(NotAllowed):
    """The customer's unapplied credit does not pay the period in full."""

    code = "insufficient_credit"

    def __init__(self, message: str, *, price: Decimal, available: Decimal, shortfall: Decimal):
        super().__init__(message, fields={"credit": [message]})
        self.price, self.available, self.shortfall = price, available, shortfall


class PurchaseNotAllowed(NotAllowed):
    """The service cannot buy a period: postpaid, suspended, paused, cancelled, or a closed account."""

    code = "purchase_not_allowed"


class PackageNotStarted(NotAllowed):
    """A hotspot package bought earlier is still waiting for its first login."""

    code = "package_not_started"


# --- results ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PurchaseResult:
    """One purchase. `created` is False when the database already held an invoice for this period
    (nothing was written; `invoice` is that earlier invoice). `period_start`/`period_end` are None
    for a hotspot package that starts at first login. `event` is "activated" or "renewed" ("" when
    nothing was bought)."""

    subscription: Subscription
    invoice: Invoice
    period_start: dt.datetime | None
    period_end: dt.datetime | None
    event: str
    created: bool = True


@dataclass
class ExpirySummary:
    """What one `process_expiries` run did. `failed_ids` are services left as they were (logged)."""

    checked: int = 0
    renewed: int = 0
    expired: int = 0
    skipped: int = 0
    plans_switched: int = 0
    failed: int = 0
    failed_ids: list[int] = field(default_factory=list)


# --- reads ------------------------------------------------------------------------------------


def spendable_credit(customer_id: int) -> Decimal:
    """The customer's unapplied credit less what their open invoices still owe: what a new invoice
    can be paid with (`apply_customer_credit` pays the oldest open invoices first)."""
    owed = sum(
        (total - paid - credited)
        for total, paid, credited in open_invoices(customer_id).values_list("total", "amount_paid", "amount_credited")
    )
    return max(customer_credit(customer_id) - owed, Decimal("0.00"))


def _starts_at_first_login(plan: Plan) -> bool:
    return plan.kind == Plan.Kind.HOTSPOT and plan.hotspot_starts == Plan.HotspotStart.FIRST_LOGIN


def _next_start(sub: Subscription, now: dt.datetime) -> dt.datetime:
    """When the next period bought would start: the later of now and the current expiry."""
    if sub.status == Status.ACTIVE and sub.current_period_end is not None:
        return max(now, sub.current_period_end)
    return now


def _plan_at(sub: Subscription, start: dt.datetime) -> Plan:
    """The plan a period starting at `start` is bought on: the pending plan once it is due."""
    if sub.pending_plan_id is not None and (sub.pending_plan_at is None or sub.pending_plan_at <= start):
        return sub.pending_plan
    return sub.plan


# --- locks and small writes -------------------------------------------------------------------


def _lock(subscription_id: int) -> Subscription:
    """Lock the customer row, then the subscription row (the order billing and payments use)."""
    customer_id = Subscription.objects.filter(pk=subscription_id).values_list("customer_id", flat=True).get()
    lock_accounts(customer_id)
    return (
        Subscription.objects.select_for_update(of=("self",))
        .select_related("plan", "pending_plan", "customer")
        .get(pk=subscription_id)
    )


def _write_period(sub: Subscription, start, end, *, verb: str, reason: str) -> None:
    """Set the period columns of a locked subscription (no status change), audited."""
    before = audit.snapshot(sub)
    sub.current_period_start, sub.current_period_end = start, end
    sub.updated_at = clock.now()
    sub.save(update_fields=["current_period_start", "current_period_end", "updated_at"])
    audit.record(sub, AuditEvent.Action.UPDATE, before=before, after=audit.snapshot(sub), verb=verb, reason=reason)


# --- buying a period --------------------------------------------------------------------------


def _check_purchasable(sub: Subscription) -> None:
    if sub.customer.status == Customer.Status.CLOSED:
        raise PurchaseNotAllowed(f"Account {sub.customer.account_number} is closed.")
    if sub.plan.kind not in PREPAID_KINDS:
        raise PurchaseNotAllowed(f"Service {sub.username} is postpaid: it is billed by the billing run, not bought.")
    if sub.status not in (Status.PENDING, Status.ACTIVE, Status.EXPIRED):
        raise PurchaseNotAllowed(
            f"Service {sub.username} is {Status(sub.status).label.lower()}: only a pending, active or expired "
            "service can buy a period."
        )
    if sub.status == Status.ACTIVE and sub.current_period_end is None and _starts_at_first_login(sub.plan):
        raise PackageNotStarted(
            f"Service {sub.username} already has a package waiting for its first login; "
            "buy the next one once it has started."
        )


def _check_credit(sub: Subscription, price: Decimal) -> None:
    available = spendable_credit(sub.customer_id)
    if available < price:
        shortfall = price - available
        raise InsufficientCredit(
            f"{sub.username}: the period costs {price}, the account has {available} in credit; "
            f"pay {shortfall} more to buy it.",
            price=price,
            available=available,
            shortfall=shortfall,
        )


def _invoice_period(sub: Subscription, plan: Plan, start: dt.datetime, end: dt.datetime) -> Invoice:
    """Issue the invoice of the period [start, end) of `plan`: what
    `billing.services.invoice_subscription_period` bills (the plan line, recurring add-ons attached
    during the period, one-off add-ons not billed yet), except that the plan line is the plan the
    period is bought on, which is the pending plan when it takes over by `start`."""
    invoice = billing.create_draft_invoice(sub.customer, subscription=sub, period_start=start, period_end=end)
    billing.add_line(
        invoice,
        kind=InvoiceLine.Kind.SUBSCRIPTION,
        description=f"{plan.name}, {billing.period_label(start, end)}",
        unit_price=plan_price(plan, start),
        tax_class=plan.tax_class,
        period_start=start,
        period_end=end,
        subscription=sub,
        plan=plan,
    )
    attached = SubscriptionAddOn.objects.filter(subscription=sub, started_at__lt=end).select_related("addon")
    for sub_addon in attached.order_by("pk"):
        if sub_addon.addon.billing == AddOn.Billing.ONE_OFF:
            if sub_addon.billed_on_line_id is None:
                billing.add_addon_line(invoice, sub_addon)
        elif sub_addon.ended_at is None or sub_addon.ended_at > start:
            billing.add_addon_line(invoice, sub_addon, start, end)
    return billing.issue_invoice(invoice)


def _invoice_unstarted_package(sub: Subscription, at: dt.datetime) -> Invoice:
    """The invoice of a hotspot package that starts at first login: no period, one plan line."""
    plan = sub.plan
    invoice = billing.create_draft_invoice(sub.customer, subscription=sub)
    billing.add_line(
        invoice,
        kind=InvoiceLine.Kind.SUBSCRIPTION,
        description=f"{plan.name} (starts at first login)",
        unit_price=plan_price(plan, at),
        tax_class=plan.tax_class,
        subscription=sub,
        plan=plan,
    )
    return billing.issue_invoice(invoice)


def _purchase_locked(sub: Subscription, *, at: dt.datetime, reason: str, require_credit: bool) -> PurchaseResult:
    """Buy one period for `sub`, whose customer and subscription rows the caller has locked (see
    `purchase_period`). Raises on refusal; the caller's transaction rolls back what was written."""
    _check_purchasable(sub)
    start = _next_start(sub, at)
    plan = _plan_at(sub, start)
    unstarted = _starts_at_first_login(plan) and sub.status in (Status.PENDING, Status.EXPIRED)
    if require_credit:
        _check_credit(sub, plan_price(plan, start).amount)  # fast refusal before anything is written

    if plan.pk != sub.plan_id and start <= at:
        # the downgrade takes over with this period; bought early (the period starts later), the
        # period is billed on the pending plan and `process_expiries` switches it when it is due
        subscriptions.apply_pending_plan(sub, at=start, reason="scheduled plan change at renewal")
        sub = Subscription.objects.select_related("plan", "pending_plan", "customer").get(pk=sub.pk)
    if unstarted:
        end = None
        invoice = _invoice_unstarted_package(sub, start)
    else:
        end = plan_validity_end(plan, start)
        invoice = _invoice_period(sub, plan, start, end)
    if require_credit and invoice.status != Invoice.Status.PAID:
        # add-ons made it dearer than the plan, or older debts took the credit first: roll back
        raise InsufficientCredit(
            f"{sub.username}: the invoice for the period is {invoice.total}; the account's credit pays only "
            f"{invoice.amount_paid} of it. Pay {invoice.outstanding} more to buy it.",
            price=invoice.total,
            available=invoice.amount_paid,
            shortfall=invoice.outstanding,
        )
    paid_by = {"invoice": invoice.number, "invoice_id": invoice.pk, "amount": str(invoice.total), "plan": plan.code}
    reason = reason or f"bought with invoice {invoice.number}"

    if unstarted:
        # active with no period: the clock starts at the first login (`start_at_first_login`)
        kind = "activated" if sub.status == Status.PENDING else "renewed"
        waits = {"period_start": None, "period_end": None, "starts": "first_login", **paid_by}
        subscriptions.activate(sub, at=start, reason=reason, data=waits)  # pending → activated, expired → renewed
        _write_period(sub, None, None, verb="hotspot_package_waits_for_first_login", reason=reason)
    elif sub.status == Status.PENDING:
        kind = "activated"
        subscriptions.activate(sub, at=start, reason=reason, data=paid_by)  # period [start, validity end)
    else:
        kind = "renewed"
        subscriptions.renew_period(sub, start, end, reason=reason, data=paid_by)
    return PurchaseResult(sub, invoice, None if unstarted else start, end, kind)


def purchase_period(
    subscription: Subscription, *, at: dt.datetime | None = None, reason: str = "", require_credit: bool = True
) -> PurchaseResult:
    """Buy one validity period of the plan for a prepaid or hotspot service (pending, active or expired).

    The period starts at the later of `at` (default now) and the current expiry; an expired or
    never-started service starts at `at`. The period is bought on the pending plan when that is
    due by its start: switched first (`subscriptions.services.apply_pending_plan`) when the period
    starts now, left pending for `process_expiries` to switch when it was bought early. One
    invoice for the period is issued (the plan line, and the add-ons
    `billing.services.invoice_subscription_period` would bill) and the customer's credit pays it
    (`issue_invoice`); the service gets the period (`renew_period`: event `renewed`)
    or, when pending, is activated with it (event `activated`); the event's data names the invoice.
    A hotspot plan that starts at first login, bought for a pending or expired service, makes it
    active with no period and an invoice without a period ("… (starts at first login)").

    With `require_credit` (the default) the purchase happens only if the credit pays the invoice in
    full, otherwise `InsufficientCredit` (code insufficient_credit; `shortfall`). Without it (staff
    granting on account) the invoice may stay open. Refused, writing nothing: a postpaid, suspended,
    paused or cancelled service or a closed account (`PurchaseNotAllowed`), a first-login package
    still waiting (`PackageNotStarted`), a plan without a price (`NoPrice`).

    One transaction holding the customer row lock, then the subscription row lock, re-reading the
    status and expiry under them. Not idempotent by design (each call buys one more period) but
    safe: if the database already holds an invoice for the same period start, nothing is written and
    the result has `created=False` and that invoice.
    """
    at = at or clock.now()
    with transaction.atomic():
        sub = _lock(subscription.pk)
        try:
            with transaction.atomic():
                result = _purchase_locked(sub, at=at, reason=reason, require_credit=require_credit)
        except billing.AlreadyInvoiced as exc:
            existing = Invoice.objects.get(pk=exc.existing_invoice_id)
            result = PurchaseResult(sub, existing, existing.period_start, existing.period_end, "", created=False)
        sub = Subscription.objects.select_related("plan").get(pk=sub.pk)
    copy_field_values(subscription, sub)
    return PurchaseResult(
        subscription, result.invoice, result.period_start, result.period_end, result.event, result.created
    )


# --- first login ------------------------------------------------------------------------------


def start_at_first_login(subscription: Subscription, at: dt.datetime | None = None) -> bool:
    """Start the clock of a hotspot package that waits for its first login: period [at, at + validity).

    Returns True when this call started it. Idempotent: a service that already has a period (a
    second login, a package that starts at purchase), is not active or is not on a first-login
    hotspot plan is left alone and False is returned. Locks the subscription row; writes a
    `period_started` event and an audit row.
    """
    at = at or clock.now()
    with transaction.atomic():
        sub = Subscription.objects.select_for_update(of=("self",)).select_related("plan").get(pk=subscription.pk)
        started = sub.status == Status.ACTIVE and sub.current_period_start is None and _starts_at_first_login(sub.plan)
        if started:
            end = plan_validity_end(sub.plan, at)
            _write_period(sub, at, end, verb="start_at_first_login", reason="first login")
            subscriptions.record_event(
                sub,
                "period_started",
                reason="first login",
                at=at,
                data={"period_start": at.isoformat(), "period_end": end.isoformat()},
            )
    copy_field_values(subscription, sub)
    return started


# --- money arrived ----------------------------------------------------------------------------


def _credit_candidates(customer_id: int, now: dt.datetime) -> list[Subscription]:
    """The customer's services a payment extends, most urgent first: expired ones, then active ones
    with auto-renew by earliest expiry. Pending (not installed yet), suspended, paused, cancelled and
    first-login packages still waiting are left alone."""
    subs = (
        Subscription.objects.filter(customer_id=customer_id, plan__kind__in=PREPAID_KINDS)
        .filter(status__in=(Status.EXPIRED, Status.ACTIVE))
        .select_related("plan", "pending_plan")
    )
    wanted = [s for s in subs if s.status == Status.EXPIRED or (s.auto_renew and s.current_period_end is not None)]
    return sorted(wanted, key=lambda s: (s.status != Status.EXPIRED, s.current_period_end or now, s.pk))


def apply_credit_to_prepaid(customer_id: int, now: dt.datetime | None = None) -> list[PurchaseResult]:
    """After a payment: let the customer's credit buy periods for their prepaid and hotspot services.

    Repeatedly buys one period (`purchase_period`, credit required) for the most urgent service the
    credit can pay for — expired services first (they restart now), then active auto-renew services
    by earliest expiry (extended from their expiry) — until the credit covers none. A service's
    expiry moves on with each period, so two services share the money in turn. Never uses another
    customer's credit. Idempotent: with no spendable credit it writes nothing. Each purchase is its
    own transaction (locks as `purchase_period`); a refusal on one service moves on to the next.
    """
    results: list[PurchaseResult] = []
    for _ in range(MAX_PURCHASES_PER_CALL):
        at = now or clock.now()
        available = spendable_credit(customer_id)
        if available <= 0:
            break
        bought = None
        for sub in _credit_candidates(customer_id, at):
            start = _next_start(sub, at)
            try:
                if plan_price(_plan_at(sub, start), start).amount > available:
                    continue
                result = purchase_period(sub, at=at, reason="paid from account credit")
            except InsufficientCredit:
                continue
            except DomainError as exc:
                logger.warning("prepaid: %s could not buy a period from credit: %s", sub.username, exc)
                continue
            if result.created:
                bought = result
                break
        if bought is None:
            break
        results.append(bought)
    return results


# --- expiry -----------------------------------------------------------------------------------


def _settle_expiry(subscription_id: int, now: dt.datetime) -> str:
    """Renew or expire one service whose period ended; "renewed", "expired" or "skipped"."""
    with transaction.atomic():
        sub = _lock(subscription_id)
        ended = sub.current_period_end is not None and sub.current_period_end <= now
        if sub.status != Status.ACTIVE or sub.plan.kind not in PREPAID_KINDS or not ended:
            return "skipped"  # renewed, expired or changed by someone else meanwhile
        if sub.auto_renew:
            try:
                with transaction.atomic():
                    _purchase_locked(sub, at=now, reason="renewed from account credit", require_credit=True)
                return "renewed"
            except InsufficientCredit as exc:
                why = f"period ended; not enough credit to renew ({exc.available} of {exc.price})"
            except billing.AlreadyInvoiced:
                raise  # the books and the service disagree: leave it for staff (logged by the caller)
            except DomainError as exc:  # e.g. the plan has no price: the service cannot be renewed
                logger.warning("prepaid: %s could not renew at expiry: %s", sub.username, exc)
                why = f"period ended; renewal refused: {exc.message}"
        else:
            why = "period ended; auto-renew is off"
        subscriptions.expire(sub, reason=why[:300], actor=EXPIRY_ACTOR, at=now)
        return "expired"


def _due_plan_switches(now: dt.datetime) -> list[int]:
    """Active prepaid/hotspot services whose pending plan takes over by `now` (a period bought
    early on the pending plan has begun)."""
    return list(
        Subscription.objects.filter(
            status=Status.ACTIVE,
            plan__kind__in=PREPAID_KINDS,
            pending_plan__isnull=False,
            pending_plan_at__lte=now,
        )
        .order_by("pending_plan_at", "pk")
        .values_list("pk", flat=True)
    )


def process_expiries(now: dt.datetime | None = None) -> ExpirySummary:
    """The periodic expiry job (every minute): each active prepaid or hotspot service whose period
    ended by `now` is renewed from credit (auto-renew on and the credit pays the period: a
    `renewed` event and a paid invoice, the new period starting at the later of now and the
    expiry) or expires (`expired` event, no invoice). Then active prepaid services whose pending
    plan is due switch to it (`apply_pending_plan`: a period bought early on it has begun).

    Candidates come from one query each (`subscriptions.selectors.due_to_expire`); each service is
    then settled in its own short transaction holding the customer, then the subscription row lock,
    and re-checked under them, so a double or concurrent run renews or expires each service once. A
    failure on one service is logged and counted and does not stop the others. Acts as "job:expiry".
    """
    now = now or clock.now()
    summary = ExpirySummary()
    with audit.acting_as(EXPIRY_ACTOR):
        for subscription_id in list(due_to_expire(now).values_list("pk", flat=True)):
            summary.checked += 1
            try:
                outcome = _settle_expiry(subscription_id, now)
            except Exception:
                logger.exception("prepaid: settling the expiry of subscription %s failed", subscription_id)
                summary.failed += 1
                summary.failed_ids.append(subscription_id)
                continue
            setattr(summary, outcome, getattr(summary, outcome) + 1)
        for subscription_id in _due_plan_switches(now):
            try:
                sub = Subscription.objects.get(pk=subscription_id)
                if subscriptions.apply_pending_plan(sub, at=sub.pending_plan_at, reason="scheduled plan change"):
                    summary.plans_switched += 1
            except Exception:
                logger.exception("prepaid: switching the pending plan of subscription %s failed", subscription_id)
                summary.failed += 1
                summary.failed_ids.append(subscription_id)
    return summary


__all__ = [
    "ExpirySummary",
    "InsufficientCredit",
    "PackageNotStarted",
    "PurchaseNotAllowed",
    "PurchaseResult",
    "apply_credit_to_prepaid",
    "process_expiries",
    "purchase_period",
    "spendable_credit",
    "start_at_first_login",
]
