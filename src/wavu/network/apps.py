from django.apps import AppConfig


class NetworkConfig(AppConfig):
    name = "wavu.network"
    label = "network"
    verbose_name = "Network (RADIUS)"

    def ready(self):
        from django.db.models.signals import post_save

        from wavu.subscriptions.models import LifecycleEvent

        from .signals import request_sync

        post_save.connect(request_sync, sender=LifecycleEvent, dispatch_uid="network-radius-sync")
