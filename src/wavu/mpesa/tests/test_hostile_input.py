"""Hostile input at the hooks never loses a payment and never breaks a page.

Whatever reaches a hook with a valid token is kept and answered in Daraja's format, never with a
500; what a hook acknowledges can be processed; what cannot be is refused, kept for staff, and never
becomes money. Every request goes through the real hook URLs with Django's test client, which
raises on a server error, so a 500 fails the test. Run on SQLite and on PostgreSQL (whose text
columns refuse NUL characters)."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from wavu.ledger.models import JournalEntry
from wavu.mpesa import services
from wavu.mpesa.models import InboundCallback
from wavu.mpesa.tests.test_c2b_hooks import SAFARICOM_IP, c2b_payload, hook_url, make_channel
from wavu.payments.models import Payment

pytestmark = pytest.mark.django_db

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


@pytest.fixture
def channel():
    return make_channel()


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
