"""Postpaid billing runs: invoice every service whose billing period has begun, set-based.

`run_billing(day)` guarantees:
- it bills every period of every postpaid service that is active or suspended and that begins
  before the cutoff (the end of `day`, or now when `day` is today): a service whose billing was
  missed for three months gets three invoices in one run, one per period, in period order (so its
  invoice numbers follow its periods), and leaves the run with `next_bill_at` after the cutoff.
  One invoice per (service, period) — the unique constraint on (subscription, period_start) is the
  final guard, so a re-run, a retry or two workers at once never bill a period twice, and a second
  run of the same day bills nothing. Paused services are not billed (the pause stopped the billing
  clock; resuming shifts `next_bill_at`), cancelled ones never. Suspended services are: the
  contract runs on, suspension only cuts access;
- each period is [next_bill_at, the next billing date for the service's anchor day). A period
  shorter than the plan's months (the first one, or one after a pause) is charged by local days,
  `price × days / days of the full period`, rounded once, and the line says so;
- lines: the plan (a due downgrade waiting in `pending_plan` is applied first), every recurring
  add-on attached during the period (same fraction) and every one-off add-on not billed yet;
- each invoice is issued like `services.issue_invoice` issues one: a gap-free number, due date,
  buyer snapshot, one balanced journal entry (Dr receivables / Cr revenue, excise, VAT), then the
  customer's unapplied credit pays it;
- a service that cannot be billed (no price in force, tax not configured, bad data) is flagged
  (`BillingRunFlag` with the reason) and skipped; the run goes on and the service stays due from
  the period that failed (the periods before it are billed);
- work is committed in batches of WAVU["BILLING_BATCH_SIZE"] services, each with all its due
  periods; a crash loses at most the open batch, and running the same day again resumes (the
  day's `BillingRun` row counts every attempt).

Set-based for speed: a batch reads its services, prices and add-ons in a few queries and writes
invoices, lines, journal entries and postings with multi-row INSERTs (`core.db.insert_rows`).
Services with one-off add-ons, and a batch the database refuses, go through the one-by-one path
(`services.create_draft_invoice` … `issue_invoice`), which writes the same rows.

Locks, per batch on PostgreSQL: the batch's customer rows (ordered by pk; the order payments use,
so a payment arriving meanwhile either sees the new invoices or its credit is seen here), then
the due subscription rows with SKIP LOCKED and the due condition re-checked under the lock.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from decimal import Decimal

from dateutil.relativedelta import relativedelta
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import DatabaseError, IntegrityError, transaction
from django.db.models import F, Max, Min, Q

from wavu.catalog.models import AddOn, Plan
from wavu.catalog.selectors import NoPrice, PriceBook
from wavu.core import audit, clock
from wavu.core.db import insert_rows, update_rows
from wavu.core.errors import DomainError
from wavu.core.models import AuditEvent
from wavu.core.money import Money, round_money
from wavu.core.sequences import next_values
from wavu.core.tax import RateBook, Rates, TaxRateMissing, split_gross
from wavu.customers.models import Customer
from wavu.customers.services import lock_accounts
from wavu.ledger import accounts
from wavu.ledger.models import Account, JournalEntry, Posting
from wavu.subscriptions.models import Status, Subscription, SubscriptionAddOn
from wavu.subscriptions.periods import anchor_date, next_billing_date

from . import services
from .models import BillingRun, BillingRunFlag, Invoice, InvoiceLine

logger = logging.getLogger(__name__)

JOB_LABEL = "job:billing-run"
BILLED_STATUSES = (Status.ACTIVE, Status.SUSPENDED)


class FutureBillingRun(DomainError):
    code = "billing_run_in_future"
    status = 400


@dataclass
class RunSummary:
    """What a run did in this attempt (and, in `run`, the day's totals over all attempts)."""

    run_date: dt.date
    billed: int = 0  # invoices issued
    caught_up: int = 0  # of those, periods beyond the first a service had due (arrears)
    skipped: int = 0  # periods passed over: already invoiced, or nothing to charge
    flagged: int = 0
    total_amount: Decimal = Decimal("0.00")
    due_at_start: int = 0  # services due when the run started
    remaining: int = 0  # services still due when it ended: flagged, or held by another worker
    seconds: float = 0.0
    resumed: bool = False
    run: BillingRun | None = None


@dataclass(frozen=True)
class Charge:
    """One invoice line to be written."""

    kind: str
    description: str
    unit_price: Decimal
    quantity: int
    tax_class: str
    period_start: dt.datetime | None
    period_end: dt.datetime | None
    plan_id: int | None = None
    addon_id: int | None = None


@dataclass(eq=False)
class Bill:
    """One invoice to be written for one service's period."""

    subscription_id: int
    customer_id: int
    period_start: dt.datetime
    period_end: dt.datetime
    charges: list[Charge] = field(default_factory=list)
    has_one_off: bool = False


# --- periods and charges (no writes) -----------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def _local_date(moment: dt.datetime) -> dt.date:
    return clock.local(moment).date()


@functools.lru_cache(maxsize=4096)
def billing_period(start: dt.datetime, anchor_day: int, months: int) -> tuple[dt.datetime, dt.datetime, int, int]:
    """(start, end, days charged, days of the full period) of the postpaid period beginning at `start`.

    The end is the next billing date for `anchor_day` (`periods.next_billing_date`). A period that
    begins on the anchor day (whatever the time) is a full one; a shorter one is charged for its
    local days out of the days of the full period that ends on the same date.
    """
    end = next_billing_date(start, anchor_day, months)
    end_day = clock.local(end).date()
    back = end_day.replace(day=1) - relativedelta(months=months)
    full_start = anchor_date(back.year, back.month, anchor_day)
    start_day = clock.local(start).date()
    full_days = (end_day - full_start).days
    days = min((end_day - start_day).days, full_days)
    return start, end, days, full_days


def _fraction_label(days: int, full_days: int) -> str:
    return "" if days >= full_days else f" ({days} of {full_days} days)"


def _prorate(price: Money, days: int, full_days: int) -> Decimal:
    if days >= full_days:
        return price.amount
    return round_money(price.amount * days / full_days, price.currency)


class _Labels:
    """period_label, remembered per (start, end): a run prints the same few periods thousands of times."""

    def __init__(self):
        self._cache: dict[tuple, str] = {}

    def __call__(self, start, end) -> str:
        key = (start, end)
        if key not in self._cache:
            self._cache[key] = services.period_label(start, end)
        return self._cache[key]


def plan_bill(sub, plan: Plan, addons: list[SubscriptionAddOn], prices: PriceBook, labels=None) -> Bill:
    """The invoice a service's next period needs (pure: reads nothing but `prices`).

    `sub` needs pk, customer_id, next_bill_at and billing_anchor_day. Raises `NoPrice` when a
    price is missing and `ValidationError` for a service that cannot be billed as postpaid.
    """
    labels = labels or services.period_label
    if plan.kind != Plan.Kind.POSTPAID:
        raise ValidationError({"plan": [f"{plan} is not a postpaid plan"]})
    if plan.validity_unit != Plan.ValidityUnit.MONTH:
        raise ValidationError({"plan": [f"postpaid plan {plan} must run in calendar months"]})
    anchor = sub.billing_anchor_day or clock.local(sub.next_bill_at).day
    start, end, days, full_days = billing_period(sub.next_bill_at, anchor, plan.validity_count)
    label = labels(start, end)
    suffix = _fraction_label(days, full_days)
    bill = Bill(sub.pk, sub.customer_id, start, end)
    bill.charges.append(
        Charge(
            InvoiceLine.Kind.SUBSCRIPTION,
            f"{plan.name}, {label}{suffix}",
            _prorate(prices.plan_price(plan, start), days, full_days),
            1,
            plan.tax_class,
            start,
            end,
            plan_id=plan.pk,
        )
    )
    for item in addons:
        addon = item.addon
        if addon.billing == AddOn.Billing.ONE_OFF:
            if item.billed_on_line_id is None and item.started_at < end:
                bill.has_one_off = True
            continue
        if item.started_at >= end or (item.ended_at is not None and item.ended_at <= start):
            continue
        bill.charges.append(
            Charge(
                InvoiceLine.Kind.ADDON,
                f"{addon.name}, {label}{suffix}",
                _prorate(prices.addon_price(addon, start), days, full_days),
                item.quantity,
                addon.tax_class,
                start,
                end,
                addon_id=addon.pk,
            )
        )
    return bill


# --- the run -----------------------------------------------------------------------------------


def due_subscriptions(cutoff: dt.datetime):
    """Postpaid services whose next period to invoice began before `cutoff`."""
    return Subscription.objects.filter(
        status__in=BILLED_STATUSES, plan__kind=Plan.Kind.POSTPAID, next_bill_at__lt=cutoff
    )


def _due_batches(cutoff: dt.datetime, batch_size: int):
    """The pks of the services due before `cutoff`, in pk order, `batch_size` at a time.

    Walks the table by primary-key windows and applies the due test (`due_subscriptions`) in
    Python: each read is a primary-key range whatever the planner's statistics say, so a batch
    costs the same at the start and at the end of a run over 100,000 services (a keyset query on
    the due condition degrades to a scan and a sort per batch when statistics are missing). The
    batch's transaction re-checks the due condition under the lock, so a service that changed
    meanwhile is left alone.
    """
    postpaid = set(Plan.objects.filter(kind=Plan.Kind.POSTPAID).values_list("pk", flat=True))
    bounds = Subscription.objects.aggregate(lo=Min("pk"), hi=Max("pk"))
    if bounds["lo"] is None:
        return
    window = batch_size * 4
    batch: list[int] = []
    for lo in range(bounds["lo"], bounds["hi"] + 1, window):
        rows = (
            Subscription.objects.filter(pk__gte=lo, pk__lt=lo + window)
            .order_by("pk")
            .values_list("pk", "status", "plan_id", "next_bill_at")
        )
        for pk, status, plan_id, next_bill_at in rows:
            if status in BILLED_STATUSES and plan_id in postpaid and next_bill_at is not None and next_bill_at < cutoff:
                batch.append(pk)
                if len(batch) == batch_size:
                    yield batch
                    batch = []
    if batch:
        yield batch


def cutoff_for(run_date: dt.date) -> dt.datetime:
    """Periods beginning before this instant are billed by the run of `run_date`."""
    end_of_day = clock.start_of_day(run_date + dt.timedelta(days=1))
    return min(end_of_day, clock.now())


def check_run_date(run_date: dt.date | None) -> dt.date:
    """The day a run bills: `run_date`, default today; a day in the future is refused (`FutureBillingRun`)."""
    today = clock.today()
    run_date = run_date or today
    if run_date > today:
        raise FutureBillingRun(f"{run_date} is in the future: a billing run bills days that have begun")
    return run_date


def run_billing(
    run_date: dt.date | None = None,
    *,
    batch_size: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> RunSummary:
    """Bill every period of every postpaid service that begins by the end of `run_date` (default
    today), arrears included. See the module docstring for the guarantees. Idempotent: a second run
    of the same day bills only what is still due, which is nothing unless a service was flagged.
    Refuses a day in the future (`FutureBillingRun`)."""
    run_date = check_run_date(run_date)
    batch_size = batch_size or settings.WAVU["BILLING_BATCH_SIZE"]
    started = time.perf_counter()
    with audit.acting_as(JOB_LABEL):
        run, resumed = _start_run(run_date)
        summary = RunSummary(run_date=run_date, resumed=resumed, run=run)
        cutoff = cutoff_for(run_date)
        summary.due_at_start = due_subscriptions(cutoff).count()
        writer = _BatchWriter(run, run_date)
        done = 0
        try:
            for ids in _due_batches(cutoff, batch_size):
                with transaction.atomic():
                    outcome = writer.bill_batch(ids, cutoff)
                    BillingRun.objects.filter(pk=run.pk).update(
                        billed_count=F("billed_count") + outcome.billed,
                        skipped_count=F("skipped_count") + outcome.skipped,
                        total_amount=F("total_amount") + outcome.total_amount,
                    )
                summary.billed += outcome.billed
                summary.caught_up += outcome.caught_up
                summary.skipped += outcome.skipped
                summary.flagged += outcome.flagged
                summary.total_amount += outcome.total_amount
                done += outcome.services
                if progress:
                    progress(done, summary.due_at_start)
        except BaseException as exc:
            BillingRun.objects.filter(pk=run.pk).update(
                status=BillingRun.Status.FAILED, last_error=f"{type(exc).__name__}: {exc}"[:2000]
            )
            raise
        summary.remaining = due_subscriptions(cutoff).count()
        BillingRun.objects.filter(pk=run.pk).update(
            status=BillingRun.Status.COMPLETED,
            finished_at=clock.now(),
            flagged_count=BillingRunFlag.objects.filter(run=run).count(),
            last_error="",
        )
        run.refresh_from_db()
        audit.record(
            run,
            AuditEvent.Action.ACTION,
            verb="billing_run",
            after={"billed": summary.billed, "caught_up": summary.caught_up, "skipped": summary.skipped,
                   "flagged": summary.flagged, "remaining": summary.remaining,
                   "total_amount": str(summary.total_amount), "attempt": run.attempts},
        )  # fmt: skip
    summary.seconds = time.perf_counter() - started
    return summary


def _start_run(run_date: dt.date) -> tuple[BillingRun, bool]:
    """The day's run row, created once (unique run_date); a later call is a resumption."""
    with transaction.atomic():
        run, created = BillingRun.objects.get_or_create(
            run_date=run_date,
            defaults={"started_at": clock.now(), "started_by": audit.current_actor().label[:120]},
        )
        if not created:
            BillingRun.objects.filter(pk=run.pk).update(
                attempts=F("attempts") + 1, status=BillingRun.Status.RUNNING, finished_at=None
            )
            run.refresh_from_db()
    return run, not created


@dataclass
class _Outcome:
    billed: int = 0  # invoices
    caught_up: int = 0  # invoices beyond a service's first in this batch
    skipped: int = 0  # periods
    flagged: int = 0
    services: int = 0  # services billed, skipped or flagged
    total_amount: Decimal = Decimal("0.00")


@dataclass(frozen=True)
class _Row:
    """The columns of a due service a batch needs (read with values_list, not model instances)."""

    pk: int
    customer_id: int
    plan_id: int
    next_bill_at: dt.datetime
    billing_anchor_day: int | None
    pending_plan_id: int | None
    pending_plan_at: dt.datetime | None


_ROW_FIELDS = ("pk", "customer_id", "plan_id", "next_bill_at", "billing_anchor_day", "pending_plan_id",
               "pending_plan_at")  # fmt: skip
_INVOICE_FIELDS = [
    "customer_id", "subscription_id", "series", "number", "status", "currency", "issue_date", "issued_at",
    "due_date", "period_start", "period_end", "buyer_name", "buyer_pin", "buyer_address", "buyer_account_number",
    "net_total", "excise_total", "vat_total", "total", "amount_paid", "amount_credited", "notes", "created_at",
]  # fmt: skip
_LINE_FIELDS = [
    "invoice_id", "position", "kind", "description", "period_start", "period_end", "quantity", "unit_price",
    "gross", "net", "excise", "vat", "tax_class", "tax_band", "vat_rate", "excise_rate", "subscription_id",
    "plan_id", "addon_id",
]  # fmt: skip
_ENTRY_FIELDS = ["kind", "posted_at", "memo", "currency", "source_type", "source_id", "reverses_id", "actor_label"]
_POSTING_FIELDS = ["entry_id", "account_id", "customer_id", "amount"]


class _BatchWriter:
    """Writes the invoices of one batch of due services, inside the caller's transaction."""

    def __init__(self, run: BillingRun, run_date: dt.date):
        self.run = run
        self.issue_date = run_date
        self.currency = settings.WAVU["CURRENCY"]
        self.due_days = settings.WAVU["INVOICE_DUE_DAYS"]
        self.labels = _Labels()
        self.plans: dict[int, Plan] = {}
        self.rates = RateBook()
        self.splits: dict[tuple[Decimal, Rates], tuple[Decimal, Decimal, Decimal]] = {}
        self.account_ids = dict(Account.objects.values_list("code", "id"))

    # -- reading

    def _plan(self, plan_id: int) -> Plan:
        if plan_id not in self.plans:
            self.plans[plan_id] = Plan.objects.get(pk=plan_id)
        return self.plans[plan_id]

    def _lock_and_read(self, ids: list[int], cutoff: dt.datetime) -> list[_Row]:
        customer_ids = sorted(set(Subscription.objects.filter(pk__in=ids).values_list("customer_id", flat=True)))
        lock_accounts(*customer_ids)
        locked = (
            due_subscriptions(cutoff)
            .filter(pk__in=ids)
            .select_for_update(skip_locked=True, of=("self",))
            .order_by("pk")
            .values_list(*_ROW_FIELDS)
        )
        return [_Row(*values) for values in locked]

    def _apply_due_downgrades(self, rows: list[_Row]) -> list[_Row]:
        from wavu.subscriptions.services import apply_pending_plan

        out = []
        for row in rows:
            if row.pending_plan_id is not None and (
                row.pending_plan_at is None or row.pending_plan_at <= row.next_bill_at
            ):
                sub = Subscription.objects.get(pk=row.pk)
                apply_pending_plan(sub, at=row.next_bill_at, reason="scheduled plan change at period end")
                row = _Row(row.pk, row.customer_id, sub.plan_id, row.next_bill_at, row.billing_anchor_day, None, None)
            out.append(row)
        return out

    def _split(self, gross: Decimal, tax_class: str, on: dt.date) -> tuple[Rates, tuple[Decimal, Decimal, Decimal]]:
        rates = self.rates.rates_for(tax_class, on)
        parts = self.splits.get((gross, rates))
        if parts is None:
            split = split_gross(Money(gross, self.currency), rates)
            parts = self.splits[(gross, rates)] = (split.net.amount, split.excise.amount, split.vat.amount)
        return rates, parts

    # -- one batch

    def bill_batch(self, ids: list[int], cutoff: dt.datetime) -> _Outcome:
        """Bill every period due before `cutoff` of the services `ids`, inside the caller's transaction.

        A round reads the services still due and bills, for each, its run of due periods one after
        the other (`_due_bills`), all written together; so arrears cost what any invoice costs. A run
        of periods stops early at a period whose plan changes (a downgrade due at its start, applied
        by the next round) or that bills a one-off add-on (billed one by one); those services go round
        again, until none is due. Each round moves every service it keeps by at least one period, so
        the loop ends; a flagged service is not kept (it stays due from the period that failed). A
        batch without such services makes one round. The customers' credit is applied once, at the end.
        """
        outcome = _Outcome()
        invoiced: set[int] = set()
        touched: set[int] = set()
        credit_to: set[int] = set()
        todo = ids
        while todo:
            todo = self._bill_round(todo, cutoff, outcome, invoiced, touched, credit_to)
        self._apply_credit(credit_to)
        outcome.caught_up = outcome.billed - len(invoiced)
        outcome.services = len(touched)
        return outcome

    def _due_bills(self, row: _Row, addons: list[SubscriptionAddOn], prices: PriceBook, cutoff: dt.datetime):
        """The invoices of `row`'s periods due before `cutoff`, in period order, and the error that
        stopped them (None when none did). Stops after a period that bills a one-off add-on, and before
        a period at whose start a pending plan takes over: the next round bills the rest."""
        plan, bills, start = self.plans[row.plan_id], [], row.next_bill_at
        while start < cutoff:
            if (
                bills
                and row.pending_plan_id is not None
                and (row.pending_plan_at is None or row.pending_plan_at <= start)
            ):
                break
            try:
                bill = plan_bill(replace(row, next_bill_at=start), plan, addons, prices, self.labels)
                for charge in bill.charges:  # price and tax must resolve before anything is written
                    self._split(charge.unit_price * charge.quantity, charge.tax_class, _local_date(bill.period_start))
            except (NoPrice, TaxRateMissing, ValidationError, DomainError) as exc:
                return bills, exc
            bills.append(bill)
            if bill.has_one_off or not bill.period_start < bill.period_end:
                break
            start = bill.period_end
        return bills, None

    def _bill_round(
        self,
        ids: list[int],
        cutoff: dt.datetime,
        outcome: _Outcome,
        invoiced: set[int],
        touched: set[int],
        credit_to: set[int],
    ) -> list[int]:
        """Bill the due periods of the services of `ids` still due (see `bill_batch`); returns the
        services to take round again. Adds to `outcome`; records the services invoiced, those billed,
        skipped or flagged, and the customers whose credit may pay."""
        rows = self._apply_due_downgrades(self._lock_and_read(ids, cutoff))
        if not rows:
            return []
        touched.update(row.pk for row in rows)
        for row in rows:
            self._plan(row.plan_id)
        addons_by_sub: dict[int, list[SubscriptionAddOn]] = defaultdict(list)
        for item in (
            SubscriptionAddOn.objects.filter(subscription_id__in=[r.pk for r in rows])
            .filter(Q(ended_at__isnull=True) | Q(ended_at__gt=F("subscription__next_bill_at")) | Q(
                addon__billing=AddOn.Billing.ONE_OFF, billed_on_line__isnull=True))
            .select_related("addon")
            .order_by("pk")
        ):  # fmt: skip
            addons_by_sub[item.subscription_id].append(item)
        prices = PriceBook(
            {r.plan_id for r in rows}, {item.addon_id for items in addons_by_sub.values() for item in items}
        )
        chains: dict[int, list[Bill]] = {}  # per service, its bills in period order
        flags: dict[int, BillingRunFlag] = {}
        now = clock.now()
        for row in rows:
            bills, error = self._due_bills(row, addons_by_sub.get(row.pk, []), prices, cutoff)
            chains[row.pk] = bills
            if error is not None:
                flags[row.pk] = self._flag(row.pk, error, now)
        all_bills = [bill for bills in chains.values() for bill in bills]
        already = set(
            Invoice.objects.filter(
                subscription_id__in={b.subscription_id for b in all_bills},
                period_start__in={b.period_start for b in all_bills},
            ).values_list("subscription_id", "period_start")
        )
        to_write, one_by_one, advance_only = [], [], []
        for bill in all_bills:  # numbers follow this order: per service, period order
            if (bill.subscription_id, bill.period_start) in already:
                advance_only.append(bill)  # billed before (by staff, or an earlier attempt): move on
            elif bill.has_one_off:
                one_by_one.append(bill)
            elif sum((c.unit_price * c.quantity for c in bill.charges), Decimal(0)) <= 0:
                advance_only.append(bill)  # a free service: nothing to invoice
            else:
                to_write.append(bill)
        try:
            with transaction.atomic():
                written = self._write_invoices(to_write, now)
        except (IntegrityError, DatabaseError) as exc:
            logger.warning("billing run %s: batch refused (%s); billing its services one by one", self.run, exc)
            one_by_one = to_write + one_by_one
            written = []
        billed = [bill for bill, _ in written]
        for _bill, total in written:
            outcome.total_amount += total
        failed: set[int] = set()
        for bill in one_by_one:
            if bill.subscription_id in failed:
                continue  # an earlier period of this service failed: the later ones wait for it
            try:
                with transaction.atomic():
                    invoice = self._bill_one(bill)
            except services.AlreadyInvoiced:
                advance_only.append(bill)
            except (IntegrityError, NoPrice, TaxRateMissing, ValidationError, DomainError) as exc:
                failed.add(bill.subscription_id)
                flags[bill.subscription_id] = self._flag(bill.subscription_id, exc, now)
            else:
                billed.append(bill)
                outcome.total_amount += invoice.total
        # each service moves on past the periods billed or passed over, up to the first that was not
        done = {id(bill) for bill in billed + advance_only}
        skipped = {id(bill) for bill in advance_only}
        last: list[Bill] = []
        again: list[int] = []
        for subscription_id, bills in chains.items():
            through = None
            for bill in bills:
                if id(bill) not in done:
                    break
                through = bill
                outcome.skipped += int(id(bill) in skipped)
            if through is not None:
                last.append(through)
                if subscription_id not in flags and through.period_start < through.period_end < cutoff:
                    again.append(subscription_id)  # stopped at a plan change or a one-off add-on
        outcome.billed += len(billed)
        invoiced.update(b.subscription_id for b in billed)
        credit_to.update(b.customer_id for b, _ in written)
        self._advance(last, now)
        if flags:
            BillingRunFlag.objects.bulk_create(list(flags.values()), ignore_conflicts=True)
            outcome.flagged += len(flags)
        return sorted(again)

    def _flag(self, subscription_id: int, exc: Exception, now: dt.datetime) -> BillingRunFlag:
        code = getattr(exc, "code", None) or type(exc).__name__
        if isinstance(exc, ValidationError):
            reason = "; ".join(f"{k}: {' '.join(map(str, v))}" for k, v in exc.message_dict.items())
        else:
            reason = str(exc)
        logger.warning("billing run %s: subscription %s flagged: %s", self.run, subscription_id, reason)
        return BillingRunFlag(run=self.run, subscription_id=subscription_id, code=str(code)[:40],
                              reason=reason[:300] or code, created_at=now)  # fmt: skip

    # -- writing

    def _write_invoices(self, bills: list[Bill], now: dt.datetime) -> list[tuple[Bill, Decimal]]:
        if not bills:
            return []
        customers = {
            c["pk"]: c
            for c in Customer.objects.filter(pk__in={b.customer_id for b in bills}).values(
                "pk", "name", "kra_pin", "address", "town", "county", "account_number"
            )
        }
        numbers = next_values(f"invoice:{services.INVOICE_SERIES}", len(bills))
        due_date = self.issue_date + dt.timedelta(days=self.due_days)
        invoice_rows, line_sets, totals = [], [], []
        for bill, number in zip(bills, numbers, strict=True):
            tax_day = _local_date(bill.period_start)
            lines, net_t, exc_t, vat_t, gross_t, revenue = [], Decimal(0), Decimal(0), Decimal(0), Decimal(0), {}
            for position, c in enumerate(bill.charges, start=1):
                gross = round_money(c.unit_price * c.quantity, self.currency)
                rates, (net, excise, vat) = self._split(gross, c.tax_class, tax_day)
                lines.append([position, c.kind, c.description, c.period_start, c.period_end, Decimal(c.quantity),
                              c.unit_price, gross, net, excise, vat, c.tax_class, rates.band, rates.vat, rates.excise,
                              bill.subscription_id, c.plan_id, c.addon_id])  # fmt: skip
                net_t, exc_t, vat_t, gross_t = net_t + net, exc_t + excise, vat_t + vat, gross_t + gross
                revenue[c.tax_class] = revenue.get(c.tax_class, Decimal(0)) + net
            customer = customers[bill.customer_id]
            invoice_rows.append((
                bill.customer_id, bill.subscription_id, services.INVOICE_SERIES,
                services.format_number(services.INVOICE_SERIES, number), Invoice.Status.DRAFT, self.currency,
                self.issue_date, now, due_date, bill.period_start, bill.period_end, customer["name"][:160],
                customer["kra_pin"] or "",
                services.buyer_address(customer["address"], customer["town"], customer["county"]),
                customer["account_number"], net_t, exc_t, vat_t,
                gross_t, Decimal(0), Decimal(0), "", now,
            ))  # fmt: skip
            line_sets.append(lines)
            totals.append((gross_t, exc_t, vat_t, revenue))
        invoice_ids = insert_rows(Invoice, _INVOICE_FIELDS, invoice_rows, returning=True)
        insert_rows(
            InvoiceLine,
            _LINE_FIELDS,
            [(invoice_id, *line) for invoice_id, lines in zip(invoice_ids, line_sets, strict=True) for line in lines],
        )
        for offset in range(0, len(invoice_ids), 500):
            Invoice.objects.filter(pk__in=invoice_ids[offset : offset + 500]).update(status=Invoice.Status.ISSUED)
        actor = audit.current_actor().label[:120]
        entry_rows = [
            (JournalEntry.Kind.INVOICE, now, f"Invoice {row[3]} to {row[14]} {row[11]}"[:200], self.currency,
             "billing.invoice", str(invoice_id), None, actor)
            for invoice_id, row in zip(invoice_ids, invoice_rows, strict=True)
        ]  # fmt: skip
        entry_ids = insert_rows(JournalEntry, _ENTRY_FIELDS, entry_rows, returning=True)
        ar = self.account_ids[accounts.ACCOUNTS_RECEIVABLE]
        excise_acc, vat_acc = self.account_ids[accounts.EXCISE_PAYABLE], self.account_ids[accounts.VAT_PAYABLE]
        postings = []
        for entry_id, bill, (gross_t, exc_t, vat_t, revenue) in zip(entry_ids, bills, totals, strict=True):
            lines = [(ar, bill.customer_id, gross_t)]
            lines += [(self.account_ids[accounts.REVENUE_BY_TAX_CLASS[cls]], None, -amount)
                      for cls, amount in sorted(revenue.items())]  # fmt: skip
            lines += [(excise_acc, None, -exc_t), (vat_acc, None, -vat_t)]
            if sum(amount for _, _, amount in lines) != 0:  # pragma: no cover - the split always adds up
                raise IntegrityError(f"unbalanced invoice entry for subscription {bill.subscription_id}")
            postings += [(entry_id, account, customer, amount) for account, customer, amount in lines if amount != 0]
        insert_rows(Posting, _POSTING_FIELDS, postings)
        return [(bill, total[0]) for bill, total in zip(bills, totals, strict=True)]

    def _bill_one(self, bill: Bill) -> Invoice:
        """The one-by-one path: the same invoice through the billing services (one-off add-ons,
        or a batch the database refused)."""
        sub = Subscription.objects.select_related("customer", "plan").get(pk=bill.subscription_id)
        invoice = services.create_draft_invoice(
            sub.customer, subscription=sub, period_start=bill.period_start, period_end=bill.period_end
        )
        tax_day = clock.local(bill.period_start).date()
        for c in bill.charges:
            services.add_line(
                invoice, kind=c.kind, description=c.description, unit_price=c.unit_price, quantity=c.quantity,
                tax_class=c.tax_class, period_start=c.period_start, period_end=c.period_end, subscription=sub,
                plan=self._plan(c.plan_id) if c.plan_id else None,
                addon=AddOn.objects.get(pk=c.addon_id) if c.addon_id else None, tax_date=tax_day,
            )  # fmt: skip
        for item in SubscriptionAddOn.objects.filter(
            subscription=sub, addon__billing=AddOn.Billing.ONE_OFF, billed_on_line__isnull=True,
            started_at__lt=bill.period_end,
        ).order_by("pk"):  # fmt: skip
            services.add_addon_line(invoice, item)
        return services.issue_invoice(invoice, issue_date=self.issue_date)

    def _advance(self, bills: list[Bill], now: dt.datetime) -> None:
        """Move each service on past its bill in `bills` (one per service) to its next period."""
        update_rows(
            Subscription,
            ["current_period_start", "current_period_end", "next_bill_at", "updated_at"],
            [(b.period_start, b.period_end, b.period_end, now, b.subscription_id) for b in bills],
        )

    def _apply_credit(self, customer_ids: set[int]) -> None:
        """Customers with unapplied money get it applied to the invoices just written."""
        if not customer_ids:
            return
        from wavu.payments.models import Payment
        from wavu.payments.services import apply_customer_credit

        with_credit = (
            Payment.objects.filter(customer_id__in=customer_ids, status=Payment.Status.RECEIVED)
            .filter(amount__gt=F("amount_allocated") + F("amount_refunded"))
            .values_list("customer_id", flat=True)
            .distinct()
        )
        for customer_id in sorted(set(with_credit)):
            apply_customer_credit(customer_id)
