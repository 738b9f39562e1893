"""Middleware: every change made during a web request is attributed to the signed-in user and their
address; requests with a NUL character in their path or query are refused before they reach a query."""

from django.http import HttpResponseBadRequest, JsonResponse

from .audit import acting_as


class AuditContextMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        user = getattr(request, "user", None)
        if user is not None and not user.is_authenticated:
            user = None
        ip = request.META.get("REMOTE_ADDR") or None
        label = f"user:{user.get_username()}" if user else "anonymous"
        with acting_as(label, user=user, source_ip=ip):
            return self.get_response(request)


class RefuseNulMiddleware:
    """Answers 400 to a request for the API or the admin whose path or query parameters hold a NUL
    character (U+0000).

    PostgreSQL refuses NUL in text, so such a value reaching a query (`?search=%00`, a filter, a
    lookup by code) would be a 500. The API answers in its error format (`core.api`), naming the
    parameters; request bodies are checked by the serializers (DRF's CharField refuses NUL). The
    M-Pesa hooks keep every request they get (`mpesa.hooks`) and are not covered here."""

    PREFIXES = ("/api/", "/admin/")

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.path_info.startswith(self.PREFIXES):
            params = sorted(
                {key for key, values in request.GET.lists() if "\x00" in key or any("\x00" in v for v in values)}
            )
            if params or "\x00" in request.path_info:
                return self._refuse(request, params)
        return self.get_response(request)

    def _refuse(self, request, params):
        if params:
            message = "Query parameters cannot contain the NUL character (%00)."
            fields = {param.replace("\x00", "\\x00"): ["Cannot contain the NUL character (%00)."] for param in params}
        else:
            message = "The address cannot contain the NUL character (%00)."
            fields = {}
        if request.path_info.startswith("/api/"):
            return JsonResponse({"error": {"code": "invalid", "message": message, "fields": fields}}, status=400)
        return HttpResponseBadRequest(message, content_type="text/plain; charset=utf-8")
