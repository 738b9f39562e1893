"""A lost encryption key does not lock staff out (issue 10, item 4).

SECRET_KEY changed and WAVU_ENCRYPTION_KEY was never set: the Daraja credentials stored before cannot
be decrypted. The channel still lists, shows and saves in the API and the admin, each secret is shown
as "unreadable", new values replace them, anything that would need them to talk to Daraja is refused
with a clear 409 before anything is sent, and M-Pesa's callbacks keep becoming payments (the hook
token is not a secret at rest: it is stored as it is)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import httpx
import pytest
from django.db import connection
from django.test import Client, override_settings
from django.utils import timezone

from wavu.core import crypto
from wavu.core.models import AuditEvent
from wavu.mpesa import channels, daraja
from wavu.mpesa.models import AccessToken, PaymentChannel, RefundRequest, StkRequest
from wavu.mpesa.tests.test_c2b_hooks import c2b_payload, pay_by_paybill
from wavu.payments.models import Payment
from wavu.testing.api import staff_client
from wavu.testing.factories import CustomerFactory

pytestmark = pytest.mark.django_db

URL = "/api/v1/payment-channels/"
OLD_SECRET_KEY = "wavu-before-the-move-0123456789-abcdefghijklmnop"
NEW_SECRET_KEY = "wavu-after-the-move-9876543210-zyxwvutsrqponmlk"
SECRETS = {"consumer_key": "ck-123", "consumer_secret": "cs-s3cret-456", "passkey": "pk-789"}


def raw(column: str, pk: int) -> str:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {column} FROM mpesa_paymentchannel WHERE id = %s", [pk])
        return cursor.fetchone()[0]


def under_key(secret_key: str):
    """Wavu running with `secret_key` and no WAVU_ENCRYPTION_KEY (the key is derived from it)."""
    crypto._fernet.cache_clear()
    return override_settings(SECRET_KEY=secret_key, WAVU_ENCRYPTION_KEY="")


@pytest.fixture
def paybill():
    """A paybill whose credentials were entered before the move, with a cached Daraja token."""
    with under_key(OLD_SECRET_KEY):
        channel = channels.create_channel(
            name="Main paybill", kind="paybill", shortcode="600638", environment="sandbox", **SECRETS
        )
        AccessToken.objects.create(
            channel=channel,
            token="old-daraja-token",
            expires_at=timezone.now() + dt.timedelta(minutes=50),
            fetched_at=timezone.now(),
        )
    return channel


@pytest.fixture
def key_lost(paybill):
    """The server moved: a new SECRET_KEY, still no WAVU_ENCRYPTION_KEY."""
    with under_key(NEW_SECRET_KEY):
        yield
    crypto._fernet.cache_clear()


@pytest.fixture
def api(key_lost):
    return staff_client("ops")


@pytest.fixture
def admin_browser(key_lost, admin_user):
    browser = Client()
    browser.force_login(admin_user)  # signed in under the new SECRET_KEY (the move logged everybody out)
    return browser


def never_called(request):
    raise AssertionError(f"nothing may be sent to Daraja: {request.url}")


# --- the API ------------------------------------------------------------------------------------------


def test_the_api_lists_and_shows_the_channel_with_its_secrets_marked_unreadable(paybill, api):
    listed = api.get(URL)
    shown = api.get(f"{URL}{paybill.pk}/")

    assert listed.status_code == 200 and shown.status_code == 200
    [item] = listed.json()["results"]
    for data in (item, shown.json()):
        assert data["name"] == "Main paybill" and data["shortcode"] == "600638"
        assert data["secrets_status"] == {
            "consumer_key": "unreadable", "consumer_secret": "unreadable", "passkey": "unreadable",
            "security_credential": "not set",
        }  # fmt: skip
        assert data["secrets_set"] == {
            "consumer_key": True, "consumer_secret": True, "passkey": True, "security_credential": False,
        }  # fmt: skip
        assert data["callback_urls"]["c2b_confirmation"].endswith(f"/hooks/c2b/{paybill.hook_token}/confirmation")


def test_a_patch_with_new_secrets_replaces_the_unreadable_ones_under_the_current_key(paybill, api):
    stored_passkey = raw("passkey", paybill.pk)

    response = api.patch(
        f"{URL}{paybill.pk}/", {"consumer_key": "ck-new", "consumer_secret": "cs-new", "name": "Paybill"}, format="json"
    )

    assert response.status_code == 200, response.content
    assert "ck-new" not in response.content.decode() and "cs-new" not in response.content.decode()
    assert response.json()["secrets_status"] == {
        "consumer_key": "set", "consumer_secret": "set", "passkey": "unreadable", "security_credential": "not set",
    }  # fmt: skip
    assert crypto.decrypt(raw("consumer_key", paybill.pk)) == "ck-new"
    assert crypto.decrypt(raw("consumer_secret", paybill.pk)) == "cs-new"
    assert raw("passkey", paybill.pk) == stored_passkey  # not entered again: kept exactly as stored
    channel = PaymentChannel.objects.get(pk=paybill.pk)
    assert (channel.name, channel.consumer_key, channel.consumer_secret) == ("Paybill", "ck-new", "cs-new")
    assert crypto.is_unreadable(channel.passkey)
    assert not AccessToken.objects.filter(channel=paybill).exists()  # fetched again with the new credentials
    event = AuditEvent.objects.get(verb="update_channel")
    assert event.before["consumer_key"] == "unreadable" and event.after["consumer_key"] == "changed"
    assert event.before["secrets_unreadable"] == ["consumer_key", "consumer_secret", "passkey"]
    assert event.after["secrets_unreadable"] == ["passkey"]
    assert "ck-new" not in str(event.after) and "cs-new" not in str(event.after)


def test_a_patch_that_leaves_the_secrets_alone_keeps_them_for_when_the_old_key_comes_back(paybill, api):
    stored = {f: raw(f, paybill.pk) for f in SECRETS}

    response = api.patch(f"{URL}{paybill.pk}/", {"name": "Paybill (moved)"}, format="json")

    assert response.status_code == 200 and response.json()["name"] == "Paybill (moved)"
    assert {f: raw(f, paybill.pk) for f in SECRETS} == stored
    with under_key(OLD_SECRET_KEY):
        channel = PaymentChannel.objects.get(pk=paybill.pk)
        assert {f: getattr(channel, f) for f in SECRETS} == SECRETS and channel.name == "Paybill (moved)"


def test_registering_c2b_urls_is_refused_clearly_and_nothing_is_sent(paybill, api, monkeypatch):
    real_client = daraja.DarajaClient
    monkeypatch.setattr(
        daraja, "DarajaClient", lambda ch, **kw: real_client(ch, transport=httpx.MockTransport(never_called))
    )

    response = api.post(f"{URL}{paybill.pk}/register-c2b-urls/", {}, format="json")

    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "channel_credentials_unreadable"
    assert "consumer key, consumer secret cannot be decrypted" in error["message"]
    assert "Enter the Daraja credentials again" in error["message"]
    assert channels.last_c2b_registration(paybill)["error_code"] == "channel_credentials_unreadable"


def test_an_stk_push_is_refused_clearly_and_writes_nothing(paybill, api):
    wanjiku = CustomerFactory(account_number="10008", phone="254712345678")

    response = api.post("/api/v1/payment-requests/", {"purpose": "top_up", "customer": wanjiku.pk, "amount": 100})

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "channel_credentials_unreadable"
    assert not StkRequest.objects.exists()


def test_the_daraja_client_never_uses_a_token_or_secret_it_cannot_read(paybill, key_lost):
    channel = PaymentChannel.objects.get(pk=paybill.pk)
    assert crypto.is_unreadable(AccessToken.objects.get(channel=channel).token)

    with daraja.DarajaClient(channel, transport=httpx.MockTransport(never_called)) as client:
        with pytest.raises(daraja.CredentialsUnreadable, match="consumer key, consumer secret"):
            client.access_token()
        with pytest.raises(daraja.CredentialsUnreadable, match="passkey"):
            client.stk_push_payload("0712345678", 100, "10008", "Top up", "https://billing.isp.co.ke/hooks/x")
    with pytest.raises(crypto.SecretUnreadable):
        f"{channel.consumer_key}:{channel.consumer_secret}"  # noqa: B018 - never turned into text


def test_payments_reported_by_m_pesa_are_still_recorded(paybill, key_lost, django_capture_on_commit_callbacks):
    wanjiku = CustomerFactory(account_number="10008", phone="254712345678")

    response = pay_by_paybill(
        Client(), paybill, django_capture_on_commit_callbacks, c2b_payload(BillRefNumber="10008", TransAmount="1500")
    )

    assert response.status_code == 200
    payment = Payment.objects.get()
    assert (payment.customer, payment.amount, payment.source) == (wanjiku, Decimal("1500.00"), "600638")


def test_reversing_a_payment_is_refused_clearly_and_writes_nothing(paybill, api, django_capture_on_commit_callbacks):
    CustomerFactory(account_number="10008", phone="254712345678")
    pay_by_paybill(Client(), paybill, django_capture_on_commit_callbacks, c2b_payload(BillRefNumber="10008"))
    payment = Payment.objects.get()

    response = api.post(
        "/api/v1/refund-requests/",
        {"kind": "reversal", "payment": payment.pk, "reason": "paid to the wrong paybill"},
        format="json",
    )

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "channel_credentials_unreadable"
    assert not RefundRequest.objects.exists()
    payment.refresh_from_db()
    assert payment.status == "received"


# --- the admin ----------------------------------------------------------------------------------------


def test_the_admin_lists_and_opens_the_channel_and_says_its_secrets_must_be_entered_again(paybill, admin_browser):
    listed = admin_browser.get("/admin/mpesa/paymentchannel/")
    opened = admin_browser.get(f"/admin/mpesa/paymentchannel/{paybill.pk}/change/")

    assert listed.status_code == 200 and opened.status_code == 200
    for page in (listed, opened):
        html = page.content.decode()
        assert "Main paybill" in html
        assert "cannot be decrypted with the current encryption key" in html and "Enter them again" in html
    html = opened.content.decode()
    assert "consumer key: unreadable, consumer secret: unreadable, passkey: unreadable" in html
    assert "unreadable with the current encryption key: enter it again" in html
    assert "cs-s3cret-456" not in html and "enc1:" not in html


def test_the_admin_form_saves_new_secrets_under_the_current_key(paybill, admin_browser):
    form = {
        "name": "Main paybill", "kind": "paybill", "shortcode": "600638", "till_number": "", "is_active": "on",
        "environment": "sandbox", "base_url": "", "initiator_name": "", "consumer_key": "ck-new",
        "consumer_secret": "cs-new", "passkey": "pk-new", "security_credential": "", "validation": "accept_all",
        "allowlist_mode": "enforce", "allowlist": paybill.allowlist,
    }  # fmt: skip

    response = admin_browser.post(f"/admin/mpesa/paymentchannel/{paybill.pk}/change/", form)

    assert response.status_code == 302, response.content.decode()[:3000]
    assert [crypto.decrypt(raw(f, paybill.pk)) for f in SECRETS] == ["ck-new", "cs-new", "pk-new"]
    assert channels.secrets_status(PaymentChannel.objects.get(pk=paybill.pk)) == {
        "consumer_key": "set", "consumer_secret": "set", "passkey": "set", "security_credential": "not set",
    }  # fmt: skip
    assert "cannot be decrypted" not in admin_browser.get("/admin/mpesa/paymentchannel/").content.decode()
