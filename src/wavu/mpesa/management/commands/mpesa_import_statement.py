"""`wavu mpesa-import-statement FILE --channel SHORTCODE [--dry-run] [--query RECEIPT …]`: reconcile an
M-Pesa organisation portal statement (CSV) with Wavu's payments and print what differs."""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.db.models import Q

from wavu.core import audit
from wavu.core.errors import DomainError
from wavu.mpesa.models import PaymentChannel
from wavu.mpesa.reconciliation import import_statement, query_unknown_receipts


class Command(BaseCommand):
    help = (
        "Import an M-Pesa organisation portal statement (CSV): record receipts Wavu never heard of "
        "(idempotent) and report what differs."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", help="the statement exported from the M-Pesa organisation portal (CSV)")
        parser.add_argument("--channel", required=True, help="the paybill shortcode or till number of the statement")
        parser.add_argument("--dry-run", action="store_true", help="report only; write nothing")
        parser.add_argument(
            "--query", nargs="*", default=[], metavar="RECEIPT",
            help="also ask Daraja's Transaction Status about these receipts (answers arrive at the status hook)",
        )  # fmt: skip

    def handle(self, *args, file, channel, dry_run=False, query=(), **options):
        found = PaymentChannel.objects.filter(Q(shortcode=channel) | Q(till_number=channel)).first()
        if found is None:
            raise CommandError(f"no M-Pesa channel has shortcode or till number {channel!r}")
        path = Path(file)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise CommandError(f"cannot read {file}: {exc.strerror or exc}") from exc
        try:
            with audit.acting_as("job:mpesa-import-statement"):
                report = import_statement(found, data, dry_run=dry_run)
        except DomainError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write("\n".join(report.lines()))
        if query and not dry_run:
            self.stdout.write("Transaction Status queries:")
            for answer in query_unknown_receipts(found, query):
                self.stdout.write(
                    f"  {answer.receipt:<12} {answer.outcome:<8} {answer.detail} {answer.conversation_id}"
                )
