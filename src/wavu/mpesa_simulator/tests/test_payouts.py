"""B2C payments (v3 and v1) and reversals: validated like Daraja, acknowledged, then the documented Result
posted to ResultURL (or the timeout body to QueueTimeOutURL), as scripted."""

from __future__ import annotations

import re
import time

import pytest

from wavu.mpesa_simulator.tests.support import call, wait_until

RESULT = "/hooks/b2c/tok789/result"
TIMEOUT = "/hooks/b2c/tok789/timeout"
REV_RESULT = "/hooks/reversal/tok789/result"
REV_TIMEOUT = "/hooks/reversal/tok789/timeout"


def b2c_body(receiver, **changes):
    body = {
        "OriginatorConversationID": "feb5e3f2-fbbc-4745-844c-ee37b546f627",
        "InitiatorName": "testapi",
        "SecurityCredential": "encrypted==",
        "CommandID": "BusinessPayment",
        "Amount": "10",
        "PartyA": "600996",
        "PartyB": "254728762287",
        "Remarks": "here are my remarks",
        "QueueTimeOutURL": receiver.url(TIMEOUT),
        "ResultURL": receiver.url(RESULT),
        "Occassion": "Christmas",
    }
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None}


def reversal_body(receiver, receipt, **changes):
    body = {
        "Initiator": "testapi",
        "SecurityCredential": "encrypted==",
        "CommandID": "TransactionReversal",
        "TransactionID": receipt,
        "Amount": "750",
        "ReceiverParty": "174379",
        "RecieverIdentifierType": "11",
        "ResultURL": receiver.url(REV_RESULT),
        "QueueTimeOutURL": receiver.url(REV_TIMEOUT),
        "Remarks": "Payment reversal",
        "Occasion": "",
    }
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None}


def params(result: dict) -> dict:
    return {p["Key"]: p.get("Value") for p in result["ResultParameters"]["ResultParameter"]}


def paid_receipt(sim, amount=750) -> str:
    """A completed C2B payment the simulator knows (nothing registered: nobody is told)."""
    status, answer = call("POST", sim.base_url + "/simulator/c2b/pay", {"amount": amount, "account": "WV100234"})
    assert status == 200, answer
    receipt = answer["TransID"]
    assert wait_until(
        lambda: call("GET", f"{sim.base_url}/simulator/transactions/{receipt}")[1]["status"] == "completed"
    )
    return receipt


# --- B2C ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["v3", "v1"])
def test_a_b2c_payment_is_acknowledged_then_the_documented_result_is_posted(sim, daraja, receiver, version):
    status, answer = daraja.post(f"/mpesa/b2c/{version}/paymentrequest", b2c_body(receiver))

    assert status == 200 and answer["ResponseCode"] == "0"
    assert answer["OriginatorConversationID"] == "feb5e3f2-fbbc-4745-844c-ee37b546f627"
    assert re.fullmatch(r"AG_\d{8}_[0-9a-f]{20}", answer["ConversationID"])
    (body,) = receiver.wait_for(RESULT)
    result = body["Result"]
    assert (result["ResultType"], result["ResultCode"]) == (0, 0)
    assert result["ConversationID"] == answer["ConversationID"]
    assert result["OriginatorConversationID"] == answer["OriginatorConversationID"]
    values = params(result)
    assert values["TransactionReceipt"] == result["TransactionID"] and values["TransactionAmount"] == 10
    assert re.fullmatch(r"\d{2}\.\d{2}\.\d{4} \d{2}:\d{2}:\d{2}", values["TransactionCompletedDateTime"])
    assert values["ReceiverPartyPublicName"].startswith("254728762287 - ")
    assert values["B2CUtilityAccountAvailableFunds"] == 999_990
    assert values["B2CRecipientIsRegisteredCustomer"] == "Y"
    assert result["ReferenceData"]["ReferenceItem"] == {"Key": "QueueTimeoutURL", "Value": receiver.url(TIMEOUT)}
    assert sim.state.config.b2c_balance == 999_990


def test_v1_makes_up_the_originator_id_v3_requires_it(sim, daraja, receiver):
    status, answer = daraja.post("/mpesa/b2c/v1/paymentrequest", b2c_body(receiver, OriginatorConversationID=None))
    assert status == 200 and answer["OriginatorConversationID"]

    status, answer = daraja.post("/mpesa/b2c/v3/paymentrequest", b2c_body(receiver, OriginatorConversationID=None))
    assert (status, answer["errorMessage"]) == (400, "Bad Request - Invalid OriginatorConversationID")


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"CommandID": "Salary"}, "CommandID"),
        ({"Amount": "10.50"}, "Amount"),
        ({"Amount": 0}, "Amount"),
        ({"PartyA": "174379"}, "PartyA"),  # a paybill cannot pay out
        ({"PartyB": "0728762287"}, "PartyB"),
        ({"InitiatorName": ""}, "InitiatorName"),
        ({"SecurityCredential": None}, "SecurityCredential"),
        ({"Remarks": "x" * 101}, "Remarks"),
        ({"ResultURL": "not a url"}, "ResultURL"),
        ({"Occassion": None, "Occasion": "Christmas"}, "Occassion"),  # B2C spells it Occassion
    ],
)
def test_a_bad_b2c_request_is_a_400_naming_the_field_and_nothing_happens(sim, daraja, receiver, changes, field):
    status, answer = daraja.post("/mpesa/b2c/v3/paymentrequest", b2c_body(receiver, **changes))

    assert status == 400
    assert (answer["errorCode"], answer["errorMessage"]) == ("400.002.02", f"Bad Request - Invalid {field}")
    assert sim.state.list_transactions("b2c") == []


def test_a_payment_the_b2c_account_cannot_fund_fails_with_result_code_1(sim, daraja, receiver):
    call("POST", sim.base_url + "/simulator/config", {"b2c_balance": 5})

    daraja.post("/mpesa/b2c/v3/paymentrequest", b2c_body(receiver))

    (body,) = receiver.wait_for(RESULT)
    assert (body["Result"]["ResultCode"], body["Result"]["ResultDesc"]) == (
        1,
        "The balance is insufficient for the transaction.",
    )
    assert "ResultParameters" not in body["Result"] and sim.state.config.b2c_balance == 5


def test_a_wrong_initiator_fails_with_2001(sim, daraja, receiver):
    daraja.post("/mpesa/b2c/v3/paymentrequest", b2c_body(receiver, InitiatorName="someoneelse"))

    (body,) = receiver.wait_for(RESULT)
    assert body["Result"]["ResultCode"] == 2001


@pytest.mark.parametrize(("outcome", "code"), [("insufficient_funds", 1), ("not_registered", 2040)])
def test_a_queued_script_decides_the_next_payout(sim, daraja, receiver, outcome, code):
    status, _ = call("POST", sim.base_url + "/simulator/payouts/next", {"outcome": outcome})
    assert status == 200

    daraja.post("/mpesa/b2c/v3/paymentrequest", b2c_body(receiver))
    daraja.post("/mpesa/b2c/v3/paymentrequest", b2c_body(receiver))

    first, second = receiver.wait_for(RESULT, 2)
    assert sorted([first["Result"]["ResultCode"], second["Result"]["ResultCode"]]) == sorted([code, 0])


def test_a_queue_timeout_calls_the_timeout_url_instead_and_moves_no_money(sim, daraja, receiver):
    call("POST", sim.base_url + "/simulator/payouts/next", {"outcome": "queue_timeout"})

    _, answer = daraja.post("/mpesa/b2c/v3/paymentrequest", b2c_body(receiver))

    (body,) = receiver.wait_for(TIMEOUT)
    assert body["Result"]["ConversationID"] == answer["ConversationID"] and body["Result"]["ResultType"] == 1
    assert receiver.received(RESULT) == [] and sim.state.config.b2c_balance == 1_000_000
    assert sim.state.transaction(answer["ConversationID"])["status"] == "timed_out"


def test_duplicates_and_resends_post_the_same_result_again(sim, daraja, receiver):
    _, answer = daraja.post(
        "/mpesa/b2c/v3/paymentrequest", b2c_body(receiver), headers={"X-Simulator-Script": '{"copies": 2}'}
    )
    first, second = receiver.wait_for(RESULT, 2)
    assert first == second

    status, resent = call("POST", f"{sim.base_url}/simulator/payouts/{answer['ConversationID']}/resend", {})
    assert (status, resent) == (200, {"resent": 1})
    assert receiver.wait_for(RESULT, 3)[-1] == first
    assert sim.state.config.b2c_balance == 999_990  # paid once


def test_a_payout_script_with_an_stk_outcome_is_refused(sim, daraja, receiver):
    status, answer = call("POST", sim.base_url + "/simulator/payouts/next", {"outcome": "cancelled"})
    assert status == 400 and "unknown outcome" in answer["error"]["message"]
    status, answer = daraja.post(
        "/mpesa/b2c/v3/paymentrequest", b2c_body(receiver), headers={"X-Simulator-Script": '{"outcome": "cancelled"}'}
    )
    assert (status, answer["errorMessage"]) == (400, "Bad Request - Invalid X-Simulator-Script")


# --- Reversal ------------------------------------------------------------------------------------------------


def test_a_reversal_of_a_paid_receipt_posts_the_documented_result(sim, daraja, receiver):
    receipt = paid_receipt(sim)

    status, answer = daraja.post("/mpesa/reversal/v1/request", reversal_body(receiver, receipt))

    assert status == 200 and answer["ResponseCode"] == "0" and answer["ConversationID"].startswith("AG_")
    (body,) = receiver.wait_for(REV_RESULT)
    result = body["Result"]
    assert (result["ResultCode"], result["ConversationID"]) == (0, answer["ConversationID"])
    values = params(result)
    assert values["OriginalTransactionID"] == receipt and values["Amount"] == 750
    assert re.fullmatch(r"\d{14}", str(values["TransCompletedTime"]))
    assert values["DebitAccountBalance"].startswith("Utility Account|KES|0.00|")
    assert values["CreditPartyPublicName"].startswith("254708374149 - ")
    assert sim.state.transaction(receipt)["reversed_by"] == answer["ConversationID"]


def test_reversing_an_unknown_or_already_reversed_receipt_fails_in_the_result(sim, daraja, receiver):
    receipt = paid_receipt(sim)
    daraja.post("/mpesa/reversal/v1/request", reversal_body(receiver, receipt))
    daraja.post("/mpesa/reversal/v1/request", reversal_body(receiver, "SIMNOSUCH1"))
    receiver.wait_for(REV_RESULT, 2)
    daraja.post("/mpesa/reversal/v1/request", reversal_body(receiver, receipt))

    codes = [b["Result"]["ResultCode"] for b in receiver.wait_for(REV_RESULT, 3)]

    assert sorted(codes[:2], key=str) == sorted([0, "R000002"], key=str)
    assert codes[2] == "R000001"
    assert all(
        "ResultParameters" not in b["Result"] for b in receiver.received(REV_RESULT) if b["Result"]["ResultCode"]
    )


def test_a_receipt_is_reversed_only_on_the_shortcode_that_received_it(sim, daraja, receiver):
    receipt = paid_receipt(sim)

    daraja.post("/mpesa/reversal/v1/request", reversal_body(receiver, receipt, ReceiverParty="600100"))

    (body,) = receiver.wait_for(REV_RESULT)
    assert body["Result"]["ResultCode"] == "R000002"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"RecieverIdentifierType": None, "ReceiverIdentifierType": "11"}, "RecieverIdentifierType"),
        ({"RecieverIdentifierType": "4"}, "RecieverIdentifierType"),
        ({"CommandID": "Reversal"}, "CommandID"),
        ({"ReceiverParty": "999999"}, "ReceiverParty"),
        ({"Amount": "751"}, "Amount"),  # more than was paid
        ({"QueueTimeOutURL": ""}, "QueueTimeOutURL"),
    ],
)
def test_a_bad_reversal_request_is_a_400_naming_the_field(sim, daraja, receiver, changes, field):
    receipt = paid_receipt(sim)

    status, answer = daraja.post("/mpesa/reversal/v1/request", reversal_body(receiver, receipt, **changes))

    assert (status, answer["errorMessage"]) == (400, f"Bad Request - Invalid {field}")
    assert sim.state.list_transactions("reversal") == []


def test_a_reversal_queue_timeout_reverses_nothing(sim, daraja, receiver):
    receipt = paid_receipt(sim)
    call("POST", sim.base_url + "/simulator/payouts/next", {"outcome": "queue_timeout"})

    daraja.post("/mpesa/reversal/v1/request", reversal_body(receiver, receipt))

    (body,) = receiver.wait_for(REV_TIMEOUT)
    assert body["Result"]["ResultDesc"] == "The service request timed out."
    assert not sim.state.transaction(receipt).get("reversed_by")


def test_the_control_api_lists_payouts_and_describes_the_new_endpoints(sim, daraja, receiver):
    daraja.post("/mpesa/b2c/v3/paymentrequest", b2c_body(receiver))
    receiver.wait_for(RESULT)

    def listed_once_delivered():  # the simulator records the delivery just after the receiver answers
        deadline = time.monotonic() + 10
        while True:
            found = call("GET", sim.base_url + "/simulator/transactions?kind=b2c")[1]["transactions"]
            if (
                found and found[0]["deliveries"] and found[0]["deliveries"][0]["status"]
            ) or time.monotonic() > deadline:
                return found
            time.sleep(0.05)

    listed = listed_once_delivered()
    described = call("GET", sim.base_url + "/simulator")[1]

    assert [(t["kind"], t["status"], t["amount"]) for t in listed] == [("b2c", "completed", 10)]
    assert listed[0]["deliveries"][0]["purpose"] == "b2c_result"
    assert {"POST /mpesa/b2c/v3/paymentrequest", "POST /mpesa/reversal/v1/request"} <= {
        f"POST {path}" for path in described["daraja"] if path.startswith("/")
    }
    assert described["payout_outcomes"]["queue_timeout"] is None
    assert described["credentials"]["b2c_shortcode"] == "600996"
