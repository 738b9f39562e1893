"""Races (PostgreSQL): batches issued at the same moment never share a code."""

from __future__ import annotations

import threading

import pytest

from wavu.hotspot import services
from wavu.hotspot.models import Voucher, VoucherStock
from wavu.subscriptions.models import Subscription

from .support import hotspot_plan

pytestmark = [pytest.mark.postgres_only, pytest.mark.django_db(transaction=True)]


def test_two_batches_drawing_the_same_codes_at_once_end_up_with_distinct_codes(monkeypatch):
    from wavu.testing.concurrency import side_by_side

    plan = hotspot_plan()
    shared = sorted(services.generate_codes(60))
    drawn_once = threading.local()
    real = services.generate_codes

    def same_first_draw(count, length=8):
        if not getattr(drawn_once, "done", False):
            drawn_once.done = True
            return set(shared[:count])
        return real(count, length)

    monkeypatch.setattr(services, "generate_codes", same_first_draw)

    results, errors = side_by_side(
        lambda: services.issue_batch(plan=plan, quantity=60, sold_by="agent A"),
        lambda: services.issue_batch(plan=plan, quantity=60, sold_by="agent B"),
    )

    assert errors == [] and len(results) == 2
    codes = list(Voucher.objects.values_list("code", flat=True))
    assert len(codes) == 120 == len(set(codes))
    assert Subscription.objects.count() == 120
    assert {b.vouchers.count() for b in results} == {60}
    # one batch got the shared codes, the other drew fresh ones after the constraint refused them
    owners = {Voucher.objects.get(code=code).batch_id for code in shared}
    assert len(owners) == 1
    assert VoucherStock.objects.count() == 1  # one stock customer even when both opened it at once
