"""Daraja credentials are stored encrypted and read back only with the right key."""

import pytest
from django.db import connection
from django.test import override_settings
from django.utils import timezone

from wavu.core import crypto
from wavu.mpesa.models import PaymentChannel

pytestmark = pytest.mark.django_db


def make_channel(**fields):
    now = timezone.now()
    return PaymentChannel.objects.create(
        name="Main paybill", kind="paybill", shortcode="174379", created_at=now, updated_at=now, **fields
    )


def raw(column: str, pk: int) -> str:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {column} FROM mpesa_paymentchannel WHERE id = %s", [pk])
        return cursor.fetchone()[0]


def test_a_consumer_secret_is_never_stored_in_clear_and_reads_back_as_typed():
    channel = make_channel(consumer_key="k3y-ABC", consumer_secret="s3cret-XYZ", passkey="bfb279f9aa9bdbcf")

    stored = raw("consumer_secret", channel.pk)
    assert stored.startswith("enc1:") and "s3cret-XYZ" not in stored
    fresh = PaymentChannel.objects.get(pk=channel.pk)
    assert (fresh.consumer_key, fresh.consumer_secret, fresh.passkey) == ("k3y-ABC", "s3cret-XYZ", "bfb279f9aa9bdbcf")
    assert fresh.initiator_name == "" and raw("security_credential", channel.pk) == ""


def test_each_channel_gets_its_own_long_random_hook_token():
    first, second = make_channel(), PaymentChannel.objects.create(
        name="Till", kind="till", shortcode="600100", till_number="5123456",
        created_at=timezone.now(), updated_at=timezone.now(),
    )  # fmt: skip
    assert len(first.hook_token) >= 43 and first.hook_token != second.hook_token


def test_a_secret_written_under_another_key_loads_as_unreadable_never_garbled():
    channel = make_channel(consumer_secret="s3cret-XYZ")
    stored = raw("consumer_secret", channel.pk)
    with override_settings(WAVU_ENCRYPTION_KEY=crypto.generate_key()):
        with pytest.raises(crypto.SecretUnreadable):
            crypto.decrypt(stored)
        fresh = PaymentChannel.objects.get(pk=channel.pk)  # the row still loads
        assert crypto.is_unreadable(fresh.consumer_secret) and fresh.consumer_secret
        assert fresh.consumer_key == ""  # nothing stored: nothing unreadable
        with pytest.raises(crypto.SecretUnreadable):
            str(fresh.consumer_secret)
        fresh.name = "Renamed"
        fresh.save()
    assert raw("consumer_secret", channel.pk) == stored  # written back exactly as it was
    assert PaymentChannel.objects.get(pk=channel.pk).consumer_secret == "s3cret-XYZ"
