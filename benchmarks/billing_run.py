"""Benchmark: the postpaid billing run over N services, against the database's raw insert rate.

`python benchmarks/billing_run.py measure [--date YYYY-MM-DD]` runs in a fresh process on a database
that `wavu seed-demo --postpaid-only --months 0` filled: it travels the clock to the end of that
day (default: a month after the ISP's today, when every seeded service is due with one period, and
the suspended services the seed left behind on their bills with their arrears), runs
`billing.runs.run_billing` once (one invoice per service and due period), and then,
inside a transaction it rolls back, inserts the very rows the run wrote (invoices, lines, journal
entries, postings) into empty copies of their tables (no indexes, constraints or triggers) the
fastest way the database offers — COPY on PostgreSQL, multi-row INSERTs on SQLite. It prints one
JSON line: invoices issued per second (and services invoiced per second), the raw insert rate,
their ratio and the process's peak RSS before and after the run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import sys
import time


def measure(run_date: dt.date | None) -> dict:
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "wavu.settings")
    django.setup()
    import time_machine
    from dateutil.relativedelta import relativedelta
    from django.db import connection, transaction
    from django.utils import timezone

    from wavu.billing.models import Invoice, InvoiceLine
    from wavu.billing.runs import due_subscriptions, run_billing
    from wavu.core import clock
    from wavu.ledger.models import JournalEntry, Posting

    run_date = run_date or clock.today() + relativedelta(months=1)
    moment = timezone.make_aware(dt.datetime.combine(run_date, dt.time(23, 0)))
    with time_machine.travel(moment, tick=True):
        due = due_subscriptions(clock.start_of_day(run_date + dt.timedelta(days=1))).count()
        before = {m: m.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
                  for m in (Invoice, InvoiceLine, JournalEntry, Posting)}  # fmt: skip
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        started = time.perf_counter()
        summary = run_billing(run_date)
        seconds = time.perf_counter() - started
        rss_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    rows_written = {}
    raw_seconds = 0.0
    with transaction.atomic():
        with connection.cursor() as cursor:
            for model in (Invoice, InvoiceLine, JournalEntry, Posting):
                table = model._meta.db_table
                columns = [f.column for f in model._meta.concrete_fields if not f.primary_key]
                cols = ", ".join(connection.ops.quote_name(c) for c in columns)
                cursor.execute(f"SELECT {cols} FROM {table} WHERE id > %s ORDER BY id", [before[model]])
                rows = cursor.fetchall()
                rows_written[table] = len(rows)
                copy = f"bench_copy_{table}"
                cursor.execute(f"CREATE TEMPORARY TABLE {copy} AS SELECT {cols} FROM {table} WHERE 1 = 0")
                started = time.perf_counter()
                if connection.vendor == "postgresql":  # COPY: PostgreSQL's fastest way in
                    with cursor.cursor.copy(f"COPY {copy} ({cols}) FROM STDIN") as stream:
                        for row in rows:
                            stream.write_row(row)
                else:  # multi-row INSERTs of up to 900 values
                    per = max(1, 900 // len(columns))
                    placeholders = "(" + ", ".join(["%s"] * len(columns)) + ")"
                    for offset in range(0, len(rows), per):
                        chunk = rows[offset : offset + per]
                        cursor.execute(
                            f"INSERT INTO {copy} ({cols}) VALUES {', '.join([placeholders] * len(chunk))}",
                            [value for row in chunk for value in row],
                        )
                raw_seconds += time.perf_counter() - started
        transaction.set_rollback(True)
    total_rows = sum(rows_written.values())
    billed = summary.billed
    services = billed - summary.caught_up
    return {
        "database": connection.vendor,
        "run_date": run_date.isoformat(),
        "due": due,
        "billed": billed,
        "caught_up": summary.caught_up,
        "skipped": summary.skipped,
        "flagged": summary.flagged,
        "total_amount": str(summary.total_amount),
        "seconds": round(seconds, 3),
        "invoices_per_second": round(billed / seconds, 1) if seconds else None,
        "services_per_second": round(services / seconds, 1) if seconds else None,
        "rows_written": rows_written,
        "raw_insert_seconds": round(raw_seconds, 3),
        "raw_rows_per_second": round(total_rows / raw_seconds, 1) if raw_seconds else None,
        "raw_invoices_per_second": round(billed / raw_seconds, 1) if raw_seconds else None,
        "ratio_to_raw_insert": round(raw_seconds / seconds, 3) if seconds else None,
        "rss_peak_mb": round(rss_peak / 1024, 1),
        "rss_before_run_mb": round(rss_before / 1024, 1),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("measure", help="run the billing run once on the current database and print JSON")
    m.add_argument("--date", type=dt.date.fromisoformat, help="the day to bill (default: a month after today)")
    args = parser.parse_args(argv)
    if args.command == "measure":
        print(json.dumps(measure(args.date)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
