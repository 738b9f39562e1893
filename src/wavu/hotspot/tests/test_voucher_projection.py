"""The projection of a voucher's device lock and device limit, as a pure function (no database)."""

import dataclasses
import datetime as dt

import pytest

from wavu.network.projection import ABSENT, ACCEPT, GARDEN, REJECTED, Attr, RadiusPolicy, ServiceSnapshot, project

NOW = dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.UTC)
MAC = "AA:BB:CC:00:11:22"
VOUCHER = ServiceSnapshot(
    username="K7M2PQ9W",
    password="K7M2PQ9W",
    status="active",
    plan_kind="hotspot",
    download_kbps=5_000,
    upload_kbps=2_000,
    expires_at=NOW + dt.timedelta(hours=2),
)


def lock(snapshot: ServiceSnapshot, mac: str = MAC, **changes) -> ServiceSnapshot:
    return dataclasses.replace(snapshot, calling_station_id=mac, **changes)


@pytest.mark.parametrize("policy", [RadiusPolicy(), RadiusPolicy(lapsed_access="reject")])
@pytest.mark.parametrize(
    ("status", "expires_in", "outcome"),
    [
        ("active", dt.timedelta(hours=2), ACCEPT),
        ("active", None, ACCEPT),  # not started yet: the lock comes with the first login
        ("active", -dt.timedelta(minutes=1), REJECTED),
        ("expired", -dt.timedelta(hours=1), REJECTED),
        ("cancelled", dt.timedelta(hours=2), ABSENT),  # revoked
    ],
)
def test_a_locked_voucher_checks_its_device_only_while_it_may_log_in(policy, status, expires_in, outcome):
    snapshot = lock(VOUCHER, status=status, expires_at=NOW + expires_in if expires_in is not None else None)

    rows = project(snapshot, policy, NOW)

    assert rows.outcome == outcome
    assert (Attr("Calling-Station-Id", "==", MAC) in rows.check) == (outcome == ACCEPT)
    assert ("Cleartext-Password" in {a.attribute for a in rows.check}) == (outcome == ACCEPT)


def test_the_device_check_is_a_comparison_next_to_the_password_so_another_device_finds_no_password():
    rows = project(lock(VOUCHER), RadiusPolicy(), NOW)

    assert rows.check == (
        Attr("Cleartext-Password", ":=", "K7M2PQ9W"),
        Attr("Simultaneous-Use", ":=", "1"),
        Attr("Calling-Station-Id", "==", MAC),
        Attr("Expiration", ":=", str(int((NOW + dt.timedelta(hours=2)).timestamp()))),
    )


def test_an_unlocked_service_has_no_device_check():
    assert not [a for a in project(VOUCHER, RadiusPolicy(), NOW).check if a.attribute == "Calling-Station-Id"]


@pytest.mark.parametrize("devices", [1, 3, 10])
def test_the_device_limit_is_simultaneous_use(devices):
    rows = project(dataclasses.replace(VOUCHER, devices_allowed=devices), RadiusPolicy(), NOW)
    assert Attr("Simultaneous-Use", ":=", str(devices)) in rows.check


def test_a_locked_postpaid_service_in_the_walled_garden_keeps_its_device_check():
    snapshot = lock(VOUCHER, plan_kind="prepaid", status="expired")
    rows = project(snapshot, RadiusPolicy(), NOW)
    assert rows.outcome == GARDEN and Attr("Calling-Station-Id", "==", MAC) in rows.check
