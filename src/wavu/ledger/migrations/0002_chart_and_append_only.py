from django.db import migrations


def install_chart(apps, schema_editor):
    from wavu.ledger.accounts import CHART

    Account = apps.get_model("ledger", "Account")
    for code, name, type_, sub in CHART:
        Account.objects.get_or_create(code=code, defaults={"name": name, "type": type_, "is_customer_subledger": sub})


class Migration(migrations.Migration):
    """The chart of accounts. (Append-only triggers are declared in ledger.models.ROW_PROTECTIONS.)"""

    dependencies = [("ledger", "0001_initial")]
    operations = [migrations.RunPython(install_chart, migrations.RunPython.noop)]
