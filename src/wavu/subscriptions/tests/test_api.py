"""The subscriptions API: opening services and the lifecycle actions support staff press."""

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from wavu.core.models import AuditEvent
from wavu.customers import services as customers
from wavu.subscriptions import services
from wavu.subscriptions.models import LifecycleEvent, Status, Subscription
from wavu.testing.factories import PlanFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def api():
    client = APIClient()
    client.force_authenticate(get_user_model().objects.create_user("noc", password="x", is_staff=True))
    return client


@pytest.fixture
def customer():
    return customers.create_customer(name="Wanjiku Kamau", phone="0712345678")


@pytest.fixture
def plan():
    return PlanFactory(kind="prepaid", validity_unit="day", validity_count=30)


def test_opening_a_service_answers_201_with_generated_credentials(api, customer, plan):
    response = api.post(
        "/api/v1/subscriptions/",
        {"customer": customer.pk, "plan": plan.pk, "mac_address": "00-1a-2b-3c-4d-5e"},
        format="json",
    )

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "pending" and body["username"] == "10008"
    assert len(body["password"]) >= 10 and body["mac_address"] == "00:1A:2B:3C:4D:5E"
    assert body["allowed_transitions"] == ["active", "cancelled"]
    assert body["events"][0]["kind"] == "created"


def test_the_password_is_not_shown_in_lists(api, customer, plan):
    services.create_subscription(customer, plan)

    listed = api.get("/api/v1/subscriptions/").json()["results"]

    assert "password" not in listed[0]


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"plan": 999_999}, "plan"),
        ({"static_ip": "300.1.1.1"}, "static_ip"),
        ({"mac_address": "zz"}, "mac_address"),
        ({"username": "has space"}, "username"),
    ],
)
def test_bad_input_answers_400_and_opens_nothing(api, customer, plan, payload, field):
    response = api.post("/api/v1/subscriptions/", {"customer": customer.pk, "plan": plan.pk, **payload}, format="json")

    assert response.status_code == 400, response.content
    assert field in response.json()["error"]["fields"]
    assert not Subscription.objects.exists()


def test_the_lifecycle_actions_move_the_service_and_record_each_step(api, customer, plan):
    subscription = services.create_subscription(customer, plan)
    url = f"/api/v1/subscriptions/{subscription.pk}"

    steps = [
        ("activate", "active"),
        ("suspend", "suspended"),
        ("resume", "active"),
        ("pause", "paused"),
        ("resume", "active"),
        ("cancel", "cancelled"),
    ]
    for name, expected in steps:
        response = api.post(f"{url}/{name}/", {"reason": f"{name} by noc"}, format="json")
        assert response.status_code == 200, (name, response.content)
        assert response.json()["status"] == expected

    kinds = list(LifecycleEvent.objects.filter(subscription=subscription).values_list("kind", flat=True))
    assert kinds == ["created", "activated", "suspended", "resumed", "paused", "resumed", "cancelled"]
    changes = AuditEvent.objects.filter(object_type="subscriptions.subscription").exclude(verb="create_subscription")
    assert changes.count() == 6
    assert set(changes.values_list("actor_label", flat=True)) == {"user:noc"}


def test_a_move_the_lifecycle_does_not_allow_answers_409_and_changes_nothing(api, customer, plan):
    subscription = services.create_subscription(customer, plan)

    response = api.post(f"/api/v1/subscriptions/{subscription.pk}/suspend/", {"reason": "x"}, format="json")

    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "invalid_transition" and "pending" in error["message"].lower()
    subscription.refresh_from_db()
    assert subscription.status == Status.PENDING
    assert LifecycleEvent.objects.filter(subscription=subscription).count() == 1  # only "created"


def test_change_plan_action(api, customer, plan):
    subscription = services.create_subscription(customer, plan)
    faster = PlanFactory(code="wireless-20", kind="prepaid", validity_unit="day", validity_count=30)

    response = api.post(
        f"/api/v1/subscriptions/{subscription.pk}/change-plan/", {"plan": faster.pk, "reason": "upgrade"}
    )
    unknown = api.post(f"/api/v1/subscriptions/{subscription.pk}/change-plan/", {"plan": 999_999})

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["subscription"]["plan_code"] == "wireless-20"
    # Not in use yet: nothing to prorate, nothing to wait for.
    assert body["plan_change"]["scheduled"] is False and body["plan_change"]["invoice"] is None
    assert unknown.status_code == 400 and "plan" in unknown.json()["error"]["fields"]


def test_change_credentials_action_refuses_a_taken_ip(api, customer, plan):
    services.create_subscription(customer, plan, static_ip="197.248.1.1")
    subscription = services.create_subscription(customer, plan)
    url = f"/api/v1/subscriptions/{subscription.pk}/change-credentials/"

    taken = api.post(url, {"static_ip": "197.248.1.1"}, format="json")
    fresh = api.post(url, {"regenerate_password": True}, format="json")

    assert taken.status_code == 400 and "static_ip" in taken.json()["error"]["fields"]
    assert fresh.status_code == 200 and fresh.json()["password"] != subscription.password


def test_subscriptions_filter_by_customer_status_and_plan(api, customer, plan):
    other_customer = customers.create_customer(name="Otieno", phone="0733000111")
    first = services.create_subscription(customer, plan)
    services.create_subscription(other_customer, plan)
    services.activate(first)

    def usernames(**params):
        return sorted(s["username"] for s in api.get("/api/v1/subscriptions/", params).json()["results"])

    assert usernames(customer=customer.pk) == ["10008"]
    assert usernames(status="active") == ["10008"]
    assert len(usernames(plan=plan.pk)) == 2
    assert usernames(search="otieno") == [other_customer.account_number]


def test_services_are_cancelled_not_deleted_nor_patched(api, customer, plan):
    subscription = services.create_subscription(customer, plan)

    assert api.delete(f"/api/v1/subscriptions/{subscription.pk}/").status_code == 405
    assert api.patch(f"/api/v1/subscriptions/{subscription.pk}/", {"status": "active"}).status_code == 405


def test_the_subscription_list_costs_the_same_few_queries_for_many_services(
    api, customer, plan, django_assert_max_num_queries
):
    for _ in range(15):
        services.create_subscription(customer, plan)

    with django_assert_max_num_queries(6):
        response = api.get("/api/v1/subscriptions/")

    assert response.status_code == 200 and response.json()["count"] == 15
