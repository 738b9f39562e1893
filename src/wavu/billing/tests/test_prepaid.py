"""Prepaid and hotspot services through time: buying periods, renewing from credit, lapsing."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
import time_machine
from django.utils import timezone

from wavu.billing import prepaid
from wavu.billing import services as billing
from wavu.billing.models import Invoice
from wavu.catalog.models import AddOn, Plan
from wavu.core.models import AuditEvent
from wavu.ledger.models import JournalEntry
from wavu.ledger.selectors import customer_balance, customer_credit, trial_balance
from wavu.payments.services import record_manual_payment
from wavu.subscriptions.models import LifecycleEvent, Subscription, SubscriptionAddOn
from wavu.testing.concurrency import race
from wavu.testing.factories import AddOnFactory, CustomerFactory, PlanFactory, SubscriptionFactory

pytestmark = pytest.mark.django_db


def at(day: dt.date, time: dt.time = dt.time(9, 30)) -> dt.datetime:
    """An aware datetime in the ISP's time zone (Nairobi)."""
    return timezone.make_aware(dt.datetime.combine(day, time))


def on(moment: dt.datetime):
    return time_machine.travel(moment, tick=False)


DEC_1 = at(dt.date(2026, 12, 1))
JAN_1 = at(dt.date(2027, 1, 1))
FEB_1 = at(dt.date(2027, 2, 1))
MAR_1 = at(dt.date(2027, 3, 1))

_receipts = iter(range(1, 10_000))


def pay(customer, amount: str) -> None:
    record_manual_payment(method="cash", reference=f"RCPT-{next(_receipts)}", amount=amount, customer=customer)


def events(sub) -> list[str]:
    return list(LifecycleEvent.objects.filter(subscription=sub).values_list("kind", flat=True))


def invoices(sub) -> list[Invoice]:
    return list(Invoice.objects.filter(subscription=sub).order_by("pk"))


def reload(sub) -> Subscription:
    return Subscription.objects.select_related("plan").get(pk=sub.pk)


def books_balance() -> bool:
    entries = JournalEntry.objects.prefetch_related("postings")
    return all(sum(p.amount for p in e.postings.all()) == 0 for e in entries) and trial_balance()["balanced"]


def counts() -> tuple[int, int, int, int]:
    return (Invoice.objects.count(), LifecycleEvent.objects.count(), AuditEvent.objects.count(),
            JournalEntry.objects.count())  # fmt: skip


@pytest.fixture
def customer(db):
    return CustomerFactory(name="Achieng Otieno")


@pytest.fixture
def monthly(db):
    return PlanFactory(name="Prepaid Home 10 Mbps", kind=Plan.Kind.PREPAID, with_price=Decimal("1000.00"))


@pytest.fixture
def service(customer, monthly):
    """A prepaid monthly service that was bought on 1 Dec 2026 09:30 and expires on 1 Jan 2027 09:30."""
    sub = SubscriptionFactory(customer=customer, plan=monthly, status="pending")
    with on(DEC_1):
        pay(customer, "1000.00")
        prepaid.purchase_period(sub)
    return sub


# --- the scenario the lead tests end to end ---------------------------------------------------


def test_a_monthly_prepaid_service_renews_from_credit_twice_then_lapses(customer, service):
    assert (service.status, service.current_period_end) == ("active", JAN_1)
    with on(DEC_1 + dt.timedelta(hours=2)):
        pay(customer, "2000.00")
    assert customer_credit(customer.pk) == Decimal("2000.00") and customer_balance(customer.pk) == Decimal("-2000.00")

    with on(JAN_1):
        summary = prepaid.process_expiries()
    assert (summary.renewed, summary.expired) == (1, 0)
    service = reload(service)
    assert (service.status, service.current_period_start, service.current_period_end) == ("active", JAN_1, FEB_1)
    january = invoices(service)[-1]
    assert (january.number, january.total, january.status) == ("INV-000002", Decimal("1000.00"), "paid")
    assert (january.period_start, january.period_end) == (JAN_1, FEB_1)
    assert customer_credit(customer.pk) == Decimal("1000.00") and customer_balance(customer.pk) == Decimal("-1000.00")

    with on(FEB_1):
        assert prepaid.process_expiries().renewed == 1
    service = reload(service)
    assert service.current_period_end == MAR_1
    february = invoices(service)[-1]
    assert (february.number, february.status, february.period_start) == ("INV-000003", "paid", FEB_1)
    assert customer_credit(customer.pk) == 0 and customer_balance(customer.pk) == 0

    with on(MAR_1):
        summary = prepaid.process_expiries()
    assert (summary.renewed, summary.expired) == (0, 1)
    service = reload(service)
    assert (service.status, service.current_period_end) == ("expired", MAR_1)
    assert len(invoices(service)) == 3 and customer_balance(customer.pk) == 0

    assert events(service) == ["activated", "renewed", "renewed", "expired"]
    stream = list(LifecycleEvent.objects.filter(subscription=service))
    assert [e.data.get("invoice") for e in stream] == ["INV-000001", "INV-000002", "INV-000003", None]
    assert stream[1].data["period_end"] == FEB_1.isoformat() and stream[1].actor_label == "job:expiry"
    assert stream[3].actor_label == "job:expiry" and "not enough credit" in stream[3].reason
    assert books_balance()


def test_the_first_purchase_activates_a_pending_service_with_a_paid_invoice(customer, monthly):
    sub = SubscriptionFactory(customer=customer, plan=monthly, status="pending")
    with on(DEC_1):
        pay(customer, "1000.00")
        result = prepaid.purchase_period(sub, reason="new connection")

    assert (result.event, result.created, result.period_start, result.period_end) == ("activated", True, DEC_1, JAN_1)
    assert (sub.status, sub.activated_at, sub.current_period_end) == ("active", DEC_1, JAN_1)
    invoice = result.invoice
    assert (invoice.total, invoice.status, invoice.period_start, invoice.period_end) == (
        Decimal("1000.00"), "paid", DEC_1, JAN_1)  # fmt: skip
    assert invoice.lines.get().description == "Prepaid Home 10 Mbps, 1 Dec 2026 – 1 Jan 2027"
    event = LifecycleEvent.objects.get(subscription=sub)
    assert (event.kind, event.from_status, event.to_status, event.reason) == (
        "activated", "pending", "active", "new connection")  # fmt: skip
    assert event.data["invoice"] == invoice.number and event.data["amount"] == "1000.00"
    assert customer_balance(customer.pk) == 0


# --- a payment extends ------------------------------------------------------------------------


def test_a_payment_while_active_extends_from_the_current_expiry(customer, service):
    with on(at(dt.date(2026, 12, 20), dt.time(18, 0))):
        pay(customer, "1000.00")
        results = prepaid.apply_credit_to_prepaid(customer.pk)

    assert [(r.event, r.period_start, r.period_end) for r in results] == [("renewed", JAN_1, FEB_1)]
    service = reload(service)
    assert (service.status, service.current_period_start, service.current_period_end) == ("active", JAN_1, FEB_1)
    assert invoices(service)[-1].period_start == JAN_1 and customer_balance(customer.pk) == 0


def test_a_payment_after_expiry_restarts_the_service_from_now(customer, service):
    with on(JAN_1):
        prepaid.process_expiries()
    late = at(dt.date(2027, 1, 10), dt.time(14, 0))
    with on(late):
        pay(customer, "1000.00")
        results = prepaid.apply_credit_to_prepaid(customer.pk)

    assert [(r.event, r.period_start) for r in results] == [("renewed", late)]
    service = reload(service)
    assert (service.status, service.current_period_start) == ("active", late)
    assert service.current_period_end == at(dt.date(2027, 2, 10), dt.time(14, 0))
    renewed = LifecycleEvent.objects.filter(subscription=service).last()
    assert (renewed.kind, renewed.from_status, renewed.to_status) == ("renewed", "expired", "active")
    assert customer_balance(customer.pk) == 0


def test_a_payment_of_two_periods_price_extends_twice(customer, service):
    with on(at(dt.date(2026, 12, 15))):
        pay(customer, "2000.00")
        results = prepaid.apply_credit_to_prepaid(customer.pk)

    assert [(r.period_start, r.period_end) for r in results] == [(JAN_1, FEB_1), (FEB_1, MAR_1)]
    assert reload(service).current_period_end == MAR_1
    assert [i.status for i in invoices(service)] == ["paid", "paid", "paid"]
    assert customer_balance(customer.pk) == 0


def test_applying_credit_again_with_none_left_does_nothing(customer, service):
    with on(at(dt.date(2026, 12, 15))):
        pay(customer, "1500.00")
        assert len(prepaid.apply_credit_to_prepaid(customer.pk)) == 1
        before = counts()
        assert prepaid.apply_credit_to_prepaid(customer.pk) == []

    assert counts() == before
    assert customer_credit(customer.pk) == Decimal("500.00") and reload(service).current_period_end == FEB_1


def test_credit_extends_two_services_in_turn_the_one_ending_first_each_time(customer, monthly):
    first = SubscriptionFactory(customer=customer, plan=monthly, status="pending")
    second = SubscriptionFactory(customer=customer, plan=monthly, status="pending")
    with on(DEC_1):
        pay(customer, "1000.00")
        prepaid.purchase_period(first)
    with on(at(dt.date(2026, 12, 5))):
        pay(customer, "1000.00")
        prepaid.purchase_period(second)
    with on(at(dt.date(2026, 12, 20))):
        pay(customer, "3000.00")
        results = prepaid.apply_credit_to_prepaid(customer.pk)

    assert [r.subscription.pk for r in results] == [first.pk, second.pk, first.pk]
    assert reload(first).current_period_end == MAR_1
    assert reload(second).current_period_end == at(dt.date(2027, 2, 5))
    assert customer_balance(customer.pk) == 0


# --- not enough credit, auto-renew off ---------------------------------------------------------


def test_without_enough_credit_the_service_expires_and_paying_the_rest_reactivates_it_from_now(customer, service):
    with on(DEC_1 + dt.timedelta(days=3)):
        pay(customer, "600.00")
    with on(JAN_1):
        summary = prepaid.process_expiries()

    assert (summary.renewed, summary.expired) == (0, 1)
    service = reload(service)
    assert service.status == "expired" and len(invoices(service)) == 1
    assert customer_credit(customer.pk) == Decimal("600.00")  # the money waits on the account

    back = at(dt.date(2027, 1, 5), dt.time(8, 15))
    with on(back):
        pay(customer, "400.00")
        results = prepaid.apply_credit_to_prepaid(customer.pk)

    assert [(r.event, r.period_start) for r in results] == [("renewed", back)]
    service = reload(service)
    assert (service.status, service.current_period_end) == ("active", at(dt.date(2027, 2, 5), dt.time(8, 15)))
    assert events(service) == ["activated", "expired", "renewed"]
    assert customer_balance(customer.pk) == 0


def test_a_service_with_auto_renew_off_expires_even_with_credit(customer, service):
    Subscription.objects.filter(pk=service.pk).update(auto_renew=False)
    with on(DEC_1 + dt.timedelta(days=1)):
        pay(customer, "5000.00")
        assert prepaid.apply_credit_to_prepaid(customer.pk) == []  # an active service without auto-renew waits
    with on(JAN_1):
        summary = prepaid.process_expiries()

    assert (summary.renewed, summary.expired) == (0, 1)
    service = reload(service)
    assert service.status == "expired" and len(invoices(service)) == 1
    assert LifecycleEvent.objects.filter(subscription=service).last().reason == "period ended; auto-renew is off"
    assert customer_credit(customer.pk) == Decimal("5000.00")


def test_an_add_on_the_credit_does_not_cover_lets_the_service_lapse_and_writes_nothing(customer, service):
    addon = AddOnFactory(name="Router rental", category=AddOn.Category.EQUIPMENT_RENTAL, with_price=Decimal("300.00"))
    SubscriptionAddOn.objects.create(subscription=service, addon=addon, started_at=DEC_1)
    with on(DEC_1 + dt.timedelta(days=1)):
        pay(customer, "1200.00")
    with on(JAN_1):
        summary = prepaid.process_expiries()

    assert (summary.renewed, summary.expired) == (0, 1)
    assert reload(service).status == "expired" and len(invoices(service)) == 1
    assert "1200.00 of 1300.00" in LifecycleEvent.objects.filter(subscription=service).last().reason
    assert customer_credit(customer.pk) == Decimal("1200.00")

    with on(at(dt.date(2027, 1, 2))):
        pay(customer, "100.00")
        (result,) = prepaid.apply_credit_to_prepaid(customer.pk)
    assert [line.gross for line in result.invoice.lines.order_by("position")] == [Decimal("1000.00"), Decimal("300.00")]
    assert result.invoice.status == "paid" and customer_balance(customer.pk) == 0


# --- plan changes -------------------------------------------------------------------------------


@pytest.fixture
def basic(db):
    return PlanFactory(name="Prepaid Basic 5 Mbps", kind=Plan.Kind.PREPAID, with_price=Decimal("700.00"))


def test_a_pending_downgrade_applies_at_renewal_and_the_invoice_uses_the_new_price(customer, service, basic):
    Subscription.objects.filter(pk=service.pk).update(pending_plan=basic, pending_plan_at=JAN_1)
    with on(DEC_1 + dt.timedelta(days=1)):
        pay(customer, "1000.00")
    with on(JAN_1):
        assert prepaid.process_expiries().renewed == 1

    service = reload(service)
    assert (service.plan, service.pending_plan, service.current_period_end) == (basic, None, FEB_1)
    renewal = invoices(service)[-1]
    assert renewal.total == Decimal("700.00") and renewal.lines.get().plan == basic
    assert events(service) == ["activated", "plan_changed", "renewed"]
    assert customer_credit(customer.pk) == Decimal("300.00")


def test_a_downgrade_paid_early_is_billed_on_the_new_plan_and_switches_at_the_expiry(customer, service, basic):
    Subscription.objects.filter(pk=service.pk).update(pending_plan=basic, pending_plan_at=JAN_1)
    with on(at(dt.date(2026, 12, 20))):
        pay(customer, "700.00")
        (result,) = prepaid.apply_credit_to_prepaid(customer.pk)

    assert result.invoice.total == Decimal("700.00") and result.invoice.lines.get().plan == basic
    service = reload(service)
    # the rest of December, paid on the old plan, keeps its speed; the new plan waits for 1 January
    assert (service.plan.name, service.pending_plan, service.current_period_end) == (
        "Prepaid Home 10 Mbps", basic, FEB_1)  # fmt: skip

    with on(JAN_1):
        summary = prepaid.process_expiries()
    assert (summary.renewed, summary.expired, summary.plans_switched) == (0, 0, 1)
    service = reload(service)
    assert (service.plan, service.pending_plan, service.status) == (basic, None, "active")
    assert customer_balance(customer.pk) == 0


# --- hotspot packages ---------------------------------------------------------------------------


def hotspot_plan(starts):
    return PlanFactory(
        name="Hotspot 24 hours",
        kind=Plan.Kind.HOTSPOT,
        technology=Plan.Technology.HOTSPOT,
        validity_unit=Plan.ValidityUnit.HOUR,
        validity_count=24,
        hotspot_starts=starts,
        with_price=Decimal("50.00"),
    )


def test_a_hotspot_package_that_starts_at_purchase_runs_from_the_purchase(customer):
    sub = SubscriptionFactory(customer=customer, plan=hotspot_plan(Plan.HotspotStart.PURCHASE), status="pending")
    bought = at(dt.date(2026, 12, 1), dt.time(16, 5))
    with on(bought):
        pay(customer, "50.00")
        result = prepaid.purchase_period(sub)

    assert (result.event, result.period_start, result.period_end) == ("activated", bought, bought + dt.timedelta(1))
    assert (sub.status, sub.current_period_end) == ("active", bought + dt.timedelta(days=1))
    assert prepaid.start_at_first_login(sub, bought + dt.timedelta(hours=1)) is False
    assert reload(sub).current_period_start == bought


def test_a_hotspot_package_that_starts_at_first_login_waits_for_it(customer):
    sub = SubscriptionFactory(customer=customer, plan=hotspot_plan(Plan.HotspotStart.FIRST_LOGIN), status="pending")
    with on(DEC_1):
        pay(customer, "50.00")
        result = prepaid.purchase_period(sub)

    assert (result.event, result.period_start, result.period_end) == ("activated", None, None)
    assert (sub.status, sub.current_period_start, sub.current_period_end) == ("active", None, None)
    invoice = result.invoice
    assert (invoice.period_start, invoice.status, invoice.total) == (None, "paid", Decimal("50.00"))
    assert invoice.lines.get().description == "Hotspot 24 hours (starts at first login)"
    activated = LifecycleEvent.objects.get(subscription=sub)
    assert activated.data["starts"] == "first_login" and activated.data["period_end"] is None

    with on(DEC_1 + dt.timedelta(days=3)):  # an unstarted package never expires
        assert prepaid.process_expiries().checked == 0
        pay(customer, "50.00")
        before = counts()
        with pytest.raises(prepaid.PackageNotStarted):
            prepaid.purchase_period(sub)
        assert prepaid.apply_credit_to_prepaid(customer.pk) == []
        assert counts() == before

    login = at(dt.date(2026, 12, 4), dt.time(19, 45))
    assert prepaid.start_at_first_login(sub, login) is True
    assert prepaid.start_at_first_login(sub, login + dt.timedelta(hours=2)) is False
    sub = reload(sub)
    assert (sub.current_period_start, sub.current_period_end) == (login, login + dt.timedelta(days=1))
    assert events(sub) == ["activated", "period_started"]

    with on(login + dt.timedelta(days=1)):  # at expiry the 50 left renews it, running on at once
        assert prepaid.process_expiries().renewed == 1
    assert reload(sub).current_period_end == login + dt.timedelta(days=2)


def test_a_first_login_package_bought_after_expiry_waits_for_the_next_login(customer):
    sub = SubscriptionFactory(customer=customer, plan=hotspot_plan(Plan.HotspotStart.FIRST_LOGIN), status="pending")
    with on(DEC_1):
        pay(customer, "50.00")
        prepaid.purchase_period(sub)
    prepaid.start_at_first_login(sub, DEC_1)
    with on(DEC_1 + dt.timedelta(days=1)):
        assert prepaid.process_expiries().expired == 1
    with on(DEC_1 + dt.timedelta(days=2)):
        pay(customer, "50.00")
        (result,) = prepaid.apply_credit_to_prepaid(customer.pk)

    assert (result.event, result.period_start) == ("renewed", None)
    sub = reload(sub)
    assert (sub.status, sub.current_period_start, sub.current_period_end) == ("active", None, None)
    assert events(sub) == ["activated", "period_started", "expired", "renewed"]


# --- idempotency, isolation, refusals ------------------------------------------------------------


def test_running_the_expiry_job_twice_renews_once(customer, service):
    with on(DEC_1 + dt.timedelta(days=1)):
        pay(customer, "3000.00")
    with on(JAN_1):
        first, second = prepaid.process_expiries(), prepaid.process_expiries()

    assert (first.renewed, second.checked, second.renewed) == (1, 0, 0)
    assert len(invoices(service)) == 2 and reload(service).current_period_end == FEB_1
    assert customer_credit(customer.pk) == Decimal("2000.00")


def test_another_customers_credit_is_never_used(customer, service):
    neighbour = CustomerFactory(name="Kamau Njoroge")
    with on(DEC_1 + dt.timedelta(days=1)):
        pay(neighbour, "5000.00")
        assert prepaid.apply_credit_to_prepaid(customer.pk) == []
    with on(JAN_1):
        assert prepaid.process_expiries().expired == 1

    assert reload(service).status == "expired" and len(invoices(service)) == 1
    assert customer_credit(neighbour.pk) == Decimal("5000.00") and customer_balance(customer.pk) == 0


def test_a_purchase_without_enough_credit_is_refused_with_the_shortfall_and_writes_nothing(customer, service):
    with on(DEC_1 + dt.timedelta(days=1)):
        pay(customer, "250.00")
        before = counts()
        with pytest.raises(prepaid.InsufficientCredit) as refused:
            prepaid.purchase_period(service)

    assert (refused.value.code, refused.value.shortfall, refused.value.available) == (
        "insufficient_credit", Decimal("750.00"), Decimal("250.00"))  # fmt: skip
    assert counts() == before and reload(service).current_period_end == JAN_1
    with on(DEC_1 + dt.timedelta(days=2)):
        pay(customer, "750.00")
        assert prepaid.purchase_period(service).invoice.number == "INV-000002"  # no number was lost


@pytest.mark.parametrize("status", ["suspended", "paused", "cancelled"])
def test_a_service_that_is_not_running_cannot_buy_a_period(customer, service, status):
    Subscription.objects.filter(pk=service.pk).update(status=status)
    with on(DEC_1 + dt.timedelta(days=1)):
        pay(customer, "1000.00")
        before = counts()
        with pytest.raises(prepaid.PurchaseNotAllowed):
            prepaid.purchase_period(service)
        assert prepaid.apply_credit_to_prepaid(customer.pk) == []
    assert counts() == before


def test_a_postpaid_service_cannot_buy_a_period(customer):
    sub = SubscriptionFactory(customer=customer, plan=PlanFactory(kind=Plan.Kind.POSTPAID))
    with on(DEC_1):
        pay(customer, "5000.00")
        before = counts()
        with pytest.raises(prepaid.PurchaseNotAllowed) as refused:
            prepaid.purchase_period(sub)
    assert refused.value.code == "purchase_not_allowed" and counts() == before


def test_staff_can_grant_a_period_on_account_without_credit(customer, service):
    with on(at(dt.date(2026, 12, 28))):
        result = prepaid.purchase_period(service, require_credit=False, reason="promised to pay on Friday")

    assert (result.event, result.period_end) == ("renewed", FEB_1)
    assert (result.invoice.status, result.invoice.outstanding) == ("issued", Decimal("1000.00"))
    assert customer_balance(customer.pk) == Decimal("1000.00")


def test_a_period_already_invoiced_is_not_bought_twice(customer, service):
    with on(at(dt.date(2026, 12, 28))):
        pay(customer, "1000.00")
        existing = billing.invoice_subscription_period(service, JAN_1, FEB_1)  # billed by hand, not granted
        pay(customer, "1000.00")
        before = counts()
        result = prepaid.purchase_period(service)

    assert (result.created, result.invoice.pk, result.event) == (False, existing.pk, "")
    assert counts() == before and reload(service).current_period_end == JAN_1


def test_an_expiry_that_fails_on_one_service_does_not_stop_the_others(customer, service, monkeypatch):
    other = SubscriptionFactory(customer=CustomerFactory(), plan=service.plan, status="pending")
    with on(DEC_1):
        pay(other.customer, "1000.00")
        prepaid.purchase_period(other)
    real = prepaid._settle_expiry

    def flaky(subscription_id, now):
        if subscription_id == service.pk:
            raise RuntimeError("database hiccup")
        return real(subscription_id, now)

    monkeypatch.setattr(prepaid, "_settle_expiry", flaky)
    with on(JAN_1):
        summary = prepaid.process_expiries()

    assert (summary.checked, summary.failed, summary.failed_ids, summary.expired) == (2, 1, [service.pk], 1)
    assert reload(service).status == "active" and reload(other).status == "expired"


# --- races (PostgreSQL) ------------------------------------------------------------------------


@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)
def test_two_expiry_jobs_at_the_same_moment_renew_once(reference_data):
    customer = CustomerFactory()
    plan = PlanFactory(kind=Plan.Kind.PREPAID, with_price=Decimal("1000.00"))
    sub = SubscriptionFactory(customer=customer, plan=plan, status="pending")
    with on(DEC_1):
        pay(customer, "3000.00")
        prepaid.purchase_period(sub)
    with on(JAN_1):
        results, errors = race(2, prepaid.process_expiries)

    assert errors == []
    assert sorted(s.renewed for s in results) == [0, 1] and sum(s.failed for s in results) == 0
    assert len(invoices(sub)) == 2 and reload(sub).current_period_end == FEB_1
    assert events(sub) == ["activated", "renewed"]
    assert customer_credit(customer.pk) == Decimal("1000.00")


@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)
def test_two_purchases_racing_for_one_periods_credit_buy_one_period(reference_data):
    customer = CustomerFactory()
    plan = PlanFactory(kind=Plan.Kind.PREPAID, with_price=Decimal("1000.00"))
    sub = SubscriptionFactory(customer=customer, plan=plan, status="pending")
    with on(DEC_1):
        pay(customer, "1000.00")
        prepaid.purchase_period(sub)
        pay(customer, "1000.00")
        results, errors = race(3, lambda: prepaid.purchase_period(Subscription.objects.get(pk=sub.pk)))

    assert len(results) == 1 and len(errors) == 2
    assert all(isinstance(e, prepaid.InsufficientCredit) for e in errors)
    assert len(invoices(sub)) == 2 and reload(sub).current_period_end == FEB_1
    assert customer_balance(customer.pk) == 0
