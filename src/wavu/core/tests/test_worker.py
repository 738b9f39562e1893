"""`wavu worker` runs queued jobs and the scheduler, reports its liveness to /healthz, stops cleanly on
SIGTERM, and on PostgreSQL any number of workers run each job exactly once."""

import datetime as dt
import os
import signal
import sqlite3
import subprocess
import sys
import time
from io import StringIO

import pytest
import time_machine
from django.core.management import call_command
from django_tasks import TaskResultStatus
from django_tasks_db.models import DBTaskResult

from wavu.core.models import ScheduledRun, WorkerHeartbeat
from wavu.core.tasks import WavuWorker, beat, task
from wavu.schedule import SCHEDULE
from wavu.testing.concurrency import side_by_side

NOW = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)
RACE_EPOCH = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
SEEN: list = []


@task(name="send-receipt")
def send_receipt(payment_id: int) -> None:
    SEEN.append(payment_id)


@task(max_attempts=1)
def count_run(n: int) -> None:
    """Inserts a row under a unique constraint: a second run of the same job would fail loudly."""
    ScheduledRun.objects.create(name="race", slot=RACE_EPOCH + dt.timedelta(seconds=n), fired_at=RACE_EPOCH)
    time.sleep(0.002)  # long enough for the two workers to interleave


@pytest.fixture(autouse=True)
def _clear_seen():
    SEEN.clear()


@pytest.mark.django_db(transaction=True)
def test_wavu_worker_once_fires_the_schedule_runs_the_queued_jobs_and_exits():
    send_receipt.enqueue(11)
    send_receipt.enqueue(12)
    out = StringIO()

    call_command("worker", "--once", stdout=out)

    assert SEEN == [11, 12]
    assert set(ScheduledRun.objects.values_list("name", flat=True)) == {p.name for p in SCHEDULE}
    assert DBTaskResult.objects.filter(status=TaskResultStatus.SUCCESSFUL).count() == 2 + len(SCHEDULE)
    assert not DBTaskResult.objects.exclude(status=TaskResultStatus.SUCCESSFUL).exists()
    assert not WorkerHeartbeat.objects.exists()  # removed on the way out
    assert f"stopped after {2 + len(SCHEDULE)} job(s)" in out.getvalue()


@pytest.mark.django_db(transaction=True)
def test_wavu_worker_without_the_scheduler_only_runs_jobs():
    send_receipt.enqueue(11)
    call_command("worker", "--batch", "--no-scheduler", stdout=StringIO())
    assert SEEN == [11]
    assert not ScheduledRun.objects.exists()


def test_health_check_reports_no_worker_then_a_live_one_then_a_stale_one(db, client):
    assert client.get("/healthz").json() == {
        "status": "ok",
        "database": "ok",
        "worker": "none",
        "mpesa_callbacks_needing_action": 0,
    }
    with time_machine.travel(NOW, tick=False) as traveller:
        beat("wavu-test-1")
        assert client.get("/healthz").json()["worker"] == "ok"
        traveller.shift(dt.timedelta(minutes=3))
        response = client.get("/healthz")
    assert response.status_code == 200  # the web process is fine; the worker field says what is wrong
    assert response.json() == {"status": "ok", "database": "ok", "worker": "stale", "mpesa_callbacks_needing_action": 0}


def _sqlite_rows(path, query):
    with sqlite3.connect(path, timeout=20) as db:
        return db.execute(query).fetchall()


@pytest.mark.wall_clock  # the worker is another process, on the real clock
def test_a_worker_process_beats_runs_jobs_and_stops_cleanly_on_sigterm(tmp_path):
    """A real `wavu worker` on a SQLite file, with the web-style writes of another process beside it.

    The 40 queued jobs run once each, and every periodic job once per slot: a run that crosses a slot
    boundary (the STK janitor's every 30 s) fires that job again, once."""
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env |= {"WAVU_VAR_DIR": str(tmp_path), "DJANGO_SETTINGS_MODULE": "wavu.settings"}
    wavu = [sys.executable, "-m", "wavu.cli"]
    subprocess.run([*wavu, "migrate", "-v0"], env=env, check=True, timeout=120)
    enqueue = "from wavu.core.tests.test_worker import send_receipt\nfor i in range(20): send_receipt.enqueue(i)"
    subprocess.run([*wavu, "shell", "-c", enqueue], env=env, check=True, timeout=60, capture_output=True)
    database = tmp_path / "wavu.sqlite3"

    worker = subprocess.Popen(
        [*wavu, "worker", "--tick", "0.2", "--interval", "0.05"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        # While it works, another process keeps writing (as the web server would): no "database is locked".
        subprocess.run([*wavu, "shell", "-c", enqueue], env=env, check=True, timeout=60, capture_output=True)
        deadline = time.monotonic() + 60
        query = "SELECT COUNT(*) FROM django_tasks_database_dbtaskresult WHERE status = 'SUCCESSFUL'"
        while time.monotonic() < deadline and _sqlite_rows(database, query)[0][0] < 40 + len(SCHEDULE):
            time.sleep(0.1)
        assert _sqlite_rows(database, "SELECT COUNT(*) FROM core_workerheartbeat") == [(1,)]
        worker.send_signal(signal.SIGTERM)
        output, _ = worker.communicate(timeout=30)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()

    assert worker.returncode == 0, output
    fired = _sqlite_rows(database, "SELECT name, COUNT(*) FROM core_scheduledrun GROUP BY name")
    assert {name for name, _ in fired} == {p.name for p in SCHEDULE}
    assert _sqlite_rows(database, query) == [(40 + sum(count for _, count in fired),)]
    unfinished = "SELECT COUNT(*) FROM django_tasks_database_dbtaskresult WHERE status != 'SUCCESSFUL'"
    assert _sqlite_rows(database, unfinished) == [(0,)]
    assert _sqlite_rows(database, "SELECT COUNT(*) FROM core_workerheartbeat") == [(0,)]
    assert "database is locked" not in output
    assert "stopped after" in output


@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)
def test_two_workers_on_postgresql_drain_200_jobs_and_run_each_exactly_once():
    jobs = 200
    for n in range(jobs):
        count_run.enqueue(n)
    workers = [WavuWorker(batch=True, interval=0, worker_id=f"wavu-race-{i}") for i in range(2)]
    _, errors = side_by_side(*(worker.run for worker in workers), timeout=120)

    assert errors == []
    assert ScheduledRun.objects.filter(name="race").count() == jobs
    assert DBTaskResult.objects.filter(status=TaskResultStatus.SUCCESSFUL).count() == jobs
    assert not DBTaskResult.objects.exclude(status=TaskResultStatus.SUCCESSFUL).exists()
    assert all(len(ids) == 1 for ids in DBTaskResult.objects.values_list("worker_ids", flat=True))
    assert sum(w.tasks_run for w in workers) == jobs
    assert all(w.tasks_run > 0 for w in workers), [w.tasks_run for w in workers]  # really side by side
