"""URL map: /api/v1/ (each app's `api.register` adds its routes), the schema, /admin/, /healthz, /hooks/."""

from django.contrib import admin
from django.db import connection
from django.http import JsonResponse
from django.urls import include, path
from django.views import defaults
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import DefaultRouter

from wavu.billing import api as billing_api
from wavu.catalog import api as catalog_api
from wavu.core.tasks import worker_health
from wavu.customers import api as customers_api
from wavu.hotspot import api as hotspot_api
from wavu.ledger import api as ledger_api
from wavu.mpesa import api as mpesa_api
from wavu.mpesa import selectors as mpesa_selectors
from wavu.network import api as network_api
from wavu.payments import api as payments_api
from wavu.subscriptions import api as subscriptions_api

router = DefaultRouter()
for module in (
    customers_api,
    catalog_api,
    subscriptions_api,
    billing_api,
    payments_api,
    ledger_api,
    mpesa_api,
    network_api,
    hotspot_api,
):
    module.register(router)


def healthz(request):
    """The database (503 when it fails), the background workers' liveness ("worker": ok / stale / none),
    and how many stored M-Pesa callbacks need a person ("mpesa_callbacks_needing_action": refused,
    mismatched, or failed after their retries, not yet marked dealt with; one count over a partial
    index; null when it cannot be read).

    A stale or missing worker, or callbacks needing action, do not make the answer 503 (the web process
    is healthy); monitor those fields separately (alert when the count is above 0).
    """
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as exc:  # noqa: BLE001 - a health check reports, it does not raise
        return JsonResponse({"status": "error", "database": str(exc), "worker": "unknown"}, status=503)
    try:
        worker = worker_health()
    except Exception:  # noqa: BLE001 - e.g. the table is missing before `migrate`
        worker = "unknown"
    try:
        needing_action = mpesa_selectors.count_callbacks_needing_action()
    except Exception:  # noqa: BLE001 - e.g. the table is missing before `migrate`
        needing_action = None
    return JsonResponse(
        {"status": "ok", "database": "ok", "worker": worker, "mpesa_callbacks_needing_action": needing_action}
    )


def not_found(request, exception):
    """404 for an address nothing answers: in the API's error format under /api/, Django's page elsewhere."""
    if request.path.startswith("/api/"):
        return JsonResponse({"error": {"code": "not_found", "message": "Not found.", "fields": {}}}, status=404)
    return defaults.page_not_found(request, exception)


handler404 = not_found

admin.site.site_header = "Wavu administration"
admin.site.site_title = "Wavu"

urlpatterns = [
    path("api/v1/", include(router.urls)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("admin/", admin.site.urls),
    path("healthz", healthz, name="healthz"),
    path("hooks/", include("wavu.mpesa.urls")),
]
