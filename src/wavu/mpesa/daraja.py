"""The Daraja client: one paybill or till channel talking to Safaricom's Daraja API (or the local simulator).

`DarajaClient(channel)` speaks the documented endpoints (shared/reference/mpesa-daraja.md) over httpx:
OAuth, STK push, STK push query, C2B register URL, Transaction Status, Reversal and B2C.

Guarantees:
- **One access token per channel, shared by every process.** The token lives in the channel's
  `AccessToken` row and is refreshed about 60 s before it expires. A refresh is *claimed* with a
  conditional update of `fetched_at` (a stale row whose `fetched_at` is newer than its refresh
  point means "someone is fetching"), so many workers noticing the same stale token make one token
  call while the others keep using the old token (still valid for up to a minute) or wait briefly.
  No database transaction is ever held open during an HTTP call.
- **Timeouts on every call.** Idempotent calls (token, STK query, C2B register, Transaction Status)
  are retried with exponential backoff on 429, 5xx, timeouts and connection errors.
- **STK push, Reversal and B2C are never retried blindly**: they are sent once. When it is unknown whether
  Daraja received an STK push (a timeout, a dropped connection, a 5xx without a definitive error) the
  client raises `StkPushOutcomeUnknown`; the caller must then *query* the request, never push again.
  Connection failures before anything was sent raise `DarajaUnavailable` (safe to try again later).
- A 401 / "Invalid Access Token" answer makes the client fetch a new token once and repeat the call
  (the gateway refused it, so repeating it is safe for every endpoint).
- **Inputs are refused, never silently changed**: an STK amount must be whole shillings ≥ 1, the
  AccountReference 1–12 and the TransactionDesc 1–13 characters from `[A-Za-z0-9 -]` (Daraja silently
  drops prompts for longer or odd values), and the phone must be a Kenyan mobile number
  (`wavu.core.phones`). Refusals are `django.core.exceptions.ValidationError` with field errors.
- Daraja's error envelopes (`{"requestId","errorCode","errorMessage"}`) become `DarajaError`
  subclasses with stable `code`s; the raw envelope is kept on `.envelope`. Secrets (consumer secret,
  passkey, password, security credential, tokens) are never logged or put in exception messages.
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
import re
import time
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from zoneinfo import ZoneInfo

import httpx
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from wavu.core import clock, crypto
from wavu.core.errors import DomainError
from wavu.core.phones import mask_msisdn, normalize_msisdn

from .models import AccessToken, PaymentChannel

log = logging.getLogger(__name__)

BASE_URLS = {
    PaymentChannel.Environment.SANDBOX: "https://sandbox.safaricom.co.ke",
    PaymentChannel.Environment.PRODUCTION: "https://api.safaricom.co.ke",
}
DEFAULT_SIMULATOR_URL = "http://127.0.0.1:8900"

TOKEN_PATH = "/oauth/v1/generate"
STK_PUSH_PATH = "/mpesa/stkpush/v1/processrequest"
STK_QUERY_PATH = "/mpesa/stkpushquery/v1/query"
C2B_REGISTER_PATH = "/mpesa/c2b/v2/registerurl"
TRANSACTION_STATUS_PATH = "/mpesa/transactionstatus/v1/query"
REVERSAL_PATH = "/mpesa/reversal/v1/request"
B2C_PATH = "/mpesa/b2c/v3/paymentrequest"
B2C_COMMANDS = ("BusinessPayment", "SalaryPayment", "PromotionPayment")
REMARKS_MAX = 100

NAIROBI = ZoneInfo("Africa/Nairobi")
REFRESH_MARGIN = dt.timedelta(seconds=60)  # refresh this long before the token expires
CLAIM_SECONDS = 15  # a refresh claimed longer ago than this is considered abandoned
ACCOUNT_REFERENCE_MAX = 12
TRANSACTION_DESC_MAX = 13
SAFE_TEXT = re.compile(r"[A-Za-z0-9 \-]+")
RESPONSE_TYPES = ("Completed", "Cancelled")


def simulator_url() -> str:
    """The local simulator's address: settings.WAVU["MPESA_SIMULATOR_URL"], else http://127.0.0.1:8900."""
    return (getattr(settings, "WAVU", {}).get("MPESA_SIMULATOR_URL") or DEFAULT_SIMULATOR_URL).rstrip("/")


def base_url_for(channel: PaymentChannel) -> str:
    """The channel's own `base_url` when set, else its environment's address."""
    if channel.base_url:
        return channel.base_url.rstrip("/")
    if channel.environment == PaymentChannel.Environment.SIMULATOR:
        return simulator_url()
    return BASE_URLS[channel.environment]


# --- errors ------------------------------------------------------------------------------------------


class DarajaError(DomainError):
    """Daraja refused or failed a call. `code` is Wavu's stable code, `daraja_code` Daraja's `errorCode`
    (or `ResponseCode`), `envelope` the raw JSON answer (never containing our secrets)."""

    code = "daraja_error"
    status = 502

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        http_status: int | None = None,
        daraja_code: str = "",
        envelope: dict | None = None,
    ):
        super().__init__(message, code=code)
        self.http_status = http_status
        self.daraja_code = daraja_code
        self.envelope = envelope or {}


class DarajaUnavailable(DarajaError):
    """Daraja could not be reached or answered 5xx (after the retries of an idempotent call). Try later."""

    code = "daraja_unavailable"
    status = 503


class DarajaRateLimited(DarajaUnavailable):
    """HTTP 429 (e.g. 429.001.01 "Spike arrest"), after the retries of an idempotent call."""

    code = "daraja_rate_limited"


class InvalidCredentials(DarajaError):
    """The token call was refused: the channel's consumer key or secret is wrong (or missing)."""

    code = "daraja_invalid_credentials"


class InvalidAccessToken(DarajaError):
    """401.002.01 "Invalid Access Token", still refused after fetching a fresh token once."""

    code = "daraja_invalid_access_token"


class DarajaBadRequest(DarajaError):
    """400.002.02 "Bad Request - Invalid …": Daraja refused a field (its message names the field)."""

    code = "daraja_bad_request"


class SubscriberBusy(DarajaError):
    """500.001.1001 "Unable to lock subscriber": the customer is in another M-Pesa session; retry in 1–3 minutes."""

    code = "daraja_subscriber_busy"
    status = 409


class StkRequestPending(DarajaError):
    """STK query: "The transaction is being processed" — the customer has not answered yet; query later."""

    code = "stk_pending"
    status = 409


class ChannelNotConfigured(DarajaError):
    """The channel lacks a setting this call needs (passkey, initiator, security credential …)."""

    code = "channel_not_configured"
    status = 409


class CredentialsUnreadable(ChannelNotConfigured):
    """The channel's secrets this call needs were stored under an encryption key Wavu no longer has
    (SECRET_KEY changed without WAVU_ENCRYPTION_KEY): staff must enter them again. Nothing was sent."""

    code = "channel_credentials_unreadable"


def require_readable(channel: PaymentChannel, *fields: str) -> None:
    """Raise `CredentialsUnreadable` naming the `fields` of `channel` the current key cannot decrypt."""
    unreadable = [f for f in fields if crypto.is_unreadable(getattr(channel, f))]
    if unreadable:
        names = ", ".join(f.replace("_", " ") for f in unreadable)
        raise CredentialsUnreadable(
            f"Channel {channel.shortcode}: the stored {names} cannot be decrypted with the current encryption key "
            "(SECRET_KEY or WAVU_ENCRYPTION_KEY changed). Enter the Daraja credentials again in the channel "
            "(admin or API), or put the previous key back."
        )


class OutcomeUnknown(DarajaError):
    """A non-idempotent request may or may not have reached Daraja (timeout, dropped connection, 5xx)."""

    code = "daraja_outcome_unknown"
    status = 504


class StkPushOutcomeUnknown(OutcomeUnknown):
    """The STK push may have been accepted: do not push again; query the request (or wait for the callback)."""

    code = "stk_outcome_unknown"


def _describe(envelope: dict, fallback: str) -> str:
    text = envelope.get("errorMessage") or envelope.get("ResponseDescription") or envelope.get("resultDesc")
    return str(text) if text else fallback


def error_from_response(response: httpx.Response, *, token_call: bool = False) -> DarajaError:
    """Map one failed Daraja answer to the matching `DarajaError` subclass."""
    try:
        envelope = response.json()
    except ValueError:
        envelope = {}
    if not isinstance(envelope, dict):
        envelope = {"body": envelope}
    if not envelope and response.text:
        envelope = {"body": response.text[:500]}
    status = response.status_code
    daraja_code = str(envelope.get("errorCode") or envelope.get("resultCode") or envelope.get("ResponseCode") or "")
    message = _describe(envelope, f"HTTP {status}")
    kwargs = {"http_status": status, "daraja_code": daraja_code, "envelope": envelope}
    if token_call and status in (400, 401, 403):
        return InvalidCredentials(
            f"Daraja refused the channel's consumer key and secret ({message}). Check them in the channel.", **kwargs
        )
    if status == 401 or daraja_code.startswith("401.") or "invalid access token" in message.lower():
        return InvalidAccessToken(f"Daraja refused the access token ({message}).", **kwargs)
    if daraja_code.startswith("400.002.02") or (status == 400 and message.lower().startswith("bad request")):
        return DarajaBadRequest(f"Daraja refused the request: {message}.", **kwargs)
    if "being processed" in message.lower():
        return StkRequestPending("The STK request is still waiting for the customer; query again later.", **kwargs)
    if "unable to lock subscriber" in message.lower():
        return SubscriberBusy(
            "The customer's phone is busy with another M-Pesa transaction; try again in 1 to 3 minutes.", **kwargs
        )
    if status == 429:
        return DarajaRateLimited(f"Daraja is limiting our requests ({message}); try again shortly.", **kwargs)
    if status >= 500:
        return DarajaUnavailable(f"Daraja failed (HTTP {status}: {message}); try again later.", **kwargs)
    return DarajaError(f"Daraja refused the request (HTTP {status}, {daraja_code or 'no code'}: {message}).", **kwargs)


# --- request helpers -----------------------------------------------------------------------------------


def daraja_timestamp(at: dt.datetime | None = None) -> str:
    """`YYYYMMDDHHmmss` in Nairobi time (Daraja's clock), from `clock.now()` by default."""
    return (at or clock.now()).astimezone(NAIROBI).strftime("%Y%m%d%H%M%S")


def stk_password(shortcode: str, passkey: str, timestamp: str) -> str:
    """base64(BusinessShortCode + Passkey + Timestamp), as Daraja checks it."""
    return base64.b64encode(f"{shortcode}{passkey}{timestamp}".encode()).decode()


def whole_shillings(amount, *, field_name: str = "amount") -> int:
    """An amount as whole shillings ≥ 1. Floats, fractions, zero and negatives are refused, not rounded."""
    if isinstance(amount, bool | float) or amount is None:
        raise ValidationError({field_name: ["Send the amount as whole shillings (an integer or decimal string)."]})
    try:
        value = Decimal(str(amount).strip())
    except InvalidOperation:
        raise ValidationError({field_name: [f"{amount!r} is not an amount."]}) from None
    if not value.is_finite() or value != value.to_integral_value():
        raise ValidationError({field_name: [f"M-Pesa takes whole shillings only; {amount} has cents."]})
    if value < 1:
        raise ValidationError({field_name: ["The amount must be at least 1 shilling."]})
    return int(value)


def check_safe_text(field_name: str, value: str, limit: int) -> str:
    """`value` if it is 1..limit characters from [A-Za-z0-9 -]; else ValidationError (never truncated)."""
    text = (value or "").strip()
    if not text:
        raise ValidationError({field_name: [f"{field_name} is required (1 to {limit} characters)."]})
    if len(text) > limit:
        raise ValidationError(
            {field_name: [f"{field_name} is at most {limit} characters for M-Pesa; {text!r} has {len(text)}."]}
        )
    if not SAFE_TEXT.fullmatch(text):
        raise ValidationError(
            {field_name: [f"{field_name} may hold only letters, digits, spaces and dashes; {text!r} does not."]}
        )
    return text


def _check_url(field_name: str, url: str) -> str:
    if not url or not re.fullmatch(r"https?://\S+", url):
        raise ValidationError({field_name: [f"{field_name} must be an absolute http(s) URL without spaces."]})
    return url


def _first(data: dict, *names: str) -> str:
    for name in names:
        if data.get(name) not in (None, ""):
            return str(data[name])
    return ""


# --- results ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StkPushResult:
    """Daraja accepted the push for processing (ResponseCode "0"). It does NOT mean the customer paid."""

    merchant_request_id: str
    checkout_request_id: str
    response_code: str
    response_description: str
    customer_message: str
    raw: dict = field(repr=False)


@dataclass(frozen=True)
class StkQueryResult:
    """The state of an STK request. `pending`: still waiting for the customer (query again later);
    otherwise `result_code` is the final ResultCode as a string ("0" = paid, "1032" = cancelled …)."""

    checkout_request_id: str
    pending: bool
    result_code: str | None
    result_desc: str
    merchant_request_id: str
    raw: dict = field(repr=False)

    @property
    def paid(self) -> bool:
        return self.result_code == "0"


@dataclass(frozen=True)
class AcceptedResult:
    """Daraja accepted an asynchronous request (C2B register, Transaction Status, Reversal)."""

    response_code: str
    response_description: str
    conversation_id: str
    originator_conversation_id: str
    raw: dict = field(repr=False)


# --- the client ------------------------------------------------------------------------------------------


class DarajaClient:
    """A Daraja session for one channel. Use as a context manager or call `close()`.

    `transport` (an httpx transport, e.g. `httpx.MockTransport`) is for tests; `timeout` is seconds per
    HTTP call; `max_retries` and `backoff` (first delay in seconds, doubled each time, honouring a
    Retry-After header up to `max_backoff`) apply to idempotent calls only; `sleep` waits (tests pass
    a recorder).
    """

    def __init__(
        self,
        channel: PaymentChannel,
        *,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 15.0,
        max_retries: int = 3,
        backoff: float = 0.5,
        max_backoff: float = 8.0,
        sleep=time.sleep,
    ):
        self.channel = channel
        self.base_url = base_url_for(channel)
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._sleep = sleep
        self._http = httpx.Client(
            base_url=self.base_url,
            transport=transport,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
            headers={"Accept": "application/json"},
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # --- access token --------------------------------------------------------------------------------

    def access_token(self) -> str:
        """A valid token: the shared cached one, or a fresh one when it expires within 60 s.

        Never holds a transaction during the HTTP call; concurrent callers make one token request
        (see the module docstring). Raises InvalidCredentials, DarajaUnavailable.
        """
        return self._token(rejected=None)

    def _token(self, rejected: str | None) -> str:
        started = time.monotonic()
        deadline = started + CLAIM_SECONDS
        while True:
            if time.monotonic() > started + 3 * CLAIM_SECONDS:
                raise DarajaUnavailable("Could not obtain a Daraja access token (other processes kept refreshing).")
            row = AccessToken.objects.filter(channel=self.channel).first()
            now = clock.now()
            # a token stored under a key Wavu no longer has is no token: fetch a new one
            cached = row.token if row is not None and not crypto.is_unreadable(row.token) else ""
            if cached and cached != rejected and row.expires_at - REFRESH_MARGIN > now:
                return cached
            refreshing = (
                row is not None
                and cached != rejected
                and row.fetched_at >= row.expires_at - REFRESH_MARGIN
                and row.fetched_at > now - dt.timedelta(seconds=CLAIM_SECONDS)
            )
            if not refreshing or time.monotonic() >= deadline:
                # read before the claim, which moves the row's fetched_at: a failed refresh gives it back
                released = row.fetched_at if row is not None else now - dt.timedelta(days=1)
                claimed = self._claim(row, now)
                if claimed is not None:
                    return self._fetch_and_store(claimed, release_to=released)
            if cached and cached != rejected and row.expires_at > now:
                return cached  # another process is refreshing; the old token still works
            self._sleep(0.2)

    def _claim(self, row: AccessToken | None, now: dt.datetime) -> AccessToken | None:
        """Mark the refresh as ours (conditional update / insert); None when another process won."""
        if row is None:
            try:
                with transaction.atomic():
                    return AccessToken.objects.create(channel=self.channel, token="", expires_at=now, fetched_at=now)
            except IntegrityError:
                return None
        won = AccessToken.objects.filter(pk=row.pk, fetched_at=row.fetched_at).update(fetched_at=now)
        if not won:
            return None
        row.fetched_at = now
        return row

    def _fetch_and_store(self, claimed: AccessToken, *, release_to: dt.datetime) -> str:
        started = clock.now()
        try:
            token, expires_in = self._fetch_token()
        except Exception:
            # give the claim back (fetched_at as it was before the claim) so another process may try at once
            AccessToken.objects.filter(pk=claimed.pk, fetched_at=claimed.fetched_at).update(fetched_at=release_to)
            raise
        expires_at = started + dt.timedelta(seconds=expires_in)
        AccessToken.objects.filter(pk=claimed.pk, expires_at__lt=expires_at).update(
            token=token, expires_at=expires_at, fetched_at=started
        )
        return token

    def _fetch_token(self) -> tuple[str, int]:
        channel = self.channel
        require_readable(channel, "consumer_key", "consumer_secret")
        if not channel.consumer_key or not channel.consumer_secret:
            raise ChannelNotConfigured(f"Channel {channel.shortcode} has no consumer key and secret for Daraja.")
        basic = base64.b64encode(f"{channel.consumer_key}:{channel.consumer_secret}".encode()).decode()
        data = self._send(
            "GET",
            TOKEN_PATH,
            params={"grant_type": "client_credentials"},
            headers={"Authorization": f"Basic {basic}"},
            idempotent=True,
            token_call=True,
        )
        token = data.get("access_token")
        try:
            expires_in = int(str(data.get("expires_in", "3599")).strip())
        except ValueError:
            expires_in = 0
        if not token or expires_in <= 0:
            raise DarajaError("Daraja's token answer had no access_token / expires_in.", envelope=_redact(data))
        log.info("daraja token fetched for channel %s (expires in %ss)", channel.shortcode, expires_in)
        return str(token), expires_in

    # --- transport -----------------------------------------------------------------------------------

    def _call(self, path: str, payload: dict, *, idempotent: bool, outcome_unknown=OutcomeUnknown) -> dict:
        """POST with the bearer token; on "invalid access token" fetch a new token once and repeat."""
        token = self.access_token()
        try:
            return self._send(
                "POST", path, json=payload, token=token, idempotent=idempotent, outcome_unknown=outcome_unknown
            )
        except InvalidAccessToken:
            log.warning("daraja refused the cached token for channel %s; fetching a new one", self.channel.shortcode)
            token = self._token(rejected=token)
            return self._send(
                "POST", path, json=payload, token=token, idempotent=idempotent, outcome_unknown=outcome_unknown
            )

    def _send(
        self,
        method: str,
        path: str,
        *,
        json: dict | None = None,
        params: dict | None = None,
        headers: dict | None = None,
        token: str | None = None,
        idempotent: bool,
        token_call: bool = False,
        outcome_unknown=OutcomeUnknown,
    ) -> dict:
        headers = dict(headers or {})
        if token:
            headers["Authorization"] = f"Bearer {token}"
        attempts = 1 + (self.max_retries if idempotent else 0)
        for attempt in range(1, attempts + 1):
            last = attempt == attempts
            try:
                response = self._http.request(method, path, json=json, params=params, headers=headers)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                # Nothing reached Daraja: safe to report as unavailable, even for a push.
                log.warning("daraja %s %s: cannot connect (%s), attempt %s", method, path, type(exc).__name__, attempt)
                if last:
                    raise DarajaUnavailable(
                        f"Cannot reach Daraja at {self.base_url} ({type(exc).__name__}); try again later."
                    ) from None
                self._sleep(self._delay(attempt, None))
                continue
            except httpx.TransportError as exc:
                log.warning("daraja %s %s: %s, attempt %s", method, path, type(exc).__name__, attempt)
                if not idempotent:
                    raise outcome_unknown(
                        f"Daraja did not answer ({type(exc).__name__}); the request may or may not have been "
                        "received. Query its status before trying again."
                    ) from None
                if last:
                    raise DarajaUnavailable(f"Daraja did not answer ({type(exc).__name__}); try again later.") from None
                self._sleep(self._delay(attempt, None))
                continue
            if response.status_code < 400:
                try:
                    data = response.json()
                except ValueError:
                    raise DarajaError(
                        f"Daraja answered HTTP {response.status_code} with a body that is not JSON.",
                        http_status=response.status_code,
                        envelope={"body": response.text[:500]},
                    ) from None
                if not isinstance(data, dict):
                    raise DarajaError("Daraja answered with JSON that is not an object.", envelope={"body": data})
                return data
            error = error_from_response(response, token_call=token_call)
            log.warning(
                "daraja %s %s: HTTP %s %s, attempt %s",
                method,
                path,
                response.status_code,
                error.daraja_code or "-",
                attempt,
            )
            if not idempotent and isinstance(error, DarajaUnavailable) and not isinstance(error, DarajaRateLimited):
                raise outcome_unknown(
                    f"Daraja failed (HTTP {response.status_code}) while handling the request; it may or may not "
                    "have been received. Query its status before trying again.",
                    http_status=response.status_code,
                    daraja_code=error.daraja_code,
                    envelope=error.envelope,
                ) from None
            if idempotent and not last and isinstance(error, DarajaUnavailable):
                self._sleep(self._delay(attempt, response))
                continue
            raise error
        raise AssertionError("unreachable")  # pragma: no cover

    def _delay(self, attempt: int, response: httpx.Response | None) -> float:
        delay = self.backoff * 2 ** (attempt - 1)
        if response is not None:
            retry_after = response.headers.get("Retry-After", "")
            if retry_after.isdigit():
                delay = max(delay, float(retry_after))
        return min(delay, self.max_backoff)

    # --- M-Pesa Express (STK push) --------------------------------------------------------------------

    def _stk_auth(self, at: dt.datetime | None = None) -> dict:
        channel = self.channel
        require_readable(channel, "passkey")
        if not channel.passkey:
            raise ChannelNotConfigured(f"Channel {channel.shortcode} has no Lipa na M-Pesa Online passkey.")
        timestamp = daraja_timestamp(at)
        return {
            "BusinessShortCode": channel.shortcode,
            "Password": stk_password(channel.shortcode, channel.passkey, timestamp),
            "Timestamp": timestamp,
        }

    def stk_push_payload(self, phone: str, amount, account_reference: str, description: str, callback_url: str) -> dict:
        """The validated request body (see `stk_push`); raises ValidationError before anything is sent."""
        errors: dict[str, list[str]] = {}
        values = {}
        checks = {
            "phone": lambda: normalize_msisdn(phone),
            "amount": lambda: whole_shillings(amount),
            "account_reference": lambda: check_safe_text("account_reference", account_reference, ACCOUNT_REFERENCE_MAX),
            "description": lambda: check_safe_text("description", description, TRANSACTION_DESC_MAX),
            "callback_url": lambda: _check_url("callback_url", callback_url),
        }
        for name, check in checks.items():
            try:
                values[name] = check()
            except ValidationError as exc:
                errors[name] = exc.message_dict.get(name, exc.messages) if hasattr(exc, "error_dict") else exc.messages
        if errors:
            raise ValidationError(errors)
        channel = self.channel
        till = channel.kind == PaymentChannel.Kind.TILL
        return {
            **self._stk_auth(),
            "TransactionType": "CustomerBuyGoodsOnline" if till else "CustomerPayBillOnline",
            "Amount": values["amount"],
            "PartyA": values["phone"],
            "PartyB": channel.till_number if till else channel.shortcode,
            "PhoneNumber": values["phone"],
            "CallBackURL": values["callback_url"],
            "AccountReference": values["account_reference"],
            "TransactionDesc": values["description"],
        }

    def stk_push(
        self, phone: str, amount, account_reference: str, description: str, callback_url: str
    ) -> StkPushResult:
        """Ask the customer's phone to pay `amount` (whole shillings) to this channel. Sent ONCE.

        Paybill: TransactionType CustomerPayBillOnline, PartyB = the shortcode. Till: CustomerBuyGoodsOnline,
        BusinessShortCode = the store number, PartyB = the till number. Not idempotent: on
        StkPushOutcomeUnknown query the CheckoutRequestID you may not have, i.e. treat the purpose as
        pending and reconcile by callback / account reference. Raises ValidationError (bad input, nothing
        sent), ChannelNotConfigured, SubscriberBusy, DarajaBadRequest, DarajaRateLimited, DarajaUnavailable
        (nothing was sent), StkPushOutcomeUnknown, DarajaError.
        """
        payload = self.stk_push_payload(phone, amount, account_reference, description, callback_url)
        log.info(
            "daraja stk push: channel %s, %s KES %s, ref %s",
            self.channel.shortcode,
            mask_msisdn(payload["PhoneNumber"]),
            payload["Amount"],
            payload["AccountReference"],
        )
        data = self._call(STK_PUSH_PATH, payload, idempotent=False, outcome_unknown=StkPushOutcomeUnknown)
        code = _first(data, "ResponseCode")
        if code != "0" or not data.get("CheckoutRequestID"):
            raise DarajaError(
                f"Daraja did not accept the STK push ({code or 'no code'}: {_describe(data, 'no description')}).",
                daraja_code=code,
                envelope=data,
            )
        return StkPushResult(
            merchant_request_id=_first(data, "MerchantRequestID"),
            checkout_request_id=str(data["CheckoutRequestID"]),
            response_code=code,
            response_description=_first(data, "ResponseDescription"),
            customer_message=_first(data, "CustomerMessage"),
            raw=data,
        )

    def stk_query(self, checkout_request_id: str) -> StkQueryResult:
        """The state of an STK push. Idempotent (retried with backoff). "The transaction is being processed"
        (an error envelope while the customer has not answered) comes back as `pending=True`."""
        if not checkout_request_id or not str(checkout_request_id).strip():
            raise ValidationError({"checkout_request_id": ["Give the CheckoutRequestID to query."]})
        payload = {**self._stk_auth(), "CheckoutRequestID": str(checkout_request_id).strip()}
        try:
            data = self._call(STK_QUERY_PATH, payload, idempotent=True)
        except StkRequestPending as exc:
            desc = str(exc.envelope.get("errorMessage", ""))
            return StkQueryResult(str(checkout_request_id).strip(), True, None, desc, "", exc.envelope)
        result_code = _first(data, "ResultCode")
        return StkQueryResult(
            checkout_request_id=_first(data, "CheckoutRequestID") or str(checkout_request_id),
            pending=result_code == "",
            result_code=result_code or None,
            result_desc=_first(data, "ResultDesc", "ResponseDescription"),
            merchant_request_id=_first(data, "MerchantRequestID"),
            raw=data,
        )

    # --- C2B, Transaction Status, Reversal -------------------------------------------------------------

    def register_c2b_urls(
        self, confirmation_url: str, validation_url: str, response_type: str = "Completed"
    ) -> AcceptedResult:
        """Register the channel's C2B confirmation and validation URLs (v2: masked MSISDN). Idempotent.

        `response_type` is what M-Pesa does when the validation URL cannot be reached: "Completed" or
        "Cancelled". For a till, the ShortCode registered is the store number (`shortcode`).
        """
        if response_type not in RESPONSE_TYPES:
            raise ValidationError({"response_type": ['response_type is "Completed" or "Cancelled".']})
        payload = {
            "ShortCode": self.channel.shortcode,
            "ResponseType": response_type,
            "ConfirmationURL": _check_url("confirmation_url", confirmation_url),
            "ValidationURL": _check_url("validation_url", validation_url),
        }
        return self._accepted(self._call(C2B_REGISTER_PATH, payload, idempotent=True), "C2B URL registration")

    def _initiator(self) -> dict:
        channel = self.channel
        require_readable(channel, "security_credential")
        if not channel.initiator_name or not channel.security_credential:
            raise ChannelNotConfigured(
                f"Channel {channel.shortcode} needs an initiator name and security credential for this request."
            )
        return {"Initiator": channel.initiator_name, "SecurityCredential": channel.security_credential}

    def transaction_status(
        self,
        trans_id: str,
        result_url: str,
        timeout_url: str,
        *,
        remarks: str = "Status check",
        occasion: str = "",
        party_a: str | None = None,
        identifier_type: str = "4",
    ) -> AcceptedResult:
        """Ask for the status of an M-Pesa receipt; the answer arrives later at `result_url`. Idempotent.

        PartyA defaults to the channel's shortcode with IdentifierType 4 (organisation shortcode).
        """
        if not trans_id or not re.fullmatch(r"[A-Za-z0-9]{6,20}", str(trans_id).strip()):
            raise ValidationError({"trans_id": [f"{trans_id!r} is not an M-Pesa receipt number."]})
        payload = {
            **self._initiator(),
            "CommandID": "TransactionStatusQuery",
            "TransactionID": str(trans_id).strip().upper(),
            "PartyA": party_a or self.channel.shortcode,
            "IdentifierType": identifier_type,
            "ResultURL": _check_url("result_url", result_url),
            "QueueTimeOutURL": _check_url("timeout_url", timeout_url),
            "Remarks": (remarks or "Status check")[:100],
            "Occasion": (occasion or "")[:100],
        }
        return self._accepted(self._call(TRANSACTION_STATUS_PATH, payload, idempotent=True), "Transaction Status")

    def reversal(
        self,
        trans_id: str,
        amount,
        result_url: str,
        timeout_url: str,
        *,
        remarks: str = "Payment reversal",
        occasion: str = "",
    ) -> AcceptedResult:
        """Reverse a C2B receipt to this channel (ReceiverParty = shortcode, RecieverIdentifierType "11" as
        Daraja spells it). Sent ONCE: a timeout raises OutcomeUnknown (check with Transaction Status)."""
        if not trans_id or not re.fullmatch(r"[A-Za-z0-9]{6,20}", str(trans_id).strip()):
            raise ValidationError({"trans_id": [f"{trans_id!r} is not an M-Pesa receipt number."]})
        payload = {
            **self._initiator(),
            "CommandID": "TransactionReversal",
            "TransactionID": str(trans_id).strip().upper(),
            "Amount": str(whole_shillings(amount)),
            "ReceiverParty": self.channel.shortcode,
            "RecieverIdentifierType": "11",
            "ResultURL": _check_url("result_url", result_url),
            "QueueTimeOutURL": _check_url("timeout_url", timeout_url),
            "Remarks": (remarks or "Payment reversal")[:100],
            "Occasion": (occasion or "")[:100],
        }
        return self._accepted(self._call(REVERSAL_PATH, payload, idempotent=False), "Reversal")

    def b2c_payment(
        self,
        phone: str,
        amount,
        result_url: str,
        timeout_url: str,
        *,
        originator_conversation_id: str,
        command_id: str = "BusinessPayment",
        remarks: str = "Refund",
        occasion: str = "",
    ) -> AcceptedResult:
        """Pay `amount` (whole shillings) from this B2C channel to `phone` (Daraja B2C v3). Sent ONCE.

        `originator_conversation_id` is ours (unique per payment): the result names it, so a payment whose
        answer was lost (OutcomeUnknown) is still settled by its result; never send it again. The body
        uses Daraja's spelling `Occassion`. PartyA is the channel's (B2C) shortcode, PartyB the phone
        (2547…/2541…). Remarks and Occassion: at most 100 characters of [A-Za-z0-9 -]. Raises
        ValidationError (nothing sent), ChannelNotConfigured (not a B2C channel, or no initiator or
        credential), DarajaBadRequest, DarajaRateLimited, DarajaUnavailable (nothing sent),
        OutcomeUnknown, DarajaError.
        """
        if self.channel.kind != PaymentChannel.Kind.B2C:
            raise ChannelNotConfigured(f"Channel {self.channel.shortcode} is not a B2C channel; it cannot pay out.")
        errors: dict[str, list[str]] = {}
        values = {}
        checks = {
            "phone": lambda: normalize_msisdn(phone),
            "amount": lambda: whole_shillings(amount),
            "remarks": lambda: check_safe_text("remarks", remarks, REMARKS_MAX),
            "occasion": lambda: check_safe_text("occasion", occasion, REMARKS_MAX) if occasion else "",
            "result_url": lambda: _check_url("result_url", result_url),
            "timeout_url": lambda: _check_url("timeout_url", timeout_url),
        }
        for name, check in checks.items():
            try:
                values[name] = check()
            except ValidationError as exc:
                errors[name] = exc.message_dict.get(name, exc.messages) if hasattr(exc, "error_dict") else exc.messages
        if command_id not in B2C_COMMANDS:
            errors["command_id"] = [f"CommandID is one of {', '.join(B2C_COMMANDS)}."]
        if not originator_conversation_id or len(originator_conversation_id) > 64:
            errors["originator_conversation_id"] = ["Give a unique OriginatorConversationID (at most 64 characters)."]
        if errors:
            raise ValidationError(errors)
        initiator = self._initiator()
        payload = {
            "OriginatorConversationID": originator_conversation_id,
            "InitiatorName": initiator["Initiator"],
            "SecurityCredential": initiator["SecurityCredential"],
            "CommandID": command_id,
            "Amount": str(values["amount"]),
            "PartyA": self.channel.shortcode,
            "PartyB": values["phone"],
            "Remarks": values["remarks"],
            "QueueTimeOutURL": values["timeout_url"],
            "ResultURL": values["result_url"],
            "Occassion": values["occasion"],
        }
        log.info(
            "daraja b2c: channel %s, %s KES %s, %s",
            self.channel.shortcode,
            mask_msisdn(values["phone"]),
            values["amount"],
            originator_conversation_id,
        )
        return self._accepted(self._call(B2C_PATH, payload, idempotent=False), "B2C payment")

    @staticmethod
    def _accepted(data: dict, what: str) -> AcceptedResult:
        code = _first(data, "ResponseCode")
        if code != "0":
            raise DarajaError(
                f"Daraja did not accept the {what} ({code or 'no code'}: {_describe(data, 'no description')}).",
                daraja_code=code,
                envelope=data,
            )
        return AcceptedResult(
            response_code=code,
            response_description=_first(data, "ResponseDescription"),
            conversation_id=_first(data, "ConversationID"),
            originator_conversation_id=_first(data, "OriginatorConversationID", "OriginatorCoversationID"),
            raw=data,
        )


def _redact(data: dict) -> dict:
    return {k: ("***" if "token" in k.lower() else v) for k, v in data.items()}
