"""The scheduler fires each periodic job once per slot, however many schedulers tick and however often;
after downtime it fires the latest missed slot once, not every slot it missed."""

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.core.exceptions import ImproperlyConfigured
from django_tasks_db.models import DBTaskResult

from wavu.core.models import ScheduledRun
from wavu.core.scheduler import Periodic, Ticker, fire, tick, validate_schedule
from wavu.core.tasks import Job, task
from wavu.schedule import SCHEDULE
from wavu.testing.concurrency import race
from wavu.testing.tasks import run_queued_tasks

NAIROBI = ZoneInfo("Africa/Nairobi")
RUNS: list = []


@task(name="billing-run")
def billing_run(batch: int = 0) -> None:
    RUNS.append(batch)


HOURLY = Periodic("billing-run", "wavu.core.tests.test_scheduler.billing_run", every=dt.timedelta(hours=1))
DAILY_2AM = Periodic("dunning", "wavu.core.tests.test_scheduler.billing_run", at=dt.time(2, 0), kwargs={"batch": 2})


def nairobi(*args) -> dt.datetime:
    return dt.datetime(*args, tzinfo=NAIROBI)


@pytest.fixture(autouse=True)
def _clear_runs():
    RUNS.clear()


# --- slots -----------------------------------------------------------------------------------------


def test_an_interval_job_s_slot_is_the_interval_it_is_in_aligned_to_local_midnight():
    every_15 = Periodic("x", "p", every=dt.timedelta(minutes=15))
    assert HOURLY.slot(nairobi(2026, 3, 2, 10, 59, 59)) == nairobi(2026, 3, 2, 10, 0)
    assert HOURLY.slot(nairobi(2026, 3, 2, 11, 0)) == nairobi(2026, 3, 2, 11, 0)
    assert every_15.slot(nairobi(2026, 3, 2, 0, 44)) == nairobi(2026, 3, 2, 0, 30)
    assert Periodic("d", "p", every=dt.timedelta(days=1)).slot(nairobi(2026, 3, 2, 1, 0)) == nairobi(2026, 3, 2)
    assert HOURLY.slot(nairobi(2026, 3, 2, 10, 30)).tzinfo == dt.UTC


def test_a_daily_job_s_slot_is_today_s_time_once_it_has_passed_and_yesterday_s_before():
    assert DAILY_2AM.slot(nairobi(2026, 3, 2, 1, 59)) == nairobi(2026, 3, 1, 2, 0)
    assert DAILY_2AM.slot(nairobi(2026, 3, 2, 2, 0)) == nairobi(2026, 3, 2, 2, 0)
    assert DAILY_2AM.slot(nairobi(2026, 3, 2, 23, 0)) == nairobi(2026, 3, 2, 2, 0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"every": dt.timedelta(hours=1), "at": dt.time(2)},
        {"every": dt.timedelta(minutes=7)},
        {"every": dt.timedelta(days=2)},
        {"every": dt.timedelta(0)},
    ],
)
def test_a_periodic_job_needs_one_schedule_that_divides_a_day(kwargs):
    with pytest.raises(ValueError):
        Periodic("x", "wavu.core.tasks.prune_job_records_job", **kwargs)


# --- the registry ----------------------------------------------------------------------------------


def test_every_job_in_the_schedule_imports_and_is_a_wavu_job():
    assert validate_schedule() == SCHEDULE
    names = [p.name for p in SCHEDULE]
    assert "prune-job-records" in names and "recover-orphaned-jobs" in names
    from django.utils.module_loading import import_string

    assert all(isinstance(import_string(p.task), Job) for p in SCHEDULE)


def test_a_broken_schedule_is_refused_at_start_up_with_every_problem_named():
    broken = [
        HOURLY,
        Periodic("billing-run", "wavu.core.tests.test_scheduler.billing_run", every=dt.timedelta(hours=1)),
        Periodic("typo", "wavu.billing.tasks.no_such_job", every=dt.timedelta(hours=1)),
        Periodic("not-a-job", "wavu.core.clock.now", every=dt.timedelta(hours=1)),
        Periodic(
            "bad-args", "wavu.core.tests.test_scheduler.billing_run", at=dt.time(1), kwargs={"d": dt.date.today()}
        ),
    ]
    with pytest.raises(ImproperlyConfigured) as refused:
        validate_schedule(broken)
    message = str(refused.value)
    for expected in ("billing-run: declared twice", "typo:", "not-a-job:", "bad-args:"):
        assert expected in message


# --- firing ----------------------------------------------------------------------------------------


def test_two_ticks_and_two_schedulers_in_the_same_slot_enqueue_the_job_once(db):
    with time_machine.travel(nairobi(2026, 3, 2, 10, 5), tick=False) as traveller:
        assert tick([HOURLY]) == ["billing-run"]
        assert tick([HOURLY]) == []
        other_scheduler = [Periodic("billing-run", HOURLY.task, every=dt.timedelta(hours=1))]
        traveller.shift(dt.timedelta(minutes=50))
        assert tick(other_scheduler) == []
        assert DBTaskResult.objects.count() == 1

        traveller.shift(dt.timedelta(minutes=5))  # 11:00, the next slot
        assert tick([HOURLY]) == ["billing-run"]

    assert list(ScheduledRun.objects.order_by("slot").values_list("slot", flat=True)) == [
        nairobi(2026, 3, 2, 10),
        nairobi(2026, 3, 2, 11),
    ]
    assert DBTaskResult.objects.count() == 2
    assert run_queued_tasks() == 2 and RUNS == [0, 0]


def test_after_downtime_only_the_latest_missed_slot_fires_once(db):
    with time_machine.travel(nairobi(2026, 3, 2, 10, 5), tick=False) as traveller:
        assert tick([HOURLY, DAILY_2AM]) == ["billing-run", "dunning"]  # 02:00 today had not fired yet
        traveller.shift(dt.timedelta(days=2, hours=6, minutes=30))  # back on 4 March at 16:35
        assert tick([HOURLY, DAILY_2AM]) == ["billing-run", "dunning"]
        assert tick([HOURLY, DAILY_2AM]) == []

    fired = ScheduledRun.objects.order_by("name", "slot").values_list("name", "slot")
    assert list(fired) == [
        ("billing-run", nairobi(2026, 3, 2, 10)),
        ("billing-run", nairobi(2026, 3, 4, 16)),
        ("dunning", nairobi(2026, 3, 2, 2)),
        ("dunning", nairobi(2026, 3, 4, 2)),
    ]
    assert run_queued_tasks() == 4 and sorted(RUNS) == [0, 0, 2, 2]


def test_a_slot_row_records_the_job_record_it_enqueued_and_the_job_runs_as_its_job(db):
    with time_machine.travel(nairobi(2026, 3, 2, 10, 5), tick=False):
        assert fire(DAILY_2AM, DAILY_2AM.slot(nairobi(2026, 3, 2, 10, 5)))
    run = ScheduledRun.objects.get()
    result = DBTaskResult.objects.get()
    assert run.task_result_id == str(result.pk) and result.args_kwargs == {"args": [], "kwargs": {"batch": 2}}


def test_a_job_that_cannot_be_fired_does_not_stop_the_others(db):
    broken = Periodic("typo", "wavu.billing.tasks.no_such_job", every=dt.timedelta(hours=1))
    with time_machine.travel(nairobi(2026, 3, 2, 10, 5), tick=False):
        assert tick([broken, HOURLY]) == ["billing-run"]
    assert list(ScheduledRun.objects.values_list("name", flat=True)) == ["billing-run"]


@pytest.mark.django_db(transaction=True)  # a tick checks its connection, as the worker thread does
def test_a_ticker_tick_writes_the_heartbeat_and_fires_the_schedule():
    from wavu.core.models import WorkerHeartbeat

    ticker = Ticker("wavu-test-1", schedule=[HOURLY])
    assert ticker.tick_once() == ["billing-run"]
    assert WorkerHeartbeat.objects.get().worker_id == "wavu-test-1"
    quiet = Ticker("wavu-test-2", schedule=[HOURLY], run_scheduler=False)
    assert quiet.tick_once() == []
    assert WorkerHeartbeat.objects.count() == 2 and ScheduledRun.objects.count() == 1


@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)
def test_schedulers_ticking_at_the_same_moment_on_postgresql_fire_a_slot_once():
    schedulers = 8
    results, errors = race(schedulers, lambda: tick([HOURLY, DAILY_2AM]))

    assert errors == []
    assert sorted(name for fired in results for name in fired) == ["billing-run", "dunning"]
    assert ScheduledRun.objects.count() == 2 and DBTaskResult.objects.count() == 2
