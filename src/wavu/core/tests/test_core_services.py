"""Tax rates change by adding dated rows; every change leaves an audit record; the web surface is safe."""

import datetime as dt
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError

from wavu.core import audit
from wavu.core.models import AuditEvent, TaxRate
from wavu.core.services import add_tax_rate
from wavu.core.tax import TaxClass, rates_for

pytestmark = pytest.mark.django_db


def test_a_finance_act_changing_excise_is_a_new_dated_rate_and_older_dates_keep_the_old_rate():
    with audit.acting_as("user:finance", source_ip="10.0.0.5"):
        add_tax_rate(tax_class=TaxClass.INTERNET, kind="excise", rate="0.175", valid_from=dt.date(2027, 7, 1))
    assert rates_for(TaxClass.INTERNET, dt.date(2027, 7, 1)).excise == Decimal("0.175")
    assert rates_for(TaxClass.INTERNET, dt.date(2027, 6, 30)).excise == Decimal("0.15")
    event = AuditEvent.objects.get(verb="add_tax_rate")
    assert event.actor_label == "user:finance" and event.source_ip == "10.0.0.5"
    assert Decimal(event.after["rate"]) == Decimal("0.175")


@pytest.mark.parametrize("rate", ["1.5", "-0.1", "0.12345", "abc", 0.16])
def test_a_bad_tax_rate_is_refused_and_nothing_is_written(rate):
    before = TaxRate.objects.count()
    with pytest.raises(ValidationError):
        add_tax_rate(tax_class=TaxClass.INTERNET, kind="vat", rate=rate, valid_from=dt.date(2027, 1, 1))
    assert TaxRate.objects.count() == before
    assert not AuditEvent.objects.exists()


def test_a_second_rate_on_the_same_start_date_is_refused():
    with pytest.raises(ValidationError):
        add_tax_rate(tax_class=TaxClass.INTERNET, kind="excise", rate="0.2", valid_from=dt.date(2023, 7, 1))
    assert TaxRate.objects.filter(valid_from=dt.date(2023, 7, 1), tax_class=TaxClass.INTERNET).count() == 1


def test_health_check_reports_the_database(client):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json()["database"] == "ok"


def test_the_openapi_schema_is_served(client):
    user = get_user_model().objects.create_user("ops", password="x", is_staff=True)
    client.force_login(user)
    response = client.get("/api/schema/?format=json")
    assert response.status_code == 200
    assert response.json()["info"]["title"] == "Wavu API"


def test_the_openapi_schema_documents_every_error_answer_in_the_error_format(client):
    client.force_login(get_user_model().objects.create_user("ops", password="x", is_staff=True))
    schema = client.get("/api/schema/?format=json").json()
    error = {"$ref": "#/components/schemas/Error"}
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            assert {"400", "401", "403"} <= set(responses), (method, path)
            if "{" in path:
                assert "404" in responses, (method, path)
            if method in ("post", "patch", "delete"):
                assert "409" in responses, (method, path)
            for code, response in responses.items():
                if code >= "400":
                    assert response["content"]["application/json"]["schema"] == error, (method, path, code)
            assert set(operation.get("requestBody", {}).get("content", {})) <= {"application/json"}, (method, path)
    components = schema["components"]["schemas"]
    assert "format" not in components["Customer"]["properties"]["email"]  # blank when not known
    assert components["Payment"]["properties"]["customer_account_number"]["nullable"]  # suspense
    assert components["TrialBalance"]["type"] == "object"
    trial_balance = schema["paths"]["/api/v1/ledger/trial-balance/"]["get"]["responses"]["200"]
    assert trial_balance["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/TrialBalance"}


def test_the_api_refuses_anonymous_callers_with_the_error_format(client):
    response = client.get("/api/v1/")
    assert response.status_code in (401, 403)
    assert "error" in response.json()


def test_audit_admin_is_read_only(admin_client):
    response = admin_client.get("/admin/core/auditevent/add/")
    assert response.status_code == 403


def test_the_openapi_schema_validates_without_warnings(tmp_path):
    from django.core.management import call_command

    out = tmp_path / "schema.yaml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(out))
    assert "/api/v1/invoices/" in out.read_text()
