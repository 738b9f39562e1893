"""Payment channel services: validation, secrets kept out of the audit trail, callback URLs, C2B registration."""

from __future__ import annotations

import json

import httpx
import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from wavu.core import audit
from wavu.core.models import AuditEvent
from wavu.mpesa import channels, daraja, models
from wavu.mpesa.models import AccessToken, PaymentChannel

pytestmark = pytest.mark.django_db

SECRETS = {
    "consumer_key": "ck-123",
    "consumer_secret": "cs-s3cret-456",
    "passkey": "pk-789",
    "security_credential": "SC==",
}


def paybill(**fields):
    values = {"name": "Main paybill", "kind": "paybill", "shortcode": "174379", "environment": "sandbox", **SECRETS}
    values.update(fields)
    return channels.create_channel(**values)


def test_a_paybill_is_created_with_encrypted_secrets_and_an_audit_row_that_holds_none_of_them():
    channel = paybill()
    assert channel.consumer_secret == "cs-s3cret-456" and len(channel.hook_token) >= 43
    event = audit.history(channel).get()
    assert event.verb == "create_channel"
    text = json.dumps(event.after)
    for secret in (*SECRETS.values(), channel.hook_token):
        assert secret not in text
    assert event.after["secrets_set"] == sorted(SECRETS)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"shortcode": "17A379"}, "shortcode"),
        ({"shortcode": "1234"}, "shortcode"),
        ({"kind": "till"}, "till_number"),  # a till without its till number
        ({"till_number": "600101"}, "till_number"),  # a paybill with one
        ({"environment": "staging"}, "environment"),
        ({"environment": "production", "base_url": "http://daraja.example"}, "base_url"),
        ({"base_url": "not a url"}, "base_url"),
        ({"allowlist": "196.201.214.200 not-an-ip"}, "allowlist"),
        ({"name": ""}, "name"),
        ({"colour": "green"}, "colour"),
    ],
)
def test_bad_channel_input_is_refused_with_a_field_error_and_nothing_written(fields, field):
    with pytest.raises(ValidationError) as caught:
        paybill(**fields)
    assert field in caught.value.message_dict
    assert not PaymentChannel.objects.exists() and not AuditEvent.objects.exists()


def test_a_till_keeps_its_store_number_and_till_number():
    till = channels.create_channel(name="Shop", kind="till", shortcode="600100", till_number=" 600101 ")
    assert (till.shortcode, till.till_number, till.environment) == ("600100", "600101", "simulator")
    assert channels.secrets_set(till) == dict.fromkeys(channels.SECRET_FIELDS, False)


def test_a_till_that_would_reject_every_buy_goods_payment_is_refused_and_nothing_written():
    with pytest.raises(ValidationError) as caught:
        channels.create_channel(
            name="Shop", kind="till", shortcode="600100", till_number="600101", validation="reject_unknown"
        )

    assert "no account number" in caught.value.message_dict["validation"][0]
    assert not PaymentChannel.objects.exists()


def test_a_second_channel_with_the_same_shortcode_is_a_field_error():
    paybill()
    with pytest.raises(ValidationError) as caught:
        paybill(name="Copy")
    assert caught.value.message_dict == {"shortcode": ["Another channel already uses this shortcode."]}
    assert PaymentChannel.objects.count() == 1


def test_an_allowlist_accepts_addresses_and_networks_in_any_separator():
    channel = paybill(allowlist="196.201.214.200, 196.201.212.0/22\n2001:db8::/32")
    assert channel.allowlist == "196.201.214.200 196.201.212.0/22 2001:db8::/32"


def test_updating_keeps_omitted_secrets_clears_empty_ones_and_audits_only_that_they_changed():
    channel = paybill()
    channels.update_channel(channel, consumer_secret="new-s3cret", passkey="", name="Paybill", reason="rotated keys")

    assert (channel.consumer_key, channel.consumer_secret, channel.passkey) == ("ck-123", "new-s3cret", "")
    event = audit.history(channel).filter(verb="update_channel").get()
    assert event.after["consumer_secret"] == "changed" and event.after["passkey"] == "cleared"
    assert event.after["name"] == "Paybill" and "consumer_key" not in event.after
    assert "new-s3cret" not in json.dumps([event.before, event.after])
    assert event.reason == "rotated keys"


def test_an_update_that_changes_nothing_writes_nothing():
    channel = paybill()
    channels.update_channel(channel, name="Main paybill", consumer_key=None)
    assert not audit.history(channel).filter(verb="update_channel").exists()


def test_changing_credentials_drops_the_cached_token_but_other_changes_keep_it():
    channel = paybill()
    now = timezone.now()
    AccessToken.objects.create(channel=channel, token="t", expires_at=now, fetched_at=now)
    channels.update_channel(channel, validation="reject_unknown")
    assert AccessToken.objects.filter(channel=channel).exists()
    channels.update_channel(channel, consumer_secret="other")
    assert not AccessToken.objects.filter(channel=channel).exists()


def test_a_bad_update_changes_nothing():
    channel = paybill()
    with pytest.raises(ValidationError):
        channels.update_channel(channel, kind="till", name="Till now")
    channel.refresh_from_db()
    assert (channel.kind, channel.name) == ("paybill", "Main paybill")
    assert not audit.history(channel).filter(verb="update_channel").exists()


def test_callback_urls_are_the_public_address_plus_the_hook_paths(settings):
    settings.WAVU_PUBLIC_URL = "https://billing.isp.co.ke"
    channel = paybill()
    token = channel.hook_token
    assert channels.callback_urls(channel) == {
        "c2b_validation": f"https://billing.isp.co.ke/hooks/c2b/{token}/validation",
        "c2b_confirmation": f"https://billing.isp.co.ke/hooks/c2b/{token}/confirmation",
        "stk_callback": f"https://billing.isp.co.ke/hooks/stk/{token}/callback",
        "status_result": f"https://billing.isp.co.ke/hooks/status/{token}/result",
        "status_timeout": f"https://billing.isp.co.ke/hooks/status/{token}/timeout",
    }


@pytest.mark.parametrize(
    "public_url",
    ["https://mpesa.isp.co.ke", "https://isp.co.ke/M-Pesa", "https://SafariCom-pay.isp.co.ke", "https://isp.co.ke/Query",
     "https://sql.isp.co.ke", "https://isp.co.ke/app.exe", "https://cmd.isp.co.ke"],
)  # fmt: skip
def test_a_public_url_with_a_word_safaricom_refuses_is_refused_with_a_clear_error(settings, public_url):
    settings.WAVU_PUBLIC_URL = public_url
    channel = paybill()
    fake_requests = []
    client = daraja.DarajaClient(channel, transport=httpx.MockTransport(lambda r: fake_requests.append(r)))
    with pytest.raises(ValidationError) as caught:
        channels.register_c2b_urls(channel, client=client)
    message = caught.value.message_dict["WAVU_PUBLIC_URL"][0]
    assert "Safaricom refuses callback URLs containing" in message and "WAVU_PUBLIC_URL" in message
    assert caught.value.error_dict["WAVU_PUBLIC_URL"][0].code == "forbidden_url_word"
    assert fake_requests == []
    assert not audit.history(channel).filter(verb="register_c2b_urls").exists()


def test_hook_tokens_never_contain_a_forbidden_word(monkeypatch):
    tokens = iter(["abcSQLdef" * 5, "xyz-eXe-123" * 4, "clean_token_" * 4])
    monkeypatch.setattr(models.secrets, "token_urlsafe", lambda n: next(tokens))
    assert models.new_hook_token() == "clean_token_" * 4


def test_production_needs_https_callback_urls(settings):
    settings.WAVU_PUBLIC_URL = "http://billing.isp.co.ke"
    channel = paybill(environment="production")
    with pytest.raises(ValidationError, match="https"):
        channels.register_c2b_urls(channel, client=daraja.DarajaClient(channel, transport=httpx.MockTransport(None)))


def _daraja(answer_status=200, answer=None):
    seen = []

    def handler(request):
        seen.append(request)
        if request.url.path == daraja.TOKEN_PATH:
            return httpx.Response(200, json={"access_token": "tok", "expires_in": "3599"})
        return httpx.Response(answer_status, json=answer)

    return seen, handler


def test_registering_c2b_urls_sends_the_channel_urls_and_audits_the_outcome_without_the_token(settings):
    settings.WAVU_PUBLIC_URL = "https://billing.isp.co.ke"
    channel = paybill()
    seen, handler = _daraja(
        answer={"OriginatorCoversationID": "1-2", "ResponseCode": "0", "ResponseDescription": "success"}
    )
    result = channels.register_c2b_urls(
        channel, client=daraja.DarajaClient(channel, transport=httpx.MockTransport(handler))
    )
    assert result.response_description == "success"
    body = json.loads(seen[-1].content)
    urls = channels.callback_urls(channel)
    assert (body["ConfirmationURL"], body["ValidationURL"]) == (urls["c2b_confirmation"], urls["c2b_validation"])
    assert body["ResponseType"] == "Completed"
    last = channels.last_c2b_registration(channel)
    assert last["registered"] is True and last["message"] == "success"
    assert last["confirmation_url"] == "https://billing.isp.co.ke/hooks/c2b/<token>/confirmation"
    assert channel.hook_token not in json.dumps(audit.history(channel).filter(verb="register_c2b_urls").get().after)


def test_a_refused_registration_is_audited_and_reported():
    channel = paybill()
    seen, handler = _daraja(
        400, {"requestId": "r", "errorCode": "400.002.02", "errorMessage": "Bad Request - Invalid ValidationURL"}
    )
    with pytest.raises(daraja.DarajaBadRequest):
        channels.register_c2b_urls(channel, client=daraja.DarajaClient(channel, transport=httpx.MockTransport(handler)))
    last = channels.last_c2b_registration(channel)
    assert last["registered"] is False and last["error_code"] == "daraja_bad_request"
    assert "Invalid ValidationURL" in last["message"]


def test_rotating_the_hook_token_changes_every_callback_url_and_is_audited_without_tokens():
    channel = paybill()
    old_token, old_urls = channel.hook_token, channels.callback_urls(channel)
    channels.rotate_hook_token(channel, reason="leaked")
    assert channel.hook_token != old_token and len(channel.hook_token) >= 43
    assert set(channels.callback_urls(channel).values()).isdisjoint(old_urls.values())
    event = audit.history(channel).get(verb="rotate_hook_token")
    assert old_token not in json.dumps([event.before, event.after]) and channel.hook_token not in json.dumps(
        event.after
    )
