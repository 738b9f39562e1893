"""Hostile input at the hooks never loses a payment and never breaks a page.

Whatever reaches a hook with a valid token is kept and answered in Daraja's format, never with a
500; what a hook acknowledges can be processed; what cannot be is refused, kept for staff, and never
becomes money. Every request goes through the real hook URLs with Django's test client, which
raises on a server error, so a 500 fails the test. Run on SQLite and on PostgreSQL (whose text
columns refuse NUL characters)."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import pytest
import time_machine
from django.core.exceptions import ValidationError
from django.db import connection
from django.test import Client

from wavu.core.models import AuditEvent
from wavu.ledger.models import JournalEntry
from wavu.ledger.selectors import customer_credit
from wavu.mpesa import daraja, reconciliation, refunds, selectors, services, stk
from wavu.mpesa.models import InboundCallback, StkRequest
from wavu.mpesa.payloads import MPESA_TIME_ZONE
from wavu.mpesa.tests.test_c2b_hooks import SAFARICOM_IP, c2b_payload, hook_url, make_channel
from wavu.mpesa.tests.test_contracts import booked
from wavu.mpesa.tests.test_matching import issued_invoice
from wavu.mpesa.tests.test_stk import FakeDaraja, stk_body
from wavu.payments.models import Payment
from wavu.testing.api import staff_client
from wavu.testing.factories import CustomerFactory

pytestmark = pytest.mark.django_db

NOW = dt.datetime(2026, 12, 15, 12, 0, tzinfo=MPESA_TIME_ZONE)

EVERY_HOOK = (
    "c2b-validation",
    "c2b-confirmation",
    "stk-callback",
    "status-result",
    "status-timeout",
    "b2c-result",
    "b2c-timeout",
    "reversal-result",
    "reversal-timeout",
)


def post(channel, hook: str, body: bytes | str):
    """POST as Safaricom does (the test client raises on a server error)."""
    return Client().post(hook_url(channel, hook), data=body, content_type="application/json", REMOTE_ADDR=SAFARICOM_IP)


def the_callback() -> InboundCallback:
    return InboundCallback.objects.order_by("-pk").first()


def nothing_paid() -> bool:
    return not Payment.objects.exists() and not JournalEntry.objects.filter(kind="payment").exists()


def daraja_time(moment: dt.datetime) -> str:
    return moment.astimezone(MPESA_TIME_ZONE).strftime("%Y%m%d%H%M%S")


def confirmation(**overrides) -> str:
    """A documented C2B confirmation for Wanjiku's account, made a minute ago."""
    return json.dumps(
        c2b_payload(
            **{"BillRefNumber": "10008", "TransAmount": "1500.00", "TransTime": daraja_time(NOW - MINUTE), **overrides}
        )
    )


MINUTE = dt.timedelta(minutes=1)


@pytest.fixture(autouse=True)
def clock():
    with time_machine.travel(NOW, tick=False) as traveller:
        yield traveller


@pytest.fixture
def channel():
    return make_channel(passkey="test-passkey")  # paybill 600638, which can also push STK prompts


@pytest.fixture
def wanjiku():
    return CustomerFactory(name="Wanjiku Kamau", account_number="10008", phone="254712345678")


@pytest.fixture
def fake():
    return FakeDaraja()


def push(fake, customer, amount) -> StkRequest:
    return stk.request_stk_push("top_up", customer=customer, amount=amount, client_factory=fake)


# --- bytes that are not a Daraja body: refused, kept, never a 500 ---------------------------------------------

DOCUMENTED = json.dumps(c2b_payload())
NOT_A_BODY = {
    "a raw NUL byte inside a string": b'{"TransID": "RKTQ\x00DM7W6S", "TransAmount": "10.00"}',
    "nothing but NUL bytes": b"\x00" * 16,
    "UTF-16 with its byte order mark": DOCUMENTED.encode("utf-16"),
    "UTF-16 without a byte order mark": DOCUMENTED.encode("utf-16-le"),
    "bytes that are not UTF-8": b'\xff\xfe{"TransID": "RKTQDM7W6S"}',
    "arrays nested 5000 deep": ("[" * 5000 + "]" * 5000).encode(),
    "objects nested 2500 deep": ('{"a":' * 2500 + "1" + "}" * 2500).encode(),
    "arrays nested 100 deep (no Daraja payload nests so)": ('{"Result": ' + "[" * 100 + "]" * 100 + "}").encode(),
}


@pytest.mark.parametrize("hook", EVERY_HOOK)
@pytest.mark.parametrize("case", NOT_A_BODY)
def test_a_body_that_is_not_utf8_json_is_refused_400_kept_faithfully_and_never_paid(channel, hook, case):
    body = NOT_A_BODY[case]

    response = post(channel, hook, body)

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "malformed_json"
    callback = the_callback()
    assert (callback.kind, callback.status) == (hook.replace("-", "_"), "rejected")
    assert callback.outcome.startswith("400: ")
    kept = body.decode("utf-8", errors="backslashreplace").replace("\x00", "\\x00")
    assert callback.body == kept  # a faithful escaped form: invalid bytes as \xNN, NUL as \x00
    assert "\x00" not in callback.body
    assert services.process_callback(callback.pk).status == "rejected"  # a worker taking it changes nothing
    assert nothing_paid()


def test_a_transid_holding_a_nul_is_refused_and_kept_with_the_reference_escaped(channel):
    response = post(channel, "c2b-confirmation", json.dumps(c2b_payload(TransID="RKTQ\x00DM7W6S")))

    assert response.status_code == 400 and "TransID" in response.json()["error"]["fields"]
    callback = the_callback()
    assert callback.status == "rejected" and callback.reference == "RKTQ\\x00DM7W6S"
    assert nothing_paid()


# --- dates: plausible or refused ------------------------------------------------------------------------------

IMPLAUSIBLE = {
    "year 1": "00010101000000",
    "the end of 2006, before M-Pesa": "20061231235959",
    "two days ahead": daraja_time(NOW + dt.timedelta(days=2)),
    "year 9999": "99991231235959",
    "Arabic-Indic digits": "٢٠٢٦١٢١٥١١٥٩٠٠",
}


@pytest.mark.parametrize("hook", ["c2b-confirmation", "c2b-validation"])
@pytest.mark.parametrize("case", IMPLAUSIBLE)
def test_a_c2b_request_dated_out_of_reason_is_refused_and_kept_for_staff_with_no_payment_and_no_ledger_entry(
    channel, wanjiku, hook, case
):
    response = post(channel, hook, confirmation(TransTime=IMPLAUSIBLE[case]))

    assert response.status_code == 400
    assert "TransTime" in response.json()["error"]["fields"]
    callback = the_callback()
    assert callback.status == "rejected" and "TransTime" in callback.outcome
    assert services.process_callback(callback.pk).status == "rejected"
    assert nothing_paid()


def test_a_confirmation_dated_up_to_a_day_ahead_is_still_credited_at_the_time_it_arrived(channel, wanjiku):
    post(channel, "c2b-confirmation", confirmation(TransTime=daraja_time(NOW + dt.timedelta(days=1))))

    callback = services.process_callback(the_callback().pk)

    assert callback.status == "processed" and "in the future" in callback.outcome
    assert Payment.objects.get().received_at == NOW


def test_a_year_1_confirmation_stored_before_the_rule_is_refused_by_the_worker_not_paid(channel, wanjiku):
    stored = InboundCallback.objects.create(
        channel=channel,
        kind="c2b_confirmation",
        received_at=NOW,
        headers={},
        body=confirmation(TransTime="00010101000000"),
    )

    callback = services.process_callback(stored.pk)

    assert callback.status == "rejected" and "TransTime 0001-01-01 00:00:00 is before 2007" in callback.outcome
    assert nothing_paid()


@pytest.mark.parametrize("when", [20061231235959, int(daraja_time(NOW + dt.timedelta(days=2)))])
def test_an_stk_success_dated_out_of_reason_is_rejected_and_the_request_waits_for_the_janitors_query(
    channel, wanjiku, fake, when
):
    request = push(fake, wanjiku, 1500)
    body = json.loads(stk_body(request))
    for item in body["Body"]["stkCallback"]["CallbackMetadata"]["Item"]:
        if item["Name"] == "TransactionDate":
            item["Value"] = when

    assert post(channel, "stk-callback", json.dumps(body)).status_code == 200  # acknowledged, checked by the worker
    callback = services.process_callback(the_callback().pk)

    assert callback.status == "rejected" and "TransactionDate" in callback.outcome
    request.refresh_from_db()
    assert request.status == "pending" and nothing_paid()  # the janitor's query settles it at the asked amount


def test_a_status_result_finalised_out_of_reason_is_rejected_not_recorded(channel):
    body = {
        "Result": {
            "ResultCode": 0,
            "ResultDesc": "The service request is processed successfully.",
            "ConversationID": "AG_20261215_0001",
            "TransactionID": "LGR919G2AV",
            "ResultParameters": {
                "ResultParameter": [
                    {"Key": "ReceiptNo", "Value": "LGR919G2AV"},
                    {"Key": "FinalisedTime", "Value": 20061122063845},
                    {"Key": "Amount", "Value": 450},
                    {"Key": "TransactionStatus", "Value": "Completed"},
                ]
            },
        }
    }
    post(channel, "status-result", json.dumps(body))

    callback = services.process_callback(the_callback().pk)

    assert callback.status == "rejected" and "FinalisedTime" in callback.outcome
    assert nothing_paid()


STATEMENT_HEADER = "Receipt No.,Completion Time,Initiation Time,Details,Transaction Status,Paid In,Withdrawn,A/C No."


@pytest.mark.parametrize(
    "completed", ["01-01-0001 00:00:00", "31-12-2006 23:59:59", "17-12-2026 12:00:00", "١٥-١٢-٢٠٢٦ ١١:٠٠:٠٠"]
)
def test_a_statement_row_dated_out_of_reason_is_a_bad_row_with_its_line_number_and_nothing_is_recorded(
    channel, wanjiku, completed
):
    row = f"SLB1AB2CD3,{completed},{completed},Pay Bill from 2547***678,Completed,1500.00,,10008"

    report = reconciliation.import_statement(channel, f"{STATEMENT_HEADER}\n{row}\n")

    assert [(problem.line, problem.receipt) for problem in report.errors] == [(2, "SLB1AB2CD3")]
    assert "Completion Time" in report.errors[0].message
    assert report.newly_recorded == 0 and nothing_paid()


# --- pages keep answering ---------------------------------------------------------------------------------------


def test_payments_made_through_the_hooks_are_shown_by_the_api_and_the_admin(channel, wanjiku, fake, admin_client):
    post(channel, "c2b-confirmation", confirmation(TransTime="00010101000000"))  # refused: no payment
    post(channel, "c2b-confirmation", confirmation())
    request = push(fake, wanjiku, 200)
    post(channel, "stk-callback", stk_body(request, receipt="SIM1AB2CD4"))
    for callback in InboundCallback.objects.order_by("pk"):
        services.process_callback(callback.pk)
    paybill, prompt = Payment.objects.order_by("pk")
    assert (paybill.received_at, paybill.amount, prompt.amount) == (NOW - MINUTE, 1500, 200)

    api = staff_client()
    listed = api.get(f"/api/v1/payments/?customer={wanjiku.pk}")
    assert listed.status_code == 200
    assert {row["reference"] for row in listed.json()["results"]} == {"RKTQDM7W6S", "SIM1AB2CD4"}
    for payment in (paybill, prompt):
        assert api.get(f"/api/v1/payments/{payment.pk}/").status_code == 200
        assert admin_client.get(f"/admin/payments/payment/{payment.pk}/change/").status_code == 200
    assert admin_client.get("/admin/payments/payment/").status_code == 200
    for callback in InboundCallback.objects.all():
        assert admin_client.get(f"/admin/mpesa/inboundcallback/{callback.pk}/change/").status_code == 200
    assert admin_client.get("/admin/mpesa/inboundcallback/").status_code == 200


# --- text: names are cleaned, identifiers with control characters refused, NUL never acknowledged ------------


@pytest.mark.parametrize(
    ("names", "kept"),
    [
        ({"FirstName": "Jo\u0000hn"}, "John"),
        ({"FirstName": "John", "MiddleName": "\u001b[31mKamau\u0007", "LastName": "Doe"}, "John [31mKamau Doe"),
        ({"FirstName": "Jo\ud800hn", "LastName": "Doe\u0085"}, "John Doe"),
        ({"FirstName": "Wan\tjiku"}, "Wan jiku"),
    ],
)
def test_control_characters_in_the_payers_name_are_removed_and_the_payment_is_credited(channel, wanjiku, names, kept):
    response = post(channel, "c2b-confirmation", confirmation(**names))

    assert response.json() == {"ResultCode": 0, "ResultDesc": "Success"}
    callback = services.process_callback(the_callback().pk)
    assert callback.status == "processed" and callback.outcome.startswith("credited to 10008")
    payment = Payment.objects.get()
    assert (payment.customer, payment.payer_name, payment.amount) == (wanjiku, kept, 1500)


def test_a_confirmation_stored_with_a_nul_in_the_name_that_failed_before_is_credited_by_the_retry_job(
    channel, wanjiku, clock
):
    stored = InboundCallback.objects.create(
        channel=channel,
        kind="c2b_confirmation",
        received_at=NOW,
        headers={},
        body=confirmation(FirstName="Jo\u0000hn"),  # json.dumps writes the NUL as the escape \\u0000
        status="failed",
        attempts=3,
        last_error="ValueError: PostgreSQL text fields cannot contain NUL (0x00) bytes",
    )
    clock.move_to(NOW + dt.timedelta(hours=1))

    assert services.retry_callbacks().as_dict() == {"picked": 1, "processed": 1}
    stored.refresh_from_db()
    assert stored.status == "processed" and Payment.objects.get().customer == wanjiku


@pytest.mark.parametrize("hook", ["c2b-confirmation", "c2b-validation"])
@pytest.mark.parametrize(
    "field", ["BillRefNumber", "MSISDN", "BusinessShortCode", "TransactionType"], ids=lambda field: f"{field}"
)
@pytest.mark.parametrize("bad", ["\u0000", "\ud800", "\u001b"], ids=["NUL", "lone surrogate", "escape"])
def test_an_identifier_holding_a_control_character_is_refused_kept_for_staff_and_never_paid(
    channel, wanjiku, hook, field, bad
):
    body = json.loads(confirmation())
    body[field] = f"{body[field][:3]}{bad}{body[field][3:]}"

    response = post(channel, hook, json.dumps(body))

    assert response.status_code == 400 and field in response.json()["error"]["fields"]
    callback = the_callback()
    assert callback.status == "rejected" and "control character" in callback.outcome
    assert services.process_callback(callback.pk).status == "rejected"
    assert nothing_paid()


def stk_success_with(request: StkRequest, edit) -> str:
    body = json.loads(stk_body(request))
    edit(body["Body"]["stkCallback"])
    return json.dumps(body)


def set_item(name: str, value):
    def edit(callback):
        for item in callback["CallbackMetadata"]["Item"]:
            if item["Name"] == name:
                item["Value"] = value

    return edit


UNSTORABLE = {
    "a NUL in ResultDesc": lambda callback: callback.update(ResultDesc="Processed\u0000"),
    "a lone surrogate in CheckoutRequestID": lambda callback: callback.update(
        CheckoutRequestID=callback["CheckoutRequestID"] + "\udfff"
    ),
    "a NUL in a key": lambda callback: callback.update({"Extra\u0000": 1}),
    "a NUL in PhoneNumber": set_item("PhoneNumber", "2547\u000012345678"),
}


@pytest.mark.parametrize("case", UNSTORABLE)
def test_an_stk_callback_holding_a_nul_is_refused_at_the_hook_and_the_request_waits_for_the_janitor(
    channel, wanjiku, fake, case
):
    request = push(fake, wanjiku, 1500)

    response = post(channel, "stk-callback", stk_success_with(request, UNSTORABLE[case]))

    assert response.status_code == 400 and response.json()["error"]["code"] == "unstorable_text"
    callback = the_callback()
    assert callback.status == "rejected" and "\x00" not in callback.outcome
    request.refresh_from_db()
    assert request.status == "pending" and nothing_paid()


def test_an_stk_callback_with_a_nul_stored_before_the_rule_is_rejected_by_the_worker(channel, wanjiku, fake):
    request = push(fake, wanjiku, 1500)
    stored = InboundCallback.objects.create(
        channel=channel,
        kind="stk_callback",
        received_at=NOW,
        headers={},
        body=stk_success_with(request, UNSTORABLE["a NUL in ResultDesc"]),
    )

    callback = services.process_callback(stored.pk)

    assert callback.status == "rejected" and "NUL" in callback.outcome
    request.refresh_from_db()
    assert request.status == "pending" and nothing_paid()


RESULT_WITH_A_NUL = {
    "Result": {
        "ResultType": 0,
        "ResultCode": 0,
        "ResultDesc": "The service request is processed successfully.",
        "OriginatorConversationID": "10816-694520-2",
        "ConversationID": "AG_20261215_0001",
        "TransactionID": "LGR919G2AV",
        "ResultParameters": {
            "ResultParameter": [
                {"Key": "ReceiptNo", "Value": "LGR919G2AV"},
                {"Key": "Amount", "Value": 450},
                {"Key": "TransactionStatus", "Value": "Completed"},
                {"Key": "DebitPartyName", "Value": "25470****149 - Jo\u0000hn"},
            ]
        },
    }
}


@pytest.mark.parametrize(
    "hook", ["status-result", "status-timeout", "b2c-result", "b2c-timeout", "reversal-result", "reversal-timeout"]
)
def test_a_result_holding_a_nul_is_refused_at_the_hook_kept_for_staff_and_never_paid(channel, hook):
    response = post(channel, hook, json.dumps(RESULT_WITH_A_NUL))

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "unstorable_text"
    assert "Result.ResultParameters.ResultParameter[3].Value" in error["fields"]
    callback = the_callback()
    assert callback.status == "rejected" and services.process_callback(callback.pk).status == "rejected"
    assert nothing_paid()


# --- amounts and keys as Daraja writes them, and nothing else -------------------------------------------------

ARABIC_INDIC = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")
DEVANAGARI = str.maketrans("0123456789", "०१२३४५६७८९")
FULLWIDTH = str.maketrans("0123456789", "０１２３４５６７８９")
ASCII = str.maketrans("٠١٢٣٤٥٦٧٨٩०१२३४५६७८९０１２３４５６７８９", "0123456789" * 3)

NOT_AN_AMOUNT = {
    "Arabic-Indic digits": '"١٠٠"',
    "fullwidth digits": '"１００"',
    "Devanagari digits with a point": '"१००.००"',
    "an exponent as text": '"1E+3"',
    "a small exponent as text": '"1e-2"',
    "an exponent as a JSON number": "1E+3",
    "a fraction by exponent as a JSON number": "100e-2",
    "a plus sign": '"+100"',
    "a thousands separator": '"1,500.00"',
    "a superscript digit": '"10²"',
}


@pytest.mark.parametrize("hook", ["c2b-confirmation", "c2b-validation"])
@pytest.mark.parametrize("case", NOT_AN_AMOUNT)
def test_a_c2b_amount_daraja_would_never_write_is_refused_and_kept_with_a_reason(channel, wanjiku, hook, case):
    body = confirmation(TransAmount="AMOUNT").replace('"AMOUNT"', NOT_AN_AMOUNT[case])

    response = post(channel, hook, body)

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_payload" and "TransAmount" in error["fields"]
    callback = the_callback()
    assert callback.status == "rejected" and "TransAmount" in callback.outcome
    assert nothing_paid()


@pytest.mark.parametrize("raw", ['"1500.00"', '"1500"', "1500", "1500.0", "1500.00"])
def test_an_amount_as_daraja_writes_it_is_credited_exactly(channel, wanjiku, raw):
    post(channel, "c2b-confirmation", confirmation(TransAmount="AMOUNT").replace('"AMOUNT"', raw))

    assert services.process_callback(the_callback().pk).status == "processed"
    assert Payment.objects.get().amount == 1500


@pytest.mark.parametrize("case", ["Arabic-Indic digits", "an exponent as a JSON number", "a small exponent as text"])
def test_an_stk_amount_daraja_would_never_write_is_rejected_and_nothing_is_paid(channel, wanjiku, fake, case):
    request = push(fake, wanjiku, 100)
    body = stk_success_with(request, set_item("Amount", "AMOUNT")).replace('"AMOUNT"', NOT_AN_AMOUNT[case])

    post(channel, "stk-callback", body)
    callback = services.process_callback(the_callback().pk)

    assert callback.status == "rejected" and "Amount" in callback.outcome
    request.refresh_from_db()
    assert request.status == "pending" and nothing_paid()


def test_an_stk_result_code_in_other_digits_is_no_success(channel, wanjiku, fake):
    request = push(fake, wanjiku, 100)

    post(channel, "stk-callback", stk_success_with(request, lambda callback: callback.update(ResultCode="٠")))
    services.process_callback(the_callback().pk)

    request.refresh_from_db()
    assert request.status == "failed" and nothing_paid()


def test_a_status_result_amount_in_fullwidth_digits_is_rejected_not_recorded(channel):
    body = json.dumps(RESULT_WITH_A_NUL).replace("Jo\\u0000hn", "John").replace("450", '"４５０"')
    post(channel, "status-result", body)

    callback = services.process_callback(the_callback().pk)

    assert callback.status == "rejected" and "Amount" in callback.outcome
    assert nothing_paid()


@pytest.mark.parametrize("amount", ['"１００"', "1E+2", '"1e2"'])
def test_a_refund_result_amount_daraja_would_never_write_is_refused(amount):
    body = {
        "Result": {
            "ResultCode": 0,
            "ConversationID": "AG_20261215_0002",
            "OriginatorConversationID": "feb5e3f2-fbbc-4745-844c-ee37b546f627",
            "TransactionID": "SLB1AB2CD5",
            "ResultParameters": {"ResultParameter": [{"Key": "TransactionAmount", "Value": "AMOUNT"}]},
        }
    }
    with pytest.raises(services.BadCallback) as refused:
        refunds.parse_refund_result(json.dumps(body).replace('"AMOUNT"', amount))

    assert refused.value.code == "bad_amount"


@pytest.mark.parametrize("paid_in", ["１,５００.００", "1E+3", "1,5OO.00"])
def test_a_statement_amount_in_other_digits_or_an_exponent_is_a_bad_row(channel, wanjiku, paid_in):
    row = f'SLB1AB2CD3,15-12-2026 11:00:00,15-12-2026 11:00:00,Pay Bill,Completed,"{paid_in}",,10008'

    report = reconciliation.import_statement(channel, f"{STATEMENT_HEADER}\n{row}\n")

    assert [(problem.line, problem.receipt) for problem in report.errors] == [(2, "SLB1AB2CD3")]
    assert "Paid In" in report.errors[0].message and nothing_paid()


TWICE = {
    "c2b-confirmation": '{"TransID": "RKTQDM7W6S", "TransAmount": "1.00", "TransAmount": "100000.00"}',
    "c2b-validation": '{"TransAmount": "1.00", "BillRefNumber": "10008", "BillRefNumber": "10016"}',
    "stk-callback": '{"Body": {"stkCallback": {"ResultCode": 1032, "ResultCode": 0}}}',
    "status-result": '{"Result": {"ResultParameters": {"ResultParameter": [{"Key": "Amount", "Value": 1, "Value": 9}]}}}',  # noqa: E501
    "status-timeout": '{"Result": {"ConversationID": "AG_1"}, "Result": {}}',
    "b2c-result": '{"Result": {"ResultCode": 1, "ResultCode": 0}}',
    "b2c-timeout": '{"Result": {}, "Result": {}}',
    "reversal-result": '{"Result": {"ResultCode": 1, "ResultCode": 0}}',
    "reversal-timeout": '{"Result": {}, "Result": {}}',
}


@pytest.mark.parametrize("hook", EVERY_HOOK)
def test_a_key_given_twice_in_one_object_is_refused_on_every_hook_and_kept(channel, wanjiku, hook):
    response = post(channel, hook, TWICE[hook])

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "duplicate_key" and "twice" in error["message"]
    callback = the_callback()
    assert callback.status == "rejected" and "twice" in callback.outcome
    assert services.process_callback(callback.pk).status == "rejected"
    assert nothing_paid()


# --- account references: ASCII digits, one rule everywhere ------------------------------------------------------


@pytest.fixture
def invoice(wanjiku):
    return issued_invoice(wanjiku, "INV-000001", "1500.00")


def references(invoice) -> dict[str, str]:
    return {
        "the invoice number in Arabic-Indic digits": invoice.number.translate(ARABIC_INDIC),
        "the account number in Devanagari digits": "10008".translate(DEVANAGARI),
        "the account number in fullwidth digits": "10008".translate(FULLWIDTH),
        "the phone in Arabic-Indic digits": "0712345678".translate(ARABIC_INDIC),
        "the account number with one fullwidth digit": "1000８",
    }


@pytest.mark.parametrize(
    "case",
    [
        "the invoice number in Arabic-Indic digits",
        "the account number in Devanagari digits",
        "the account number in fullwidth digits",
        "the phone in Arabic-Indic digits",
        "the account number with one fullwidth digit",
    ],
)
def test_a_reference_in_other_digits_matches_nobody_by_any_rule_and_waits_in_suspense(channel, wanjiku, invoice, case):
    reference = references(invoice)[case]
    assert selectors.match_account_reference(reference).customer is None
    assert selectors.match_account_references([reference])[reference].customer is None
    assert selectors.match_account_reference(reference.translate(ASCII)).customer == wanjiku  # the same in 0-9

    post(channel, "c2b-confirmation", confirmation(BillRefNumber=reference))
    callback = services.process_callback(the_callback().pk)

    assert callback.status == "processed" and "digits other than 0-9" in callback.outcome
    payment = Payment.objects.get()
    assert payment.customer is None and payment.amount == 1500  # in suspense, for staff to match
    invoice.refresh_from_db()
    assert invoice.amount_paid == 0


def test_a_validation_naming_a_reference_in_other_digits_is_rejected_when_the_channel_rejects_unknown_accounts(
    channel, wanjiku, invoice
):
    channel.validation = "reject_unknown"
    channel.save()

    response = post(channel, "c2b-validation", confirmation(BillRefNumber="INV-٠٠٠١"))

    assert response.json() == {"ResultCode": "C2B00012", "ResultDesc": "Rejected"}


def test_a_statement_row_whose_account_is_in_other_digits_goes_to_suspense(channel, wanjiku):
    row = "SLB1AB2CD3,15-12-2026 11:00:00,15-12-2026 11:00:00,Pay Bill,Completed,1500.00,,١٠٠٠٨"

    report = reconciliation.import_statement(channel, f"{STATEMENT_HEADER}\n{row}\n")

    assert [item.receipt for item in report.recorded_suspense] == ["SLB1AB2CD3"]
    assert Payment.objects.get().customer is None


# --- STK: a request is paid only at the amount it asked ---------------------------------------------------------


@pytest.mark.parametrize(("asked", "told"), [(11, "10.55"), (1500, "15"), (10, "10.01"), (100, "1000")])
def test_an_stk_success_for_another_amount_is_held_in_suspense_for_staff_never_credited(
    channel, wanjiku, fake, asked, told
):
    request = push(fake, wanjiku, asked)

    post(channel, "stk-callback", stk_body(request).replace(f'"Value": {asked}', f'"Value": {told}', 1))
    callback = services.process_callback(the_callback().pk)

    assert callback.status == "mismatch" and f"which asked KES {asked}" in callback.outcome
    payment = Payment.objects.get()
    assert (payment.customer, payment.amount, payment.reference) == (None, Decimal(told), "SIM1AB2CD3")
    assert booked(payment) == {("1030", Decimal(told)), ("2300", -Decimal(told))}  # suspense, not her credit
    assert customer_credit(wanjiku.pk) == 0
    request.refresh_from_db()
    assert (request.status, request.payment) == ("failed", None)
    assert f"KES {told}" in request.customer_message
    assert request.next_check_at is None  # the janitor will not pay it at the asked amount as well


def test_the_same_stk_success_for_another_amount_delivered_twice_is_held_once(channel, wanjiku, fake):
    request = push(fake, wanjiku, 11)
    body = stk_body(request).replace('"Value": 11', '"Value": 10.55', 1)

    first = (post(channel, "stk-callback", body), services.process_callback(the_callback().pk))[1]
    second = (post(channel, "stk-callback", body), services.process_callback(the_callback().pk))[1]

    assert (first.status, second.status) == ("mismatch", "duplicate")
    assert Payment.objects.get().amount == Decimal("10.55")


def test_an_stk_request_paid_by_the_query_then_told_another_amount_is_flagged_not_paid_twice(channel, wanjiku, fake):
    request = push(fake, wanjiku, 100)
    stk.settle_from_query(request.pk, daraja.StkQueryResult(request.checkout_request_id, False, "0", "paid", "MR", {}))

    post(channel, "stk-callback", stk_body(request).replace('"Value": 100', '"Value": 99.5', 1))
    callback = services.process_callback(the_callback().pk)

    assert callback.status == "mismatch" and "already paid" in callback.outcome
    payment = Payment.objects.get()
    assert (payment.amount, payment.customer) == (100, wanjiku)
    request.refresh_from_db()
    assert (request.status, request.receipt) == ("paid", "SIM1AB2CD3")  # the statement import compares amounts


@pytest.mark.parametrize("told", ["100", "100.0", "100.00"])
def test_an_stk_success_for_the_asked_amount_however_written_pays_the_request(channel, wanjiku, fake, told):
    request = push(fake, wanjiku, 100)

    post(channel, "stk-callback", stk_body(request).replace('"Value": 100', f'"Value": {told}', 1))
    callback = services.process_callback(the_callback().pk)

    assert callback.status == "processed"
    request.refresh_from_db()
    assert request.status == "paid" and request.payment.customer == wanjiku and request.payment.amount == 100


# --- what cannot be processed surfaces to staff, never sits silently ------------------------------------------


def needing_action() -> int:
    return Client().get("/healthz").json()["mpesa_callbacks_needing_action"]


def stored(channel, status: str, attempts: int = 0, **fields) -> InboundCallback:
    values = {"kind": "c2b_confirmation", "received_at": NOW, "headers": {}, "body": confirmation()}
    return InboundCallback.objects.create(channel=channel, status=status, attempts=attempts, **{**values, **fields})


def test_a_confirmation_whose_processing_keeps_failing_needs_action_once_its_retries_are_used_up(
    channel, wanjiku, clock, settings, monkeypatch
):
    settings.WAVU = {**settings.WAVU, "CALLBACK_MAX_ATTEMPTS": 3}

    def broken(receipts):
        raise ValueError("PostgreSQL text fields cannot contain NUL (0x00) bytes")

    monkeypatch.setattr("wavu.payments.bulk.record_payments", broken)
    post(channel, "c2b-confirmation", confirmation())
    services.drain_callbacks()
    assert (the_callback().status, needing_action()) == ("failed", 0)  # retried, not yet a person's

    for minutes in (1, 3, 7):
        clock.move_to(NOW + dt.timedelta(minutes=minutes, seconds=1))
        services.retry_callbacks()

    callback = the_callback()
    assert (callback.status, callback.attempts) == ("failed", 3)
    assert needing_action() == 1
    assert services.retry_callbacks(NOW + dt.timedelta(days=1)).picked == 0  # left for a person, counted


def test_healthz_and_the_admin_filter_count_the_same_callbacks_and_staff_mark_them_dealt_with(
    channel, wanjiku, fake, admin_client, admin_user
):
    post(channel, "c2b-confirmation", confirmation(TransTime="00010101000000"))  # refused at the hook
    request = push(fake, wanjiku, 11)
    post(channel, "stk-callback", stk_body(request).replace('"Value": 11', '"Value": 10.55', 1))
    services.process_callback(the_callback().pk)  # mismatch: held in suspense
    exhausted = stored(channel, "failed", attempts=8, last_error="ValueError: NUL")
    waiting = [
        stored(channel, "failed", attempts=2),  # still being retried
        stored(channel, "received"),
        stored(channel, "duplicate", attempts=1),
        stored(channel, "processed", attempts=1),
    ]
    flagged = set(InboundCallback.objects.filter(status__in=("rejected", "mismatch")).values_list("pk", flat=True))
    flagged.add(exhausted.pk)

    assert needing_action() == 3
    listing = admin_client.get("/admin/mpesa/inboundcallback/?needs_action=yes")
    assert listing.status_code == 200
    assert {callback.pk for callback in listing.context["cl"].result_list} == flagged

    asked = admin_client.post(
        "/admin/mpesa/inboundcallback/",
        {"action": "mark_dealt_with", "_selected_action": [*flagged, waiting[0].pk]},
    )
    assert asked.status_code == 200 and b"what was done" in asked.content  # asks for a note first
    assert needing_action() == 3
    done = admin_client.post(
        "/admin/mpesa/inboundcallback/",
        {
            "action": "mark_dealt_with",
            "_selected_action": [*flagged, waiting[0].pk],
            "apply": "1",
            "note": "Checked in the M-Pesa portal: held payment matched by hand",
        },
    )

    assert done.status_code == 302 and needing_action() == 0
    resolved = InboundCallback.objects.filter(resolved_at__isnull=False)
    assert set(resolved.values_list("pk", flat=True)) == flagged  # the one still being retried is left alone
    assert all(c.resolution == f"{admin_user.username}: Checked in the M-Pesa portal: held payment matched by hand"
               for c in resolved)  # fmt: skip
    assert AuditEvent.objects.filter(verb="mpesa callback resolved").count() == 3
    assert list(InboundCallback.objects.filter(pk=exhausted.pk).values_list("status", "outcome")) == [
        ("failed", "")
    ]  # the evidence is unchanged
    dealt_with = admin_client.get("/admin/mpesa/inboundcallback/?needs_action=dealt_with")
    assert {callback.pk for callback in dealt_with.context["cl"].result_list} == flagged


def test_marking_dealt_with_needs_a_note(channel):
    callback = stored(channel, "rejected")

    with pytest.raises(ValidationError):
        services.resolve_callbacks([callback.pk], note="  ")

    assert needing_action() == 1


def test_healthz_counts_with_one_query(channel, django_assert_max_num_queries):
    for _ in range(3):
        stored(channel, "rejected")

    with django_assert_max_num_queries(1):
        assert selectors.count_callbacks_needing_action() == 3


@pytest.mark.postgres_only
def test_the_count_can_use_the_partial_index(channel):
    stored(channel, "rejected")

    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
    plan = selectors.callbacks_needing_action().order_by().values("pk").explain()

    assert "callback_needs_action" in plan


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        ("\x1b[31m<script>alert('x')</script>\x07", {"User-Agent": "<b>curl</b>\x1b"}),
        ("x" * 200_000, ["not", "a", "dict"]),
        ("{\\x00\\xff\\xfe}", "a string"),
        ("", None),
    ],
    ids=["escapes and markup", "huge, headers a list", "escaped bytes", "empty"],
)
def test_the_stored_callback_admin_page_shows_any_stored_body(channel, admin_client, vendor, body, headers):
    if vendor == "sqlite":  # SQLite stores what PostgreSQL refuses: a raw NUL kept by older code
        body = body + "\x00tail"
        headers = {"X-Nul": "a\x00b"} if isinstance(headers, dict) else headers
    callback = stored(channel, "rejected", body=body, headers=headers if headers is not None else {})

    page = admin_client.get(f"/admin/mpesa/inboundcallback/{callback.pk}/change/")
    listing = admin_client.get("/admin/mpesa/inboundcallback/?needs_action=yes")

    assert page.status_code == 200 and listing.status_code == 200
    assert b"<script>" not in page.content and b"\x1b" not in page.content and b"\x00" not in page.content


def test_a_statement_row_holding_a_nul_is_a_bad_row_and_the_rest_is_imported(channel, wanjiku):
    rows = [
        "SLB1AB2CD3,15-12-2026 11:00:00,15-12-2026 11:00:00,Pay Bill,Completed,1500.00,,1000\x008",
        "SLB1AB2CD4,15-12-2026 11:01:00,15-12-2026 11:01:00,Pay Bill,Completed,200.00,,10008",
    ]

    report = reconciliation.import_statement(channel, "\n".join([STATEMENT_HEADER, *rows, ""]).encode())

    assert [(problem.line, problem.receipt) for problem in report.errors] == [(2, "SLB1AB2CD3")]
    assert "NUL" in report.errors[0].message
    assert [item.receipt for item in report.recorded_matched] == ["SLB1AB2CD4"]
    assert Payment.objects.get().customer == wanjiku


def test_staff_process_again_a_confirmation_whose_retries_ran_out_and_the_customer_is_credited_once(
    channel, wanjiku, admin_client
):
    # A confirmation with a NUL in FirstName, acknowledged before this fix: it failed until its retries ran out.
    exhausted = stored(channel, "failed", attempts=8, body=confirmation(FirstName="Jo\u0000hn"))
    untouched = stored(channel, "rejected", body=confirmation(TransTime="00010101000000"))
    assert needing_action() == 2

    for _ in range(2):
        admin_client.post(
            "/admin/mpesa/inboundcallback/",
            {"action": "process_again", "_selected_action": [exhausted.pk, untouched.pk]},
        )

    exhausted.refresh_from_db()
    untouched.refresh_from_db()
    assert (exhausted.status, exhausted.attempts) == ("processed", 9)
    assert untouched.status == "rejected"  # a refused request is not processed again
    payment = Payment.objects.get()
    assert (payment.customer, payment.payer_name, payment.amount) == (wanjiku, "John", 1500)
    assert needing_action() == 1


def test_the_needs_action_list_costs_the_same_queries_for_3_callbacks_as_for_30(channel, admin_client):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    def queries_for_the_list() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert admin_client.get("/admin/mpesa/inboundcallback/?needs_action=yes").status_code == 200
        return len(captured)

    for _ in range(3):
        stored(channel, "rejected", outcome="400: TransTime is not a date")
    few = queries_for_the_list()
    for _ in range(27):
        stored(channel, "rejected", outcome="400: TransTime is not a date")
    assert queries_for_the_list() == few
