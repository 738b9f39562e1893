"""What the simulated customer does: STK outcomes and delivery scripts.

A *script* decides how one STK push (or one C2B payment) plays out:

- ``outcome``: what the customer does (``success``, ``cancelled`` 1032, ``wrong_pin`` 2001,
  ``insufficient_funds`` 1, ``timeout`` 1037, ``locked`` 1001, ``expired`` 1019, ``push_error`` 1025,
  ``no_callback`` — the customer never answers and Daraja never calls back — and ``manual`` — pending
  until the control API resolves it);
- ``delay``: seconds from the accepted request until the outcome is known (STK query says "being
  processed" until then);
- ``callback_delay``: extra seconds between the outcome and the first callback ("late delivery");
- ``copies``: how many times the same callback is posted (2+ = duplicates, 0 = lost callback);
- ``copy_interval``: seconds between copies;
- ``amount``: the amount the callback reports, when it should differ from the request (mismatch tests);
- C2B only: ``msisdn_form`` (``plain``, ``masked``, ``hashed``), ``first_name``.

B2C payments and reversals ("payouts") take the same keys with their own outcomes
(:data:`PAYOUT_OUTCOMES`): ``success``, ``insufficient_funds`` 1, ``wrong_initiator`` 2001,
``not_registered`` 2040, ``queue_timeout`` (the QueueTimeOutURL is called instead of the ResultURL)
and ``no_callback`` (done, nothing posted).

Scripts are plain dicts on the wire; :func:`parse_script` checks them and fills no defaults, so a
partial script (``{"outcome": "cancelled"}``) can be layered over the global defaults with
:func:`merge`.
"""

from __future__ import annotations

from typing import Any

SUCCESS_DESC = "The service request is processed successfully."

# outcome name -> (ResultCode in the callback, ResultDesc)
OUTCOMES: dict[str, tuple[int | str, str]] = {
    "success": (0, SUCCESS_DESC),
    "cancelled": (1032, "Request cancelled by user"),
    "wrong_pin": (2001, "The initiator information is invalid."),
    "insufficient_funds": (1, "The balance is insufficient for the transaction."),
    "timeout": (1037, "DS timeout user cannot be reached"),
    "locked": (1001, "Unable to lock subscriber, a transaction is already in process for the current subscriber"),
    "expired": (1019, "Transaction has expired"),
    "push_error": (1025, "An error occurred while sending a push request"),
    # the customer never answers and no callback is ever sent; the query ends with 1037
    "no_callback": (1037, "DS timeout user cannot be reached"),
    # pending until POST /simulator/stk/<CheckoutRequestID>/resolve
    "manual": (0, SUCCESS_DESC),
}

# A PartyB that does not belong to the shortcode (till payments): the documented operator error.
WRONG_PARTY_B = ("SFC_IC0003", "The operator does not exist.")

# Transaction Status for a TransactionID the simulator never saw. The reference does not document the
# code Daraja uses; this one is reported by integrators and is unverified — change it here if needed.
STATUS_NOT_FOUND = ("R000001", "The transaction receipt number does not exist.")
STATUS_BAD_INITIATOR = (2001, "The initiator information is invalid.")

# B2C payments and reversals ("payouts"): what M-Pesa does with them. ResultCode None: no result
# is posted to ResultURL (queue_timeout posts to QueueTimeOutURL instead; no_callback posts nothing).
PAYOUT_OUTCOMES: dict[str, tuple[int | str | None, str]] = {
    "success": (0, SUCCESS_DESC),
    "insufficient_funds": (1, "The balance is insufficient for the transaction."),
    "wrong_initiator": (2001, "The initiator information is invalid."),
    "not_registered": (
        2040,
        "Credit Party customer type (Unregistered or Registered Customer) can't be supported by the service.",
    ),
    "queue_timeout": (None, "The service request timed out."),
    "no_callback": (None, ""),
}
# Reversal of a receipt M-Pesa does not know (or not on that shortcode), and of one already reversed.
# Reported by integrators, not in the reference notes: unverified — change them here if needed.
REVERSAL_UNKNOWN = ("R000002", "The OriginalTransactionID is invalid.")
REVERSAL_ALREADY = ("R000001", "The transaction has already been reversed.")
# What the QueueTimeOutURL receives (shape from one SDK's schema, unverified).
TIMEOUT_RESULT = (1, "The service request timed out.")

MSISDN_FORMS = ("plain", "masked", "hashed")

SCRIPT_KEYS = {
    "outcome": str,
    "delay": float,
    "callback_delay": float,
    "copies": int,
    "copy_interval": float,
    "amount": int,
    "msisdn_form": str,
    "first_name": str,
}

DEFAULT_SCRIPT: dict[str, Any] = {
    "outcome": "success",
    "delay": 2.0,
    "callback_delay": 0.0,
    "copies": 1,
    "copy_interval": 0.2,
}

# Phone numbers that always behave the same way, so tests and the demo choose an outcome by number.
MAGIC_PHONES: dict[str, dict[str, Any]] = {
    "254700000001": {"outcome": "cancelled"},
    "254700000002": {"outcome": "wrong_pin"},
    "254700000003": {"outcome": "insufficient_funds"},
    "254700000004": {"outcome": "timeout"},
    "254700000005": {"outcome": "no_callback"},
    "254700000006": {"outcome": "success", "copies": 3},
    "254700000007": {"outcome": "success", "copies": 0},
    "254700000008": {"outcome": "success", "callback_delay": 30.0},
    "254700000009": {"outcome": "manual"},
}


class ScriptError(ValueError):
    """A script with an unknown key, a wrong type or an impossible value."""


def parse_script(data: Any, *, where: str = "script", outcomes: dict | None = None) -> dict[str, Any]:
    """Check a (possibly partial) script and return a clean copy. `outcomes`: the outcomes allowed
    (default: the STK ones; `PAYOUT_OUTCOMES` for B2C payments and reversals). Raises ScriptError."""
    outcomes = OUTCOMES if outcomes is None else outcomes
    if not isinstance(data, dict):
        raise ScriptError(f"{where} must be a JSON object")
    clean: dict[str, Any] = {}
    for key, value in data.items():
        if key not in SCRIPT_KEYS:
            raise ScriptError(f"{where}: unknown key {key!r} (known: {', '.join(sorted(SCRIPT_KEYS))})")
        kind = SCRIPT_KEYS[key]
        if isinstance(value, bool):
            raise ScriptError(f"{where}: {key} must be a {kind.__name__}")
        if kind is float:
            if not isinstance(value, int | float) or value < 0 or value > 3600:
                raise ScriptError(f"{where}: {key} must be a number of seconds between 0 and 3600")
            clean[key] = float(value)
        elif kind is int:
            if not isinstance(value, int) or value < 0 or (key == "copies" and value > 100):
                raise ScriptError(
                    f"{where}: {key} must be a whole number ≥ 0" + (" and ≤ 100" if key == "copies" else "")
                )
            clean[key] = value
        else:
            if not isinstance(value, str):
                raise ScriptError(f"{where}: {key} must be a string")
            clean[key] = value
    if "outcome" in clean and clean["outcome"] not in outcomes:
        raise ScriptError(f"{where}: unknown outcome {clean['outcome']!r} (known: {', '.join(outcomes)})")
    if "msisdn_form" in clean and clean["msisdn_form"] not in MSISDN_FORMS:
        raise ScriptError(f"{where}: msisdn_form must be one of {', '.join(MSISDN_FORMS)}")
    if clean.get("amount") == 0:
        raise ScriptError(f"{where}: amount must be ≥ 1")
    return clean


def merge(*layers: dict[str, Any] | None) -> dict[str, Any]:
    """Later layers win: merge(defaults, phone script, next-request script, header script)."""
    result: dict[str, Any] = {}
    for layer in layers:
        if layer:
            result.update(layer)
    return result
