"""`wavu worker`: run background jobs and the scheduler of periodic jobs, in one process.

Three threads:
- the main thread runs django_tasks_db's worker loop (`core.tasks.WavuWorker`): claim one ready job
  record (SELECT … FOR UPDATE SKIP LOCKED on PostgreSQL, under the write lock on SQLite), run it,
  record the outcome; sleep `--interval` seconds when the queue is empty;
- a `core.scheduler.Ticker` thread, with its own database connection, writes this worker's heartbeat
  and ticks the scheduler every `--tick` seconds.
- a `core.tasks.Drainer` thread takes stored inbound work (M-Pesa hook requests; the list is
  `wavu.schedule.DRAINS`) in batches as it arrives, polling every `--drain-interval` seconds.
The scheduler runs in a thread rather than between polls so a long job (a billing run) neither delays
periodic jobs nor makes the worker look dead to /healthz and to `recover_orphaned_jobs`.

SIGINT/SIGTERM: the current job finishes, then the process exits (a second signal aborts the job,
which is recorded as failed and retried). The heartbeat row is removed on the way out.

`--once` (alias `--batch`): tick the scheduler once, drain what is stored, run every job that is ready, then exit — for
cron-style deployments and scripts (the heartbeat thread still runs, so a long job is not taken for
a lost one). Any number of `wavu worker` processes may run side by side.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand
from django_tasks_db.management.commands.db_worker import valid_interval, valid_max_tasks

from wavu.core.scheduler import Ticker, validate_schedule
from wavu.core.tasks import Drainer, WavuWorker, drain_once, forget_worker, new_worker_id


class Command(BaseCommand):
    help = "Run background jobs and the periodic-job scheduler until stopped (Ctrl-C / SIGTERM)."

    def add_arguments(self, parser):
        parser.add_argument(
            "--queue-name", default="*", help="queues to take jobs from, comma-separated; * = all (default *)"
        )
        parser.add_argument(
            "--interval", type=valid_interval, default=1.0, help="seconds between polls of an empty queue (default 1)"
        )
        parser.add_argument(
            "--tick",
            type=valid_interval,
            default=15.0,
            help="seconds between scheduler ticks and heartbeats (default 15)",
        )
        parser.add_argument(
            "--once",
            "--batch",
            action="store_true",
            dest="once",
            help="tick the scheduler once, run the jobs that are ready, then exit",
        )
        parser.add_argument(
            "--no-scheduler", action="store_true", help="only run jobs; another worker fires the periodic ones"
        )
        parser.add_argument(
            "--drain-interval",
            type=valid_interval,
            default=0.2,
            help="seconds between looks for stored inbound work when there was none (default 0.2)",
        )
        parser.add_argument("--no-drain", action="store_true", help="do not process stored inbound work")
        parser.add_argument("--max-tasks", type=valid_max_tasks, default=None, help="exit after this many jobs")
        parser.add_argument("--worker-id", default=None, help="unique id of this worker (default: generated)")

    def handle(self, *args, **options):
        run_scheduler = not options["no_scheduler"]
        if run_scheduler:
            validate_schedule()  # refuse to start with a broken registry
        worker_id = options["worker_id"] or new_worker_id()
        queues = options["queue_name"]
        worker = WavuWorker(
            queue_names=queues.split(","),
            interval=options["interval"],
            batch=options["once"],
            max_tasks=options["max_tasks"],
            worker_id=worker_id,
            startup_delay=not options["once"],
        )
        ticker = Ticker(worker_id, tick_seconds=options["tick"], run_scheduler=run_scheduler, queues=queues)
        drainer = None if options["no_drain"] else Drainer(worker_id, interval=options["drain_interval"])
        self.log(
            f"worker {worker_id}: queues {queues}, scheduler {'on' if run_scheduler else 'off'}"
            + (", once" if options["once"] else f", polling every {options['interval']:g} s")
        )
        try:
            if options["once"]:
                fired = ticker.tick_once()
                if fired:
                    self.log(f"fired: {', '.join(fired)}")
                # keep the heartbeat fresh during a long job, or it would be taken for a lost one
                ticker = Ticker(worker_id, tick_seconds=options["tick"], run_scheduler=False, queues=queues)
                ticker.start()
                if drainer is not None:
                    drained = drain_once()
                    if drained:
                        self.log(f"drained {drained} stored item(s)")
                worker.run()
            else:
                ticker.start()
                if drainer is not None:
                    drainer.start()
                worker.configure_signals()
                try:
                    worker.run()
                finally:
                    worker.reset_signals()
        finally:
            ticker.stop()
            if drainer is not None:
                drainer.stop()
            forget_worker(worker_id)
            self.log(f"worker {worker_id} stopped after {worker.tasks_run} job(s)")

    def log(self, message: str) -> None:
        self.stdout.write(f"[worker] {message}")
        self.stdout.flush()
