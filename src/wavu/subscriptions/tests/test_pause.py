"""Vacation hold: a pause stops the service and the billing clock; resuming moves the period (and
a postpaid service's next bill) by exactly the time paused; limits come from settings."""

import datetime as dt

import pytest
import time_machine
from django.core.exceptions import ValidationError
from django.utils import timezone

from wavu.core.audit import acting_as
from wavu.core.models import AuditEvent
from wavu.subscriptions import services
from wavu.subscriptions.models import LifecycleEvent, Status, Subscription
from wavu.subscriptions.periods import next_billing_date
from wavu.testing.factories import CustomerFactory, PlanFactory

pytestmark = pytest.mark.django_db


def local(*args) -> dt.datetime:
    return timezone.make_aware(dt.datetime(*args))


NOV_1, DEC_1 = local(2026, 11, 1), local(2026, 12, 1)


def postpaid_service(start=NOV_1):
    """A postpaid service (billing day 1) whose first period the billing run has invoiced."""
    sub = services.create_subscription(CustomerFactory(), PlanFactory(kind="postpaid"), billing_anchor_day=1)
    services.activate(sub, at=start)
    Subscription.objects.filter(pk=sub.pk).update(next_bill_at=sub.current_period_end)  # as the run does
    sub.refresh_from_db()
    return sub


def prepaid_service(start=NOV_1):
    plan = PlanFactory(kind="prepaid", validity_unit="day", validity_count=30)
    sub = services.create_subscription(CustomerFactory(), plan)
    services.activate(sub, at=start)
    return sub


def snapshot(sub):
    stored = Subscription.objects.get(pk=sub.pk)
    return {f.attname: getattr(stored, f.attname) for f in Subscription._meta.concrete_fields}


def test_a_postpaid_service_paused_for_14_days_is_billed_14_days_later():
    sub = postpaid_service()
    assert (sub.current_period_end, sub.next_bill_at) == (DEC_1, DEC_1)

    with acting_as("user:noc"):
        services.pause(sub, until=local(2026, 11, 25), reason="travelling to Kisumu", at=local(2026, 11, 11))
    assert sub.status == Status.PAUSED and sub.paused_at == local(2026, 11, 11)
    assert sub.pause_until == local(2026, 11, 25)
    with acting_as("user:noc"):
        services.resume(sub, reason="back early? no, on the day", at=local(2026, 11, 25))

    sub.refresh_from_db()
    assert sub.status == Status.ACTIVE and sub.paused_at is None and sub.pause_until is None
    assert sub.current_period_start == NOV_1
    assert sub.current_period_end == local(2026, 12, 15) == sub.next_bill_at  # exactly 14 days later
    assert sub.billing_anchor_day == 1  # the next period is the short one 15 Dec → 1 Jan
    assert next_billing_date(sub.next_bill_at, sub.billing_anchor_day) == local(2027, 1, 1)
    paused, resumed = LifecycleEvent.objects.filter(kind__in=("paused", "resumed")).order_by("id")
    assert dt.datetime.fromisoformat(paused.data["pause_until"]) == local(2026, 11, 25)
    assert paused.reason == "travelling to Kisumu" and paused.actor_label == "user:noc"
    assert resumed.data["shift_seconds"] == 14 * 86_400
    assert dt.datetime.fromisoformat(resumed.data["next_bill_at"]) == local(2026, 12, 15)
    assert dt.datetime.fromisoformat(resumed.data["period_end"]) == local(2026, 12, 15)
    assert (resumed.from_status, resumed.to_status, resumed.actor_label) == ("paused", "active", "user:noc")


def test_a_prepaid_service_paused_for_14_days_expires_14_days_later():
    sub = prepaid_service()

    services.pause(sub, until=local(2026, 11, 19, 8), at=local(2026, 11, 5, 8))
    services.resume(sub, at=local(2026, 11, 19, 8))

    assert sub.current_period_end == DEC_1 + dt.timedelta(days=14)
    assert sub.next_bill_at is None


def test_resuming_moves_a_downgrade_scheduled_for_the_period_end_with_it():
    sub = postpaid_service()
    services.schedule_plan_change(sub, PlanFactory(kind="postpaid"), DEC_1)

    services.pause(sub, until=local(2026, 11, 25), at=local(2026, 11, 11))
    services.resume(sub, at=local(2026, 11, 25))

    assert sub.pending_plan_at == local(2026, 12, 15) == sub.current_period_end


def test_a_pause_lasts_at_most_the_configured_days_and_defaults_to_them(settings):
    settings.WAVU = {**settings.WAVU, "PAUSE_MAX_DAYS": 30}
    long_one, default_one = postpaid_service(), postpaid_service()
    before = snapshot(long_one)

    with pytest.raises(ValidationError) as too_long:
        services.pause(long_one, until=local(2026, 12, 11, 0, 1), at=local(2026, 11, 11))
    with pytest.raises(ValidationError) as backwards:
        services.pause(long_one, until=local(2026, 11, 10), at=local(2026, 11, 11))
    services.pause(default_one, at=local(2026, 11, 11))

    assert too_long.value.error_dict["until"][0].code == "pause_too_long"
    assert backwards.value.error_dict["until"][0].code == "until_invalid"
    assert snapshot(long_one) == before
    assert not LifecycleEvent.objects.filter(subscription=long_one, kind="paused").exists()
    assert not AuditEvent.objects.filter(object_id=str(long_one.pk), verb="paused").exists()
    assert default_one.pause_until == local(2026, 12, 11)


def test_a_third_pause_within_twelve_months_is_refused_and_the_next_year_is_free_again():
    sub = prepaid_service()
    for month in (1, 3):
        services.pause(sub, until=local(2027, month, 10), at=local(2027, month, 1))
        services.resume(sub, at=local(2027, month, 10))
    before = snapshot(sub)
    events = LifecycleEvent.objects.count()

    with pytest.raises(services.PauseLimitReached) as caught:
        services.pause(sub, at=local(2027, 6, 1))

    assert caught.value.code == "pause_limit_reached" and caught.value.status == 409
    assert snapshot(sub) == before and LifecycleEvent.objects.count() == events
    # A year after the first pause one pause is free again.
    services.pause(sub, at=local(2028, 1, 2))
    assert sub.status == Status.PAUSED


def test_the_pause_limit_comes_from_settings(settings):
    settings.WAVU = {**settings.WAVU, "PAUSES_PER_YEAR": 1}
    sub = prepaid_service()
    services.pause(sub, until=local(2026, 11, 10), at=local(2026, 11, 2))
    services.resume(sub, at=local(2026, 11, 10))

    with pytest.raises(services.PauseLimitReached):
        services.pause(sub, at=local(2026, 11, 20))


def test_a_generic_transition_to_paused_keeps_the_same_rules(settings):
    settings.WAVU = {**settings.WAVU, "PAUSES_PER_YEAR": 0}
    sub = prepaid_service()

    with pytest.raises(services.PauseLimitReached):
        services.transition(sub, Status.PAUSED)

    assert Subscription.objects.get(pk=sub.pk).status == Status.ACTIVE


@pytest.mark.parametrize("status", [Status.PENDING, Status.SUSPENDED, Status.EXPIRED, Status.CANCELLED])
def test_only_an_active_service_can_be_paused(status):
    sub = prepaid_service()
    Subscription.objects.filter(pk=sub.pk).update(status=status)
    before = snapshot(sub)

    with pytest.raises(services.InvalidTransition):
        services.pause(sub, until=local(2026, 11, 20), at=local(2026, 11, 10))

    assert snapshot(sub) == before
    assert not LifecycleEvent.objects.filter(kind="paused").exists()


def test_cancelling_a_paused_service_clears_the_pause():
    sub = prepaid_service()
    services.pause(sub, until=local(2026, 11, 20), at=local(2026, 11, 10))

    services.cancel(sub, at=local(2026, 11, 12))

    assert sub.status == Status.CANCELLED and sub.pause_until is None and sub.paused_at is None
    assert services.resume_due_pauses(now=local(2026, 12, 1)) == 0


def test_the_pause_job_resumes_due_services_by_the_planned_length_however_late_it_runs():
    due, later, open_ended = postpaid_service(), postpaid_service(), prepaid_service()
    services.pause(due, until=local(2026, 11, 25), at=local(2026, 11, 11))
    services.pause(later, until=local(2026, 12, 20), at=local(2026, 11, 11))
    services.pause(open_ended, at=local(2026, 11, 11))
    Subscription.objects.filter(pk=open_ended.pk).update(pause_until=None)  # paused before limits existed

    with time_machine.travel(local(2026, 11, 25, 6, 15), tick=False):
        assert services.resume_due_pauses() == 1
        assert services.resume_due_pauses() == 0  # a second fire changes nothing

    due.refresh_from_db()
    assert due.status == Status.ACTIVE
    assert due.next_bill_at == local(2026, 12, 15) == due.current_period_end  # 14 days, not 14 days 6 h 15
    event = LifecycleEvent.objects.get(subscription=due, kind="resumed")
    assert event.actor_label == "job:pause" and event.at == local(2026, 11, 25)
    assert event.reason == "the planned pause ended"
    assert AuditEvent.objects.filter(object_id=str(due.pk), verb="resumed", actor_label="job:pause").exists()
    assert Subscription.objects.get(pk=later.pk).status == Status.PAUSED
    assert Subscription.objects.get(pk=open_ended.pk).status == Status.PAUSED


def test_staff_may_resume_before_the_planned_end_and_the_shift_is_the_time_actually_paused():
    sub = postpaid_service()
    services.pause(sub, until=local(2026, 11, 25), at=local(2026, 11, 11))

    services.resume(sub, at=local(2026, 11, 15))

    assert sub.next_bill_at == local(2026, 12, 5)
    assert services.resume_due_pauses(now=local(2026, 11, 26)) == 0
