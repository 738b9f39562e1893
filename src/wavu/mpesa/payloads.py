"""Reading what Daraja sends, strictly: the rules every hook and every parser of a Daraja payload applies.

Daraja sends UTF-8 JSON objects. Anything else is not Daraja, and is refused rather than guessed at,
with a reason (`BadCallback`):

- `load_json_object`: the body must be UTF-8 JSON holding an object, nested at most `MAX_DEPTH`
  deep, without NaN/Infinity; numbers with a fraction become Decimal, never float. A body that
  would exhaust the parser's recursion is refused like any malformed body.

Storing: `storable` escapes NUL and lone surrogates in text for a PostgreSQL text column, and
`storable_body` turns any request body into text (invalid UTF-8 bytes as \\xNN escapes, NUL as
\\x00), so every request, however hostile, can be kept.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal

MAX_DEPTH = 32  # Daraja's payloads nest 5 levels deep at most

_UNSTORABLE_RE = re.compile("[\x00\ud800-\udfff]")


class BadCallback(Exception):
    """A payload that cannot be processed; `code` is stable, `fields` names what is wrong."""

    def __init__(self, code: str, message: str, fields: dict | None = None):
        super().__init__(message)
        self.code, self.message, self.fields = code, message, fields or {}


def _reject_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


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
        data = json.loads(text, parse_float=Decimal, parse_constant=_reject_constant)
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


def storable(text: str) -> str:
    """`text` with NUL written as \\x00 and lone surrogates as \\udXXX, so a PostgreSQL text column takes it."""
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
