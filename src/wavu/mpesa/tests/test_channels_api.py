"""The payment-channels API: staff only, secrets write-only, callback URLs shown, errors in the house format;
and one end-to-end run of the Daraja client against the local simulator over real HTTP."""

from __future__ import annotations

import json

import httpx
import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from wavu.core.models import AuditEvent
from wavu.mpesa import channels, daraja
from wavu.mpesa.models import AccessToken, PaymentChannel
from wavu.testing.api import staff_client

pytestmark = pytest.mark.django_db

URL = "/api/v1/payment-channels/"
SECRETS = {
    "consumer_key": "ck-123",
    "consumer_secret": "cs-s3cret-456",
    "passkey": "pk-789",
    "security_credential": "SC==",
}


@pytest.fixture
def api():
    return staff_client("ops")


def create(api, **fields):
    body = {"name": "Main paybill", "kind": "paybill", "shortcode": "174379", "environment": "sandbox", **SECRETS}
    body.update(fields)
    return api.post(URL, body, format="json")


def test_a_channel_created_with_secrets_never_shows_them_but_says_which_are_set(api, settings):
    settings.WAVU_PUBLIC_URL = "https://billing.isp.co.ke"
    response = create(api)
    assert response.status_code == 201, response.content
    text = response.content.decode()
    for secret in SECRETS.values():
        assert secret not in text
    data = response.json()
    assert data["secrets_set"] == dict.fromkeys(channels.SECRET_FIELDS, True)
    assert data["environment"] == "sandbox" and data["daraja_url"] == "https://sandbox.safaricom.co.ke"
    channel = PaymentChannel.objects.get()
    assert data["callback_urls"]["c2b_confirmation"] == (
        f"https://billing.isp.co.ke/hooks/c2b/{channel.hook_token}/confirmation"
    )
    assert data["last_c2b_registration"] is None
    for listed in (api.get(URL), api.get(f"{URL}{channel.pk}/")):
        assert listed.status_code == 200 and "cs-s3cret-456" not in listed.content.decode()


def test_bad_input_is_a_4xx_in_the_house_format_and_writes_nothing(api):
    response = create(api, kind="till", shortcode="17A379")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid" and set(error["fields"]) == {"shortcode", "till_number"}
    assert not PaymentChannel.objects.exists() and not AuditEvent.objects.exists()


def test_unknown_fields_and_readonly_ones_are_refused(api):
    response = create(api, hook_token="mine")
    assert response.status_code == 400 and "hook_token" in response.json()["error"]["fields"]
    assert not PaymentChannel.objects.exists()


def test_patch_changes_a_secret_without_echoing_it_and_omitted_secrets_stay(api):
    channel_id = create(api).json()["id"]
    response = api.patch(f"{URL}{channel_id}/", {"passkey": "", "consumer_secret": "rotated"}, format="json")
    assert response.status_code == 200 and "rotated" not in response.content.decode()
    assert response.json()["secrets_set"] == {
        "consumer_key": True, "consumer_secret": True, "passkey": False, "security_credential": True,
    }  # fmt: skip
    channel = PaymentChannel.objects.get()
    assert (channel.consumer_key, channel.consumer_secret) == ("ck-123", "rotated")


def test_a_forbidden_word_in_the_public_url_is_refused_clearly_when_registering(api, settings):
    settings.WAVU_PUBLIC_URL = "https://mpesa.isp.co.ke"
    channel_id = create(api).json()["id"]
    response = api.post(f"{URL}{channel_id}/register-c2b-urls/", {}, format="json")
    assert response.status_code == 400
    error = response.json()["error"]
    assert "Safaricom refuses callback URLs containing 'mpesa'" in error["message"]
    assert "WAVU_PUBLIC_URL" in error["fields"]


def test_registering_c2b_urls_through_the_api_calls_daraja_and_answers_what_was_registered(api, settings, monkeypatch):
    settings.WAVU_PUBLIC_URL = "https://billing.isp.co.ke"
    seen = []

    def handler(request):
        seen.append(request)
        if request.url.path == daraja.TOKEN_PATH:
            return httpx.Response(200, json={"access_token": "tok", "expires_in": "3599"})
        return httpx.Response(
            200, json={"OriginatorCoversationID": "1-2", "ResponseCode": "0", "ResponseDescription": "success"}
        )

    real_client = daraja.DarajaClient
    monkeypatch.setattr(
        daraja, "DarajaClient", lambda ch, **kw: real_client(ch, transport=httpx.MockTransport(handler))
    )
    channel_id = create(api).json()["id"]
    response = api.post(f"{URL}{channel_id}/register-c2b-urls/", {"response_type": "Cancelled"}, format="json")
    assert response.status_code == 200, response.content
    data = response.json()
    assert data["registered"] is True and data["originator_conversation_id"] == "1-2"
    assert json.loads(seen[-1].content)["ResponseType"] == "Cancelled"
    shown = api.get(f"{URL}{channel_id}/").json()["last_c2b_registration"]
    assert shown["registered"] is True and shown["by"] == "user:ops"


def test_daraja_refusing_a_registration_is_a_clear_error_not_a_500(api, monkeypatch):
    def handler(request):
        if request.url.path == daraja.TOKEN_PATH:
            return httpx.Response(
                400, json={"requestId": "r", "errorCode": "400.008.01", "errorMessage": "Invalid Authentication passed"}
            )
        raise AssertionError("no call after a refused token")

    real_client = daraja.DarajaClient
    monkeypatch.setattr(
        daraja, "DarajaClient", lambda ch, **kw: real_client(ch, transport=httpx.MockTransport(handler))
    )
    channel_id = create(api).json()["id"]
    response = api.post(f"{URL}{channel_id}/register-c2b-urls/", {}, format="json")
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "daraja_invalid_credentials"


def test_rotating_the_hook_token_through_the_api_changes_the_callback_urls(api):
    created = create(api).json()
    response = api.post(f"{URL}{created['id']}/rotate-hook-token/")
    assert response.status_code == 200
    assert response.json()["callback_urls"]["stk_callback"] != created["callback_urls"]["stk_callback"]


def test_only_staff_may_see_channels(db):
    client = APIClient()
    client.force_authenticate(get_user_model().objects.create_user("customer", password="x"))
    assert client.get(URL).status_code == 403
    assert APIClient().get(URL).status_code in (401, 403)


def test_the_admin_lists_channels_and_callbacks_without_secrets(admin_client, settings):
    channel = channels.create_channel(name="Main paybill", kind="paybill", shortcode="174379", **SECRETS)
    page = admin_client.get(f"/admin/mpesa/paymentchannel/{channel.pk}/change/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "cs-s3cret-456" not in html and "pk-789" not in html
    assert f"/hooks/c2b/{channel.hook_token}/confirmation" in html
    assert admin_client.get("/admin/mpesa/inboundcallback/?kind=c2b_confirmation").status_code == 200
    assert admin_client.get("/admin/mpesa/inboundcallback/add/").status_code == 403


def test_the_admin_saves_a_channel_through_the_service_and_keeps_empty_secrets(admin_client):
    channel = channels.create_channel(name="Main paybill", kind="paybill", shortcode="174379", **SECRETS)
    form = {
        "name": "Renamed", "kind": "paybill", "shortcode": "174379", "till_number": "", "is_active": "on",
        "environment": "sandbox", "base_url": "", "initiator_name": "", "consumer_key": "", "consumer_secret": "",
        "passkey": "new-passkey", "security_credential": "", "validation": "accept_all", "allowlist_mode": "enforce",
        "allowlist": channel.allowlist,
    }  # fmt: skip
    response = admin_client.post(f"/admin/mpesa/paymentchannel/{channel.pk}/change/", form)
    assert response.status_code == 302, response.content.decode()[:3000]
    channel.refresh_from_db()
    assert (channel.name, channel.passkey, channel.consumer_secret) == ("Renamed", "new-passkey", "cs-s3cret-456")
    assert AuditEvent.objects.filter(verb="update_channel").count() == 1


# --- end to end against the simulator ---------------------------------------------------------------------

simulator = pytest.importorskip("wavu.mpesa_simulator.server")


@pytest.fixture
def running_simulator():
    from wavu.mpesa_simulator.state import Config

    server = simulator.SimulatorServer(("127.0.0.1", 0), Config()).start()
    yield server
    server.stop()


def test_a_token_and_an_stk_push_against_the_real_simulator_over_http(running_simulator):
    from wavu.mpesa_simulator.state import SANDBOX_PASSKEY, Config

    config = Config()
    channel = channels.create_channel(
        name="Simulated paybill",
        kind="paybill",
        shortcode=config.paybill,
        environment="simulator",
        base_url=running_simulator.base_url,
        consumer_key=config.consumer_key,
        consumer_secret=config.consumer_secret,
        passkey=SANDBOX_PASSKEY,
    )
    with daraja.DarajaClient(channel, timeout=5) as client:
        token = client.access_token()
        result = client.stk_push(
            "0708374149", 10, "10009", "Internet", "http://127.0.0.1:9/hooks/stk/nothing-listens/callback"
        )
    assert token and result.checkout_request_id and result.response_code == "0"
    assert AccessToken.objects.get(channel=channel).token == token
