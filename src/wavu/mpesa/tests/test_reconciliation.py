"""Reconciliation: the M-Pesa organisation portal statement against what Wavu recorded. Money the hook
never delivered is found and recorded once, money the hook did deliver is "already known", and every
difference (another amount, a bad row, a payment the statement does not show) is reported, not applied."""

from __future__ import annotations

import datetime as dt
import json
import re
from decimal import Decimal
from io import StringIO
from pathlib import Path

import httpx
import pytest
import time_machine
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client

from wavu.ledger.models import JournalEntry
from wavu.mpesa.daraja import DarajaClient
from wavu.mpesa.models import InboundCallback, StkRequest
from wavu.mpesa.reconciliation import (
    StatementFormatError,
    apply_status_result,
    import_statement,
    parse_statement,
    query_unknown_receipts,
)
from wavu.mpesa.services import MPESA_TIME_ZONE
from wavu.mpesa.tests.test_c2b_hooks import c2b_payload, make_channel, pay_by_paybill
from wavu.payments.models import Payment
from wavu.payments.services import record_payment
from wavu.testing.factories import CustomerFactory

pytestmark = pytest.mark.django_db

STATEMENT = Path(__file__).parent / "data" / "statement.csv"
MORNING_AFTER = dt.datetime(2026, 11, 25, 8, 30, tzinfo=MPESA_TIME_ZONE)


@pytest.fixture(autouse=True)
def morning_after():
    with time_machine.travel(MORNING_AFTER, tick=False):
        yield


@pytest.fixture
def channel():
    return make_channel(allowlist_mode="off")


@pytest.fixture
def wanjiku():
    return CustomerFactory(name="Jane Wanjiku")


@pytest.fixture
def statement(wanjiku) -> bytes:
    """The sample export, every payment made to Jane Wanjiku's account."""
    return STATEMENT.read_bytes().replace(b"{ACCOUNT}", wanjiku.account_number.encode())


def mpesa_payments():
    return Payment.objects.filter(method="mpesa").order_by("reference")


def receipts(items) -> list[str]:
    return [item.receipt for item in items]


def test_a_payment_the_hook_never_delivered_is_found_and_recorded_once_however_often_the_statement_is_imported(
    channel, wanjiku, statement
):
    first = import_statement(channel, statement)
    second = import_statement(channel, statement)

    assert receipts(first.recorded_matched) == ["SKN1AAAA01", "SKN1AAAA02", "SKN1AAAA09"]
    assert receipts(first.recorded_suspense) == ["SKN1AAAA04"]
    assert second.newly_recorded == 0
    assert receipts(second.already_known) == ["SKN1AAAA01", "SKN1AAAA02", "SKN1AAAA04", "SKN1AAAA09"]
    payments = list(mpesa_payments())
    assert [(p.reference, p.amount, p.customer_id, p.status) for p in payments] == [
        ("SKN1AAAA01", Decimal("1500.00"), wanjiku.pk, "received"),
        ("SKN1AAAA02", Decimal("2000.00"), wanjiku.pk, "received"),
        ("SKN1AAAA04", Decimal("750.00"), None, "unmatched"),
        ("SKN1AAAA09", Decimal("1000.00"), wanjiku.pk, "received"),
    ]
    found = payments[0]
    assert found.source == "600638" and found.notes == "found by reconciliation (portal statement)"
    assert found.payer_name == "JANE WANJIKU" and found.payer_phone == "25479****111"
    assert found.received_at == dt.datetime(2026, 11, 23, 9, 12, 40, tzinfo=MPESA_TIME_ZONE)
    assert payments[2].payer_name == "MUTUA, KAMAU" and payments[2].account_reference == "NOBODY-99"
    assert JournalEntry.objects.filter(kind="payment").count() == 4


def test_a_receipt_the_hook_already_delivered_is_already_known_and_not_credited_again(
    channel, wanjiku, statement, django_capture_on_commit_callbacks
):
    pay_by_paybill(
        Client(),
        channel,
        django_capture_on_commit_callbacks,
        c2b_payload(
            TransID="SKN1AAAA01",
            TransAmount="1500.00",
            TransTime="20261123091240",
            BillRefNumber=wanjiku.account_number,
        ),
    )
    hook_payment = Payment.objects.get(reference="SKN1AAAA01")

    report = import_statement(channel, statement)

    assert [(i.receipt, i.detail) for i in report.already_known] == [("SKN1AAAA01", f"payment {hook_payment.pk}")]
    assert "SKN1AAAA01" not in receipts(report.recorded_matched)
    assert Payment.objects.filter(reference="SKN1AAAA01").count() == 1
    assert JournalEntry.objects.filter(kind="payment").count() == 4  # 01 from the hook, 02, 04, 09 from the statement


def stk_paid_by_query(channel, customer, checkout: str, amount: str, started: dt.datetime) -> StkRequest:
    """An STK push whose callback was lost: the janitor's query paid it, under its CheckoutRequestID."""
    payment, _ = record_payment(
        method="mpesa", source=channel.shortcode, reference=checkout, amount=amount, customer=customer,
        received_at=started + dt.timedelta(minutes=1),
    )  # fmt: skip
    return StkRequest.objects.create(
        channel=channel, purpose="topup", customer=customer, phone="254712345678", amount=Decimal(amount),
        account_reference=customer.account_number, description="Top up", checkout_request_id=checkout,
        status="paid", payment=payment, created_at=started, settled_at=started + dt.timedelta(minutes=2),
    )  # fmt: skip


def test_a_receipt_an_stk_push_paid_by_query_already_recorded_is_known_not_credited_again(channel, wanjiku, statement):
    # SKN1AAAA01: KES 1,500 completed 23-11-2026 09:12:40, pushed a minute earlier; the callback never came
    started = dt.datetime(2026, 11, 23, 9, 11, 40, tzinfo=MPESA_TIME_ZONE)
    request = stk_paid_by_query(channel, wanjiku, "ws_CO_23112026091140", "1500.00", started)

    report = import_statement(channel, statement)

    assert [(i.receipt, i.detail) for i in report.already_known] == [("SKN1AAAA01", f"payment {request.payment_id}")]
    assert not Payment.objects.filter(reference="SKN1AAAA01").exists()
    assert all("ws_CO_23112026091140" not in i.detail for i in report.missing_from_statement)
    request.refresh_from_db()
    assert request.receipt == "SKN1AAAA01"  # the receipt is now on the request, so the next import finds it
    assert import_statement(channel, statement).newly_recorded == 0
    assert Payment.objects.filter(customer=wanjiku).count() == 3  # the STK push (= 01), 02 and 09


def test_two_stk_pushes_paid_by_query_that_could_be_one_receipt_are_left_to_a_person(channel, wanjiku, statement):
    started = dt.datetime(2026, 11, 23, 9, 5, tzinfo=MPESA_TIME_ZONE)
    stk_paid_by_query(channel, wanjiku, "ws_CO_A", "1500.00", started)
    stk_paid_by_query(channel, wanjiku, "ws_CO_B", "1500.00", started + dt.timedelta(minutes=3))

    report = import_statement(channel, statement)

    [doubt] = [i for i in report.mismatches if i.receipt == "SKN1AAAA01"]
    assert "match it by hand" in doubt.detail
    assert not Payment.objects.filter(reference="SKN1AAAA01").exists()
    assert not StkRequest.objects.exclude(receipt="").exists()


def test_the_same_receipt_with_another_amount_is_flagged_and_nothing_is_applied(channel, wanjiku, statement):
    from wavu.payments.services import record_payment

    hook_payment, _ = record_payment(
        method="mpesa",
        source="600638",
        reference="SKN1AAAA09",
        amount="900.00",
        customer=wanjiku,
        received_at=dt.datetime(2026, 11, 24, 14, 3, 11, tzinfo=MPESA_TIME_ZONE),
    )

    report = import_statement(channel, statement)

    assert [(i.receipt, i.amount) for i in report.mismatches] == [("SKN1AAAA09", Decimal("1000.00"))]
    assert "900.00" in report.mismatches[0].detail
    hook_payment.refresh_from_db()
    assert hook_payment.amount == Decimal("900.00")
    assert Payment.objects.filter(reference="SKN1AAAA09").count() == 1


def test_withdrawals_failed_transactions_and_bad_rows_are_reported_with_their_line_numbers(channel, statement):
    report = import_statement(channel, statement)

    assert report.rows_read == 9
    assert {(i.line, i.receipt) for i in report.skipped} == {(10, "SKN1AAAA03"), (12, "SKN1AAAA05"), (13, "SKN1AAAA06")}
    assert [(e.line, e.receipt) for e in report.errors] == [(14, "SKN1AAAA07"), (15, "SKN1AAAA08")]
    assert "Paid In '1.200.00' is not an amount" in report.errors[0].message
    assert "Completion Time" in report.errors[1].message
    assert (
        not mpesa_payments()
        .filter(reference__in=["SKN1AAAA03", "SKN1AAAA05", "SKN1AAAA06", "SKN1AAAA07", "SKN1AAAA08"])
        .exists()
    )


def test_a_wavu_payment_in_the_statement_period_that_the_statement_does_not_show_is_reported(
    channel, wanjiku, statement
):
    from wavu.payments.services import record_payment

    record_payment(
        method="mpesa",
        source="600638",
        reference="SKN1ZZZZ99",
        amount="300.00",
        customer=wanjiku,
        received_at=dt.datetime(2026, 11, 23, 12, 0, tzinfo=MPESA_TIME_ZONE),
    )
    record_payment(  # outside the period: not reported
        method="mpesa",
        source="600638",
        reference="SKN0OLDER1",
        amount="300.00",
        customer=wanjiku,
        received_at=dt.datetime(2026, 11, 20, 12, 0, tzinfo=MPESA_TIME_ZONE),
    )

    report = import_statement(channel, statement)

    assert receipts(report.missing_from_statement) == ["SKN1ZZZZ99"]


def test_a_dry_run_writes_nothing_but_says_what_it_would_record(channel, statement):
    report = import_statement(channel, statement, dry_run=True)

    assert report.newly_recorded == 4
    assert not Payment.objects.exists() and not JournalEntry.objects.exists()


def test_statement_variants_are_read_semicolons_iso_dates_no_full_stops_and_no_preamble(channel, wanjiku):
    text = (
        "Receipt No;Completion Time;Transaction Status;Paid In;Withdrawn;A/C No\r\n"
        f'SKN2BBBB01;2026-11-24 10:00:00;Completed;"12,500.50";;{wanjiku.account_number}\r\n'
    )
    parsed = parse_statement(text)
    assert [(r.receipt, r.paid_in) for r in parsed.rows] == [("SKN2BBBB01", Decimal("12500.50"))]
    assert not parsed.errors

    report = import_statement(channel, text)
    assert receipts(report.recorded_matched) == ["SKN2BBBB01"]


def test_a_file_that_is_not_a_statement_is_refused_with_a_clear_message(channel):
    with pytest.raises(StatementFormatError, match="Receipt No., Completion Time"):
        import_statement(channel, b"name,amount\nfoo,1\n")
    assert not Payment.objects.exists()


def test_the_command_prints_the_report_and_a_dry_run_writes_nothing(channel, statement, tmp_path):
    path = tmp_path / "statement.csv"
    path.write_bytes(statement)
    out = StringIO()

    call_command("mpesa_import_statement", str(path), "--channel", "600638", "--dry-run", stdout=out)
    assert "dry run" in out.getvalue() and re.search(r"would be recorded +4 ", out.getvalue())
    assert not Payment.objects.exists()

    out = StringIO()
    call_command("mpesa_import_statement", str(path), "--channel", "600638", stdout=out)
    text = out.getvalue()
    assert re.search(r"newly recorded +4 ", text) and re.search(r"bad rows +2\n", text) and "line 14" in text
    assert Payment.objects.count() == 4

    with pytest.raises(CommandError, match="no M-Pesa channel"):
        call_command("mpesa_import_statement", str(path), "--channel", "999999")


# --- Transaction Status ------------------------------------------------------------------------------


def test_unknown_receipts_are_asked_of_daraja_and_known_ones_are_not(channel, wanjiku):
    from wavu.payments.services import record_payment

    channel.initiator_name, channel.security_credential = "apiop1", "c2VjcmV0"
    channel.consumer_key, channel.consumer_secret = "key", "secret"
    channel.save()
    record_payment(method="mpesa", source="600638", reference="SKN1AAAA01", amount="10", customer=wanjiku)
    asked = []

    def daraja(request: httpx.Request) -> httpx.Response:
        if "oauth" in request.url.path:
            return httpx.Response(200, json={"access_token": "tok", "expires_in": "3599"})
        asked.append(request.read())
        return httpx.Response(
            200,
            json={
                "ConversationID": "AG_1",
                "OriginatorConversationID": "1-2-3",
                "ResponseCode": "0",
                "ResponseDescription": "Accept the service request",
            },
        )

    with DarajaClient(channel, transport=httpx.MockTransport(daraja)) as client:
        answers = query_unknown_receipts(channel, ["skn1aaaa01", " SKN9QRST01 ", "bad!"], client=client)

    assert [(a.receipt, a.outcome) for a in answers] == [
        ("SKN1AAAA01", "known"),
        ("SKN9QRST01", "asked"),
        ("BAD!", "invalid"),
    ]
    assert len(asked) == 1 and b"SKN9QRST01" in asked[0] and b"/hooks/status/" in asked[0]


def test_a_completed_status_result_is_recorded_once_to_suspense(channel):
    body = {
        "Result": {
            "ResultType": 0,
            "ResultCode": 0,
            "ResultDesc": "ok",
            "TransactionID": "SKN9QRST01",
            "ResultParameters": {
                "ResultParameter": [
                    {"Key": "ReceiptNo", "Value": "SKN9QRST01"},
                    {"Key": "FinalisedTime", "Value": 20261124101415},
                    {"Key": "Amount", "Value": 450},
                    {"Key": "TransactionStatus", "Value": "Completed"},
                    {"Key": "TransactionReason"},
                    {"Key": "DebitPartyName", "Value": "25479****111 - JANE DOE"},
                ]
            },
        }
    }
    callbacks = [
        InboundCallback.objects.create(
            channel=channel, kind="status_result", received_at=MORNING_AFTER, body=json.dumps(body)
        )
        for _ in range(2)
    ]

    first, second = (apply_status_result(c.pk) for c in callbacks)

    assert (first.status, second.status) == ("processed", "duplicate")
    payment = Payment.objects.get()
    assert (payment.reference, payment.amount, payment.status, payment.payer_name) == (
        "SKN9QRST01",
        Decimal("450"),
        "unmatched",
        "JANE DOE",
    )
