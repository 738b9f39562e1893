"""Opening services: usernames, passwords, credentials and add-ons."""

import datetime as dt
from decimal import Decimal

import pytest
import time_machine
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from wavu.catalog.selectors import NoPrice
from wavu.core.audit import acting_as
from wavu.core.errors import NotAllowed
from wavu.core.models import AuditEvent
from wavu.customers import services as customers
from wavu.subscriptions import services
from wavu.subscriptions.models import LifecycleEvent, Subscription, SubscriptionAddOn
from wavu.testing.factories import AddOnFactory, PlanFactory, SubscriptionFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def customer():
    return customers.create_customer(name="Wanjiku Kamau", phone="0712345678")  # account 10008


@pytest.fixture
def plan():
    return PlanFactory(name="Home Fibre 20 Mbps", with_price=Decimal("2999.00"))


def test_a_new_service_is_pending_with_a_username_from_the_account_number(customer, plan):
    subscription = services.create_subscription(customer, plan)

    subscription.refresh_from_db()
    assert subscription.status == "pending"
    assert subscription.username == "10008"
    assert subscription.current_period_end is None and subscription.activated_at is None


def test_a_second_service_of_the_same_customer_gets_a_suffix(customer, plan):
    first = services.create_subscription(customer, plan)
    second = services.create_subscription(customer, plan)
    third = services.create_subscription(customer, plan)

    assert [first.username, second.username, third.username] == ["10008", "10008-2", "10008-3"]


def test_a_generated_username_taken_by_another_service_moves_on_to_the_next(customer, plan):
    SubscriptionFactory(username="10008")  # someone typed this username by hand for another customer

    subscription = services.create_subscription(customer, plan)

    assert subscription.username == "10008-2"


def test_a_username_collision_found_only_by_the_database_is_retried(customer, plan, monkeypatch):
    """The pre-check is blind (as under a race): the unique constraint refuses and the next name is used."""
    SubscriptionFactory(username="10008")
    SubscriptionFactory(username="10008-2")
    monkeypatch.setattr(services, "_username_taken", lambda candidate: False)

    subscription = services.create_subscription(customer, plan)

    assert subscription.username == "10008-3"
    assert Subscription.objects.filter(customer=customer).count() == 1


def test_the_password_is_random_readable_and_long_enough(customer, plan):
    passwords = {services.create_subscription(customer, plan).password for _ in range(5)}

    assert len(passwords) == 5
    for password in passwords:
        assert len(password) >= 10
        assert set(password) <= set(services.PASSWORD_ALPHABET)
        assert not set(password) & set("0O1lIio")


def test_creating_a_service_writes_a_lifecycle_event_and_an_audit_row_without_the_password(customer, plan):
    with acting_as("user:support"):
        subscription = services.create_subscription(customer, plan, reason="signed up at the shop")

    event = LifecycleEvent.objects.get(subscription=subscription)
    assert (event.kind, event.from_status, event.to_status) == ("created", "", "pending")
    assert event.actor_label == "user:support" and event.reason == "signed up at the shop"
    audit = AuditEvent.objects.get(verb="create_subscription")
    assert audit.after["username"] == "10008" and "password" not in audit.after


def test_a_chosen_username_is_used_and_a_taken_one_is_refused(customer, plan):
    services.create_subscription(customer, plan, username="wanjiku.home")

    with pytest.raises(ValidationError) as caught:
        services.create_subscription(customer, plan, username="WANJIKU.home")

    assert caught.value.error_dict["username"][0].code == "username_taken"
    assert Subscription.objects.count() == 1


@pytest.mark.parametrize(
    ("kwargs", "field", "code"),
    [
        ({"username": "a b"}, "username", "username_invalid"),
        ({"static_ip": "10.0.0.300"}, "static_ip", "ip_invalid"),
        ({"static_ip": "2001:db8::1"}, "static_ip", "ip_invalid"),
        ({"static_ip": "224.0.0.1"}, "static_ip", "ip_invalid"),
        ({"mac_address": "00:11:22:33:44"}, "mac_address", "mac_invalid"),
        ({"mac_address": "00:11:22:33:44:GG"}, "mac_address", "mac_invalid"),
        ({"billing_anchor_day": 32}, "billing_anchor_day", "anchor_invalid"),
    ],
)
def test_bad_credentials_are_refused_with_a_field_error_and_nothing_is_created(customer, plan, kwargs, field, code):
    with pytest.raises(ValidationError) as caught:
        services.create_subscription(customer, plan, **kwargs)

    assert caught.value.error_dict[field][0].code == code
    assert not Subscription.objects.exists()
    assert not LifecycleEvent.objects.exists()
    assert not AuditEvent.objects.filter(object_type="subscriptions.subscription").exists()


def test_a_static_ip_is_given_to_one_service_only(customer, plan):
    services.create_subscription(customer, plan, static_ip="197.248.10.5")

    with pytest.raises(ValidationError) as caught:
        services.create_subscription(customer, plan, static_ip=" 197.248.10.5 ")

    assert caught.value.error_dict["static_ip"][0].code == "ip_taken"
    assert "10008" in caught.value.message_dict["static_ip"][0]


@pytest.mark.parametrize("typed", ["00:1a:2b:3c:4d:5e", "00-1A-2B-3C-4D-5E", "001a.2b3c.4d5e", "001A2B3C4D5E"])
def test_a_mac_address_is_stored_in_one_form(customer, plan, typed):
    assert services.create_subscription(customer, plan, mac_address=typed).mac_address == "00:1A:2B:3C:4D:5E"


def test_a_billing_day_is_only_for_postpaid_services(customer):
    prepaid = PlanFactory(kind="prepaid", validity_unit="day", validity_count=30)

    with pytest.raises(ValidationError) as caught:
        services.create_subscription(customer, prepaid, billing_anchor_day=5)

    assert caught.value.error_dict["billing_anchor_day"][0].code == "anchor_not_postpaid"


def test_a_closed_customer_a_retired_plan_or_an_unpriced_plan_cannot_take_a_service(customer, plan):
    retired = PlanFactory(is_active=False)
    unpriced = PlanFactory()
    unpriced.prices.all().delete()
    closed = customers.create_customer(name="Gone", phone="0733000111")
    customers.close_customer(closed)

    with pytest.raises(NotAllowed) as closed_error:
        services.create_subscription(closed, plan)
    with pytest.raises(NotAllowed) as retired_error:
        services.create_subscription(customer, retired)
    with pytest.raises(NoPrice):
        services.create_subscription(customer, unpriced)

    assert closed_error.value.code == "customer_closed"
    assert retired_error.value.code == "plan_not_available"
    assert not Subscription.objects.exists()


def test_add_ons_are_attached_at_creation_and_later(customer, plan):
    router = AddOnFactory(code="router", name="Router rental", category="equipment_rental")
    install = AddOnFactory(code="install", name="Installation", category="installation", billing="one_off")
    static_ip = AddOnFactory(code="static-ip")
    subscription = services.create_subscription(customer, plan, addons=[router, (install, 1)])

    item = services.add_addon(subscription, static_ip, 1, reason="customer asked for a public IP")

    assert sorted(subscription.addons.values_list("addon__code", flat=True)) == ["install", "router", "static-ip"]
    assert LifecycleEvent.objects.filter(subscription=subscription, kind="addon_added").get().data == {
        "addon": "static-ip",
        "quantity": 1,
    }
    assert AuditEvent.objects.filter(verb="add_addon", object_id=str(item.pk)).exists()


def test_the_same_recurring_add_on_cannot_be_attached_twice_until_it_ends(customer, plan):
    static_ip = AddOnFactory(code="static-ip")
    subscription = services.create_subscription(customer, plan)
    item = services.add_addon(subscription, static_ip)

    with pytest.raises(NotAllowed) as caught:
        services.add_addon(subscription, static_ip)
    assert caught.value.code == "addon_already_attached"

    services.end_addon(item, reason="gave the IP back")
    services.add_addon(subscription, static_ip)
    assert SubscriptionAddOn.objects.filter(subscription=subscription).count() == 2
    with pytest.raises(NotAllowed):
        services.end_addon(item)


def test_a_bad_add_on_quantity_is_refused(customer, plan):
    subscription = services.create_subscription(customer, plan)

    with pytest.raises(ValidationError):
        services.add_addon(subscription, AddOnFactory(), 0)
    assert not SubscriptionAddOn.objects.exists()


def test_credentials_change_through_the_service_and_are_audited_without_the_password(customer, plan):
    subscription = services.create_subscription(customer, plan)
    old_password = subscription.password

    services.change_credentials(
        subscription,
        username="wanjiku-home",
        regenerate_password=True,
        static_ip="197.248.10.6",
        mac_address="001a.2b3c.4d5e",
        reason="router replaced",
    )

    subscription.refresh_from_db()
    assert subscription.username == "wanjiku-home" and subscription.password != old_password
    assert subscription.static_ip == "197.248.10.6" and subscription.mac_address == "00:1A:2B:3C:4D:5E"
    event = LifecycleEvent.objects.get(subscription=subscription, kind="credentials_changed")
    assert event.data == {"changed": ["mac_address", "password", "static_ip", "username"]}
    audit = AuditEvent.objects.get(verb="change_credentials")
    assert audit.before["username"] == "10008" and audit.after["username"] == "wanjiku-home"
    assert audit.after["password_changed"] is True
    assert old_password not in str(audit.before) + str(audit.after)
    assert subscription.password not in str(audit.after)


def test_a_username_or_ip_held_by_another_service_is_refused_and_nothing_changes(customer, plan):
    other = services.create_subscription(customer, plan, static_ip="197.248.10.7")
    subscription = services.create_subscription(customer, plan)

    with pytest.raises(ValidationError) as taken_name:
        services.change_credentials(subscription, username=other.username, mac_address="00:11:22:33:44:55")
    with pytest.raises(ValidationError) as taken_ip:
        services.change_credentials(subscription, static_ip="197.248.10.7")

    assert taken_name.value.error_dict["username"][0].code == "username_taken"
    assert taken_ip.value.error_dict["static_ip"][0].code == "ip_taken"
    subscription.refresh_from_db()
    assert subscription.username == "10008-2" and subscription.mac_address == "" and subscription.static_ip is None
    assert not LifecycleEvent.objects.filter(kind="credentials_changed").exists()


def test_changing_the_plan_records_an_event(customer, plan):
    faster = PlanFactory(name="Home Fibre 40 Mbps", code="home-40")
    subscription = services.create_subscription(customer, plan)

    services.change_plan(subscription, faster, reason="upgrade")

    subscription.refresh_from_db()
    assert subscription.plan == faster
    event = LifecycleEvent.objects.get(kind="plan_changed")
    assert event.data == {"from_plan": plan.code, "to_plan": "home-40"} and event.reason == "upgrade"
    assert AuditEvent.objects.get(verb="change_plan").after["plan_id"] == faster.pk
    with pytest.raises(NotAllowed) as same:
        services.change_plan(subscription, faster)
    assert same.value.code == "same_plan"


def test_a_planned_start_is_kept_and_used_for_the_price_check(customer):
    plan = PlanFactory()
    plan.prices.update(valid_from=timezone.make_aware(dt.datetime(2026, 3, 1)))
    with time_machine.travel(timezone.make_aware(dt.datetime(2026, 2, 20, 10)), tick=False):
        with pytest.raises(NoPrice):
            services.create_subscription(customer, plan)
        subscription = services.create_subscription(
            customer, plan, start=timezone.make_aware(dt.datetime(2026, 3, 2, 9))
        )

    assert subscription.scheduled_start == timezone.make_aware(dt.datetime(2026, 3, 2, 9))


def test_the_database_refuses_two_usernames_that_differ_only_in_case():
    SubscriptionFactory(username="John")

    with pytest.raises(IntegrityError), transaction.atomic():
        SubscriptionFactory(username="john")
