"""The HTTP hooks Daraja calls (interfaces.md "Payment provider hooks"): plain Django views.

Only these views are CSRF-exempt; they use no session and no login: the per-channel token in the
path is the credential. A view resolves the token (unknown → 404, nothing stored), reads the body up
to the size limit, and hands the rest to `services.receive_hook`, which checks, stores and answers.

Source address: REMOTE_ADDR. Behind a reverse proxy set WAVU["HOOK_TRUSTED_PROXIES"] to the number
of proxies in front of Wavu; the address is then that many entries from the right of
X-Forwarded-For (the entry your outermost proxy wrote). Default 0: X-Forwarded-For is ignored,
because anyone can send it.
"""

from __future__ import annotations

import ipaddress

from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt

from . import selectors, services
from .models import InboundCallback

Kind = InboundCallback.Kind


def source_address(request) -> str | None:
    """The caller's address: REMOTE_ADDR, or the trusted proxies' X-Forwarded-For entry (module doc)."""
    proxies = selectors.hook_setting("HOOK_TRUSTED_PROXIES")
    candidate = request.META.get("REMOTE_ADDR") or ""
    if proxies > 0:
        chain = [entry.strip() for entry in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if entry.strip()]
        candidate = chain[-proxies] if len(chain) >= proxies else ""
    try:
        return str(ipaddress.ip_address(candidate))
    except ValueError:
        return None


def _read_body(request) -> tuple[bytes, bool]:
    """At most the limit + 1 bytes of the body, and whether it is over the limit (never reads more)."""
    limit = selectors.hook_setting("HOOK_MAX_BODY_BYTES")
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    body = request.read(limit + 1)
    return body, declared > limit or len(body) > limit


def _json(status: int, body: dict, headers: dict | None = None) -> JsonResponse:
    response = JsonResponse(body, status=status)
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def _hook(kind: str):
    @csrf_exempt
    def view(request, token: str):
        channel = selectors.channel_for_token(token)
        if channel is None:
            return _json(404, services.error_body("not_found", "Not found."))
        body, too_large = _read_body(request)
        answer = services.receive_hook(
            channel,
            kind,
            services.HookRequest(
                method=request.method,
                body=body,
                headers=dict(request.headers),
                source_ip=source_address(request),
                too_large=too_large,
            ),
        )
        return _json(answer.status, answer.body, answer.headers)

    view.__name__ = view.__qualname__ = f"{kind}_hook"
    view.__doc__ = f"POST hook for {Kind(kind).label}; see `services.receive_hook`."
    return view


c2b_validation = _hook(Kind.C2B_VALIDATION)
c2b_confirmation = _hook(Kind.C2B_CONFIRMATION)
stk_callback = _hook(Kind.STK_CALLBACK)
status_result = _hook(Kind.STATUS_RESULT)
status_timeout = _hook(Kind.STATUS_TIMEOUT)
b2c_result = _hook(Kind.B2C_RESULT)
b2c_timeout = _hook(Kind.B2C_TIMEOUT)
reversal_result = _hook(Kind.REVERSAL_RESULT)
reversal_timeout = _hook(Kind.REVERSAL_TIMEOUT)
