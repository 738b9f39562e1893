"""Provider hook paths, included at /hooks/ (namespace "mpesa-hooks"; interfaces.md).

Safaricom refuses callback URLs containing mpesa, safaricom, query, sql, exe or cmd, so none of
these paths do. Build absolute URLs as settings.WAVU_PUBLIC_URL + reverse("mpesa-hooks:…", args=[token]).
"""

from django.urls import path

from . import hooks

app_name = "mpesa-hooks"

urlpatterns = [
    path("c2b/<str:token>/validation", hooks.c2b_validation, name="c2b-validation"),
    path("c2b/<str:token>/confirmation", hooks.c2b_confirmation, name="c2b-confirmation"),
    path("stk/<str:token>/callback", hooks.stk_callback, name="stk-callback"),
    path("status/<str:token>/result", hooks.status_result, name="status-result"),
    path("status/<str:token>/timeout", hooks.status_timeout, name="status-timeout"),
    path("b2c/<str:token>/result", hooks.b2c_result, name="b2c-result"),
    path("b2c/<str:token>/timeout", hooks.b2c_timeout, name="b2c-timeout"),
    path("reversal/<str:token>/result", hooks.reversal_result, name="reversal-result"),
    path("reversal/<str:token>/timeout", hooks.reversal_timeout, name="reversal-timeout"),
]
