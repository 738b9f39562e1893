"""Attributes every change made during a web request to the signed-in user and their address."""

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
