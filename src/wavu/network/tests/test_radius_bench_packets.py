"""The RADIUS benchmark's hand-built packets (benchmarks/radius_auth.py) are what a RADIUS server
reads: pyrad, an independent implementation, decodes and verifies them, and the benchmark accepts
pyrad's signed answers and refuses forged ones. No database, no FreeRADIUS."""

import importlib.util
import sys
from pathlib import Path

import pytest
from pyrad import packet

from wavu.network.dictionary import dictionary

SECRET = b"wavu-bench-nas-secret-0123456789"
AUTHENTICATOR = bytes(range(16))


@pytest.fixture(scope="module")
def bench():
    path = Path(__file__).resolve().parents[4] / "benchmarks" / "radius_auth.py"
    spec = importlib.util.spec_from_file_location("radius_auth_bench", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


@pytest.mark.parametrize("password", ["cr52d5cwr569", "exactly16chars!!", "a-password-longer-than-sixteen-bytes"])
def test_a_bench_request_is_a_valid_pap_request_with_message_authenticator(bench, password):
    raw = bench.access_request(7, "1000002", password, SECRET, AUTHENTICATOR)

    parsed = packet.AuthPacket(packet=raw, secret=SECRET, dict=dictionary())

    assert parsed.code == packet.AccessRequest and parsed.id == 7
    assert parsed["User-Name"] == ["1000002"]
    assert parsed.PwDecrypt(parsed["User-Password"][0]) == password
    assert parsed["NAS-IP-Address"] == ["127.0.0.1"]
    assert parsed.verify_message_authenticator()
    assert raw[20] == 80, "Message-Authenticator is the first attribute"


def test_a_request_signed_with_another_secret_does_not_verify(bench):
    raw = bench.access_request(7, "1000002", "pw", b"another-secret-0123456789", AUTHENTICATOR)

    parsed = packet.AuthPacket(packet=raw, secret=SECRET, dict=dictionary())

    assert not parsed.verify_message_authenticator()


def _reply(bench, code, *, rate=None, secret=SECRET, ident=7):
    request = packet.AuthPacket(
        packet=bench.access_request(ident, "1000002", "pw", SECRET, AUTHENTICATOR), secret=secret, dict=dictionary()
    )
    reply = request.CreateReply()
    reply.code = code
    if rate:
        reply["Mikrotik-Rate-Limit"] = rate
    return reply.ReplyPacket()


def test_the_bench_reads_signed_accepts_and_rejects_and_finds_the_rate_limit(bench):
    accept = _reply(bench, packet.AccessAccept, rate="5M/10M")
    reject = _reply(bench, packet.AccessReject)

    assert bench.answer_code(accept, 7, AUTHENTICATOR, SECRET) == bench.ACCESS_ACCEPT
    assert bench.answer_code(reject, 7, AUTHENTICATOR, SECRET) == bench.ACCESS_REJECT
    assert bench.rate_limit_attribute("5M/10M") in accept
    assert bench.rate_limit_attribute("10M/20M") not in accept


def test_the_bench_refuses_a_forged_answer_or_one_to_another_request(bench):
    forged = _reply(bench, packet.AccessAccept, secret=b"not-the-nas-secret-0123")
    other = _reply(bench, packet.AccessAccept, ident=8)

    assert bench.answer_code(forged, 7, AUTHENTICATOR, SECRET) == 0
    assert bench.answer_code(other, 7, AUTHENTICATOR, SECRET) == 0
    assert bench.answer_code(other[:10], 7, AUTHENTICATOR, SECRET) == 0


def test_the_users_file_gives_each_user_its_check_and_reply_items(bench):
    text = bench.users_file(
        {"1000002": [("Cleartext-Password", ":=", 'p"w'), ("Simultaneous-Use", ":=", "1")]},
        {"1000002": [("Mikrotik-Rate-Limit", ":=", "5M/10M"), ("Session-Timeout", ":=", "86400")]},
    )

    assert text.splitlines()[:3] == [
        '"1000002"\tCleartext-Password := "p\\"w", Simultaneous-Use := "1"',
        '\tMikrotik-Rate-Limit := "5M/10M",',
        '\tSession-Timeout := "86400"',
    ]
