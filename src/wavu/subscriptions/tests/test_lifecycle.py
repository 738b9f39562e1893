"""A service's life: activation periods, suspension, pauses, expiry and cancellation.

The allowed moves are `TRANSITIONS` in subscriptions/models.py; the whole status matrix is
tested here, so a change there shows up as a deliberate test change.
"""

import datetime as dt
import itertools
from decimal import Decimal

import pytest
import time_machine
from django.utils import timezone

from wavu.core.audit import acting_as
from wavu.core.errors import DomainError
from wavu.core.models import AuditEvent
from wavu.subscriptions import services
from wavu.subscriptions.models import TRANSITIONS, LifecycleEvent, Status, Subscription, SubscriptionAddOn
from wavu.subscriptions.periods import next_billing_date
from wavu.testing.factories import AddOnFactory, CustomerFactory, PlanFactory, SubscriptionFactory

pytestmark = pytest.mark.django_db


def local(*args) -> dt.datetime:
    return timezone.make_aware(dt.datetime(*args))


ALL_MOVES = list(itertools.product(Status.values, Status.values))
ALLOWED = [(a, b) for a, b in ALL_MOVES if b in TRANSITIONS[a]]
REFUSED = [(a, b) for a, b in ALL_MOVES if b not in TRANSITIONS[a]]


def service_in(status, **kwargs):
    kwargs.setdefault("plan", PlanFactory(kind="prepaid", validity_unit="day", validity_count=30))
    return SubscriptionFactory(status=status, customer=CustomerFactory(), static_ip=None, **kwargs)


def test_the_matrix_is_what_the_business_agreed():
    assert TRANSITIONS[Status.CANCELLED] == frozenset()  # cancelled is final
    assert Status.PENDING not in set().union(*TRANSITIONS.values())  # nothing goes back to pending
    assert len(ALLOWED) == 12 and len(REFUSED) == 24


@pytest.mark.parametrize(("from_status", "to_status"), ALLOWED)
def test_every_allowed_move_works_and_is_recorded(from_status, to_status):
    subscription = service_in(from_status)

    with acting_as("user:noc"):
        services.transition(subscription, to_status, reason="ticket 4411")

    stored = Subscription.objects.get(pk=subscription.pk)
    assert stored.status == to_status == subscription.status
    event = LifecycleEvent.objects.get(subscription=subscription)
    assert (event.from_status, event.to_status) == (from_status, to_status)
    assert event.reason == "ticket 4411" and event.actor_label == "user:noc"
    audit = AuditEvent.objects.get(object_type="subscriptions.subscription", object_id=str(subscription.pk))
    assert audit.before["status"] == from_status and audit.after["status"] == to_status
    assert audit.actor_label == "user:noc" and audit.verb == event.kind


@pytest.mark.parametrize(("from_status", "to_status"), REFUSED)
def test_every_other_move_is_refused_and_changes_nothing(from_status, to_status):
    subscription = service_in(from_status)
    before = {f.attname: getattr(subscription, f.attname) for f in Subscription._meta.concrete_fields}

    with pytest.raises(services.InvalidTransition) as caught:
        services.transition(subscription, to_status, reason="mistake")

    assert caught.value.code == "invalid_transition" and caught.value.status == 409
    assert from_status in caught.value.fields["status"][0]
    stored = Subscription.objects.get(pk=subscription.pk)
    assert {f.attname: getattr(stored, f.attname) for f in Subscription._meta.concrete_fields} == before
    assert not LifecycleEvent.objects.exists()
    assert not AuditEvent.objects.exists()


def test_an_unknown_status_is_refused():
    with pytest.raises(DomainError) as caught:
        services.transition(service_in(Status.ACTIVE), "deleted")

    assert caught.value.code == "invalid_status"


def test_the_transition_reads_the_status_under_the_lock_not_the_stale_object():
    subscription = service_in(Status.ACTIVE)
    Subscription.objects.filter(pk=subscription.pk).update(status=Status.CANCELLED)  # another clerk was faster

    with pytest.raises(services.InvalidTransition):
        services.suspend(subscription)

    assert Subscription.objects.get(pk=subscription.pk).status == Status.CANCELLED


def test_a_job_names_itself_as_the_actor():
    subscription = service_in(Status.ACTIVE)

    services.expire(subscription, actor="job:expiry")

    assert LifecycleEvent.objects.get().actor_label == "job:expiry"
    assert AuditEvent.objects.get().actor_label == "job:expiry"


def test_a_prepaid_service_runs_for_its_validity_from_activation():
    subscription = service_in(Status.PENDING, plan=PlanFactory(kind="prepaid", validity_unit="day", validity_count=30))

    services.activate(subscription, at=local(2026, 1, 10, 14, 0))

    assert subscription.current_period_start == local(2026, 1, 10, 14, 0)
    assert subscription.current_period_end == local(2026, 2, 9, 14, 0)
    assert subscription.activated_at == local(2026, 1, 10, 14, 0)
    event = LifecycleEvent.objects.get()
    assert event.kind == "activated" and event.data["period_end"] == local(2026, 2, 9, 14, 0).isoformat()


def test_a_24_hour_hotspot_package_expires_24_hours_after_activation():
    plan = PlanFactory(kind="hotspot", validity_unit="hour", validity_count=24, technology="hotspot")
    subscription = service_in(Status.PENDING, plan=plan)

    with time_machine.travel(local(2026, 1, 10, 21, 15), tick=False):
        services.activate(subscription)

    assert subscription.current_period_end == local(2026, 1, 11, 21, 15)


def test_a_monthly_prepaid_service_started_on_31_january_expires_on_28_february():
    plan = PlanFactory(kind="prepaid", validity_unit="month", validity_count=1)
    subscription = service_in(Status.PENDING, plan=plan)

    services.activate(subscription, at=local(2025, 1, 31, 10, 0))

    assert subscription.current_period_end == local(2025, 2, 28, 10, 0)


@pytest.mark.parametrize(
    ("activated", "anchor", "next_bill"),
    [
        (local(2025, 1, 31, 10), 31, dt.date(2025, 2, 28)),
        (local(2024, 1, 31, 10), 31, dt.date(2024, 2, 29)),
        (local(2026, 3, 31, 10), 31, dt.date(2026, 4, 30)),
        (local(2026, 4, 30, 10), 31, dt.date(2026, 5, 31)),
        (local(2026, 1, 15, 10), 1, dt.date(2026, 2, 1)),
        (local(2026, 1, 15, 10), 20, dt.date(2026, 1, 20)),
        (local(2026, 12, 15, 10), 15, dt.date(2027, 1, 15)),
        (local(2026, 2, 28, 10), 30, dt.date(2026, 3, 30)),
    ],
)
def test_a_postpaid_service_is_next_billed_on_its_anchor_day(activated, anchor, next_bill):
    subscription = service_in(Status.PENDING, plan=PlanFactory(kind="postpaid"), billing_anchor_day=anchor)

    services.activate(subscription, at=activated)

    assert subscription.current_period_start == activated
    assert subscription.current_period_end == timezone.make_aware(dt.datetime.combine(next_bill, dt.time.min))


def test_a_postpaid_service_without_an_anchor_bills_on_the_day_it_was_activated():
    subscription = service_in(Status.PENDING, plan=PlanFactory(kind="postpaid"))

    services.activate(subscription, at=local(2026, 1, 31, 16, 0))

    assert subscription.billing_anchor_day == 31
    assert subscription.current_period_end == local(2026, 2, 28, 0, 0)


def test_the_billing_day_after_a_short_month_returns_to_the_anchor():
    assert next_billing_date(local(2026, 2, 28, 0, 0), 31) == local(2026, 3, 31, 0, 0)
    assert next_billing_date(local(2026, 1, 10, 0, 0), 10, months=3) == local(2026, 4, 10, 0, 0)


def test_renewing_an_expired_service_starts_a_new_period():
    subscription = service_in(Status.PENDING)
    services.activate(subscription, at=local(2026, 1, 1, 8))
    services.expire(subscription, at=local(2026, 1, 31, 8))

    services.activate(subscription, at=local(2026, 2, 3, 9))

    assert subscription.current_period_start == local(2026, 2, 3, 9)
    assert subscription.current_period_end == local(2026, 3, 5, 9)
    assert subscription.activated_at == local(2026, 1, 1, 8)  # the first activation is kept
    assert list(LifecycleEvent.objects.values_list("kind", flat=True)) == ["activated", "expired", "renewed"]


def test_resuming_a_suspended_service_keeps_its_period():
    subscription = service_in(Status.PENDING)
    services.activate(subscription, at=local(2026, 1, 1, 8))
    services.suspend(subscription, reason="invoice overdue", at=local(2026, 1, 10, 8))

    services.resume(subscription, reason="paid", at=local(2026, 1, 12, 8))

    assert subscription.status == Status.ACTIVE
    assert subscription.current_period_end == local(2026, 1, 31, 8)
    assert LifecycleEvent.objects.last().kind == "resumed"


def test_a_paused_prepaid_service_gets_its_paused_days_back():
    subscription = service_in(Status.PENDING)
    services.activate(subscription, at=local(2026, 1, 1, 8))

    services.pause(subscription, reason="travelling", at=local(2026, 1, 10, 8))
    assert subscription.paused_at == local(2026, 1, 10, 8)
    services.resume(subscription, at=local(2026, 1, 17, 8))

    assert subscription.current_period_end == local(2026, 2, 7, 8)
    assert subscription.paused_at is None


def test_resume_is_only_for_suspended_or_paused_services():
    subscription = service_in(Status.EXPIRED)

    with pytest.raises(services.InvalidTransition):
        services.resume(subscription)

    assert Subscription.objects.get(pk=subscription.pk).status == Status.EXPIRED


def test_cancelling_ends_add_ons_and_releases_the_static_ip():
    subscription = service_in(Status.ACTIVE)
    Subscription.objects.filter(pk=subscription.pk).update(static_ip="197.248.10.9")
    addon = AddOnFactory(with_price=Decimal("500"))
    services.add_addon(subscription, addon)

    services.cancel(subscription, reason="moved", at=local(2026, 5, 1, 12))

    subscription.refresh_from_db()
    assert subscription.status == Status.CANCELLED and subscription.cancelled_at == local(2026, 5, 1, 12)
    assert subscription.static_ip is None
    assert SubscriptionAddOn.objects.get().ended_at == local(2026, 5, 1, 12)
    event = LifecycleEvent.objects.get(kind="cancelled")
    assert event.data == {"addons_ended": 1, "released_static_ip": "197.248.10.9"}
    # The released address can go to another customer.
    other = service_in(Status.ACTIVE)
    services.change_credentials(other, static_ip="197.248.10.9")


def test_a_cancelled_service_takes_no_more_changes():
    subscription = service_in(Status.CANCELLED)

    for attempt in (
        lambda: services.change_plan(subscription, PlanFactory()),
        lambda: services.change_credentials(subscription, regenerate_password=True),
        lambda: services.add_addon(subscription, AddOnFactory()),
    ):
        with pytest.raises(DomainError) as caught:
            attempt()
        assert caught.value.code == "subscription_cancelled"
    assert not LifecycleEvent.objects.exists()
