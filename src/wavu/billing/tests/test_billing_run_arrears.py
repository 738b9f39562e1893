"""A billing run bills everything due by its date: every missed period of every service, each on its own
invoice in period order, in one run; a second run of the same day issues nothing (issue 10, item 5)."""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal
from io import StringIO
from unittest import mock

import pytest
import time_machine
from django.core.management import call_command
from django.db import IntegrityError, connection

from wavu.billing import runs, services
from wavu.billing.models import BillingRun, BillingRunFlag, Invoice
from wavu.catalog.models import AddOn, PlanPrice
from wavu.catalog.services import set_plan_price
from wavu.core import clock
from wavu.core.errors import DomainError
from wavu.ledger.selectors import customer_balance, trial_balance
from wavu.payments.services import record_manual_payment
from wavu.subscriptions import services as subs
from wavu.subscriptions.models import Subscription
from wavu.subscriptions.periods import period_for
from wavu.testing.concurrency import race
from wavu.testing.factories import CustomerFactory, PlanFactory, SubscriptionFactory

from .conftest import at, attach_addon

pytestmark = pytest.mark.django_db

DECEMBER_1 = dt.date(2026, 12, 1)


def on(day: dt.date, hour: int = 23, minute: int = 0):
    return time_machine.travel(at(day, dt.time(hour, minute)), tick=False)


def started(plan, *, day: dt.date, anchor: int | None = None, customer=None):
    """A postpaid service activated at 10:00 on `day` (optionally with a billing day of the month)."""
    sub = SubscriptionFactory(plan=plan, status="pending", **({"customer": customer} if customer else {}))
    if anchor:
        subs.update_subscription(sub, billing_anchor_day=anchor)
    with on(day, 10, 0):
        subs.activate(sub)
    return sub


def run_on(day: dt.date, **kwargs) -> runs.RunSummary:
    with on(day):
        return runs.run_billing(day, **kwargs)


def invoices_of(sub) -> list[Invoice]:
    return list(Invoice.objects.filter(subscription=sub).order_by("period_start"))


def starts(sub) -> list[dt.date]:
    return [clock.local(i.period_start).date() for i in invoices_of(sub)]


def numbered_in_period_order(sub) -> bool:
    bills = invoices_of(sub)
    return [i.number for i in bills] == sorted(i.number for i in bills)


def test_a_service_missed_for_three_months_is_brought_up_to_date_by_one_run(plan):
    customer = CustomerFactory()
    sub = started(plan, day=dt.date(2026, 9, 15), anchor=1, customer=customer)
    run_on(dt.date(2026, 9, 15))  # 15–30 Sep, 16 of 30 days: 1,599.47
    with on(dt.date(2026, 9, 20), 12):
        record_manual_payment(method="cash", reference="RC-0920", amount="5000.00", customer=customer)
    with on(dt.date(2026, 10, 20), 12):  # the price goes up from 1 November
        set_plan_price(plan, "3199.00", valid_from=dt.date(2026, 11, 1), reason="new tariff")

    # nobody ran the billing on 1 Oct, 1 Nov or 1 Dec: one run on 1 Dec catches up the three months
    summary = run_on(DECEMBER_1)

    assert (summary.billed, summary.caught_up, summary.skipped, summary.flagged) == (3, 2, 0, 0)
    assert (summary.due_at_start, summary.remaining) == (1, 0)
    assert summary.total_amount == Decimal("2999.00") + 2 * Decimal("3199.00")
    september, *caught_up = invoices_of(sub)
    assert [(clock.local(i.period_start).date(), clock.local(i.period_end).date(), i.total) for i in caught_up] == [
        (dt.date(2026, 10, 1), dt.date(2026, 11, 1), Decimal("2999.00")),  # each period at its own price
        (dt.date(2026, 11, 1), dt.date(2026, 12, 1), Decimal("3199.00")),
        (dt.date(2026, 12, 1), dt.date(2027, 1, 1), Decimal("3199.00")),
    ]
    assert [i.lines.get().description for i in caught_up] == [
        "Home Fibre 20 Mbps, 1 Oct 2026 – 31 Oct 2026",
        "Home Fibre 20 Mbps, 1 Nov 2026 – 30 Nov 2026",
        "Home Fibre 20 Mbps, 1 Dec 2026 – 31 Dec 2026",
    ]
    assert [i.number for i in invoices_of(sub)] == ["INV-000001", "INV-000002", "INV-000003", "INV-000004"]
    assert {(i.issue_date, i.due_date) for i in caught_up} == {(DECEMBER_1, dt.date(2026, 12, 8))}
    # the credit left after September (5,000 − 1,599.47 = 3,400.53) pays the oldest first
    assert [(i.status, i.amount_paid) for i in caught_up] == [
        (Invoice.Status.PAID, Decimal("2999.00")),
        (Invoice.Status.PARTIALLY_PAID, Decimal("401.53")),
        (Invoice.Status.ISSUED, Decimal("0.00")),
    ]
    assert customer_balance(customer.pk) == Decimal("1599.47") + Decimal("2999.00") + 2 * Decimal("3199.00") - 5000
    sub.refresh_from_db()
    assert (sub.current_period_start, sub.current_period_end) == (caught_up[-1].period_start, caught_up[-1].period_end)
    assert clock.local(sub.next_bill_at).date() == dt.date(2027, 1, 1)

    again = run_on(DECEMBER_1)

    assert (again.billed, again.caught_up, again.skipped, again.remaining) == (0, 0, 0, 0)
    assert len(invoices_of(sub)) == 4
    assert BillingRun.objects.get(run_date=DECEMBER_1).billed_count == 3
    assert trial_balance()["balanced"]


def test_a_downgrade_due_between_missed_periods_takes_over_from_that_period(plan):
    sub = started(plan, day=dt.date(2026, 10, 1), anchor=1)
    cheaper = PlanFactory(name="Home Fibre 10 Mbps", with_price=Decimal("1999.00"))
    Subscription.objects.filter(pk=sub.pk).update(pending_plan=cheaper, pending_plan_at=at(dt.date(2026, 11, 1),
                                                                                          dt.time(0)))  # fmt: skip

    summary = run_on(DECEMBER_1)

    assert (summary.billed, summary.caught_up) == (3, 2)
    assert [i.lines.get().description for i in invoices_of(sub)] == [
        "Home Fibre 20 Mbps, 1 Oct 2026 – 31 Oct 2026",
        "Home Fibre 10 Mbps, 1 Nov 2026 – 30 Nov 2026",
        "Home Fibre 10 Mbps, 1 Dec 2026 – 31 Dec 2026",
    ]
    assert [i.total for i in invoices_of(sub)] == [Decimal("2999.00"), Decimal("1999.00"), Decimal("1999.00")]
    sub.refresh_from_db()
    assert sub.plan == cheaper and sub.pending_plan is None


def _an_isp_with_arrears(plan):
    """Services at different arrears on 1 Dec 2026, nobody having run the billing since they started."""
    s = {}
    s["new"] = started(plan, day=DECEMBER_1, anchor=1)  # 1 period: December
    s["two_months"] = started(plan, day=dt.date(2026, 10, 1), anchor=1)  # Oct, Nov, Dec
    s["on_the_15th"] = started(plan, day=dt.date(2026, 7, 15))  # 15 Jul … 15 Nov: 5 periods
    s["on_the_31st"] = started(plan, day=dt.date(2026, 8, 31))  # 31 Aug, 30 Sep, 31 Oct, 30 Nov: 4
    s["suspended"] = started(plan, day=dt.date(2026, 9, 1), anchor=1)  # Sep … Dec: 4, suspension cuts access only
    with on(dt.date(2026, 9, 20), 12):
        subs.suspend(s["suspended"], reason="abuse")
    s["add_ons"] = started(plan, day=dt.date(2026, 10, 15), anchor=1)  # 15–31 Oct prorated, Nov, Dec
    attach_addon(s["add_ons"], name="Static IP", price="500.00", started_at=at(dt.date(2026, 10, 15)))
    attach_addon(s["add_ons"], name="Installation", billing=AddOn.Billing.ONE_OFF, price="1500.00",
                 started_at=at(dt.date(2026, 10, 15)))  # fmt: skip
    s["by_hand"] = started(plan, day=dt.date(2026, 9, 1), anchor=1)  # Sep, Nov, Dec; October invoiced by staff
    october = period_for(plan, at(dt.date(2026, 10, 1), dt.time(0)), 1)
    with on(dt.date(2026, 10, 2), 9):
        services.invoice_subscription_period(s["by_hand"], *october)
    s["paused"] = started(plan, day=dt.date(2026, 11, 1), anchor=1)
    s["cancelled"] = started(plan, day=dt.date(2026, 11, 1), anchor=1)
    with on(dt.date(2026, 11, 20), 12):
        subs.pause(s["paused"], reason="travelling")
        subs.cancel(s["cancelled"], reason="moved away")
    unpriced = PlanFactory(name="Business 50 Mbps")
    s["unpriced"] = started(unpriced, day=dt.date(2026, 10, 1), anchor=1)
    PlanPrice.objects.filter(plan=unpriced).update(valid_from=at(dt.date(2027, 6, 1)))
    return s


EXPECTED_STARTS = {
    "new": [dt.date(2026, 12, 1)],
    "two_months": [dt.date(2026, 10, 1), dt.date(2026, 11, 1), dt.date(2026, 12, 1)],
    "on_the_15th": [dt.date(2026, m, 15) for m in (7, 8, 9, 10, 11)],
    "on_the_31st": [dt.date(2026, 8, 31), dt.date(2026, 9, 30), dt.date(2026, 10, 31), dt.date(2026, 11, 30)],
    "suspended": [dt.date(2026, m, 1) for m in (9, 10, 11, 12)],
    "add_ons": [dt.date(2026, 10, 15), dt.date(2026, 11, 1), dt.date(2026, 12, 1)],
    "by_hand": [dt.date(2026, m, 1) for m in (9, 10, 11, 12)],
    "paused": [],
    "cancelled": [],
    "unpriced": [],
}
NEXT_BILL = {
    "new": dt.date(2027, 1, 1),
    "two_months": dt.date(2027, 1, 1),
    "on_the_15th": dt.date(2026, 12, 15),
    "on_the_31st": dt.date(2026, 12, 31),
    "suspended": dt.date(2027, 1, 1),
    "add_ons": dt.date(2027, 1, 1),
    "by_hand": dt.date(2027, 1, 1),
}


def test_one_run_brings_an_isp_with_arrears_up_to_date_and_later_runs_find_nothing(plan):
    s = _an_isp_with_arrears(plan)
    assert Invoice.objects.count() == 1  # the one staff wrote

    out = StringIO()
    with on(DECEMBER_1):
        call_command("billing_run", "--date", "2026-12-01", "--no-progress", stdout=out)

    counts = [Invoice.objects.count()]
    assert {key: starts(sub) for key, sub in s.items()} == EXPECTED_STARTS
    for key, day in NEXT_BILL.items():
        s[key].refresh_from_db()
        assert clock.local(s[key].next_bill_at).date() == day, key
    assert all(numbered_in_period_order(sub) for key, sub in s.items() if key != "by_hand")
    # by hand: October was INV-000001 (staff, in October); the run numbered September, November, December
    assert [i.number > "INV-000001" for i in invoices_of(s["by_hand"])] == [True, False, True, True]
    assert all(i.total == Decimal("2999.00") for key in ("on_the_15th", "on_the_31st", "suspended")
               for i in invoices_of(s[key]))  # fmt: skip
    october, november, december = invoices_of(s["add_ons"])
    assert [(ln.description, ln.gross) for ln in october.lines.all()] == [
        ("Home Fibre 20 Mbps, 15 Oct 2026 – 31 Oct 2026 (17 of 31 days)", Decimal("1644.61")),  # 2,999 × 17/31
        ("Static IP, 15 Oct 2026 – 31 Oct 2026 (17 of 31 days)", Decimal("274.19")),  # 500 × 17/31
        ("Installation", Decimal("1500.00")),  # the one-off, on the first invoice only
    ]
    assert (november.total, december.total) == (Decimal("3499.00"), Decimal("3499.00"))
    assert BillingRunFlag.objects.get().subscription == s["unpriced"]

    text = out.getvalue()
    # 1 + 3 + 5 + 4 + 4 + 3 + 3 invoices for 7 services: 16 of them arrears; October of "by_hand" skipped
    assert re.search(r"due at start +8 ", text)  # paused and cancelled services are not due
    assert re.search(r"invoices +23 ", text) and re.search(r"caught up +16 ", text)
    assert re.search(r"skipped +1 ", text) and re.search(r"flagged +1 ", text)
    assert re.search(r"still due +1 +services \(flagged", text)
    run = BillingRun.objects.get()
    assert (run.billed_count, run.skipped_count, run.flagged_count) == (23, 1, 1)

    for day in (DECEMBER_1, DECEMBER_1, dt.date(2026, 12, 2)):
        summary = run_on(day)
        assert (summary.billed, summary.caught_up, summary.remaining) == (0, 0, 1)
        counts.append(Invoice.objects.count())
    assert counts == [24, 24, 24, 24]
    assert trial_balance()["balanced"]


def test_a_run_killed_in_the_middle_of_catching_up_is_resumed_and_bills_each_period_once(plan):
    behind = [started(plan, day=dt.date(2026, 9, 1), anchor=1) for _ in range(4)]  # 4 periods each
    current = [started(plan, day=DECEMBER_1, anchor=1) for _ in range(3)]  # 1 period each
    real = runs._BatchWriter._apply_credit
    calls = {"n": 0}

    def killed_at_the_end_of_the_second_batch(self, customer_ids):
        calls["n"] += 1
        if calls["n"] == 2:  # batch 2 has written its invoices and moved its services on, not committed
            assert Invoice.objects.count() == 12 + 4 + 2
            raise RuntimeError("worker killed")
        return real(self, customer_ids)

    with (
        mock.patch.object(runs._BatchWriter, "_apply_credit", killed_at_the_end_of_the_second_batch),
        pytest.raises(RuntimeError, match="worker killed"),
    ):
        run_on(DECEMBER_1, batch_size=3)
    assert Invoice.objects.count() == 12  # the first batch (3 services × 4 periods) committed; the second rolled back
    assert BillingRun.objects.get().status == BillingRun.Status.FAILED

    resumed = run_on(DECEMBER_1, batch_size=3)

    assert (resumed.billed, resumed.caught_up, resumed.skipped) == (4 + 3, 3, 0)
    assert [len(invoices_of(s)) for s in behind] == [4] * 4
    assert [len(invoices_of(s)) for s in current] == [1] * 3
    assert all(starts(s) == [dt.date(2026, m, 1) for m in (9, 10, 11, 12)] for s in behind)
    assert all(numbered_in_period_order(s) for s in behind)
    numbers = sorted(Invoice.objects.values_list("number", flat=True))
    assert numbers == [f"INV-{n:06d}" for n in range(1, 20)]  # gap-free across the kill
    run = BillingRun.objects.get()
    assert (run.status, run.attempts, run.billed_count) == (BillingRun.Status.COMPLETED, 2, 19)
    assert run.total_amount == 19 * Decimal("2999.00")
    assert run_on(DECEMBER_1, batch_size=3).billed == 0


def test_a_refused_batch_bills_arrears_one_by_one_and_a_period_that_fails_stops_its_service_there(plan):
    steady = started(plan, day=dt.date(2026, 10, 1), anchor=1)
    stuck = started(plan, day=dt.date(2026, 10, 1), anchor=1)
    real_one = runs._BatchWriter._bill_one

    def refused(self, bills, now):
        if bills:
            raise IntegrityError("refused by the database")
        return []

    def november_of_stuck_fails(self, bill):
        if bill.subscription_id == stuck.pk and clock.local(bill.period_start).date() == dt.date(2026, 11, 1):
            raise DomainError("the books refused it", code="refused")
        return real_one(self, bill)

    with (
        mock.patch.object(runs._BatchWriter, "_write_invoices", refused),
        mock.patch.object(runs._BatchWriter, "_bill_one", november_of_stuck_fails),
    ):
        summary = run_on(DECEMBER_1)

    assert (summary.billed, summary.caught_up, summary.flagged, summary.remaining) == (4, 2, 1, 1)
    assert starts(steady) == [dt.date(2026, 10, 1), dt.date(2026, 11, 1), dt.date(2026, 12, 1)]
    assert numbered_in_period_order(steady)
    assert starts(stuck) == [dt.date(2026, 10, 1)]  # October billed; November failed, December waits for it
    stuck.refresh_from_db()
    assert clock.local(stuck.next_bill_at).date() == dt.date(2026, 11, 1)
    assert BillingRunFlag.objects.get().subscription == stuck

    after_the_fix = run_on(DECEMBER_1)

    assert (after_the_fix.billed, after_the_fix.caught_up, after_the_fix.remaining) == (2, 1, 0)
    assert starts(stuck) == [dt.date(2026, 10, 1), dt.date(2026, 11, 1), dt.date(2026, 12, 1)]
    assert numbered_in_period_order(stuck)
    assert trial_balance()["balanced"]


@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)
def test_two_runs_of_the_same_day_at_once_bill_each_missed_period_once(reference_data):
    plan = PlanFactory(name="Home Fibre 20 Mbps", with_price=Decimal("2999.00"))
    first_months = (dt.date(2026, 12, 1), dt.date(2026, 11, 1), dt.date(2026, 10, 1), dt.date(2026, 9, 1))
    services_ = [started(plan, day=first_months[n % 4], anchor=1) for n in range(40)]  # 1 to 4 periods behind
    expected = sum(n % 4 + 1 for n in range(40))

    with on(DECEMBER_1):
        results, errors = race(2, lambda: runs.run_billing(DECEMBER_1, batch_size=7))

    assert errors == []
    assert sum(r.billed for r in results) == expected == 100
    assert sum(r.caught_up for r in results) == expected - 40
    assert [len(invoices_of(s)) for s in services_] == [n % 4 + 1 for n in range(40)]
    assert Invoice.objects.count() == expected
    assert all(numbered_in_period_order(s) for s in services_)
    assert BillingRun.objects.get().billed_count == expected
    assert all(starts(s)[-1] == DECEMBER_1 for s in services_)
    assert connection.vendor == "postgresql"
