"""Plan changes with proration: an upgrade is credited and charged by the second at once, a
downgrade waits for the end of the period (or happens now when staff say so), and a refused change
writes nothing."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
import time_machine
from django.core.exceptions import ValidationError
from django.utils import timezone

from wavu.billing import plan_changes
from wavu.billing import services as billing
from wavu.billing.models import CreditNote, Invoice, InvoiceLine
from wavu.catalog.models import Plan
from wavu.core.audit import acting_as
from wavu.core.errors import DomainError
from wavu.ledger.selectors import customer_balance, customer_credit, trial_balance
from wavu.payments.services import record_manual_payment
from wavu.subscriptions import services as subscriptions
from wavu.subscriptions.models import LifecycleEvent, Status, Subscription
from wavu.testing.concurrency import race
from wavu.testing.factories import CustomerFactory, PlanFactory

pytestmark = pytest.mark.django_db


def local(*args) -> dt.datetime:
    """An aware datetime in the ISP's time zone (Africa/Nairobi)."""
    return timezone.make_aware(dt.datetime(*args))


NOV_1, DEC_1 = local(2026, 11, 1), local(2026, 12, 1)
DAY_10 = local(2026, 11, 11)  # ten days used, twenty of thirty left


@pytest.fixture
def customer():
    return CustomerFactory(name="Akinyi Otieno")


@pytest.fixture
def fibre_10():
    return PlanFactory(name="Home Fibre 10 Mbps", code="fibre-10", with_price=Decimal("3000.00"))


@pytest.fixture
def fibre_30():
    return PlanFactory(name="Home Fibre 30 Mbps", code="fibre-30", with_price=Decimal("4500.00"))


@pytest.fixture
def fibre_60():
    return PlanFactory(name="Home Fibre 60 Mbps", code="fibre-60", with_price=Decimal("6000.00"))


def billed_service(customer, plan, *, paid: bool, start=NOV_1):
    """A postpaid service activated on `start` (billing day 1) whose first period the billing run
    has invoiced (and moved `next_bill_at` on, as the run does); paid in full when `paid`."""
    with time_machine.travel(start, tick=False):
        sub = subscriptions.create_subscription(customer, plan, billing_anchor_day=1)
        subscriptions.activate(sub, at=start)
        invoice = billing.invoice_subscription_period(sub, sub.current_period_start, sub.current_period_end)
        Subscription.objects.filter(pk=sub.pk).update(next_bill_at=sub.current_period_end)
        if paid:
            record_manual_payment(method="cash", reference=f"R-{sub.pk}", amount=invoice.total, customer=customer)
    sub.refresh_from_db()
    invoice.refresh_from_db()
    return sub, invoice


def on(moment):
    return time_machine.travel(moment, tick=False)


def counts():
    return (
        Invoice.objects.count(),
        CreditNote.objects.count(),
        LifecycleEvent.objects.count(),
    )


def test_an_upgrade_on_day_10_of_30_credits_20_days_of_the_old_plan_and_charges_20_of_the_new(
    customer, fibre_10, fibre_30
):
    sub, november = billed_service(customer, fibre_10, paid=True)
    assert november.total == Decimal("3000.00") and november.status == Invoice.Status.PAID

    with on(DAY_10), acting_as("user:noc"):
        result = plan_changes.change_plan(sub, fibre_30, reason="customer asked for more speed")

    assert (result.kind, result.scheduled, result.effective_at) == ("upgrade", False, DAY_10)
    note, invoice = result.credit_note, result.invoice
    # The unused 20 days of the old plan come back on a credit note against the November invoice.
    assert note.invoice == november and note.total == Decimal("2000.00") == result.credit
    assert note.reason == "Unused Home Fibre 10 Mbps, 11 Nov 2026 – 30 Nov 2026"
    (credit_line,) = note.lines.all()
    assert credit_line.invoice_line.kind == InvoiceLine.Kind.SUBSCRIPTION and credit_line.gross == Decimal("2000.00")
    assert credit_line.net + credit_line.excise + credit_line.vat == credit_line.gross
    # The new plan for the same 20 days is one positive proration line on a new invoice.
    assert invoice.total == Decimal("3000.00") == result.charge
    (line,) = invoice.lines.all()
    assert line.kind == InvoiceLine.Kind.PRORATION and line.plan == fibre_30
    assert line.description == "Upgrade to Home Fibre 30 Mbps, 11 Nov 2026 – 30 Nov 2026"
    assert (line.period_start, line.period_end) == (DAY_10, DEC_1)
    assert (invoice.period_start, invoice.period_end) == (DAY_10, DEC_1)
    # Money already paid became credit through the credit note and paid most of the new invoice.
    november.refresh_from_db()
    assert (november.amount_paid, november.amount_credited) == (Decimal("1000.00"), Decimal("2000.00"))
    assert invoice.amount_paid == Decimal("2000.00") and invoice.outstanding == Decimal("1000.00")
    assert customer_balance(customer.pk) == Decimal("1000.00") and customer_credit(customer.pk) == 0
    assert trial_balance()["balanced"]
    # The service is on the new plan from now, for the same period.
    sub.refresh_from_db()
    assert sub.plan == fibre_30 and (sub.current_period_start, sub.current_period_end) == (NOV_1, DEC_1)
    event = LifecycleEvent.objects.get(subscription=sub, kind="plan_changed")
    assert event.at == DAY_10 and event.actor_label == "user:noc"
    assert event.reason == "customer asked for more speed"
    assert event.data == {
        "from_plan": "fibre-10",
        "to_plan": "fibre-30",
        "prorated": True,
        "kind": "upgrade",
        "credit": "2000.00",
        "charge": "3000.00",
        "credit_note": note.number,
        "invoice": invoice.number,
    }


def test_a_proration_is_rounded_once_from_the_exact_seconds(customer):
    old = PlanFactory(name="Home Fibre 8 Mbps", with_price=Decimal("2999.00"))
    new = PlanFactory(name="Home Fibre 15 Mbps", with_price=Decimal("3499.00"))
    sub, _ = billed_service(customer, old, paid=False)
    at = DEC_1 - dt.timedelta(days=17, hours=5)  # 17 days 5 hours of 30 days left: 0.573611…

    quote = plan_changes.quote_plan_change(sub, new, at=at)
    with on(at):
        result = plan_changes.change_plan(sub, new)

    # 2,999 × 1,486,800 / 2,592,000 = 1,720.2597… and 3,499 × … = 2,007.0652…; rounding the
    # fraction first (0.5736) would give 1,720.23 and 2,007.03.
    assert (quote.credit, quote.charge) == (Decimal("1720.26"), Decimal("2007.07"))
    assert result.credit_note.total == Decimal("1720.26") and result.invoice.total == Decimal("2007.07")
    assert customer_balance(customer.pk) == Decimal("2999.00") - Decimal("1720.26") + Decimal("2007.07")


def test_an_unpaid_period_is_reduced_by_the_credit_and_the_upgrade_is_owed_on_top(customer, fibre_10, fibre_30):
    sub, november = billed_service(customer, fibre_10, paid=False)

    with on(DAY_10):
        result = plan_changes.change_plan(sub, fibre_30)

    november.refresh_from_db()
    assert november.outstanding == Decimal("1000.00") and november.status == Invoice.Status.PARTIALLY_PAID
    assert result.invoice.outstanding == Decimal("3000.00")
    assert customer_balance(customer.pk) == Decimal("4000.00")  # 10 days of 3,000 + 20 days of 4,500


def test_a_downgrade_waits_for_the_end_of_the_period_and_is_applied_then(customer, fibre_10, fibre_30):
    sub, _ = billed_service(customer, fibre_30, paid=True)
    before = counts()

    with on(DAY_10), acting_as("user:noc"):
        result = plan_changes.change_plan(sub, fibre_10, reason="cheaper plan")

    assert (result.kind, result.scheduled, result.effective_at) == ("downgrade", True, DEC_1)
    assert result.credit_note is None and result.invoice is None
    sub.refresh_from_db()
    assert sub.plan == fibre_30 and (sub.pending_plan, sub.pending_plan_at) == (fibre_10, DEC_1)
    assert counts() == (before[0], before[1], before[2] + 1)  # one event, no documents
    scheduled = LifecycleEvent.objects.get(kind="plan_change_scheduled")
    assert scheduled.data == {"from_plan": "fibre-30", "to_plan": "fibre-10", "at": scheduled.data["at"]}
    assert dt.datetime.fromisoformat(scheduled.data["at"]) == DEC_1
    assert scheduled.actor_label == "user:noc" and scheduled.reason == "cheaper plan"

    # Not yet due on the last day of the period; applied when the period ends.
    assert not subscriptions.apply_pending_plan(sub, at=DEC_1 - dt.timedelta(seconds=1))
    with on(DEC_1):
        assert subscriptions.apply_pending_plan(sub, actor="job:billing-run")
        assert not subscriptions.apply_pending_plan(sub, actor="job:billing-run")  # idempotent

    sub.refresh_from_db()
    assert sub.plan == fibre_10 and sub.pending_plan is None and sub.pending_plan_at is None
    applied = LifecycleEvent.objects.get(kind="plan_changed")
    assert applied.actor_label == "job:billing-run" and applied.at == DEC_1
    assert applied.data == {"from_plan": "fibre-30", "to_plan": "fibre-10", "scheduled": True}
    assert applied.reason == "scheduled plan change"
    # The period after the change is billed on the new plan.
    with on(DEC_1):
        december = billing.invoice_subscription_period(sub, DEC_1, local(2027, 1, 1))
    assert december.total == Decimal("3000.00")


def test_staff_can_downgrade_now_and_the_difference_stays_as_credit(customer, fibre_10, fibre_30):
    sub, november = billed_service(customer, fibre_30, paid=True)

    with on(DAY_10):
        result = plan_changes.change_plan(sub, fibre_10, when="now", reason="line too slow for 30 Mbps")

    assert (result.kind, result.scheduled) == ("downgrade", False)
    assert result.credit_note.total == Decimal("3000.00")  # 20 days of 4,500
    assert result.invoice.total == Decimal("2000.00")  # 20 days of 3,000
    assert result.invoice.lines.get().description == "Downgrade to Home Fibre 10 Mbps, 11 Nov 2026 – 30 Nov 2026"
    assert result.invoice.status == Invoice.Status.PAID
    assert customer_credit(customer.pk) == Decimal("1000.00") and customer_balance(customer.pk) == Decimal("-1000.00")
    sub.refresh_from_db()
    assert sub.plan == fibre_10 and sub.pending_plan is None


def test_staff_can_schedule_an_upgrade_for_the_period_end(customer, fibre_10, fibre_30):
    sub, _ = billed_service(customer, fibre_10, paid=True)

    with on(DAY_10):
        result = plan_changes.change_plan(sub, fibre_30, when="period_end")

    assert (result.kind, result.scheduled, result.effective_at) == ("upgrade", True, DEC_1)
    sub.refresh_from_db()
    assert sub.plan == fibre_10 and sub.pending_plan == fibre_30
    assert Invoice.objects.count() == 1 and not CreditNote.objects.exists()


def test_an_upgrade_drops_a_scheduled_downgrade(customer, fibre_10, fibre_30, fibre_60):
    sub, _ = billed_service(customer, fibre_30, paid=True)
    with on(local(2026, 11, 5)):
        plan_changes.change_plan(sub, fibre_10)

    with on(DAY_10):
        plan_changes.change_plan(sub, fibre_60)

    sub.refresh_from_db()
    assert sub.plan == fibre_60 and sub.pending_plan is None and sub.pending_plan_at is None
    kinds = list(LifecycleEvent.objects.filter(subscription=sub).values_list("kind", flat=True))
    assert kinds[-3:] == ["plan_change_scheduled", "plan_change_cancelled", "plan_changed"]


def test_scheduling_again_replaces_or_changes_nothing_and_can_be_cancelled(customer, fibre_10, fibre_30, fibre_60):
    sub, _ = billed_service(customer, fibre_60, paid=True)
    with on(DAY_10):
        plan_changes.change_plan(sub, fibre_30)
        plan_changes.change_plan(sub, fibre_30)  # a double click: nothing new
        plan_changes.change_plan(sub, fibre_10)
    assert LifecycleEvent.objects.filter(kind="plan_change_scheduled").count() == 2
    assert LifecycleEvent.objects.filter(kind="plan_change_scheduled").last().data["replaced"] == "fibre-30"

    assert subscriptions.cancel_scheduled_plan_change(sub, reason="changed her mind")
    assert not subscriptions.cancel_scheduled_plan_change(sub)

    sub.refresh_from_db()
    assert sub.pending_plan is None and sub.plan == fibre_60
    cancelled = LifecycleEvent.objects.get(kind="plan_change_cancelled")
    assert cancelled.data["plan"] == "fibre-10" and dt.datetime.fromisoformat(cancelled.data["at"]) == DEC_1
    assert cancelled.reason == "changed her mind"


def test_a_second_upgrade_in_the_period_credits_what_the_first_one_charged(customer, fibre_10, fibre_30, fibre_60):
    sub, november = billed_service(customer, fibre_10, paid=True)
    with on(DAY_10):
        first = plan_changes.change_plan(sub, fibre_30)

    with on(local(2026, 11, 21)):  # 10 days left
        second = plan_changes.change_plan(sub, fibre_60)

    assert second.credit_note.invoice == first.invoice  # the proration line of 4,500 for 20 days
    assert second.credit_note.total == Decimal("1500.00")  # 10 days of 4,500
    assert second.invoice.total == Decimal("2000.00")  # 10 days of 6,000
    # 10 days of each plan: 1,000 + 1,500 + 2,000, paid 3,000 so far.
    assert customer_balance(customer.pk) == Decimal("1500.00")
    assert trial_balance()["balanced"]


def test_two_changes_at_the_same_instant_both_hold(customer, fibre_10, fibre_30, fibre_60):
    sub, november = billed_service(customer, fibre_10, paid=True)

    with on(DAY_10):
        first = plan_changes.change_plan(sub, fibre_30)
        second = plan_changes.change_plan(sub, fibre_60)

    first.invoice.refresh_from_db()
    assert first.invoice.status == Invoice.Status.VOID  # all of its 20 days credited at once
    assert second.credit_note.total == Decimal("3000.00") and second.credit_note.invoice == first.invoice
    assert second.invoice.total == Decimal("4000.00")
    # The unique (service, period start) rule is kept: the second invoice's header has no period,
    # its line has [day 10, period end).
    assert second.invoice.period_start is None
    line = second.invoice.lines.get()
    assert (line.period_start, line.period_end) == (DAY_10, DEC_1)
    assert customer_balance(customer.pk) == Decimal("1000.00") + Decimal("4000.00") - Decimal("3000.00")


def test_a_change_at_the_very_start_of_the_period_credits_all_of_it(customer, fibre_10, fibre_30):
    sub, november = billed_service(customer, fibre_10, paid=False)

    with on(NOV_1 + dt.timedelta(hours=1)):
        result = plan_changes.change_plan(sub, fibre_30, at=NOV_1)

    november.refresh_from_db()
    assert november.status == Invoice.Status.VOID and result.invoice.total == Decimal("4500.00")
    assert result.invoice.period_start is None  # November's invoice already starts at this instant
    assert customer_balance(customer.pk) == Decimal("4500.00")


def test_a_postpaid_period_the_billing_run_has_not_invoiced_yet_is_simply_billed_on_the_new_plan(
    customer, fibre_10, fibre_30
):
    with on(NOV_1):
        sub = subscriptions.create_subscription(customer, fibre_10, billing_anchor_day=1)
        subscriptions.activate(sub, at=NOV_1)
    assert sub.next_bill_at == NOV_1

    with on(NOV_1 + dt.timedelta(hours=3)):
        result = plan_changes.change_plan(sub, fibre_30)

    assert result.credit_note is None and result.invoice is None and not result.scheduled
    assert not Invoice.objects.exists()
    sub.refresh_from_db()
    assert sub.plan == fibre_30
    assert LifecycleEvent.objects.get(kind="plan_changed").data["prorated"] is False


def test_a_prepaid_upgrade_credits_the_renewal_invoice(customer):
    bronze = PlanFactory(kind="prepaid", validity_unit="day", validity_count=30, with_price=Decimal("1500.00"))
    silver = PlanFactory(
        kind="prepaid", validity_unit="day", validity_count=30, name="Wireless 20", with_price=Decimal("2400.00")
    )
    with on(NOV_1):
        sub = subscriptions.create_subscription(customer, bronze)
        subscriptions.activate(sub, at=NOV_1)
        paid = billing.invoice_subscription_period(sub, NOV_1, DEC_1)
        record_manual_payment(method="cash", reference="P-1", amount="1500.00", customer=customer)

    with on(DAY_10):
        result = plan_changes.change_plan(sub, silver)

    assert result.credit_note.invoice == paid and result.credit_note.total == Decimal("1000.00")
    assert result.invoice.total == Decimal("1600.00") and result.invoice.outstanding == Decimal("600.00")
    sub.refresh_from_db()
    assert sub.plan == silver and sub.current_period_end == DEC_1


def test_a_prepaid_period_given_without_an_invoice_is_only_charged_the_upgrade(customer):
    bronze = PlanFactory(kind="prepaid", validity_unit="day", validity_count=30, with_price=Decimal("1500.00"))
    silver = PlanFactory(kind="prepaid", validity_unit="day", validity_count=30, with_price=Decimal("2400.00"))
    with on(NOV_1):
        sub = subscriptions.create_subscription(customer, bronze)
        subscriptions.activate(sub, at=NOV_1)

    with on(DAY_10):
        result = plan_changes.change_plan(sub, silver)

    assert result.credit_note is None and result.invoice.total == Decimal("1600.00")


def test_a_service_not_in_use_just_switches(customer, fibre_10, fibre_30):
    sub = subscriptions.create_subscription(customer, fibre_30)

    result = plan_changes.change_plan(sub, fibre_10)

    assert not result.scheduled and result.credit_note is None and result.invoice is None
    sub.refresh_from_db()
    assert sub.plan == fibre_10


def test_the_quote_matches_the_change_and_writes_nothing(customer, fibre_10, fibre_30):
    sub, _ = billed_service(customer, fibre_10, paid=True)
    before = counts()

    quote = plan_changes.quote_plan_change(sub, fibre_30, at=DAY_10)

    assert (quote.kind, quote.credit, quote.charge, quote.scheduled) == ("upgrade", Decimal("2000.00"),
                                                                         Decimal("3000.00"), False)  # fmt: skip
    assert counts() == before


# --- refusals write nothing -----------------------------------------------------------------------


def _hotspot_plan():
    return PlanFactory(kind=Plan.Kind.HOTSPOT, validity_unit="hour", validity_count=24, with_price=Decimal("50.00"))


REFUSALS = {
    "cancelled": "subscription_cancelled",
    "same_plan": "same_plan",
    "not_sold": "plan_not_available",
    "not_priced": "no_price",
    "other_kind": "plan_kind_mismatch",
    "other_length": "plan_validity_mismatch",
    "paused": "subscription_paused",
    "period_over": "no_current_period",
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_a_refused_change_writes_nothing(customer, fibre_10, fibre_30, case):
    sub, _ = billed_service(customer, fibre_10, paid=True)
    target = fibre_30
    moment = DAY_10
    if case == "cancelled":
        with on(local(2026, 11, 5)):
            subscriptions.cancel(sub)
    elif case == "same_plan":
        target = fibre_10
    elif case == "not_sold":
        Plan.objects.filter(pk=fibre_30.pk).update(is_active=False)
        fibre_30.refresh_from_db()
    elif case == "not_priced":
        fibre_30.prices.update(valid_from=local(2027, 1, 1))
    elif case == "other_kind":
        target = PlanFactory(kind="prepaid", validity_unit="day", validity_count=30, with_price=Decimal("5000"))
    elif case == "other_length":
        target = PlanFactory(validity_count=3, with_price=Decimal("12000.00"))
    elif case == "paused":
        with on(local(2026, 11, 5)):
            subscriptions.pause(sub, until=local(2026, 11, 20))
    elif case == "period_over":
        moment = DEC_1 + dt.timedelta(days=2)  # the run has not billed December yet
    sub.refresh_from_db()
    before_sub = {f.attname: getattr(sub, f.attname) for f in Subscription._meta.concrete_fields}
    before = counts()

    with on(moment), pytest.raises(DomainError) as caught:
        plan_changes.change_plan(sub, target, when="now")

    assert caught.value.code == REFUSALS[case]
    assert counts() == before
    stored = Subscription.objects.get(pk=sub.pk)
    assert {f.attname: getattr(stored, f.attname) for f in Subscription._meta.concrete_fields} == before_sub


def test_a_hotspot_service_waiting_for_its_first_login_has_no_period_to_prorate(customer):
    day_pass, week_pass = _hotspot_plan(), _hotspot_plan()
    sub = subscriptions.create_subscription(customer, day_pass)
    Subscription.objects.filter(pk=sub.pk).update(status=Status.ACTIVE)  # active, period starts at first login
    sub.refresh_from_db()

    with pytest.raises(plan_changes.NoCurrentPeriod):
        plan_changes.change_plan(sub, week_pass, when="now")
    with pytest.raises(plan_changes.NoCurrentPeriod):
        plan_changes.change_plan(sub, week_pass, when="period_end")
    assert not LifecycleEvent.objects.exclude(kind="created").exists()


def test_an_unknown_when_is_a_field_error(customer, fibre_10, fibre_30):
    sub, _ = billed_service(customer, fibre_10, paid=True)

    with pytest.raises(ValidationError) as caught:
        plan_changes.change_plan(sub, fibre_30, when="tomorrow")

    assert caught.value.error_dict["when"][0].code == "when_invalid"
    assert Subscription.objects.get(pk=sub.pk).plan == fibre_10


# --- races (PostgreSQL) ---------------------------------------------------------------------------


@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)
def test_two_clerks_upgrading_the_same_service_at_once_bill_it_once(reference_data):
    customer = CustomerFactory()
    basic = PlanFactory(with_price=Decimal("3000.00"))
    faster = PlanFactory(with_price=Decimal("4500.00"))
    sub = subscriptions.create_subscription(customer, basic)
    subscriptions.activate(sub, at=timezone.now() - dt.timedelta(days=2))
    billing.invoice_subscription_period(sub, sub.current_period_start, sub.current_period_end)
    results, errors = race(3, lambda: plan_changes.change_plan(Subscription.objects.get(pk=sub.pk), faster))

    assert len(results) == 1 and [getattr(e, "code", e) for e in errors] == ["same_plan", "same_plan"]
    assert CreditNote.objects.count() == 1 and Invoice.objects.count() == 2
    assert LifecycleEvent.objects.filter(kind="plan_changed").count() == 1
    assert trial_balance()["balanced"]
