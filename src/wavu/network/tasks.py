"""Network jobs (the periodic ones are listed in `wavu/schedule.py`).

`ingest_usage` (every minute) turns accounting into usage and quota events (`network.usage`);
`change_live_session` (queued by the writer's hook after commit) sends CoA / Disconnect-Requests
to the routers of live sessions (`network.coa`).

Every lifecycle event leaves a `RadiusSyncRequest` (`signals.py`) that the workers' drain
(`writer.drain_sync_requests`, in `wavu/schedule.py` DRAINS) takes within a fraction of a second, so
RADIUS follows activations, renewals, expiries, suspensions, plan and credential changes.
`reconcile_radius` repairs whatever was changed behind the services' backs. Both are idempotent and
safe to run side by side.
"""

from wavu.core.tasks import task

from . import writer


@task(name="radius-reconcile", max_attempts=2)
def reconcile_radius() -> dict:
    """Compare every service's RADIUS rows with its projection, repair drift and report it."""
    record = writer.reconcile()
    return {"reconciliation": record.pk, "drift": record.drift_found, **record.details}


@task(name="usage-ingest", max_attempts=1)
def ingest_usage() -> dict:
    """Turn radacct's new counters into per-service usage; close stale sessions; check quotas."""
    from . import usage

    return usage.ingest().as_dict()


@task(name="coa", max_attempts=4, backoff_seconds=15)
def change_live_session(username: str, left_garden: bool = False) -> list[dict]:
    """Send the open sessions of `username` a CoA or a Disconnect for its new rows (`network.coa`).
    A router that does not answer fails the job, which is retried with backoff."""
    from . import coa

    attempts = coa.change_live_session(username, left_garden=left_garden)
    return [{"kind": a.kind, "result": a.result, "nas": a.nas_address} for a in attempts]
