"""Transaction Status answers that Wavu must not lose: a result whose processing failed or never happened
is processed again (with back-off, at most CALLBACK_MAX_ATTEMPTS times, each receipt once), and a query
Safaricom timed out on stays in front of staff — in the statement report and the admin — until it has
been asked again and answered, or the receipt has been recorded another way."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from io import StringIO

import httpx
import pytest
import time_machine
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from wavu.core.scheduler import validate_schedule
from wavu.ledger.models import JournalEntry
from wavu.mpesa import reconciliation, services
from wavu.mpesa import tasks as mpesa_tasks
from wavu.mpesa.daraja import DarajaClient
from wavu.mpesa.models import InboundCallback
from wavu.mpesa.tests.test_c2b_hooks import SAFARICOM_IP, c2b_payload, hook_url, make_channel
from wavu.mpesa.tests.test_contracts import recorded
from wavu.payments.models import Payment
from wavu.payments.services import record_payment
from wavu.schedule import SCHEDULE
from wavu.testing.concurrency import side_by_side
from wavu.testing.tasks import run_queued_tasks

NOON = timezone.make_aware(dt.datetime(2026, 12, 15, 12, 0))
RECEIPT = "LGR919G2AV"  # the receipt the recorded status payloads are about


@pytest.fixture
def clock_at_noon():
    with time_machine.travel(NOON, tick=False) as traveller:
        yield traveller


@pytest.fixture
def channel(db):
    return make_channel()


def post(channel, hook: str, body) -> InboundCallback:
    """Deliver to a hook as Safaricom does; the worker has not run yet."""
    body = body if isinstance(body, bytes | str) else json.dumps(body)
    response = Client().post(
        hook_url(channel, hook), data=body, content_type="application/json", REMOTE_ADDR=SAFARICOM_IP
    )
    assert response.status_code == 200, response.content
    return InboundCallback.objects.order_by("-pk").first()


def at(seconds: float) -> dt.datetime:
    return NOON + dt.timedelta(seconds=seconds)


# --- a result whose processing failed -------------------------------------------------------------------------


def test_a_status_result_whose_processing_failed_is_kept_failed_and_retried_with_back_off(
    channel, clock_at_noon, monkeypatch
):
    def database_hiccup(**kwargs):
        raise RuntimeError("connection reset by peer")

    callback = post(channel, "status-result", recorded("status_result_completed"))
    monkeypatch.setattr(reconciliation, "record_payment", database_hiccup)

    failed = services.process_callback(callback.pk)

    assert (failed.status, failed.attempts, failed.last_error) == (
        "failed",
        1,
        "RuntimeError: connection reset by peer",
    )
    assert "will be retried" in failed.outcome and not Payment.objects.exists()

    monkeypatch.undo()
    clock_at_noon.move_to(at(30))
    assert services.retry_callbacks().picked == 0  # the first retry waits a minute
    clock_at_noon.move_to(at(61))
    assert services.retry_callbacks().as_dict() == {"picked": 1, "processed": 1}
    assert services.retry_callbacks().picked == 0  # the job firing twice changes nothing

    callback.refresh_from_db()
    payment = Payment.objects.get()
    assert (callback.status, callback.attempts, callback.payment) == ("processed", 2, payment)
    assert (payment.reference, payment.amount, payment.status) == (RECEIPT, Decimal("450.00"), "unmatched")
    assert JournalEntry.objects.filter(kind="payment").count() == 1


def test_a_status_result_stored_but_never_processed_is_picked_up_after_a_minute(channel, clock_at_noon):
    callback = post(channel, "status-result", recorded("status_result_completed"))  # its job was lost

    assert services.retry_callbacks().picked == 0  # it may still be on its way
    clock_at_noon.move_to(at(61))
    summary = services.retry_callbacks()

    assert summary.as_dict() == {"picked": 1, "processed": 1}
    callback.refresh_from_db()
    assert (callback.status, callback.attempts) == ("processed", 1)
    assert Payment.objects.get().reference == RECEIPT


def test_retries_stop_after_the_configured_number_of_attempts(channel, clock_at_noon, monkeypatch, settings):
    settings.WAVU = {**settings.WAVU, "CALLBACK_MAX_ATTEMPTS": 3}

    def broken(**kwargs):
        raise RuntimeError("bug")

    monkeypatch.setattr(reconciliation, "record_payment", broken)
    callback = post(channel, "status-result", recorded("status_result_completed"))
    services.process_callback(callback.pk)
    for hours in range(1, 6):
        clock_at_noon.move_to(NOON + dt.timedelta(hours=hours))
        services.retry_callbacks()

    callback.refresh_from_db()
    assert (callback.status, callback.attempts) == ("failed", 3) and not Payment.objects.exists()


def test_a_status_timeout_is_kept_for_staff_while_the_retry_job_takes_what_awaits_processing(channel, clock_at_noon):
    post(channel, "c2b-confirmation", c2b_payload())
    post(channel, "status-timeout", recorded("status_timeout"))
    post(channel, "stk-callback", recorded("stk_callback_cancelled"))
    clock_at_noon.move_to(NOON + dt.timedelta(hours=1))

    assert services.retry_callbacks().picked == 2
    assert services.retry_callbacks().picked == 0
    assert InboundCallback.objects.get(kind="status_timeout").status == "received"  # stored for staff to ask again


def test_a_result_the_retry_already_applied_is_not_applied_again_by_its_late_job(channel, clock_at_noon):
    callback = post(channel, "status-result", recorded("status_result_completed"))
    clock_at_noon.move_to(at(120))
    services.retry_callbacks()

    late = services.process_callback(callback.pk)  # the queued job finally runs

    assert (late.status, late.attempts) == ("processed", 1) and Payment.objects.count() == 1


def test_the_retry_job_is_scheduled_every_minute_and_runs_through_the_worker(channel, clock_at_noon):
    entry = next(p for p in SCHEDULE if p.task == "wavu.mpesa.tasks.retry_callbacks")
    assert entry.every == dt.timedelta(minutes=1)
    validate_schedule(SCHEDULE)
    callback = post(channel, "status-result", recorded("status_result_completed"))
    clock_at_noon.move_to(NOON + dt.timedelta(minutes=5))

    mpesa_tasks.retry_callbacks.enqueue()
    run_queued_tasks()

    callback.refresh_from_db()
    assert callback.status == "processed" and Payment.objects.count() == 1


@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)
def test_the_retry_and_the_job_processing_one_result_at_the_same_moment_record_it_once(reference_data):
    channel = make_channel()
    for attempt in range(5):
        body = recorded("status_result_completed").replace(RECEIPT.encode(), f"LGR919G2{attempt:02d}".encode())
        callback = services.receive_hook(
            channel, InboundCallback.Kind.STATUS_RESULT, services.HookRequest("POST", body, {}, SAFARICOM_IP)
        ).callback
        later = timezone.now() + dt.timedelta(minutes=2)

        results, errors = side_by_side(
            lambda cb=callback: reconciliation.apply_status_result(cb.pk),
            lambda when=later: services.retry_callbacks(when),
        )

        assert errors == []
        callback.refresh_from_db()
        assert (callback.status, callback.attempts) == ("processed", 1)
    assert Payment.objects.count() == 5 and JournalEntry.objects.filter(kind="payment").count() == 5


# --- timeouts: shown to staff until asked again and answered ------------------------------------------------------


def ask_again_list(**kwargs) -> list[tuple[str, str]]:
    return [(query.receipt, query.detail) for query in reconciliation.timed_out_status_queries(**kwargs)]


def test_a_timed_out_query_is_listed_until_a_later_result_answers_its_receipt(channel, clock_at_noon):
    timeout = post(channel, "status-timeout", recorded("status_timeout"))

    listed = reconciliation.timed_out_status_queries()
    assert [(q.receipt, q.channel, q.callback_id, q.timed_out_at) for q in listed] == [
        (RECEIPT, channel.shortcode, timeout.pk, NOON)
    ]

    clock_at_noon.move_to(at(600))  # staff asked again; this time Safaricom answered (not found, say)
    answer = post(channel, "status-result", recorded("status_result_failed"))
    services.process_callback(answer.pk)

    assert ask_again_list() == [] and not Payment.objects.exists()


def test_a_result_that_arrived_before_the_timeout_does_not_answer_it(channel, clock_at_noon):
    post(channel, "status-result", recorded("status_result_failed"))
    clock_at_noon.move_to(at(60))
    post(channel, "status-timeout", recorded("status_timeout"))  # a later query for the same receipt

    assert ask_again_list() == [(RECEIPT, "")]


def test_a_timed_out_receipt_recorded_another_way_is_no_longer_listed(channel, clock_at_noon):
    post(channel, "status-timeout", recorded("status_timeout"))
    assert len(ask_again_list()) == 1

    record_payment(method="mpesa", source=channel.shortcode, reference=RECEIPT, amount="450")  # e.g. the statement

    assert ask_again_list() == []


def test_a_receipt_that_timed_out_twice_is_listed_once_with_its_latest_timeout(channel, clock_at_noon):
    post(channel, "status-timeout", recorded("status_timeout"))
    clock_at_noon.move_to(at(300))
    latest = post(channel, "status-timeout", recorded("status_timeout"))

    listed = reconciliation.timed_out_status_queries()
    assert [(q.receipt, q.callback_id, q.timed_out_at) for q in listed] == [(RECEIPT, latest.pk, at(300))]


def test_a_timeout_naming_only_its_conversation_is_traced_to_the_receipt_wavu_asked_about(channel, clock_at_noon):
    channel.initiator_name, channel.security_credential = "apiop1", "c2VjcmV0"
    channel.consumer_key, channel.consumer_secret = "key", "secret"
    channel.save()

    def daraja(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/oauth/v1/generate":
            return httpx.Response(200, json={"access_token": "tok", "expires_in": "3599"})
        return httpx.Response(
            200,
            json={
                "ConversationID": "AG_20261215_00004e48cf7e3533f581",
                "OriginatorConversationID": "10571-7910404-1",
                "ResponseCode": "0",
                "ResponseDescription": "Accept the service request successfully.",
            },
        )

    with DarajaClient(channel, transport=httpx.MockTransport(daraja)) as client:
        asked = reconciliation.query_unknown_receipts(channel, ["skn7trace01"], client=client)
    assert [(a.receipt, a.outcome) for a in asked] == [("SKN7TRACE01", "asked")]
    body = {"Result": {"ResultType": 0, "ResultCode": 1, "ConversationID": "AG_20261215_00004e48cf7e3533f581"}}
    post(channel, "status-timeout", body)
    post(channel, "status-timeout", {"Result": {"ConversationID": "AG_someone_elses"}})

    assert ask_again_list() == [
        ("SKN7TRACE01", ""),
        ("", "the timeout names no receipt (ConversationID AG_someone_elses)"),
    ]


def test_the_statement_report_lists_the_queries_to_ask_again(channel, clock_at_noon, tmp_path):
    other = make_channel(name="Second paybill", shortcode="600639")
    post(channel, "status-timeout", recorded("status_timeout"))
    post(other, "status-timeout", json.loads(recorded("status_timeout").replace(RECEIPT.encode(), b"SKN8OTHER01")))
    statement = tmp_path / "statement.csv"
    statement.write_text(
        "Receipt No.,Completion Time,Transaction Status,Paid In,Withdrawn,A/C No.\n"
        "SKN2BBBB01,14-12-2026 10:00:00,Completed,500.00,,NOBODY\n"
    )
    out = StringIO()

    call_command("mpesa_import_statement", str(statement), "--channel", channel.shortcode, "--dry-run", stdout=out)

    text = out.getvalue()
    assert "status queries timed out         1   (ask again with --query RECEIPT)" in text
    assert "Transaction Status queries that timed out, unanswered since (ask again):" in text
    assert f"  {RECEIPT}   timed out 2026-12-15 12:00" in text and "SKN8OTHER01" not in text  # this channel only


def test_the_admin_shows_the_queries_to_ask_again_and_the_results_not_processed_yet(
    clock_at_noon, channel, admin_client
):
    post(channel, "status-timeout", recorded("status_timeout"))
    post(channel, "status-timeout", recorded("status_timeout").replace(RECEIPT.encode(), b"SKN9DONE001"))
    clock_at_noon.move_to(at(60))
    services.process_callback(
        post(channel, "status-result", recorded("status_result_failed").replace(RECEIPT.encode(), b"SKN9DONE001")).pk
    )
    waiting = post(
        channel, "status-result", recorded("status_result_completed").replace(RECEIPT.encode(), b"SKN9WAIT01")
    )
    url = "/admin/mpesa/inboundcallback/"

    ask_again = admin_client.get(url, {"status_query": "ask_again"})
    unprocessed = admin_client.get(url, {"status_query": "unprocessed"})

    assert ask_again.status_code == 200 and unprocessed.status_code == 200
    assert list(ask_again.context["cl"].result_list.values_list("reference", flat=True)) == [RECEIPT]
    assert [c.pk for c in unprocessed.context["cl"].result_list] == [waiting.pk]
    assert "timed out: ask again" in ask_again.content.decode()
