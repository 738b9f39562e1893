from django.apps import AppConfig


class CatalogConfig(AppConfig):
    name = "wavu.catalog"
    label = "catalog"
    verbose_name = "Catalog"
