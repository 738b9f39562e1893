"""The writer: makes `radcheck`, `radreply` and `radusergroup` say what the projection says.

- `sync_subscriptions(ids)` projects the given services (`projection.project`) and changes only the
  rows that differ: a row that is already right is neither deleted nor rewritten, a missing one is
  inserted, a wrong or extra one (a hand edit, a duplicate, the old plan's rate) is deleted. The
  rows of a service's previous user name go when its username changes. Set-based: a batch costs the
  same dozen queries whether it holds 2 services or 1,000 (reads with `IN`, one DELETE and one
  multi-row INSERT per table). Each batch is one transaction, so FreeRADIUS sees a service's old
  rows or its new ones, never half of each. Idempotent: a second run changes nothing.
- `reconcile()` runs it over every service that should have rows, removes rows of user names no
  live service has (orphans: cancelled or renamed services, hand-made users), repairs the
  walled-garden group, and records what it repaired as a `Reconciliation`.

Concurrency: a sync locks the services' `RadiusAccount` rows (created on first sync) before it
reads them, in primary-key order, so two syncs of one service queue and the later one writes from
the newer state. Jobs call these after commit (`network.tasks`); nothing here talks to a router: the
drain queues the CoA job of live sessions a sync changed (`network.sessions`).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef

from wavu.core import clock
from wavu.subscriptions.models import Status, Subscription

from .models import (
    RadCheck,
    RadGroupCheck,
    RadGroupReply,
    RadiusAccount,
    RadiusSyncRequest,
    RadReply,
    RadUserGroup,
    Reconciliation,
)
from .projection import GARDEN, Attr, DesiredRows, GroupMembership, RadiusPolicy, absent, project, walled_garden_group
from .selectors import radius_policy, service_snapshots
from .sessions import live_state, queue_session_changes

logger = logging.getLogger(__name__)

# Services in these statuses have rows (active, lapsed or an explicit reject); the rest have none.
STATUSES_WITH_ROWS = (Status.ACTIVE, Status.EXPIRED, Status.SUSPENDED, Status.PAUSED)
DEFAULT_BATCH = 1000
_DELETE_CHUNK = 500
_REPORT_NAMES = 100


@dataclass
class SyncReport:
    """What a sync or a reconciliation changed. `users_changed` are the user names whose rows
    differed from their projection; `rows_added`/`rows_removed` count rows per table."""

    services: int = 0
    users_changed: list[str] = field(default_factory=list)
    quota_refreshed: list[str] = field(default_factory=list)  # only their remaining data quota moved
    rows_added: Counter = field(default_factory=Counter)
    rows_removed: Counter = field(default_factory=Counter)
    outcomes: Counter = field(default_factory=Counter)
    orphans: list[str] = field(default_factory=list)
    groups_repaired: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.users_changed or self.orphans or self.groups_repaired)

    def as_dict(self) -> dict:
        return {
            "services": self.services,
            "users_changed": len(self.users_changed),
            "quota_refreshed": len(self.quota_refreshed),
            "usernames": sorted(self.users_changed)[:_REPORT_NAMES],
            "rows_added": dict(self.rows_added),
            "rows_removed": dict(self.rows_removed),
            "outcomes": dict(self.outcomes),
            "orphans": len(self.orphans),
            "orphan_usernames": sorted(self.orphans)[:_REPORT_NAMES],
            "groups_repaired": list(self.groups_repaired),
        }


# The three per-user tables: model, the fields an item is made of, and how to read one.
@dataclass(frozen=True)
class _Table:
    name: str
    model: type
    fields: tuple[str, ...]

    def item(self, row):
        return Attr(*row) if self.model is not RadUserGroup else GroupMembership(*row)

    def build(self, owner_field: str, owner: str, item):
        values = (
            dict(zip(self.fields, (item.attribute, item.op, item.value), strict=True))
            if isinstance(item, Attr)
            else {"groupname": item.groupname, "priority": item.priority}
        )
        return self.model(**{owner_field: owner}, **values)


_CHECK = _Table("radcheck", RadCheck, ("attribute", "op", "value"))
_REPLY = _Table("radreply", RadReply, ("attribute", "op", "value"))
_GROUPS = _Table("radusergroup", RadUserGroup, ("groupname", "priority"))
_GROUP_CHECK = _Table("radgroupcheck", RadGroupCheck, ("attribute", "op", "value"))
_GROUP_REPLY = _Table("radgroupreply", RadGroupReply, ("attribute", "op", "value"))


def sync_subscriptions(
    subscription_ids: Iterable[int],
    *,
    now: dt.datetime | None = None,
    policy: RadiusPolicy | None = None,
    batch_size: int | None = None,
    report: SyncReport | None = None,
) -> SyncReport:
    """Make the RADIUS rows of these services match their projection at `now` (default now).

    Idempotent; one transaction per batch (`batch_size`, default WAVU["RADIUS_RECONCILE_BATCH"]);
    locks the services' `RadiusAccount` rows (see the module docstring). Ids of services that do
    not exist are ignored. Returns (or adds to `report`) what changed."""
    now = now or clock.now()
    policy = policy or radius_policy()
    report = report if report is not None else SyncReport()
    ids = sorted({int(pk) for pk in subscription_ids})
    size = max(1, batch_size or settings.WAVU.get("RADIUS_RECONCILE_BATCH") or DEFAULT_BATCH)
    garden = False
    for offset in range(0, len(ids), size):
        with transaction.atomic():
            garden |= _sync_batch(ids[offset : offset + size], now, policy, report)
    if garden:
        ensure_groups(policy, report=report)
    return report


def drain_sync_requests(*, limit: int = 500) -> int:
    """Re-project up to `limit` services waiting in `RadiusSyncRequest`, oldest first; returns how many
    were taken. Listed in `wavu.schedule.DRAINS`: every worker runs it continuously. The requests are
    claimed (FOR UPDATE SKIP LOCKED, so workers share the queue) and deleted in the transaction that
    writes the rows; a change committed meanwhile leaves a new request, so nothing is missed."""
    if not RadiusSyncRequest.objects.exists():
        return 0  # a read, not a write transaction: on SQLite an idle drain must not take the write lock
    with transaction.atomic():
        ids = list(
            RadiusSyncRequest.objects.select_for_update(skip_locked=True)
            .order_by("requested_at", "pk")
            .values_list("pk", flat=True)[:limit]
        )
        if not ids:
            return 0
        RadiusSyncRequest.objects.filter(pk__in=ids).delete()
        before = live_state(ids)
        sync_subscriptions(ids)
        # Live sessions of services whose rate, walled garden or reject changed get a CoA / Disconnect job.
        queue_session_changes(before, live_state(ids))
    return len(ids)


def _sync_batch(ids: list[int], now: dt.datetime, policy: RadiusPolicy, report: SyncReport) -> bool:
    accounts = _lock_accounts(ids, now)
    snapshots = service_snapshots(accounts, now)
    desired: dict[str, DesiredRows] = {}
    for pk in sorted(snapshots):
        rows = project(snapshots[pk], policy, now)
        desired[rows.username] = rows
        report.outcomes[rows.outcome] += 1
    report.services += len(snapshots)
    renamed = {pk: old for pk, old in accounts.items() if old and pk in snapshots and old != snapshots[pk].username}
    for old in _free_names(set(renamed.values()) - set(desired)):
        desired[old] = absent(old, "the service's previous user name")
    _apply(desired, report)
    moved = [
        (snapshots[pk].username, now, pk)
        for pk, old in accounts.items()
        if pk in snapshots and old != snapshots[pk].username
    ]
    if moved:
        RadiusAccount.objects.bulk_update(
            [RadiusAccount(subscription_id=pk, username=name, updated_at=at) for name, at, pk in moved],
            ["username", "updated_at"],
        )
    return any(rows.outcome == GARDEN for rows in desired.values())


def _lock_accounts(ids: list[int], now: dt.datetime) -> dict[int, str]:
    """{subscription id: user name last written ("" if never)} for the existing services among
    `ids`, their RadiusAccount rows created if missing and locked in primary-key order."""
    existing = list(Subscription.objects.filter(pk__in=ids).values_list("pk", flat=True))
    RadiusAccount.objects.bulk_create(
        [RadiusAccount(subscription_id=pk, username="", updated_at=now) for pk in existing], ignore_conflicts=True
    )
    locked = (
        RadiusAccount.objects.select_for_update()
        .filter(subscription_id__in=existing)
        .order_by("pk")
        .values_list("subscription_id", "username")
    )
    return dict(locked)


def _free_names(names: set[str]) -> list[str]:
    """Of these former user names, those no service uses now (a name another service took is its own)."""
    if not names:
        return []
    taken = set(Subscription.objects.filter(username__in=names).values_list("username", flat=True))
    return sorted(names - taken)


def _apply(desired: dict[str, DesiredRows], report: SyncReport) -> None:
    """Diff and write the three per-user tables for the user names in `desired`."""
    if not desired:
        return
    names = list(desired)
    changed: set[str] = set()
    drifted: set[str] = set()
    for table, wanted in (
        (_CHECK, {u: rows.check for u, rows in desired.items()}),
        (_REPLY, {u: rows.reply for u, rows in desired.items()}),
        (_GROUPS, {u: rows.groups for u, rows in desired.items()}),
    ):
        current = table.model.objects.filter(username__in=names).values_list("id", "username", *table.fields)
        changed_here, drifted_here = _write(table, "username", wanted, current, report)
        changed |= changed_here
        drifted |= drifted_here
    report.users_changed.extend(sorted(drifted))
    report.quota_refreshed.extend(sorted(changed - drifted))


# The remaining data quota moves with usage: rewriting it is a refresh, not drift.
QUOTA_ATTRIBUTES = frozenset({"Mikrotik-Total-Limit", "Mikrotik-Total-Limit-Gigawords"})


def _write(
    table: _Table, owner_field: str, wanted: dict[str, Sequence], current, report: SyncReport
) -> tuple[set[str], set[str]]:
    """Delete the current rows not wanted and insert the wanted rows missing, per owner; returns
    (the owners whose rows changed, those of them with a change other than the remaining quota).
    A row that is already right stays as it is (same id)."""
    have: dict[str, list[tuple[int, object]]] = defaultdict(list)
    for row in current:
        have[row[1]].append((row[0], table.item(row[2:])))
    delete: list[int] = []
    insert = []
    changed: set[str] = set()
    drifted: set[str] = set()

    def note(owner, item) -> None:
        changed.add(owner)
        if getattr(item, "attribute", None) not in QUOTA_ATTRIBUTES:
            drifted.add(owner)

    for owner, items in wanted.items():
        need = Counter(items)
        for pk, item in sorted(have.get(owner, ()), key=lambda pair: pair[0]):
            if need[item] > 0:
                need[item] -= 1
            else:
                delete.append(pk)
                note(owner, item)
        for item in items:
            if need[item] > 0:
                need[item] -= 1
                insert.append(table.build(owner_field, owner, item))
                note(owner, item)
    for offset in range(0, len(delete), _DELETE_CHUNK):
        table.model.objects.filter(id__in=delete[offset : offset + _DELETE_CHUNK]).delete()
    if insert:
        table.model.objects.bulk_create(insert)
    if delete:
        report.rows_removed[table.name] += len(delete)
    if insert:
        report.rows_added[table.name] += len(insert)
    return changed, drifted


def ensure_groups(policy: RadiusPolicy | None = None, *, report: SyncReport | None = None) -> list[str]:
    """Make the Wavu-owned groups (the walled garden) match the policy in radgroupcheck and
    radgroupreply; returns the names of the groups it had to repair. Idempotent; one transaction."""
    policy = policy or radius_policy()
    groups = [walled_garden_group(policy)]
    repaired: set[str] = set()
    scratch = report if report is not None else SyncReport()
    with transaction.atomic():
        names = [g.groupname for g in groups]
        for table, wanted in (
            (_GROUP_CHECK, {g.groupname: g.check for g in groups}),
            (_GROUP_REPLY, {g.groupname: g.reply for g in groups}),
        ):
            current = table.model.objects.filter(groupname__in=names).values_list("id", "groupname", *table.fields)
            repaired |= _write(table, "groupname", wanted, current, scratch)[0]
    scratch.groups_repaired.extend(sorted(repaired))
    return sorted(repaired)


def remove_orphans(report: SyncReport | None = None) -> list[str]:
    """Delete the rows of every user name in radcheck, radreply or radusergroup that no service
    with rows (active, expired, suspended, paused) has: cancelled and pending services, former user
    names, users made by hand. Returns those names. The DELETE re-checks the condition, so a service
    that became live meanwhile keeps its rows."""
    report = report if report is not None else SyncReport()
    live = Subscription.objects.filter(username=OuterRef("username"), status__in=STATUSES_WITH_ROWS)
    orphans: set[str] = set()
    with transaction.atomic():
        for table in (_CHECK, _REPLY, _GROUPS):
            stray = table.model.objects.filter(~Exists(live))
            orphans |= set(stray.values_list("username", flat=True).distinct())
            removed, _ = stray.delete()
            if removed:
                report.rows_removed[table.name] += removed
    report.orphans.extend(sorted(orphans))
    return sorted(orphans)


def reconcile(*, now: dt.datetime | None = None, batch_size: int | None = None) -> Reconciliation:
    """The full reconciliation (a periodic job): every service with rows is synced batch by batch
    (primary-key windows), then orphans are removed and the walled-garden group repaired. What it
    changed is drift (lifecycle syncs should have left nothing to do); it is recorded in a
    `Reconciliation` row and logged as a warning. Idempotent; safe next to lifecycle syncs."""
    started = clock.now()
    record = Reconciliation.objects.create(started_at=started)
    policy = radius_policy()
    report = SyncReport()
    size = max(1, batch_size or settings.WAVU.get("RADIUS_RECONCILE_BATCH") or DEFAULT_BATCH)
    last = 0
    while True:
        ids = list(
            Subscription.objects.filter(pk__gt=last, status__in=STATUSES_WITH_ROWS)
            .order_by("pk")
            .values_list("pk", flat=True)[:size]
        )
        if not ids:
            break
        sync_subscriptions(ids, now=now or clock.now(), policy=policy, batch_size=size, report=report)
        last = ids[-1]
    remove_orphans(report)
    ensure_groups(policy, report=report)
    summary = report.as_dict()
    Reconciliation.objects.filter(pk=record.pk).update(
        finished_at=clock.now(),
        services_checked=report.services,
        users_repaired=len(set(report.users_changed)),
        orphans_removed=len(report.orphans),
        rows_added=sum(report.rows_added.values()),
        rows_removed=sum(report.rows_removed.values()),
        details={
            key: summary[key]
            for key in (
                "usernames",
                "orphan_usernames",
                "rows_added",
                "rows_removed",
                "outcomes",
                "groups_repaired",
                "quota_refreshed",
            )
        },  # fmt: skip
    )
    record.refresh_from_db()
    if report.changed:
        logger.warning(
            "RADIUS reconciliation repaired drift: %d service(s), %d orphan user name(s), groups %s, rows +%d −%d",
            record.users_repaired,
            record.orphans_removed,
            report.groups_repaired or "ok",
            record.rows_added,
            record.rows_removed,
        )
    return record
