"""Vouchers against a real FreeRADIUS 3.2 (started as in `network.tests.test_radius_e2e`): a code logs
in by PAP as username and password; after its first login on a MAC-locked batch, only that device
gets in; a revoked code is rejected."""

from __future__ import annotations

import pytest
from django.utils import timezone

from wavu.hotspot import services
from wavu.network import services as network
from wavu.network import writer
from wavu.network.models import RadAcct
from wavu.network.tests.support import NAS_SECRET, radius_database, require_freeradius, running_freeradius

from .support import hotspot_plan, session_start

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.wall_clock]  # FreeRADIUS reads the real clock

FIRST_DEVICE, OTHER_DEVICE = "AA:BB:CC:DD:EE:01", "AA:BB:CC:DD:EE:99"


@pytest.fixture(autouse=True)
def freeradius_installed():
    require_freeradius()


def login(radius, code: str, mac: str):
    """A MikroTik hotspot's PAP Access-Request for `code` from the device `mac`."""
    from pyrad import packet

    client = radius.client(NAS_SECRET)
    request = client.CreateAuthPacket(code=packet.AccessRequest, User_Name=code, message_authenticator=True)
    request["NAS-IP-Address"] = "127.0.0.1"
    request["Calling-Station-Id"] = mac
    request["User-Password"] = request.PwCrypt(code)
    answer = client.SendPacket(request)
    return answer.code, {key: answer[key][0] for key in answer.keys()}  # noqa: SIM118 - pyrad's names


def test_a_voucher_logs_in_with_its_code_and_a_locked_one_only_from_its_first_device(tmp_path):
    network.create_nas(address="127.0.0.1", shortname="test-nas", secret=NAS_SECRET, type="mikrotik")
    batch = services.issue_batch(plan=hotspot_plan(), quantity=3, mac_lock=True)
    fresh, used, revoked = batch.vouchers.order_by("pk")
    first = session_start(used.code, timezone.now(), mac=FIRST_DEVICE)
    RadAcct.objects.filter(pk=first.pk).update(acctstoptime=timezone.now())  # logged out since
    assert services.drain_first_logins() == 1
    services.revoke_voucher(revoked, reason="card lost")
    writer.drain_sync_requests()

    with running_freeradius(tmp_path, database=radius_database(tmp_path)) as radius:
        from pyrad import packet

        code, reply = login(radius, fresh.code, OTHER_DEVICE)
        assert code == packet.AccessAccept, radius.log_tail()
        assert reply["Session-Timeout"] == 3 * 3600  # the package's length, from this first login

        code, reply = login(radius, used.code, FIRST_DEVICE)
        assert code == packet.AccessAccept, radius.log_tail()
        assert reply["Session-Timeout"] <= 3 * 3600

        assert login(radius, used.code, OTHER_DEVICE)[0] == packet.AccessReject
        assert login(radius, revoked.code, FIRST_DEVICE)[0] == packet.AccessReject
