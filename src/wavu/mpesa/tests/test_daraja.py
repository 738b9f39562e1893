"""The Daraja client against the documented payloads (shared/reference/mpesa-daraja.md), over httpx.MockTransport."""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging

import httpx
import pytest
import time_machine
from django.core.exceptions import ValidationError
from django.utils import timezone

from wavu.mpesa import daraja
from wavu.mpesa.models import AccessToken, PaymentChannel

pytestmark = pytest.mark.django_db

PASSKEY = "bfb279f9aa9bdbcf158e97dd71a467cd2e0c893059b10f78e6b72ada1ed2c919"
CALLBACK = "https://billing.example.co.ke/hooks/stk/tok123/callback"
T0 = dt.datetime(2024, 6, 7, 9, 30, 45, tzinfo=dt.UTC)  # 12:30:45 in Nairobi

STK_ACCEPTED = {
    "MerchantRequestID": "2654-4b64-97ff-b827b542881d164797",
    "CheckoutRequestID": "ws_CO_18072024175449513769356298",
    "ResponseCode": "0",
    "ResponseDescription": "Success. Request accepted for processing",
    "CustomerMessage": "Success. Request accepted for processing",
}
QUERY_CANCELLED = {
    "ResponseCode": "0",
    "ResponseDescription": "The service request has been accepted successfully",
    "MerchantRequestID": "8555-67195-1",
    "CheckoutRequestID": "ws_CO_27072017151044001",
    "ResultCode": "1032",
    "ResultDesc": "[STK_CB - ]Request cancelled by user",
}


def envelope(code: str, message: str) -> dict:
    return {"requestId": "11728-2929992-1", "errorCode": code, "errorMessage": message}


class FakeDaraja:
    """A scripted Daraja: `answers[path]` is a list of responses (dicts: status/json, or an exception) used in
    order, the last one repeating; every request is recorded."""

    def __init__(self, answers: dict | None = None, *, ttl: str = "3599"):
        self.requests: list[httpx.Request] = []
        self.answers = answers or {}
        self.tokens_issued = 0
        self.ttl = ttl

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path
        if path == daraja.TOKEN_PATH and path not in self.answers:
            self.tokens_issued += 1
            return httpx.Response(200, json={"access_token": f"tok-{self.tokens_issued}", "expires_in": self.ttl})
        script = self.answers.get(path)
        if not script:
            return httpx.Response(404, json=envelope("404.001.01", "Resource not found"))
        answer = script.pop(0) if len(script) > 1 else script[0]
        if isinstance(answer, Exception):
            raise answer
        return httpx.Response(answer.get("status", 200), json=answer["json"], headers=answer.get("headers"))

    def calls(self, path: str) -> list[httpx.Request]:
        return [r for r in self.requests if r.url.path == path]

    def body(self, path: str, index: int = -1) -> dict:
        return json.loads(self.calls(path)[index].content)


def make_channel(**fields) -> PaymentChannel:
    now = timezone.now()
    values = dict(
        name="Main paybill",
        kind="paybill",
        shortcode="174379",
        environment="sandbox",
        consumer_key="ck-123",
        consumer_secret="cs-s3cret-456",
        passkey=PASSKEY,
        initiator_name="testapi",
        security_credential="SECCRED==",
        created_at=now,
        updated_at=now,
    )
    values.update(fields)
    return PaymentChannel.objects.create(**values)


@pytest.fixture
def channel():
    return make_channel()


@pytest.fixture
def sleeps():
    return []


def client_for(channel, fake, sleeps=None, **kwargs):
    return daraja.DarajaClient(
        channel, transport=httpx.MockTransport(fake), sleep=(sleeps.append if sleeps is not None else lambda s: None),
        **kwargs,
    )  # fmt: skip


# --- addresses and the token ---------------------------------------------------------------------------


def test_each_environment_talks_to_its_own_daraja_address(settings):
    settings.WAVU = {**settings.WAVU, "MPESA_SIMULATOR_URL": "http://127.0.0.1:9911/"}
    assert daraja.base_url_for(make_channel()) == "https://sandbox.safaricom.co.ke"
    assert daraja.base_url_for(make_channel(shortcode="600100", environment="production")) == (
        "https://api.safaricom.co.ke"
    )
    assert daraja.base_url_for(make_channel(shortcode="600200", environment="simulator")) == "http://127.0.0.1:9911"
    own = make_channel(shortcode="600300", environment="production", base_url="https://proxy.isp.example/daraja/")
    assert daraja.base_url_for(own) == "https://proxy.isp.example/daraja"


def test_the_token_is_fetched_with_basic_auth_and_shared_until_a_minute_before_it_expires(channel):
    fake = FakeDaraja({daraja.STK_QUERY_PATH: [{"json": QUERY_CANCELLED}]})
    with time_machine.travel(T0, tick=False) as traveller:
        client = client_for(channel, fake)
        client.stk_query("ws_CO_27072017151044001")
        # another process (another client) reuses the stored token
        client_for(PaymentChannel.objects.get(pk=channel.pk), fake).stk_query("ws_CO_27072017151044001")
        traveller.shift(3599 - 61)
        client.stk_query("ws_CO_27072017151044001")
        assert fake.tokens_issued == 1
        traveller.shift(2)  # now 59 s before expiry: refresh
        client.stk_query("ws_CO_27072017151044001")

    token_calls = fake.calls(daraja.TOKEN_PATH)
    assert len(token_calls) == 2
    assert token_calls[0].url.params["grant_type"] == "client_credentials"
    expected = base64.b64encode(b"ck-123:cs-s3cret-456").decode()
    assert token_calls[0].headers["Authorization"] == f"Basic {expected}"
    queries = fake.calls(daraja.STK_QUERY_PATH)
    assert [q.headers["Authorization"] for q in queries] == ["Bearer tok-1"] * 3 + ["Bearer tok-2"]
    row = AccessToken.objects.get(channel=channel)
    assert row.token == "tok-2" and row.expires_at == T0 + dt.timedelta(seconds=3599 - 59 + 3599)


def test_an_invalid_access_token_answer_fetches_a_new_token_once_and_repeats_the_call(channel):
    fake = FakeDaraja(
        {
            daraja.STK_QUERY_PATH: [
                {"status": 401, "json": envelope("401.002.01", "Error Occurred - Invalid Access Token - tok-1")},
                {"json": QUERY_CANCELLED},
            ]
        }
    )
    result = client_for(channel, fake).stk_query("ws_CO_27072017151044001")

    assert result.result_code == "1032" and not result.pending and not result.paid
    assert fake.tokens_issued == 2
    assert [q.headers["Authorization"] for q in fake.calls(daraja.STK_QUERY_PATH)] == ["Bearer tok-1", "Bearer tok-2"]
    assert AccessToken.objects.get(channel=channel).token == "tok-2"


def test_a_token_refused_twice_is_reported_not_retried_forever(channel):
    fake = FakeDaraja(
        {daraja.STK_QUERY_PATH: [{"status": 401, "json": envelope("401.002.01", "Invalid Access Token")}]}
    )
    with pytest.raises(daraja.InvalidAccessToken) as caught:
        client_for(channel, fake).stk_query("ws_CO_1")
    assert caught.value.code == "daraja_invalid_access_token" and caught.value.daraja_code == "401.002.01"
    assert fake.tokens_issued == 2 and len(fake.calls(daraja.STK_QUERY_PATH)) == 2


def test_wrong_consumer_credentials_are_reported_as_such(channel):
    fake = FakeDaraja(
        {daraja.TOKEN_PATH: [{"status": 400, "json": envelope("400.008.01", "Invalid Authentication passed")}]}
    )
    with pytest.raises(daraja.InvalidCredentials) as caught:
        client_for(channel, fake).stk_query("ws_CO_1")
    assert caught.value.code == "daraja_invalid_credentials" and "Invalid Authentication passed" in caught.value.message
    assert not fake.calls(daraja.STK_QUERY_PATH)
    assert "cs-s3cret-456" not in caught.value.message


def test_a_channel_without_credentials_is_refused_before_calling_daraja():
    channel = make_channel(consumer_key="", consumer_secret="")
    fake = FakeDaraja()
    with pytest.raises(daraja.ChannelNotConfigured):
        client_for(channel, fake).stk_query("ws_CO_1")
    assert fake.requests == []


def test_while_another_process_refreshes_the_token_the_still_valid_old_one_is_used(channel):
    with time_machine.travel(T0, tick=False):
        now = timezone.now()
        # the cached token expires in 30 s and another process claimed the refresh a second ago
        AccessToken.objects.create(
            channel=channel, token="old", expires_at=now + dt.timedelta(seconds=30), fetched_at=now
        )
        fake = FakeDaraja({daraja.STK_QUERY_PATH: [{"json": QUERY_CANCELLED}]})
        client_for(channel, fake).stk_query("ws_CO_1")
    assert fake.tokens_issued == 0
    assert fake.calls(daraja.STK_QUERY_PATH)[0].headers["Authorization"] == "Bearer old"


def test_an_expired_token_being_refreshed_elsewhere_is_waited_for_not_fetched_again(channel):
    with time_machine.travel(T0, tick=False):
        now = timezone.now()
        AccessToken.objects.create(
            channel=channel, token="old", expires_at=now - dt.timedelta(seconds=5), fetched_at=now
        )

        def other_process_stores_its_token(_seconds):
            AccessToken.objects.filter(channel=channel).update(
                token="fresh", expires_at=now + dt.timedelta(seconds=3599), fetched_at=now
            )

        fake = FakeDaraja({daraja.STK_QUERY_PATH: [{"json": QUERY_CANCELLED}]})
        client = daraja.DarajaClient(channel, transport=httpx.MockTransport(fake), sleep=other_process_stores_its_token)
        client.stk_query("ws_CO_1")
    assert fake.tokens_issued == 0
    assert fake.calls(daraja.STK_QUERY_PATH)[0].headers["Authorization"] == "Bearer fresh"


def test_a_failed_token_call_gives_the_refresh_back_for_the_next_caller(channel, sleeps):
    fake = FakeDaraja(
        {
            daraja.TOKEN_PATH: [{"status": 503, "json": envelope("503.003.01", "Service Unavailable")}],
            daraja.STK_QUERY_PATH: [{"json": QUERY_CANCELLED}],
        }
    )
    with time_machine.travel(T0, tick=False):
        with pytest.raises(daraja.DarajaUnavailable):
            client_for(channel, fake, sleeps).stk_query("ws_CO_1")
        assert len(fake.calls(daraja.TOKEN_PATH)) == 4  # idempotent: retried
        fake.answers.pop(daraja.TOKEN_PATH)
        client_for(channel, fake, sleeps).stk_query("ws_CO_1")  # no waiting for an abandoned claim
    assert fake.tokens_issued == 1 and len(sleeps) == 3


def test_a_failed_refresh_of_an_expired_token_is_given_back_too(channel, sleeps):
    """The claim on an existing token row is released to what it was, so the next caller does not wait
    CLAIM_SECONDS for a refresh nobody is making (it used to be "released" to the claim's own time)."""
    fake = FakeDaraja(
        {
            daraja.TOKEN_PATH: [{"status": 503, "json": envelope("503.003.01", "Service Unavailable")}],
            daraja.STK_QUERY_PATH: [{"json": QUERY_CANCELLED}],
        }
    )
    with time_machine.travel(T0, tick=False):
        now = timezone.now()
        fetched = now - dt.timedelta(hours=2)
        AccessToken.objects.create(
            channel=channel, token="old", expires_at=now - dt.timedelta(hours=1), fetched_at=fetched
        )
        with pytest.raises(daraja.DarajaUnavailable):
            client_for(channel, fake, sleeps).stk_query("ws_CO_1")
        assert AccessToken.objects.get(channel=channel).fetched_at == fetched
        fake.answers.pop(daraja.TOKEN_PATH)
        client_for(channel, fake, sleeps).stk_query("ws_CO_1")  # no waiting for an abandoned claim
    assert fake.tokens_issued == 1 and len(sleeps) == 3


# --- retries --------------------------------------------------------------------------------------------


def test_a_query_is_retried_with_growing_waits_on_429_and_503(channel, sleeps):
    fake = FakeDaraja(
        {
            daraja.STK_QUERY_PATH: [
                {"status": 429, "json": envelope("429.001.01", "Spike arrest")},
                {"status": 503, "json": envelope("503.003.01", "Service Unavailable")},
                {"json": QUERY_CANCELLED},
            ]
        }
    )
    result = client_for(channel, fake, sleeps).stk_query("ws_CO_27072017151044001")
    assert result.result_code == "1032"
    assert len(fake.calls(daraja.STK_QUERY_PATH)) == 3
    assert sleeps == [0.5, 1.0]


def test_a_retry_after_header_is_honoured_within_the_cap(channel, sleeps):
    fake = FakeDaraja(
        {
            daraja.STK_QUERY_PATH: [
                {"status": 429, "json": envelope("429.001.01", "Spike arrest"), "headers": {"Retry-After": "3"}},
                {"json": QUERY_CANCELLED},
            ]
        }
    )
    client_for(channel, fake, sleeps).stk_query("ws_CO_1")
    assert sleeps == [3.0]


def test_a_query_gives_up_after_its_retries_with_a_clear_error(channel, sleeps):
    fake = FakeDaraja({daraja.STK_QUERY_PATH: [{"status": 503, "json": envelope("503.003.01", "Service Unavailable")}]})
    with pytest.raises(daraja.DarajaUnavailable) as caught:
        client_for(channel, fake, sleeps).stk_query("ws_CO_1")
    assert caught.value.code == "daraja_unavailable" and caught.value.status == 503
    assert len(fake.calls(daraja.STK_QUERY_PATH)) == 4 and sleeps == [0.5, 1.0, 2.0]


def test_a_query_that_times_out_is_retried(channel, sleeps):
    fake = FakeDaraja({daraja.STK_QUERY_PATH: [httpx.ReadTimeout("slow"), {"json": QUERY_CANCELLED}]})
    assert client_for(channel, fake, sleeps).stk_query("ws_CO_1").result_code == "1032"
    assert len(fake.calls(daraja.STK_QUERY_PATH)) == 2


def test_a_request_still_waiting_for_the_customer_is_pending_not_an_error_and_not_retried(channel, sleeps):
    fake = FakeDaraja(
        {
            daraja.STK_QUERY_PATH: [
                {"status": 500, "json": envelope("500.001.1001", "The transaction is being processed")}
            ]
        }
    )
    result = client_for(channel, fake, sleeps).stk_query("ws_CO_1")
    assert result.pending and result.result_code is None and not result.paid
    assert len(fake.calls(daraja.STK_QUERY_PATH)) == 1 and sleeps == []


@pytest.mark.parametrize(
    "answer",
    [
        {"status": 503, "json": envelope("503.003.01", "Service Unavailable")},
        {"status": 500, "json": envelope("500.003.02", "Internal Server Error")},
        httpx.ReadTimeout("no answer"),
        httpx.RemoteProtocolError("connection dropped"),
    ],
    ids=["503", "500", "timeout", "dropped"],
)
def test_an_stk_push_is_never_sent_twice_when_its_outcome_is_unknown(channel, sleeps, answer):
    fake = FakeDaraja({daraja.STK_PUSH_PATH: [answer, {"json": STK_ACCEPTED}]})
    with pytest.raises(daraja.StkPushOutcomeUnknown) as caught:
        client_for(channel, fake, sleeps).stk_push("0712345678", 100, "10009", "Internet", CALLBACK)
    assert caught.value.code == "stk_outcome_unknown"
    assert "Query" in caught.value.message
    assert len(fake.calls(daraja.STK_PUSH_PATH)) == 1 and sleeps == []


def test_an_stk_push_refused_by_rate_limiting_is_reported_not_retried(channel, sleeps):
    fake = FakeDaraja({daraja.STK_PUSH_PATH: [{"status": 429, "json": envelope("429.001.01", "Spike arrest")}]})
    with pytest.raises(daraja.DarajaRateLimited) as caught:
        client_for(channel, fake, sleeps).stk_push("0712345678", 100, "10009", "Internet", CALLBACK)
    assert caught.value.code == "daraja_rate_limited"
    assert len(fake.calls(daraja.STK_PUSH_PATH)) == 1 and sleeps == []


def test_an_stk_push_that_could_not_connect_is_unavailable_not_unknown(channel):
    fake = FakeDaraja({daraja.STK_PUSH_PATH: [httpx.ConnectError("refused")]})
    with pytest.raises(daraja.DarajaUnavailable) as caught:
        client_for(channel, fake).stk_push("0712345678", 100, "10009", "Internet", CALLBACK)
    assert not isinstance(caught.value, daraja.OutcomeUnknown)
    assert len(fake.calls(daraja.STK_PUSH_PATH)) == 1


def test_an_stk_push_with_a_stale_token_is_repeated_once_with_a_fresh_one(channel):
    fake = FakeDaraja(
        {
            daraja.STK_PUSH_PATH: [
                {"status": 401, "json": envelope("401.002.01", "Error Occurred - Invalid Access Token - x")},
                {"json": STK_ACCEPTED},
            ]
        }
    )
    result = client_for(channel, fake).stk_push("0712345678", 100, "10009", "Internet", CALLBACK)
    assert result.checkout_request_id == "ws_CO_18072024175449513769356298"
    assert len(fake.calls(daraja.STK_PUSH_PATH)) == 2 and fake.tokens_issued == 2


# --- documented errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "error", "code", "says"),
    [
        (400, envelope("400.002.02", "Bad Request - Invalid PhoneNumber"), daraja.DarajaBadRequest,
         "daraja_bad_request", "Invalid PhoneNumber"),
        (500, envelope("500.001.1001", "Unable to lock subscriber, a transaction is already in process for the "
                                       "current subscriber"), daraja.SubscriberBusy, "daraja_subscriber_busy",
         "1 to 3 minutes"),
        (404, envelope("404.001.04", "Invalid Access Token"), daraja.InvalidAccessToken,
         "daraja_invalid_access_token", "Invalid Access Token"),
        (403, envelope("403.009.01", "Something new"), daraja.DarajaError, "daraja_error", "403.009.01"),
    ],
    ids=["bad-request", "subscriber-busy", "invalid-token-404", "unknown"],
)  # fmt: skip
def test_documented_error_envelopes_become_clear_errors_with_stable_codes(channel, status, body, error, code, says):
    fake = FakeDaraja({daraja.STK_PUSH_PATH: [{"status": status, "json": body}]})
    with pytest.raises(error) as caught:
        client_for(channel, fake).stk_push("0712345678", 100, "10009", "Internet", CALLBACK)
    assert type(caught.value) is error
    assert caught.value.code == code and says in caught.value.message
    assert caught.value.envelope == body and caught.value.daraja_code == body["errorCode"]


def test_an_stk_push_not_accepted_is_an_error_with_the_raw_answer(channel):
    answer = {**STK_ACCEPTED, "ResponseCode": "1", "ResponseDescription": "Rejected"}
    fake = FakeDaraja({daraja.STK_PUSH_PATH: [{"json": answer}]})
    with pytest.raises(daraja.DarajaError) as caught:
        client_for(channel, fake).stk_push("0712345678", 100, "10009", "Internet", CALLBACK)
    assert caught.value.daraja_code == "1" and caught.value.envelope == answer


def test_a_body_that_is_not_json_is_a_clear_error(channel):
    def handler(request):
        if request.url.path == daraja.TOKEN_PATH:
            return httpx.Response(200, json={"access_token": "t", "expires_in": "3599"})
        return httpx.Response(200, text="<html>gateway</html>")

    with pytest.raises(daraja.DarajaError, match="not JSON"):
        daraja.DarajaClient(channel, transport=httpx.MockTransport(handler)).stk_query("ws_CO_1")


# --- STK push requests --------------------------------------------------------------------------------


def test_the_stk_password_and_timestamp_are_exactly_as_documented_for_a_fixed_time(channel):
    fake = FakeDaraja({daraja.STK_PUSH_PATH: [{"json": STK_ACCEPTED}]})
    with time_machine.travel(T0, tick=False):
        result = client_for(channel, fake).stk_push("0712 345 678", 1, "ACC12345", "Internet", CALLBACK)

    body = fake.body(daraja.STK_PUSH_PATH)
    assert body["Timestamp"] == "20240607123045"
    assert body["Password"] == base64.b64encode(f"174379{PASSKEY}20240607123045".encode()).decode()
    assert body == {
        "BusinessShortCode": "174379",
        "Password": body["Password"],
        "Timestamp": "20240607123045",
        "TransactionType": "CustomerPayBillOnline",
        "Amount": 1,
        "PartyA": "254712345678",
        "PartyB": "174379",
        "PhoneNumber": "254712345678",
        "CallBackURL": CALLBACK,
        "AccountReference": "ACC12345",
        "TransactionDesc": "Internet",
    }
    assert fake.calls(daraja.STK_PUSH_PATH)[0].headers["Content-Type"] == "application/json"
    assert result.merchant_request_id == "2654-4b64-97ff-b827b542881d164797"
    assert result.checkout_request_id == "ws_CO_18072024175449513769356298"
    assert result.customer_message == "Success. Request accepted for processing"


def test_a_till_push_uses_the_store_number_as_shortcode_and_the_till_as_party_b():
    till = make_channel(name="Shop till", kind="till", shortcode="600100", till_number="600101")
    fake = FakeDaraja({daraja.STK_PUSH_PATH: [{"json": STK_ACCEPTED}]})
    with time_machine.travel(T0, tick=False):
        client_for(till, fake).stk_push("254712345678", "250", "10009", "Internet", CALLBACK)
    body = fake.body(daraja.STK_PUSH_PATH)
    assert body["TransactionType"] == "CustomerBuyGoodsOnline"
    assert (body["BusinessShortCode"], body["PartyB"], body["Amount"]) == ("600100", "600101", 250)
    assert body["Password"] == base64.b64encode(f"600100{PASSKEY}20240607123045".encode()).decode()


@pytest.mark.parametrize(
    ("field", "kwargs"),
    [
        ("account_reference", {"account_reference": "ABCDEFGHIJKLM"}),  # 13 characters
        ("account_reference", {"account_reference": "INV#0012"}),
        ("account_reference", {"account_reference": "  "}),
        ("description", {"description": "Internet plan"[:13] + "s"}),  # 14 characters
        ("description", {"description": "Pay & go"}),
        ("amount", {"amount": "99.50"}),
        ("amount", {"amount": 99.0}),
        ("amount", {"amount": 0}),
        ("amount", {"amount": -5}),
        ("phone", {"phone": "0202345678"}),
        ("callback_url", {"callback_url": "https://billing.example.co.ke/hooks/stk/a b"}),
    ],
)
def test_stk_inputs_daraja_would_drop_or_refuse_are_refused_before_sending(channel, field, kwargs):
    fake = FakeDaraja({daraja.STK_PUSH_PATH: [{"json": STK_ACCEPTED}]})
    args = {
        "phone": "0712345678",
        "amount": 100,
        "account_reference": "10009",
        "description": "Internet",
        "callback_url": CALLBACK,
    }
    args.update(kwargs)
    with pytest.raises(ValidationError) as caught:
        client_for(channel, fake).stk_push(**args)
    assert field in caught.value.message_dict
    assert fake.requests == []  # not even a token call


def test_the_longest_allowed_reference_and_description_go_through_unchanged(channel):
    fake = FakeDaraja({daraja.STK_PUSH_PATH: [{"json": STK_ACCEPTED}]})
    client_for(channel, fake).stk_push("0712345678", "1500.00", "ABCDEFGHIJ-1", "Internet 30 d", CALLBACK)
    body = fake.body(daraja.STK_PUSH_PATH)
    assert (body["AccountReference"], body["TransactionDesc"], body["Amount"]) == (
        "ABCDEFGHIJ-1",
        "Internet 30 d",
        1500,
    )


def test_a_push_without_a_passkey_is_refused_before_sending():
    channel = make_channel(passkey="")
    fake = FakeDaraja()
    with pytest.raises(daraja.ChannelNotConfigured, match="passkey"):
        client_for(channel, fake).stk_push("0712345678", 100, "10009", "Internet", CALLBACK)
    assert fake.requests == []


def test_the_query_request_carries_the_password_and_checkout_id(channel):
    fake = FakeDaraja({daraja.STK_QUERY_PATH: [{"json": {**QUERY_CANCELLED, "ResultCode": "0"}}]})
    with time_machine.travel(T0, tick=False):
        result = client_for(channel, fake).stk_query("ws_CO_27072017151044001")
    body = fake.body(daraja.STK_QUERY_PATH)
    assert body == {
        "BusinessShortCode": "174379",
        "Password": base64.b64encode(f"174379{PASSKEY}20240607123045".encode()).decode(),
        "Timestamp": "20240607123045",
        "CheckoutRequestID": "ws_CO_27072017151044001",
    }
    assert result.paid and result.merchant_request_id == "8555-67195-1"


# --- C2B register, Transaction Status, Reversal --------------------------------------------------------


def test_c2b_url_registration_sends_the_documented_body_and_reads_the_misspelt_id(channel):
    answer = {"OriginatorCoversationID": "7619-37765134-1", "ResponseCode": "0", "ResponseDescription": "success"}
    fake = FakeDaraja({daraja.C2B_REGISTER_PATH: [{"json": answer}]})
    result = client_for(channel, fake).register_c2b_urls(
        "https://b.example/hooks/c2b/t/confirmation", "https://b.example/hooks/c2b/t/validation", "Cancelled"
    )
    assert fake.body(daraja.C2B_REGISTER_PATH) == {
        "ShortCode": "174379",
        "ResponseType": "Cancelled",
        "ConfirmationURL": "https://b.example/hooks/c2b/t/confirmation",
        "ValidationURL": "https://b.example/hooks/c2b/t/validation",
    }
    assert result.originator_conversation_id == "7619-37765134-1" and result.response_description == "success"


def test_c2b_registration_refuses_a_response_type_daraja_does_not_know(channel):
    fake = FakeDaraja()
    with pytest.raises(ValidationError):
        client_for(channel, fake).register_c2b_urls("https://b.example/c", "https://b.example/v", "completed")
    assert fake.requests == []


def test_transaction_status_sends_the_initiator_and_the_receipt(channel):
    answer = {
        "ConversationID": "AG_20170727_000059c52529a8e080bd",
        "OriginatorConversationID": "10816-694520-2",
        "ResponseCode": "0",
        "ResponseDescription": "Accept the service request successfully.",
    }
    fake = FakeDaraja(
        {daraja.TRANSACTION_STATUS_PATH: [{"status": 503, "json": envelope("503", "busy")}, {"json": answer}]}
    )
    result = client_for(channel, fake).transaction_status(
        "lkqrst1234", "https://b.example/hooks/status/t/result", "https://b.example/hooks/status/t/timeout"
    )
    assert fake.body(daraja.TRANSACTION_STATUS_PATH) == {
        "Initiator": "testapi",
        "SecurityCredential": "SECCRED==",
        "CommandID": "TransactionStatusQuery",
        "TransactionID": "LKQRST1234",
        "PartyA": "174379",
        "IdentifierType": "4",
        "ResultURL": "https://b.example/hooks/status/t/result",
        "QueueTimeOutURL": "https://b.example/hooks/status/t/timeout",
        "Remarks": "Status check",
        "Occasion": "",
    }
    assert len(fake.calls(daraja.TRANSACTION_STATUS_PATH)) == 2  # idempotent: retried
    assert result.conversation_id == "AG_20170727_000059c52529a8e080bd"


def test_a_reversal_uses_darajas_spelling_and_is_never_repeated(channel, sleeps):
    fake = FakeDaraja({daraja.REVERSAL_PATH: [httpx.ReadTimeout("slow")]})
    with pytest.raises(daraja.OutcomeUnknown) as caught:
        client_for(channel, fake, sleeps).reversal(
            "PDU91HIVIT", 200, "https://b.example/r", "https://b.example/q", remarks="Duplicate payment"
        )
    assert not isinstance(caught.value, daraja.StkPushOutcomeUnknown)
    body = fake.body(daraja.REVERSAL_PATH)
    assert body["RecieverIdentifierType"] == "11" and body["ReceiverParty"] == "174379"
    assert (body["Amount"], body["CommandID"], body["TransactionID"]) == ("200", "TransactionReversal", "PDU91HIVIT")
    assert len(fake.calls(daraja.REVERSAL_PATH)) == 1 and sleeps == []


def test_initiator_calls_need_the_initiator_and_credential():
    channel = make_channel(security_credential="")
    fake = FakeDaraja()
    with pytest.raises(daraja.ChannelNotConfigured):
        client_for(channel, fake).transaction_status("LKQRST1234", "https://b.example/r", "https://b.example/q")
    assert fake.requests == []


def test_no_secret_ever_reaches_the_logs(channel, caplog):
    caplog.set_level(logging.DEBUG)
    fake = FakeDaraja(
        {
            daraja.STK_PUSH_PATH: [
                {"status": 401, "json": envelope("401.002.01", "Invalid Access Token")},
                {"json": STK_ACCEPTED},
            ],
            daraja.REVERSAL_PATH: [{"status": 500, "json": envelope("500.003.02", "Internal Server Error")}],
        }
    )
    client = client_for(channel, fake)
    client.stk_push("0712345678", 100, "10009", "Internet", CALLBACK)
    with pytest.raises(daraja.OutcomeUnknown):
        client.reversal("PDU91HIVIT", 200, "https://b.example/r", "https://b.example/q")
    password = fake.body(daraja.STK_PUSH_PATH)["Password"]
    for secret in ("cs-s3cret-456", PASSKEY, password, "SECCRED==", "tok-1", "tok-2", "0712345678", "254712345678"):
        assert secret not in caplog.text
    assert "stk push" in caplog.text  # it did log, masked
