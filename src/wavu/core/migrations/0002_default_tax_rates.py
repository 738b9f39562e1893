from django.db import migrations


def forwards(apps, schema_editor):
    from wavu.core.reference_data import install_tax_rates

    install_tax_rates(apps.get_model("core", "TaxRate"))


class Migration(migrations.Migration):
    dependencies = [("core", "0001_initial")]
    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
