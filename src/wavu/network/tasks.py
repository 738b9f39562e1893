"""Network jobs (the periodic ones are listed in `wavu/schedule.py`).

`ingest_usage` (every minute) turns accounting into usage and quota events (`network.usage`).
The CoA job `change_live_session`, queued by the writer's hook after commit, lives in
`network.sessions` (the writer, which this module imports, queues it).

Every lifecycle event leaves a `RadiusSyncRequest` (`signals.py`) that the workers' drain
(`writer.drain_sync_requests`, in `wavu/schedule.py` DRAINS) takes within a fraction of a second, so
RADIUS follows activations, renewals, expiries, suspensions, plan and credential changes.
`reconcile_radius` repairs whatever was changed behind the services' backs. Both are idempotent and
safe to run side by side.
"""

from wavu.core.tasks import task

from . import usage, writer

# Job records queued before the CoA job moved to `network.sessions` name this path; the alias keeps
# them runnable. New records name `wavu.network.sessions.change_live_session`.
from .sessions import change_live_session  # noqa: F401


@task(name="radius-reconcile", max_attempts=2)
def reconcile_radius() -> dict:
    """Compare every service's RADIUS rows with its projection, repair drift and report it."""
    record = writer.reconcile()
    return {"reconciliation": record.pk, "drift": record.drift_found, **record.details}


@task(name="usage-ingest", max_attempts=1)
def ingest_usage() -> dict:
    """Turn radacct's new counters into per-service usage; close stale sessions; check quotas."""
    return usage.ingest().as_dict()
