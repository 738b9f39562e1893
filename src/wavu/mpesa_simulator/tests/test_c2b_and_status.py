"""C2B register + simulate (validation, then confirmation) and Transaction Status."""

from __future__ import annotations

import re

from wavu.mpesa_simulator.tests.support import call, wait_until

VALIDATE = "/hooks/c2b/tok456/validation"
CONFIRM = "/hooks/c2b/tok456/confirmation"
RESULT = "/hooks/status/tok456/result"


def register(daraja, receiver, *, version=1, response_type="Completed", shortcode="174379"):
    body = {
        "ShortCode": shortcode,
        "ResponseType": response_type,
        "ConfirmationURL": receiver.url(CONFIRM),
        "ValidationURL": receiver.url(VALIDATE),
    }
    status, answer = daraja.post(f"/mpesa/c2b/v{version}/registerurl", body)
    assert status == 200, answer
    assert answer["ResponseCode"] == "0" and "OriginatorCoversationID" in answer
    return answer


def simulate(daraja, *, version=1, amount="750", account="wv-100234", msisdn="254708374149", **extra):
    body = {
        "ShortCode": "174379",
        "CommandID": "CustomerPayBillOnline",
        "Amount": amount,
        "Msisdn": msisdn,
        "BillRefNumber": account,
        **extra,
    }
    return daraja.post(f"/mpesa/c2b/v{version}/simulate", body)


def test_a_paybill_payment_fires_validation_then_confirmation_with_the_documented_fields(daraja, receiver):
    register(daraja, receiver)
    status, answer = simulate(daraja)
    assert status == 200 and answer["ResponseCode"] == "0"
    (confirmation,) = receiver.wait_for(CONFIRM)
    (validation,) = receiver.received(VALIDATE)
    assert receiver.paths() == [VALIDATE, CONFIRM]
    assert re.fullmatch(r"SIM[A-Z0-9]{7}", confirmation["TransID"])
    assert re.fullmatch(r"\d{14}", confirmation["TransTime"])
    assert confirmation["TransAmount"] == "750.00"
    assert confirmation["TransactionType"] == "Pay Bill"
    assert confirmation["BusinessShortCode"] == "174379"
    assert confirmation["BillRefNumber"] == "wv-100234"
    assert confirmation["MSISDN"] == "254708374149"  # v1 registration: the plain number
    assert confirmation["FirstName"]
    assert confirmation["OrgAccountBalance"] == "750.00"
    assert validation["OrgAccountBalance"] == ""
    assert validation["TransID"] == confirmation["TransID"]
    for key in ("InvoiceNumber", "ThirdPartyTransID", "MiddleName", "LastName"):
        assert key in confirmation


def test_a_v2_registration_sends_a_masked_msisdn_or_a_sha256_hash(daraja, receiver):
    register(daraja, receiver, version=2)
    simulate(daraja, version=2)
    (first,) = receiver.wait_for(CONFIRM)
    assert first["MSISDN"] == "2547 ***** 149"
    call("POST", daraja.sim.base_url + "/simulator/config", {"msisdn_form": "hashed"})
    simulate(daraja, version=2, amount=100)
    second = receiver.wait_for(CONFIRM, 2)[1]
    assert re.fullmatch(r"[0-9a-f]{64}", second["MSISDN"])
    assert second["OrgAccountBalance"] == "850.00"


def test_a_rejecting_validation_stops_the_confirmation(daraja, receiver):
    receiver.answers[VALIDATE] = {"body": {"ResultCode": "C2B00012", "ResultDesc": "Rejected"}}
    register(daraja, receiver)
    status, answer = simulate(daraja, account="NOBODY")
    trans_id = answer["TransID"]
    receiver.wait_for(VALIDATE)
    assert wait_until(lambda: daraja.sim.state.transaction(trans_id)["status"] != "pending")
    record = daraja.sim.state.transaction(trans_id)
    assert (record["status"], record["result_code"]) == ("rejected", "C2B00012")
    assert receiver.wait_for(CONFIRM, timeout=0.3) == []


def test_a_silent_validation_url_lets_the_response_type_decide(daraja, receiver):
    daraja.sim.state.config.validation_timeout = 0.15
    receiver.answers[VALIDATE] = {"delay": 0.3}  # longer than the validation timeout
    register(daraja, receiver, response_type="Cancelled")
    status, answer = simulate(daraja)
    cancelled = wait_until(lambda: daraja.sim.state.transaction(answer["TransID"])["status"] == "cancelled")
    assert cancelled
    assert receiver.received(CONFIRM) == []
    register(daraja, receiver, response_type="Completed")
    simulate(daraja)
    assert len(receiver.wait_for(CONFIRM)) == 1


def test_an_accepted_validation_may_pass_a_third_party_id_to_the_confirmation(daraja, receiver):
    receiver.answers[VALIDATE] = {"body": {"ResultCode": "0", "ResultDesc": "Accepted", "ThirdPartyTransID": "W-42"}}
    register(daraja, receiver)
    simulate(daraja)
    (confirmation,) = receiver.wait_for(CONFIRM)
    assert confirmation["ThirdPartyTransID"] == "W-42"


def test_duplicate_confirmations_and_a_payment_nobody_hears_of(daraja, receiver):
    register(daraja, receiver)
    simulate(daraja, msisdn="254700000006")  # copies: 3
    confirmations = receiver.wait_for(CONFIRM, 3)
    assert len(confirmations) == 3 and len({c["TransID"] for c in confirmations}) == 1
    status, answer = simulate(daraja, msisdn="254700000007")  # copies: 0
    assert wait_until(lambda: daraja.sim.state.transaction(answer["TransID"])["status"] == "completed")
    assert len(receiver.wait_for(CONFIRM, 4, timeout=0.3)) == 3


def test_bad_c2b_requests_get_the_400_envelope(daraja, receiver):
    body = {"ShortCode": "174379", "ResponseType": "completed", "ConfirmationURL": receiver.url(CONFIRM)}
    assert daraja.post("/mpesa/c2b/v1/registerurl", body)[1]["errorMessage"] == "Bad Request - Invalid ResponseType"
    body.update(ResponseType="Completed", ConfirmationURL=receiver.url("/hooks/mpesa/confirm"))
    assert daraja.post("/mpesa/c2b/v2/registerurl", body)[1]["errorMessage"] == "Bad Request - Invalid ConfirmationURL"
    body.update(ConfirmationURL=receiver.url(CONFIRM), ShortCode="123")
    assert daraja.post("/mpesa/c2b/v1/registerurl", body)[1]["errorMessage"] == "Bad Request - Invalid ShortCode"
    for amount in ("-10", "10.50", "abc", 0, None, True):
        status, answer = simulate(daraja, amount=amount)
        assert (status, answer["errorMessage"]) == (400, "Bad Request - Invalid Amount"), amount
    assert simulate(daraja, msisdn="0708374149")[1]["errorMessage"] == "Bad Request - Invalid Msisdn"
    assert simulate(daraja, CommandID="Pay")[1]["errorMessage"] == "Bad Request - Invalid CommandID"
    assert daraja.sim.state.list_transactions() == []


def test_without_registered_urls_the_payment_completes_silently(daraja, receiver):
    status, answer = simulate(daraja)
    assert wait_until(lambda: daraja.sim.state.transaction(answer["TransID"])["status"] == "completed")
    assert receiver.paths() == []


def test_the_control_api_pays_a_till_without_a_token(daraja, receiver):
    store = daraja.sim.state.config.till_store
    register(daraja, receiver, shortcode=store, version=2)
    status, answer = call(
        "POST",
        daraja.sim.base_url + "/simulator/c2b/pay",
        {"shortcode": store, "command": "CustomerBuyGoodsOnline", "amount": 99, "phone": "254711222333"},
    )
    assert status == 200, answer
    (confirmation,) = receiver.wait_for(CONFIRM)
    assert confirmation["TransactionType"] == "Buy Goods" and confirmation["TransAmount"] == "99.00"
    assert confirmation["MSISDN"] == "2547 ***** 333"


def status_query(daraja, receiver, trans_id, **changes):
    body = {
        "Initiator": "testapi",
        "SecurityCredential": "ZW5jcnlwdGVk",
        "CommandID": "TransactionStatusQuery",
        "TransactionID": trans_id,
        "PartyA": "174379",
        "IdentifierType": "4",
        "ResultURL": receiver.url(RESULT),
        "QueueTimeOutURL": receiver.url("/hooks/status/tok456/timeout"),
        "Remarks": "Status check",
        "Occasion": "",
        **changes,
    }
    return daraja.post("/mpesa/transactionstatus/v1/query", body)


def test_transaction_status_of_a_known_payment_posts_its_details(daraja, receiver):
    register(daraja, receiver)
    simulate(daraja, amount=1200)
    (confirmation,) = receiver.wait_for(CONFIRM)
    status, answer = status_query(daraja, receiver, confirmation["TransID"])
    assert status == 200 and answer["ResponseCode"] == "0" and answer["ConversationID"].startswith("AG_")
    (body,) = receiver.wait_for(RESULT)
    result = body["Result"]
    assert (result["ResultType"], result["ResultCode"]) == (0, 0)
    assert result["ConversationID"] == answer["ConversationID"]
    params = {p["Key"]: p.get("Value") for p in result["ResultParameters"]["ResultParameter"]}
    assert params["ReceiptNo"] == confirmation["TransID"]
    assert params["Amount"] == 1200
    assert params["TransactionStatus"] == "Completed"
    assert params["FinalisedTime"] == int(confirmation["TransTime"])
    assert "TransactionReason" in params and params["TransactionReason"] is None


def test_transaction_status_of_an_stk_receipt(daraja, receiver):
    status, answer = daraja.stk_push(receiver.url("/hooks/stk/t/callback"), amount=5)
    (callback,) = receiver.wait_for("/hooks/stk/t/callback")
    items = {i["Name"]: i.get("Value") for i in callback["Body"]["stkCallback"]["CallbackMetadata"]["Item"]}
    status_query(daraja, receiver, items["MpesaReceiptNumber"])
    (body,) = receiver.wait_for(RESULT)
    params = {p["Key"]: p.get("Value") for p in body["Result"]["ResultParameters"]["ResultParameter"]}
    assert params["ReasonType"] == "Pay Bill Online" and params["Amount"] == 5


def test_transaction_status_of_an_unknown_id_posts_not_found(daraja, receiver):
    status, answer = status_query(daraja, receiver, "SIMNOTHERE")
    assert status == 200
    (body,) = receiver.wait_for(RESULT)
    assert body["Result"]["ResultCode"] == "R000001"
    assert "ResultParameters" not in body["Result"]


def test_transaction_status_with_the_wrong_initiator_or_fields(daraja, receiver):
    status_query(daraja, receiver, "SIMNOTHERE", Initiator="someone")
    (body,) = receiver.wait_for(RESULT)
    assert body["Result"]["ResultCode"] == 2001
    status, answer = status_query(daraja, receiver, "X", IdentifierType="9")
    assert (status, answer["errorMessage"]) == (400, "Bad Request - Invalid IdentifierType")
    status, answer = status_query(daraja, receiver, "X", CommandID="Balance")
    assert answer["errorMessage"] == "Bad Request - Invalid CommandID"
