"""`wavu billing-run [--date YYYY-MM-DD]`: run postpaid billing for a day, with a progress bar and a summary."""

import datetime as dt
import sys

from django.core.management.base import BaseCommand, CommandError

from wavu.billing.runs import run_billing
from wavu.core.errors import DomainError


class Command(BaseCommand):
    help = (
        "Invoice every period of every postpaid service that began by the end of the day (default today), "
        "arrears included; a second run of the same day issues nothing."
    )

    def add_arguments(self, parser):
        parser.add_argument("--date", help="the day to bill, YYYY-MM-DD (default today); a day run again resumes")
        parser.add_argument("--batch-size", type=int, default=None, help="services per transaction")
        parser.add_argument("--no-progress", action="store_true", help="no progress bar (for logs)")

    def handle(self, *args, date=None, batch_size=None, no_progress=False, **options):
        try:
            day = dt.date.fromisoformat(date) if date else None
        except ValueError as exc:
            raise CommandError(f"--date {date!r} is not a date like 2026-12-01") from exc
        if batch_size is not None and batch_size < 1:
            raise CommandError("--batch-size must be at least 1")
        show = not no_progress and sys.stderr.isatty()
        try:
            summary = run_billing(day, batch_size=batch_size, progress=self._bar if show else None)
        except DomainError as exc:
            raise CommandError(str(exc)) from exc
        if show:
            sys.stderr.write("\n")
        run = summary.run
        rate = summary.billed / summary.seconds if summary.seconds else 0
        resumed = f" (resumed, attempt {run.attempts})" if summary.resumed else ""
        left = " (flagged, or held by another worker): fix the flags, run the day again" if summary.remaining else ""
        lines = [
            f"Billing run {summary.run_date}{resumed}",
            f"  due at start  {summary.due_at_start:>10,}   services with a period begun by the end of the day",
            f"  invoices      {summary.billed:>10,}   issued, one per service and period",
            f"  caught up     {summary.caught_up:>10,}   of them for arrears (periods after a service's first one due)",
            f"  skipped       {summary.skipped:>10,}   periods already invoiced, or with nothing to charge",
            f"  flagged       {summary.flagged:>10,}   services (see the run's flags in the admin or "
            "GET /api/v1/billing-runs/)",
            f"  still due     {summary.remaining:>10,}   services{left}",
            f"  total amount  {summary.total_amount:>13,.2f} KES",
            f"  time          {summary.seconds:>12.1f} s   ({rate:,.0f} invoices/s)",
        ]
        if summary.resumed:
            lines.append(
                f"  day in total  {run.billed_count:,} invoices, {run.skipped_count:,} skipped, "
                f"{run.flagged_count:,} flagged, {run.total_amount:,.2f} KES"
            )
        self.stdout.write("\n".join(lines))

    @staticmethod
    def _bar(done: int, total: int) -> None:
        width = 40
        share = min(done / total, 1.0) if total else 1.0
        filled = int(width * share)
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done:,}/{total:,} {share:6.1%}")
        sys.stderr.flush()
