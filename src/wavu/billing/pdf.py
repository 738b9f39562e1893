"""Invoices and credit notes as PDF: Django HTML templates rendered by WeasyPrint.

What a Kenyan tax invoice must show (VAT Regulations; shared reference §4.4): the supplier's name,
address and KRA PIN; a serial number; the date; the buyer's name, address and PIN when known;
description, quantity and price per line; the taxable value and the rate and amount of tax per
item; totals. Amounts are read from the stored invoice (never recomputed), so a PDF printed years
later shows what was issued.
"""

from __future__ import annotations

import datetime as dt
import logging
from decimal import Decimal

from django.conf import settings
from django.template.loader import render_to_string

from wavu.core import clock

from . import selectors
from .models import CreditNote, Invoice
from .services import period_label


def money(amount: Decimal | None) -> str:
    """1234.5 → '1,234.50'."""
    return f"{(amount or Decimal(0)):,.2f}"


def percent(rate: Decimal) -> str:
    """Decimal('0.1600') → '16%', Decimal('0.0825') → '8.25%'."""
    value = (rate * 100).quantize(Decimal("0.01")).normalize()
    return f"{value:f}%"


def long_date(day: dt.date | dt.datetime | None) -> str:
    if day is None:
        return ""
    if isinstance(day, dt.datetime):
        day = clock.local(day).date()
    return f"{day.day} {day:%b %Y}"


def _quantity(value: Decimal) -> str:
    return f"{value.normalize():f}" if value == value.to_integral() else f"{value:f}".rstrip("0")


def _supplier() -> dict:
    wavu = settings.WAVU
    return {
        "name": wavu["ISP_NAME"],
        "address": wavu["ISP_ADDRESS"],
        "pin": wavu["ISP_KRA_PIN"],
        "phone": wavu.get("ISP_PHONE", ""),
        "email": wavu.get("ISP_EMAIL", ""),
    }


def _tax_rows(summary) -> list[dict]:
    return [
        {
            "band": row.band,
            "vat_rate": percent(row.vat_rate),
            "excise_rate": percent(row.excise_rate),
            "net": money(row.net),
            "excise": money(row.excise),
            "vat_taxable": money(row.vat_taxable),
            "vat": money(row.vat),
            "gross": money(row.gross),
        }
        for row in summary
    ]


def _buyer(invoice: Invoice) -> dict:
    if invoice.is_issued:
        return {
            "name": invoice.buyer_name,
            "pin": invoice.buyer_pin,
            "address": invoice.buyer_address,
            "account": invoice.buyer_account_number,
        }
    customer = invoice.customer  # a draft has no snapshot yet: show the customer as they are now
    address = ", ".join(p for p in (customer.address, customer.town, customer.county) if p)
    return {"name": customer.name, "pin": customer.kra_pin, "address": address, "account": customer.account_number}


def invoice_context(invoice: Invoice) -> dict:
    """Everything the invoice template shows, formatted."""
    lines = list(invoice.lines.order_by("position"))
    buyer = _buyer(invoice)
    starts = [ln.period_start for ln in lines if ln.period_start]
    ends = [ln.period_end for ln in lines if ln.period_end]
    period_start = invoice.period_start or (min(starts) if starts else None)
    period_end = invoice.period_end or (max(ends) if ends else None)
    if invoice.is_issued:
        net, excise, vat, total = invoice.net_total, invoice.excise_total, invoice.vat_total, invoice.total
    else:
        net, excise, vat, total = (
            sum((getattr(ln, f) for ln in lines), Decimal(0)) for f in ("net", "excise", "vat", "gross")
        )
    outstanding = total - invoice.amount_paid - invoice.amount_credited
    return {
        "title": "TAX INVOICE" if invoice.is_issued else "DRAFT INVOICE — NOT A TAX INVOICE",
        "invoice": invoice,
        "is_void": invoice.status == Invoice.Status.VOID,
        "status": invoice.get_status_display(),
        "number": invoice.number or f"Draft {invoice.pk}",
        "issue_date": long_date(invoice.issue_date),
        "due_date": long_date(invoice.due_date),
        "period": period_label(period_start, period_end) if period_start and period_end else "",
        "supplier": _supplier(),
        "buyer": buyer,
        "currency": invoice.currency,
        "lines": [
            {
                "position": ln.position,
                "description": ln.description,
                "period": period_label(ln.period_start, ln.period_end) if ln.period_start and ln.period_end else "",
                "quantity": _quantity(ln.quantity),
                "unit_price": money(ln.unit_price),
                "net": money(ln.net),
                "excise": money(ln.excise),
                "vat": money(ln.vat),
                "gross": money(ln.gross),
                "band": ln.tax_band,
                "rates": f"VAT {percent(ln.vat_rate)}"
                + (f", excise {percent(ln.excise_rate)}" if ln.excise_rate else ""),
            }
            for ln in lines
        ],
        "tax_rows": _tax_rows(selectors.tax_summary(lines)),
        "totals": {
            "net": money(net),
            "excise": money(excise),
            "vat": money(vat),
            "total": money(total),
            "paid": money(invoice.amount_paid),
            "credited": money(invoice.amount_credited),
            "outstanding": money(outstanding),
        },
        "credit_notes": [
            {"number": cn.number, "date": long_date(cn.issue_date), "total": money(cn.total), "reason": cn.reason}
            for cn in invoice.credit_notes.order_by("issue_date", "id")
        ],
        "paybill": settings.WAVU["PAYBILL_NUMBER"],
    }


def credit_note_context(note: CreditNote) -> dict:
    invoice = note.invoice
    pairs = [
        (cl, cl.invoice_line) for cl in note.lines.select_related("invoice_line").order_by("invoice_line__position")
    ]
    return {
        "title": "CREDIT NOTE",
        "note": note,
        "number": note.number,
        "issue_date": long_date(note.issue_date),
        "invoice_number": invoice.number,
        "invoice_date": long_date(invoice.issue_date),
        "reason": note.reason,
        "supplier": _supplier(),
        "buyer": _buyer(invoice),
        "currency": note.currency,
        "lines": [
            {
                "description": cl.description,
                "net": money(cl.net),
                "excise": money(cl.excise),
                "vat": money(cl.vat),
                "gross": money(cl.gross),
                "band": line.tax_band,
                "rates": f"VAT {percent(line.vat_rate)}"
                + (f", excise {percent(line.excise_rate)}" if line.excise_rate else ""),
            }
            for cl, line in pairs
        ],
        "tax_rows": _tax_rows(selectors.tax_summary(pairs)),
        "totals": {
            "net": money(note.net_total),
            "excise": money(note.excise_total),
            "vat": money(note.vat_total),
            "total": money(note.total),
        },
    }


def _pdf(html: str) -> bytes:
    from weasyprint import HTML  # imported late: it loads Pango, which only PDF work needs

    logging.getLogger("fontTools").setLevel(logging.WARNING)  # font subsetting chatters at INFO
    return HTML(string=html, base_url=str(settings.BASE_DIR)).write_pdf()


def render_invoice_html(invoice: Invoice) -> str:
    return render_to_string("billing/invoice.html", invoice_context(invoice))


def render_invoice_pdf(invoice: Invoice) -> bytes:
    """The invoice as an A4 PDF (a draft is marked as not being a tax invoice)."""
    return _pdf(render_invoice_html(invoice))


def render_credit_note_pdf(note: CreditNote) -> bytes:
    """The credit note as an A4 PDF, naming the invoice it credits."""
    return _pdf(render_to_string("billing/credit_note.html", credit_note_context(note)))
