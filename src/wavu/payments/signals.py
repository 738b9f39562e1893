"""What payments announce to the apps above them.

Payments sit below billing's automation (runs, prepaid renewals, dunning), so they cannot call it;
they send a signal instead, and the app above connects to it when Django starts (`AppConfig.ready`).
"""

from django.dispatch import Signal

money_in = Signal()
"""Money came in for a customer: a payment recorded or matched to them, a refund cancelled. Sent with
`customer_id` inside the transaction that took the money in, never for money nobody was matched to.
Receivers must only queue work for after the commit: billing's receiver
(`billing.tasks.enqueue_after_payment`) enqueues the after-payment job with `enqueue_on_commit`."""
