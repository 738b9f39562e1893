"""Usage ingestion: FreeRADIUS's `radacct` turned into per-service usage, the one source quotas count.

FreeRADIUS's stock queries keep one `radacct` row per session and overwrite its cumulative counters
at every Interim-Update and at the Stop (octets with the Gigawords folded in: Gigawords × 2^32 +
Octets). `ingest()` turns them into per-service deltas:

- **Per session**, a `SessionCounter` holds the counters last counted. The delta is what each
  counter grew by since; the row then takes the new counters. A duplicate update (same counters)
  gives nothing. An update older than the one already counted (its `acctsessiontime` went
  backwards: a late, out-of-order Interim-Update that the stock query wrote over a newer one) gives
  nothing and the stored counters stay. A counter lower than the stored one while the session time
  did not go back is a counter reset (the router restarted its counters): the new value is the
  delta. A session seen for the first time counts everything (a Stop without interims too).
- **Which rows to read.** Not by `acctupdatetime`: the stock queries stamp it with the router's
  Event-Timestamp (its clock, possibly late or skewed), and indexing it would cost FreeRADIUS's
  interim UPDATE its heap-only updates. Instead each run reads (1) the sessions it already counts
  and has not seen stop (`SessionCounter.closed` false, a partial index) whose radacct counters or
  stop time differ from the stored ones (a join on the primary key), and (2) radacct rows above an
  id floor that have no `SessionCounter` yet (new sessions). The floor is the highest id seen one
  run earlier, so a row whose insert committed late (ids are handed out before commit) is still
  found; re-reading a row is harmless because deltas come from the stored counters.
- **Where usage goes.** Into the service whose `username` the session has (all its devices
  together): an hourly `UsageBucket` (the hour of the update's time) and the `PeriodUsage` of the
  service's current period (what `selectors.period_usage` returns and quotas count). An update
  timed before the current period started (to the second: RADIUS times are whole seconds) counts
  in its hour only.
- **Stale sessions.** An open session with no update for 3 × the interim interval (the router
  rebooted, or lost the RADIUS server) is closed: `acctstoptime` = its last update,
  `acctterminatecause` = "Stale-Session". Accounting-On/Off needs nothing here: FreeRADIUS's stock
  `accounting-on` / `accounting-off` queries close the NAS's open sessions themselves (NAS-Reboot).
- **Set-based.** A batch of up to `batch_size` sessions costs the same dozen queries whatever its
  size (a test proves it). Runs queue on the single `UsageCursor` row (locked per batch), so two
  workers never count an update twice. After each batch, `quotas.check_crossings` records 80 % /
  100 % events and asks RADIUS syncs for services that crossed their quota.

`ingest()` runs every minute (`usage-ingest` in `wavu/schedule.py`).
"""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from dataclasses import dataclass, field

from django.db import connection, transaction
from django.db.models import BigIntegerField, Exists, F, Max, OuterRef, Q, Value
from django.db.models.functions import Cast, Coalesce

from wavu.core import clock
from wavu.core.db import _array_types, _columns, _preparer, _unnest_arrays
from wavu.subscriptions.models import Subscription

from .fields import to_datetime
from .models import PeriodUsage, RadAcct, SessionCounter, UsageBucket, UsageCursor
from .selectors import radius_policy

DEFAULT_BATCH = 5000
STALE_INTERVALS = 3
STALE_CAUSE = "Stale-Session"


@dataclass
class IngestReport:
    """What one run did: sessions read, bytes and seconds counted, sessions closed as stale."""

    sessions: int = 0
    new_sessions: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    seconds: int = 0
    stale_closed: int = 0
    ignored_out_of_order: int = 0
    resets: int = 0
    services: set = field(default_factory=set)

    def as_dict(self) -> dict:
        return {
            "sessions": self.sessions,
            "new_sessions": self.new_sessions,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "seconds": self.seconds,
            "stale_closed": self.stale_closed,
            "ignored_out_of_order": self.ignored_out_of_order,
            "resets": self.resets,
            "services": len(self.services),
        }


@dataclass(frozen=True)
class _Row:
    radacct_id: int
    username: str | None
    subscription_id: int | None
    known: bool  # a SessionCounter exists
    old: tuple[int, int, int]  # stored input, output, seconds
    new: tuple[int, int, int]  # radacct's input, output, seconds
    stopped: bool
    at: dt.datetime | None  # the update's time


def delta(old: tuple[int, int, int], new: tuple[int, int, int]) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """(delta, counters to store) for a session whose stored counters are `old` (input, output,
    seconds) and whose radacct row now says `new`. Pure; see the module docstring for the rules."""
    if new[2] < old[2]:  # an older update than the one counted: out of order
        return (0, 0, 0), old
    grown = tuple(n - o if n >= o else n for o, n in zip(old, new, strict=True))
    return grown, new


def close_stale_sessions(*, now: dt.datetime | None = None, interim_interval: int | None = None) -> int:
    """Close every open session with no update for 3 × the interim interval (one UPDATE); returns how many."""
    now = now or clock.now()
    interval = radius_policy().interim_interval if interim_interval is None else interim_interval
    if not interval:
        return 0
    cutoff = now - dt.timedelta(seconds=STALE_INTERVALS * interval)
    last = RadAcct._meta.get_field("acctupdatetime")
    return (
        RadAcct.objects.filter(acctstoptime__isnull=True)
        .annotate(last_seen=Coalesce("acctupdatetime", "acctstarttime", output_field=last))
        .filter(last_seen__lt=cutoff)
        .update(
            acctstoptime=Coalesce(F("acctupdatetime"), F("acctstarttime"), output_field=last),
            acctterminatecause=STALE_CAUSE,
        )
    )


def ingest(*, now: dt.datetime | None = None, batch_size: int = DEFAULT_BATCH) -> IngestReport:
    """One ingestion run (see the module docstring): close stale sessions, count every changed or
    new session in batches, check quota crossings. Idempotent; safe to run side by side."""
    now = now or clock.now()
    report = IngestReport()
    report.stale_closed = close_stale_sessions(now=now)
    UsageCursor.objects.get_or_create(pk=1)
    after = 0
    while True:  # (1) sessions already counted, still open at the last look
        with transaction.atomic():
            UsageCursor.objects.select_for_update().get(pk=1)
            rows = _known_changed(after, batch_size)
            if not rows:
                break
            _count(rows, now, report)
            after = rows[-1].radacct_id
    cursor = UsageCursor.objects.get(pk=1)
    top = RadAcct.objects.aggregate(top=Max("radacctid"))["top"] or 0
    after = cursor.floor_id
    while True:  # (2) sessions not counted yet
        with transaction.atomic():
            UsageCursor.objects.select_for_update().get(pk=1)
            rows = _new_sessions(after, top, batch_size)
            if not rows:
                break
            _count(rows, now, report)
            after = rows[-1].radacct_id
    with transaction.atomic():
        cursor = UsageCursor.objects.select_for_update().get(pk=1)
        UsageCursor.objects.filter(pk=1).update(floor_id=max(cursor.seen_id, cursor.floor_id), seen_id=top, ran_at=now)
    return report


def _moment(prefix: str = "") -> dict:
    """Annotations `stopped` (the session has a stop time) and `moment` (its stop, else last update,
    else start time), read as integers on SQLite (see `stamps`)."""
    names = [f"{prefix}acctstoptime", f"{prefix}acctupdatetime", f"{prefix}acctstarttime"]
    stamp = RadAcct._meta.get_field("acctstoptime")
    moment = Coalesce(*names, output_field=stamp)
    if connection.vendor == "sqlite":
        moment = Cast(moment, BigIntegerField())
    return {"stopped": Q(**{f"{prefix}acctstoptime__isnull": False}), "moment": moment}


def stamps(*names: str) -> dict:
    """Annotations that read radacct timestamps (`stamp_<i>`): on SQLite as the integers the stock
    queries store (Django's SQLite connection would parse a `datetime` column as text and give None)."""
    if connection.vendor == "sqlite":
        return {f"stamp_{i}": Cast(name, BigIntegerField()) for i, name in enumerate(names)}
    return {f"stamp_{i}": F(name) for i, name in enumerate(names)}


_COUNTERS = {
    "rin": Coalesce("radacct__acctinputoctets", Value(0)),
    "rout": Coalesce("radacct__acctoutputoctets", Value(0)),
    "rtime": Coalesce("radacct__acctsessiontime", Value(0)),
}


def _known_changed(after: int, limit: int) -> list[_Row]:
    changed = (
        Q(radacct__acctstoptime__isnull=False)
        | ~Q(input_octets=F("rin"))
        | ~Q(output_octets=F("rout"))
        | ~Q(session_seconds=F("rtime"))
    )
    found = (
        SessionCounter.objects.filter(closed=False, radacct_id__gt=after)
        .annotate(**_COUNTERS, **_moment("radacct__"))
        .filter(changed)
        .order_by("radacct_id")
        .values_list(
            "radacct_id",
            "radacct__username",
            "subscription_id",
            "input_octets",
            "output_octets",
            "session_seconds",
            "rin",
            "rout",
            "rtime",
            "stopped",
            "moment",
        )[:limit]
    )
    return [
        _Row(pk, name, sub, True, (i, o, s), (ri, ro, rs), bool(stopped), to_datetime(moment))
        for pk, name, sub, i, o, s, ri, ro, rs, stopped, moment in found
    ]


def _new_sessions(after: int, top: int, limit: int) -> list[_Row]:
    found = (
        RadAcct.objects.filter(radacctid__gt=after, radacctid__lte=top)
        .filter(~Exists(SessionCounter.objects.filter(radacct_id=OuterRef("pk"))))
        .annotate(**_moment())
        .order_by("radacctid")
        .values_list(
            "radacctid",
            "username",
            "acctinputoctets",
            "acctoutputoctets",
            "acctsessiontime",
            "stopped",
            "moment",
        )[:limit]
    )
    return [
        _Row(pk, name, None, False, (0, 0, 0), (ri or 0, ro or 0, rs or 0), bool(stopped), to_datetime(moment))
        for pk, name, ri, ro, rs, stopped, moment in found
    ]


def _count(rows: list[_Row], now: dt.datetime, report: IngestReport) -> None:
    """Deltas of one batch into SessionCounter, UsageBucket and PeriodUsage; then quota crossings."""
    from . import quotas

    names = {row.username for row in rows if row.subscription_id is None and row.username}
    known_ids = {row.subscription_id for row in rows if row.subscription_id is not None}
    services = Subscription.objects.filter(Q(username__in=names) | Q(pk__in=known_ids)).values_list(
        "pk", "username", "current_period_start"
    )
    by_name, period_start = {}, {}
    for pk, username, start in services:
        by_name[username] = pk
        period_start[pk] = start

    counters, hours, periods = [], defaultdict(lambda: [0, 0, 0]), defaultdict(lambda: [0, 0, 0])
    for row in rows:
        sub = row.subscription_id if row.subscription_id is not None else by_name.get(row.username)
        grown, stored = delta(row.old, row.new)
        if stored is row.old and row.new != row.old:
            report.ignored_out_of_order += 1
        elif any(n < o for o, n in zip(row.old, row.new, strict=True)):
            report.resets += 1
        counters.append((row.radacct_id, sub, stored[0], stored[1], stored[2], row.stopped, now))
        report.sessions += 1
        report.new_sessions += not row.known
        if sub is None or not any(grown):
            continue
        at = row.at or now
        hour = at.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)
        in_period = period_start.get(sub) is not None and at >= period_start[sub].replace(microsecond=0)
        for total in (hours[(sub, hour)], *([periods[sub]] if in_period else [])):
            total[0] += grown[0]
            total[1] += grown[1]
            total[2] += grown[2]
        report.bytes_in += grown[0]
        report.bytes_out += grown[1]
        report.seconds += grown[2]
        report.services.add(sub)

    _upsert(
        SessionCounter,
        ["radacct", "subscription", "input_octets", "output_octets", "session_seconds", "closed", "updated_at"],
        counters,
        key=["radacct"],
    )
    _upsert(
        UsageBucket,
        ["subscription", "hour", "bytes_in", "bytes_out", "seconds"],
        [(sub, hour, i, o, sec) for (sub, hour), (i, o, sec) in hours.items()],
        key=["subscription", "hour"],
        add=["bytes_in", "bytes_out", "seconds"],
    )
    totals = _upsert(
        PeriodUsage,
        ["subscription", "period_start", "bytes_in", "bytes_out", "seconds", "updated_at"],
        [(sub, period_start[sub], i, o, sec, now) for sub, (i, o, sec) in periods.items()],
        key=["subscription", "period_start"],
        add=["bytes_in", "bytes_out", "seconds"],
        returning=["subscription", "bytes_in", "bytes_out", "seconds"],
    )
    crossings = {}
    for sub, total_in, total_out, total_seconds in totals:
        grown_in, grown_out, grown_seconds = periods[sub]
        after = total_in + total_out
        crossings[sub] = (period_start[sub], after - grown_in - grown_out, after, total_seconds - grown_seconds,
                          total_seconds)  # fmt: skip
    quotas.check_crossings(crossings, now=now)


def _upsert(model, fields: list[str], rows: list[tuple], *, key: list[str], add=(), returning=()) -> list[tuple]:
    """INSERT … ON CONFLICT (key) DO UPDATE in one statement whatever the number of rows (PostgreSQL:
    one array per column; SQLite: one JSON array): the `add` columns are added to the stored values, the others
    replaced. Rows must be unique by `key`. Returns the `returning` columns of every row written."""
    if not rows:
        return []
    opts = model._meta
    model_fields = [opts.get_field(name) for name in fields]
    quote = connection.ops.quote_name
    table = quote(opts.db_table)
    columns = ", ".join(_columns(connection, model_fields))
    assignments = ", ".join(
        f"{quote(f.column)} = {table}.{quote(f.column)} + excluded.{quote(f.column)}"
        if f.name in add
        else f"{quote(f.column)} = excluded.{quote(f.column)}"
        for f in model_fields
        if f.name not in key
    )
    tail = f" ON CONFLICT ({', '.join(quote(opts.get_field(n).column) for n in key)}) DO UPDATE SET {assignments}"
    if returning:
        tail += " RETURNING " + ", ".join(quote(opts.get_field(n).column) for n in returning)
    found: list[tuple] = []
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            casts = ", ".join(f"%s::{t}" for t in _array_types(connection, model_fields))
            cursor.execute(
                f"INSERT INTO {table} ({columns}) SELECT * FROM unnest({casts}){tail}",
                _unnest_arrays(connection, model_fields, rows),
            )
            return [tuple(row) for row in cursor.fetchall()] if returning else []
        # SQLite: the rows as one JSON parameter, whatever their number (json_each: one row per element).
        prepare = [_preparer(f, connection) for f in model_fields]
        payload = json.dumps([[prep(value) for prep, value in zip(prepare, row, strict=True)] for row in rows])
        picks = ", ".join(f"json_extract(value, '$[{i}]')" for i in range(len(fields)))
        cursor.execute(f"INSERT INTO {table} ({columns}) SELECT {picks} FROM json_each(%s) WHERE true{tail}", [payload])
        if returning:
            found.extend(tuple(row) for row in cursor.fetchall())
    return found
