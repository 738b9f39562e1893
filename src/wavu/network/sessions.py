"""Live sessions follow a sync: which sessions it changed, and the CoA job that tells their routers.

- `live_state(ids)`: what a live session of each service depends on (rate limit, walled-garden
  membership, reject, rows at all), read from its RADIUS rows.
- `queue_session_changes(before, after)` is the writer's hook: `writer.drain_sync_requests` reads
  `live_state` of its services before and after the sync; each user name whose state changed and
  that has an open session (an open `radacct` row) gets a `change_live_session` job, enqueued when
  the sync's transaction commits: no UDP inside it. A change a live session does not depend on (a
  renewal moving the expiry) sends nothing.
- `change_live_session` (the job, "coa") sends the CoA / Disconnect-Requests (`network.coa`).

The job lives here rather than in `network.tasks` because the writer queues it and `tasks.py`, the
top of the app, imports the writer: imports point one way, tasks → writer → sessions → coa.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from django.db.models import Subquery

from wavu.core.tasks import enqueue_on_commit, task
from wavu.subscriptions.models import Subscription

from . import coa
from .models import RadAcct, RadCheck, RadReply, RadUserGroup
from .selectors import radius_policy


def live_state(subscription_ids: Iterable[int]) -> dict[str, tuple]:
    """What a live session of each of these services depends on, from its rows now: {user name:
    (rate limit, in the walled garden, rejected, has rows)}. Three queries."""
    names = Subscription.objects.filter(pk__in=list(subscription_ids)).values("username")
    garden = radius_policy().walled_garden_group
    rates = dict(
        RadReply.objects.filter(username__in=Subquery(names), attribute="Mikrotik-Rate-Limit")
        .values_list("username", "value")
    )  # fmt: skip
    checks = defaultdict(dict)
    for username, attribute, value in RadCheck.objects.filter(username__in=Subquery(names)).values_list(
        "username", "attribute", "value"
    ):
        checks[username][attribute] = value
    in_garden = set(
        RadUserGroup.objects.filter(username__in=Subquery(names), groupname=garden).values_list("username", flat=True)
    )
    users = set(rates) | set(checks) | in_garden
    return {
        name: (
            rates.get(name),
            name in in_garden,
            checks[name].get("Auth-Type", "").lower() == "reject",
            bool(checks.get(name)),
        )  # fmt: skip
        for name in users
    }


def queue_session_changes(before: dict[str, tuple], after: dict[str, tuple]) -> list[str]:
    """The writer's hook, with `live_state` before and after a sync: every user name whose state
    changed (rate, walled garden, reject, rows gone) and that has an open session gets a
    `change_live_session` job, enqueued on commit. Returns those user names (one query; none
    when nothing a session depends on changed, e.g. a renewal that only moved the expiry)."""
    names = sorted(name for name in set(before) | set(after) if before.get(name) != after.get(name))
    if not names:
        return []
    online = sorted(
        set(RadAcct.objects.filter(username__in=names, acctstoptime__isnull=True).values_list("username", flat=True))
    )
    for name in online:
        was_in_garden = bool(before.get(name) and before[name][1])
        enqueue_on_commit(change_live_session, name, left_garden=was_in_garden)
    return online


@task(name="coa", max_attempts=4, backoff_seconds=15)
def change_live_session(username: str, left_garden: bool = False) -> list[dict]:
    """Send the open sessions of `username` a CoA or a Disconnect for its new rows (`network.coa`).
    A router that does not answer fails the job, which is retried with backoff."""
    attempts = coa.change_live_session(username, left_garden=left_garden)
    return [{"kind": a.kind, "result": a.result, "nas": a.nas_address} for a in attempts]
