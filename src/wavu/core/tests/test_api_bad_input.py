"""Bad input anywhere in the API gets a clear 4xx error in the documented shape, never a 500."""

import json

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db

CREATE_ENDPOINTS = [
    "/api/v1/customers/",
    "/api/v1/plans/",
    "/api/v1/addons/",
    "/api/v1/subscriptions/",
    "/api/v1/invoices/",
    "/api/v1/credit-notes/",
    "/api/v1/payments/",
]

GARBAGE = [
    {},
    [],
    "a string",
    42,
    None,
    {"amount": "abc", "customer": "x", "phone": 123, "lines": "nope"},
    {"amount": -5, "customer": -1, "plan": 999999, "method": "gold", "reference": ""},
    {"amount": 1e308, "customer": {"id": 1}, "lines": [{"unit_price": "NaN"}]},
    {"name": "x" * 10000, "phone": "0" * 500, "kra_pin": None, "kind": ["business"]},
]


@pytest.fixture
def api():
    client = APIClient()
    client.force_authenticate(get_user_model().objects.create_user("clerk", password="x", is_staff=True))
    return client


@pytest.mark.parametrize("url", CREATE_ENDPOINTS)
def test_garbage_bodies_get_a_4xx_error_and_create_nothing(api, url):
    from wavu.billing.models import Invoice
    from wavu.customers.models import Customer
    from wavu.payments.models import Payment

    for body in GARBAGE:
        response = api.post(url, data=json.dumps(body), content_type="application/json")
        assert 400 <= response.status_code < 500, (url, body, response.status_code, response.content[:300])
        assert "error" in response.json(), (url, body)
    response = api.post(url, data=b"{not json", content_type="application/json")
    assert response.status_code == 400 and response.json()["error"]["code"]
    assert not Customer.objects.exists() and not Invoice.objects.exists() and not Payment.objects.exists()


@pytest.mark.parametrize("url", [u + "999999/" for u in CREATE_ENDPOINTS] + ["/api/v1/invoices/abc/pdf/"])
def test_unknown_records_answer_404_in_the_error_format(api, url):
    response = api.get(url)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    "query",
    ["?page=abc", "?page=99999", "?page_size=-1", "?ordering=nonexistent", "?status=bogus", "?customer=abc"],
)
def test_odd_list_queries_never_500(api, query):
    for url in CREATE_ENDPOINTS:
        response = api.get(url + query)
        assert response.status_code < 500, (url, query, response.status_code)


# --- NUL characters (PostgreSQL refuses them in text: they must never reach a query) ------------------


def _list_urls() -> list[str]:
    from wavu.urls import router

    return [f"/api/v1/{prefix}/" for prefix, viewset, _ in router.registry if hasattr(viewset, "list")]


def test_a_nul_in_the_customer_search_is_a_400_naming_the_parameter(api):
    response = api.get("/api/v1/customers/?search=%00")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert list(error["fields"]) == ["search"]
    assert "NUL" in error["message"]


@pytest.mark.parametrize("url", _list_urls())
def test_a_nul_in_any_query_parameter_of_any_list_is_a_400_in_the_error_format(api, url):
    for query in ["?search=%00", "?search=Wanj%00iku", "?ordering=%00", "?page=%00", "?anything=%00", "?na%00me=x"]:
        response = api.get(url + query)
        assert response.status_code == 400, (url, query, response.status_code)
        assert response.json()["error"]["code"] == "invalid", (url, query)


def test_a_nul_in_a_path_is_a_400_for_the_api_and_the_admin(api):
    response = api.get("/api/v1/ledger/accounts/%00/")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid"
    assert api.get("/admin/customers/customer/?q=%00").status_code == 400


def test_a_nul_in_a_request_body_is_a_400_naming_the_field(api):
    response = api.post("/api/v1/customers/", {"name": "Wanjiku\x00", "phone": "0712345678"}, format="json")
    assert response.status_code == 400
    assert "name" in response.json()["error"]["fields"]


# --- date-time inputs: UTC offsets beyond ±14:00 (PostgreSQL refuses beyond ±15:59) ------------------

DATETIME_FILTERS = [
    ("/api/v1/payments/", "received_after"),
    ("/api/v1/payments/", "received_before"),
    ("/api/v1/ledger/entries/", "posted_after"),
    ("/api/v1/ledger/entries/", "posted_before"),
    ("/api/v1/lifecycle-events/", "since"),
]


def test_received_after_with_a_utc_offset_out_of_range_is_a_400_with_a_field_error(api):
    response = api.get("/api/v1/payments/", {"received_after": "2026-01-01T00:00:00+22:12"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert error["fields"]["received_after"] == ["The UTC offset +22:12 is out of range: at most 14 hours from UTC."]
    # typed unencoded, the "+" of the URL arrives as a space: not a date-time either
    response = api.get("/api/v1/payments/?received_after=2026-01-01T00:00:00+22:12")
    assert response.status_code == 400 and "received_after" in response.json()["error"]["fields"]


@pytest.mark.parametrize(("url", "param"), DATETIME_FILTERS)
def test_every_date_time_filter_refuses_offsets_out_of_range_and_accepts_real_ones(api, url, param):
    for bad in [
        "2026-01-01T00:00:00+22:12",
        "2026-01-01T00:00:00-15:00",
        "2026-01-01T00:00:00+14:01",
        "0001-01-01T00:00:00+05:00",
    ]:
        response = api.get(url, {param: bad})
        assert response.status_code == 400, (url, param, bad, response.content[:200])
        assert param in response.json()["error"]["fields"], (url, param, bad)
    for good in ["2026-01-01T00:00:00+14:00", "2026-01-01T00:00:00-12:00", "2026-01-01T00:00:00+03:00", "2026-01-01"]:
        response = api.get(url, {param: good})
        assert response.status_code == 200, (url, param, good, response.content[:200])


def test_a_date_time_in_a_body_with_an_offset_out_of_range_is_a_400_and_writes_nothing(api):
    from wavu.payments.models import Payment

    body = {"method": "cash", "reference": "RCPT-77", "amount": "100", "received_at": "2026-01-01T00:00:00+22:12"}
    response = api.post("/api/v1/payments/", body, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["fields"]["received_at"] == [
        "The UTC offset +22:12 is out of range: at most 14 hours from UTC."
    ]
    assert not Payment.objects.exists()


@pytest.mark.parametrize("at", ["1385-02-23T11:51:26Z", "1999-12-31T23:59:59Z", "2100-01-01T00:00:00Z"])
def test_activating_a_service_at_an_implausible_moment_is_a_400_and_changes_nothing(api, reference_data, at):
    """Found by schemathesis: a service activated "at" 1385 came back with Nairobi's 1385 offset (+02:27:16)."""
    from wavu.subscriptions.models import LifecycleEvent, Status
    from wavu.testing.factories import SubscriptionFactory

    service = SubscriptionFactory(status=Status.PENDING)
    events = LifecycleEvent.objects.count()

    response = api.post(f"/api/v1/subscriptions/{service.pk}/activate/", {"at": at}, format="json")

    assert response.status_code == 400
    assert response.json()["error"]["fields"]["at"] == ["give a date and time between 2000 and 2099"]
    service.refresh_from_db()
    assert service.status == Status.PENDING and LifecycleEvent.objects.count() == events


def test_every_date_time_input_of_the_api_checks_its_utc_offset():
    """Each input serializer and filter set of every app's api.py uses core.api's DateTimeField / IsoDateTimeFilter."""
    import importlib

    import django_filters
    from rest_framework import serializers

    from wavu.core.api import DateTimeField, IsoDateTimeFilter

    apps = ["billing", "catalog", "customers", "hotspot", "ledger", "mpesa", "network", "payments", "subscriptions"]
    checked = []
    for app in apps:
        module = importlib.import_module(f"wavu.{app}.api")
        for obj in vars(module).values():
            if not isinstance(obj, type) or obj.__module__ != module.__name__:
                continue
            # answers' shapes: the model serializers (except the catalog's write serializers) and the *Result ones
            output = obj.__name__.endswith("ResultSerializer") or (
                issubclass(obj, serializers.ModelSerializer) and "Write" not in obj.__name__
            )
            if issubclass(obj, serializers.Serializer) and not output:
                for name, field in obj().fields.items():
                    if isinstance(field, serializers.DateTimeField) and not field.read_only:
                        assert isinstance(field, DateTimeField), f"{module.__name__}.{obj.__name__}.{name}"
                        checked.append(name)
            if issubclass(obj, django_filters.FilterSet):
                for name, filter_ in obj.base_filters.items():
                    if isinstance(filter_, django_filters.DateTimeFilter):
                        assert isinstance(filter_, IsoDateTimeFilter), f"{module.__name__}.{obj.__name__}.{name}"
                        checked.append(name)
    assert {"received_at", "received_after", "posted_after", "since", "valid_from", "start", "at", "until"} <= set(
        checked
    )


# --- ids, unknown addresses, errors of actions that answer files -----------------------------------


def test_an_id_filter_takes_whole_numbers_only(api):
    for value in ["-10031677433104169623879680", "99999999999999999999", "abc", "1.5", "0"]:
        response = api.get("/api/v1/payment-promises/", {"customer": value})
        assert response.status_code == 400, (value, response.status_code)
        assert "customer" in response.json()["error"]["fields"]
    assert api.get("/api/v1/payment-promises/", {"customer": "7"}).status_code == 200


def test_an_address_nothing_answers_under_the_api_is_a_404_in_the_error_format(api):
    for url in ["/api/v1/customers/0.5/", "/api/v1/no-such-thing/", "/api/v1/invoices/1/pdf/extra/"]:
        response = api.get(url)
        assert response.status_code == 404, url
        assert response["Content-Type"] == "application/json"
        assert response.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    "url",
    [
        "/api/v1/invoices/999999/pdf/",
        "/api/v1/invoices/999999/pdf/?format=pdf",
        "/api/v1/credit-notes/999999/pdf/?format=pdf",
        "/api/v1/voucher-batches/999999/print/",
        "/api/v1/voucher-batches/999999/export/",
        "/api/v1/voucher-batches/999999/export/?format=nonsense",
    ],
)
def test_errors_of_actions_that_answer_files_are_json(api, url):
    response = api.get(url)
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"]["code"] == "not_found"
