from django.apps import AppConfig


class MpesaConfig(AppConfig):
    name = "wavu.mpesa"
    label = "mpesa"
    verbose_name = "M-Pesa"

    def ready(self):
        from django.db.models.signals import post_delete, post_save

        from .models import PaymentChannel
        from .selectors import forget_cached_channels

        # a channel changed in this process is seen by its next hook request
        post_save.connect(forget_cached_channels, sender=PaymentChannel, dispatch_uid="mpesa-channel-cache")
        post_delete.connect(forget_cached_channels, sender=PaymentChannel, dispatch_uid="mpesa-channel-cache-del")
