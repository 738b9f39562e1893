"""The HTTP server: Daraja's documented endpoints plus the ``/simulator/…`` control API.

Standard library only (``http.server.ThreadingHTTPServer``, ``json``, ``urllib.request``): a thread per
request; callbacks are posted from a small worker pool fed by one scheduler thread, each with a timeout,
so a slow or dead receiver never blocks a request. Every handler failure becomes a JSON error answer;
bad input gets Daraja's ``{"requestId", "errorCode", "errorMessage"}`` envelope with a 4xx status.
"""

from __future__ import annotations

import base64
import binascii
import heapq
import itertools
import json
import re
import secrets
import threading
import time
import traceback
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from wavu.mpesa_simulator import scenarios
from wavu.mpesa_simulator.state import (
    Config,
    State,
    first_name_for,
    msisdn_as,
    nairobi_now,
    stamp,
)

MAX_BODY = 1_000_000
PHONE_RE = re.compile(r"^254[17]\d{8}$")
SHORTCODE_RE = re.compile(r"^\d{5,7}$")
TIMESTAMP_RE = re.compile(r"^\d{14}$")
# Safaricom refuses C2B URLs containing these words (any case).
URL_KEYWORDS = ("m-pesa", "mpesa", "safaricom", "exe", "exec", "cmd", "sql", "query")
STK_TYPES = ("CustomerPayBillOnline", "CustomerBuyGoodsOnline")
C2B_COMMANDS = {"CustomerPayBillOnline": "Pay Bill", "CustomerBuyGoodsOnline": "Buy Goods"}
B2C_COMMANDS = ("BusinessPayment", "SalaryPayment", "PromotionPayment")
SCRIPT_HEADER = "X-Simulator-Script"

DEFAULT_FAULT_CODES = {
    429: ("429.001.01", "Spike arrest"),
    500: ("500.003.02", "Internal Server Error"),
    503: ("503.003.01", "Service Unavailable"),
}


class DarajaError(Exception):
    """Answered with Daraja's error envelope."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def bad_request(field: str) -> DarajaError:
    return DarajaError(400, "400.002.02", f"Bad Request - Invalid {field}")


class ControlError(Exception):
    """Answered with Wavu's ``{"error": {"code", "message"}}`` shape (control API only)."""

    def __init__(self, message: str, *, status: int = 400, code: str = "invalid"):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def request_id() -> str:
    return f"{secrets.randbelow(90000) + 10000}-{secrets.randbelow(9 * 10**6) + 10**6}-1"


# --- background delivery ---------------------------------------------------------------------------


class Dispatcher:
    """Runs jobs after a delay: one scheduler thread, a small pool of workers that do the posting."""

    def __init__(self, workers: int = 8, log: Callable[[str], None] | None = None):
        self._heap: list[tuple[float, int, Callable, tuple]] = []
        self._counter = itertools.count()
        self._cond = threading.Condition()
        self._running = True
        self._log = log or (lambda message: None)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mpesa-sim-callback")
        self._thread = threading.Thread(target=self._loop, name="mpesa-sim-scheduler", daemon=True)
        self._thread.start()

    def schedule(self, delay: float, fn: Callable, *args: Any) -> None:
        with self._cond:
            heapq.heappush(self._heap, (time.monotonic() + max(delay, 0.0), next(self._counter), fn, args))
            self._cond.notify()

    def _loop(self) -> None:
        with self._cond:
            while self._running:
                if not self._heap:
                    self._cond.wait()
                    continue
                wait = self._heap[0][0] - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                _, _, fn, args = heapq.heappop(self._heap)
                try:
                    self._pool.submit(self._guarded, fn, args)
                except RuntimeError:  # the pool is shutting down
                    return

    def _guarded(self, fn: Callable, args: tuple) -> None:
        try:
            fn(*args)
        except Exception:  # a job must never kill a worker
            self._log("background job failed:\n" + traceback.format_exc())

    def stop(self) -> None:
        with self._cond:
            self._running = False
            self._heap.clear()
            self._cond.notify_all()
        self._thread.join(timeout=2)
        self._pool.shutdown(wait=False, cancel_futures=True)


def post_json(url: str, payload: Any, timeout: float) -> dict[str, Any]:
    """POST JSON; never raises. Returns what happened: status, the answer (parsed when JSON), error."""
    data = json.dumps(payload).encode()
    request = urllib.request.Request(
        url, data=data, method="POST", headers={"Content-Type": "application/json", "User-Agent": "wavu-mpesa-sim"}
    )
    started = time.monotonic()
    outcome: dict[str, Any] = {"url": url, "at": nairobi_now().isoformat(timespec="milliseconds")}
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read(65536)
            outcome["status"] = response.status
    except urllib.error.HTTPError as exc:
        body = exc.read(65536) if exc.fp else b""
        outcome["status"] = exc.code
    except Exception as exc:  # timeouts, refused connections, bad URLs
        outcome.update(status=None, error=f"{type(exc).__name__}: {exc}", answer=None)
        outcome["seconds"] = round(time.monotonic() - started, 3)
        return outcome
    text = body.decode("utf-8", "replace")
    try:
        outcome["answer"] = json.loads(text) if text else None
    except ValueError:
        outcome["answer"] = text[:500]
    outcome["seconds"] = round(time.monotonic() - started, 3)
    return outcome


# --- input checks ----------------------------------------------------------------------------------


def digits(value: Any) -> str | None:
    """A numeric field sent as a string or a JSON integer → its digits, else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and value >= 0:
        return str(value)
    if isinstance(value, str) and value.isdigit() and value.isascii():
        return value
    return None


def whole_amount(value: Any, *, max_amount: int) -> int | None:
    """Whole shillings ≥ 1 given as an int, a whole float or a string of digits ("10", "10.00")."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"\d+(\.0+)?", text):
            value = int(text.split(".")[0])
    if isinstance(value, int) and 1 <= value <= max_amount:
        return value
    return None


def valid_url(value: Any) -> bool:
    if not isinstance(value, str) or not value or any(ch.isspace() for ch in value):
        return False
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def phone(value: Any) -> str | None:
    text = digits(value)
    return text if text and PHONE_RE.match(text) else None


def valid_timestamp(value: Any) -> bool:
    if not isinstance(value, str) or not TIMESTAMP_RE.match(value):
        return False
    try:
        datetime.strptime(value, "%Y%m%d%H%M%S")
    except ValueError:
        return False
    return True


# --- the server ------------------------------------------------------------------------------------


class SimulatorServer(ThreadingHTTPServer):
    """``SimulatorServer(("127.0.0.1", 0), config).start()`` runs it in a background thread (tests);
    ``serve_forever()`` runs it in the caller's thread (the command)."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        config: Config | None = None,
        *,
        state: State | None = None,
        log: Callable[[str], None] | None = None,
        verbose: bool = False,
    ):
        super().__init__(address, Handler)
        self.state = state or State(config)
        self.log = log or (lambda message: None)
        self.verbose = verbose
        self.dispatcher = Dispatcher(log=self.log)
        self.generation = 0  # bumped by a reset: jobs of an older generation do nothing
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> SimulatorServer:
        self._thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.01}, name="mpesa-sim-http", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self.dispatcher.stop()
        if self._thread:
            self._thread.join(timeout=2)

    def reset(self) -> None:
        with self.state.lock:
            self.generation += 1
            self.state.reset()

    # --- jobs (run on the dispatcher's workers) --------------------------------------------------

    def later(self, delay: float, fn: Callable, *args: Any) -> None:
        self.dispatcher.schedule(delay, self._if_current, self.generation, fn, args)

    def _if_current(self, generation: int, fn: Callable, args: tuple) -> None:
        if generation == self.generation:
            fn(*args)

    def deliver(self, txn_id: str, url: str, payload: Any, copy_no: int, purpose: str) -> None:
        result = post_json(url, payload, self.state.config.callback_timeout)
        result.update(copy=copy_no, purpose=purpose)
        self.state.add_delivery(txn_id, result)
        if self.verbose:
            self.log(f"{purpose} {txn_id} copy {copy_no} → {url}: {result.get('status') or result.get('error')}")

    def schedule_copies(self, txn_id: str, url: str, payload: Any, script: dict[str, Any], purpose: str) -> None:
        first = script.get("callback_delay", 0.0)
        for copy_no in range(1, script.get("copies", 1) + 1):
            delay = first + (copy_no - 1) * script.get("copy_interval", 0.2)
            self.later(delay, self.deliver, txn_id, url, payload, copy_no, purpose)

    # STK --------------------------------------------------------------------------------------------

    def settle_stk(self, checkout_id: str, outcome: str | None = None) -> dict[str, Any] | None:
        """Decide a pending STK push (its scripted outcome, or `outcome`) and schedule its callbacks.
        Does nothing (returns None) when it is no longer pending."""
        state = self.state
        with state.lock:
            record = state.transactions.get(checkout_id)
            if record is None or record["status"] != "pending":
                return None
            script = dict(record["script"])
            name = outcome or script["outcome"]
            code, desc = scenarios.OUTCOMES[name]
            if name == "manual":  # resolved without a named outcome: the customer paid
                name = "success"
            if record["wrong_party_b"] and name == "success":
                code, desc = scenarios.WRONG_PARTY_B
            callback: dict[str, Any] = {
                "MerchantRequestID": record["merchant_request_id"],
                "CheckoutRequestID": checkout_id,
                "ResultCode": code,
                "ResultDesc": desc,
            }
            changes: dict[str, Any] = {"status": "failed", "result_code": code, "result_desc": desc, "outcome": name}
            if code == 0:
                receipt = state.new_receipt()
                moment = nairobi_now()
                paid = script.get("amount", record["amount"])
                callback["CallbackMetadata"] = {
                    "Item": [
                        {"Name": "Amount", "Value": float(paid)},
                        {"Name": "MpesaReceiptNumber", "Value": receipt},
                        {"Name": "Balance"},
                        {"Name": "TransactionDate", "Value": int(stamp(moment))},
                        {"Name": "PhoneNumber", "Value": int(record["phone"])},
                    ]
                }
                state.credit(record["shortcode"], paid)
                changes.update(status="completed", receipt=receipt, paid_amount=paid, completed_at=stamp(moment))
            payload = {"Body": {"stkCallback": callback}}
            changes["callback"] = payload
            record = state.update_transaction(checkout_id, **changes)
        if name == "no_callback" and outcome is None:
            script["copies"] = 0
        self.schedule_copies(checkout_id, record["request"]["CallBackURL"], payload, script, "stk_callback")
        return record

    # C2B --------------------------------------------------------------------------------------------

    def run_c2b(self, trans_id: str) -> None:
        state = self.state
        record = state.transaction(trans_id)
        if record is None or record["status"] != "pending":
            return
        script = record["script"]
        with state.lock:
            registration = dict(state.registrations.get(record["shortcode"]) or {})
            validation_on = state.config.validation
            validation_timeout = state.config.validation_timeout
            default_form = state.config.msisdn_form
        form = script.get("msisdn_form") or (default_form if registration.get("version") == 2 else "plain")
        payload = {
            "TransactionType": C2B_COMMANDS[record["command"]],
            "TransID": trans_id,
            "TransTime": stamp(nairobi_now()),
            "TransAmount": f"{record['amount']}.00",
            "BusinessShortCode": record["shortcode"],
            "BillRefNumber": record["bill_ref"],
            "InvoiceNumber": "",
            "OrgAccountBalance": "",
            "ThirdPartyTransID": "",
            "MSISDN": msisdn_as(record["phone"], form),
            "FirstName": script.get("first_name") or first_name_for(record["phone"]),
            "MiddleName": "",
            "LastName": "",
        }
        if not registration:  # nothing registered: M-Pesa completes the payment and tells nobody
            self._complete_c2b(trans_id, payload, None, script)
            return
        if validation_on and registration.get("ValidationURL"):
            result = post_json(registration["ValidationURL"], payload, validation_timeout)
            result.update(copy=1, purpose="c2b_validation")
            state.add_delivery(trans_id, result)
            answer = result.get("answer")
            answered = (
                result.get("status") == 200 and isinstance(answer, dict) and str(answer.get("ResultCode", "")) != ""
            )
            if answered:
                code = str(answer["ResultCode"])
                if code != "0":
                    state.update_transaction(
                        trans_id, status="rejected", result_code=code, result_desc=str(answer.get("ResultDesc", ""))
                    )
                    return
                if isinstance(answer.get("ThirdPartyTransID"), str):
                    payload["ThirdPartyTransID"] = answer["ThirdPartyTransID"]
            elif registration["ResponseType"] == "Cancelled":
                state.update_transaction(
                    trans_id, status="cancelled", result_desc="validation did not answer; ResponseType Cancelled"
                )
                return
        self._complete_c2b(trans_id, payload, registration.get("ConfirmationURL"), script)

    def _complete_c2b(self, trans_id: str, payload: dict[str, Any], url: str | None, script: dict[str, Any]) -> None:
        record = self.state.transaction(trans_id)
        balance = self.state.credit(record["shortcode"], record["amount"])
        payload = dict(payload, OrgAccountBalance=f"{balance}.00")
        self.state.update_transaction(
            trans_id, status="completed", result_code=0, callback=payload, completed_at=payload["TransTime"]
        )
        if url:
            self.schedule_copies(trans_id, url, payload, script, "c2b_confirmation")

    # Transaction Status -------------------------------------------------------------------------------

    def run_status(self, conversation_id: str) -> None:
        state = self.state
        record = state.transaction(conversation_id)
        if record is None:
            return
        request = record["request"]
        wanted = request.get("TransactionID") or request.get("OriginalConversationID")
        with state.lock:
            initiator_ok = request["Initiator"] == state.config.initiator
            business = state.config.business_name
        found = state.by_receipt(wanted) if initiator_ok else None
        result: dict[str, Any] = {
            "ResultType": 0,
            "OriginatorConversationID": record["originator_conversation_id"],
            "ConversationID": conversation_id,
            "TransactionID": wanted,
        }
        if not initiator_ok:
            result["ResultCode"], result["ResultDesc"] = scenarios.STATUS_BAD_INITIATOR
        elif found is None or found["status"] != "completed":
            result["ResultCode"], result["ResultDesc"] = scenarios.STATUS_NOT_FOUND
        else:
            result["ResultCode"], result["ResultDesc"] = 0, scenarios.SUCCESS_DESC
            finalised = int(found["completed_at"])
            if found["kind"] == "stk":
                reason, amount = "Pay Bill Online", found["paid_amount"]
                party = f"{found['phone'][:4]} ***** {found['phone'][-3:]}"
            else:
                reason, amount = C2B_COMMANDS[found["command"]], found["amount"]
                party = found["callback"]["MSISDN"]
            result["ResultParameters"] = {
                "ResultParameter": [
                    {"Key": "ReceiptNo", "Value": found["receipt"]},
                    {"Key": "Conversation ID", "Value": conversation_id},
                    {"Key": "FinalisedTime", "Value": finalised},
                    {"Key": "Amount", "Value": amount},
                    {"Key": "TransactionStatus", "Value": "Completed"},
                    {"Key": "ReasonType", "Value": reason},
                    {"Key": "TransactionReason"},
                    {"Key": "DebitPartyCharges", "Value": ""},
                    {"Key": "DebitAccountType", "Value": "MMF Account For Customer"},
                    {"Key": "InitiatedTime", "Value": finalised},
                    {"Key": "Originator Conversation ID", "Value": record["originator_conversation_id"]},
                    {"Key": "CreditPartyName", "Value": f"{found['shortcode']} - {business}"},
                    {"Key": "DebitPartyName", "Value": f"{party} - {first_name_for(found['phone'])}"},
                ]
            }
        result["ReferenceData"] = {"ReferenceItem": {"Key": "Occasion", "Value": request.get("Occasion", "")}}
        payload = {"Result": result}
        state.update_transaction(conversation_id, status="answered", result_code=result["ResultCode"], callback=payload)
        self.deliver(conversation_id, request["ResultURL"], payload, 1, "status_result")

    # B2C and Reversal ("payouts") ---------------------------------------------------------------------

    def _payout_result(self, record: dict[str, Any], code: Any, desc: str) -> dict[str, Any]:
        return {
            "ResultType": 0,
            "ResultCode": code,
            "ResultDesc": desc,
            "OriginatorConversationID": record["originator_conversation_id"],
            "ConversationID": record["id"],
            "TransactionID": self.state.new_receipt(),
        }

    def _post_payout(self, record: dict[str, Any], result: dict[str, Any] | None, status: str, **changes) -> None:
        """Store the outcome of a payout and post it: the Result to ResultURL, or (queue_timeout) the
        timeout body to QueueTimeOutURL, or (no_callback) nothing."""
        script, request = record["script"], record["request"]
        outcome = script.get("outcome", "success")
        if outcome == "queue_timeout":
            code, desc = scenarios.TIMEOUT_RESULT
            payload = {
                "Result": {
                    "ResultType": 1,
                    "ResultCode": code,
                    "ResultDesc": desc,
                    "OriginatorConversationID": record["originator_conversation_id"],
                    "ConversationID": record["id"],
                }
            }
            self.state.update_transaction(record["id"], status="timed_out", result_code=None, callback=payload)
            self.schedule_copies(record["id"], request["QueueTimeOutURL"], payload, script, f"{record['kind']}_timeout")
            return
        result["ReferenceData"] = {"ReferenceItem": {"Key": "QueueTimeoutURL", "Value": request["QueueTimeOutURL"]}}
        payload = {"Result": result}
        self.state.update_transaction(
            record["id"], status=status, result_code=result["ResultCode"], callback=payload, **changes
        )
        if outcome == "no_callback":
            return
        self.schedule_copies(record["id"], request["ResultURL"], payload, script, f"{record['kind']}_result")

    def run_b2c(self, conversation_id: str) -> None:
        state = self.state
        record = state.transaction(conversation_id)
        if record is None or record["status"] != "pending":
            return
        request, script = record["request"], record["script"]
        outcome = script.get("outcome", "success")
        with state.lock:
            initiator_ok = request["InitiatorName"] == state.config.initiator
        if outcome == "queue_timeout":
            self._post_payout(record, None, "timed_out")
            return
        code, desc = scenarios.PAYOUT_OUTCOMES.get(outcome) or scenarios.PAYOUT_OUTCOMES["success"]
        if not initiator_ok:
            code, desc = scenarios.PAYOUT_OUTCOMES["wrong_initiator"]
        balance = None
        if code in (0, None):
            balance = state.take_b2c_funds(record["amount"])
            code, desc = (
                (0, scenarios.SUCCESS_DESC) if balance is not None else scenarios.PAYOUT_OUTCOMES["insufficient_funds"]
            )
        result = self._payout_result(record, code, desc)
        if code != 0:
            self._post_payout(record, result, "failed", result_desc=desc)
            return
        receipt = result["TransactionID"]
        moment = nairobi_now()
        result["ResultParameters"] = {
            "ResultParameter": [
                {"Key": "TransactionAmount", "Value": record["amount"]},
                {"Key": "TransactionReceipt", "Value": receipt},
                {"Key": "B2CRecipientIsRegisteredCustomer", "Value": "Y"},
                {"Key": "B2CChargesPaidAccountAvailableFunds", "Value": 0},
                {"Key": "ReceiverPartyPublicName", "Value": f"{record['phone']} - {first_name_for(record['phone'])}"},
                {"Key": "TransactionCompletedDateTime", "Value": moment.strftime("%d.%m.%Y %H:%M:%S")},
                {"Key": "B2CUtilityAccountAvailableFunds", "Value": balance},
                {"Key": "B2CWorkingAccountAvailableFunds", "Value": 0},
            ]
        }
        self._post_payout(record, result, "completed", receipt=receipt, completed_at=stamp(moment))

    def run_reversal(self, conversation_id: str) -> None:
        state = self.state
        record = state.transaction(conversation_id)
        if record is None or record["status"] != "pending":
            return
        request, script = record["request"], record["script"]
        outcome = script.get("outcome", "success")
        if outcome == "queue_timeout":
            self._post_payout(record, None, "timed_out")
            return
        wanted, party = request["TransactionID"].strip().upper(), digits(request["ReceiverParty"])
        with state.lock:
            initiator_ok = request["Initiator"] == state.config.initiator
            business, till, store = state.config.business_name, state.config.till, state.config.till_store
            original = state.by_receipt(wanted)
            code, desc = scenarios.PAYOUT_OUTCOMES.get(outcome) or scenarios.PAYOUT_OUTCOMES["success"]
            if not initiator_ok:
                code, desc = scenarios.PAYOUT_OUTCOMES["wrong_initiator"]
            elif code in (0, None):
                received_on = (original or {}).get("shortcode")
                if (
                    original is None
                    or original["kind"] not in ("stk", "c2b")
                    or original["status"] != "completed"
                    or party not in (received_on, store if received_on == till else received_on)
                ):
                    code, desc = scenarios.REVERSAL_UNKNOWN
                elif original.get("reversed_by"):
                    code, desc = scenarios.REVERSAL_ALREADY
                else:
                    code, desc = 0, scenarios.SUCCESS_DESC
                    state.update_transaction(original["id"], reversed_by=conversation_id)
                    balance = state.credit(received_on, -record["amount"])
            result = self._payout_result(record, code, desc)
        if code != 0:
            self._post_payout(record, result, "failed", result_desc=desc)
            return
        moment = nairobi_now()
        payer = original["phone"]
        result["ResultParameters"] = {
            "ResultParameter": [
                {"Key": "DebitAccountBalance", "Value": f"Utility Account|KES|{balance}.00|{balance}.00|0.00|0.00"},
                {"Key": "Amount", "Value": record["amount"]},
                {"Key": "TransCompletedTime", "Value": int(stamp(moment))},
                {"Key": "OriginalTransactionID", "Value": wanted},
                {"Key": "Charge", "Value": 0},
                {"Key": "CreditPartyPublicName", "Value": f"{payer} - {first_name_for(payer)}"},
                {"Key": "DebitPartyPublicName", "Value": f"{party} - {business}"},
            ]
        }
        self._post_payout(record, result, "completed", receipt=result["TransactionID"], completed_at=stamp(moment))


# --- request handling --------------------------------------------------------------------------------


class Handler(BaseHTTPRequestHandler):
    server: SimulatorServer
    protocol_version = "HTTP/1.1"
    server_version = "WavuMpesaSimulator/1.0"

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            self.server.log(f"{self.address_string()} {format % args}")

    # plumbing -----------------------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        parts = urlsplit(self.path)
        path = parts.path.rstrip("/") or "/"
        self.query = parse_qs(parts.query)
        try:
            self.raw_body = self._read_body()
            if path.startswith("/simulator"):
                status, body = self._control(method, path)
            else:
                status, body = self._daraja(method, path)
        except DarajaError as exc:
            status, body = exc.status, {"requestId": request_id(), "errorCode": exc.code, "errorMessage": exc.message}
        except ControlError as exc:
            status, body = exc.status, {"error": {"code": exc.code, "message": exc.message}}
        except Exception:
            self.server.log("request failed:\n" + traceback.format_exc())
            status, body = 500, {"requestId": request_id(), "errorCode": "500.003.02", "errorMessage": "Internal Error"}
        self._send(status, body)

    def _read_body(self) -> bytes:
        length_header = self.headers.get("Content-Length")
        if not length_header:
            return b""
        try:
            length = int(length_header)
        except ValueError:
            self.close_connection = True
            raise bad_request("Content-Length") from None
        if length < 0 or length > MAX_BODY:
            self.close_connection = True
            left = min(max(length, 0), 16 * MAX_BODY)  # drain what a sane client sends, so it reads the answer
            while left > 0:
                chunk = self.rfile.read(min(left, 65536))
                if not chunk:
                    break
                left -= len(chunk)
            raise DarajaError(413, "400.002.02", "Bad Request - Invalid request size")
        return self.rfile.read(length)

    def _send(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def json_body(self) -> dict[str, Any]:
        """The request body as a JSON object, or Daraja's 400 envelope."""
        try:
            data = json.loads(self.raw_body.decode("utf-8")) if self.raw_body.strip() else None
        except (ValueError, UnicodeDecodeError):
            raise DarajaError(400, "400.002.02", "Bad Request - Invalid JSON body") from None
        if not isinstance(data, dict):
            raise DarajaError(400, "400.002.02", "Bad Request - Invalid JSON body")
        return data

    def header_script(self) -> dict[str, Any] | None:
        raw = self.headers.get(SCRIPT_HEADER)
        if not raw:
            return None
        try:
            return scenarios.parse_script(json.loads(raw), where=SCRIPT_HEADER)
        except (ValueError, scenarios.ScriptError):
            raise bad_request(SCRIPT_HEADER) from None

    # Daraja ---------------------------------------------------------------------------------------------

    ROUTES = {
        "/mpesa/stkpush/v1/processrequest": "stk_push",
        "/mpesa/stkpushquery/v1/query": "stk_query",
        "/mpesa/c2b/v1/registerurl": "c2b_register",
        "/mpesa/c2b/v2/registerurl": "c2b_register",
        "/mpesa/c2b/v1/simulate": "c2b_simulate",
        "/mpesa/c2b/v2/simulate": "c2b_simulate",
        "/mpesa/transactionstatus/v1/query": "transaction_status",
        "/mpesa/b2c/v1/paymentrequest": "b2c_payment",
        "/mpesa/b2c/v3/paymentrequest": "b2c_payment",
        "/mpesa/reversal/v1/request": "reversal",
    }

    def _daraja(self, method: str, path: str) -> tuple[int, Any]:
        fault = self.server.state.take_fault(path)
        if fault:
            if fault.get("delay"):
                time.sleep(fault["delay"])
            raise DarajaError(fault["status"], fault["errorCode"], fault["errorMessage"])
        if path == "/oauth/v1/generate":
            if method != "GET":
                raise DarajaError(405, "405.001.01", "Method Not Allowed")
            return self.oauth()
        handler = self.ROUTES.get(path)
        if handler is None:
            raise DarajaError(404, "404.001.01", "Resource not found")
        if method != "POST":
            raise DarajaError(405, "405.001.01", "Method Not Allowed")
        self.require_token()
        return getattr(self, handler)(self.json_body(), path)

    def oauth(self) -> tuple[int, Any]:
        if self.query.get("grant_type") != ["client_credentials"]:
            raise DarajaError(400, "400.008.02", "Invalid grant type passed")
        config = self.server.state.config
        scheme, _, encoded = (self.headers.get("Authorization") or "").partition(" ")
        try:
            key, _, secret = base64.b64decode(encoded.strip(), validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            key = secret = None
        good = (
            scheme.lower() == "basic"
            and key is not None
            and secrets.compare_digest(key.encode(), config.consumer_key.encode())
            and secrets.compare_digest(secret.encode(), config.consumer_secret.encode())
        )
        if not good:
            raise DarajaError(400, "400.008.01", "Invalid Authentication passed")
        token, ttl = self.server.state.issue_token()
        return 200, {"access_token": token, "expires_in": str(ttl)}

    def require_token(self) -> None:
        scheme, _, token = (self.headers.get("Authorization") or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token or not self.server.state.token_valid(token):
            raise DarajaError(401, "401.002.01", f"Error Occurred - Invalid Access Token - {token or 'missing'}")

    def check_password(self, body: dict[str, Any]) -> str:
        """BusinessShortCode, Timestamp and Password of an STK push or query; returns the shortcode."""
        config = self.server.state.config
        shortcode = digits(body.get("BusinessShortCode"))
        if not shortcode or shortcode not in (config.paybill, config.till_store):
            raise bad_request("BusinessShortCode")
        timestamp = body.get("Timestamp")
        if not valid_timestamp(timestamp):
            raise bad_request("Timestamp")
        password = body.get("Password")
        expected = base64.b64encode(f"{shortcode}{config.passkey}{timestamp}".encode()).decode()
        if not isinstance(password, str) or not secrets.compare_digest(password.encode(), expected.encode()):
            raise bad_request("Password")
        return shortcode

    def stk_push(self, body: dict[str, Any], path: str) -> tuple[int, Any]:
        state = self.server.state
        config = state.config
        shortcode = self.check_password(body)
        kind = body.get("TransactionType")
        if kind not in STK_TYPES or (kind == "CustomerPayBillOnline") != (shortcode == config.paybill):
            raise bad_request("TransactionType")
        amount = body.get("Amount")
        if isinstance(amount, str) and amount.isdigit():
            amount = int(amount)
        if isinstance(amount, float) and amount.is_integer():
            amount = int(amount)
        if isinstance(amount, bool) or not isinstance(amount, int) or not 1 <= amount <= config.max_amount:
            raise bad_request("Amount")
        party_a = phone(body.get("PartyA"))
        if not party_a:
            raise bad_request("PartyA")
        msisdn = phone(body.get("PhoneNumber"))
        if not msisdn:
            raise bad_request("PhoneNumber")
        party_b = digits(body.get("PartyB"))
        if not party_b or not SHORTCODE_RE.match(party_b):
            raise bad_request("PartyB")
        if not valid_url(body.get("CallBackURL")):
            raise bad_request("CallBackURL")
        reference = body.get("AccountReference")
        if not isinstance(reference, str) or not reference.strip() or len(reference) > 12:
            raise bad_request("AccountReference")
        desc = body.get("TransactionDesc")
        if not isinstance(desc, str) or len(desc) > 182:
            raise bad_request("TransactionDesc")
        script = state.script_for(msisdn, self.header_script())
        expected_b = config.paybill if kind == "CustomerPayBillOnline" else config.till
        checkout_id = state.new_checkout_id(msisdn)
        merchant_id = state.new_merchant_id()
        state.add_transaction(
            {
                "id": checkout_id,
                "kind": "stk",
                "status": "pending",
                "shortcode": shortcode,
                "phone": msisdn,
                "amount": amount,
                "account_reference": reference,
                "merchant_request_id": merchant_id,
                "wrong_party_b": party_b != expected_b,
                "script": script,
                "request": body,
                "receipt": None,
                "result_code": None,
            }
        )
        outcome = script["outcome"]
        if outcome != "manual":
            delay = script["delay"]
            if outcome == "no_callback":
                delay = max(delay, config.no_callback_pending)
            self.server.later(delay, self.server.settle_stk, checkout_id)
        message = "Success. Request accepted for processing"
        return 200, {
            "MerchantRequestID": merchant_id,
            "CheckoutRequestID": checkout_id,
            "ResponseCode": "0",
            "ResponseDescription": message,
            "CustomerMessage": message,
        }

    def stk_query(self, body: dict[str, Any], path: str) -> tuple[int, Any]:
        shortcode = self.check_password(body)
        checkout_id = body.get("CheckoutRequestID")
        record = self.server.state.transaction(checkout_id) if isinstance(checkout_id, str) else None
        if record is None or record["kind"] != "stk" or record["shortcode"] != shortcode:
            raise bad_request("CheckoutRequestID")
        if record["status"] == "pending":
            raise DarajaError(500, "500.001.1001", "The transaction is being processed")
        return 200, {
            "ResponseCode": "0",
            "ResponseDescription": "The service request has been accepted successfully",
            "MerchantRequestID": record["merchant_request_id"],
            "CheckoutRequestID": checkout_id,
            "ResultCode": str(record["result_code"]),
            "ResultDesc": record["result_desc"],
        }

    def c2b_register(self, body: dict[str, Any], path: str) -> tuple[int, Any]:
        state = self.server.state
        shortcode = digits(body.get("ShortCode"))
        if not shortcode or shortcode not in state.config.shortcodes():
            raise bad_request("ShortCode")
        if body.get("ResponseType") not in ("Completed", "Cancelled"):
            raise bad_request("ResponseType")
        urls = {}
        for name in ("ConfirmationURL", "ValidationURL"):
            value = body.get(name)
            if value is None and name == "ValidationURL":
                continue
            if not valid_url(value):
                raise bad_request(name)
            if state.config.strict_urls and any(word in value.lower() for word in URL_KEYWORDS):
                raise bad_request(name)
            urls[name] = value
        with state.lock:
            state.registrations[shortcode] = {
                "ShortCode": shortcode,
                "ResponseType": body["ResponseType"],
                "version": 2 if "/v2/" in path else 1,
                **urls,
            }
        originator, _ = state.new_conversation_ids()
        return 200, {"OriginatorCoversationID": originator, "ResponseCode": "0", "ResponseDescription": "success"}

    def c2b_simulate(self, body: dict[str, Any], path: str) -> tuple[int, Any]:
        return 200, start_c2b(self.server, body, self.header_script(), version=2 if "/v2/" in path else 1)

    def transaction_status(self, body: dict[str, Any], path: str) -> tuple[int, Any]:
        state = self.server.state
        for name in ("Initiator", "SecurityCredential"):
            if not isinstance(body.get(name), str) or not body[name]:
                raise bad_request(name)
        if body.get("CommandID") != "TransactionStatusQuery":
            raise bad_request("CommandID")
        wanted = body.get("TransactionID") or body.get("OriginalConversationID")
        if not isinstance(wanted, str) or not wanted.strip():
            raise bad_request("TransactionID")
        if not digits(body.get("PartyA")):
            raise bad_request("PartyA")
        if digits(body.get("IdentifierType")) not in ("1", "2", "4"):
            raise bad_request("IdentifierType")
        for name in ("ResultURL", "QueueTimeOutURL"):
            if not valid_url(body.get(name)):
                raise bad_request(name)
        for name in ("Remarks", "Occasion"):
            if name in body and (not isinstance(body[name], str) or len(body[name]) > 100):
                raise bad_request(name)
        script = scenarios.merge(state.config.default_script, self.header_script())
        originator, conversation = state.new_conversation_ids()
        state.add_transaction(
            {
                "id": conversation,
                "kind": "status",
                "status": "pending",
                "originator_conversation_id": originator,
                "request": body,
                "receipt": None,
                "result_code": None,
            }
        )
        self.server.later(min(script.get("delay", 0.0), 5.0), self.server.run_status, conversation)
        return 200, {
            "ConversationID": conversation,
            "OriginatorConversationID": originator,
            "ResponseCode": "0",
            "ResponseDescription": "Accept the service request successfully.",
        }

    def payout_header_script(self) -> dict[str, Any] | None:
        raw = self.headers.get(SCRIPT_HEADER)
        if not raw:
            return None
        try:
            return scenarios.parse_script(json.loads(raw), where=SCRIPT_HEADER, outcomes=scenarios.PAYOUT_OUTCOMES)
        except (ValueError, scenarios.ScriptError):
            raise bad_request(SCRIPT_HEADER) from None

    @staticmethod
    def _text(body: dict[str, Any], name: str, *, required: bool, limit: int = 100) -> str:
        value = body.get(name)
        if value is None and not required:
            return ""
        if not isinstance(value, str) or (required and not value.strip()) or len(value) > limit:
            raise bad_request(name)
        return value

    def b2c_payment(self, body: dict[str, Any], path: str) -> tuple[int, Any]:
        """B2C (v3 and v1): pay a phone from the B2C shortcode; the Result follows at ResultURL."""
        state = self.server.state
        v3 = "/v3/" in path
        originator = self._text(body, "OriginatorConversationID", required=v3, limit=64)
        self._text(body, "InitiatorName", required=True)
        self._text(body, "SecurityCredential", required=True, limit=4096)
        if body.get("CommandID") not in B2C_COMMANDS:
            raise bad_request("CommandID")
        amount = whole_amount(body.get("Amount"), max_amount=state.config.max_amount)
        if amount is None:
            raise bad_request("Amount")
        if digits(body.get("PartyA")) != state.config.b2c_shortcode:
            raise bad_request("PartyA")
        msisdn = phone(body.get("PartyB"))
        if not msisdn:
            raise bad_request("PartyB")
        self._text(body, "Remarks", required=True)
        for name in ("QueueTimeOutURL", "ResultURL"):
            if not valid_url(body.get(name)):
                raise bad_request(name)
        if "Occasion" in body and "Occassion" not in body:  # B2C spells it Occassion
            raise bad_request("Occassion")
        self._text(body, "Occassion", required=False)
        script = state.payout_script(self.payout_header_script())
        generated, conversation = state.new_conversation_ids()
        record = {
            "id": conversation,
            "kind": "b2c",
            "status": "pending",
            "originator_conversation_id": originator or generated,
            "amount": amount,
            "phone": msisdn,
            "script": script,
            "request": body,
            "receipt": None,
            "result_code": None,
        }
        state.add_transaction(record)
        self.server.later(script.get("delay", 0.0), self.server.run_b2c, conversation)
        return 200, {
            "ConversationID": conversation,
            "OriginatorConversationID": record["originator_conversation_id"],
            "ResponseCode": "0",
            "ResponseDescription": "Accept the service request successfully.",
        }

    def reversal(self, body: dict[str, Any], path: str) -> tuple[int, Any]:
        """Reversal of a C2B/STK receipt; the Result follows at ResultURL (unknown or already reversed
        receipts fail there, as Daraja does, not here)."""
        state = self.server.state
        self._text(body, "Initiator", required=True)
        self._text(body, "SecurityCredential", required=True, limit=4096)
        if body.get("CommandID") != "TransactionReversal":
            raise bad_request("CommandID")
        receipt = self._text(body, "TransactionID", required=True, limit=20)
        amount = whole_amount(body.get("Amount"), max_amount=state.config.max_amount)
        if amount is None:
            raise bad_request("Amount")
        if digits(body.get("ReceiverParty")) not in state.config.shortcodes():
            raise bad_request("ReceiverParty")
        if digits(body.get("RecieverIdentifierType")) != "11":  # Daraja's spelling, value "11"
            raise bad_request("RecieverIdentifierType")
        for name in ("QueueTimeOutURL", "ResultURL"):
            if not valid_url(body.get(name)):
                raise bad_request(name)
        self._text(body, "Remarks", required=True)
        self._text(body, "Occasion", required=False)
        original = state.by_receipt(receipt.strip().upper())
        paid = (original or {}).get("paid_amount") or (original or {}).get("amount")
        if paid is not None and amount > paid:
            raise bad_request("Amount")
        script = state.payout_script(self.payout_header_script())
        originator, conversation = state.new_conversation_ids()
        state.add_transaction(
            {
                "id": conversation,
                "kind": "reversal",
                "status": "pending",
                "originator_conversation_id": originator,
                "amount": amount,
                "script": script,
                "request": body,
                "receipt": None,
                "result_code": None,
            }
        )
        self.server.later(script.get("delay", 0.0), self.server.run_reversal, conversation)
        return 200, {
            "OriginatorConversationID": originator,
            "ConversationID": conversation,
            "ResponseCode": "0",
            "ResponseDescription": "Accept the service request successfully.",
        }

    # control API ------------------------------------------------------------------------------------------

    def control_body(self) -> Any:
        try:
            return json.loads(self.raw_body.decode("utf-8")) if self.raw_body.strip() else {}
        except (ValueError, UnicodeDecodeError):
            raise ControlError("the body is not valid JSON") from None

    def _control(self, method: str, path: str) -> tuple[int, Any]:
        server, state = self.server, self.server.state
        segments = [unquote(s) for s in path.split("/")[2:]]
        route = (method, *segments[:1])
        try:
            if route == ("GET",):
                return 200, describe(server)
            if route == ("GET", "config"):
                return 200, state.config.as_dict()
            if route in (("POST", "config"), ("PUT", "config")):
                with state.lock:
                    state.config.update(self.control_body())
                    return 200, state.config.as_dict()
            if route == ("POST", "reset"):
                server.reset()
                return 200, {"reset": True}
            if route == ("GET", "transactions"):
                if len(segments) == 2:
                    record = state.transaction(segments[1]) or state.by_receipt(segments[1])
                    if record is None:
                        raise ControlError("no such transaction", status=404, code="not_found")
                    return 200, record
                kind = (self.query.get("kind") or [None])[0]
                return 200, {"transactions": state.list_transactions(kind)}
            if route == ("POST", "next"):
                body = self.control_body()
                count = body.pop("count", 1) if isinstance(body, dict) else 1
                if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 1000:
                    raise ControlError("count must be a whole number between 1 and 1000")
                script = scenarios.parse_script(body)
                with state.lock:
                    state.next_scripts.extend(dict(script) for _ in range(count))
                    return 200, {"queued": len(state.next_scripts)}
            if route == ("DELETE", "next"):
                with state.lock:
                    state.next_scripts.clear()
                return 200, {"queued": 0}
            if segments[:1] == ["phones"]:
                return self._phones(method, segments[1:])
            if segments[:1] == ["payouts"]:
                return self._payouts(method, segments[1:])
            if route == ("POST", "stk") and len(segments) == 3:
                return self._stk_action(segments[1], segments[2])
            if route == ("POST", "c2b") and segments[1:] == ["pay"]:
                body = self.control_body()
                if not isinstance(body, dict):
                    raise ControlError("the body must be a JSON object")
                script = scenarios.parse_script(body.pop("script", {}) or {}, where="script")
                version = body.pop("version", None)
                simulate = {
                    "ShortCode": body.get("shortcode", state.config.paybill),
                    "CommandID": body.get("command", "CustomerPayBillOnline"),
                    "Amount": body.get("amount"),
                    "Msisdn": body.get("phone", "254708374149"),
                    "BillRefNumber": body.get("account", ""),
                }
                return 200, start_c2b(server, simulate, script, version=version)
            if route == ("POST", "tokens") and segments[1:] == ["expire"]:
                return 200, {"expired": state.expire_tokens()}
            if segments[:1] == ["faults"]:
                return self._faults(method)
        except scenarios.ScriptError as exc:
            raise ControlError(str(exc)) from None
        except ValueError as exc:
            raise ControlError(str(exc)) from None
        except DarajaError as exc:
            raise ControlError(exc.message, status=exc.status) from None
        raise ControlError(f"no control endpoint {method} {path}", status=404, code="not_found")

    def _phones(self, method: str, rest: list[str]) -> tuple[int, Any]:
        state = self.server.state
        if method == "GET" and not rest:
            return 200, {"phones": state.config.as_dict()["phones"]}
        if len(rest) != 1 or not phone(rest[0]):
            raise ControlError("use /simulator/phones/<msisdn>, e.g. /simulator/phones/254712345678 (12 digits)")
        if method in ("PUT", "POST"):
            script = scenarios.parse_script(self.control_body())
            with state.lock:
                state.config.phones[rest[0]] = script
            return 200, {"phone": rest[0], "script": script}
        if method == "DELETE":
            with state.lock:
                removed = state.config.phones.pop(rest[0], None)
            return 200, {"phone": rest[0], "removed": removed is not None}
        raise ControlError(f"{method} not allowed here", status=405, code="method_not_allowed")

    def _payouts(self, method: str, rest: list[str]) -> tuple[int, Any]:
        """Queue scripts for the next B2C payments / reversals, or post a payout's result again."""
        server, state = self.server, self.server.state
        if rest == ["next"] and method == "DELETE":
            with state.lock:
                state.next_payout_scripts.clear()
            return 200, {"queued": 0}
        if rest == ["next"] and method == "POST":
            body = self.control_body()
            count = body.pop("count", 1) if isinstance(body, dict) else 1
            if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 1000:
                raise ControlError("count must be a whole number between 1 and 1000")
            script = scenarios.parse_script(body, outcomes=scenarios.PAYOUT_OUTCOMES)
            with state.lock:
                state.next_payout_scripts.extend(dict(script) for _ in range(count))
                return 200, {"queued": len(state.next_payout_scripts)}
        if len(rest) == 2 and rest[1] == "resend" and method == "POST":
            record = state.transaction(rest[0])
            if record is None or record["kind"] not in ("b2c", "reversal"):
                raise ControlError("no such B2C payment or reversal", status=404, code="not_found")
            if record["status"] == "pending":
                raise ControlError("it is still pending", status=409, code="not_settled")
            body = self.control_body()
            if not isinstance(body, dict):
                raise ControlError("the body must be a JSON object")
            script = scenarios.merge({"copies": 1, "copy_interval": 0.2}, scenarios.parse_script(body))
            timed_out = record["status"] == "timed_out"
            url = record["request"]["QueueTimeOutURL" if timed_out else "ResultURL"]
            purpose = f"{record['kind']}_{'timeout' if timed_out else 'result'}"
            server.schedule_copies(record["id"], url, record["callback"], script, purpose)
            return 200, {"resent": script["copies"]}
        raise ControlError("use POST|DELETE /simulator/payouts/next or POST /simulator/payouts/<id>/resend", status=404)

    def _stk_action(self, checkout_id: str, action: str) -> tuple[int, Any]:
        server, state = self.server, self.server.state
        body = self.control_body()
        if not isinstance(body, dict):
            raise ControlError("the body must be a JSON object")
        record = state.transaction(checkout_id)
        if record is None or record["kind"] != "stk":
            raise ControlError("no such STK push", status=404, code="not_found")
        if action == "resolve":
            outcome = body.get("outcome", "success")
            if outcome not in scenarios.OUTCOMES or outcome in ("manual", "no_callback"):
                raise ControlError("outcome must be a deciding outcome such as success or cancelled")
            settled = server.settle_stk(checkout_id, outcome)
            if settled is None:
                raise ControlError("the STK push is no longer pending", status=409, code="not_pending")
            return 200, settled
        if action == "resend":
            if record["status"] == "pending":
                raise ControlError("the STK push is still pending", status=409, code="not_settled")
            script = scenarios.merge({"copies": 1, "copy_interval": 0.2}, scenarios.parse_script(body))
            server.schedule_copies(
                checkout_id, record["request"]["CallBackURL"], record["callback"], script, "stk_callback"
            )
            return 200, {"resent": script["copies"]}
        raise ControlError("actions: resolve, resend", status=404, code="not_found")

    def _faults(self, method: str) -> tuple[int, Any]:
        state = self.server.state
        if method == "GET":
            with state.lock:
                return 200, {"faults": [dict(f) for f in state.faults]}
        if method == "DELETE":
            with state.lock:
                state.faults.clear()
            return 200, {"faults": []}
        body = self.control_body()
        if not isinstance(body, dict):
            raise ControlError("the body must be a JSON object")
        path = body.get("path", "*")
        status = body.get("status", 500)
        count = body.get("count", 1)
        delay = body.get("delay", 0)
        if not isinstance(path, str) or not (path == "*" or path.startswith("/")):
            raise ControlError("path must be a Daraja path such as /mpesa/stkpush/v1/processrequest, or *")
        if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599:
            raise ControlError("status must be an HTTP error status (400-599)")
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ControlError("count must be a whole number ≥ 1")
        if isinstance(delay, bool) or not isinstance(delay, int | float) or not 0 <= delay <= 60:
            raise ControlError("delay must be between 0 and 60 seconds")
        code, message = DEFAULT_FAULT_CODES.get(status, (f"{status}.000.00", "Simulated error"))
        fault = {
            "path": path.rstrip("/") or "*",
            "status": status,
            "count": count,
            "delay": delay,
            "errorCode": str(body.get("errorCode", code)),
            "errorMessage": str(body.get("errorMessage", message)),
        }
        with state.lock:
            state.faults.append(fault)
        return 200, fault


def start_c2b(server: SimulatorServer, body: dict[str, Any], script: dict[str, Any] | None, *, version: Any) -> Any:
    """Check a C2B simulate request, record the payment and schedule validation + confirmation."""
    state = server.state
    shortcode = digits(body.get("ShortCode"))
    if not shortcode or shortcode not in state.config.shortcodes():
        raise bad_request("ShortCode")
    command = body.get("CommandID")
    if command not in C2B_COMMANDS:
        raise bad_request("CommandID")
    amount = whole_amount(body.get("Amount"), max_amount=state.config.max_amount)
    if amount is None:
        raise bad_request("Amount")
    msisdn = phone(body.get("Msisdn"))
    if not msisdn:
        raise bad_request("Msisdn")
    bill_ref = body.get("BillRefNumber", "")
    if bill_ref is None:
        bill_ref = ""
    if not isinstance(bill_ref, str) or len(bill_ref) > 20 or (command == "CustomerPayBillOnline" and not bill_ref):
        raise bad_request("BillRefNumber")
    if version not in (None, 1, 2):
        raise bad_request("version")
    merged = state.script_for(msisdn, script, queued=False)
    trans_id = state.new_receipt()
    state.add_transaction(
        {
            "id": trans_id,
            "kind": "c2b",
            "status": "pending",
            "shortcode": shortcode,
            "command": command,
            "amount": amount,
            "phone": msisdn,
            "bill_ref": bill_ref,
            "simulate_version": version,
            "script": merged,
            "request": body,
            "receipt": trans_id,
            "result_code": None,
        }
    )
    server.later(merged.get("delay", 0.0), server.run_c2b, trans_id)
    originator, _ = state.new_conversation_ids()
    return {
        "OriginatorCoversationID": originator,
        "ResponseCode": "0",
        "ResponseDescription": "Accept the service request successfully.",
        "TransID": trans_id,
    }


def describe(server: SimulatorServer) -> dict[str, Any]:
    """What GET /simulator answers: where it is, what it accepts, what it can do."""
    config = server.state.config
    return {
        "simulator": "Wavu M-Pesa Daraja simulator",
        "base_url": server.base_url,
        "credentials": {
            "consumer_key": config.consumer_key,
            "consumer_secret": config.consumer_secret,
            "passkey": config.passkey,
            "paybill": config.paybill,
            "till_store_number": config.till_store,
            "till_number": config.till,
            "initiator": config.initiator,
            "b2c_shortcode": config.b2c_shortcode,
        },
        "daraja": ["GET /oauth/v1/generate?grant_type=client_credentials", *sorted(Handler.ROUTES)],
        "control": [
            "GET /simulator/config",
            "POST /simulator/config",
            "GET /simulator/transactions[?kind=stk|c2b|status|b2c|reversal]",
            "GET /simulator/transactions/<id or receipt>",
            "POST /simulator/reset",
            "POST /simulator/next",
            "DELETE /simulator/next",
            "GET /simulator/phones",
            "PUT /simulator/phones/<msisdn>",
            "DELETE /simulator/phones/<msisdn>",
            "POST /simulator/stk/<CheckoutRequestID>/resolve",
            "POST /simulator/stk/<CheckoutRequestID>/resend",
            "POST /simulator/c2b/pay",
            "POST /simulator/payouts/next",
            "DELETE /simulator/payouts/next",
            "POST /simulator/payouts/<ConversationID>/resend",
            "POST /simulator/tokens/expire",
            "GET|POST|DELETE /simulator/faults",
        ],
        "outcomes": {name: code for name, (code, _) in scenarios.OUTCOMES.items()},
        "payout_outcomes": {name: code for name, (code, _) in scenarios.PAYOUT_OUTCOMES.items()},
        "phones": config.phones,
    }
