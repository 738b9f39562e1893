"""The projection as a pure function: every status and plan kind, rates, quotas, expiry, addressing.

No test here touches the database (none is marked django_db, so any query would fail): what RADIUS
must answer is decided from the snapshot, the ISP's policy and the time alone.
"""

import dataclasses
import datetime as dt
import itertools

import pytest

from wavu.network.projection import (
    ABSENT,
    ACCEPT,
    GARDEN,
    REJECTED,
    THROTTLED,
    Attr,
    GroupMembership,
    RadiusPolicy,
    ServiceSnapshot,
    project,
    rate_limit,
    total_limit,
    walled_garden_group,
)

NOW = dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.UTC)
GIB = 1024**3
WALLED = RadiusPolicy()
REJECTING = RadiusPolicy(lapsed_access="reject")

STATUSES = ["pending", "active", "expired", "suspended", "paused", "cancelled"]
KINDS = ["postpaid", "prepaid", "hotspot"]

# What the business agreed, status by plan kind, for an ISP with the walled garden and one without.
EXPECTED_WITH_WALLED_GARDEN = {
    ("pending", "postpaid"): ABSENT, ("pending", "prepaid"): ABSENT, ("pending", "hotspot"): ABSENT,
    ("active", "postpaid"): ACCEPT, ("active", "prepaid"): ACCEPT, ("active", "hotspot"): ACCEPT,
    ("expired", "postpaid"): GARDEN, ("expired", "prepaid"): GARDEN, ("expired", "hotspot"): REJECTED,
    ("suspended", "postpaid"): GARDEN, ("suspended", "prepaid"): GARDEN, ("suspended", "hotspot"): REJECTED,
    ("paused", "postpaid"): REJECTED, ("paused", "prepaid"): REJECTED, ("paused", "hotspot"): REJECTED,
    ("cancelled", "postpaid"): ABSENT, ("cancelled", "prepaid"): ABSENT, ("cancelled", "hotspot"): ABSENT,
}  # fmt: skip
EXPECTED_WITH_REJECT = {
    **EXPECTED_WITH_WALLED_GARDEN,
    ("expired", "postpaid"): REJECTED, ("expired", "prepaid"): REJECTED,
    ("suspended", "postpaid"): REJECTED, ("suspended", "prepaid"): REJECTED,
}  # fmt: skip


def service(status="active", kind="prepaid", **changes) -> ServiceSnapshot:
    fields = {
        "username": "10008",
        "password": "kzt7m2pq9wxa",
        "status": status,
        "plan_kind": kind,
        "download_kbps": 10_000,
        "upload_kbps": 5_000,
        "devices_allowed": 1,
        "expires_at": None if kind == "postpaid" else NOW + dt.timedelta(days=20),
    }
    fields.update(changes)
    return ServiceSnapshot(**fields)


def attrs(rows) -> dict:
    return {row.attribute: row.value for row in rows}


COMBINATIONS = list(itertools.product(STATUSES, KINDS))


@pytest.mark.parametrize(("status", "kind"), COMBINATIONS, ids=[f"{s}-{k}" for s, k in COMBINATIONS])
def test_each_status_and_plan_kind_gets_what_the_business_agreed_with_a_walled_garden(status, kind):
    rows = project(service(status, kind), WALLED, NOW)

    assert rows.outcome == EXPECTED_WITH_WALLED_GARDEN[(status, kind)]
    assert rows.username == "10008"


@pytest.mark.parametrize(("status", "kind"), COMBINATIONS, ids=[f"{s}-{k}" for s, k in COMBINATIONS])
def test_each_status_and_plan_kind_gets_what_the_business_agreed_when_the_isp_rejects(status, kind):
    assert project(service(status, kind), REJECTING, NOW).outcome == EXPECTED_WITH_REJECT[(status, kind)]


@pytest.mark.parametrize("kind", KINDS)
def test_an_active_service_gets_its_password_rate_devices_and_interim_interval(kind):
    rows = project(service("active", kind, devices_allowed=2), WALLED, NOW)

    check, reply = attrs(rows.check), attrs(rows.reply)
    assert check["Cleartext-Password"] == "kzt7m2pq9wxa"
    assert check["Simultaneous-Use"] == "2"
    assert reply["Mikrotik-Rate-Limit"] == "5M/10M"  # router's rx/tx = customer upload/download
    assert reply["Acct-Interim-Interval"] == "300"
    assert rows.groups == ()
    assert all(row.op == ":=" for row in rows.check + rows.reply)


def test_a_prepaid_service_carries_its_expiry_so_freeradius_ends_sessions_there():
    expiry = NOW + dt.timedelta(hours=5)
    rows = project(service("active", "prepaid", expires_at=expiry), WALLED, NOW)

    assert attrs(rows.check)["Expiration"] == str(int(expiry.timestamp()))
    assert attrs(rows.reply)["Session-Timeout"] == "86400"  # the ISP's cap; `expiration` lowers it to the expiry


def test_a_postpaid_service_has_no_expiry_its_sessions_end_at_the_isp_cap():
    rows = project(service("active", "postpaid"), WALLED, NOW)

    assert "Expiration" not in attrs(rows.check)
    assert attrs(rows.reply)["Session-Timeout"] == "86400"


def test_without_a_session_cap_a_postpaid_session_has_no_timeout():
    rows = project(service("active", "postpaid"), RadiusPolicy(session_timeout=0), NOW)

    assert "Session-Timeout" not in attrs(rows.reply)


@pytest.mark.parametrize(("policy", "outcome"), [(WALLED, GARDEN), (REJECTING, REJECTED)], ids=["garden", "reject"])
def test_an_active_prepaid_service_past_its_expiry_is_treated_as_expired(policy, outcome):
    rows = project(service("active", "prepaid", expires_at=NOW - dt.timedelta(seconds=1)), policy, NOW)

    assert rows.outcome == outcome and rows.reason == "period ended"


def test_the_walled_garden_keeps_the_login_and_puts_the_customer_in_the_walled_garden_group():
    rows = project(service("suspended", "postpaid", static_ip="197.248.10.7"), WALLED, NOW)

    assert attrs(rows.check) == {"Cleartext-Password": "kzt7m2pq9wxa", "Simultaneous-Use": "1"}
    assert attrs(rows.reply) == {"Framed-IP-Address": "197.248.10.7", "Acct-Interim-Interval": "300"}
    assert rows.groups == (GroupMembership("wavu-walled-garden", 0),)


def test_the_walled_garden_group_is_an_address_list_a_throttled_rate_and_a_short_session():
    group = walled_garden_group(RadiusPolicy(walled_garden_rate_limit="128k/512k", walled_garden_session_timeout=600))

    assert group.groupname == "wavu-walled-garden"
    assert group.check == ()
    assert attrs(group.reply) == {
        "Mikrotik-Address-List": "wavu-unpaid",
        "Mikrotik-Rate-Limit": "128k/512k",
        "Session-Timeout": "600",
    }


@pytest.mark.parametrize("status", ["expired", "suspended", "paused"])
def test_a_rejected_user_gets_an_explicit_reject_and_a_message_and_nothing_else(status):
    rows = project(service(status, "prepaid"), REJECTING, NOW)

    assert rows.check == (Attr("Auth-Type", ":=", "Reject"),)
    assert [row.attribute for row in rows.reply] == ["Reply-Message"]
    assert rows.groups == ()


def test_an_unknown_user_name_has_no_rows():
    rows = project(None, WALLED, NOW, username="ghost")

    assert rows.outcome == ABSENT and rows.is_empty and rows.username == "ghost"


def test_the_data_left_is_sent_as_total_limit_with_gigawords():
    rows = project(service(data_quota_bytes=10 * GIB, data_used_bytes=3 * GIB, quota_action="block"), WALLED, NOW)

    reply = attrs(rows.reply)
    left = 7 * GIB
    assert int(reply["Mikrotik-Total-Limit-Gigawords"]) * 2**32 + int(reply["Mikrotik-Total-Limit"]) == left
    assert reply["Mikrotik-Total-Limit-Gigawords"] == "1"


def test_a_quota_that_is_a_whole_number_of_gigawords_never_sends_a_zero_limit():
    assert total_limit(8 * GIB) == (2**32 - 1, 1)
    assert total_limit(5) == (5, 0)
    assert total_limit(-10) == (0, 0)


def test_a_plan_that_does_nothing_at_its_quota_sends_no_byte_limit():
    rows = project(service(data_quota_bytes=10 * GIB, data_used_bytes=11 * GIB, quota_action="none"), WALLED, NOW)

    assert rows.outcome == ACCEPT
    assert "Mikrotik-Total-Limit" not in attrs(rows.reply)
    assert attrs(rows.reply)["Mikrotik-Rate-Limit"] == "5M/10M"


def test_a_plan_that_throttles_gives_the_fair_usage_speed_once_the_quota_is_used_up():
    snapshot = service(
        data_quota_bytes=10 * GIB,
        data_used_bytes=10 * GIB,
        quota_action="throttle",
        fup_download_kbps=2_000,
        fup_upload_kbps=1_000,
    )

    rows = project(snapshot, WALLED, NOW)

    assert rows.outcome == THROTTLED
    assert attrs(rows.reply)["Mikrotik-Rate-Limit"] == "1M/2M"
    assert "Mikrotik-Total-Limit" not in attrs(rows.reply)


@pytest.mark.parametrize(("kind", "outcome"), [("prepaid", GARDEN), ("postpaid", GARDEN), ("hotspot", REJECTED)])
def test_a_plan_that_blocks_sends_the_customer_away_once_the_quota_is_used_up(kind, outcome):
    snapshot = service("active", kind, data_quota_bytes=GIB, data_used_bytes=GIB + 1, quota_action="block")

    rows = project(snapshot, WALLED, NOW)

    assert rows.outcome == outcome and rows.reason == "quota used up"


def test_the_time_left_caps_the_session_when_the_plan_acts_at_its_quota():
    snapshot = service(time_quota_seconds=3600, time_used_seconds=3000, data_quota_bytes=GIB, quota_action="block")

    assert attrs(project(snapshot, WALLED, NOW).reply)["Session-Timeout"] == "600"


def test_a_hotspot_package_not_started_yet_lasts_its_length_from_the_first_login():
    snapshot = service("active", "hotspot", expires_at=None, first_login_seconds=3600)

    rows = project(snapshot, WALLED, NOW)

    assert "Expiration" not in attrs(rows.check)
    assert attrs(rows.reply)["Session-Timeout"] == "3600"


def test_a_static_ip_is_framed_and_otherwise_the_isps_pool_is():
    pooled = RadiusPolicy(framed_pool="pppoe-customers")

    assert attrs(project(service(static_ip="197.248.10.7"), pooled, NOW).reply)["Framed-IP-Address"] == "197.248.10.7"
    assert "Framed-Pool" not in attrs(project(service(static_ip="197.248.10.7"), pooled, NOW).reply)
    assert attrs(project(service(), pooled, NOW).reply)["Framed-Pool"] == "pppoe-customers"
    assert not {"Framed-Pool", "Framed-IP-Address"} & set(attrs(project(service(), WALLED, NOW).reply))


@pytest.mark.parametrize(
    ("upload", "download", "burst", "expected"),
    [
        (5_000, 10_000, {}, "5M/10M"),
        (1_500, 3_000, {}, "1500k/3M"),
        (512, 2_048, {}, "512k/2048k"),
        (
            5_000,
            10_000,
            {"burst_upload_kbps": 10_000, "burst_download_kbps": 20_000},
            "5M/10M 10M/20M 3750k/7500k 16/16",
        ),
        (
            5_000,
            10_000,
            {
                "burst_upload_kbps": 8_000,
                "burst_download_kbps": 16_000,
                "burst_threshold_percent": 50,
                "burst_time_seconds": 30,
            },
            "5M/10M 8M/16M 2500k/5M 30/30",
        ),
    ],
    ids=["whole-megabits", "kilobits", "small", "burst-defaults", "burst-plan"],
)
def test_the_rate_limit_is_written_as_mikrotik_reads_it(upload, download, burst, expected):
    assert rate_limit(upload, download, **burst) == expected


def test_the_projection_is_deterministic_and_judges_at_the_time_it_is_given():
    snapshot = service(expires_at=NOW + dt.timedelta(minutes=1))

    assert project(snapshot, WALLED, NOW) == project(snapshot, WALLED, NOW)
    assert project(snapshot, WALLED, NOW).outcome == ACCEPT
    assert project(snapshot, WALLED, NOW + dt.timedelta(minutes=2)).outcome == GARDEN


@pytest.mark.parametrize(
    "bad",
    [
        {"lapsed_access": "disconnect"},
        {"walled_garden_rate_limit": "fast"},
        {"interim_interval": -1},
        {"walled_garden_group": ""},
    ],
    ids=["lapsed-access", "rate", "interval", "group"],
)
def test_a_policy_that_makes_no_sense_is_refused(bad):
    with pytest.raises(ValueError):
        dataclasses.replace(RadiusPolicy(), **bad)
