"""The lifecycle event stream (what RADIUS and SMS follow) and the API actions that feed it:
plan changes with `when`, pauses with `until`, scheduled changes, details."""

import datetime as dt
from decimal import Decimal

import pytest
import time_machine
from django.contrib.auth import get_user_model
from django.utils import timezone
from rest_framework.test import APIClient

from wavu.billing import services as billing
from wavu.billing.models import CreditNote, Invoice
from wavu.core.audit import acting_as
from wavu.payments.services import record_manual_payment
from wavu.subscriptions import selectors, services
from wavu.subscriptions.models import LifecycleEvent, Status, Subscription
from wavu.testing.factories import CustomerFactory, PlanFactory

pytestmark = pytest.mark.django_db

URL = "/api/v1/lifecycle-events/"


def local(*args) -> dt.datetime:
    return timezone.make_aware(dt.datetime(*args))


@pytest.fixture
def api():
    client = APIClient()
    client.force_authenticate(get_user_model().objects.create_user("noc", password="x", is_staff=True))
    return client


def prepaid_plan(price="1500.00"):
    return PlanFactory(kind="prepaid", validity_unit="day", validity_count=30, with_price=Decimal(price))


@pytest.fixture
def two_services():
    """Two customers' prepaid services with a few events each, by people and by jobs."""
    with time_machine.travel(local(2026, 10, 30), tick=False):
        first = services.create_subscription(CustomerFactory(), prepaid_plan())
        second = services.create_subscription(CustomerFactory(), prepaid_plan())
    with acting_as("user:noc"):
        services.activate(first, at=local(2026, 11, 1), reason="installed")
        services.activate(second, at=local(2026, 11, 2), reason="installed")
        services.suspend(first, at=local(2026, 11, 20), reason="abuse report")
    with acting_as("job:expiry"):
        services.expire(second, at=local(2026, 12, 2), reason="period ended")
    return first, second


def test_the_stream_pages_by_id_cursor_in_a_stable_shape(api, two_services):
    first, second = two_services
    ids = list(LifecycleEvent.objects.order_by("id").values_list("id", flat=True))
    assert len(ids) == 6  # created ×2, activated ×2, suspended, expired

    page = api.get(URL, {"limit": 4}).json()
    rest = api.get(URL, {"limit": 4, "after": page["next_after"]}).json()
    end = api.get(URL, {"after": rest["next_after"]}).json()

    assert [e["id"] for e in page["results"]] == ids[:4] and page["has_more"] is True
    assert f"after={ids[3]}" in page["next"]
    assert [e["id"] for e in rest["results"]] == ids[4:] and rest["has_more"] is False and rest["next"] is None
    assert end == {"results": [], "next_after": ids[-1], "has_more": False, "next": None}
    suspended = page["results"][-1] if page["results"][-1]["kind"] == "suspended" else rest["results"][0]
    assert set(suspended) == {"id", "at", "subscription", "customer", "username", "kind", "from_status",
                              "to_status", "reason", "actor", "data"}  # fmt: skip
    assert suspended["subscription"] == first.pk and suspended["customer"] == first.customer_id
    assert suspended["username"] == first.username and suspended["actor"] == "user:noc"
    assert (suspended["from_status"], suspended["to_status"]) == ("active", "suspended")
    assert suspended["reason"] == "abuse report" and suspended["data"] == {"cause": "staff"}


def test_the_stream_filters_by_kind_subscription_customer_and_time(api, two_services):
    first, second = two_services

    def kinds(**params):
        return [e["kind"] for e in api.get(URL, params).json()["results"]]

    assert kinds(kind="suspended,expired") == ["suspended", "expired"]
    assert api.get(f"{URL}?kind=suspended&kind=expired").json()["results"][1]["actor"] == "job:expiry"
    assert kinds(subscription=first.pk) == ["created", "activated", "suspended"]
    assert kinds(customer=second.customer_id) == ["created", "activated", "expired"]
    assert kinds(since=local(2026, 11, 15).isoformat()) == ["suspended", "expired"]
    assert kinds(kind="renewed") == []


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"after": "-1"}, "after"),
        ({"after": "abc"}, "after"),
        ({"limit": "0"}, "limit"),
        ({"limit": "501"}, "limit"),
        ({"since": "yesterday"}, "since"),
        ({"subscription": "x"}, "subscription"),
        ({"customer": "0"}, "customer"),
        ({"kind": "DROP TABLE"}, "kind"),
    ],
)
def test_bad_stream_parameters_answer_400(api, two_services, params, field):
    response = api.get(URL, params)

    assert response.status_code == 400, response.content
    assert field in response.json()["error"]["fields"]


def test_the_stream_is_read_only_and_for_staff(api, two_services):
    event = LifecycleEvent.objects.order_by("id").first()

    assert api.get(f"{URL}{event.pk}/").json()["kind"] == "created"
    assert api.post(URL, {"kind": "suspended"}).status_code == 405
    assert api.delete(f"{URL}{event.pk}/").status_code == 405
    assert APIClient().get(URL).status_code in (401, 403)


def test_the_selector_reads_on_from_a_cursor(two_services):
    first, _ = two_services
    everything = list(selectors.events_after())
    after_two = list(selectors.events_after(everything[1].pk, kinds=["activated", "suspended"], limit=2))

    assert [e.pk for e in everything] == sorted(e.pk for e in everything)
    assert [e.kind for e in after_two] == ["activated", "activated"]
    assert [e.kind for e in selectors.events_after(subscription=first, kinds=["suspended"])] == ["suspended"]


def test_every_new_path_writes_an_event_with_who_and_why():
    plan = prepaid_plan()
    sub = services.create_subscription(CustomerFactory(), plan)
    cheaper = prepaid_plan("1000.00")
    with acting_as("user:noc"):
        services.activate(sub, at=local(2026, 11, 1), reason="installed")
        services.pause(sub, until=local(2026, 11, 15), at=local(2026, 11, 5), reason="travel")
    services.resume_due_pauses(now=local(2026, 11, 16))
    with acting_as("user:noc"):
        services.schedule_plan_change(sub, cheaper, local(2026, 12, 15), reason="cheaper")
    services.renew_period(sub, local(2026, 12, 15), local(2027, 1, 14), reason="bought with INV-9", actor="job:renew")
    services.apply_pending_plan(sub, at=local(2026, 12, 15), actor="job:renew")

    stream = [(e.kind, e.actor_label, e.reason) for e in selectors.events_after(subscription=sub)]
    assert stream == [
        ("created", "system", ""),
        ("activated", "user:noc", "installed"),
        ("paused", "user:noc", "travel"),
        ("resumed", "job:pause", "the planned pause ended"),
        ("plan_change_scheduled", "user:noc", "cheaper"),
        ("renewed", "job:renew", "bought with INV-9"),
        ("plan_changed", "job:renew", "scheduled plan change"),
    ]


# --- the subscription actions --------------------------------------------------------------------


def test_change_plan_with_when_answers_with_the_documents(api):
    customer = CustomerFactory()
    basic = PlanFactory(name="Home Fibre 10", with_price=Decimal("3000.00"))
    faster = PlanFactory(name="Home Fibre 30", with_price=Decimal("4500.00"))
    with time_machine.travel(local(2026, 11, 1), tick=False):
        sub = services.create_subscription(customer, basic, billing_anchor_day=1)
        services.activate(sub, at=local(2026, 11, 1))
        billing.invoice_subscription_period(sub, local(2026, 11, 1), local(2026, 12, 1))
        Subscription.objects.filter(pk=sub.pk).update(next_bill_at=local(2026, 12, 1))
        record_manual_payment(method="cash", reference="R-1", amount="3000.00", customer=customer)
    url = f"/api/v1/subscriptions/{sub.pk}/change-plan/"

    with time_machine.travel(local(2026, 11, 11), tick=False):
        bad = api.post(url, {"plan": faster.pk, "when": "tomorrow"}, format="json")
        up = api.post(url, {"plan": faster.pk, "reason": "more speed"}, format="json")
        down = api.post(url, {"plan": basic.pk}, format="json")

    assert bad.status_code == 400 and "when" in bad.json()["error"]["fields"]
    assert up.status_code == 200, up.content
    change = up.json()["plan_change"]
    assert change["kind"] == "upgrade" and change["scheduled"] is False
    assert (change["credit"], change["charge"]) == ("2000.00", "3000.00")
    assert change["credit_note"] == CreditNote.objects.get().number
    assert change["invoice"] == Invoice.objects.latest("id").number
    assert up.json()["subscription"]["plan"] == faster.pk
    assert down.status_code == 200
    scheduled = down.json()
    assert scheduled["plan_change"]["scheduled"] is True and scheduled["plan_change"]["invoice"] is None
    assert scheduled["subscription"]["pending_plan"] == basic.pk
    assert scheduled["subscription"]["pending_plan_code"] == basic.code
    assert timezone.datetime.fromisoformat(scheduled["subscription"]["pending_plan_at"]) == local(2026, 12, 1)

    dropped = api.post(f"/api/v1/subscriptions/{sub.pk}/cancel-plan-change/", {"reason": "stays"}, format="json")
    assert dropped.status_code == 200 and dropped.json()["pending_plan"] is None


def test_a_refused_plan_change_answers_409_with_its_code(api):
    sub = services.create_subscription(CustomerFactory(), prepaid_plan())
    postpaid = PlanFactory(kind="postpaid")

    response = api.post(f"/api/v1/subscriptions/{sub.pk}/change-plan/", {"plan": postpaid.pk}, format="json")

    assert response.status_code == 409 and response.json()["error"]["code"] == "plan_kind_mismatch"
    assert Subscription.objects.get(pk=sub.pk).plan_id != postpaid.pk


def test_pause_takes_an_until_and_the_detail_shows_it(api):
    sub = services.create_subscription(CustomerFactory(), prepaid_plan())
    services.activate(sub)
    url = f"/api/v1/subscriptions/{sub.pk}/pause/"
    until = (timezone.now() + dt.timedelta(days=14)).replace(microsecond=0)

    too_long = api.post(url, {"until": (timezone.now() + dt.timedelta(days=400)).isoformat()}, format="json")
    paused = api.post(url, {"until": until.isoformat(), "reason": "travel"}, format="json")

    assert too_long.status_code == 400 and "until" in too_long.json()["error"]["fields"]
    assert paused.status_code == 200, paused.content
    body = paused.json()
    assert body["status"] == Status.PAUSED and timezone.datetime.fromisoformat(body["pause_until"]) == until
    for field in ("next_bill_at", "pending_plan", "pending_plan_at", "suspension_cause", "auto_renew"):
        assert field in body


def test_update_details_sets_auto_renew_through_the_service(api):
    sub = services.create_subscription(CustomerFactory(), prepaid_plan())
    url = f"/api/v1/subscriptions/{sub.pk}/update-details/"

    off = api.post(url, {"auto_renew": False, "reason": "customer pays by hand"}, format="json")
    bad = api.post(url, {"auto_renew": "maybe"}, format="json")

    assert off.status_code == 200 and off.json()["auto_renew"] is False
    assert bad.status_code == 400 and "auto_renew" in bad.json()["error"]["fields"]
    assert Subscription.objects.get(pk=sub.pk).auto_renew is False
    with pytest.raises(Exception) as caught:
        services.update_subscription(sub, auto_renew="yes")
    assert "auto_renew" in caught.value.error_dict
