"""OAuth, token expiry, the error envelope for bad input, faults and the control API basics."""

from __future__ import annotations

import base64

from wavu.mpesa_simulator.tests.support import call, get_token


def basic(key: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:{secret}".encode()).decode()}


def test_the_sandbox_like_credentials_get_a_token_whose_lifetime_is_a_string(sim):
    status, body = call(
        "GET",
        sim.base_url + "/oauth/v1/generate?grant_type=client_credentials",
        headers=basic("wavu-sim-consumer-key", "wavu-sim-consumer-secret"),
    )
    assert status == 200
    assert set(body) == {"access_token", "expires_in"}
    assert body["expires_in"] == "3599"
    assert isinstance(body["access_token"], str) and len(body["access_token"]) >= 20


def test_wrong_credentials_or_grant_type_get_the_documented_envelope_and_no_token(sim):
    url = sim.base_url + "/oauth/v1/generate?grant_type=client_credentials"
    status, body = call("GET", url, headers=basic("wavu-sim-consumer-key", "wrong"))
    assert status == 400
    assert body["errorCode"] == "400.008.01" and set(body) == {"requestId", "errorCode", "errorMessage"}
    status, body = call("GET", url, headers={"Authorization": "Bearer whatever"})
    assert status == 400 and body["errorCode"] == "400.008.01"
    status, body = call("GET", sim.base_url + "/oauth/v1/generate?grant_type=password", headers=basic("a", "b"))
    assert status == 400 and body["errorCode"] == "400.008.02"
    assert sim.state.tokens == {}


def test_an_expired_or_unknown_token_is_refused_with_401(sim, clock, receiver):
    token = get_token(sim)
    push = {"Authorization": f"Bearer {token}"}
    url = sim.base_url + "/mpesa/stkpushquery/v1/query"
    status, body = call("POST", url, {"CheckoutRequestID": "x"}, headers=push)
    assert status == 400  # the token was fine; the body was not
    clock.now += 3600
    status, body = call("POST", url, {"CheckoutRequestID": "x"}, headers=push)
    assert status == 401
    assert body["errorCode"] == "401.002.01"
    assert body["errorMessage"].startswith("Error Occurred - Invalid Access Token")
    status, body = call("POST", url, {}, headers={"Authorization": "Bearer not-a-token"})
    assert (status, body["errorCode"]) == (401, "401.002.01")
    status, body = call("POST", url, {})
    assert (status, body["errorCode"]) == (401, "401.002.01")


def test_the_control_api_can_expire_every_token_at_once(sim):
    token = get_token(sim)
    status, body = call("POST", sim.base_url + "/simulator/tokens/expire")
    assert status == 200 and body == {"expired": 1}
    status, _ = call(
        "POST", sim.base_url + "/mpesa/c2b/v1/registerurl", {}, headers={"Authorization": f"Bearer {token}"}
    )
    assert status == 401


def test_malformed_bodies_get_the_400_envelope_never_a_crash(daraja):
    cases = [
        b"{not json",
        b"[1, 2, 3]",
        b"",
        b"\xff\xfe",
        b'"a string"',
    ]
    for raw in cases:
        status, body = daraja.post("/mpesa/stkpush/v1/processrequest", raw=raw)
        assert status == 400, raw
        assert body["errorCode"] == "400.002.02"
        assert body["errorMessage"].startswith("Bad Request - Invalid")
    # still alive and answering
    status, body = daraja.post("/mpesa/c2b/v1/registerurl", {"ShortCode": 174379})
    assert (status, body["errorMessage"]) == (400, "Bad Request - Invalid ResponseType")


def test_wrong_types_in_each_documented_field_are_named_in_the_error(daraja, receiver):
    url = receiver.url("/hooks/stk/t/callback")
    cases = {
        "Amount": [0, -5, 10.5, "ten", True, None, 10**9],
        "PhoneNumber": ["0708374149", "+254708374149", 254608374149, None, ["254708374149"]],
        "PartyA": ["0708374149"],
        "CallBackURL": ["not a url", "ftp://x", f"{url} ", None],
        "AccountReference": ["ACCOUNT-1234567", "", 12],
        "TransactionType": ["CustomerPayBill", None],
        "Timestamp": ["2024-06-07", 20240607123045, "20241399123045"],
        "PartyB": ["abc", None],
    }
    for field, values in cases.items():
        for value in values:
            status, body = daraja.stk_push(url, **{field: value})
            assert status == 400, (field, value)
            assert body["errorMessage"] == f"Bad Request - Invalid {field}", (field, value, body)
    status, body = daraja.stk_push(url, Password="d3Jvbmc=")
    assert body["errorMessage"] == "Bad Request - Invalid Password"
    status, body = daraja.stk_push(url, BusinessShortCode="999999")
    assert body["errorMessage"] == "Bad Request - Invalid BusinessShortCode"
    assert daraja.sim.state.list_transactions() == []


def test_an_oversized_body_is_refused(daraja):
    status, body = daraja.post("/mpesa/stkpush/v1/processrequest", raw=b"{" + b" " * 1_000_001 + b"}")
    assert status == 413 and body["errorCode"] == "400.002.02"


def test_unknown_paths_and_methods_answer_json(sim):
    status, body = call("GET", sim.base_url + "/mpesa/nothing/v1/here")
    assert status == 404 and "errorCode" in body
    status, body = call("GET", sim.base_url + "/simulator/nothing")
    assert status == 404 and body["error"]["code"] == "not_found"


def test_scripted_faults_answer_errors_then_stop(daraja):
    sim = daraja.sim
    status, fault = call(
        "POST", sim.base_url + "/simulator/faults", {"path": "/mpesa/c2b/v1/registerurl", "status": 429, "count": 2}
    )
    assert status == 200 and fault["errorCode"] == "429.001.01"
    body = {"ShortCode": "174379", "ResponseType": "Completed", "ConfirmationURL": "http://127.0.0.1:1/hooks/c2b/t/c"}
    assert daraja.post("/mpesa/c2b/v1/registerurl", body)[0] == 429
    status, answer = daraja.post("/mpesa/c2b/v1/registerurl", body)
    assert status == 429 and answer["errorMessage"] == "Spike arrest"
    assert daraja.post("/mpesa/c2b/v1/registerurl", body)[0] == 200


def test_the_control_api_changes_settings_and_refuses_bad_ones(sim):
    status, config = call("POST", sim.base_url + "/simulator/config", {"msisdn_form": "hashed", "token_ttl": 60})
    assert status == 200 and config["msisdn_form"] == "hashed" and config["token_ttl"] == 60
    status, body = call("POST", sim.base_url + "/simulator/config", {"token_ttl": "soon", "msisdn_form": "plain"})
    assert status == 400 and "token_ttl" in body["error"]["message"]
    assert sim.state.config.msisdn_form == "hashed"  # nothing changed on refusal
    status, body = call("POST", sim.base_url + "/simulator/config", raw=b"{oops")
    assert status == 400
    status, body = call("POST", sim.base_url + "/simulator/next", {"outcome": "bankrupt"})
    assert status == 400 and "unknown outcome" in body["error"]["message"]
    status, body = call("GET", sim.base_url + "/simulator")
    assert status == 200 and body["credentials"]["paybill"] == "174379"
