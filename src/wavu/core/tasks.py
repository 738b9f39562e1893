"""Background jobs: Django's Tasks API (`django_tasks`) on the database backend, with retries.

Declare a job with `@task` (same interface as `django_tasks.task`, plus retry settings) in an
app's `tasks.py`; the body calls a service and takes JSON-ready arguments (primary keys, ISO dates):

    from wavu.core.tasks import task

    @task(max_attempts=5)
    def send_invoice(invoice_id: int) -> None:
        billing.services.send_invoice(invoice_id)

    send_invoice.enqueue(invoice.pk)                    # a row in the job table, now
    enqueue_on_commit(send_invoice, invoice.pk)         # … only once the caller's transaction commits

Guarantees:
- A job runs under `audit.acting_as("job:<name>")`: audit rows and lifecycle events name the job.
- A job that raises is re-enqueued as a fresh record, `run_after` now + backoff (base × 2^(attempt−1),
  capped), until `max_attempts`; the attempt number travels in the reserved keyword `_attempt`. Each
  failed attempt stays a FAILED record with its traceback (admin: Tasks Database Backend → Task results);
  the last failure is logged at ERROR. `PermanentFailure` gives up at once. A retried job may run twice
  (a crash after its work, before its record is marked): every job must be idempotent.
- Jobs left RUNNING by a worker that died (no heartbeat for `WORKER_STALE_SECONDS`) are failed and
  retried the same way by `recover_orphaned_jobs`, a periodic job in `wavu/schedule.py`.
- The worker (`WavuWorker`, `wavu worker`) is django_tasks_db's `Worker`: rows are claimed with
  SELECT … FOR UPDATE SKIP LOCKED (PostgreSQL) or under SQLite's write lock, so two workers never
  run the same record.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils.crypto import get_random_string
from django.utils.module_loading import import_string
from django_tasks import DEFAULT_TASK_BACKEND_ALIAS, DEFAULT_TASK_QUEUE_NAME, TaskResultStatus
from django_tasks.base import DEFAULT_TASK_PRIORITY, Task
from django_tasks_db.management.commands.db_worker import Worker
from django_tasks_db.models import DBTaskResult

from . import audit, clock
from .models import AuditEvent, ScheduledRun, WorkerHeartbeat

logger = logging.getLogger("wavu.tasks")

ATTEMPT_KWARG = "_attempt"
DEFAULT_MAX_ATTEMPTS = 5
DEFAULT_BACKOFF_SECONDS = 30.0
DEFAULT_MAX_BACKOFF_SECONDS = 3600.0
WORKER_ID_PREFIX = "wavu-"


class PermanentFailure(Exception):
    """Raise from a job to fail it without further attempts (retrying cannot help)."""


class WorkerLost(Exception):
    """Recorded on a job that was RUNNING on a worker that stopped sending heartbeats."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Job(Task):
    """A `django_tasks` Task with Wavu's retries and audit actor (see the module docstring)."""

    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    backoff_seconds: float = DEFAULT_BACKOFF_SECONDS
    max_backoff_seconds: float = DEFAULT_MAX_BACKOFF_SECONDS
    label: str = ""

    @property
    def actor_label(self) -> str:
        return f"job:{self.label or self.func.__name__.replace('_', '-')}"

    def retry_delay(self, attempt: int) -> dt.timedelta:
        """The wait before attempt `attempt + 1`: base × 2^(attempt − 1), at most `max_backoff_seconds`."""
        seconds = min(self.backoff_seconds * 2 ** (attempt - 1), self.max_backoff_seconds)
        return dt.timedelta(seconds=seconds)

    def call(self, *args: Any, **kwargs: Any) -> Any:
        """Run the job body (the worker calls this); on failure enqueue the next attempt, then re-raise."""
        attempt = int(kwargs.pop(ATTEMPT_KWARG, 1))
        try:
            with audit.acting_as(self.actor_label):
                return Task.call(self, *args, **kwargs)
        except BaseException as exc:
            job_args = list(args[1:] if self.takes_context else args)
            self._after_failure(exc, attempt, job_args, kwargs)
            raise

    def _after_failure(self, exc: BaseException, attempt: int, args: list, kwargs: dict) -> None:
        if isinstance(exc, PermanentFailure) or attempt >= self.max_attempts:
            logger.error(
                "job %s gave up after attempt %d/%d: %r",
                self.module_path,
                attempt,
                self.max_attempts,
                exc,
                exc_info=exc,
            )
            return
        delay = self.retry_delay(attempt)
        try:
            self.using(run_after=clock.now() + delay).enqueue(*args, **{**kwargs, ATTEMPT_KWARG: attempt + 1})
        except Exception:  # noqa: BLE001 - the original failure is what the worker must record
            logger.exception("job %s failed and its retry could not be enqueued", self.module_path)
            return
        logger.warning(
            "job %s attempt %d/%d failed (%r); retrying in %d s",
            self.module_path,
            attempt,
            self.max_attempts,
            exc,
            delay.total_seconds(),
        )


def task(
    function: Callable | None = None,
    *,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    backoff_seconds: float = DEFAULT_BACKOFF_SECONDS,
    max_backoff_seconds: float = DEFAULT_MAX_BACKOFF_SECONDS,
    name: str = "",
    priority: int = DEFAULT_TASK_PRIORITY,
    queue_name: str = DEFAULT_TASK_QUEUE_NAME,
    backend: str = DEFAULT_TASK_BACKEND_ALIAS,
    takes_context: bool = False,
):
    """Declare a Wavu job: `@task` or `@task(max_attempts=3, name="billing-run")`; returns a `Job`.

    `name` is the audit actor (`job:<name>`; default: the function name with hyphens). The function
    must live at module level; its arguments must be JSON-ready and must not include `_attempt`.
    """
    if max_attempts < 1:
        raise ValueError("max_attempts must be at least 1")

    def wrap(func: Callable) -> Job:
        return Job(
            func=func,
            priority=priority,
            queue_name=queue_name,
            backend=backend,
            takes_context=takes_context,
            run_after=None,
            max_attempts=max_attempts,
            backoff_seconds=backoff_seconds,
            max_backoff_seconds=max_backoff_seconds,
            label=name,
        )

    return wrap(function) if function is not None else wrap


def enqueue_on_commit(job: Task, *args: Any, **kwargs: Any) -> None:
    """Enqueue `job` once the current transaction commits; never if it rolls back.

    Outside a transaction it is enqueued at once. The same job with the same arguments asked for
    twice in one transaction is enqueued once (jobs are idempotent, so one run does the work of
    both: a transaction that records ten payments of one customer queues one after-payment job).
    An enqueue that fails after the commit is logged (ERROR, with the job and its arguments) and
    does not disturb the caller or other on-commit hooks.
    """
    key = (job.module_path, repr(args), repr(sorted(kwargs.items())))
    connection = transaction.get_connection()
    # Only a copy registered in a savepoint that encloses this call (or outside any) stands in for
    # this one: a copy inside a sibling savepoint could still be rolled back on its own.
    open_savepoints = set(connection.savepoint_ids)
    if connection.in_atomic_block and any(
        getattr(func, "wavu_job_key", None) == key and set(sids) <= open_savepoints
        for sids, func, _robust in connection.run_on_commit
    ):
        return

    def enqueue() -> None:
        try:
            job.enqueue(*args, **kwargs)
        except Exception:
            logger.exception("could not enqueue %s args=%r kwargs=%r after commit", job.module_path, args, kwargs)

    enqueue.wavu_job_key = key
    transaction.on_commit(enqueue, robust=True)


# --- job records -----------------------------------------------------------------------------------


def attempt_of(result: DBTaskResult) -> int:
    """The attempt number a job record ran (or will run) as."""
    return int((result.args_kwargs or {}).get("kwargs", {}).get(ATTEMPT_KWARG, 1))


def gave_up(result: DBTaskResult) -> bool:
    """True for a FAILED record that no automatic retry follows (last attempt, permanent failure, not a Job)."""
    if result.status != TaskResultStatus.FAILED:
        return False
    if result.exception_class_path == f"{PermanentFailure.__module__}.{PermanentFailure.__qualname__}":
        return True
    try:
        job = import_string(result.task_path)
    except ImportError:
        return True
    return not isinstance(job, Job) or attempt_of(result) >= job.max_attempts


def retry_now(result: DBTaskResult) -> DBTaskResult:
    """Enqueue a fresh copy (attempt 1, runs at once) of a job that gave up; audited on the failed record.

    Refuses (ValueError) a record that did not fail or that an automatic retry still follows, so a
    job is never made to run twice side by side. Not idempotent: each call enqueues one copy.
    """
    if not gave_up(result):
        raise ValueError("only a failed job that gave up can be retried by hand")
    job = dataclasses.replace(result.task, run_after=None)
    kwargs = {k: v for k, v in result.args_kwargs.get("kwargs", {}).items() if k != ATTEMPT_KWARG}
    with transaction.atomic():
        copy = job.enqueue(*result.args_kwargs.get("args", []), **kwargs)
        audit.record(
            result, AuditEvent.Action.ACTION, after={"retry": str(copy.id)}, verb="retry_job", reason=result.task_path
        )
    return copy.db_result


# --- the worker ------------------------------------------------------------------------------------


def new_worker_id() -> str:
    """A worker id unique across machines: wavu-<host>-<pid>-<random>, at most 64 characters."""
    host = socket.gethostname().split(".")[0][:30]
    return f"{WORKER_ID_PREFIX}{host}-{os.getpid()}-{get_random_string(8)}"[:64]


class WavuWorker(Worker):
    """django_tasks_db's `Worker` (claim with SKIP LOCKED, run, record), unchanged except for defaults."""

    def __init__(
        self,
        *,
        queue_names: list[str] | None = None,
        interval: float = 1.0,
        batch: bool = False,
        max_tasks: int | None = None,
        worker_id: str | None = None,
        startup_delay: bool = False,
        backend_name: str = DEFAULT_TASK_BACKEND_ALIAS,
    ):
        super().__init__(
            queue_names=queue_names or ["*"],
            interval=interval,
            batch=batch,
            backend_name=backend_name,
            startup_delay=startup_delay,
            max_tasks=max_tasks,
            worker_id=worker_id or new_worker_id(),
            excluded_queue_names=[],
        )

    @property
    def tasks_run(self) -> int:
        return self._run_tasks


# --- drains: inbound work that request handlers stored, processed in batches by the workers ------------


def drains() -> list[Callable[[], int]]:
    """The drain functions listed in `wavu.schedule.DRAINS`: each processes a batch of stored work
    (e.g. M-Pesa callbacks) and returns how many items it took (0: nothing waiting)."""
    from wavu.schedule import DRAINS

    return [import_string(path) for path in DRAINS]


def run_drain(drain: Callable[[], int]) -> int:
    """One round of one drain, acting as `job:<function name>` (e.g. job:drain-callbacks)."""
    with audit.acting_as(f"job:{drain.__name__.replace('_', '-')}"):
        return drain()


def drain_once() -> int:
    """Run every drain until none has anything waiting; returns how many items were taken."""
    total = 0
    for drain in drains():
        while taken := run_drain(drain):
            total += taken
    return total


class Drainer(threading.Thread):
    """The worker's third thread: runs the drains in a loop, sleeping `interval` seconds whenever none
    had work. Stored work is therefore processed within about `interval` of its arrival, in batches
    as large as what arrived meanwhile, without one job record per item. Own database connection;
    errors are logged and the next round tries again (what failed stays stored)."""

    def __init__(self, worker_id: str, *, interval: float = 0.2):
        super().__init__(name=f"drainer-{worker_id}", daemon=True)
        self.interval = interval
        self.stopped = threading.Event()

    def run(self) -> None:
        from django.db import close_old_connections, connections

        functions = drains()
        try:
            while not self.stopped.is_set():
                close_old_connections()
                taken = 0
                for drain in functions:
                    try:
                        taken += run_drain(drain)
                    except Exception:
                        logger.exception("drain %s failed; trying again in a moment", drain.__name__)
                        self.stopped.wait(max(self.interval, 1.0))
                if not taken:
                    self.stopped.wait(self.interval)
        finally:
            connections.close_all()

    def stop(self, timeout: float = 30.0) -> None:
        self.stopped.set()
        if self.is_alive():
            self.join(timeout)


def beat(worker_id: str, *, queues: str = "*", runs_scheduler: bool = True, now: dt.datetime | None = None) -> None:
    """Create or refresh this worker's heartbeat row (one short write)."""
    now = now or clock.now()
    updated = WorkerHeartbeat.objects.filter(worker_id=worker_id).update(last_seen_at=now)
    if not updated:
        WorkerHeartbeat.objects.update_or_create(
            worker_id=worker_id,
            defaults={
                "hostname": socket.gethostname()[:255],
                "pid": os.getpid(),
                "queues": queues[:200],
                "runs_scheduler": runs_scheduler,
                "started_at": now,
                "last_seen_at": now,
            },
        )


def forget_worker(worker_id: str) -> None:
    """Remove the heartbeat row of a worker that stopped cleanly."""
    WorkerHeartbeat.objects.filter(worker_id=worker_id).delete()


def stale_before(now: dt.datetime | None = None) -> dt.datetime:
    return (now or clock.now()) - dt.timedelta(seconds=settings.WAVU["WORKER_STALE_SECONDS"])


def worker_health(now: dt.datetime | None = None) -> str:
    """Worker liveness for /healthz: "ok" (a fresh heartbeat), "stale" (heartbeats, none fresh) or "none"."""
    beats = WorkerHeartbeat.objects.all()
    if beats.filter(last_seen_at__gte=stale_before(now)).exists():
        return "ok"
    return "stale" if beats.exists() else "none"


# --- core jobs -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PruneSummary:
    task_results: int
    scheduled_runs: int
    heartbeats: int


def prune_job_records(now: dt.datetime | None = None) -> PruneSummary:
    """Delete finished job records older than WAVU["TASK_RESULTS_KEEP_DAYS"] (successful) and
    WAVU["FAILED_TASK_RESULTS_KEEP_DAYS"] (failed), scheduler slots older than the longer of the two,
    and heartbeats of workers dead for a day. Idempotent; never touches READY or RUNNING jobs, and an
    old slot row is never needed again (the scheduler only fires the current slot).
    """
    now = now or clock.now()
    keep = dt.timedelta(days=settings.WAVU["TASK_RESULTS_KEEP_DAYS"])
    keep_failed = dt.timedelta(days=settings.WAVU["FAILED_TASK_RESULTS_KEEP_DAYS"])
    results, _ = (
        DBTaskResult.objects.finished()
        .filter(
            Q(status=TaskResultStatus.SUCCESSFUL, finished_at__lt=now - keep)
            | Q(status=TaskResultStatus.FAILED, finished_at__lt=now - keep_failed)
        )
        .delete()
    )
    runs, _ = ScheduledRun.objects.filter(slot__lt=now - max(keep, keep_failed)).delete()
    beats, _ = WorkerHeartbeat.objects.filter(last_seen_at__lt=now - dt.timedelta(days=1)).delete()
    return PruneSummary(task_results=results, scheduled_runs=runs, heartbeats=beats)


def recover_orphaned_jobs(now: dt.datetime | None = None) -> int:
    """Fail, and retry as a failure would be, every job RUNNING on a `wavu worker` whose heartbeat is
    gone or older than WAVU["WORKER_STALE_SECONDS"] (the process was killed or the machine died).

    A live worker refreshes its heartbeat from a separate thread even during a long job, so its jobs
    are left alone; jobs claimed by other workers (no `wavu-` id) are never touched. Each record is
    re-read under a row lock, so concurrent recoveries fail and retry a job once. Returns how many.
    """
    now = now or clock.now()
    alive = set(WorkerHeartbeat.objects.filter(last_seen_at__gte=stale_before(now)).values_list("worker_id", flat=True))
    recovered = 0
    candidates = DBTaskResult.objects.running().filter(started_at__lt=stale_before(now)).values_list("id", "worker_ids")
    for pk, worker_ids in list(candidates):
        owner = worker_ids[-1] if worker_ids else ""
        if not owner.startswith(WORKER_ID_PREFIX) or owner in alive:
            continue
        with transaction.atomic():
            result = DBTaskResult.objects.select_for_update().filter(pk=pk, status=TaskResultStatus.RUNNING).first()
            if result is None:
                continue
            error = WorkerLost(f"worker {owner} stopped while running this job")
            result.set_failed(error)
            job = _job_or_none(result)
            if job is not None:
                kwargs = dict(result.args_kwargs.get("kwargs", {}))
                job._after_failure(error, int(kwargs.pop(ATTEMPT_KWARG, 1)), result.args_kwargs.get("args", []), kwargs)
            else:
                logger.error("job %s was lost with worker %s", result.task_path, owner)
        recovered += 1
    return recovered


def _job_or_none(result: DBTaskResult) -> Job | None:
    try:
        job = result.task
    except Exception:  # noqa: BLE001 - an unimportable job cannot be retried; it stays failed
        return None
    return job if isinstance(job, Job) else None


@task(name="prune-job-records")
def prune_job_records_job() -> dict:
    return dataclasses.asdict(prune_job_records())


@task(name="recover-orphaned-jobs")
def recover_orphaned_jobs_job() -> int:
    return recover_orphaned_jobs()
