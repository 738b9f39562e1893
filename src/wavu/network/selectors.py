"""Network reads shared by several callers: the ISP's RADIUS policy, service snapshots for the
projection, usage so far this period, and the NAS registry."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from django.apps import apps
from django.conf import settings
from django.db.models import F, Q, QuerySet

from wavu.catalog.models import AddOn, Plan
from wavu.catalog.selectors import plan_validity_end
from wavu.subscriptions.models import Subscription, SubscriptionAddOn

from .models import Nas
from .projection import RadiusPolicy, ServiceSnapshot

MIB = 1024 * 1024  # the catalog's "MB" (a 10 GB package is 10,240 MB)
_SNAPSHOT_FIELDS = (
    "pk",
    "username",
    "password",
    "status",
    "static_ip",
    "current_period_start",
    "current_period_end",
    "plan_id",
)


def radius_policy() -> RadiusPolicy:
    """The ISP's RADIUS settings (settings.WAVU["RADIUS_*"]) as a `RadiusPolicy`."""
    wavu = settings.WAVU
    return RadiusPolicy(
        lapsed_access=wavu["RADIUS_LAPSED_ACCESS"],
        walled_garden_group=wavu["RADIUS_WALLED_GARDEN_GROUP"],
        walled_garden_address_list=wavu["RADIUS_WALLED_GARDEN_ADDRESS_LIST"],
        walled_garden_rate_limit=wavu["RADIUS_WALLED_GARDEN_RATE_LIMIT"],
        walled_garden_session_timeout=wavu["RADIUS_WALLED_GARDEN_SESSION_TIMEOUT"],
        interim_interval=wavu["RADIUS_INTERIM_INTERVAL"],
        framed_pool=wavu["RADIUS_FRAMED_POOL"],
        session_timeout=wavu["RADIUS_SESSION_TIMEOUT"],
    )


@dataclass(frozen=True)
class PeriodUsage:
    """What a service used in its current period, counted against its quotas."""

    data_bytes: int = 0
    seconds: int = 0


def period_usage(subscription_ids: Iterable[int], now: dt.datetime) -> dict[int, PeriodUsage]:
    """Usage in each service's current period by subscription id (services with none are left
    out), as the usage ingester (`network.usage`) counted it from radacct: all sessions and devices
    of the service together. One query."""
    from .models import PeriodUsage as PeriodTotal

    rows = PeriodTotal.objects.filter(
        subscription_id__in=sorted(set(subscription_ids)), period_start=F("subscription__current_period_start")
    ).values_list("subscription_id", "bytes_in", "bytes_out", "seconds")
    return {sub: PeriodUsage(data_bytes=i + o, seconds=s) for sub, i, o, s in rows}


def service_snapshots(subscription_ids: Iterable[int], now: dt.datetime) -> dict[int, ServiceSnapshot]:
    """`ServiceSnapshot`s of the given subscriptions by id (ids with no subscription are left
    out), in three queries whatever their number: the services, their plans, their data bundles."""
    ids = sorted(set(subscription_ids))
    if not ids:
        return {}
    # A hotspot voucher's device lock and device limit come in the same query (a LEFT JOIN).
    vouchers = apps.is_installed("wavu.hotspot")
    extra = ("voucher__locked_mac", "voucher__batch__device_limit") if vouchers else ()
    rows = [
        (*row[: len(_SNAPSHOT_FIELDS)], row[len(_SNAPSHOT_FIELDS) :] or ("", None))
        for row in Subscription.objects.filter(pk__in=ids).values_list(*_SNAPSHOT_FIELDS, *extra)
    ]
    plans = Plan.objects.in_bulk({row[-2] for row in rows})
    bundles = _bundle_bytes(rows, now)
    usage = period_usage(ids, now)
    snapshots = {}
    for pk, username, password, status, static_ip, _period_start, period_end, plan_id, voucher in rows:
        locked_mac, device_limit = voucher
        plan = plans[plan_id]
        used = usage.get(pk, PeriodUsage())
        quota = plan.data_quota_mb * MIB if plan.data_quota_mb is not None else None
        if quota is not None or pk in bundles:
            quota = (quota or 0) + bundles.get(pk, 0)
        expires_at, first_login = None, None
        if plan.kind != Plan.Kind.POSTPAID:
            expires_at = period_end
            if period_end is None and plan.kind == Plan.Kind.HOTSPOT:
                first_login = int((plan_validity_end(plan, now) - now).total_seconds())
        snapshots[pk] = ServiceSnapshot(
            username=username,
            password=password,
            status=status,
            plan_kind=plan.kind,
            download_kbps=plan.download_kbps,
            upload_kbps=plan.upload_kbps,
            burst_download_kbps=plan.burst_download_kbps,
            burst_upload_kbps=plan.burst_upload_kbps,
            burst_threshold_percent=plan.burst_threshold_percent,
            burst_time_seconds=plan.burst_time_seconds,
            data_quota_bytes=quota,
            time_quota_seconds=plan.time_quota_minutes * 60 if plan.time_quota_minutes is not None else None,
            quota_action=plan.quota_action,
            fup_download_kbps=plan.fup_download_kbps,
            fup_upload_kbps=plan.fup_upload_kbps,
            devices_allowed=device_limit or plan.devices_allowed,
            expires_at=expires_at,
            first_login_seconds=first_login,
            data_used_bytes=used.data_bytes,
            time_used_seconds=used.seconds,
            static_ip=static_ip,
            calling_station_id=locked_mac or "",
        )
    return snapshots


def _bundle_bytes(rows, now: dt.datetime) -> dict[int, int]:
    """Extra data from data-bundle add-ons in force at `now`: a recurring bundle every period, a
    one-off bundle in the period it was added in."""
    period_start = {row[0]: row[5] for row in rows}
    extra: dict[int, int] = defaultdict(int)
    items = (
        SubscriptionAddOn.objects.filter(
            subscription_id__in=list(period_start),
            addon__category=AddOn.Category.DATA_BUNDLE,
            addon__data_quota_mb__isnull=False,
            started_at__lte=now,
        )
        .filter(Q(ended_at__isnull=True) | Q(ended_at__gt=now))
        .values_list("subscription_id", "quantity", "started_at", "addon__billing", "addon__data_quota_mb")
    )
    for sub_id, quantity, started_at, billing, size_mb in items:
        start = period_start.get(sub_id)
        if billing == AddOn.Billing.RECURRING or start is None or started_at >= start:
            extra[sub_id] += quantity * size_mb * MIB
    return dict(extra)


def enabled_nas() -> QuerySet[Nas]:
    """The routers FreeRADIUS loads as clients (a NAS without a Wavu profile counts as enabled)."""
    return Nas.objects.exclude(profile__enabled=False).order_by("shortname")
