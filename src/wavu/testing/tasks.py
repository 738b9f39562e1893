"""Run queued background jobs inside a test, exactly as `wavu worker` would.

    enqueue_on_commit(send_invoice, invoice.pk)
    assert run_queued_tasks() == 1

`run_queued_tasks` drives the worker's own loop (`core.tasks.WavuWorker`, i.e. django_tasks_db's claim
and run code) in batch mode: every job record that is ready now runs, in priority and `run_after` order,
including records that the jobs enqueue while it runs if they are ready; retries scheduled for later
wait until a test travels past their `run_after` and calls it again.
"""

from __future__ import annotations

from unittest import mock

from django.db import connections

from wavu.core.tasks import WavuWorker, drain_once

_WORKER_MODULE = "django_tasks_db.management.commands.db_worker"


def _close_old_connections_outside_transactions(**kwargs) -> None:
    # The worker drops connections that are not in autocommit mode; inside a test's transaction that
    # would throw the test's data away, so only connections outside a transaction are checked.
    for conn in connections.all(initialized_only=True):
        if not conn.in_atomic_block:
            conn.close_if_unusable_or_obsolete()


def run_queued_tasks(max_tasks: int | None = None, *, queue_names: list[str] | None = None) -> int:
    """Drain stored inbound work (as the worker's drainer thread does, `core.tasks.drain_once`) and
    run the job records that are ready (at most `max_tasks`) in this thread, until neither has
    anything left; returns how many jobs ran plus how many stored items were drained."""
    if max_tasks == 0:
        return 0
    jobs = drained_total = 0
    while True:
        drained = drain_once()
        drained_total += drained
        left = None if max_tasks is None else max_tasks - jobs
        if left == 0:
            return jobs + drained_total
        worker = WavuWorker(queue_names=queue_names or ["*"], interval=0, batch=True, max_tasks=left)
        with mock.patch(f"{_WORKER_MODULE}.close_old_connections", _close_old_connections_outside_transactions):
            worker.run()
        jobs += worker.tasks_run
        if not drained and not worker.tasks_run:
            return jobs + drained_total
