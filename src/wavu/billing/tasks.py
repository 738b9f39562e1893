"""Billing's background jobs: thin wrappers that call services (see `wavu/schedule.py` for when).

Each job is idempotent, so a double fire, a retry or two workers change nothing twice: the billing
run bills only what is still due (one invoice per service and period), expiries re-check each
service under its lock, dunning writes each notice once (unique per invoice and step), and
reactivation only resumes what is still suspended for a debt that is now clear.
"""

from __future__ import annotations

import datetime as dt

from wavu.core.tasks import enqueue_on_commit, task

from . import dunning, prepaid, runs


def _summary(obj) -> dict:
    """A JSON-ready copy of a service's summary dataclass (kept on the job record)."""
    out = {}
    for key, value in vars(obj).items():
        if isinstance(value, int | str | float | bool) or value is None:
            out[key] = value
        elif isinstance(value, dt.date | dt.datetime):
            out[key] = value.isoformat()
        elif isinstance(value, list | tuple) and all(isinstance(v, int | str) for v in value):
            out[key] = list(value)
        else:
            out[key] = str(value)
    return out


@task(name="billing-run", max_attempts=5)
def billing_run(run_date: str | None = None) -> dict:
    """Bill every postpaid service due by the end of `run_date` (ISO date; default today)."""
    summary = runs.run_billing(dt.date.fromisoformat(run_date) if run_date else None)
    summary.run = None
    return _summary(summary)


@task(name="expiry")
def process_expiries() -> dict:
    """Renew prepaid and hotspot services at expiry from credit, or let them expire."""
    return _summary(prepaid.process_expiries())


@task(name="dunning")
def run_dunning() -> dict:
    """Payment reminders at their offsets from the due date; suspension after the grace period."""
    return dunning.run_dunning().as_dict()


@task(name="reactivation")
def reactivation_sweep() -> int:
    """Resume services suspended for a debt that has since been cleared (whatever cleared it)."""
    return len(dunning.reactivation_sweep())


@task(name="after-payment")
def after_payment(customer_id: int) -> dict:
    """Money came in for `customer_id`: reconnect what the payment cleared, then let the rest of the
    credit extend prepaid services. Enqueued after the payment commits."""
    resumed = dunning.reactivate_if_cleared(customer_id)
    purchases = prepaid.apply_credit_to_prepaid(customer_id)
    return {"resumed": [s.pk for s in resumed], "renewed": [p.subscription.pk for p in purchases]}


def enqueue_after_payment(sender, *, customer_id: int, **kwargs) -> None:
    """Receiver of `payments.signals.money_in` (connected in `BillingConfig.ready`): the after-payment
    job runs once the payment's transaction commits (one job per customer and transaction), never for
    a payment that rolls back. Payments sit below billing's automation, so they announce and billing
    enqueues."""
    enqueue_on_commit(after_payment, customer_id)
