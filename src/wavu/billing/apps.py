from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "wavu.billing"
    label = "billing"
    verbose_name = "Billing"

    def ready(self):
        from wavu.payments.signals import money_in

        from .tasks import enqueue_after_payment

        # Payments cannot import billing's jobs (they sit below them): money in for a customer queues
        # the after-payment job through this receiver (see `payments.signals`).
        money_in.connect(enqueue_after_payment, dispatch_uid="billing-after-payment")
