"""Services in the Django admin: created, edited and moved through the lifecycle by the services."""

from decimal import Decimal

import pytest

from wavu.billing.models import CreditNote, Invoice
from wavu.core.models import AuditEvent
from wavu.customers import services as customers
from wavu.subscriptions import services
from wavu.subscriptions.models import LifecycleEvent, Subscription
from wavu.testing.factories import PlanFactory

pytestmark = pytest.mark.django_db

URL = "/admin/subscriptions/subscription/"


@pytest.fixture
def customer():
    return customers.create_customer(name="Wanjiku Kamau", phone="0712345678")


def test_a_service_added_in_the_admin_gets_generated_credentials(admin_client, customer):
    plan = PlanFactory()

    response = admin_client.post(
        f"{URL}add/",
        {"customer": customer.pk, "plan": plan.pk, "username": "", "static_ip": "", "mac_address": "001a.2b3c.4d5e"},
    )

    assert response.status_code == 302, response.context and response.context["adminform"].form.errors
    subscription = Subscription.objects.get()
    assert subscription.username == "10008" and subscription.status == "pending"
    assert subscription.mac_address == "00:1A:2B:3C:4D:5E" and len(subscription.password) >= 10
    assert LifecycleEvent.objects.get().actor_label == "user:admin"


def test_a_taken_static_ip_is_shown_as_an_error_in_the_admin(admin_client, customer):
    plan = PlanFactory()
    services.create_subscription(customer, plan, static_ip="197.248.2.2")

    response = admin_client.post(f"{URL}add/", {"customer": customer.pk, "plan": plan.pk, "static_ip": "197.248.2.2"})

    assert response.status_code == 200
    assert "static_ip" in response.context["adminform"].form.errors
    assert Subscription.objects.count() == 1


def test_editing_credentials_in_the_admin_goes_through_the_service(admin_client, customer):
    plan = PlanFactory()
    subscription = services.create_subscription(customer, plan)

    response = admin_client.post(
        f"{URL}{subscription.pk}/change/",
        {
            "plan": plan.pk,
            "username": "wanjiku-home",
            "static_ip": "197.248.3.3",
            "mac_address": "",
            "billing_anchor_day": "",
            "notes": "",
            "addons-TOTAL_FORMS": "0",
            "addons-INITIAL_FORMS": "0",
            "events-TOTAL_FORMS": "0",
            "events-INITIAL_FORMS": "0",
        },
    )

    assert response.status_code == 302, response.context and response.context["adminform"].form.errors
    subscription.refresh_from_db()
    assert subscription.username == "wanjiku-home" and subscription.static_ip == "197.248.3.3"
    assert AuditEvent.objects.filter(verb="change_credentials").exists()


def test_lifecycle_actions_in_the_admin_follow_the_allowed_moves(admin_client, customer):
    pending = services.create_subscription(customer, PlanFactory())
    active = services.create_subscription(customer, PlanFactory())
    services.activate(active)

    response = admin_client.post(
        URL, {"action": "suspend_selected", "_selected_action": [pending.pk, active.pk]}, follow=True
    )

    assert response.status_code == 200
    pending.refresh_from_db()
    active.refresh_from_db()
    assert (pending.status, active.status) == ("pending", "suspended")
    messages = [str(m) for m in response.context["messages"]]
    assert any("10008" in m and "cannot become" in m for m in messages)


def test_lifecycle_events_are_read_only_in_the_admin(admin_client, customer):
    subscription = services.create_subscription(customer, PlanFactory())
    event = subscription.events.get()

    assert admin_client.get("/admin/subscriptions/lifecycleevent/add/").status_code == 403
    assert admin_client.get(f"/admin/subscriptions/lifecycleevent/{event.pk}/delete/").status_code == 403
    assert admin_client.get(f"{URL}{subscription.pk}/change/").status_code == 200


def _change_form(plan, subscription, **extra):
    return {
        "plan": plan.pk,
        "username": subscription.username,
        "static_ip": "",
        "mac_address": "",
        "billing_anchor_day": subscription.billing_anchor_day or "",
        "auto_renew": "on",
        "notes": "",
        "addons-TOTAL_FORMS": "0",
        "addons-INITIAL_FORMS": "0",
        "events-TOTAL_FORMS": "0",
        "events-INITIAL_FORMS": "0",
        **extra,
    }


def test_a_plan_change_in_the_admin_is_prorated_or_scheduled_by_the_billing_service(admin_client, customer):
    cheap, dear = PlanFactory(with_price=Decimal("3000.00")), PlanFactory(with_price=Decimal("4500.00"))
    subscription = services.create_subscription(customer, dear, billing_anchor_day=1)
    services.activate(subscription)

    response = admin_client.post(f"{URL}{subscription.pk}/change/", _change_form(cheap, subscription), follow=True)

    assert response.status_code == 200
    subscription.refresh_from_db()
    assert subscription.plan == dear and subscription.pending_plan == cheap  # a downgrade waits
    assert any("scheduled" in str(m) for m in response.context["messages"])
    assert not Invoice.objects.exists() and not CreditNote.objects.exists()
    assert LifecycleEvent.objects.filter(kind="plan_change_scheduled", reason="admin").exists()


def test_a_plan_of_another_kind_is_refused_in_the_admin_form(admin_client, customer):
    subscription = services.create_subscription(customer, PlanFactory())
    prepaid = PlanFactory(kind="prepaid", validity_unit="day", validity_count=30)

    response = admin_client.post(f"{URL}{subscription.pk}/change/", _change_form(prepaid, subscription))

    assert response.status_code == 200 and "plan_kind_mismatch" not in str(response.content)
    assert "not a plan change" in str(response.context["adminform"].form.non_field_errors())
    assert Subscription.objects.get(pk=subscription.pk).plan_id != prepaid.pk


def test_auto_renew_is_edited_through_the_service(admin_client, customer):
    subscription = services.create_subscription(customer, PlanFactory(kind="prepaid", validity_unit="day"))
    form = _change_form(subscription.plan, subscription)
    del form["auto_renew"]

    response = admin_client.post(f"{URL}{subscription.pk}/change/", form)

    assert response.status_code == 302
    assert Subscription.objects.get(pk=subscription.pk).auto_renew is False
    assert AuditEvent.objects.filter(verb="update_subscription").exists()
