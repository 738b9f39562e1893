"""Django settings for Wavu.

Every setting that an operator may change comes from the environment and is documented in
docs/configuration.md. Defaults are safe for the demo; production (DEBUG off) refuses to start
without a real SECRET_KEY.
"""

import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent
VAR_DIR = Path(os.environ.get("WAVU_VAR_DIR", Path.cwd() / "var"))


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


DEMO_SECRET_KEY = "wavu-demo-insecure-secret-key-change-me-in-production"
DEBUG = env_bool("DEBUG", True)
SECRET_KEY = os.environ.get("SECRET_KEY", DEMO_SECRET_KEY)
if not DEBUG and (SECRET_KEY == DEMO_SECRET_KEY or len(SECRET_KEY) < 32):
    raise ImproperlyConfigured("DEBUG is off: set SECRET_KEY to a random value of at least 32 characters.")

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1],testserver")
WAVU_PUBLIC_URL = os.environ.get("WAVU_PUBLIC_URL", "http://127.0.0.1:8000").rstrip("/")
# Encrypts provider secrets at rest (core/crypto.py); derived from SECRET_KEY when empty.
WAVU_ENCRYPTION_KEY = os.environ.get("WAVU_ENCRYPTION_KEY", "")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "django_tasks",
    "django_tasks_db",
    "wavu.core",
    "wavu.customers",
    "wavu.catalog",
    "wavu.subscriptions",
    "wavu.ledger",
    "wavu.billing",
    "wavu.payments",
    "wavu.mpesa",
    "wavu.network",
    "wavu.hotspot",
    # On top of the apps above and imported by none of them: they only host their commands (no models).
    "wavu.demo",  # `wavu demo`, `wavu seed-demo`
    "wavu.mpesa_simulator",  # `wavu mpesa-simulator`
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "wavu.core.middleware.RefuseNulMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "wavu.core.middleware.AuditContextMiddleware",
]

ROOT_URLCONF = "wavu.urls"
WSGI_APPLICATION = "wavu.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

_default_sqlite = f"sqlite:///{VAR_DIR / 'wavu.sqlite3'}"
DATABASES = {"default": dj_database_url.parse(os.environ.get("DATABASE_URL", _default_sqlite), conn_max_age=60)}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL and a busy timeout let the web server and the worker share the file; IMMEDIATE
    # transactions take the write lock up front so concurrent writers queue instead of failing.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;",
    }
    DATABASES["default"]["CONN_MAX_AGE"] = 0
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Background work (docs/operations.md "Background work"): jobs are rows in the same database, run by
# `wavu worker`. One backend, one queue; the worker claims rows with SELECT … FOR UPDATE SKIP LOCKED on
# PostgreSQL and under SQLite's write lock, so any number of workers never run a job twice.
TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend", "QUEUES": ["default"]}}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en"
LANGUAGES = [("en", "English"), ("sw", "Kiswahili")]
TIME_ZONE = os.environ.get("TIME_ZONE", "Africa/Nairobi")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAdminUser"],
    "DEFAULT_PAGINATION_CLASS": "wavu.core.api.StandardPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": [
        "django_filters.rest_framework.DjangoFilterBackend",
        "rest_framework.filters.SearchFilter",
        "rest_framework.filters.OrderingFilter",
    ],
    "DEFAULT_SCHEMA_CLASS": "wavu.core.schema.WavuAutoSchema",
    "EXCEPTION_HANDLER": "wavu.core.api.error_handler",
    "COERCE_DECIMAL_TO_STRING": True,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Wavu API",
    "DESCRIPTION": "Billing and subscriber management for Kenyan ISPs. Amounts are decimal strings in KES.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # The API speaks JSON: document JSON request bodies only (form posts still parse, for the browsable API).
    "PARSER_WHITELIST": ["rest_framework.parsers.JSONParser"],
    # One stable name per choice set, so generated clients get readable enum types.
    "ENUM_NAME_OVERRIDES": {
        "CustomerKindEnum": "wavu.customers.models.Customer.Kind",
        "CustomerStatusEnum": "wavu.customers.models.Customer.Status",
        "PlanKindEnum": "wavu.catalog.models.Plan.Kind",
        "SubscriptionStatusEnum": "wavu.subscriptions.models.Status",
        "InvoiceStatusEnum": "wavu.billing.models.Invoice.Status",
        "InvoiceLineKindEnum": "wavu.billing.models.InvoiceLine.Kind",
        "PaymentStatusEnum": "wavu.payments.models.Payment.Status",
        "PaymentMethodEnum": "wavu.payments.models.Method",
        "JournalEntryKindEnum": "wavu.ledger.models.JournalEntry.Kind",
        "AccountTypeEnum": "wavu.ledger.models.Account.Type",
        "NasTypeEnum": "wavu.network.models.Nas.Type",
        "SecretStatusEnum": "wavu.mpesa.channels.SECRET_STATES",
    },
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}


# --- Wavu business settings (the ISP's identity on invoices and how customers pay) ---
def _optional_int(name: str, low: int, high: int) -> int | None:
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    if not value.isdigit() or not low <= int(value) <= high:
        raise ImproperlyConfigured(f"{name} must be a whole number from {low} to {high}, not {value!r}.")
    return int(value)


def _int_list(name: str, default: str) -> list[int]:
    try:
        return sorted({int(part) for part in os.environ.get(name, default).split(",") if part.strip()})
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be whole numbers separated by commas, e.g. -3,0,3.") from exc


WAVU = {
    "CURRENCY": "KES",
    "ISP_NAME": os.environ.get("WAVU_ISP_NAME", "Wavu Demo Networks Ltd"),
    "ISP_ADDRESS": os.environ.get("WAVU_ISP_ADDRESS", "P.O. Box 12345-00100, Ngong Road, Nairobi"),
    "ISP_KRA_PIN": os.environ.get("WAVU_ISP_KRA_PIN", "P051234567X"),
    "ISP_PHONE": os.environ.get("WAVU_ISP_PHONE", "0700 000 000"),
    "ISP_EMAIL": os.environ.get("WAVU_ISP_EMAIL", "billing@wavu.example"),
    "PAYBILL_NUMBER": os.environ.get("WAVU_PAYBILL_NUMBER", "123456"),
    "INVOICE_DUE_DAYS": int(os.environ.get("WAVU_INVOICE_DUE_DAYS", "7")),
    "CREDIT_NOTE_WINDOW_DAYS": int(os.environ.get("WAVU_CREDIT_NOTE_WINDOW_DAYS", "365")),
    # Postpaid billing day for the whole ISP (1–31); empty: each service bills on the day it started.
    "BILLING_DAY": _optional_int("WAVU_BILLING_DAY", 1, 31),
    # Dunning: reminders at these days from the due date (negative = before), then suspension
    # after the grace period; a promise to pay holds suspension off for at most this many days.
    "DUNNING_REMINDER_DAYS": _int_list("WAVU_DUNNING_REMINDER_DAYS", "-3,0,3"),
    "DUNNING_GRACE_DAYS": int(os.environ.get("WAVU_DUNNING_GRACE_DAYS", "5")),
    "PROMISE_TO_PAY_MAX_DAYS": int(os.environ.get("WAVU_PROMISE_TO_PAY_MAX_DAYS", "7")),
    # Vacation hold: the longest pause (it resumes by itself then) and how many pauses a year.
    "PAUSE_MAX_DAYS": int(os.environ.get("WAVU_PAUSE_MAX_DAYS", "90")),
    "PAUSES_PER_YEAR": int(os.environ.get("WAVU_PAUSES_PER_YEAR", "2")),
    # The local Daraja simulator (`wavu mpesa-simulator`) that channels in the "simulator" environment call.
    "MPESA_SIMULATOR_URL": os.environ.get("WAVU_MPESA_SIMULATOR_URL", "http://127.0.0.1:8900").rstrip("/"),
    # Provider hooks (/hooks/…): the largest body kept, how many reverse proxies to trust for the
    # source address (X-Forwarded-For), and when a stored callback counts as stuck or given up.
    "HOOK_MAX_BODY_BYTES": int(os.environ.get("WAVU_HOOK_MAX_BODY_BYTES", "16384")),
    "HOOK_TRUSTED_PROXIES": int(os.environ.get("WAVU_HOOK_TRUSTED_PROXIES", "0")),
    "CALLBACK_STUCK_SECONDS": int(os.environ.get("WAVU_CALLBACK_STUCK_SECONDS", "60")),
    "CALLBACK_MAX_ATTEMPTS": int(os.environ.get("WAVU_CALLBACK_MAX_ATTEMPTS", "8")),
    "HOOK_CHANNEL_CACHE_SECONDS": int(os.environ.get("WAVU_HOOK_CHANNEL_CACHE_SECONDS", "5")),
    # Subscriptions billed per transaction in a billing run.
    "BILLING_BATCH_SIZE": int(os.environ.get("WAVU_BILLING_BATCH_SIZE", "500")),
    # Background work: how long finished job records are kept (days), and after how many seconds
    # without a heartbeat a worker counts as stale (/healthz, recovery of the jobs it was running).
    "TASK_RESULTS_KEEP_DAYS": int(os.environ.get("WAVU_TASK_RESULTS_KEEP_DAYS", "30")),
    "FAILED_TASK_RESULTS_KEEP_DAYS": int(os.environ.get("WAVU_FAILED_TASK_RESULTS_KEEP_DAYS", "90")),
    "WORKER_STALE_SECONDS": int(os.environ.get("WAVU_WORKER_STALE_SECONDS", "120")),
    # RADIUS (docs/network.md): what an expired or suspended customer gets, "walled_garden" (accepted
    # into an address list at a throttled rate, which the router redirects to the payment page) or
    # "reject"; the walled garden's group, address list, rate and session length; the accounting
    # interim interval; the address pool for services without a static IP (empty: the router's
    # profile decides); the longest session in seconds (0: none); services per reconciliation batch.
    "RADIUS_LAPSED_ACCESS": os.environ.get("WAVU_RADIUS_LAPSED_ACCESS", "walled_garden").strip().lower(),
    "RADIUS_WALLED_GARDEN_GROUP": os.environ.get("WAVU_RADIUS_WALLED_GARDEN_GROUP", "wavu-walled-garden"),
    "RADIUS_WALLED_GARDEN_ADDRESS_LIST": os.environ.get("WAVU_RADIUS_WALLED_GARDEN_ADDRESS_LIST", "wavu-unpaid"),
    "RADIUS_WALLED_GARDEN_RATE_LIMIT": os.environ.get("WAVU_RADIUS_WALLED_GARDEN_RATE_LIMIT", "256k/256k"),
    "RADIUS_WALLED_GARDEN_SESSION_TIMEOUT": int(os.environ.get("WAVU_RADIUS_WALLED_GARDEN_SESSION_TIMEOUT", "900")),
    "RADIUS_INTERIM_INTERVAL": int(os.environ.get("WAVU_RADIUS_INTERIM_INTERVAL", "300")),
    "RADIUS_FRAMED_POOL": os.environ.get("WAVU_RADIUS_FRAMED_POOL", ""),
    "RADIUS_SESSION_TIMEOUT": int(os.environ.get("WAVU_RADIUS_SESSION_TIMEOUT", "86400")),
    "RADIUS_RECONCILE_BATCH": int(os.environ.get("WAVU_RADIUS_RECONCILE_BATCH", "1000")),
}
if WAVU["RADIUS_LAPSED_ACCESS"] not in ("walled_garden", "reject"):
    raise ImproperlyConfigured("WAVU_RADIUS_LAPSED_ACCESS must be walled_garden or reject.")
