"""`wavu seed-demo`: fill an empty database with a believable Kenyan ISP (see wavu.demo.seed)."""

from __future__ import annotations

import argparse

from django.core.management.base import BaseCommand, CommandError
from django.db import connection

from wavu.demo.seed import DEFAULT_MONTHS, DatabaseNotEmpty, seed_demo


def _whole_number(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be at least {minimum}, not {value}")
    return value


def _positive(text: str) -> int:
    return _whole_number(text, 1)


def _not_negative(text: str) -> int:
    return _whole_number(text, 0)


class Command(BaseCommand):
    help = (
        "Seed an EMPTY database with a demo Kenyan ISP: plans (home fibre, prepaid wireless, hotspot packages), "
        "add-ons, customers with Kenyan names and places, subscriptions in every status, and MONTHS months of "
        "invoices, payments, credit notes, refunds and returned cheques written through the billing and payments "
        "services (balanced ledger, gap-free numbers). Deterministic: the same --seed gives the same random choices; "
        "dates are anchored to today (history ends at the start of today), so runs on the same day give identical "
        "data and runs on other days the same data shifted in time. Refuses to run when the database already has "
        "customers, plans, invoices or payments: issued records cannot be deleted, so start from a fresh database. "
        "Billing history costs one service call per invoice and per payment: for 100,000 customers use --months 1."
    )

    def add_arguments(self, parser):
        parser.add_argument("--customers", type=_positive, default=200, help="number of customers (default 200)")
        parser.add_argument("--seed", type=int, default=2024, help="random seed (default 2024)")
        parser.add_argument(
            "--months",
            type=_not_negative,
            default=DEFAULT_MONTHS,
            help=f"months of billing history before today (default {DEFAULT_MONTHS}; 0 = catalog, customers and "
            "services only)",
        )
        parser.add_argument(
            "--postpaid-only", action="store_true", help="every customer on a monthly postpaid plan (benchmarks)"
        )

    def handle(self, *args, **options):
        def progress(message: str) -> None:
            if options["verbosity"] >= 1:
                self.stdout.write(message)
                self.stdout.flush()

        if "customers_customer" not in connection.introspection.table_names():
            raise CommandError("the database has no tables yet: run `wavu migrate` first")
        try:
            summary = seed_demo(
                customers=options["customers"],
                seed=options["seed"],
                months=options["months"],
                progress=progress,
                postpaid_only=options["postpaid_only"],
            )
        except DatabaseNotEmpty as exc:
            raise CommandError(str(exc)) from exc
        for line in summary.lines():
            self.stdout.write(line)
        if not summary.balanced:
            raise CommandError("the trial balance does not balance after seeding: this is a bug, please report it")
