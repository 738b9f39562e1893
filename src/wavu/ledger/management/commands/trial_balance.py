"""`wavu trial-balance`: print every account's debit or credit balance and the totals.

Exit status 0 when debits equal credits, 1 when they do not (usable as a check in scripts).
"""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from wavu.ledger.selectors import trial_balance


class Command(BaseCommand):
    help = "Print the trial balance (debits and credits per account, summed from every posting)."

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
        parser.add_argument("--all", action="store_true", help="also list accounts with a zero balance")

    def handle(self, *args, **options):
        tb = trial_balance()
        rows = [r for r in tb["rows"] if options["all"] or r["debit"] or r["credit"]]
        if options["json"]:
            payload = {
                "rows": [{**r, "debit": str(r["debit"]), "credit": str(r["credit"])} for r in rows],
                "debit": str(tb["debit"]),
                "credit": str(tb["credit"]),
                "balanced": tb["balanced"],
            }
            self.stdout.write(json.dumps(payload, indent=2))
        else:
            width = max([len(r["name"]) for r in rows] + [20])
            self.stdout.write(f"{'Code':<6} {'Account':<{width}} {'Debit':>16} {'Credit':>16}")
            self.stdout.write("-" * (6 + width + 36))
            for r in rows:
                dr = f"{r['debit']:,.2f}" if r["debit"] else ""
                cr = f"{r['credit']:,.2f}" if r["credit"] else ""
                self.stdout.write(f"{r['code']:<6} {r['name']:<{width}} {dr:>16} {cr:>16}")
            self.stdout.write("-" * (6 + width + 36))
            self.stdout.write(f"{'':<6} {'Total':<{width}} {tb['debit']:>16,.2f} {tb['credit']:>16,.2f}")
            verdict = "balanced" if tb["balanced"] else "NOT BALANCED"
            style = self.style.SUCCESS if tb["balanced"] else self.style.ERROR
            self.stdout.write(style(f"The trial balance is {verdict}."))
        if not tb["balanced"]:
            raise CommandError(f"debits {tb['debit']} and credits {tb['credit']} differ")
