"""The scheduler: fires the periodic jobs declared in `wavu/schedule.py`, each slot at most once.

A periodic job's **slot** is the start of the interval `now` falls in: for `every=timedelta(hours=1)`
the current hour, aligned to the ISP's local midnight (so an interval must divide a day); for
`at=time(2, 0)` today's 02:00 local time once it has passed, yesterday's before.

A tick fires a job by inserting `ScheduledRun(name, slot)` — unique on (name, slot) — in the same
transaction that enqueues the job. The database decides: however many schedulers tick the same slot,
on however many machines, one insert wins and the others' transactions roll back with their enqueue
(no check-then-insert, no clock agreement needed between schedulers). Consequences:

- a slot fires at most once, across restarts and any number of workers;
- after downtime only the current (latest) slot fires, once: missed slots are not replayed, so a job
  must catch up by itself (the services work from "everything due by now", not "the last hour");
- a job fires up to one tick late (`wavu worker --tick`, default 15 s), later if the queue is busy;
- the job itself runs once per record (the worker's claim), and is retried on failure, so it can
  still run more than once for a slot (a retry after partial work): jobs must be idempotent.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db import IntegrityError, close_old_connections, connections, transaction
from django.utils import timezone
from django.utils.module_loading import import_string
from django_tasks.base import Task
from django_tasks.utils import normalize_json

from . import clock
from .models import ScheduledRun

logger = logging.getLogger("wavu.scheduler")

DAY = dt.timedelta(days=1)


@dataclass(frozen=True)
class Periodic:
    """One periodic job: `Periodic("billing-run", "wavu.billing.tasks.billing_run", every=timedelta(hours=1))`
    or `Periodic("prune", "wavu.core.tasks.prune_job_records_job", at=time(3, 30))` (daily, local time).

    `task` is the dotted path of a job declared with `wavu.core.tasks.task`; `kwargs` (JSON-ready)
    are passed to it on every firing.
    """

    name: str
    task: str
    every: dt.timedelta | None = None
    at: dt.time | None = None
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if not self.name or len(self.name) > 80:
            raise ValueError("a periodic job needs a name of 1 to 80 characters")
        if (self.every is None) == (self.at is None):
            raise ValueError(f"{self.name}: give exactly one of every= (an interval) or at= (daily at a local time)")
        if self.every is not None:
            seconds = self.every.total_seconds()
            if seconds < 1 or seconds != int(seconds) or DAY.total_seconds() % seconds:
                raise ValueError(f"{self.name}: every= must be whole seconds dividing a day (60 s, 15 min, 1 h…)")
        if self.at is not None and self.at.tzinfo is not None:
            raise ValueError(f"{self.name}: at= is a local time of day without a time zone")

    def slot(self, now: dt.datetime) -> dt.datetime:
        """The start (UTC) of the slot that `now` falls in."""
        local = clock.local(now)
        if self.at is not None:
            fire = timezone.make_aware(dt.datetime.combine(local.date(), self.at))
            if fire > now:
                fire = timezone.make_aware(dt.datetime.combine(local.date() - DAY, self.at))
            return fire.astimezone(dt.UTC)
        day_start = clock.start_of_day(local.date()).astimezone(dt.UTC)
        return day_start + ((now - day_start) // self.every) * self.every


def load_schedule() -> list[Periodic]:
    """The registry: `wavu.schedule.SCHEDULE`."""
    from wavu.schedule import SCHEDULE

    return list(SCHEDULE)


def validate_schedule(schedule: Sequence[Periodic] | None = None) -> list[Periodic]:
    """Check the registry at start-up: unique names, every path imports a Task, kwargs are JSON-ready.

    Raises ImproperlyConfigured naming every problem; returns the schedule when it is sound.
    """
    schedule = load_schedule() if schedule is None else list(schedule)
    problems = []
    seen = set()
    for periodic in schedule:
        if not isinstance(periodic, Periodic):
            problems.append(f"{periodic!r} is not a Periodic")
            continue
        if periodic.name in seen:
            problems.append(f"{periodic.name}: declared twice")
        seen.add(periodic.name)
        try:
            job = import_string(periodic.task)
        except ImportError as exc:
            problems.append(f"{periodic.name}: {periodic.task} does not import ({exc})")
            continue
        if not isinstance(job, Task):
            problems.append(f"{periodic.name}: {periodic.task} is not a task (declare it with wavu.core.tasks.task)")
        try:
            normalize_json(dict(periodic.kwargs))
        except (TypeError, ValueError) as exc:
            problems.append(f"{periodic.name}: kwargs are not JSON-ready ({exc})")
    if problems:
        raise ImproperlyConfigured("wavu/schedule.py: " + "; ".join(problems))
    return schedule


def fire(periodic: Periodic, slot: dt.datetime, *, now: dt.datetime | None = None) -> bool:
    """Enqueue `periodic`'s job for `slot` unless that slot has fired; True when this call fired it.

    One transaction: the job record, then the unique ScheduledRun row. A concurrent or earlier firing of
    the slot makes the insert fail, which rolls the enqueue back. On PostgreSQL a second scheduler's
    insert waits for the first transaction and then fails; on SQLite writers are serialised.
    """
    job = import_string(periodic.task)
    try:
        with transaction.atomic():
            result = job.enqueue(**periodic.kwargs)
            ScheduledRun.objects.create(
                name=periodic.name, slot=slot, fired_at=now or clock.now(), task_result_id=str(result.id)
            )
    except IntegrityError:
        return False
    logger.info("fired %s for %s", periodic.name, slot.isoformat())
    return True


def tick(schedule: Sequence[Periodic] | None = None, *, now: dt.datetime | None = None) -> list[str]:
    """Fire every periodic job whose current slot has not fired yet; returns the names fired.

    Safe to call from any number of processes at once and as often as wanted. A job that cannot be
    fired (its module is broken) is logged and does not stop the others.
    """
    now = now or clock.now()
    fired = []
    for periodic in load_schedule() if schedule is None else schedule:
        try:
            if fire(periodic, periodic.slot(now), now=now):
                fired.append(periodic.name)
        except Exception:
            logger.exception("could not fire periodic job %s", periodic.name)
    return fired


class Ticker(threading.Thread):
    """The worker's second thread: every `tick_seconds`, refresh the heartbeat and tick the scheduler.

    It has its own database connection (Django connections are per thread) and closes it on exit. It
    runs beside the task loop, so the heartbeat stays fresh and periodic jobs keep being enqueued
    while the main thread runs a long job. Errors are logged and the next tick tries again.
    """

    def __init__(
        self,
        worker_id: str,
        *,
        tick_seconds: float = 15.0,
        run_scheduler: bool = True,
        queues: str = "*",
        schedule: Sequence[Periodic] | None = None,
    ):
        super().__init__(name=f"ticker-{worker_id}", daemon=True)
        self.worker_id = worker_id
        self.tick_seconds = tick_seconds
        self.run_scheduler = run_scheduler
        self.queues = queues
        self.schedule = schedule
        self.stopped = threading.Event()

    def run(self) -> None:
        try:
            while not self.stopped.is_set():
                self.tick_once()
                self.stopped.wait(self.tick_seconds)
        finally:
            connections.close_all()

    def tick_once(self) -> list[str]:
        from .tasks import beat

        fired: list[str] = []
        close_old_connections()
        try:
            beat(self.worker_id, queues=self.queues, runs_scheduler=self.run_scheduler)
        except Exception:
            logger.exception("worker %s could not write its heartbeat", self.worker_id)
        if self.run_scheduler:
            fired = tick(self.schedule)
        close_old_connections()
        return fired

    def stop(self, timeout: float = 30.0) -> None:
        self.stopped.set()
        if self.is_alive():
            self.join(timeout)
