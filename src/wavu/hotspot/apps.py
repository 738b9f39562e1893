from django.apps import AppConfig


class HotspotConfig(AppConfig):
    name = "wavu.hotspot"
    label = "hotspot"
    verbose_name = "Hotspot vouchers"
