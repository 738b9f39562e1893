from django.apps import AppConfig


class LedgerConfig(AppConfig):
    name = "wavu.ledger"
    label = "ledger"
    verbose_name = "Ledger"
