"""STK push: the accepted answer, the callback for each scripted outcome, duplicates, lost and late
callbacks, and the query before and after the customer acts."""

from __future__ import annotations

import json

import pytest

from wavu.mpesa_simulator.tests.support import call, wait_until

HOOK = "/hooks/stk/tok123/callback"


def items_by_name(callback: dict) -> dict:
    return {item["Name"]: item.get("Value") for item in callback["CallbackMetadata"]["Item"]}


def test_a_paid_stk_push_answers_accepted_then_posts_the_documented_success_callback(daraja, receiver):
    status, answer = daraja.stk_push(receiver.url(HOOK), amount=1500)
    assert status == 200
    assert answer["ResponseCode"] == "0"
    assert answer["CustomerMessage"] == "Success. Request accepted for processing"
    assert answer["CheckoutRequestID"].startswith("ws_CO_")
    (body,) = receiver.wait_for(HOOK)
    callback = body["Body"]["stkCallback"]
    assert callback["CheckoutRequestID"] == answer["CheckoutRequestID"]
    assert callback["MerchantRequestID"] == answer["MerchantRequestID"]
    assert callback["ResultCode"] == 0
    items = items_by_name(callback)
    assert items["Amount"] == 1500
    assert len(items["MpesaReceiptNumber"]) == 10 and items["MpesaReceiptNumber"].startswith("SIM")
    assert "Balance" in items and items["Balance"] is None
    assert isinstance(items["TransactionDate"], int) and len(str(items["TransactionDate"])) == 14
    assert items["PhoneNumber"] == 254708374149
    record = wait_until(lambda: daraja.sim.state.transaction(answer["CheckoutRequestID"])["deliveries"])
    assert record[0]["status"] == 200 and record[0]["answer"] == {"ResultCode": 0, "ResultDesc": "Accepted"}


@pytest.mark.parametrize(
    ("phone", "code", "desc"),
    [
        ("254700000001", 1032, "Request cancelled by user"),
        ("254700000002", 2001, "The initiator information is invalid."),
        ("254700000003", 1, "The balance is insufficient for the transaction."),
        ("254700000004", 1037, "DS timeout user cannot be reached"),
    ],
)
def test_each_scripted_failure_posts_its_result_code_and_no_metadata(daraja, receiver, phone, code, desc):
    status, answer = daraja.stk_push(receiver.url(HOOK), phone=phone)
    assert status == 200 and answer["ResponseCode"] == "0"
    (body,) = receiver.wait_for(HOOK)
    callback = body["Body"]["stkCallback"]
    assert (callback["ResultCode"], callback["ResultDesc"]) == (code, desc)
    assert "CallbackMetadata" not in callback
    status, query = daraja.stk_query(answer["CheckoutRequestID"])
    assert (query["ResultCode"], query["ResultDesc"]) == (str(code), desc)


def test_outcomes_can_be_queued_for_the_next_pushes_or_set_per_phone_or_per_request(daraja, receiver):
    base = daraja.sim.base_url
    assert call("POST", base + "/simulator/next", {"outcome": "wrong_pin", "count": 2})[1] == {"queued": 2}
    assert call("PUT", base + "/simulator/phones/254711000111", {"outcome": "insufficient_funds"})[0] == 200
    daraja.stk_push(receiver.url(HOOK))
    daraja.stk_push(receiver.url(HOOK))
    daraja.stk_push(receiver.url(HOOK), phone="254711000111")
    daraja.stk_push(receiver.url(HOOK), headers={"X-Simulator-Script": json.dumps({"outcome": "cancelled"})})
    daraja.stk_push(receiver.url(HOOK))
    bodies = receiver.wait_for(HOOK, 5)
    codes = sorted(b["Body"]["stkCallback"]["ResultCode"] for b in bodies)
    assert codes == [0, 1, 1032, 2001, 2001]


def test_duplicate_delivery_posts_the_same_callback_n_times(daraja, receiver):
    status, answer = daraja.stk_push(receiver.url(HOOK), phone="254700000006")  # copies: 3
    bodies = receiver.wait_for(HOOK, 3)
    assert len(bodies) == 3 and bodies[0] == bodies[1] == bodies[2]
    assert items_by_name(bodies[0]["Body"]["stkCallback"])["MpesaReceiptNumber"]


def test_a_lost_callback_is_never_posted_but_the_query_knows_the_payment(daraja, receiver):
    status, answer = daraja.stk_push(receiver.url(HOOK), phone="254700000007")  # copies: 0
    checkout = answer["CheckoutRequestID"]
    assert wait_until(lambda: daraja.sim.state.transaction(checkout)["status"] == "completed")
    status, query = daraja.stk_query(checkout)
    assert status == 200 and query["ResultCode"] == "0"
    assert receiver.wait_for(HOOK, timeout=0.3) == []


def test_a_late_callback_arrives_after_the_query_already_shows_the_outcome(daraja, receiver):
    header = {"X-Simulator-Script": json.dumps({"callback_delay": 0.4})}
    status, answer = daraja.stk_push(receiver.url(HOOK), headers=header)
    checkout = answer["CheckoutRequestID"]
    assert wait_until(lambda: daraja.stk_query(checkout)[0] == 200)
    assert receiver.received(HOOK) == []
    (body,) = receiver.wait_for(HOOK)
    assert body["Body"]["stkCallback"]["ResultCode"] == 0


def test_the_query_says_still_processing_until_the_customer_acts(daraja, receiver):
    header = {"X-Simulator-Script": json.dumps({"outcome": "cancelled", "delay": 0.3})}
    status, answer = daraja.stk_push(receiver.url(HOOK), headers=header)
    status, pending = daraja.stk_query(answer["CheckoutRequestID"])
    assert status == 500
    assert pending["errorCode"] == "500.001.1001"
    assert pending["errorMessage"] == "The transaction is being processed"
    receiver.wait_for(HOOK)
    status, done = daraja.stk_query(answer["CheckoutRequestID"])
    assert status == 200
    assert done["ResponseCode"] == "0" and done["ResultCode"] == "1032"
    assert done["MerchantRequestID"] == answer["MerchantRequestID"]
    status, unknown = daraja.stk_query("ws_CO_000")
    assert (status, unknown["errorMessage"]) == (400, "Bad Request - Invalid CheckoutRequestID")


def test_no_callback_at_all_stays_pending_then_the_query_reports_a_timeout(daraja, receiver):
    status, answer = daraja.stk_push(receiver.url(HOOK), phone="254700000005")
    checkout = answer["CheckoutRequestID"]
    assert daraja.stk_query(checkout)[0] == 500
    assert wait_until(lambda: daraja.stk_query(checkout)[0] == 200)
    assert daraja.stk_query(checkout)[1]["ResultCode"] == "1037"
    assert receiver.wait_for(HOOK, timeout=0.2) == []


def test_a_manual_push_waits_for_the_control_api_and_can_be_resent(daraja, receiver):
    status, answer = daraja.stk_push(receiver.url(HOOK), phone="254700000009")
    checkout = answer["CheckoutRequestID"]
    assert receiver.wait_for(HOOK, timeout=0.2) == []
    base = daraja.sim.base_url
    status, record = call("POST", f"{base}/simulator/stk/{checkout}/resolve", {"outcome": "cancelled"})
    assert status == 200 and record["result_code"] == 1032
    receiver.wait_for(HOOK)
    assert call("POST", f"{base}/simulator/stk/{checkout}/resolve", {})[0] == 409
    assert call("POST", f"{base}/simulator/stk/{checkout}/resend", {"copies": 2})[1] == {"resent": 2}
    assert len(receiver.wait_for(HOOK, 3)) == 3


def test_a_till_push_with_the_wrong_party_b_gets_the_operator_error(daraja, receiver):
    sim = daraja.sim
    store, till = sim.state.config.till_store, sim.state.config.till
    body = daraja.stk_body(receiver.url(HOOK), TransactionType="CustomerBuyGoodsOnline", PartyB=store)
    body["BusinessShortCode"] = store
    body["Password"] = daraja.password(store, body["Timestamp"])
    status, answer = daraja.post("/mpesa/stkpush/v1/processrequest", body)
    assert status == 200
    (callback,) = receiver.wait_for(HOOK)
    assert callback["Body"]["stkCallback"]["ResultCode"] == "SFC_IC0003"
    body["PartyB"] = till
    daraja.post("/mpesa/stkpush/v1/processrequest", body)
    assert receiver.wait_for(HOOK, 2)[1]["Body"]["stkCallback"]["ResultCode"] == 0


def test_an_unreachable_callback_url_is_recorded_not_fatal(daraja):
    status, answer = daraja.stk_push("http://127.0.0.1:9/hooks/stk/t/callback")
    checkout = answer["CheckoutRequestID"]
    deliveries = wait_until(lambda: daraja.sim.state.transaction(checkout)["deliveries"])
    assert deliveries[0]["status"] is None and deliveries[0]["error"]
    status, listing = call("GET", daraja.sim.base_url + "/simulator/transactions?kind=stk")
    assert [t["id"] for t in listing["transactions"]] == [checkout]


def test_reset_forgets_transactions_and_cancels_pending_callbacks(daraja, receiver):
    header = {"X-Simulator-Script": json.dumps({"delay": 0.2})}
    daraja.stk_push(receiver.url(HOOK), headers=header)
    assert call("POST", daraja.sim.base_url + "/simulator/reset")[1] == {"reset": True}
    assert receiver.wait_for(HOOK, timeout=0.4) == []
    assert call("GET", daraja.sim.base_url + "/simulator/transactions")[1] == {"transactions": []}
