"""Staff sign-ins are on the audit trail: a login, a failed login and a logout each leave one event with
the name given, the address and the browser, and never the password. API tokens are not logins."""

import datetime as dt
import json

import pytest
import time_machine
from django.contrib.auth import get_user_model
from django.test import Client
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from wavu.core.models import AuditEvent

pytestmark = pytest.mark.django_db

LOGIN, LOGOUT = "/admin/login/", "/admin/logout/"
PASSWORD = "Kahawa-ya-saa-nne-42"
BROWSER = "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0"
OFFICE = "196.201.10.25"
MORNING = dt.datetime(2026, 3, 2, 6, 15, tzinfo=dt.UTC)  # 09:15 in Nairobi


@pytest.fixture
def amina():
    return get_user_model().objects.create_user("amina", password=PASSWORD, is_staff=True)


@pytest.fixture
def browser():
    return Client(REMOTE_ADDR=OFFICE, HTTP_USER_AGENT=BROWSER)


def sign_in(browser, username, password):
    return browser.post(LOGIN, {"username": username, "password": password, "next": "/admin/"})


def sign_in_events():
    return list(AuditEvent.objects.filter(verb__in=("login", "login_failed", "logout")).order_by("id"))


def row_text(event) -> str:
    return json.dumps(AuditEvent.objects.filter(pk=event.pk).values().get(), default=str)


def test_a_staff_login_in_the_admin_leaves_one_event_naming_who_from_where(amina, browser):
    with time_machine.travel(MORNING, tick=False):
        response = sign_in(browser, "amina", PASSWORD)

    assert response.status_code == 302 and response["Location"] == "/admin/"
    [event] = sign_in_events()
    assert (event.verb, event.action, event.at) == ("login", "action", MORNING)
    assert (event.actor, event.actor_label, event.source_ip) == (amina, "user:amina", OFFICE)
    assert (event.object_type, event.object_id, event.object_repr) == ("auth.user", str(amina.pk), "amina")
    assert event.after == {"username": "amina", "user_agent": BROWSER} and event.before is None
    assert PASSWORD not in row_text(event)


def test_a_wrong_password_leaves_one_failed_login_event_without_the_password(amina, browser):
    with time_machine.travel(MORNING, tick=False):
        response = sign_in(browser, "amina", "Kahawa-ya-saa-tano-43")

    assert response.status_code == 200  # the login form again, with its error
    [event] = sign_in_events()
    assert (event.verb, event.at, event.actor, event.actor_label) == ("login_failed", MORNING, None, "anonymous")
    assert (event.source_ip, event.object_id, event.object_repr) == (OFFICE, str(amina.pk), "amina")
    assert event.after == {"username": "amina", "user_agent": BROWSER}
    assert "Kahawa-ya-saa-tano-43" not in row_text(event) and "*****" not in row_text(event)
    assert "_auth_user_id" not in browser.session


def test_a_login_attempt_with_a_name_nobody_has_is_recorded_with_the_name_tried(amina, browser):
    sign_in(browser, "admin", "123456")

    [event] = sign_in_events()
    assert (event.verb, event.actor, event.object_id, event.object_repr) == ("login_failed", None, "", "admin")
    assert event.after == {"username": "admin", "user_agent": BROWSER} and "123456" not in row_text(event)


def test_signing_out_of_the_admin_leaves_one_logout_event(amina, browser):
    sign_in(browser, "amina", PASSWORD)
    with time_machine.travel(MORNING + dt.timedelta(hours=8), tick=False):
        response = browser.post(LOGOUT)

    assert response.status_code == 200 and "_auth_user_id" not in browser.session
    login, logout = sign_in_events()
    assert (login.verb, logout.verb) == ("login", "logout")
    assert (logout.at, logout.actor, logout.actor_label, logout.source_ip) == (
        MORNING + dt.timedelta(hours=8), amina, "user:amina", OFFICE,
    )  # fmt: skip
    assert logout.after == {"username": "amina", "user_agent": BROWSER}


def test_logging_out_when_nobody_is_signed_in_records_nothing(browser):
    browser.post(LOGOUT)

    assert sign_in_events() == []


def test_api_requests_with_a_token_are_not_logins(amina):
    token = Token.objects.create(user=amina)
    api = APIClient(REMOTE_ADDR=OFFICE, HTTP_USER_AGENT="integration/1.0")
    api.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")

    assert api.get("/api/v1/customers/").status_code == 200
    assert api.get("/api/v1/customers/").status_code == 200
    api.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")
    assert api.get("/api/v1/customers/").status_code == 401

    assert sign_in_events() == []
