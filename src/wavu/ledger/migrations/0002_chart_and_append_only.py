from django.db import migrations

from wavu.core.db import ProtectRows


def install_chart(apps, schema_editor):
    from wavu.ledger.accounts import CHART

    Account = apps.get_model("ledger", "Account")
    for code, name, type_, sub in CHART:
        Account.objects.get_or_create(code=code, defaults={"name": name, "type": type_, "is_customer_subledger": sub})


class Migration(migrations.Migration):
    dependencies = [("ledger", "0001_initial")]
    operations = [
        migrations.RunPython(install_chart, migrations.RunPython.noop),
        ProtectRows("ledger_entry_no_update", "ledger_journalentry", "UPDATE",
                    message="immutable: journal entries are append-only; post a reversal"),
        ProtectRows("ledger_entry_no_delete", "ledger_journalentry", "DELETE",
                    message="immutable: journal entries are append-only; post a reversal"),
        ProtectRows("ledger_posting_no_update", "ledger_posting", "UPDATE",
                    message="immutable: postings are append-only; post a reversal"),
        ProtectRows("ledger_posting_no_delete", "ledger_posting", "DELETE",
                    message="immutable: postings are append-only; post a reversal"),
    ]
