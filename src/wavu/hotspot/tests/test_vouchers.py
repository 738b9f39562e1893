"""Hotspot vouchers: a batch becomes RADIUS users whose clock starts at their first login, optionally
locked to the first device, with a device limit; revoked codes are rejected; bad input writes nothing."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django.test.utils import CaptureQueriesContext

from wavu.billing.models import Invoice
from wavu.catalog.models import Plan
from wavu.core.errors import NotAllowed
from wavu.core.models import AuditEvent
from wavu.hotspot import services
from wavu.hotspot.models import CODE_ALPHABET, Voucher, VoucherBatch, VoucherStock
from wavu.ledger.models import JournalEntry
from wavu.network import writer
from wavu.network.models import RadiusSyncRequest
from wavu.network.projection import ABSENT, ACCEPT, REJECTED, project
from wavu.network.selectors import radius_policy, service_snapshots
from wavu.subscriptions.models import LifecycleEvent, Status, Subscription
from wavu.testing.factories import CustomerFactory

from .support import check_rows, hotspot_plan, reply_rows, session_start

NOW = dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.UTC)

pytestmark = [pytest.mark.django_db, pytest.mark.clock(NOW)]


@pytest.fixture
def plan():
    return hotspot_plan()


def issue(plan, quantity=5, **fields) -> VoucherBatch:
    return services.issue_batch(plan=plan, quantity=quantity, at=NOW, **fields)


def test_a_batch_is_as_many_unique_unambiguous_codes_each_an_active_service_waiting_for_its_first_login(plan):
    batch = issue(plan, 40, sold_by="Mama Njeri's shop")

    vouchers = list(batch.vouchers.select_related("subscription"))
    codes = [v.code for v in vouchers]
    assert len(codes) == 40 == len(set(codes))
    assert all(len(code) == 8 and set(code) <= set(CODE_ALPHABET) for code in codes)
    assert not set("".join(codes)) & set("01OIL")
    stock = VoucherStock.objects.get().customer
    for voucher in vouchers:
        sub = voucher.subscription
        assert (sub.username, sub.password, sub.plan_id, sub.customer_id) == (
            voucher.code,
            voucher.code,
            plan.pk,
            stock.pk,
        )
        assert (sub.status, sub.current_period_start, sub.current_period_end, sub.auto_renew) == (
            Status.ACTIVE, None, None, False,
        )  # fmt: skip
        assert voucher.status == Voucher.Status.UNUSED
    assert batch.price == Decimal("50.00") and batch.device_limit == 1
    assert LifecycleEvent.objects.filter(kind="voucher_issued").count() == 40
    assert RadiusSyncRequest.objects.count() == 40
    assert AuditEvent.objects.filter(verb="issue_voucher_batch", object_id=str(batch.pk)).count() == 1


def test_an_unused_voucher_logs_in_with_its_code_for_the_package_length_and_no_expiry_yet(plan):
    code = issue(plan, 1).vouchers.get().code
    writer.drain_sync_requests()

    checks = check_rows(code)
    assert ("Cleartext-Password", ":=", code) in checks and ("Simultaneous-Use", ":=", "1") in checks
    assert not [c for c in checks if c[0] in ("Expiration", "Calling-Station-Id")]
    assert reply_rows(code)["Session-Timeout"] == str(3 * 3600)


def test_issuing_ten_thousand_vouchers_costs_a_fixed_number_of_statements_per_table(plan, vendor):
    issue(plan, 1)  # the voucher-stock customer is opened once, by the first batch

    def cost(quantity: int) -> int:
        with CaptureQueriesContext(connection) as queries:
            batch = issue(plan, quantity)
        assert batch.vouchers.count() == quantity
        assert Subscription.objects.filter(
            voucher__batch=batch, username__in=batch.vouchers.values("code")
        ).count() == (quantity)
        return len(queries)

    small, large = cost(10), cost(10_000)
    if vendor == "postgresql":
        assert large == small  # one INSERT … unnest per table whatever the quantity
    else:
        # SQLite: inserts in chunks of at most 64 rows (10,000 = 156 × 64 + 16), four tables
        assert large <= small + 4 * 157


def test_the_first_session_starts_the_clock_at_its_start_time_and_radius_gets_the_expiry(plan):
    batch = issue(plan, 2)
    used, other = batch.vouchers.order_by("pk")
    session_start(used.code, NOW + dt.timedelta(minutes=7))

    assert services.drain_first_logins() == 1
    writer.drain_sync_requests()

    used.refresh_from_db()
    sub = used.subscription
    sub.refresh_from_db()
    start = NOW + dt.timedelta(minutes=7)
    assert (used.status, used.first_used_at, used.locked_mac) == (Voucher.Status.ACTIVE, start, "")
    assert (sub.current_period_start, sub.current_period_end) == (start, start + dt.timedelta(hours=3))
    assert sub.events.filter(kind="period_started").count() == 1
    assert ("Expiration", ":=", str(int((start + dt.timedelta(hours=3)).timestamp()))) in check_rows(used.code)
    other.refresh_from_db()
    assert other.status == Voucher.Status.UNUSED and other.subscription.current_period_start is None
    # a second session, or the same rows read again, changes nothing
    session_start(used.code, NOW + dt.timedelta(hours=1), mac="DE:AD:BE:EF:00:01")
    assert services.drain_first_logins() == 1
    sub.refresh_from_db()
    assert sub.current_period_start == start and sub.events.filter(kind="period_started").count() == 1
    assert services.drain_first_logins() == 0


def test_a_mac_locked_voucher_keeps_its_first_device_and_the_projection_turns_others_away(plan):
    batch = issue(plan, 1, mac_lock=True)
    voucher = batch.vouchers.get()
    session_start(voucher.code, NOW, mac="AA:BB:CC:00:11:22")
    services.drain_first_logins()
    writer.drain_sync_requests()

    voucher.refresh_from_db()
    assert voucher.locked_mac == "AA:BB:CC:00:11:22"
    assert ("Calling-Station-Id", "==", "AA:BB:CC:00:11:22") in check_rows(voucher.code)
    snapshot = service_snapshots([voucher.subscription_id], NOW)[voucher.subscription_id]
    assert snapshot.calling_station_id == "AA:BB:CC:00:11:22"
    assert project(snapshot, radius_policy(), NOW).outcome == ACCEPT


def test_without_the_lock_the_first_device_is_not_recorded_and_no_device_check_is_written(plan):
    voucher = issue(plan, 1).vouchers.get()
    session_start(voucher.code, NOW, mac="AA:BB:CC:00:11:22")
    services.drain_first_logins()
    writer.drain_sync_requests()

    voucher.refresh_from_db()
    assert voucher.status == Voucher.Status.ACTIVE and voucher.locked_mac == ""
    assert not [c for c in check_rows(voucher.code) if c[0] == "Calling-Station-Id"]


def test_the_batch_device_limit_becomes_simultaneous_use(plan):
    voucher = issue(plan, 1, device_limit=3).vouchers.get()
    writer.drain_sync_requests()

    assert ("Simultaneous-Use", ":=", "3") in check_rows(voucher.code)


def test_a_revoked_voucher_is_rejected_and_audited(plan):
    batch = issue(plan, 2)
    revoked, kept = batch.vouchers.order_by("pk")
    writer.drain_sync_requests()

    services.revoke_voucher(revoked, reason="card stolen")
    writer.drain_sync_requests()

    revoked.refresh_from_db()
    assert revoked.status == Voucher.Status.REVOKED and revoked.revoked_at is not None
    assert Subscription.objects.get(pk=revoked.subscription_id).status == Status.CANCELLED
    assert check_rows(revoked.code) == []  # no rows: FreeRADIUS rejects an unknown user
    snapshot = service_snapshots([revoked.subscription_id], NOW)[revoked.subscription_id]
    assert project(snapshot, radius_policy(), NOW).outcome == ABSENT
    assert AuditEvent.objects.filter(verb="revoke_voucher", object_id=str(revoked.pk), reason="card stolen").exists()
    assert ("Cleartext-Password", ":=", kept.code) in check_rows(kept.code)
    with pytest.raises(NotAllowed):
        services.revoke_voucher(revoked)
    # a session seen after the revocation starts nothing
    session_start(revoked.code, NOW)
    services.drain_first_logins()
    revoked.refresh_from_db()
    assert revoked.status == Voucher.Status.REVOKED and revoked.subscription.current_period_start is None


def test_revoking_a_batch_revokes_used_and_unused_vouchers_at_once(plan):
    batch = issue(plan, 3)
    used = batch.vouchers.order_by("pk").first()
    session_start(used.code, NOW)
    services.drain_first_logins()

    assert services.revoke_batch(batch, reason="agent left") == 3

    assert set(batch.vouchers.values_list("status", flat=True)) == {Voucher.Status.REVOKED}
    assert not Subscription.objects.filter(voucher__batch=batch).exclude(status=Status.CANCELLED).exists()
    assert LifecycleEvent.objects.filter(kind="cancelled", subscription__voucher__batch=batch).count() == 3
    assert AuditEvent.objects.filter(verb="revoke_voucher_batch", object_id=str(batch.pk)).count() == 1
    with pytest.raises(NotAllowed):
        services.revoke_batch(batch)


def test_a_used_voucher_whose_package_ran_out_is_marked_expired_and_rejected(plan):
    from wavu.billing.prepaid import process_expiries

    voucher = issue(plan, 1).vouchers.get()
    session_start(voucher.code, NOW)
    services.drain_first_logins()
    process_expiries(NOW + dt.timedelta(hours=3, minutes=1))
    session_start("someone-else", NOW + dt.timedelta(hours=4))
    services.drain_first_logins()
    writer.drain_sync_requests()

    voucher.refresh_from_db()
    assert voucher.status == Voucher.Status.EXPIRED
    assert check_rows(voucher.code) == [("Auth-Type", ":=", "Reject")]
    snapshot = service_snapshots([voucher.subscription_id], NOW)[voucher.subscription_id]
    assert project(snapshot, radius_policy(), NOW + dt.timedelta(hours=4)).outcome == REJECTED


def test_a_batch_sold_to_a_reseller_is_invoiced_to_the_reseller_once(plan, reference_data):
    reseller = CustomerFactory(name="Kibera Wi-Fi Agents")
    batch = issue(plan, 20, reseller=reseller, price="40.00", sold_by="Kibera Wi-Fi Agents")

    invoice = Invoice.objects.get(customer=reseller)
    assert batch.invoice_id == invoice.pk and invoice.status != Invoice.Status.DRAFT
    assert invoice.total == Decimal("800.00")
    assert JournalEntry.objects.filter(source_type="billing.invoice", source_id=str(invoice.pk)).count() == 1
    assert not Invoice.objects.exclude(customer=reseller).exists()  # the stock customer owes nothing


def test_a_batch_without_a_reseller_has_no_ledger_effect(plan, reference_data):
    entries = JournalEntry.objects.count()
    issue(plan, 5, sold_by="front desk")
    assert JournalEntry.objects.count() == entries and not Invoice.objects.exists()


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"quantity": 0}, "quantity"),
        ({"quantity": services.MAX_QUANTITY + 1}, "quantity"),
        ({"quantity": "ten"}, "quantity"),
        ({"price": "-1"}, "price"),
        ({"price": "10.005"}, "price"),
        ({"code_length": 4}, "code_length"),
        ({"device_limit": 0}, "device_limit"),
        ({"sold_by": "x" * 121}, "sold_by"),
    ],
)
def test_bad_input_is_refused_and_writes_nothing(plan, changes, field):
    fields = {"quantity": 5, **changes}
    with pytest.raises(ValidationError) as refused:
        services.issue_batch(plan=plan, at=NOW, **fields)
    assert field in refused.value.message_dict
    assert not VoucherBatch.objects.exists() and not Subscription.objects.exists()


@pytest.mark.parametrize(
    "plan_changes",
    [
        {"kind": Plan.Kind.PREPAID, "hotspot_starts": Plan.HotspotStart.PURCHASE},
        {"hotspot_starts": Plan.HotspotStart.PURCHASE},
        {"is_active": False},
    ],
)
def test_only_an_active_hotspot_plan_that_starts_at_first_login_takes_vouchers(plan_changes):
    with pytest.raises(ValidationError) as refused:
        issue(hotspot_plan(code="other", **plan_changes), 2)
    assert "plan" in refused.value.message_dict
    assert not VoucherBatch.objects.exists() and not Subscription.objects.exists()


def test_a_code_an_existing_login_already_has_is_drawn_again(plan, monkeypatch):
    CustomerFactory()
    taken = hotspot_plan(code="taken-plan")
    from wavu.testing.factories import SubscriptionFactory

    SubscriptionFactory(plan=taken, username="abcd2345")  # the same login in another case
    draws = iter([{"ABCD2345", "EFGH6789"}, {"JKMN2345"}])
    monkeypatch.setattr(services, "generate_codes", lambda count, length: next(draws))

    batch = issue(plan, 2, code_length=8)

    assert sorted(batch.vouchers.values_list("code", flat=True)) == ["EFGH6789", "JKMN2345"]
