from django.db import migrations

from wavu.core.db import ProtectRows


class Migration(migrations.Migration):
    dependencies = [("payments", "0001_initial")]
    operations = [
        ProtectRows("payment_receipt_frozen", "payments_payment", "UPDATE",
                    changed=("method", "source", "reference", "amount", "currency", "received_at", "recorded_at",
                             "payer_name", "payer_phone", "account_reference", "recorded_by"),
                    message="immutable: a recorded payment cannot be changed; reverse it"),
        ProtectRows("payment_customer_set_once", "payments_payment", "UPDATE",
                    when="OLD.customer_id IS NOT NULL", changed=("customer_id",),
                    message="immutable: a matched payment cannot move to another customer; reverse it"),
        ProtectRows("payment_no_delete", "payments_payment", "DELETE",
                    message="immutable: a payment cannot be deleted; reverse it"),
        ProtectRows("allocation_no_update", "payments_allocation", "UPDATE",
                    message="immutable: allocations are append-only"),
        ProtectRows("allocation_no_delete", "payments_allocation", "DELETE",
                    message="immutable: allocations are append-only"),
        ProtectRows("refund_no_update", "payments_refund", "UPDATE", message="immutable: a refund cannot be changed"),
        ProtectRows("refund_no_delete", "payments_refund", "DELETE", message="immutable: a refund cannot be deleted"),
    ]
