"""Background jobs: enqueued only when the work commits, run once, retried with growing waits until they
give up (every failure visible to staff), recovered when their worker dies, and pruned when old."""

import datetime as dt
import logging

import pytest
import time_machine
from django.contrib.auth import get_user_model
from django.db import transaction
from django_tasks import TaskResultStatus
from django_tasks_db.models import DBTaskResult

from wavu.core import audit
from wavu.core.models import AuditEvent, ScheduledRun, WorkerHeartbeat
from wavu.core.tasks import (
    ATTEMPT_KWARG,
    PermanentFailure,
    attempt_of,
    beat,
    enqueue_on_commit,
    gave_up,
    prune_job_records,
    recover_orphaned_jobs,
    retry_now,
    task,
)
from wavu.testing.tasks import run_queued_tasks

NOW = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)
CALLS: list = []


@task(name="record-call")
def record_call(customer_id: int, day: str = "") -> str:
    CALLS.append((customer_id, day, audit.current_actor().label))
    return f"done {customer_id}"


@task(max_attempts=3, backoff_seconds=10, max_backoff_seconds=15)
def always_fails(customer_id: int) -> None:
    CALLS.append(customer_id)
    raise RuntimeError(f"M-Pesa API down for {customer_id}")


@task(max_attempts=4, backoff_seconds=10)
def fails_once(customer_id: int) -> None:
    CALLS.append(customer_id)
    if len(CALLS) == 1:
        raise ConnectionError("timeout")


@task
def refuses(customer_id: int) -> None:
    CALLS.append(customer_id)
    raise PermanentFailure("the customer was closed")


@pytest.fixture(autouse=True)
def _clear_calls():
    CALLS.clear()
    yield
    CALLS.clear()


def records(status=None):
    qs = DBTaskResult.objects.order_by("enqueued_at")
    return list(qs.filter(status=status) if status else qs)


# --- enqueued after commit ------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_job_enqueued_in_a_transaction_that_rolls_back_never_runs():
    with pytest.raises(RuntimeError), transaction.atomic():
        enqueue_on_commit(record_call, 7)
        record_call.enqueue(8)  # a direct enqueue inside the transaction is rolled back too
        raise RuntimeError("the payment could not be recorded")

    assert not DBTaskResult.objects.exists()
    assert run_queued_tasks() == 0
    assert CALLS == []


@pytest.mark.django_db(transaction=True)
def test_a_job_enqueued_in_a_committed_transaction_runs_once_as_its_job():
    with transaction.atomic():
        enqueue_on_commit(record_call, 7, day="2026-03-02")
        assert not DBTaskResult.objects.exists()  # not before the commit

    assert run_queued_tasks() == 1
    assert run_queued_tasks() == 0
    assert CALLS == [(7, "2026-03-02", "job:record-call")]
    (result,) = records()
    assert result.status == TaskResultStatus.SUCCESSFUL and result.return_value == "done 7"


@pytest.mark.django_db(transaction=True)
def test_the_same_job_asked_for_twice_in_one_transaction_is_enqueued_once():
    with transaction.atomic():
        enqueue_on_commit(record_call, 7)
        with transaction.atomic():  # an inner savepoint that commits
            enqueue_on_commit(record_call, 7)
        enqueue_on_commit(record_call, 8)

    assert sorted(r.args_kwargs["args"][0] for r in records()) == [7, 8]


@pytest.mark.django_db(transaction=True)
def test_a_copy_in_a_savepoint_that_rolls_back_does_not_swallow_the_one_that_commits():
    with transaction.atomic():
        try:
            with transaction.atomic():
                enqueue_on_commit(record_call, 7)
                raise RuntimeError("this attempt fails")
        except RuntimeError:
            pass
        enqueue_on_commit(record_call, 7)

    assert [r.args_kwargs["args"][0] for r in records()] == [7]


@pytest.mark.django_db(transaction=True)
def test_a_job_that_cannot_be_enqueued_after_commit_is_logged_and_the_commit_stands(caplog):
    with transaction.atomic():
        AuditEvent.objects.create(at=NOW, actor_label="t", action="action", object_type="x", object_id="1")
        enqueue_on_commit(record_call, dt.date(2026, 3, 2))  # not JSON-ready: refused at enqueue

    assert AuditEvent.objects.count() == 1
    assert not DBTaskResult.objects.exists()
    assert "could not enqueue wavu.core.tests.test_tasks.record_call" in caplog.text


def test_outside_a_transaction_a_job_is_enqueued_at_once(db, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        enqueue_on_commit(record_call, 3)
    assert run_queued_tasks() == 1 and CALLS == [(3, "", "job:record-call")]


# --- retries ---------------------------------------------------------------------------------------


def test_a_failing_job_is_retried_with_growing_waits_and_gives_up_after_its_attempts(db, caplog):
    caplog.set_level(logging.WARNING, logger="wavu.tasks")
    with time_machine.travel(NOW, tick=False) as traveller:
        always_fails.enqueue(42)
        assert run_queued_tasks() == 1
        (retry,) = records(TaskResultStatus.READY)
        assert retry.run_after == NOW + dt.timedelta(seconds=10) and attempt_of(retry) == 2
        assert run_queued_tasks() == 0  # not before its time

        traveller.shift(dt.timedelta(seconds=10))
        assert run_queued_tasks() == 1
        (retry,) = records(TaskResultStatus.READY)
        assert retry.run_after == NOW + dt.timedelta(seconds=10 + 15)  # 20 s, capped at 15 s
        assert attempt_of(retry) == 3

        traveller.shift(dt.timedelta(seconds=15))
        assert run_queued_tasks() == 1
        traveller.shift(dt.timedelta(hours=2))
        assert run_queued_tasks() == 0  # gave up: nothing more queued

    failed = records(TaskResultStatus.FAILED)
    assert CALLS == [42, 42, 42]
    assert [attempt_of(r) for r in failed] == [1, 2, 3]
    assert all("M-Pesa API down for 42" in r.traceback for r in failed)
    assert all(r.exception_class_path == "builtins.RuntimeError" for r in failed)
    assert [gave_up(r) for r in failed] == [False, False, True]
    assert not records(TaskResultStatus.READY)
    gave_up_logs = [r for r in caplog.records if r.name == "wavu.tasks" and r.levelno == logging.ERROR]
    assert len(gave_up_logs) == 1 and "gave up after attempt 3/3" in gave_up_logs[0].getMessage()


def test_a_job_that_fails_once_succeeds_on_its_second_attempt_with_the_same_arguments(db):
    with time_machine.travel(NOW, tick=False) as traveller:
        fails_once.enqueue(5)
        run_queued_tasks()
        traveller.shift(dt.timedelta(seconds=10))
        assert run_queued_tasks() == 1

    assert CALLS == [5, 5]
    assert [r.status for r in records()] == [TaskResultStatus.FAILED, TaskResultStatus.SUCCESSFUL]
    assert records()[1].args_kwargs == {"args": [5], "kwargs": {ATTEMPT_KWARG: 2}}


def test_a_permanent_failure_is_not_retried(db):
    refuses.enqueue(9)
    assert run_queued_tasks() == 1
    (failed,) = records()
    assert failed.status == TaskResultStatus.FAILED and gave_up(failed)
    assert "the customer was closed" in failed.traceback


def test_staff_can_retry_a_job_that_gave_up_and_the_retry_is_audited(db):
    with time_machine.travel(NOW, tick=False):
        refuses.enqueue(9)
        run_queued_tasks()
        (failed,) = records()
        copy = retry_now(failed)

    assert copy.status == TaskResultStatus.READY and copy.args_kwargs == {"args": [9], "kwargs": {}}
    event = AuditEvent.objects.get(verb="retry_job")
    assert event.object_id == str(failed.pk) and event.after == {"retry": str(copy.pk)}
    assert run_queued_tasks() == 1 and CALLS == [9, 9]


def test_a_failure_that_will_retry_by_itself_cannot_be_retried_by_hand(db):
    always_fails.enqueue(1)
    run_queued_tasks()
    (failed,) = records(TaskResultStatus.FAILED)
    with pytest.raises(ValueError):
        retry_now(failed)
    assert DBTaskResult.objects.count() == 2  # the failure and its automatic retry, nothing more
    assert not AuditEvent.objects.filter(verb="retry_job").exists()


def test_the_admin_lists_job_records_with_attempts_and_errors_and_retries_those_that_gave_up(db, client):
    refuses.enqueue(9)
    always_fails.enqueue(1)
    run_queued_tasks()
    staff = get_user_model().objects.create_superuser("ops", "ops@example.com", "pw")
    client.force_login(staff)
    url = "/admin/django_tasks_database/dbtaskresult/"

    page = client.get(url)
    assert page.status_code == 200
    assert b"PermanentFailure (gave up)" in page.content and b"RuntimeError" in page.content

    failed = list(DBTaskResult.objects.filter(status=TaskResultStatus.FAILED).values_list("pk", flat=True))
    response = client.post(url, {"action": "retry_now", "_selected_action": [str(pk) for pk in failed]}, follow=True)
    assert response.status_code == 200
    assert b"1 job(s) enqueued again" in response.content and b"1 skipped" in response.content
    assert AuditEvent.objects.get(verb="retry_job").actor_label == "ops"
    assert client.get(f"{url}{failed[0]}/change/").status_code == 200


# --- recovery and pruning --------------------------------------------------------------------------


def _running(worker_id: str, started: dt.datetime) -> DBTaskResult:
    result = always_fails.enqueue(77).db_result
    DBTaskResult.objects.filter(pk=result.pk).update(
        status=TaskResultStatus.RUNNING, started_at=started, worker_ids=[worker_id]
    )
    return result


def test_a_job_left_running_by_a_dead_worker_is_failed_and_retried_but_live_workers_jobs_are_left_alone(db):
    with time_machine.travel(NOW, tick=False):
        long_ago = NOW - dt.timedelta(minutes=30)
        beat("wavu-alive-1")
        lost = _running("wavu-dead-1", long_ago)
        busy = _running("wavu-alive-1", long_ago)
        foreign = _running("someone-elses-worker", long_ago)
        fresh = _running("wavu-just-started-2", NOW - dt.timedelta(seconds=5))

        assert recover_orphaned_jobs() == 1
        assert recover_orphaned_jobs() == 0  # once

    lost.refresh_from_db()
    assert lost.status == TaskResultStatus.FAILED and lost.exception_class_path.endswith("WorkerLost")
    (retry,) = records(TaskResultStatus.READY)
    assert retry.args_kwargs == {"args": [77], "kwargs": {ATTEMPT_KWARG: 2}}
    for untouched in (busy, foreign, fresh):
        untouched.refresh_from_db()
        assert untouched.status == TaskResultStatus.RUNNING


def test_old_finished_job_records_are_pruned_and_recent_or_pending_ones_kept(db, settings):
    settings.WAVU = {**settings.WAVU, "TASK_RESULTS_KEEP_DAYS": 30, "FAILED_TASK_RESULTS_KEEP_DAYS": 90}

    def finished(status, days_ago):
        result = record_call.enqueue(1).db_result
        DBTaskResult.objects.filter(pk=result.pk).update(status=status, finished_at=NOW - dt.timedelta(days=days_ago))
        return result.pk

    old_ok = finished(TaskResultStatus.SUCCESSFUL, 31)
    recent_ok = finished(TaskResultStatus.SUCCESSFUL, 29)
    failed_60 = finished(TaskResultStatus.FAILED, 60)
    failed_91 = finished(TaskResultStatus.FAILED, 91)
    pending = record_call.enqueue(2).db_result.pk
    ScheduledRun.objects.create(name="x", slot=NOW - dt.timedelta(days=100), fired_at=NOW)
    ScheduledRun.objects.create(name="x", slot=NOW - dt.timedelta(days=1), fired_at=NOW)
    WorkerHeartbeat.objects.create(
        worker_id="wavu-gone", hostname="h", pid=1, queues="*", started_at=NOW, last_seen_at=NOW - dt.timedelta(days=2)
    )

    with time_machine.travel(NOW, tick=False):
        summary = prune_job_records()
        assert prune_job_records().task_results == 0  # idempotent

    assert (summary.task_results, summary.scheduled_runs, summary.heartbeats) == (2, 1, 1)
    assert set(DBTaskResult.objects.values_list("pk", flat=True)) == {recent_ok, failed_60, pending}
    assert old_ok not in DBTaskResult.objects.values_list("pk", flat=True) and failed_91
