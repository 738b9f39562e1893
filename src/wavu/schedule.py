"""THE list of periodic jobs. `wavu worker` fires each at most once per slot (see `wavu.core.scheduler`).

Add a job with one line: a unique name, the dotted path of a job declared with `wavu.core.tasks.task`,
and either `every=` (an interval dividing a day, aligned to local midnight) or `at=` (daily, local time):

    Periodic("billing-run", "wavu.billing.tasks.billing_run", every=timedelta(hours=1)),
    Periodic("dunning", "wavu.billing.tasks.dunning", at=time(8, 0)),

After downtime only the latest missed slot fires, once. Jobs must be idempotent. `wavu worker` refuses
to start when a path does not import (`validate_schedule`).
"""

from datetime import time, timedelta

from wavu.core.scheduler import Periodic

SCHEDULE: list[Periodic] = [
    # Billing (issue 3). The billing run bills what is due by now, so running it hourly bills a
    # service activated at 14:00 by 15:00 and catches up after downtime.
    Periodic("billing-run", "wavu.billing.tasks.billing_run", every=timedelta(hours=1)),
    Periodic("expiry", "wavu.billing.tasks.process_expiries", every=timedelta(minutes=1)),
    Periodic("dunning", "wavu.billing.tasks.run_dunning", every=timedelta(hours=1)),
    Periodic("reactivation", "wavu.billing.tasks.reactivation_sweep", every=timedelta(minutes=5)),
    Periodic("pause-resume", "wavu.subscriptions.tasks.resume_due_pauses", every=timedelta(minutes=5)),
    Periodic("recover-orphaned-jobs", "wavu.core.tasks.recover_orphaned_jobs_job", every=timedelta(minutes=5)),
    # M-Pesa (issue 4): stored callbacks (C2B, STK, Transaction Status, refunds) that failed or that no
    # worker drained are processed again; STK requests with no answer are queried.
    Periodic("retry-callbacks", "wavu.mpesa.tasks.retry_callbacks", every=timedelta(minutes=1)),
    Periodic("stk-janitor", "wavu.mpesa.tasks.stk_janitor", every=timedelta(seconds=30)),
    Periodic("prune-job-records", "wavu.core.tasks.prune_job_records_job", at=time(3, 30)),
    # RADIUS (issue 5): every service's rows compared with its projection; drift repaired and reported.
    Periodic("radius-reconcile", "wavu.network.tasks.reconcile_radius", every=timedelta(minutes=15)),
    # Usage (issue 5): radacct's counters into per-service usage, stale sessions closed, quotas checked.
    Periodic("usage-ingest", "wavu.network.tasks.ingest_usage", every=timedelta(minutes=1)),
]

# Drains: stored inbound work that every `wavu worker` processes continuously, in batches, as soon as
# it arrives (`wavu.core.tasks.Drainer`): a dotted path to a function that takes one batch and
# returns how many items it took. Each must be safe to run in several workers at once.
DRAINS: list[str] = [
    "wavu.mpesa.services.drain_callbacks",  # M-Pesa hook requests: C2B confirmations, STK and other results
    "wavu.network.writer.drain_sync_requests",  # services whose RADIUS rows must follow a lifecycle change
    "wavu.hotspot.services.drain_first_logins",  # vouchers seen in radacct: start their clock, lock the MAC
]
