"""A batch on paper: an HTML page of cards to print (code, plan, validity, price, ISP) and a CSV file.

Both read the batch's vouchers in one query; the page is a plain Django template with print CSS
(A4, cards that never split across pages). Revoked vouchers are left out of both.
"""

from __future__ import annotations

import csv
import io

from django.conf import settings
from django.template.loader import render_to_string

from wavu.catalog.models import Plan

from .models import Voucher, VoucherBatch

CSV_COLUMNS = ["code", "status", "plan", "validity", "price", "currency", "batch", "sold_by"]


def validity_label(plan: Plan) -> str:
    """ "3 hours", "1 day", "1 calendar month" …, from the first login."""
    unit = Plan.ValidityUnit(plan.validity_unit).label
    if plan.validity_count == 1:
        unit = unit.removesuffix("s")
    return f"{plan.validity_count} {unit}"


def _codes(batch: VoucherBatch) -> list[tuple[str, str]]:
    return list(
        Voucher.objects.filter(batch=batch)
        .exclude(status=Voucher.Status.REVOKED)
        .order_by("pk")
        .values_list("code", "status")
    )


def render_batch_html(batch: VoucherBatch) -> str:
    return render_to_string(
        "hotspot/print.html",
        {
            "batch": batch,
            "plan": batch.plan,
            "codes": [code for code, _status in _codes(batch)],
            "validity": validity_label(batch.plan),
            "isp_name": settings.WAVU["ISP_NAME"],
            "isp_phone": settings.WAVU.get("ISP_PHONE", ""),
        },
    )


def batch_csv(batch: VoucherBatch) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    validity = validity_label(batch.plan)
    for code, status in _codes(batch):
        writer.writerow(
            [code, status, batch.plan.name, validity, f"{batch.price:.2f}", batch.currency, batch.pk, batch.sold_by]
        )
    return out.getvalue()
