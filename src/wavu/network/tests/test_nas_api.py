"""The NAS registry: the `nas` API (staff only, secret write-only and masked, errors in the house
format, nothing written on bad input), the admin, and the audit trail without secrets."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from rest_framework.test import APIClient

from wavu.core.models import AuditEvent
from wavu.network import services
from wavu.network.models import Nas, NasProfile
from wavu.testing.api import staff_client

pytestmark = pytest.mark.django_db

URL = "/api/v1/nas/"
SECRET = "Kasarani-core-7f3Q9x!vRt"


@pytest.fixture
def api():
    return staff_client("noc")


def create(api, **fields):
    body = {"address": "10.20.0.1", "shortname": "kasarani-core", "type": "mikrotik", "secret": SECRET,
            "site": "Kasarani POP"}  # fmt: skip
    body.update(fields)
    return api.post(URL, body, format="json")


def test_a_router_registered_through_the_api_lands_in_freeradius_nas_table_with_its_secret_masked(api):
    response = create(api, coa_port=3799, description="CCR2004 at the POP")

    assert response.status_code == 201, response.content
    data = response.json()
    assert SECRET not in response.content.decode()
    assert data["masked_secret"].endswith("vRt") and set(data["masked_secret"][:-3]) == {"*"}
    assert {k: data[k] for k in ("address", "shortname", "type", "coa_port", "site", "enabled")} == {
        "address": "10.20.0.1",
        "shortname": "kasarani-core",
        "type": "mikrotik",
        "coa_port": 3799,
        "site": "Kasarani POP",
        "enabled": True,
    }
    nas = Nas.objects.get()
    assert (nas.nasname, nas.shortname, nas.type, nas.ports, nas.secret) == (
        "10.20.0.1",
        "kasarani-core",
        "mikrotik",
        3799,
        SECRET,
    )
    assert nas.server is None and nas.description == "CCR2004 at the POP"
    for listed in (api.get(URL), api.get(f"{URL}{nas.pk}/")):
        assert listed.status_code == 200 and SECRET not in listed.content.decode()


def test_the_coa_port_defaults_to_mikrotiks_3799_and_a_network_is_normalised(api):
    response = create(api, address="10.20.0.77/24", type="other")

    assert response.status_code == 201, response.content
    assert response.json()["coa_port"] == 3799 and response.json()["address"] == "10.20.0.0/24"


@pytest.mark.parametrize(
    ("fields", "field", "code"),
    [
        ({"address": "10.20.0.300"}, "address", "address_invalid"),
        ({"address": "kasarani.isp"}, "address", "address_invalid"),
        ({"address": "0.0.0.0/0"}, "address", "address_invalid"),
        ({"address": "10.0.0.0/8"}, "address", "address_too_wide"),
        ({"address": "224.0.0.5"}, "address", "address_invalid"),
        ({"secret": "short"}, "secret", "secret_invalid"),
        ({"secret": 'has "quotes" in it and is long'}, "secret", "secret_invalid"),
        ({"secret": "has $variable-in-it-long-enough"}, "secret", "secret_invalid"),
        ({"shortname": "has space"}, "shortname", "shortname_invalid"),
        ({"coa_port": 70000}, "coa_port", "port_invalid"),
        ({"server": "bad server!"}, "server", "server_invalid"),
        ({"site": "x" * 101}, "site", "text_invalid"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_bad_input_is_a_400_in_the_house_format_and_writes_nothing(api, fields, field, code):
    response = create(api, **fields)

    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "invalid" and field in error["fields"]
    assert not Nas.objects.exists() and not AuditEvent.objects.filter(object_type="network.nas").exists()
    with pytest.raises(ValidationError) as refused:
        services.create_nas(**{"address": "10.20.0.1", "shortname": "kasarani-core", "secret": SECRET, **fields})
    assert refused.value.error_dict[field][0].code == code


def test_an_unknown_type_or_field_and_missing_required_fields_are_refused(api):
    assert create(api, type="cisco").status_code == 400
    assert create(api, nasname="10.1.1.1").json()["error"]["fields"] == {"nasname": ["This field cannot be set."]}
    missing = api.post(URL, {"address": "10.20.0.1"}, format="json")
    assert missing.status_code == 400 and set(missing.json()["error"]["fields"]) == {"shortname", "secret"}
    assert not Nas.objects.exists()


def test_a_second_router_with_the_same_address_or_name_is_refused(api):
    assert create(api).status_code == 201

    same_address = create(api, shortname="other-name")
    same_name = create(api, address="10.20.0.2")

    assert same_address.status_code == 400 and "address" in same_address.json()["error"]["fields"]
    assert same_name.status_code == 400 and "shortname" in same_name.json()["error"]["fields"]
    assert Nas.objects.count() == 1


def test_a_patch_without_a_secret_keeps_it_and_the_audit_never_holds_one(api):
    nas_id = create(api).json()["id"]

    renamed = api.patch(f"{URL}{nas_id}/", {"description": "moved to rack 2", "enabled": False}, format="json")
    rotated = api.patch(f"{URL}{nas_id}/", {"secret": "New-secret-value-0042"}, format="json")

    assert renamed.status_code == rotated.status_code == 200
    assert renamed.json()["enabled"] is False and renamed.json()["description"] == "moved to rack 2"
    nas = Nas.objects.get()
    assert nas.secret == "New-secret-value-0042" and NasProfile.objects.get(nas=nas).enabled is False
    events = AuditEvent.objects.filter(object_type="network.nas").order_by("id")
    assert [e.verb for e in events] == ["create_nas", "update_nas", "update_nas"]
    assert events[2].after == {"secret_changed": True} and events[1].after == {
        "description": "moved to rack 2",
        "enabled": False,
    }
    for event in events:
        assert SECRET not in str(event.before) + str(event.after)
        assert "New-secret-value-0042" not in str(event.before) + str(event.after)


def test_a_patch_that_changes_nothing_writes_nothing(api):
    nas_id = create(api).json()["id"]

    response = api.patch(f"{URL}{nas_id}/", {"site": "Kasarani POP", "secret": SECRET}, format="json")

    assert response.status_code == 200
    assert AuditEvent.objects.filter(object_type="network.nas").count() == 1


def test_deleting_a_router_removes_it_from_the_registry(api):
    nas_id = create(api).json()["id"]

    response = api.delete(f"{URL}{nas_id}/")

    assert response.status_code == 204
    assert not Nas.objects.exists() and not NasProfile.objects.exists()
    assert AuditEvent.objects.filter(object_type="network.nas", verb="delete_nas").exists()


def test_the_registry_is_for_staff_only(api):
    create(api)
    anonymous = APIClient()

    assert anonymous.get(URL).status_code in (401, 403)
    assert anonymous.post(URL, {"address": "10.1.1.1"}, format="json").status_code in (401, 403)


def test_routers_are_searchable_and_filtered_by_type(api):
    create(api)
    create(api, address="10.30.0.1", shortname="ruaka-ap", type="other", description="Ubiquiti sector")

    assert [n["shortname"] for n in api.get(URL, {"type": "other"}).json()["results"]] == ["ruaka-ap"]
    assert [n["shortname"] for n in api.get(URL, {"search": "kasarani"}).json()["results"]] == ["kasarani-core"]


def test_a_router_added_in_the_admin_goes_through_the_service(admin_client):
    response = admin_client.post(
        "/admin/network/nas/add/",
        {
            "address": "10.40.0.1",
            "shortname": "kahawa",
            "type": "mikrotik",
            "coa_port": 3799,
            "new_secret": SECRET,
            "site": "Kahawa West",
            "enabled": "on",
        },  # fmt: skip
    )

    assert response.status_code == 302, response.context and response.context["adminform"].form.errors
    nas = Nas.objects.get()
    assert (nas.nasname, nas.secret, nas.profile.site) == ("10.40.0.1", SECRET, "Kahawa West")
    assert AuditEvent.objects.get(object_type="network.nas").actor_label == "user:admin"
    page = admin_client.get(f"/admin/network/nas/{nas.pk}/change/")
    assert page.status_code == 200 and SECRET not in page.content.decode()


def test_a_bad_secret_in_the_admin_is_shown_on_the_form(admin_client):
    response = admin_client.post(
        "/admin/network/nas/add/",
        {"address": "10.40.0.1", "shortname": "kahawa", "type": "mikrotik", "coa_port": 3799, "new_secret": "short"},
    )

    assert response.status_code == 200 and "new_secret" in response.context["adminform"].form.errors
    assert not Nas.objects.exists()


def test_radius_rows_are_read_only_in_the_admin_and_passwords_are_hidden(admin_client):
    from wavu.network.models import RadCheck

    row = RadCheck.objects.create(username="10008", attribute="Cleartext-Password", op=":=", value="kzt7m2pq9wxa")

    assert admin_client.get("/admin/network/radcheck/add/").status_code == 403
    page = admin_client.get(f"/admin/network/radcheck/{row.pk}/change/")
    assert page.status_code == 200 and "kzt7m2pq9wxa" not in page.content.decode()
    listing = admin_client.get("/admin/network/radcheck/")
    assert listing.status_code == 200 and "kzt7m2pq9wxa" not in listing.content.decode()
