"""Dunning: reminders around an invoice's due date, suspension after the grace period, reactivation
the moment the overdue debt is cleared, and staff's promise-to-pay extensions.

The calendar of one invoice (settings.WAVU; defaults in brackets), counted from its due date D
(issue date + INVOICE_DUE_DAYS [7]):
- a reminder on each day D + offset for offset in DUNNING_REMINDER_DAYS [-3, 0, 3]: one
  `DunningNotice(stage=reminder, offset_days)` and one `payment_reminder` lifecycle event (the SMS
  app sends it);
- the grace period is the DUNNING_GRACE_DAYS [5] days after D; from D + grace + 1 on, while money
  is still outstanding and no promise to pay covers the day, each active service answering for the
  invoice is suspended with cause "overdue" and a `DunningNotice(stage=suspension)` records it.
A service answers for its own invoices and for the customer's invoices that name no service.

Guarantees:
- `run_dunning` is idempotent: the unique (invoice, stage, offset_days) constraint on DunningNotice
  decides which reminder is new (insert in a savepoint, a conflict means another run did it), and a
  suspension happens under the customer and subscription row locks only while the service is still
  active and still owes; a second run, even a concurrent one, changes nothing.
- Only the services' status moves, always through `subscriptions.services` (lifecycle event +
  audit row). Services suspended by staff (cause "staff") are never resumed here.
- Locks, short and ordered like billing and payments: the customer row, then the subscription row;
  reminders are written in batches of REMINDER_BATCH invoices per transaction, in invoice pk order,
  and lock nothing but the notice keys they insert.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from dataclasses import asdict, dataclass, field

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Count

from wavu.core import audit, clock
from wavu.core.errors import DomainError, NotAllowed
from wavu.core.models import AuditEvent
from wavu.core.money import quantum
from wavu.customers.services import lock_accounts
from wavu.subscriptions import services as subscriptions
from wavu.subscriptions.models import Status, Subscription, SuspensionCause

from . import selectors
from .models import DunningNotice, Invoice, PaymentPromise

logger = logging.getLogger(__name__)

JOB = "job:dunning"
REMINDER_BATCH = 200
# A reminder whose day is further back than this is recorded as missed but not sent: the first run
# over old unpaid invoices (after an upgrade) or after a long outage must not text months-old debts.
STALE_REMINDER_DAYS = 7
PAYMENT_REMINDER = "payment_reminder"
PROMISE_TO_PAY = "promise_to_pay"


# --- errors (stable codes for the API) --------------------------------------------------------


class PromiseDateInvalid(DomainError):
    """`until` is before today (`promise_date_in_past`) or too far ahead (`promise_too_long`)."""

    code = "promise_date_invalid"


class NoOverdueDebt(NotAllowed):
    code = "no_overdue_debt"


class PromiseAlreadyGranted(NotAllowed):
    """The service already had its one promise to pay in this billing period (database constraint)."""

    code = "promise_already_granted"


# --- helpers ----------------------------------------------------------------------------------


def _today(now: dt.datetime) -> dt.date:
    return clock.local(now).date()


def _lock_customer(customer_id: int) -> None:
    """The money lock billing and payments take first (one per account)."""
    lock_accounts(customer_id)


def _insert_notice(invoice_id: int, stage: str, offset_days: int, now: dt.datetime) -> DunningNotice | None:
    """Insert one dunning step in a savepoint; None when it already exists (the unique constraint
    decides, also against a concurrent run, which waits for ours to commit)."""
    try:
        with transaction.atomic():
            notice = DunningNotice.objects.create(
                invoice_id=invoice_id, stage=stage, offset_days=offset_days, created_at=now
            )
    except IntegrityError:
        return None
    audit.record(notice, AuditEvent.Action.CREATE, verb=f"dunning_{stage}")
    return notice


def _chunks(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _day(day: dt.date) -> str:
    return f"{day.day} {day:%b %Y}"


# --- the periodic run -------------------------------------------------------------------------


@dataclass
class DunningSummary:
    """What one `run_dunning` did. Counts, plus the ids/numbers staff may want to look at."""

    run_at: dt.datetime
    day: dt.date
    reminders_sent: int = 0  # newest due reminders written as lifecycle events
    reminders_missed: int = 0  # steps recorded without a message (superseded by a newer one, or stale)
    reminder_events: int = 0  # lifecycle events written (a service-less invoice: one per live service)
    reminders_without_service: list[str] = field(default_factory=list)  # invoice numbers nobody could be told
    suspended: list[int] = field(default_factory=list)  # subscription ids suspended by this run
    held_by_promise: int = 0  # active services past grace that a promise to pay covers today
    left_alone: dict[str, int] = field(default_factory=dict)  # status → services past grace that are not active
    failures: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        data = asdict(self)
        data["run_at"], data["day"] = self.run_at.isoformat(), self.day.isoformat()
        return data


def run_dunning(now: dt.datetime | None = None) -> DunningSummary:
    """Send the reminders whose day has come and suspend services whose debt is past grace.

    Periodic entry point (hourly is plenty; any interval works). `now` defaults to the clock; the
    day is its local date. Idempotent, including against a concurrent run (see the module
    docstring). Set-based: one query finds the invoices with a reminder step to record, one finds
    the active services to suspend; the writes are short transactions (reminders in batches of
    REMINDER_BATCH invoices, one transaction per suspension holding the customer then the
    subscription lock, re-checking the debt under the lock).

    Reminders: for an invoice whose steps D-3 and D were both missed (the job was down), both notices
    are recorded but only the newest one is sent, and only if its day is at most STALE_REMINDER_DAYS
    ago (older debt seen for the first time is recorded, not texted). The event goes on the
    invoice's service, or for a service-less invoice on each live service of the customer (none:
    listed in `reminders_without_service`). Suspension: only ACTIVE services; paused, expired, cancelled or
    already suspended ones are counted in `left_alone`, services a promise covers in `held_by_promise`.
    An unexpected error on one invoice or service is logged and listed in `failures`; the run goes on.
    """
    now = now or clock.now()
    today = _today(now)
    summary = DunningSummary(run_at=now, day=today)
    with audit.acting_as(JOB):
        _send_reminders(today, now, summary)
        _suspend_past_grace(today, now, summary)
    summary.held_by_promise = selectors.services_held_by_promise(today).count()
    summary.left_alone = dict(
        selectors.services_past_grace(today)
        .exclude(status=Status.ACTIVE)
        .order_by()
        .values("status")
        .annotate(n=Count("pk"))
        .values_list("status", "n")
    )
    logger.info(
        "dunning %s: %d reminders sent (%d events, %d recorded only), %d suspended, %d held by a promise, "
        "left alone %s, %d failures",
        today, summary.reminders_sent, summary.reminder_events, summary.reminders_missed, len(summary.suspended),
        summary.held_by_promise, summary.left_alone, len(summary.failures),
    )  # fmt: skip
    return summary


def _reminder_data(invoice: Invoice, offset: int) -> dict:
    grace = selectors.grace_days()
    return {
        "invoice_id": invoice.pk,
        "invoice_number": invoice.number,
        "due_date": invoice.due_date.isoformat(),
        "outstanding": str(invoice.outstanding.quantize(quantum(invoice.currency))),
        "currency": invoice.currency,
        "offset_days": offset,
        "suspension_date": (invoice.due_date + dt.timedelta(days=grace + 1)).isoformat(),
    }


def _send_reminders(today: dt.date, now: dt.datetime, summary: DunningSummary) -> None:
    offsets = selectors.reminder_offsets()
    ids = list(selectors.reminder_candidates(today, offsets).order_by("pk").values_list("pk", flat=True))
    for chunk in _chunks(ids, REMINDER_BATCH):
        # Re-read the batch with the same conditions: an invoice paid since the first query drops out.
        invoices = list(selectors.reminder_candidates(today, offsets).filter(pk__in=chunk).order_by("pk"))
        recorded = set(
            DunningNotice.objects.filter(invoice_id__in=chunk, stage=DunningNotice.Stage.REMINDER).values_list(
                "invoice_id", "offset_days"
            )
        )
        own = Subscription.objects.in_bulk({i.subscription_id for i in invoices if i.subscription_id})
        live: dict[int, list[Subscription]] = defaultdict(list)
        shared_customers = {i.customer_id for i in invoices if i.subscription_id is None}
        if shared_customers:
            for sub in (
                Subscription.objects.filter(customer_id__in=shared_customers)
                .exclude(status__in=selectors.NOT_LIVE)
                .order_by("pk")
            ):
                live[sub.customer_id].append(sub)
        with transaction.atomic():
            for invoice in invoices:
                targets = [own[invoice.subscription_id]] if invoice.subscription_id else live[invoice.customer_id]
                try:
                    with transaction.atomic():
                        _remind(invoice, offsets, recorded, targets, today, now, summary)
                except Exception as exc:  # noqa: BLE001 - one bad invoice must not stop the run
                    logger.exception("dunning: reminder for invoice %s failed", invoice.pk)
                    summary.failures.append(f"invoice {invoice.number}: {exc}")


def _remind(invoice, offsets, recorded, targets, today, now, summary) -> None:
    """Record every reminder step of `invoice` that has come and is not recorded yet; send only the newest."""
    steps = [o for o in offsets if invoice.due_date + dt.timedelta(days=o) <= today]
    created = []
    for offset in steps:
        if (invoice.pk, offset) in recorded:
            continue
        if _insert_notice(invoice.pk, DunningNotice.Stage.REMINDER, offset, now) is not None:
            created.append(offset)
    if not created:
        return
    newest = steps[-1]
    stale = today - (invoice.due_date + dt.timedelta(days=newest)) > dt.timedelta(days=STALE_REMINDER_DAYS)
    summary.reminders_missed += len([o for o in created if o != newest or stale])
    if newest not in created or stale:
        return
    summary.reminders_sent += 1
    if not targets:
        summary.reminders_without_service.append(invoice.number)
    data = _reminder_data(invoice, newest)
    for sub in targets:
        subscriptions.record_event(sub, PAYMENT_REMINDER, data=data, at=now, actor=JOB,
                                   reason=f"{invoice.number}: reminder {newest:+d} days from the due date")  # fmt: skip
        summary.reminder_events += 1


def _suspend_past_grace(today: dt.date, now: dt.datetime, summary: DunningSummary) -> None:
    rows = list(selectors.services_to_suspend(today).values_list("pk", "customer_id"))
    for sub_id, customer_id in rows:
        try:
            if _suspend_one(sub_id, customer_id, today, now):
                summary.suspended.append(sub_id)
        except Exception as exc:  # noqa: BLE001 - one bad service must not stop the run
            logger.exception("dunning: suspending subscription %s failed", sub_id)
            summary.failures.append(f"subscription {sub_id}: {exc}")


def _suspend_one(sub_id: int, customer_id: int, today: dt.date, now: dt.datetime) -> bool:
    """Suspend one service if, under its customer's and its own row lock, it is still active and still
    owes past grace without a covering promise. Returns whether it suspended."""
    with transaction.atomic():
        _lock_customer(customer_id)
        sub = Subscription.objects.select_for_update().get(pk=sub_id)
        if sub.status != Status.ACTIVE:
            return False
        first = selectors.blocking_overdue_invoices(sub, today).values_list("pk", "number", "due_date").first()
        if first is None:
            return False
        invoice_id, number, due_date = first
        subscriptions.suspend(
            sub,
            cause=SuspensionCause.OVERDUE,
            actor=JOB,
            at=now,
            reason=f"Invoice {number} overdue since {_day(due_date)}",
        )
        _insert_notice(invoice_id, DunningNotice.Stage.SUSPENSION, (today - due_date).days, now)
    return True


# --- reactivation -----------------------------------------------------------------------------


def reactivate_if_cleared(customer_id: int, now: dt.datetime | None = None) -> list[Subscription]:
    """Resume each of the customer's services suspended for overdue debt that no longer owes past
    grace (all its invoices — and the customer's service-less ones — past due date + grace are paid
    or credited) or that a promise to pay covers today. Returns the services resumed.

    Call it after anything that lowers what a customer owes (every payment channel, a credit note)
    and from `reactivation_sweep`. Idempotent: a service already active, or suspended by staff
    (cause "staff"), is left alone. One short transaction per service: the customer row lock, then
    the subscription's; the debt is re-checked under them. `resume` writes the `resumed` lifecycle
    event (actor job:dunning, reason "overdue debt paid") and the audit row.
    """
    now = now or clock.now()
    today = _today(now)
    ids = list(
        Subscription.objects.filter(
            customer_id=customer_id, status=Status.SUSPENDED, suspension_cause=SuspensionCause.OVERDUE
        )
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    resumed = []
    for pk in ids:
        with transaction.atomic():
            _lock_customer(customer_id)
            sub = Subscription.objects.select_for_update().get(pk=pk)
            if sub.status != Status.SUSPENDED or sub.suspension_cause != SuspensionCause.OVERDUE:
                continue
            if selectors.blocking_overdue_invoices(sub, today).exists():
                continue
            subscriptions.resume(sub, actor=JOB, at=now, reason="overdue debt paid")
        resumed.append(sub)
    return resumed


def reactivation_sweep(now: dt.datetime | None = None) -> list[Subscription]:
    """Periodic safety net for `reactivate_if_cleared`: finds, in one query, every service suspended
    for overdue debt whose debt is clear (a missed payment task, a credit note, a reversed charge) and
    resumes it. Idempotent; returns the services resumed."""
    now = now or clock.now()
    customers = (
        selectors.overdue_suspended_services_cleared(_today(now))
        .order_by("customer_id")
        .values_list("customer_id", flat=True)
        .distinct()
    )
    resumed: list[Subscription] = []
    for customer_id in list(customers):
        resumed += reactivate_if_cleared(customer_id, now)
    return resumed


# --- promise to pay ---------------------------------------------------------------------------


def grant_promise_to_pay(subscription: Subscription, *, until: dt.date, reason: str) -> PaymentPromise:
    """Staff grant: no suspension of this service for its overdue debt until `until` (inclusive).

    Refused, writing nothing: an empty reason (`ValidationError`); `until` before today
    (`promise_date_in_past`) or more than WAVU["PROMISE_TO_PAY_MAX_DAYS"] days from today
    (`promise_too_long`); a cancelled service (`subscription_cancelled`, 409); a service with no
    overdue debt (`no_overdue_debt`, 409: nothing past its due date is outstanding); a second
    promise in the same billing period (`promise_already_granted`, 409 — the unique
    (subscription, period_start) constraint decides, also between concurrent grants). The period
    is the service's `current_period_start`, or when it has none the period (else the issue day) of
    its oldest overdue invoice.

    In one transaction holding the customer, then the subscription row lock: the PaymentPromise
    (granted_by = the acting user), `resume` when the service is suspended for overdue debt (staff
    suspensions stay), a `promise_to_pay` lifecycle event and an audit row. When `until` has passed
    with the debt still there, `run_dunning` suspends the service again.
    """
    reason = (reason or "").strip()
    if not reason:
        raise ValidationError({"reason": [ValidationError("Say why the customer gets more time.", "required")]})
    if len(reason) > 300:
        raise ValidationError({"reason": [ValidationError("At most 300 characters.", "max_length")]})
    if not isinstance(until, dt.date) or isinstance(until, dt.datetime):
        raise ValidationError({"until": [ValidationError("Give the last day of the promise as a date.", "invalid")]})
    today = clock.today()
    max_days = int(settings.WAVU["PROMISE_TO_PAY_MAX_DAYS"])
    if until < today:
        message = f"{_day(until)} has passed: a promise to pay ends today or later."
        raise PromiseDateInvalid(message, code="promise_date_in_past", fields={"until": [message]})
    if until > today + dt.timedelta(days=max_days):
        message = f"A promise to pay lasts at most {max_days} days: until {_day(today + dt.timedelta(days=max_days))}."
        raise PromiseDateInvalid(message, code="promise_too_long", fields={"until": [message]})
    with transaction.atomic():
        customer_id = Subscription.objects.filter(pk=subscription.pk).values_list("customer_id", flat=True).get()
        _lock_customer(customer_id)
        sub = Subscription.objects.select_for_update().get(pk=subscription.pk)
        if sub.status == Status.CANCELLED:
            raise NotAllowed(f"Service {sub.username} is cancelled.", code="subscription_cancelled")
        oldest = selectors.service_overdue_invoices(sub, today).first()
        if oldest is None:
            raise NoOverdueDebt(f"Service {sub.username} has no overdue invoice: there is nothing to promise.")
        period_start = sub.current_period_start or oldest.period_start or clock.start_of_day(oldest.issue_date)
        try:
            with transaction.atomic():
                promise = PaymentPromise.objects.create(
                    subscription=sub,
                    period_start=period_start,
                    until=until,
                    reason=reason,
                    granted_by=audit.current_actor().label[:120],
                    created_at=clock.now(),
                )
        except IntegrityError:
            earlier = PaymentPromise.objects.filter(subscription=sub, period_start=period_start).first()
            detail = f" (until {_day(earlier.until)}, by {earlier.granted_by})" if earlier else ""
            raise PromiseAlreadyGranted(
                f"Service {sub.username} already had a promise to pay in the billing period starting "
                f"{_day(clock.local(period_start).date())}{detail}; one promise per period.",
                fields={"subscription": ["one promise to pay per billing period"]},
            ) from None
        resumed = sub.status == Status.SUSPENDED and sub.suspension_cause == SuspensionCause.OVERDUE
        if resumed:
            subscriptions.resume(sub, reason=f"promise to pay until {_day(until)}")
        subscriptions.record_event(
            sub,
            PROMISE_TO_PAY,
            reason=reason,
            data={
                "promise_id": promise.pk,
                "until": until.isoformat(),
                "period_start": period_start.isoformat(),
                "oldest_invoice_id": oldest.pk,
                "oldest_invoice_number": oldest.number,
                "resumed": resumed,
            },
        )
        audit.record(promise, AuditEvent.Action.CREATE, verb="grant_promise_to_pay", reason=reason)
    return promise


__all__ = [
    "DunningSummary",
    "NoOverdueDebt",
    "PromiseAlreadyGranted",
    "PromiseDateInvalid",
    "grant_promise_to_pay",
    "reactivate_if_cleared",
    "reactivation_sweep",
    "run_dunning",
]
