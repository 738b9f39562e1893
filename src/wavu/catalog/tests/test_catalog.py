"""Plans, add-ons and their price versions, as an ISP's product manager sets them up."""

import datetime as dt
from decimal import Decimal

import pytest
import time_machine
from django.core.exceptions import ValidationError
from django.utils import timezone
from hypothesis import given
from hypothesis import strategies as st

from wavu.catalog import selectors, services
from wavu.catalog.models import AddOn, AddOnPrice, Plan, PlanPrice
from wavu.core.errors import NotAllowed
from wavu.core.models import AuditEvent
from wavu.core.tax import TaxClass
from wavu.testing.factories import CustomerFactory, SubscriptionFactory

pytestmark = pytest.mark.django_db


def local(*args) -> dt.datetime:
    return timezone.make_aware(dt.datetime(*args))


@pytest.fixture
def january():
    with time_machine.travel(local(2026, 1, 10, 9, 0), tick=False) as traveller:
        yield traveller


def fibre(**overrides):
    fields = {
        "code": "home-20",
        "name": "Home Fibre 20 Mbps",
        "kind": Plan.Kind.POSTPAID,
        "technology": Plan.Technology.FTTH,
        "download_kbps": 20_000,
        "upload_kbps": 10_000,
    }
    fields.update(overrides)
    return fields


def hotspot(**overrides):
    fields = {
        "code": "hotspot-24h",
        "name": "Hotspot 24 hours",
        "kind": Plan.Kind.HOTSPOT,
        "technology": Plan.Technology.HOTSPOT,
        "validity_unit": Plan.ValidityUnit.HOUR,
        "validity_count": 24,
        "download_kbps": 3_000,
        "upload_kbps": 1_000,
        "sold_on_portal": True,
    }
    fields.update(overrides)
    return fields


def test_a_postpaid_fibre_plan_is_created_with_its_first_price(january):
    plan = services.create_plan(price="2999", **fibre())

    assert plan.kind == "postpaid" and plan.validity_unit == "month" and plan.validity_count == 1
    assert selectors.plan_price(plan, timezone.now()).amount == Decimal("2999.00")
    assert list(AuditEvent.objects.order_by("id").values_list("verb", flat=True)) == ["create_plan", "set_plan_price"]


def test_a_hotspot_package_with_a_fair_usage_quota_is_created():
    plan = services.create_plan(
        **hotspot(
            data_quota_mb=10_240,
            quota_action=Plan.QuotaAction.THROTTLE,
            fup_download_kbps=1_000,
            fup_upload_kbps=512,
            time_quota_minutes=600,
            devices_allowed=2,
            hotspot_starts=Plan.HotspotStart.FIRST_LOGIN,
        )
    )

    assert plan.quota_action == "throttle" and plan.fup_download_kbps == 1_000 and plan.devices_allowed == 2


@pytest.mark.parametrize(
    ("fields", "field", "code"),
    [
        (hotspot(data_quota_mb=1024, quota_action="throttle"), "fup_download_kbps", "fup_speed_required"),
        (hotspot(quota_action="block"), "data_quota_mb", "quota_required"),
        (
            hotspot(data_quota_mb=1024, quota_action="throttle", fup_download_kbps=5_000, fup_upload_kbps=500),
            "fup_download_kbps",
            "fup_too_high",
        ),
        (hotspot(fup_download_kbps=500, fup_upload_kbps=200), "fup_download_kbps", "fup_without_throttle"),
        (hotspot(burst_download_kbps=6_000), "burst_upload_kbps", "burst_incomplete"),
        (
            hotspot(
                burst_download_kbps=2_000, burst_upload_kbps=2_000, burst_threshold_percent=75, burst_time_seconds=16
            ),
            "burst_download_kbps",
            "burst_too_low",
        ),
        (fibre(validity_unit="day", validity_count=30), "validity_unit", "postpaid_needs_months"),
        (fibre(hotspot_starts="first_login"), "hotspot_starts", "not_hotspot"),
        (fibre(sold_on_portal=True), "sold_on_portal", "portal_postpaid"),
        (fibre(kind="lifetime"), "kind", "invalid_choice"),
        (fibre(validity_unit="fortnight"), "validity_unit", "invalid_choice"),
        (fibre(validity_count=0), "validity_count", "out_of_range"),
        (fibre(download_kbps=10.5), "download_kbps", "invalid_integer"),
        (fibre(download_kbps=0), "download_kbps", "out_of_range"),
        (fibre(devices_allowed=0), "devices_allowed", "out_of_range"),
        (fibre(tax_class="luxury"), "tax_class", "invalid_choice"),
        (fibre(technology="carrier pigeon"), "technology", "invalid_choice"),
        (fibre(code="Home Fibre!"), "code", "code_invalid"),
        (fibre(time_quota_minutes=0), "time_quota_minutes", "out_of_range"),
    ],
)
def test_a_plan_that_breaks_a_rule_is_refused_with_a_clear_field_error_and_nothing_is_written(fields, field, code):
    with pytest.raises(ValidationError) as caught:
        services.create_plan(**fields)

    assert [e.code for e in caught.value.error_dict[field]][0] == code
    assert not Plan.objects.exists()
    assert not AuditEvent.objects.exists()


def test_a_plan_missing_its_speeds_is_refused():
    fields = fibre()
    del fields["download_kbps"]

    with pytest.raises(ValidationError) as caught:
        services.create_plan(**fields)
    assert "download_kbps" in caught.value.error_dict


def test_a_taken_code_is_a_field_error():
    services.create_plan(**fibre())

    with pytest.raises(ValidationError) as caught:
        services.create_plan(**fibre(name="Another"))

    assert caught.value.error_dict["code"][0].code == "code_taken"
    assert Plan.objects.count() == 1


def test_a_plan_with_a_bad_first_price_is_not_created():
    with pytest.raises(ValidationError):
        services.create_plan(price="-5", **fibre())

    assert not Plan.objects.exists()


def test_a_plan_change_is_audited_with_before_and_after():
    plan = services.create_plan(**fibre())

    services.update_plan(plan, download_kbps=25_000, name="Home Fibre 25 Mbps", reason="network upgrade")

    plan.refresh_from_db()
    assert plan.download_kbps == 25_000
    event = AuditEvent.objects.get(verb="update_plan")
    assert event.before["download_kbps"] == 20_000 and event.after["download_kbps"] == 25_000
    assert event.before["name"] == "Home Fibre 20 Mbps" and event.reason == "network upgrade"


def test_a_plan_change_is_checked_against_the_resulting_plan():
    plan = services.create_plan(**hotspot())

    with pytest.raises(ValidationError) as caught:
        services.update_plan(plan, quota_action="throttle", data_quota_mb=1024)

    assert "fup_download_kbps" in caught.value.error_dict
    plan.refresh_from_db()
    assert plan.quota_action == "none"


def test_a_plan_customers_use_cannot_change_its_kind():
    plan = services.create_plan(price="2500", **fibre())
    SubscriptionFactory(plan=plan, customer=CustomerFactory())

    with pytest.raises(ValidationError) as caught:
        services.update_plan(plan, kind="prepaid")

    assert caught.value.error_dict["kind"][0].code == "in_use"


def test_a_price_change_is_a_new_version_and_the_old_price_still_applies_to_earlier_dates(january):
    plan = services.create_plan(price="2500", **fibre())
    first = PlanPrice.objects.get()

    services.set_plan_price(plan, "2999", valid_from=dt.date(2026, 2, 1), reason="Finance Act")

    assert PlanPrice.objects.count() == 2
    first.refresh_from_db()
    assert first.amount == Decimal("2500.00") and first.valid_from == local(2026, 1, 10, 9, 0)
    assert selectors.plan_price(plan, local(2026, 1, 31, 23, 59)).amount == Decimal("2500.00")
    assert selectors.plan_price(plan, local(2026, 2, 1, 0, 0)).amount == Decimal("2999.00")
    event = AuditEvent.objects.filter(verb="set_plan_price").latest("id")
    assert event.before["price"] == "2500.00" and event.after["price"] == "2999.00"
    assert event.reason == "Finance Act"


@pytest.mark.parametrize(
    ("amount", "code"),
    [
        (2999.0, "amount_invalid"),
        ("-1", "amount_negative"),
        ("2999.999", "amount_precision"),
        ("abc", "amount_invalid"),
    ],
)
def test_a_price_must_be_an_exact_non_negative_amount(january, amount, code):
    plan = services.create_plan(**fibre())

    with pytest.raises(ValidationError) as caught:
        services.set_plan_price(plan, amount)

    assert caught.value.error_dict["amount"][0].code == code
    assert not PlanPrice.objects.exists()
    assert not AuditEvent.objects.filter(verb="set_plan_price").exists()


def test_a_second_price_with_the_same_start_is_refused(january):
    plan = services.create_plan(price="2500", price_valid_from=dt.date(2026, 3, 1), **fibre())

    with pytest.raises(NotAllowed) as caught:
        services.set_plan_price(plan, "2600", valid_from=dt.date(2026, 3, 1))

    assert caught.value.code == "price_start_taken"
    assert PlanPrice.objects.get().amount == Decimal("2500.00")


def test_a_price_cannot_start_before_the_latest_version_nor_in_the_past(january):
    plan = services.create_plan(price="2500", **fibre())
    services.set_plan_price(plan, "2700", valid_from=dt.date(2026, 3, 1))

    with pytest.raises(NotAllowed) as before_latest:
        services.set_plan_price(plan, "2600", valid_from=dt.date(2026, 2, 1))
    assert before_latest.value.code == "price_backdated"

    other = services.create_plan(price="1000", price_valid_from=dt.date(2025, 1, 1), **fibre(code="other"))
    with pytest.raises(NotAllowed) as in_the_past:
        services.set_plan_price(other, "1200", valid_from=dt.date(2025, 6, 1))
    assert in_the_past.value.code == "price_backdated"

    assert PlanPrice.objects.count() == 3


def test_a_price_from_today_is_accepted(january):
    plan = services.create_plan(price="2500", price_valid_from=dt.date(2025, 1, 1), **fibre())

    row = services.set_plan_price(plan, "2600", valid_from=dt.date(2026, 1, 10))

    assert row.valid_from == local(2026, 1, 10, 0, 0)


@pytest.mark.parametrize(
    ("fields", "field", "code"),
    [
        ({"category": "installation", "billing": "recurring"}, "billing", "billing_mismatch"),
        ({"category": "static_ip", "billing": "one_off"}, "billing", "billing_mismatch"),
        ({"category": "equipment_rental", "billing": "one_off"}, "billing", "billing_mismatch"),
        ({"category": "data_bundle", "billing": "one_off"}, "data_quota_mb", "quota_required"),
        (
            {"category": "data_bundle", "billing": "one_off", "data_quota_mb": 1024, "tax_class": "standard"},
            "tax_class",
            "data_bundle_tax_class",
        ),
        ({"category": "static_ip", "billing": "recurring", "data_quota_mb": 5}, "data_quota_mb", "quota_not_bundle"),
    ],
)
def test_add_ons_are_billed_the_way_their_category_needs(fields, field, code):
    with pytest.raises(ValidationError) as caught:
        services.create_addon(code="x", name="X", **fields)

    assert caught.value.error_dict[field][0].code == code
    assert not AddOn.objects.exists()


def test_the_usual_add_ons_are_created_with_prices(january):
    static_ip = services.create_addon(
        code="static-ip", name="Static IP", category="static_ip", billing="recurring", price="500"
    )
    rental = services.create_addon(
        code="router", name="Router rental", category="equipment_rental", billing="recurring", price="300"
    )
    install = services.create_addon(
        code="install", name="Installation", category="installation", billing="one_off", price="2500"
    )
    bundle = services.create_addon(
        code="gb-10", name="10 GB", category="data_bundle", billing="one_off", data_quota_mb=10240
    )

    assert static_ip.tax_class == TaxClass.STANDARD and bundle.tax_class == TaxClass.INTERNET
    assert selectors.addon_price(install, timezone.now()).amount == Decimal("2500.00")
    assert rental.billing == "recurring"


def test_an_add_on_price_change_is_a_new_version(january):
    addon = services.create_addon(
        code="static-ip", name="Static IP", category="static_ip", billing="recurring", price="500"
    )

    services.set_addon_price(addon, "750", valid_from=dt.date(2026, 4, 1))

    assert AddOnPrice.objects.count() == 2
    assert selectors.addon_price(addon, local(2026, 3, 31, 12)).amount == Decimal("500.00")
    assert selectors.addon_price(addon, local(2026, 4, 1, 12)).amount == Decimal("750.00")
    assert AuditEvent.objects.filter(verb="set_addon_price").count() == 2


@pytest.mark.parametrize(
    ("unit", "count", "start", "end"),
    [
        ("minute", 90, local(2026, 1, 10, 23, 0), local(2026, 1, 11, 0, 30)),
        ("hour", 24, local(2026, 1, 10, 9, 0), local(2026, 1, 11, 9, 0)),
        ("day", 30, local(2026, 1, 10, 9, 0), local(2026, 2, 9, 9, 0)),
        ("month", 1, local(2025, 1, 31, 9, 0), local(2025, 2, 28, 9, 0)),
        ("month", 1, local(2024, 1, 31, 9, 0), local(2024, 2, 29, 9, 0)),
        ("month", 1, local(2026, 3, 31, 9, 0), local(2026, 4, 30, 9, 0)),
        ("month", 3, local(2026, 11, 30, 9, 0), local(2027, 2, 28, 9, 0)),
        ("month", 1, local(2026, 12, 15, 9, 0), local(2027, 1, 15, 9, 0)),
    ],
)
def test_validity_adds_minutes_hours_days_and_calendar_months(unit, count, start, end):
    plan = Plan(validity_unit=unit, validity_count=count)

    assert selectors.plan_validity_end(plan, start) == end


@given(
    st.datetimes(min_value=dt.datetime(2020, 1, 1), max_value=dt.datetime(2035, 12, 31)),
    st.integers(min_value=1, max_value=24),
)
def test_a_month_of_validity_never_ends_later_in_the_month_than_it_started(start, months):
    start = timezone.make_aware(start)
    end = selectors.add_validity(start, "month", months)

    assert end > start
    assert timezone.localtime(end).day <= timezone.localtime(start).day
    assert timezone.localtime(end).time() == timezone.localtime(start).time()
