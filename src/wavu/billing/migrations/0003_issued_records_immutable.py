from django.db import migrations

from wavu.core.db import ProtectRows

FROZEN_INVOICE_COLUMNS = (
    "customer_id", "subscription_id", "series", "number", "currency", "issue_date", "issued_at", "due_date",
    "period_start", "period_end", "buyer_name", "buyer_pin", "buyer_address", "buyer_account_number",
    "net_total", "excise_total", "vat_total", "total", "notes", "created_at",
)
PARENT_ISSUED_NEW = "(SELECT status FROM billing_invoice WHERE id = NEW.invoice_id) <> 'draft'"
PARENT_ISSUED_OLD = "(SELECT status FROM billing_invoice WHERE id = OLD.invoice_id) <> 'draft'"


class Migration(migrations.Migration):
    dependencies = [("billing", "0002_initial")]
    operations = [
        ProtectRows("invoice_issued_frozen", "billing_invoice", "UPDATE", when="OLD.status <> 'draft'",
                    changed=FROZEN_INVOICE_COLUMNS,
                    message="immutable: an issued invoice cannot be changed; issue a credit note"),
        ProtectRows("invoice_void_final", "billing_invoice", "UPDATE", when="OLD.status = 'void'",
                    message="immutable: a void invoice cannot change"),
        ProtectRows("invoice_issued_no_delete", "billing_invoice", "DELETE", when="OLD.status <> 'draft'",
                    message="immutable: an issued invoice cannot be deleted"),
        ProtectRows("invoiceline_issued_no_insert", "billing_invoiceline", "INSERT", when=PARENT_ISSUED_NEW,
                    message="immutable: lines cannot be added to an issued invoice"),
        ProtectRows("invoiceline_issued_no_update", "billing_invoiceline", "UPDATE", when=PARENT_ISSUED_OLD,
                    message="immutable: lines of an issued invoice cannot be changed"),
        ProtectRows("invoiceline_issued_no_delete", "billing_invoiceline", "DELETE", when=PARENT_ISSUED_OLD,
                    message="immutable: lines of an issued invoice cannot be deleted"),
        ProtectRows("creditnote_no_update", "billing_creditnote", "UPDATE",
                    message="immutable: a credit note cannot be changed"),
        ProtectRows("creditnote_no_delete", "billing_creditnote", "DELETE",
                    message="immutable: a credit note cannot be deleted"),
        ProtectRows("creditnoteline_no_update", "billing_creditnoteline", "UPDATE",
                    message="immutable: a credit note cannot be changed"),
        ProtectRows("creditnoteline_no_delete", "billing_creditnoteline", "DELETE",
                    message="immutable: a credit note cannot be deleted"),
    ]
