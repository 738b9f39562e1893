"""The Django admin saves customers through the services: validated, normalised, audited."""

import pytest

from wavu.core.models import AuditEvent
from wavu.customers import services
from wavu.customers.models import Customer

pytestmark = pytest.mark.django_db

URL = "/admin/customers/customer/"


def form(**overrides):
    data = {
        "kind": "individual",
        "name": "Wanjiku Kamau",
        "contact_person": "",
        "status": "active",
        "phone": "0712 345 678",
        "alt_phone": "",
        "email": "",
        "language": "en",
        "kra_pin": "",
        "national_id": "",
        "county": "",
        "town": "",
        "address": "",
        "latitude": "",
        "longitude": "",
        "notes": "",
    }
    data.update(overrides)
    return data


def test_an_account_opened_in_the_admin_gets_a_number_and_a_normalised_phone(admin_client):
    response = admin_client.post(f"{URL}add/", form(kra_pin="a123456789b", county="nairobi"))

    assert response.status_code == 302, response.context["adminform"].form.errors if response.context else response
    customer = Customer.objects.get()
    assert customer.account_number == "10008" and customer.phone == "254712345678"
    assert customer.kra_pin == "A123456789B" and customer.county == "Nairobi"
    assert AuditEvent.objects.get(verb="create_customer").actor_label == "user:admin"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [({"phone": "0712"}, "phone"), ({"kind": "business"}, "kra_pin"), ({"national_id": "12"}, "national_id")],
)
def test_bad_input_in_the_admin_shows_the_error_and_saves_nothing(admin_client, overrides, field):
    response = admin_client.post(f"{URL}add/", form(**overrides))

    assert response.status_code == 200
    assert field in response.context["adminform"].form.errors
    assert not Customer.objects.exists()
    assert not AuditEvent.objects.exclude(verb="login").exists()  # the admin client's sign-in is audited


def test_a_correction_in_the_admin_is_audited(admin_client):
    customer = services.create_customer(name="Wanjiku Kamau", phone="0712345678")

    response = admin_client.post(f"{URL}{customer.pk}/change/", form(phone="+254 722 000 111", town="Nyeri"))

    assert response.status_code == 302
    customer.refresh_from_db()
    assert customer.phone == "254722000111" and customer.town == "Nyeri"
    event = AuditEvent.objects.get(verb="update_customer")
    assert event.before["phone"] == "254712345678" and event.actor_label == "user:admin"


def test_the_admin_search_understands_local_phone_numbers_and_accounts_cannot_be_deleted(admin_client):
    customer = services.create_customer(name="Wanjiku Kamau", phone="+254712345678")
    services.create_customer(name="Otieno", phone="0733000111")

    response = admin_client.get(URL, {"q": "0712 345 678"})

    assert list(response.context["cl"].result_list) == [customer]
    assert admin_client.get(f"{URL}{customer.pk}/delete/").status_code == 403
