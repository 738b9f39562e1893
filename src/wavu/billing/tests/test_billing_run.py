"""The daily postpaid billing run: every due service billed exactly once, with exact amounts."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from io import StringIO
from unittest import mock

import pytest
import time_machine
from django.core.management import CommandError, call_command
from django.db import connection

from wavu.billing import runs, services
from wavu.billing.models import BillingRun, BillingRunFlag, Invoice
from wavu.catalog.models import AddOn, PlanPrice
from wavu.ledger.models import JournalEntry
from wavu.ledger.selectors import customer_balance, trial_balance
from wavu.payments.services import record_manual_payment
from wavu.subscriptions import services as subs
from wavu.subscriptions.models import Subscription
from wavu.testing.concurrency import race, side_by_side
from wavu.testing.factories import CustomerFactory, PlanFactory, SubscriptionFactory

from .conftest import at, attach_addon

pytestmark = pytest.mark.django_db


def on(day: dt.date, hour: int = 0, minute: int = 30):
    return time_machine.travel(at(day, dt.time(hour, minute)), tick=False)


def started(plan, *, day: dt.date, anchor: int | None = None, hour: int = 10, customer=None):
    """A postpaid service activated on `day` (optionally with a billing day of the month)."""
    sub = SubscriptionFactory(plan=plan, status="pending", **({"customer": customer} if customer else {}))
    if anchor:
        subs.update_subscription(sub, billing_anchor_day=anchor)
    with on(day, hour):
        subs.activate(sub)
    return sub


def invoices_of(sub) -> list[Invoice]:
    return list(Invoice.objects.filter(subscription=sub).order_by("period_start"))


def local_day(value: dt.datetime) -> dt.date:
    from wavu.core import clock

    return clock.local(value).date()


def run_on(day: dt.date, **kwargs) -> runs.RunSummary:
    with on(day, 23, 0):
        return runs.run_billing(day, **kwargs)


def test_a_service_anchored_on_the_first_gets_a_prorated_first_bill_then_full_months(plan):
    sub = started(plan, day=dt.date(2026, 11, 15), anchor=1)

    first = run_on(dt.date(2026, 11, 15))
    assert (first.billed, first.skipped, first.flagged) == (1, 0, 0)
    (november,) = invoices_of(sub)
    # 15–30 November is 16 of November's 30 days: 2,999 × 16 / 30 = 1,599.466… → 1,599.47, rounded once
    assert november.total == Decimal("1599.47")
    assert november.lines.get().description == "Home Fibre 20 Mbps, 15 Nov 2026 – 30 Nov 2026 (16 of 30 days)"

    for day in (dt.date(2026, 11, 16), dt.date(2026, 11, 30)):
        assert run_on(day).billed == 0
    for day in (dt.date(2026, 12, 1), dt.date(2027, 1, 1), dt.date(2027, 2, 1)):
        assert run_on(day).billed == 1

    bills = invoices_of(sub)
    assert [local_day(i.period_start) for i in bills] == [
        dt.date(2026, 11, 15), dt.date(2026, 12, 1), dt.date(2027, 1, 1), dt.date(2027, 2, 1)
    ]  # fmt: skip
    assert [i.total for i in bills[1:]] == [Decimal("2999.00")] * 3
    assert [i.lines.get().description for i in bills[1:]][2] == "Home Fibre 20 Mbps, 1 Feb 2027 – 28 Feb 2027"
    assert customer_balance(sub.customer_id) == Decimal("1599.47") + 3 * Decimal("2999.00")
    assert trial_balance()["balanced"]


def test_a_service_anchored_on_the_31st_bills_on_the_last_day_of_short_months(plan):
    sub = started(plan, day=dt.date(2027, 1, 31))
    assert sub.billing_anchor_day == 31

    days_billed = []
    day = dt.date(2027, 1, 31)
    while day <= dt.date(2027, 5, 31):
        if run_on(day).billed:
            days_billed.append(day)
        day += dt.timedelta(days=1)

    assert days_billed == [
        dt.date(2027, 1, 31), dt.date(2027, 2, 28), dt.date(2027, 3, 31), dt.date(2027, 4, 30), dt.date(2027, 5, 31)
    ]  # fmt: skip
    bills = invoices_of(sub)
    assert all(i.total == Decimal("2999.00") for i in bills)  # every period is a full month, none prorated
    assert [i.lines.get().description for i in bills[:3]] == [
        "Home Fibre 20 Mbps, 31 Jan 2027 – 27 Feb 2027",
        "Home Fibre 20 Mbps, 28 Feb 2027 – 30 Mar 2027",
        "Home Fibre 20 Mbps, 31 Mar 2027 – 29 Apr 2027",
    ]
    sub.refresh_from_db()
    assert local_day(sub.next_bill_at) == dt.date(2027, 6, 30)


def test_running_a_day_twice_bills_nothing_more_and_counts_as_a_second_attempt(plan):
    services_ = [started(plan, day=dt.date(2026, 12, 1)) for _ in range(3)]

    first = run_on(dt.date(2026, 12, 1))
    again = run_on(dt.date(2026, 12, 1))

    assert (first.billed, again.billed, again.skipped) == (3, 0, 0)
    assert again.resumed and BillingRun.objects.get(run_date=dt.date(2026, 12, 1)).attempts == 2
    assert all(len(invoices_of(s)) == 1 for s in services_)
    assert JournalEntry.objects.filter(kind="invoice").count() == 3


def test_a_run_that_crashes_half_way_is_resumed_and_bills_every_service_exactly_once(plan):
    services_ = [started(plan, day=dt.date(2026, 12, 1)) for _ in range(10)]
    real = runs._BatchWriter.bill_batch
    calls = {"n": 0}

    def crash_on_third_batch(self, ids, cutoff):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("worker killed")
        return real(self, ids, cutoff)

    with mock.patch.object(runs._BatchWriter, "bill_batch", crash_on_third_batch), pytest.raises(RuntimeError):
        run_on(dt.date(2026, 12, 1), batch_size=3)
    crashed = BillingRun.objects.get()
    assert crashed.status == BillingRun.Status.FAILED and "worker killed" in crashed.last_error
    assert Invoice.objects.count() == 6  # two batches of three were committed

    resumed = run_on(dt.date(2026, 12, 1), batch_size=3)

    assert resumed.billed == 4
    assert [len(invoices_of(s)) for s in services_] == [1] * 10
    run = BillingRun.objects.get()
    assert (run.status, run.attempts, run.billed_count) == (BillingRun.Status.COMPLETED, 2, 10)
    assert run.total_amount == 10 * Decimal("2999.00")
    numbers = sorted(Invoice.objects.values_list("number", flat=True))
    assert numbers == [f"INV-{n:06d}" for n in range(1, 11)]  # gap-free across the crash


def test_a_service_without_a_price_is_flagged_and_skipped_and_the_run_goes_on(plan):
    good = started(plan, day=dt.date(2026, 12, 1))
    unpriced_plan = PlanFactory(name="Business 50 Mbps")
    bad = started(unpriced_plan, day=dt.date(2026, 12, 1))
    PlanPrice.objects.filter(plan=unpriced_plan).update(valid_from=at(dt.date(2027, 6, 1)))

    summary = run_on(dt.date(2026, 12, 1))

    assert (summary.billed, summary.flagged) == (1, 1)
    flag = BillingRunFlag.objects.get()
    assert flag.subscription == bad and flag.code == "no_price" and "Business 50 Mbps" in flag.reason
    assert len(invoices_of(good)) == 1 and invoices_of(bad) == []
    bad.refresh_from_db()
    assert local_day(bad.next_bill_at) == dt.date(2026, 12, 1)  # still due

    PlanPrice.objects.filter(plan=unpriced_plan).update(valid_from=at(dt.date(2026, 1, 1)))
    assert run_on(dt.date(2026, 12, 2)).billed == 1
    assert len(invoices_of(bad)) == 1


def test_add_ons_are_billed_with_the_plan_and_a_one_off_only_once(plan):
    sub = started(plan, day=dt.date(2026, 12, 1))
    attach_addon(sub, name="Static IP", price="500.00", started_at=at(dt.date(2026, 11, 20)))
    attach_addon(sub, name="Installation", billing=AddOn.Billing.ONE_OFF, price="1500.00",
                 started_at=at(dt.date(2026, 11, 20)))  # fmt: skip

    run_on(dt.date(2026, 12, 1))
    run_on(dt.date(2027, 1, 1))

    december, january = invoices_of(sub)
    assert [(ln.description, ln.gross) for ln in december.lines.all()] == [
        ("Home Fibre 20 Mbps, 1 Dec 2026 – 31 Dec 2026", Decimal("2999.00")),
        ("Static IP, 1 Dec 2026 – 31 Dec 2026", Decimal("500.00")),
        ("Installation", Decimal("1500.00")),
    ]
    assert [ln.description for ln in january.lines.all()] == [
        "Home Fibre 20 Mbps, 1 Jan 2027 – 31 Jan 2027",
        "Static IP, 1 Jan 2027 – 31 Jan 2027",
    ]
    assert january.total == Decimal("3499.00")


def test_the_run_writes_what_the_one_by_one_services_write(plan):
    """The set-based writer and `invoice_subscription_period` give the same invoice, line and books."""
    bulk = started(plan, day=dt.date(2026, 12, 1))
    single = started(plan, day=dt.date(2026, 12, 1))
    with on(dt.date(2026, 12, 1), 9):
        reference = services.invoice_subscription_period(single, single.current_period_start, single.current_period_end)
    run_on(dt.date(2026, 12, 1))

    (made,) = invoices_of(bulk)
    fields = ("status", "total", "net_total", "excise_total", "vat_total", "issue_date", "due_date", "currency",
              "series")  # fmt: skip
    assert {f: getattr(made, f) for f in fields} == {f: getattr(reference, f) for f in fields}
    assert (made.period_start, made.period_end) == (bulk.current_period_start, bulk.current_period_end)
    assert made.buyer_account_number == bulk.customer.account_number and made.buyer_name == bulk.customer.name
    line_fields = ("kind", "description", "gross", "net", "excise", "vat", "tax_class", "tax_band", "vat_rate",
                   "excise_rate", "quantity", "unit_price")  # fmt: skip
    assert [{f: getattr(ln, f) for f in line_fields} for ln in made.lines.all()] == [
        {f: getattr(ln, f) for f in line_fields} for ln in reference.lines.all()
    ]

    def books(invoice):
        entry = JournalEntry.objects.get(source_type="billing.invoice", source_id=str(invoice.pk))
        return sorted((p.account.code, p.amount, p.customer_id is not None) for p in entry.postings.all())

    assert books(made) == books(reference)
    assert single.invoices.count() == 1  # the run saw the existing invoice and skipped that service
    assert trial_balance()["balanced"]


def test_credit_on_the_account_pays_the_new_invoice(plan):
    customer = CustomerFactory()
    sub = started(plan, day=dt.date(2026, 12, 1), customer=customer)
    with on(dt.date(2026, 11, 28), 12):
        record_manual_payment(method="cash", reference="RC-1", amount="5000.00", customer=customer)

    run_on(dt.date(2026, 12, 1))

    (december,) = invoices_of(sub)
    assert december.status == Invoice.Status.PAID
    assert customer_balance(customer.pk) == Decimal("-2001.00")


def test_suspended_services_are_billed_and_paused_and_cancelled_ones_are_not(plan):
    suspended = started(plan, day=dt.date(2026, 11, 1))
    paused = started(plan, day=dt.date(2026, 11, 1))
    cancelled = started(plan, day=dt.date(2026, 11, 1))
    run_on(dt.date(2026, 11, 1))
    with on(dt.date(2026, 11, 20), 12):
        subs.suspend(suspended, reason="abuse")
        subs.pause(paused, reason="travelling")
        subs.cancel(cancelled, reason="moved away")

    summary = run_on(dt.date(2026, 12, 1))

    assert summary.billed == 1
    assert (len(invoices_of(suspended)), len(invoices_of(paused)), len(invoices_of(cancelled))) == (2, 1, 1)


def test_a_due_downgrade_takes_over_at_the_period_end(plan):
    sub = started(plan, day=dt.date(2026, 12, 1))
    run_on(dt.date(2026, 12, 1))
    cheaper = PlanFactory(name="Home Fibre 10 Mbps", with_price=Decimal("1999.00"))
    Subscription.objects.filter(pk=sub.pk).update(pending_plan=cheaper, pending_plan_at=at(dt.date(2027, 1, 1),
                                                                                          dt.time(0)))  # fmt: skip

    run_on(dt.date(2027, 1, 1))

    sub.refresh_from_db()
    assert sub.plan == cheaper and sub.pending_plan is None
    assert invoices_of(sub)[-1].lines.get().description == "Home Fibre 10 Mbps, 1 Jan 2027 – 31 Jan 2027"
    assert sub.events.filter(kind="plan_changed").get().data["to_plan"] == cheaper.code


def test_billing_a_day_in_the_future_is_refused_and_writes_nothing(plan):
    started(plan, day=dt.date(2026, 12, 1))
    with on(dt.date(2026, 12, 1)), pytest.raises(runs.FutureBillingRun):
        runs.run_billing(dt.date(2026, 12, 2))
    assert not BillingRun.objects.exists() and not Invoice.objects.exists()


def test_the_command_prints_a_summary_and_refuses_bad_dates(plan):
    started(plan, day=dt.date(2026, 12, 1))
    out = StringIO()
    with on(dt.date(2026, 12, 1), 23):
        call_command("billing_run", "--date", "2026-12-01", stdout=out)
        with pytest.raises(CommandError, match="not a date"):
            call_command("billing_run", "--date", "1/12/2026")
        with pytest.raises(CommandError, match="future"):
            call_command("billing_run", "--date", "2027-01-01")
    text = out.getvalue()
    assert "Billing run 2026-12-01" in text and "invoices               1" in text
    assert "caught up              0" in text and "still due              0   services\n" in text
    assert "2,999.00 KES" in text


@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)
def test_two_workers_running_the_same_billing_run_never_invoice_twice(reference_data):
    plan = PlanFactory(name="Home Fibre 20 Mbps", with_price=Decimal("2999.00"))
    services_ = [started(plan, day=dt.date(2026, 12, 1)) for _ in range(60)]
    with on(dt.date(2026, 12, 1), 23):
        _, errors = race(2, lambda: runs.run_billing(dt.date(2026, 12, 1), batch_size=7))

    assert errors == []
    assert [len(invoices_of(s)) for s in services_] == [1] * 60
    assert JournalEntry.objects.filter(kind="invoice").count() == 60
    assert Invoice.objects.count() == 60 and BillingRun.objects.get().billed_count == 60
    assert connection.vendor == "postgresql"


@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)
def test_two_task_workers_given_the_billing_run_twice_bill_each_service_once(reference_data):
    """The scheduler fired the day's run twice (say, two schedulers before the slot row existed):
    two `wavu worker`s take one job each and run them side by side."""
    from wavu.billing.tasks import billing_run
    from wavu.core.tasks import WavuWorker

    plan = PlanFactory(name="Home Fibre 20 Mbps", with_price=Decimal("2999.00"))
    services_ = [started(plan, day=dt.date(2026, 12, 1)) for _ in range(80)]
    with on(dt.date(2026, 12, 1), 23):
        billing_run.enqueue("2026-12-01")
        billing_run.enqueue("2026-12-01")
        workers = [WavuWorker(batch=True, interval=0, worker_id=f"wavu-billing-{i}") for i in range(2)]
        _, errors = side_by_side(*(worker.run for worker in workers), timeout=120)

    assert errors == [] and sum(w.tasks_run for w in workers) == 2
    assert [len(invoices_of(s)) for s in services_] == [1] * 80
    assert JournalEntry.objects.filter(kind="invoice").count() == 80
    run = BillingRun.objects.get()
    assert (run.billed_count, run.attempts) == (80, 2)
