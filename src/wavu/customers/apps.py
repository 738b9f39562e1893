from django.apps import AppConfig


class CustomersConfig(AppConfig):
    name = "wavu.customers"
    label = "customers"
    verbose_name = "Customers"
