"""Months of an ISP's life with nobody running a script: the clock moves, the scheduler fires the
jobs of `wavu/schedule.py`, the worker runs them, and the books come out to the cent."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
import time_machine
from django.utils import timezone

from wavu.billing import plan_changes, prepaid
from wavu.billing.models import CreditNote, DunningNotice, Invoice
from wavu.catalog.models import Plan
from wavu.core.scheduler import tick
from wavu.ledger.selectors import customer_balance, trial_balance
from wavu.payments.services import record_manual_payment
from wavu.subscriptions import services as subs
from wavu.subscriptions.models import Status, SuspensionCause
from wavu.testing.factories import CustomerFactory, PlanFactory, SubscriptionFactory
from wavu.testing.tasks import run_queued_tasks

pytestmark = pytest.mark.django_db


def local(year, month, day, hour=0, minute=0) -> dt.datetime:
    return timezone.make_aware(dt.datetime(year, month, day, hour, minute))


class World:
    """The ISP's clock and its worker. `live_until` moves time in steps, and at each step the
    scheduler ticks and the worker runs everything that is ready, as `wavu worker` would."""

    def __init__(self, traveller):
        self.traveller = traveller

    def at(self, moment: dt.datetime) -> None:
        self.traveller.move_to(moment)

    def work(self) -> int:
        tick()
        return run_queued_tasks()

    def live_until(self, end: dt.datetime, step: dt.timedelta = dt.timedelta(hours=12)) -> None:
        now = timezone.now()
        while now < end:
            now = min(now + step, end)
            self.at(now)
            self.work()


@pytest.fixture
def world():
    with time_machine.travel(local(2026, 11, 1), tick=False) as traveller:
        yield World(traveller)


def postpaid(price: str, name: str) -> Plan:
    return PlanFactory(name=name, kind=Plan.Kind.POSTPAID, with_price=Decimal(price))


def pay(customer, amount: str, reference: str, django_capture_on_commit_callbacks):
    """Money in at the cash desk; the after-payment job is enqueued when the payment commits."""
    with django_capture_on_commit_callbacks(execute=True):
        record_manual_payment(method="cash", reference=reference, amount=amount, customer=customer)


def invoices(sub) -> list[Invoice]:
    return list(Invoice.objects.filter(subscription=sub).order_by("issued_at", "pk"))


def test_an_upgrade_on_day_10_of_30_credits_the_unused_old_plan_and_charges_the_new_one(
    world, django_capture_on_commit_callbacks
):
    basic, faster = postpaid("3000.00", "Home Fibre 10 Mbps"), postpaid("4500.00", "Home Fibre 20 Mbps")
    sub = SubscriptionFactory(plan=basic, status="pending")
    subs.update_subscription(sub, billing_anchor_day=1)
    subs.activate(sub, at=local(2026, 11, 1))
    world.live_until(local(2026, 11, 2))
    (november,) = invoices(sub)
    assert november.total == Decimal("3000.00")
    pay(sub.customer, "3000.00", "RC-NOV", django_capture_on_commit_callbacks)

    world.at(local(2026, 11, 11))  # 10 of November's 30 days used, 20 left
    change = plan_changes.change_plan(sub, faster, reason="customer asked for more speed")

    assert change.kind == "upgrade" and not change.scheduled
    note = CreditNote.objects.get()
    assert note.total == Decimal("2000.00")  # 3,000 × 20/30
    assert note.reason.startswith("Unused Home Fibre 10 Mbps") and note.invoice == november
    upgrade = change.invoice
    assert upgrade.total == Decimal("3000.00")  # 4,500 × 20/30
    assert upgrade.lines.get().description.startswith("Upgrade to Home Fibre 20 Mbps")
    upgrade.refresh_from_db()
    assert upgrade.amount_paid == Decimal("2000.00")  # the freed 2,000 paid part of it at once
    assert customer_balance(sub.customer_id) == Decimal("1000.00")

    world.live_until(local(2026, 12, 1, 6))
    december = invoices(sub)[-1]
    assert december.total == Decimal("4500.00")
    assert december.lines.get().description == "Home Fibre 20 Mbps, 1 Dec 2026 – 31 Dec 2026"
    assert customer_balance(sub.customer_id) == Decimal("5500.00")
    assert trial_balance()["balanced"]


def test_a_downgrade_waits_for_the_end_of_the_period(world):
    faster, basic = postpaid("4500.00", "Home Fibre 20 Mbps"), postpaid("3000.00", "Home Fibre 10 Mbps")
    sub = SubscriptionFactory(plan=faster, status="pending")
    subs.update_subscription(sub, billing_anchor_day=1)
    subs.activate(sub, at=local(2026, 11, 1))
    world.live_until(local(2026, 11, 2))

    world.at(local(2026, 11, 20, 15))
    change = plan_changes.change_plan(sub, basic, reason="cheaper please")
    assert change.scheduled and change.effective_at == local(2026, 12, 1)
    sub.refresh_from_db()
    assert sub.plan == faster and sub.pending_plan == basic  # the paid period keeps its speed
    assert not CreditNote.objects.exists()

    world.live_until(local(2026, 12, 1, 6))

    sub.refresh_from_db()
    assert sub.plan == basic and sub.pending_plan is None
    november, december = invoices(sub)
    assert (november.total, december.total) == (Decimal("4500.00"), Decimal("3000.00"))
    assert december.lines.get().description == "Home Fibre 10 Mbps, 1 Dec 2026 – 31 Dec 2026"
    scheduling = sub.events.filter(kind__in=("plan_change_scheduled", "plan_change_cancelled"))
    assert [e.kind for e in scheduling] == ["plan_change_scheduled"]
    assert sub.events.filter(kind="plan_changed").get().data["to_plan"] == basic.code


def test_prepaid_monthly_is_renewed_from_credit_twice_then_lapses(world, django_capture_on_commit_callbacks):
    plan = PlanFactory(name="Wireless 5 Mbps", kind=Plan.Kind.PREPAID, with_price=Decimal("1000.00"))
    customer = CustomerFactory()
    sub = SubscriptionFactory(plan=plan, customer=customer, status="pending")
    world.at(local(2026, 11, 5, 10))
    pay(customer, "3000.00", "RC-1105", django_capture_on_commit_callbacks)
    world.work()  # a payment does not start an uninstalled service
    sub.refresh_from_db()
    assert sub.status == Status.PENDING and customer_balance(customer.pk) == Decimal("-3000.00")

    prepaid.purchase_period(sub, reason="installed today")  # the technician switches it on
    sub.refresh_from_db()
    assert (sub.status, sub.current_period_end) == (Status.ACTIVE, local(2026, 12, 5, 10))

    world.live_until(local(2027, 3, 1), step=dt.timedelta(days=1))

    sub.refresh_from_db()
    renewals = invoices(sub)
    assert [(i.period_start, i.total, i.status) for i in renewals] == [
        (local(2026, 11, 5, 10), Decimal("1000.00"), Invoice.Status.PAID),
        (local(2026, 12, 5, 10), Decimal("1000.00"), Invoice.Status.PAID),
        (local(2027, 1, 5, 10), Decimal("1000.00"), Invoice.Status.PAID),
    ]
    assert sub.status == Status.EXPIRED and sub.current_period_end == local(2027, 2, 5, 10)
    assert [e.kind for e in sub.events.order_by("at", "pk")] == ["activated", "renewed", "renewed", "expired"]
    assert sub.events.get(kind="expired").actor_label == "job:expiry"
    assert customer_balance(customer.pk) == 0
    assert trial_balance()["balanced"]


def test_overdue_grace_suspended_then_paid_is_active_again_within_one_task_run(
    world, django_capture_on_commit_callbacks
):
    plan = postpaid("2999.00", "Home Fibre 20 Mbps")
    sub = SubscriptionFactory(plan=plan, status="pending")
    subs.update_subscription(sub, billing_anchor_day=1)
    subs.activate(sub, at=local(2026, 12, 1))
    world.live_until(local(2026, 12, 1, 6))
    (december,) = invoices(sub)
    assert december.due_date == dt.date(2026, 12, 8)

    world.live_until(local(2026, 12, 13, 23))  # reminders at −3, 0, +3 days; 5 days of grace
    sub.refresh_from_db()
    assert sub.status == Status.ACTIVE
    reminders = sub.events.filter(kind="payment_reminder").order_by("at")
    assert [e.data["offset_days"] for e in reminders] == [-3, 0, 3]
    assert [timezone.localdate(e.at) for e in reminders] == [dt.date(2026, 12, 5), dt.date(2026, 12, 8),
                                                            dt.date(2026, 12, 11)]  # fmt: skip

    world.live_until(local(2026, 12, 14, 6))  # grace is over
    sub.refresh_from_db()
    assert (sub.status, sub.suspension_cause) == (Status.SUSPENDED, SuspensionCause.OVERDUE)
    assert DunningNotice.objects.filter(invoice=december, stage="suspension").count() == 1

    world.at(local(2026, 12, 14, 9))
    pay(sub.customer, "2999.00", "RC-1214", django_capture_on_commit_callbacks)
    assert run_queued_tasks() == 2  # one task run: the after-payment job, then the resumed service's RADIUS sync

    sub.refresh_from_db()
    assert (sub.status, sub.suspension_cause) == (Status.ACTIVE, "")
    resumed = sub.events.filter(kind="resumed").get()
    assert resumed.actor_label.startswith("job:") and resumed.at == local(2026, 12, 14, 9)
    world.live_until(local(2026, 12, 31))
    sub.refresh_from_db()
    assert sub.status == Status.ACTIVE and DunningNotice.objects.filter(stage="suspension").count() == 1


def test_a_14_day_pause_stops_the_billing_clock_and_the_next_bill_comes_14_days_later(
    world, django_capture_on_commit_callbacks
):
    plan = postpaid("2999.00", "Home Fibre 20 Mbps")
    sub = SubscriptionFactory(plan=plan, status="pending")
    subs.update_subscription(sub, billing_anchor_day=1)
    subs.activate(sub, at=local(2026, 11, 1))
    world.live_until(local(2026, 11, 2, 9))
    pay(sub.customer, "2999.00", "RC-NOV", django_capture_on_commit_callbacks)
    world.live_until(local(2026, 11, 10, 9))
    subs.pause(sub, until=local(2026, 11, 24, 9), reason="travelling upcountry")

    world.live_until(local(2026, 11, 24, 12))
    sub.refresh_from_db()
    assert sub.status == Status.ACTIVE  # the pause job resumed it on the planned day
    assert sub.current_period_end == local(2026, 12, 15) and sub.next_bill_at == local(2026, 12, 15)

    world.live_until(local(2026, 12, 14, 23))
    assert len(invoices(sub)) == 1  # no bill on 1 December: the clock stood still for 14 days
    world.live_until(local(2026, 12, 15, 6))
    november, december = invoices(sub)
    # 15–31 December is 17 of December's 31 days: 2,999 × 17 / 31 = 1,644.61, then full months again
    assert december.total == Decimal("1644.61")
    assert december.lines.get().description == "Home Fibre 20 Mbps, 15 Dec 2026 – 31 Dec 2026 (17 of 31 days)"
    world.live_until(local(2027, 1, 1, 6))
    assert invoices(sub)[-1].total == Decimal("2999.00")


def test_nobody_runs_a_script_postpaid_customers_are_billed_on_their_day_every_month(world):
    plan = postpaid("2999.00", "Home Fibre 20 Mbps")
    first = SubscriptionFactory(plan=plan, status="pending")
    subs.update_subscription(first, billing_anchor_day=1)
    last = SubscriptionFactory(plan=plan, status="pending")
    subs.activate(first, at=local(2026, 11, 1))
    subs.activate(last, at=local(2026, 10, 31, 14))

    world.live_until(local(2027, 3, 2), step=dt.timedelta(days=1))

    assert [timezone.localdate(i.period_start) for i in invoices(first)] == [
        dt.date(2026, 11, 1), dt.date(2026, 12, 1), dt.date(2027, 1, 1), dt.date(2027, 2, 1), dt.date(2027, 3, 1)
    ]  # fmt: skip
    assert [timezone.localdate(i.period_start) for i in invoices(last)] == [
        dt.date(2026, 10, 31), dt.date(2026, 11, 30), dt.date(2026, 12, 31), dt.date(2027, 1, 31),
        dt.date(2027, 2, 28),
    ]  # fmt: skip
    assert all(i.total == Decimal("2999.00") for i in invoices(first) + invoices(last))
    assert trial_balance()["balanced"]


def test_after_three_months_without_a_worker_the_first_hourly_run_bills_every_missed_month(world):
    plan = postpaid("2999.00", "Home Fibre 20 Mbps")
    sub = SubscriptionFactory(plan=plan, status="pending")
    subs.update_subscription(sub, billing_anchor_day=1)
    subs.activate(sub, at=local(2026, 11, 1))
    world.live_until(local(2026, 11, 2))
    assert len(invoices(sub)) == 1

    world.at(local(2027, 2, 1, 6))  # the worker was down from 2 November to this morning
    world.work()  # only the latest missed slot fires: one billing run, for today

    bills = invoices(sub)
    assert [timezone.localdate(i.period_start) for i in bills] == [
        dt.date(2026, 11, 1), dt.date(2026, 12, 1), dt.date(2027, 1, 1), dt.date(2027, 2, 1)
    ]  # fmt: skip
    assert [i.number for i in bills] == sorted(i.number for i in bills)
    assert all(i.total == Decimal("2999.00") for i in bills)
    world.live_until(local(2027, 2, 1, 18))  # the next hourly runs find nothing left
    assert len(invoices(sub)) == 4
    assert customer_balance(sub.customer_id) == 4 * Decimal("2999.00")
    assert trial_balance()["balanced"]
