"""Reading what Daraja sends, strictly: the rules every hook and every parser of a Daraja payload applies.

Daraja sends UTF-8 JSON objects. Anything else is not Daraja, and is refused rather than guessed at,
with a reason (`BadCallback`):

- `load_json_object`: the body must be UTF-8 JSON holding an object, nested at most `MAX_DEPTH`
  deep, without a key twice in one object, without NaN/Infinity. Numbers with a fraction or an
  exponent become `JsonNumber` (a Decimal that remembers how it was written), never float. A body
  that would exhaust the parser's recursion is refused like any malformed body.
- `daraja_amount`: ASCII digits with an optional decimal point ("1500", "1500.00", 1.0), then
  `payments.services.clean_amount` (positive, at most two decimals, at most the largest amount).
  Other scripts' digits ("١٠٠", "１００"), exponents ("1E+3", 1e-2), signs and separators are refused:
  Python's int() and Decimal() would read them; Daraja never sends them.
- `daraja_time`: the one parser of Daraja's timestamps (C2B TransTime, STK TransactionDate,
  Transaction Status FinalisedTime): YYYYMMDDHHmmss (text or a JSON integer), a real date and time
  in Nairobi, not before 2007 (M-Pesa began then) and at most one day after `clock.now()`.
  `plausible_time` is the same check for a time read another way (the portal statement). A year-1
  date would be stored by PostgreSQL as 1 BC, which Python cannot read back: every page showing it
  would fail for ever.
- text: `require_storable` refuses a payload holding text PostgreSQL cannot store (NUL, a lone
  UTF-16 surrogate), anywhere, keys included: acknowledged, it could never be processed.
  `has_control_characters` finds control characters in an identifier (refused), `clean_name`
  removes them from a person's name (kept).

Storing: `storable` escapes NUL and lone surrogates in text for a PostgreSQL text column, and
`storable_body` turns any request body into text (invalid UTF-8 bytes as \\xNN escapes, NUL as
\\x00), so every request, however hostile, can be kept.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import unicodedata
import zoneinfo
from decimal import Decimal

from django.core.exceptions import ValidationError

from wavu.core import clock
from wavu.payments.services import clean_amount

# M-Pesa states its times in Kenyan time, whatever the ISP's TIME_ZONE.
MPESA_TIME_ZONE = zoneinfo.ZoneInfo("Africa/Nairobi")
# An M-Pesa receipt number (TransID, MpesaReceiptNumber): letters and digits, as Daraja writes them.
RECEIPT_NUMBER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,59}$")
EARLIEST_TIME = dt.datetime(2007, 1, 1, tzinfo=MPESA_TIME_ZONE)  # M-Pesa launched in March 2007
FUTURE_LIMIT = dt.timedelta(days=1)  # a Daraja time later than this after now is refused

MAX_DEPTH = 32  # Daraja's payloads nest 5 levels deep at most

_TIME_RE = re.compile(r"[0-9]{14}")
_AMOUNT_RE = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_UNSTORABLE_RE = re.compile("[\x00\ud800-\udfff]")


class BadCallback(Exception):
    """A payload that cannot be processed; `code` is stable, `fields` names what is wrong."""

    def __init__(self, code: str, message: str, fields: dict | None = None):
        super().__init__(message)
        self.code, self.message, self.fields = code, message, fields or {}


class JsonNumber(Decimal):
    """A JSON number with a fraction or an exponent, as Decimal; `text` is how the body wrote it."""

    __slots__ = ("text",)


def _json_number(text: str) -> JsonNumber:
    number = JsonNumber(text)
    number.text = text
    return number


def _reject_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs: list) -> dict:
    """json's object_pairs_hook: the object as a dict, refusing a key given twice (json.loads would
    keep the last one silently: two amounts, and the one read is the one an attacker put last)."""
    data = dict(pairs)
    if len(data) != len(pairs):
        seen: set = set()
        raise _DuplicateKey(next(key for key, _ in pairs if key in seen or seen.add(key)))
    return data


def _depth(data) -> int:
    """How deep objects and arrays nest in `data` (iterative: a deep body cannot exhaust the stack)."""
    deepest, stack = 0, [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            value = value.values()
        elif not isinstance(value, list):
            continue
        deepest = max(deepest, depth)
        if depth > MAX_DEPTH:
            break
        stack.extend((child, depth + 1) for child in value)
    return deepest


def load_json_object(body: bytes | str) -> dict:
    """The body as a JSON object (see the module doc). Raises BadCallback: malformed_json (not UTF-8,
    not JSON, NaN, nested too deeply), duplicate_key, or not_an_object."""
    try:
        text = body.decode("utf-8") if isinstance(body, bytes) else body
        data = json.loads(
            text, parse_float=_json_number, parse_constant=_reject_constant, object_pairs_hook=_unique_keys
        )
    except _DuplicateKey as exc:
        key = storable(str(exc))
        raise BadCallback(
            "duplicate_key", f"the key {key!r} is given twice in one object", {key: ["given twice"]}
        ) from None
    except RecursionError:
        raise BadCallback("malformed_json", "the body is nested too deeply to be a Daraja payload") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadCallback("malformed_json", storable(f"the body is not valid JSON: {exc}")) from exc
    if not isinstance(data, dict):
        raise BadCallback("not_an_object", "the body must be a JSON object")
    if _depth(data) > MAX_DEPTH:
        raise BadCallback("malformed_json", f"the body is nested more than {MAX_DEPTH} levels deep")
    return data


# --- text ----------------------------------------------------------------------------------------------


def unstorable_paths(data) -> list[str]:
    """Where `data` (parsed JSON) holds text PostgreSQL cannot store (NUL, a lone surrogate), in keys
    or values, as paths like "Result.ResultDesc" or "Body.stkCallback.CallbackMetadata.Item[2].Value"."""
    found, stack = [], [(data, "")]
    while stack:
        value, path = stack.pop()
        if isinstance(value, dict):
            for key, child in value.items():
                where = f"{path}.{key}" if path else str(key)
                if _UNSTORABLE_RE.search(key):
                    found.append(storable(where))
                stack.append((child, where))
        elif isinstance(value, list):
            stack.extend((child, f"{path}[{n}]") for n, child in enumerate(value))
        elif isinstance(value, str) and _UNSTORABLE_RE.search(value):
            found.append(storable(path))
    return sorted(set(found))


def require_storable(data) -> None:
    """Raise BadCallback("unstorable_text") naming where `data` holds text PostgreSQL cannot store."""
    paths = unstorable_paths(data)
    if paths:
        raise BadCallback(
            "unstorable_text",
            "the payload holds a NUL character or a lone surrogate, which Daraja never sends: " + ", ".join(paths[:5]),
            {path: ["holds a NUL character or a lone surrogate"] for path in paths[:20]},
        )


def has_control_characters(text: str) -> bool:
    """True when `text` holds a control character (NUL, tab, escape …) or a lone surrogate."""
    return any(unicodedata.category(ch) in ("Cc", "Cs") for ch in text)


def clean_name(text: str) -> str:
    """A person's name without control characters or lone surrogates (a whitespace control becomes a
    space; runs of spaces become one)."""
    if not has_control_characters(text):
        return text
    kept = (" " if ch.isspace() else "" if unicodedata.category(ch) in ("Cc", "Cs") else ch for ch in text)
    return " ".join("".join(kept).split())


def storable(text: str) -> str:
    """`text` with NUL written as \\x00 and lone surrogates as \\ud800-style escapes, so a PostgreSQL
    text column takes it."""
    if not _UNSTORABLE_RE.search(text):
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


def storable_body(body: bytes) -> str:
    """A request body as text to keep: the text itself when it is UTF-8 without NUL (byte for byte);
    otherwise a faithful escaped form: invalid bytes as \\xNN, NUL as \\x00. A body needing escapes is
    never valid JSON, so it is always refused and never processed from this text."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        text = body.decode("utf-8", errors="backslashreplace")
    return text.replace("\x00", "\\x00") if "\x00" in text else text


# --- times ---------------------------------------------------------------------------------------------


def plausible_time(moment: dt.datetime, *, field: str) -> dt.datetime:
    """`moment` when it lies from 1 Jan 2007 to one day after `clock.now()`, compared in Nairobi time;
    ValueError naming `field` otherwise."""
    local = moment if moment.tzinfo is MPESA_TIME_ZONE else moment.astimezone(MPESA_TIME_ZONE)
    # Compared within one zone: the naive fields are compared, so year 1 cannot overflow into year 0.
    shown = local.replace(tzinfo=None).isoformat(sep=" ", timespec="seconds")  # year 1 as 0001, not 1
    if local < EARLIEST_TIME:
        raise ValueError(f"{field} {shown} is before 2007, when M-Pesa began")
    if local > clock.now().astimezone(MPESA_TIME_ZONE) + FUTURE_LIMIT:
        raise ValueError(f"{field} {shown} is more than a day in the future")
    return moment


def daraja_time(value, *, field: str) -> dt.datetime:
    """A Daraja timestamp YYYYMMDDHHmmss (text, or a JSON integer as in STK and status results) in
    Nairobi time, as an aware datetime. ValueError with a message naming `field` when it is not 14
    ASCII digits, not a real date and time, or not plausible (`plausible_time`)."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(f"{field} must be a date and time YYYYMMDDHHmmss")
    text = str(value).strip()
    if not _TIME_RE.fullmatch(text):
        raise ValueError(f"{field} {storable(text)[:40]!r} is not a date and time YYYYMMDDHHmmss")
    try:
        moment = dt.datetime.strptime(text, "%Y%m%d%H%M%S").replace(tzinfo=MPESA_TIME_ZONE)
    except ValueError:
        raise ValueError(f"{field} {text!r} is not a date and time YYYYMMDDHHmmss") from None
    return plausible_time(moment, field=field)


# --- amounts -------------------------------------------------------------------------------------------


def daraja_amount(value, *, field: str) -> Decimal:
    """An amount as Daraja writes it (text "1500.00", or a JSON number 1500 / 1500.0) as a Decimal with
    two places. Raises ValidationError({field: [...]}) for anything else (see the module doc)."""
    if isinstance(value, JsonNumber):
        text = value.text
    elif isinstance(value, int | Decimal) and not isinstance(value, bool):
        text = str(value)
    elif isinstance(value, str):
        text = value.strip()
    else:
        raise ValidationError({field: [f'{field} must be an amount like "1500.00"']})
    if not text:
        raise ValidationError({field: [f"{field} is required"]})
    if not _AMOUNT_RE.fullmatch(text):
        raise ValidationError(
            {field: [f"{field} {storable(text)[:40]!r} is not an amount as Daraja writes one (digits 0-9, a point)"]}
        )
    return clean_amount(Decimal(text), field=field)
