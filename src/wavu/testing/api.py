"""API clients for tests."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from rest_framework.test import APIClient


def staff_client(username: str = "staff") -> APIClient:
    """An API client signed in as a new staff user called `username`."""
    client = APIClient()
    client.force_authenticate(get_user_model().objects.create_user(username, password="x", is_staff=True))
    return client
