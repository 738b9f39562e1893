"""Dunning as the ISP lives it: reminders around the due date, suspension after the grace period,
reconnection the moment the debt is paid, and promises to pay granted by staff.

The December invoice of Wanjiku's home fibre is issued on 1 Dec 2026, due on 8 Dec (7 days).
With the default settings she is reminded on 5, 8 and 11 Dec, has grace until 13 Dec and is
suspended from 14 Dec while money is still outstanding.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
import time_machine
from django.core.exceptions import ValidationError
from django.db import connection
from django.test.utils import CaptureQueriesContext

from wavu.billing import dunning, services
from wavu.billing.models import DunningNotice, Invoice, PaymentPromise
from wavu.core import clock
from wavu.core.models import AuditEvent
from wavu.core.tax import TaxClass
from wavu.payments.services import record_manual_payment
from wavu.subscriptions import services as subscriptions
from wavu.subscriptions.models import LifecycleEvent, Status, Subscription, SuspensionCause
from wavu.testing.concurrency import race
from wavu.testing.factories import CustomerFactory, PlanFactory, SubscriptionFactory

from .conftest import at

pytestmark = pytest.mark.django_db

DEC_1, DEC_31 = dt.date(2026, 12, 1), dt.date(2026, 12, 31)
DUE = dt.date(2026, 12, 8)
LAST_GRACE_DAY, SUSPENSION_DAY = dt.date(2026, 12, 13), dt.date(2026, 12, 14)


def day(n: int) -> dt.date:
    return dt.date(2026, 12, n)


def on(when: dt.date, time: dt.time = dt.time(9, 30)):
    return time_machine.travel(at(when, time), tick=False)


def run_on(when: dt.date, time: dt.time = dt.time(9, 30)) -> dunning.DunningSummary:
    with on(when, time):
        return dunning.run_dunning()


def issue_december(subscription) -> Invoice:
    with on(DEC_1):
        return services.invoice_subscription_period(subscription, DEC_1, DEC_31)


def issue_one_off(customer, description="Installation", price="1160.00", when=DEC_1) -> Invoice:
    """An invoice for the whole account (no service named), like an installation charge."""
    with on(when):
        draft = services.create_draft_invoice(customer)
        services.add_one_off_line(draft, description=description, unit_price=price, tax_class=TaxClass.STANDARD)
        return services.issue_invoice(draft)


def pay(customer, amount, reference, when):
    with on(when):
        return record_manual_payment(method="cash", reference=reference, amount=amount, customer=customer)[0]


def events(subscription, kind=None):
    found = LifecycleEvent.objects.filter(subscription=subscription).order_by("at", "id")
    return list(found.filter(kind=kind) if kind else found)


def reminder_offsets(subscription) -> list[int]:
    return [e.data["offset_days"] for e in events(subscription, "payment_reminder")]


def status_of(subscription) -> tuple[str, str]:
    subscription.refresh_from_db()
    return subscription.status, subscription.suspension_cause


@pytest.fixture
def subscription(customer, plan):
    """Wanjiku's active postpaid service, in its December billing period."""
    return SubscriptionFactory(
        customer=customer, plan=plan, current_period_start=at(DEC_1, dt.time(0)), current_period_end=at(day(31))
    )


@pytest.fixture
def december_invoice(subscription):
    return issue_december(subscription)


# --- reminders --------------------------------------------------------------------------------


def test_reminders_go_out_three_days_before_on_and_three_days_after_the_due_date_once_each(
    subscription, december_invoice
):
    for n in range(1, 14):
        run_on(day(n), dt.time(7, 0))
        run_on(day(n), dt.time(19, 0))  # the job fires twice a day: nobody is reminded twice

    reminders = events(subscription, "payment_reminder")
    assert [(clock.local(e.at).date(), e.data["offset_days"]) for e in reminders] == [
        (day(5), -3),
        (day(8), 0),
        (day(11), 3),
    ]
    assert reminders[0].data == {
        "invoice_id": december_invoice.pk,
        "invoice_number": "INV-000001",
        "due_date": "2026-12-08",
        "outstanding": "2999.00",
        "currency": "KES",
        "offset_days": -3,
        "suspension_date": "2026-12-14",
    }
    assert {e.actor_label for e in reminders} == {"job:dunning"}
    notices = DunningNotice.objects.filter(invoice=december_invoice).order_by("offset_days")
    assert [(n.stage, n.offset_days) for n in notices] == [("reminder", -3), ("reminder", 0), ("reminder", 3)]
    assert AuditEvent.objects.filter(verb="dunning_reminder", actor_label="job:dunning").count() == 3
    assert status_of(subscription) == (Status.ACTIVE, "")  # still within grace


def test_a_job_down_for_five_days_records_the_missed_steps_but_sends_only_the_newest(subscription, december_invoice):
    assert run_on(day(4)).reminders_sent == 0

    summary = run_on(day(9))  # down from the 4th to the 9th: the -3 and 0 steps were missed

    assert (summary.reminders_sent, summary.reminders_missed) == (1, 1)
    assert reminder_offsets(subscription) == [0]
    assert sorted(DunningNotice.objects.values_list("offset_days", flat=True)) == [-3, 0]
    assert run_on(day(9), dt.time(15, 0)).reminders_sent == 0
    assert reminder_offsets(subscription) == [0]


def test_debt_months_old_seen_for_the_first_time_is_recorded_but_not_texted(customer, subscription):
    with on(dt.date(2026, 9, 1)):
        services.invoice_subscription_period(subscription, dt.date(2026, 9, 1), dt.date(2026, 9, 30))

    summary = run_on(DEC_1)  # e.g. the first run after dunning was switched on

    assert (summary.reminders_sent, summary.reminders_missed) == (0, 3)
    assert reminder_offsets(subscription) == [] and DunningNotice.objects.filter(stage="reminder").count() == 3
    assert summary.suspended == [subscription.pk]  # the debt itself still counts


def test_a_paid_invoice_gets_no_more_reminders(customer, subscription, december_invoice):
    run_on(day(5))
    pay(customer, "2999.00", "RCPT-1", day(6))

    for n in range(6, 20):
        run_on(day(n))

    assert reminder_offsets(subscription) == [-3]
    assert status_of(subscription) == (Status.ACTIVE, "")


def test_an_account_invoice_reminds_every_live_service_and_a_customer_without_one_is_reported(customer, plan):
    home = SubscriptionFactory(customer=customer, plan=plan)
    office = SubscriptionFactory(customer=customer, plan=plan, status=Status.PAUSED)
    gone = SubscriptionFactory(customer=customer, plan=plan, status=Status.CANCELLED)
    installation = issue_one_off(customer)
    lonely = CustomerFactory()
    router = issue_one_off(lonely, description="Router", price="4000.00")

    summary = run_on(day(5))

    assert summary.reminders_sent == 2 and summary.reminder_events == 2
    assert summary.reminders_without_service == [router.number]
    assert reminder_offsets(home) == [-3] and reminder_offsets(office) == [-3] and reminder_offsets(gone) == []
    assert events(home, "payment_reminder")[0].data["invoice_number"] == installation.number
    assert DunningNotice.objects.filter(invoice=router, offset_days=-3).exists()


def test_reminder_days_and_grace_come_from_the_settings(settings, subscription, december_invoice):
    settings.WAVU = {**settings.WAVU, "DUNNING_REMINDER_DAYS": [1], "DUNNING_GRACE_DAYS": 2}

    assert run_on(day(8)).reminders_sent == 0
    assert run_on(day(9)).reminders_sent == 1
    assert run_on(day(10)).suspended == []
    assert run_on(day(11)).suspended == [subscription.pk]
    assert reminder_offsets(subscription) == [1]


# --- suspension -------------------------------------------------------------------------------


def test_suspension_comes_only_after_the_grace_period(subscription, december_invoice):
    assert run_on(LAST_GRACE_DAY, dt.time(23, 0)).suspended == []
    assert status_of(subscription) == (Status.ACTIVE, "")

    summary = run_on(SUSPENSION_DAY)

    assert summary.suspended == [subscription.pk]
    assert status_of(subscription) == (Status.SUSPENDED, SuspensionCause.OVERDUE)
    suspended = events(subscription, "suspended")
    assert len(suspended) == 1
    assert suspended[0].data == {"cause": "overdue"} and suspended[0].actor_label == "job:dunning"
    assert suspended[0].reason == "Invoice INV-000001 overdue since 8 Dec 2026"
    notice = DunningNotice.objects.get(stage=DunningNotice.Stage.SUSPENSION)
    assert (notice.invoice_id, notice.offset_days) == (december_invoice.pk, 6)

    again = run_on(SUSPENSION_DAY, dt.time(18, 0))

    assert again.suspended == [] and again.left_alone == {"suspended": 1}
    assert len(events(subscription, "suspended")) == 1
    assert DunningNotice.objects.filter(stage=DunningNotice.Stage.SUSPENSION).count() == 1


def test_a_partly_paid_invoice_still_suspends(customer, subscription, december_invoice):
    pay(customer, "1000.00", "RCPT-PART", day(9))

    assert run_on(SUSPENSION_DAY).suspended == [subscription.pk]
    assert events(subscription, "payment_reminder")[-1].data["outstanding"] == "1999.00"


@pytest.mark.parametrize("settled_by", ["payment", "credit note"])
def test_a_paid_or_credited_invoice_never_suspends(customer, subscription, december_invoice, settled_by):
    with on(day(10)):
        if settled_by == "payment":
            record_manual_payment(method="cash", reference="RCPT-FULL", amount="2999.00", customer=customer)
        else:
            services.void_invoice(december_invoice, "Billed in error")

    for n in range(10, 31):
        run_on(day(n))

    assert status_of(subscription) == (Status.ACTIVE, "")
    assert events(subscription, "suspended") == []
    assert not DunningNotice.objects.filter(stage=DunningNotice.Stage.SUSPENSION).exists()
    assert reminder_offsets(subscription) == []  # the run on the 10th was the first: +3 was due on the 11th


@pytest.mark.parametrize("status", [Status.PAUSED, Status.EXPIRED, Status.CANCELLED])
def test_only_active_services_are_suspended_the_others_are_left_alone(subscription, december_invoice, status):
    Subscription.objects.filter(pk=subscription.pk).update(status=status)

    summary = run_on(SUSPENSION_DAY)

    assert summary.suspended == [] and summary.left_alone == {status: 1}
    assert status_of(subscription)[0] == status and events(subscription, "suspended") == []


def test_an_account_invoice_past_grace_suspends_each_active_service_of_the_customer(customer, plan):
    home = SubscriptionFactory(customer=customer, plan=plan)
    office = SubscriptionFactory(customer=customer, plan=plan)
    issue_one_off(customer)

    assert sorted(run_on(SUSPENSION_DAY).suspended) == sorted([home.pk, office.pk])
    assert status_of(home) == status_of(office) == (Status.SUSPENDED, SuspensionCause.OVERDUE)


def test_a_run_with_nothing_new_reads_the_same_few_queries_whatever_the_number_of_invoices(plan):
    def settle_in(count):
        subs = [SubscriptionFactory(plan=plan) for _ in range(count)]
        for sub in subs:
            issue_december(sub)
        run_on(SUSPENSION_DAY)  # every step recorded, every service suspended
        with on(SUSPENSION_DAY, dt.time(12, 0)), CaptureQueriesContext(connection) as queries:
            dunning.run_dunning()
        return len(queries)

    assert settle_in(2) == settle_in(8)


# --- reactivation -----------------------------------------------------------------------------


def test_a_customer_who_pays_the_overdue_invoice_is_reconnected_at_once(customer, subscription, december_invoice):
    for n in range(1, 15):
        run_on(day(n))
    assert status_of(subscription) == (Status.SUSPENDED, SuspensionCause.OVERDUE)

    pay(customer, "2999.00", "RCPT-1215", day(15))
    with on(day(15), dt.time(9, 31)):
        resumed = dunning.reactivate_if_cleared(customer.pk)

    assert [s.pk for s in resumed] == [subscription.pk]
    assert status_of(subscription) == (Status.ACTIVE, "")
    kinds = [(e.kind, e.data.get("cause"), e.actor_label) for e in events(subscription) if e.kind != "payment_reminder"]
    assert kinds == [("suspended", "overdue", "job:dunning"), ("resumed", None, "job:dunning")]
    assert events(subscription, "resumed")[0].reason == "overdue debt paid"
    with on(day(15), dt.time(9, 32)):
        assert dunning.reactivate_if_cleared(customer.pk) == []  # idempotent
    assert run_on(day(16)).suspended == []


def test_a_staff_suspension_is_never_lifted_by_a_payment(customer, subscription, december_invoice):
    with on(day(10)):
        subscriptions.suspend(subscription, reason="abuse report", actor="user:support")

    assert run_on(SUSPENSION_DAY).left_alone == {"suspended": 1}
    pay(customer, "2999.00", "RCPT-1", day(15))
    with on(day(15)):
        assert dunning.reactivate_if_cleared(customer.pk) == []
        assert dunning.reactivation_sweep() == []

    assert status_of(subscription) == (Status.SUSPENDED, SuspensionCause.STAFF)
    assert len(events(subscription, "suspended")) == 1 and events(subscription, "resumed") == []


def test_with_two_overdue_invoices_paying_one_keeps_the_service_suspended(customer, subscription, december_invoice):
    installation = issue_one_off(customer)
    run_on(SUSPENSION_DAY)

    pay(customer, "2999.00", "RCPT-1", day(15))  # pays the oldest: the December service period
    with on(day(15)):
        assert dunning.reactivate_if_cleared(customer.pk) == []
    december_invoice.refresh_from_db()
    assert december_invoice.status == Invoice.Status.PAID
    assert status_of(subscription) == (Status.SUSPENDED, SuspensionCause.OVERDUE)

    pay(customer, installation.total, "RCPT-2", day(16))
    with on(day(16)):
        assert [s.pk for s in dunning.reactivate_if_cleared(customer.pk)] == [subscription.pk]
    assert status_of(subscription) == (Status.ACTIVE, "")


def test_an_invoice_due_but_still_in_grace_does_not_keep_a_service_suspended(customer, subscription, december_invoice):
    run_on(SUSPENSION_DAY)
    with on(day(14)):
        draft = services.create_draft_invoice(customer, notes="Call-out")
        services.add_one_off_line(draft, description="Call-out", unit_price="500.00", tax_class=TaxClass.STANDARD)
        services.issue_invoice(draft, issue_date=day(3))  # due on the 10th, past grace only from the 16th

    pay(customer, "2999.00", "RCPT-1", day(15))
    with on(day(15)):
        assert len(dunning.reactivate_if_cleared(customer.pk)) == 1


def test_the_sweep_reconnects_a_service_whose_debt_was_credited(customer, subscription, december_invoice):
    run_on(SUSPENSION_DAY)
    with on(day(15)):
        services.void_invoice(december_invoice, "Outage all month")

    with on(day(15), dt.time(10, 0)):
        resumed = dunning.reactivation_sweep()

    assert [s.pk for s in resumed] == [subscription.pk]
    assert status_of(subscription) == (Status.ACTIVE, "")
    with on(day(15), dt.time(10, 5)):
        assert dunning.reactivation_sweep() == []


# --- promise to pay ---------------------------------------------------------------------------


def grant(subscription, until, reason="Salary on the 18th", when=SUSPENSION_DAY):
    with on(when, dt.time(11, 0)):
        return dunning.grant_promise_to_pay(subscription, until=until, reason=reason)


def test_a_promise_to_pay_reconnects_at_once_and_holds_suspension_off_until_its_day(subscription, december_invoice):
    run_on(SUSPENSION_DAY)
    assert status_of(subscription)[0] == Status.SUSPENDED

    promise = grant(subscription, until=day(18))

    assert status_of(subscription) == (Status.ACTIVE, "")
    assert (promise.until, promise.period_start, promise.granted_by) == (day(18), at(DEC_1, dt.time(0)), "system")
    kinds = [e.kind for e in events(subscription) if e.kind != "payment_reminder"]
    assert kinds == ["suspended", "resumed", "promise_to_pay"]
    promised = events(subscription, "promise_to_pay")[0]
    assert promised.reason == "Salary on the 18th"
    assert promised.data["until"] == "2026-12-18" and promised.data["resumed"] is True
    assert AuditEvent.objects.filter(verb="grant_promise_to_pay", object_id=str(promise.pk)).count() == 1

    for n in range(15, 19):
        summary = run_on(day(n))
        assert summary.suspended == [] and summary.held_by_promise == 1
    assert status_of(subscription)[0] == Status.ACTIVE

    assert run_on(day(19)).suspended == [subscription.pk]  # the promise lapsed with the debt still there
    assert status_of(subscription) == (Status.SUSPENDED, SuspensionCause.OVERDUE)
    notices = DunningNotice.objects.filter(stage=DunningNotice.Stage.SUSPENSION).order_by("offset_days")
    assert list(notices.values_list("offset_days", flat=True)) == [6, 11]


def test_a_promise_granted_before_suspension_keeps_the_service_on(subscription, december_invoice):
    promise = grant(subscription, until=day(15), when=day(10))

    assert run_on(SUSPENSION_DAY).suspended == [] and run_on(day(15)).suspended == []
    assert run_on(day(16)).suspended == [subscription.pk]
    assert events(subscription, "promise_to_pay")[0].data["resumed"] is False and promise.until == day(15)


def test_a_second_promise_in_the_same_period_is_refused_and_writes_nothing(subscription, december_invoice):
    run_on(SUSPENSION_DAY)
    grant(subscription, until=day(16))
    run_on(day(17))
    assert status_of(subscription)[0] == Status.SUSPENDED
    counts = (LifecycleEvent.objects.count(), AuditEvent.objects.count(), PaymentPromise.objects.count())

    with pytest.raises(dunning.PromiseAlreadyGranted) as refused:
        grant(subscription, until=day(20), when=day(17))

    assert refused.value.code == "promise_already_granted" and refused.value.status == 409
    assert (LifecycleEvent.objects.count(), AuditEvent.objects.count(), PaymentPromise.objects.count()) == counts
    assert status_of(subscription) == (Status.SUSPENDED, SuspensionCause.OVERDUE)


def test_a_promise_in_the_next_billing_period_is_allowed(customer, subscription, december_invoice):
    run_on(SUSPENSION_DAY)
    grant(subscription, until=day(16))
    # the January billing run moved the service into its next period; December is still unpaid
    with on(dt.date(2027, 1, 1)):
        services.invoice_subscription_period(subscription, dt.date(2027, 1, 1), dt.date(2027, 1, 31))
    Subscription.objects.filter(pk=subscription.pk).update(current_period_start=at(dt.date(2027, 1, 1), dt.time(0)))
    run_on(dt.date(2027, 1, 2))
    assert status_of(subscription)[0] == Status.SUSPENDED

    promise = grant(subscription, until=dt.date(2027, 1, 6), when=dt.date(2027, 1, 2))

    assert promise.period_start == at(dt.date(2027, 1, 1), dt.time(0))
    assert status_of(subscription) == (Status.ACTIVE, "") and PaymentPromise.objects.count() == 2


def test_a_service_without_a_period_takes_the_period_of_its_oldest_overdue_invoice(customer, plan):
    bare = SubscriptionFactory(customer=customer, plan=plan)
    issue_december(bare)

    promise = grant(bare, until=day(16), when=day(10))

    assert promise.period_start == at(DEC_1, dt.time(0))


@pytest.mark.parametrize(
    ("until", "code"),
    [(day(13), "promise_date_in_past"), (day(22), "promise_too_long")],
)
def test_a_promise_outside_today_to_the_maximum_days_is_refused(subscription, december_invoice, until, code):
    run_on(SUSPENSION_DAY)

    with pytest.raises(dunning.PromiseDateInvalid) as refused:
        grant(subscription, until=until)

    assert refused.value.code == code and "until" in refused.value.fields
    assert PaymentPromise.objects.count() == 0 and status_of(subscription)[0] == Status.SUSPENDED
    assert grant(subscription, until=day(21)).until == day(21)  # today + 7 days is the longest


def test_a_promise_needs_a_reason_and_overdue_debt(customer, subscription, december_invoice):
    with pytest.raises(ValidationError) as no_reason:
        grant(subscription, until=day(16), reason="  ", when=day(10))
    assert "reason" in no_reason.value.message_dict

    with pytest.raises(dunning.NoOverdueDebt):
        grant(subscription, until=day(10), when=day(8))  # due today: not overdue yet

    pay(customer, "2999.00", "RCPT-1", day(9))
    with pytest.raises(dunning.NoOverdueDebt) as paid:
        grant(subscription, until=day(16), when=day(10))
    assert paid.value.code == "no_overdue_debt" and paid.value.status == 409
    assert PaymentPromise.objects.count() == 0 and events(subscription, "promise_to_pay") == []


def test_a_promise_does_not_lift_a_staff_suspension(subscription, december_invoice):
    with on(day(10)):
        subscriptions.suspend(subscription, reason="abuse report")

    promise = grant(subscription, until=day(16), when=day(10))

    assert status_of(subscription) == (Status.SUSPENDED, SuspensionCause.STAFF)
    assert events(subscription, "promise_to_pay")[0].data["promise_id"] == promise.pk


# --- the end-to-end scenario ------------------------------------------------------------------


def test_overdue_then_grace_then_suspended_then_paid_then_active(customer, plan):
    """The lead's scenario: one service through a whole dunning cycle, each step by the periodic job."""
    sub = SubscriptionFactory(customer=customer, plan=plan, current_period_start=at(DEC_1, dt.time(0)))
    invoice = issue_december(sub)
    seen = []
    for n in range(1, 16):
        run_on(day(n))
        seen.append(status_of(sub)[0])
    assert seen[:13] == [Status.ACTIVE] * 13 and seen[13:] == [Status.SUSPENDED] * 2

    pay(customer, invoice.total, "RCPT-END", day(16))
    with on(day(16), dt.time(9, 31)):
        dunning.reactivate_if_cleared(customer.pk)

    assert status_of(sub) == (Status.ACTIVE, "")
    assert [e.kind for e in events(sub)] == [
        "payment_reminder",
        "payment_reminder",
        "payment_reminder",
        "suspended",
        "resumed",
    ]


# --- concurrency (PostgreSQL) -----------------------------------------------------------------


@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)
def test_two_concurrent_runs_remind_and_suspend_exactly_once(reference_data):
    plan = PlanFactory(with_price=Decimal("2999.00"))
    subs = [SubscriptionFactory(plan=plan) for _ in range(12)]
    for sub in subs:
        issue_december(sub)
    now = at(SUSPENSION_DAY)
    with on(SUSPENSION_DAY):
        summaries, errors = race(2, lambda: dunning.run_dunning(now))

    assert errors == [] and all(s.failures == [] for s in summaries)
    assert sum(s.reminders_sent for s in summaries) == 12
    assert sorted(pk for s in summaries for pk in s.suspended) == sorted(s.pk for s in subs)
    assert DunningNotice.objects.filter(stage="reminder").count() == 12 * 3
    assert DunningNotice.objects.filter(stage="suspension").count() == 12
    assert LifecycleEvent.objects.filter(kind="payment_reminder").count() == 12
    assert LifecycleEvent.objects.filter(kind="suspended").count() == 12
    assert set(Subscription.objects.values_list("status", flat=True)) == {Status.SUSPENDED}
